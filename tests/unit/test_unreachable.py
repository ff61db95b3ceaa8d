"""Commands that need hosts check them first: one line per unreachable host naming the fix,
exit 1, in seconds, no traceback, nothing run. Real sockets on 127.0.0.0/8 only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gpufleet.inventory.load import load_inventory
from gpufleet.provision.reach import unreachable
from tests.conftest import REPO, site_data

LAB_HOSTS = ["lab-cp1", "lab-st1", "lab-st2", "lab-st3"]


def _no_lab(tmp_path: Path) -> dict[str, str]:
    """A lab that is not up: its state folder absent, and a name no lab on this machine has (a
    running lab of the default name would be its leftovers)."""
    return {"GPUFLEET_LAB_STATE": str(tmp_path / "no-lab"), "GPUFLEET_LAB_NAME": "zqx"}


def _gpufleet(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    return proc, time.monotonic() - start


@pytest.mark.parametrize(
    "args",
    [
        ["provision", "lab", "--dry-run"],
        ["provision", "lab", "--json"],
        ["verify", "lab"],
        ["cluster", "lab", "ceph"],
    ],
)
def test_a_lab_that_is_not_up_gets_one_line_per_host_and_the_fix(args: list[str], tmp_path: Path) -> None:
    proc, seconds = _gpufleet(*args, env=_no_lab(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    inv = load_inventory("lab")
    for node in inv.nodes:
        (line,) = [x for x in lines if x.startswith(f"{node.hostname} ({node.management_ip}): ")]
        assert line.endswith("lab is down: run `gpufleet lab up`"), line
    assert lines[-1] == "4 of 4 hosts unreachable; nothing was run"
    assert seconds < 30
    assert not (tmp_path / "no-lab").exists(), "a check changes nothing"


def test_lab_status_with_every_host_down_says_how_to_bring_it_up(tmp_path: Path) -> None:
    proc, _ = _gpufleet("lab", "status", env=_no_lab(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"no lab host is running ({tmp_path / 'no-lab'}): lab is down: run `gpufleet lab up`"
    ]
    assert proc.stdout.count(" down ") == len(LAB_HOSTS)


def _loopback_site(tmp_path: Path, addresses: list[str]) -> Path:
    doc = site_data("h100")
    doc["site"]["name"] = "loopback"
    doc["site"]["networks"]["management"] |= {"cidr": "127.0.0.0/8", "gateway": None}
    template = doc["nodes"][0]
    doc["nodes"] = [
        {**template, "hostname": f"node{i}", "management_ip": a} for i, a in enumerate(addresses, start=1)
    ]
    folder = tmp_path / "loopback"
    folder.mkdir()
    (folder / "nodes.yaml").write_text(yaml.safe_dump(doc))
    return folder


def test_a_real_site_names_the_host_that_refuses_and_only_that_one(tmp_path: Path) -> None:
    # node1 answers on 127.0.0.2:22 (a listener of this test); node2's and node3's addresses refuse.
    with socket.socket() as listener:
        try:
            listener.bind(("127.0.0.2", 22))
        except PermissionError:
            pytest.fail("binding port 22 needs root (CI runs as root)")
        listener.listen()
        inv = load_inventory(str(_loopback_site(tmp_path, ["127.0.0.2", "127.0.0.3", "127.0.0.4"])))
        down, _ = unreachable(inv, ["node1", "node2", "node3"])
        assert [u.hostname for u in unreachable(inv, ["node1", "node3"])] == ["node3"]
    assert down.line() == (
        "node2 (127.0.0.3): port 22 refused: check that the host is up, that sshd listens, "
        "and that this machine routes to 127.0.0.0/8"
    )


def test_verify_on_a_real_site_stops_before_the_host_suite(tmp_path: Path) -> None:
    site = _loopback_site(tmp_path, ["127.0.0.3"])
    proc, seconds = _gpufleet("verify", str(site), env={})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "node1 (127.0.0.3): port 22 refused: check that the host is up, that sshd listens, "
        "and that this machine routes to 127.0.0.0/8",
        "1 of 1 hosts unreachable; nothing was run",
    ]
    assert seconds < 30

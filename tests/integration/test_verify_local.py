"""`gpufleet verify` on this machine (testinfra's local backend): the gate passes and fails for real.

This machine has no GPU: the GPU part must fail, naming what it ran; its management interface
is real: the network part passes when the site says what is there and fails when it doesn't.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, site_data

pytestmark = pytest.mark.integration


def _default_interface() -> tuple[str, int]:
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return fields[0], int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    raise AssertionError("this machine has no default route")


def _site(tmp_path: Path, device: str, mtu: int) -> Path:
    doc: dict[str, Any] = site_data("h100")
    doc["site"]["name"] = "here"
    doc["site"]["networks"]["management"]["mtu"] = mtu
    doc["nodes"][0]["nics"]["management"]["device"] = device
    folder = tmp_path / "inventories" / "here"
    folder.mkdir(parents=True)
    (folder / "nodes.yaml").write_text(yaml.safe_dump(doc))
    return folder


def _verify(site: Path, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "verify", str(site), "--local", "--json", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "GPUFLEET_OUT": str(site.parent.parent / "out")},
    )
    data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return proc.returncode, data, proc.stderr


def test_network_part_passes_when_the_site_says_what_is_there(tmp_path: Path) -> None:
    device, mtu = _default_interface()
    code, report, _ = _verify(_site(tmp_path, device, mtu), "--limit", "h100-1", "--part", "network")
    assert report is not None and code == 0, report
    outcomes = {r["check"]: r["outcome"] for r in report["results"]}
    assert outcomes == {
        "test_management_interface_up_with_planned_mtu": "passed",
        # The site plans no RDMA on this host.
        "test_rdma_ports_active_as_planned": "skipped",
        "test_roce_netdevs_carry_mtu_trust_and_pfc_as_planned": "skipped",
    }


def test_network_part_fails_on_a_wrong_mtu(tmp_path: Path) -> None:
    device, mtu = _default_interface()
    code, report, _ = _verify(
        _site(tmp_path, device, 9000 if mtu != 9000 else 1500), "--limit", "h100-1", "--part", "network"
    )
    assert code == 1 and report is not None
    (failed,) = [r for r in report["results"] if r["outcome"] == "failed"]
    assert f"{device} MTU: expected {9000 if mtu != 9000 else 1500}, found {mtu}" in failed["message"]


def test_gpu_part_fails_without_a_gpu(tmp_path: Path) -> None:
    device, mtu = _default_interface()
    code, report, _ = _verify(_site(tmp_path, device, mtu), "--limit", "h100-1", "--part", "gpu")
    assert code == 1 and report is not None and report["ok"] is False
    failed = {r["check"]: r["message"] for r in report["results"] if r["outcome"] == "failed"}
    assert "/proc/driver/nvidia/version" in failed["test_driver_loaded_at_the_bom_version"]
    assert "nvidia-smi" in failed["test_gpu_count_and_model"]
    assert all(r["host"] == "h100-1" for r in report["results"])


def test_unknown_host_is_bad_input(tmp_path: Path) -> None:
    device, mtu = _default_interface()
    code, report, stderr = _verify(_site(tmp_path, device, mtu), "--limit", "nope")
    assert code == 2 and report is None
    assert "nope not in site here" in stderr


def test_the_node_only_gate_leaves_out_what_needs_the_clusters(tmp_path: Path) -> None:
    from gpufleet.verify import verify_site

    device, mtu = _default_interface()
    site = str(_site(tmp_path, device, mtu))
    cluster_checks = {"test_kubelet_running_and_node_as_planned", "test_ceph_reports_no_error"}

    def checks(**kw: bool) -> set[str]:
        report = verify_site(site, ["h100-1"], ["storage", "kubernetes"], local=True, **kw)
        return {r.check for r in report.results}

    # The full suite runs them (skipped here: the site plans neither Kubernetes nor Ceph on this
    # host); the gate after a node's own deploy does not, and still runs the node's other checks.
    full, node_only = checks(), checks(node_only=True)
    assert cluster_checks <= full
    assert not cluster_checks & node_only
    assert node_only == full - cluster_checks and "test_modules_loaded_and_swap_off" in node_only


def test_a_suite_past_its_time_is_one_failed_check(tmp_path: Path) -> None:
    """The host suite is stopped at timeout_s per host and reported, not a traceback."""
    from gpufleet.verify import verify_site

    device, mtu = _default_interface()
    report = verify_site(
        str(_site(tmp_path, device, mtu)), ["h100-1"], ["network"], local=True, timeout_s=0.2
    )
    assert not report.ok and report.returncode == 1
    assert [(r.check, r.outcome, r.message) for r in report.results] == [
        ("host suite", "failed", "host suite stopped after 0.2 s")
    ]


def test_text_output_shows_the_checks_that_ran_and_counts_what_the_plan_leaves_out(tmp_path: Path) -> None:
    device, mtu = _default_interface()
    site = _site(tmp_path, device, mtu)
    args = [sys.executable, "-m", "gpufleet.cli", "verify", str(site), "--local", "--limit", "h100-1"]
    args += ["--part", "network"]
    plain = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "test_management_interface_up_with_planned_mtu" in plain.stdout
    assert "test_rdma_ports_active_as_planned" not in plain.stdout
    assert plain.stdout.splitlines()[-2:] == [
        "1 checks ran: 1 passed",
        "2 left out: not in the hosts' plans (--verbose lists them)",
    ]
    verbose = subprocess.run([*args, "--verbose"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert verbose.returncode == 0
    assert (
        "test_rdma_ports_active_as_planned" in verbose.stdout and "not in this host's plan" in verbose.stdout
    )
    assert verbose.stdout.splitlines()[-1] == "2 left out: not in the hosts' plans"


def test_a_failure_is_one_line_and_the_whole_output_is_in_the_log_it_names(tmp_path: Path) -> None:
    device, mtu = _default_interface()
    site = _site(tmp_path, device, mtu)
    args = [sys.executable, "-m", "gpufleet.cli", "verify", str(site), "--local", "--limit", "h100-1"]
    env = {**os.environ, "GPUFLEET_OUT": str(tmp_path / "out")}
    proc = subprocess.run(
        [*args, "--part", "gpu"], capture_output=True, text=True, cwd=REPO, timeout=300, env=env
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    log = tmp_path / "out" / "here" / "logs" / "verify-local.log"
    assert proc.stdout.splitlines()[-1] == f"full text of the failures: {log}"
    assert "failed" in log.read_text() and "test_gpu" in log.read_text()

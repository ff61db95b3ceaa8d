"""`gpufleet lab status`: one line naming what of the lab is missing, and the command that fixes it.

The rows are what `hosts.status` reads from a lab (supervisor PIDs, SSH port, systemd state); the
lab's files are real files in a temporary state folder. Not seen here: how the rows are read from
running hosts, nor leftovers in the kernel (a bridge, namespaces), which need a lab: the lab tests
run `lab status` on the suite's lab with its ssh config moved away
(tests/integration/test_lab_site.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.lab.cli import diagnosis
from gpufleet.lab.hosts import HostStatus, missing_ssh
from gpufleet.lab.paths import LabPaths
from gpufleet.model.site import Inventory
from gpufleet.provision.reach import unreachable


@pytest.fixture
def inv() -> Inventory:
    return load_inventory("lab")


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabPaths:
    # A lab name no machine has: no bridge, namespaces or cgroups of it exist.
    env = {"GPUFLEET_LAB_NAME": "zqx", "GPUFLEET_LAB_STATE": str(tmp_path / "state")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return LabPaths.default()


def _lab_files(paths: LabPaths) -> None:
    paths.ssh.mkdir(parents=True)
    for f in (paths.ssh_config, paths.ssh_key, paths.known_hosts):
        f.write_text("")


def _rows(inv: Inventory, systemd: str = "running", pid: int | None = 4242) -> list[HostStatus]:
    return [HostStatus(n.hostname, str(n.management_ip), pid, pid is not None, systemd) for n in inv.nodes]


def test_every_host_running_is_no_problem(inv: Inventory, paths: LabPaths) -> None:
    _lab_files(paths)
    assert diagnosis(inv, paths, _rows(inv)) is None


def test_no_lab_at_all_says_lab_up(inv: Inventory, paths: LabPaths) -> None:
    assert diagnosis(inv, paths, _rows(inv, "down", None)) == (
        f"no lab host is running ({paths.state}): lab is down: run `gpufleet lab up`"
    )


def test_a_stopped_lab_with_its_state_left_says_down_then_up(inv: Inventory, paths: LabPaths) -> None:
    _lab_files(paths)
    assert diagnosis(inv, paths, _rows(inv, "down", None)) == (
        f"no lab host is running ({paths.state}): lab is down: "
        "run `gpufleet lab down`, then `gpufleet lab up`"
    )


@pytest.mark.parametrize("gone", ["ssh_config", "ssh_key", "known_hosts"])
def test_running_hosts_without_an_ssh_file_name_it_and_the_fix(
    inv: Inventory, paths: LabPaths, gone: str
) -> None:
    _lab_files(paths)
    getattr(paths, gone).unlink()
    assert missing_ssh(paths) == [getattr(paths, gone)]
    assert diagnosis(inv, paths, _rows(inv, "unknown")) == (
        f"the lab's hosts run, but nothing can log in to them: {getattr(paths, gone)} is missing: "
        "run `gpufleet lab down`, then `gpufleet lab up`"
    )


def test_running_hosts_without_the_ssh_folder_name_every_file(inv: Inventory, paths: LabPaths) -> None:
    paths.state.mkdir()
    line = diagnosis(inv, paths, _rows(inv, "unknown"))
    assert line == (
        f"the lab's hosts run, but nothing can log in to them: {paths.ssh_config}, {paths.ssh_key}, "
        f"{paths.known_hosts} are missing: run `gpufleet lab down`, then `gpufleet lab up`"
    )


def test_hosts_not_running_are_named(inv: Inventory, paths: LabPaths) -> None:
    _lab_files(paths)
    rows = _rows(inv)
    rows[-1] = HostStatus(rows[-1].hostname, rows[-1].address, 4242, True, "degraded")
    assert diagnosis(inv, paths, rows) == (
        f"not running: {rows[-1].hostname}: run `gpufleet lab down`, then `gpufleet lab up`"
    )


def test_commands_that_need_hosts_name_the_missing_ssh_config(inv: Inventory, paths: LabPaths) -> None:
    # No host runs here (no supervisor PIDs): the fix is `lab up`, and no packet is sent.
    _lab_files(paths)
    paths.ssh_config.unlink()
    down = unreachable(inv, [n.hostname for n in inv.nodes])
    assert [u.line() for u in down] == [
        f"{n.hostname} ({n.management_ip}): {paths.ssh_config} is missing: lab is down: run `gpufleet lab up`"
        for n in inv.nodes
    ]

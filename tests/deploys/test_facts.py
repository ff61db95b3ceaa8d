"""Facts parse what the commands print: recorded H100 outputs and hand-written md/lsblk/RDMA states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploys.facts.nvidia import NvidiaLoadedDriver
from deploys.facts.packages import HeldPackages, InstalledVersions
from deploys.facts.perf import VenvPackages
from deploys.facts.raid import BlockDevices, MdDetail, MdStat, MdSuperblocks
from deploys.facts.rdma import DcbAppDscp, DcbPfc, GidType, IbStat, IbvDevinfo, NetdevMtu, RdmaLinks
from tests.deploys.conftest import fact_from, load


def test_loaded_driver_fact_reads_the_kernels_version_file() -> None:
    recorded = load("h100/proc-driver-version.txt")
    # The recorded command, run only where the file exists (no module loaded: no output, None).
    assert NvidiaLoadedDriver().command().endswith(f"then {recorded.command}; fi")
    assert fact_from(NvidiaLoadedDriver, "h100/proc-driver-version.txt") == "580.159.04"
    assert fact_from(NvidiaLoadedDriver, "handwritten/proc-driver-version-580.95.txt") == "580.95.05"
    assert NvidiaLoadedDriver().process([]) is None


def test_installed_versions_from_recorded_dpkg_keep_held_and_installed() -> None:
    versions = fact_from(InstalledVersions, "h100/dpkg-nvidia.txt")
    assert versions["libnccl2"] == "2.28.3-1+cuda13.0"  # `hi`: held and installed
    assert versions["cuda-nvcc-13-0"] == "13.0.88-1"


def test_removed_packages_are_not_installed() -> None:
    versions = fact_from(InstalledVersions, "handwritten/dpkg-l-driver-580.95.txt")
    assert "nvidia-driver-570-open" not in versions  # `rc`: only its configuration is left
    assert versions["nvidia-driver-580-open"] == "580.95.05-0ubuntu1"


def test_held_packages_from_recorded_apt_mark() -> None:
    assert fact_from(HeldPackages, "h100/apt-holds.txt") == {
        "libcublas-13-0",
        "libcublas-dev-13-0",
        "libcudnn9-cuda-13",
        "libnccl-dev",
        "libnccl2",
    }


def test_mdstat_without_md_support_has_no_arrays() -> None:
    # Recorded on the H100 node, which has no md arrays and no /proc/mdstat.
    assert fact_from(MdStat, "h100/mdstat.txt") == {}
    assert fact_from(MdStat, "handwritten/mdstat-none.txt") == {}


def test_mdstat_active_raid6() -> None:
    md0 = fact_from(MdStat, "handwritten/mdstat-raid6-active.txt")["md0"]
    assert md0["state"] == "active" and md0["level"] == "raid6"
    assert md0["members"] == ["/dev/sdf", "/dev/sde", "/dev/sdd", "/dev/sdc", "/dev/sdb", "/dev/sda"]
    assert (md0["raid_disks"], md0["active_disks"], md0["failed"], md0["resync"]) == (6, 6, [], None)


def test_mdstat_degraded_raid6_in_recovery() -> None:
    md0 = fact_from(MdStat, "handwritten/mdstat-raid6-degraded.txt")["md0"]
    assert md0["failed"] == ["/dev/sdc"]
    assert (md0["raid_disks"], md0["active_disks"], md0["resync"]) == (6, 5, "recovery")


def test_mdadm_detail_and_examine() -> None:
    detail = fact_from(MdDetail, "handwritten/mdadm-detail-export.txt")
    assert detail["MD_LEVEL"] == "raid6" and detail["MD_DEVICES"] == "6"
    assert fact_from(MdSuperblocks, "handwritten/mdadm-examine-scan.txt") == {
        "3f1c9e2a:7b4d5e6f:8a9b0c1d:2e3f4a5b": "/dev/md/0"
    }


@pytest.mark.parametrize(
    ("fixture", "device", "fstype", "pttype", "children"),
    [
        ("handwritten/lsblk-blank.txt", "/dev/sdc", None, None, 0),
        ("handwritten/lsblk-data.txt", "/dev/sdc", "xfs", None, 0),
        ("handwritten/lsblk-data.txt", "/dev/sdd", None, "gpt", 1),
        ("handwritten/lsblk-raid-assembled.txt", "/dev/md0", "xfs", None, 0),
    ],
)
def test_block_devices(
    fixture: str, device: str, fstype: str | None, pttype: str | None, children: int
) -> None:
    use = fact_from(BlockDevices, fixture)[device]
    assert (use["fstype"], use["pttype"], use["children"]) == (fstype, pttype, children)


@pytest.mark.parametrize(
    ("fact", "kwargs", "fixture"),
    [
        (RdmaLinks, {}, "rdma-link-roce.txt"),
        (IbStat, {}, "ibstat-ib.txt"),
        (IbvDevinfo, {"device": "mlx5_0"}, "ibv-devinfo-mlx5_0-ib.txt"),
        (GidType, {"device": "mlx5_0", "port": 1, "index": 3}, "gid-type-3-roce-v2.txt"),
        (NetdevMtu, {"netdev": "enp65s0f0np0"}, "netdev-mtu-9000.txt"),
        (DcbPfc, {"netdev": "enp65s0f0np0"}, "dcb-pfc-prio3.txt"),
        (DcbAppDscp, {"netdev": "enp65s0f0np0"}, "dcb-app-dscp-26-prio3.txt"),
    ],
)
def test_rdma_facts_run_the_fixtures_commands(fact: type, kwargs: dict[str, object], fixture: str) -> None:
    assert fact().command(**kwargs) == load(f"handwritten/{fixture}").command


def test_rdma_link_roce_ports_with_their_netdevs() -> None:
    links = fact_from(RdmaLinks, "handwritten/rdma-link-roce.txt")
    assert links["mlx5_0/1"] == {"state": "ACTIVE", "physical_state": "LINK_UP", "netdev": "enp65s0f0np0"}
    assert links["mlx5_1/1"]["state"] == "DOWN"


def test_ibstat_ports_per_ca() -> None:
    cas = fact_from(IbStat, "handwritten/ibstat-ib.txt")
    assert sorted(cas) == ["mlx5_0", "mlx5_1"]
    up, down = cas["mlx5_0"][1], cas["mlx5_1"][1]
    assert (up["State"], up["Physical state"], up["Rate"], up["Link layer"]) == (
        "Active",
        "LinkUp",
        "400",
        "InfiniBand",
    )
    assert (down["State"], down["Physical state"]) == ("Down", "Polling")
    assert "CA type" not in up  # CA fields stay out of the port's


def test_gid_types_and_netdev_mtu() -> None:
    assert fact_from(GidType, "handwritten/gid-type-3-roce-v2.txt") == "RoCE v2"
    assert fact_from(GidType, "handwritten/gid-type-3-roce-v1.txt") == "IB/RoCE v1"
    assert fact_from(GidType, "handwritten/gid-type-3-empty.txt") is None
    assert fact_from(NetdevMtu, "handwritten/netdev-mtu-1500.txt") == 1500


def test_dcb_pfc_and_dscp_rules() -> None:
    pfc = fact_from(DcbPfc, "handwritten/dcb-pfc-prio3.txt")
    assert [p for p, on in pfc.items() if on] == [3] and len(pfc) == 8
    assert not any(fact_from(DcbPfc, "handwritten/dcb-pfc-off.txt").values())
    assert fact_from(DcbAppDscp, "handwritten/dcb-app-dscp-26-prio3.txt") == {(26, 3)}
    assert fact_from(DcbAppDscp, "handwritten/dcb-app-dscp-none.txt") == set()


def test_venv_packages_from_the_facts_own_command_on_a_real_venv(tmp_path: Path) -> None:
    """The fact's shell line, run here: a missing venv is None, a fresh one lists pip and no torch."""

    def run(python: str) -> dict[str, str] | None:
        out = subprocess.run(
            ["bash", "-c", VenvPackages().command(python=python)], capture_output=True, text=True, check=True
        )
        return VenvPackages().process(out.stdout.splitlines())

    assert run(str(tmp_path / "none" / "bin" / "python")) is None
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    fresh = run(str(tmp_path / "venv" / "bin" / "python"))
    assert fresh is not None and "pip" in fresh and "torch" not in fresh


def test_venv_packages_read_torchs_local_version() -> None:
    assert fact_from(VenvPackages, "handwritten/pip-list-torch-2.9.1-cu130.txt")["torch"] == "2.9.1+cu130"

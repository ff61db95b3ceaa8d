"""Operations, pyinfra's test style: recorded output -> fact -> the commands the operation yields."""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
from pyinfra.api import OperationError
from pyinfra.facts.files import File, FileContents

from deploys.facts.nvidia import NvidiaLoadedDriver
from deploys.facts.packages import DpkgBroken, HeldPackages, InstalledVersions
from deploys.facts.perf import VenvPackages
from deploys.facts.raid import BlockDevices, MdDetail, MdStat, MdSuperblocks
from deploys.facts.rdma import DcbAppDscp, DcbPfc, GidType, IbStat, IbvDevinfo, NetdevMtu, RdmaLinks
from deploys.facts.swap import SwapDevices
from deploys.node import (
    AFTER_CHANGE,
    CONTAINERD_LIMITS,
    GRUB_FILE,
    LIMITS_FILE,
    MODULES_FILE,
    NCCL_CONF,
    PINS_FILE,
    ROCE_UNIT_FILE,
    managed_files,
)
from deploys.operations import nvidia, packages, perf, raid6, rdma, swap
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.node import NodePlan, Package, RaidArray, plan_node
from tests.deploys.conftest import fact_from

RunOp = Callable[..., list[str]]


def plan(site: str, host: str) -> NodePlan:
    inv = load_inventory(site)
    return plan_node(inv, next(n for n in inv.nodes if n.hostname == host))


GPU = plan("dc1", "gpu01")
STORAGE = plan("dc1", "st01")
ARRAY: RaidArray = STORAGE.raid[0]


def raid_facts(
    mdstat: str, lsblk: str, detail: str | None = None, examine: str | None = None
) -> dict[type, object]:
    return {
        MdStat: fact_from(MdStat, mdstat),
        BlockDevices: fact_from(BlockDevices, lsblk),
        MdDetail: fact_from(MdDetail, detail) if detail else {},
        MdSuperblocks: fact_from(MdSuperblocks, examine) if examine else {},
        FileContents: None,
    }


# --- RAID6 -------------------------------------------------------------------------------------


def test_raid6_created_on_blank_disks(run_op: RunOp) -> None:
    cmds = run_op(
        raid_facts("handwritten/mdstat-none.txt", "handwritten/lsblk-blank.txt"), raid6.raid6, ARRAY
    )
    assert cmds[0] == (
        "mdadm --create /dev/md0 --run --level=6 --raid-devices=6 --chunk=512 --metadata=1.2 "
        "/dev/sda /dev/sdb /dev/sdc /dev/sdd /dev/sde /dev/sdf"
    )
    assert "mdadm --detail --scan /dev/md0 >> /etc/mdadm/mdadm.conf" in cmds
    assert cmds[-1] == "mkfs.xfs /dev/md0"


def test_raid6_assembled_from_existing_members_never_recreated(run_op: RunOp) -> None:
    facts = raid_facts(
        "handwritten/mdstat-none.txt",
        "handwritten/lsblk-raid-members.txt",
        examine="handwritten/mdadm-examine-scan.txt",
    )
    cmds = run_op(facts, raid6.raid6, ARRAY)
    assert cmds == ["mdadm --assemble /dev/md0 /dev/sda /dev/sdb /dev/sdc /dev/sdd /dev/sde /dev/sdf"]


def test_raid6_refuses_to_create_over_data(run_op: RunOp) -> None:
    facts = raid_facts("handwritten/mdstat-none.txt", "handwritten/lsblk-data.txt")
    with pytest.raises(raid6.RefuseToCreate) as exc:
        run_op(facts, raid6.raid6, ARRAY)
    assert "/dev/sdc: data (xfs)" in str(exc.value)
    assert "/dev/sdd: data (gpt partition table)" in str(exc.value)


def test_raid6_refuses_members_half_from_an_array(run_op: RunOp) -> None:
    facts = raid_facts(
        "handwritten/mdstat-none.txt",
        "handwritten/lsblk-mixed.txt",
        examine="handwritten/mdadm-examine-scan.txt",
    )
    with pytest.raises(raid6.RefuseToCreate):
        run_op(facts, raid6.raid6, ARRAY)


def test_raid6_refuses_to_assemble_without_one_readable_array(run_op: RunOp) -> None:
    facts = raid_facts("handwritten/mdstat-none.txt", "handwritten/lsblk-raid-members.txt")
    with pytest.raises(raid6.RefuseToCreate, match="superblocks of 0 arrays"):
        run_op(facts, raid6.raid6, ARRAY)


def test_running_array_is_left_alone(run_op: RunOp) -> None:
    facts = raid_facts(
        "handwritten/mdstat-raid6-active.txt",
        "handwritten/lsblk-raid-assembled.txt",
        detail="handwritten/mdadm-detail-export.txt",
    )
    facts[FileContents] = ["ARRAY /dev/md0 metadata=1.2 UUID=3f1c9e2a:7b4d5e6f:8a9b0c1d:2e3f4a5b"]
    assert run_op(facts, raid6.raid6, ARRAY) == []


def test_running_array_missing_from_mdadm_conf_is_recorded(run_op: RunOp) -> None:
    facts = raid_facts(
        "handwritten/mdstat-raid6-active.txt",
        "handwritten/lsblk-raid-assembled.txt",
        detail="handwritten/mdadm-detail-export.txt",
    )
    assert run_op(facts, raid6.raid6, ARRAY) == ["mdadm --detail --scan /dev/md0 >> /etc/mdadm/mdadm.conf"]


def test_running_array_on_other_members_is_an_error(run_op: RunOp) -> None:
    other = ARRAY.model_copy(update={"members": ["/dev/sdg", *ARRAY.members[1:]]})
    facts = raid_facts("handwritten/mdstat-raid6-active.txt", "handwritten/lsblk-raid-assembled.txt")
    with pytest.raises(OperationError, match="mdadm --manage"):
        run_op(facts, raid6.raid6, other)


# --- packages: pins, holds, a driver upgrade ----------------------------------------------------


def package_facts(dpkg: str, holds: str) -> dict[type, object]:
    return {
        InstalledVersions: fact_from(InstalledVersions, dpkg),
        HeldPackages: fact_from(HeldPackages, holds),
        DpkgBroken: False,
    }


def test_new_gpu_node_installs_pinned_packages_and_holds_them(run_op: RunOp) -> None:
    # The recorded H100 node already runs the BOM's NCCL (2.28.3+cuda13.0), held.
    cmds = run_op(package_facts("h100/dpkg-nvidia.txt", "h100/apt-holds.txt"), packages.pinned, GPU.packages)
    install = next(c for c in cmds if "apt-get install" in c).split()
    assert "nvidia-driver-580-open" in install and "cuda-toolkit-13-0" in install
    assert "libnccl2" not in install and "libnccl-dev" not in install
    assert not any(c.startswith("apt-mark unhold") for c in cmds)  # nothing held needs to move
    hold = cmds[-1].split()
    assert hold[:2] == ["apt-mark", "hold"] and "nvidia-driver-580-open" in hold and "libnccl2" not in hold
    # Holds the node has for its own reasons (cuDNN, cuBLAS) are not the plan's to release.
    assert not any("libcudnn" in c or "libcublas" in c for c in cmds)


def test_driver_upgrade_releases_installs_and_holds_again(run_op: RunOp) -> None:
    facts = package_facts("handwritten/dpkg-l-driver-580.95.txt", "handwritten/apt-holds-driver-580.95.txt")
    cmds = run_op(facts, packages.pinned, GPU.packages)
    assert cmds == [
        "apt-mark unhold nvidia-driver-580-open nvidia-fabricmanager-580",
        f"{packages.APT_INSTALL} nvidia-driver-580-open nvidia-fabricmanager-580",
        "apt-mark hold nvidia-driver-580-open nvidia-fabricmanager-580",
    ]


def test_branch_change_releases_the_old_branchs_holds() -> None:
    # 570 to 580 (and proprietary to open): new names, so the old ones are held outside the plan.
    planned = [p for p in GPU.packages if p.name.startswith(("nvidia-", "cuda-toolkit"))]
    installed = {"nvidia-driver-570": "570.195.03-0ubuntu1", "nvidia-fabricmanager-570": "570.195.03-1"}
    held = {*installed, "cuda-toolkit-12-8", "libcudnn9-cuda-12"}
    cmds = packages.package_commands(planned, installed, held)
    assert cmds[0] == "apt-mark unhold cuda-toolkit-12-8 nvidia-driver-570 nvidia-fabricmanager-570"
    assert "nvidia-driver-580-open" in cmds[1] and cmds[2].startswith("apt-mark hold")
    assert packages.family("nvidia-driver-570") == packages.family("nvidia-driver-580-open")


def test_converged_packages_yield_nothing(run_op: RunOp) -> None:
    installed = {p.name: (p.version or "1").replace("*", "1") for p in GPU.packages}
    facts = {InstalledVersions: installed, HeldPackages: set(GPU.held_packages), DpkgBroken: False}
    assert run_op(facts, packages.pinned, GPU.packages) == []


@pytest.mark.parametrize("audit", ["dpkg-audit-half-installed.txt", "dpkg-audit-interrupted.txt"])
def test_install_cut_off_midway_is_repaired_first(run_op: RunOp, audit: str) -> None:
    facts = package_facts("handwritten/dpkg-l-driver-580.95.txt", "handwritten/apt-holds-driver-580.95.txt")
    facts[DpkgBroken] = fact_from(DpkgBroken, f"handwritten/{audit}")
    cmds = run_op(facts, packages.pinned, GPU.packages)
    assert cmds[:2] == packages.DPKG_REPAIR and len(cmds) == 5


def test_a_clean_dpkg_audit_is_not_broken() -> None:
    assert fact_from(DpkgBroken, "handwritten/dpkg-audit-clean.txt") is False


def test_released_hold_when_the_plan_no_longer_holds() -> None:
    pkgs = [Package(name="chrony"), Package(name="containerd", version="1.7*", hold=True)]
    cmds = packages.package_commands(
        pkgs, {"chrony": "4.5", "containerd": "1.7.27"}, {"chrony", "containerd"}
    )
    assert cmds == ["apt-mark unhold chrony"]


def test_pins_allow_a_rollback() -> None:
    prefs = packages.pin_preferences(GPU.packages)
    assert "Package: nvidia-driver-580-open\nPin: version 580.159.04-*\nPin-Priority: 1001\n" in prefs
    assert "Package: chrony" not in prefs  # unpinned packages follow their source


# --- NVIDIA: the loaded driver against the plan ----------------------------------------------------


def test_loaded_driver_as_planned_needs_no_reboot(run_op: RunOp) -> None:
    facts = {NvidiaLoadedDriver: fact_from(NvidiaLoadedDriver, "h100/proc-driver-version.txt"), File: None}
    assert run_op(facts, nvidia.reboot_marker, GPU.packages) == []
    # No module loaded yet (a new node before its first boot with the driver): that boot loads the
    # planned one.
    facts[NvidiaLoadedDriver] = None
    assert run_op(facts, nvidia.reboot_marker, GPU.packages) == []


def test_driver_modules_wait_for_the_boot_that_loads_the_driver() -> None:
    # A new GPU node right after its first deploy: no NVIDIA module yet (nouveau until reboot).
    assert nvidia.now(GPU.kernel_modules, driver_loaded=False) == ["br_netfilter", "overlay"]
    assert nvidia.now(GPU.kernel_modules, driver_loaded=True) == GPU.kernel_modules
    assert nvidia.now(GPU.services, driver_loaded=False) == ["chrony", "containerd", "kubelet"]
    assert "nvidia-persistenced" in nvidia.now(GPU.services, driver_loaded=True)


def test_loaded_old_driver_marks_the_node_for_reboot_once(run_op: RunOp) -> None:
    # Read from the kernel: after the new packages are in, nvidia-smi would fail with a
    # driver/library version mismatch, and the deploy with it.
    old = fact_from(NvidiaLoadedDriver, "handwritten/proc-driver-version-580.95.txt")
    facts = {NvidiaLoadedDriver: old, File: None}
    cmds = run_op(facts, nvidia.reboot_marker, GPU.packages)
    assert cmds == ["echo 'NVIDIA driver 580.95.05 loaded, 580.159.04 planned' > /run/reboot-required"]
    facts[File] = {"size": 52}
    assert run_op(facts, nvidia.reboot_marker, GPU.packages) == []


# --- files the deploy owns, from the plan ---------------------------------------------------------


def test_nccl_conf_is_the_plans() -> None:
    files = managed_files(GPU)
    assert GPU.nccl_conf is not None and files[NCCL_CONF].endswith(GPU.nccl_conf)
    assert "NCCL_IB_HCA=" in files[NCCL_CONF] and "NCCL_IB_GID_INDEX=" in files[NCCL_CONF]
    roce = plan("dc1-dr", next(n.hostname for n in load_inventory("dc1-dr").nodes if n.gpu))
    assert "NCCL_IB_TC=106" in managed_files(roce)[NCCL_CONF]


def test_gpu_node_files_and_lab_node_files() -> None:
    gpu = managed_files(GPU)
    assert (
        "iommu=pt" in gpu[GRUB_FILE] and "blacklist nouveau" in gpu["/etc/modprobe.d/gpufleet-blacklist.conf"]
    )
    assert 'BinaryName = "/usr/bin/nvidia-container-runtime"' in gpu["/etc/containerd/config.toml"]
    lab = managed_files(plan("lab", "lab-st1"))
    assert NCCL_CONF not in lab and GRUB_FILE not in lab
    assert "URIs: file:///srv/gpufleet-mirror" in lab["/etc/apt/sources.list.d/gpufleet-mirror.sources"]
    assert "Package: containerd\nPin: version 1.6*" in lab[PINS_FILE]


# --- RDMA: RoCE netdev settings, InfiniBand ports, GID indexes ----------------------------------

ROCE = plan("dc1-dr", "st01").rdma[0]
IB = GPU.rdma[0]


def roce_facts(
    mtu: str = "netdev-mtu-9000.txt",
    pfc: str = "dcb-pfc-prio3.txt",
    app: str = "dcb-app-dscp-26-prio3.txt",
    gid: str = "gid-type-3-roce-v2.txt",
) -> dict[type, object]:
    return {
        RdmaLinks: fact_from(RdmaLinks, "handwritten/rdma-link-roce.txt"),
        GidType: fact_from(GidType, f"handwritten/{gid}"),
        NetdevMtu: fact_from(NetdevMtu, f"handwritten/{mtu}"),
        DcbPfc: fact_from(DcbPfc, f"handwritten/{pfc}"),
        DcbAppDscp: fact_from(DcbAppDscp, f"handwritten/{app}"),
    }


def test_roce_port_as_planned_yields_nothing(run_op: RunOp) -> None:
    assert ROCE.roce is not None and ROCE.roce.netdev == "enp65s0f0np0"
    assert run_op(roce_facts(), rdma.rdma_port, ROCE) == []


def test_roce_netdev_mtu_below_plan_is_raised(run_op: RunOp) -> None:
    cmds = run_op(roce_facts(mtu="netdev-mtu-1500.txt"), rdma.rdma_port, ROCE)
    assert cmds == ["ip link set dev enp65s0f0np0 mtu 9000"]


def test_roce_pfc_off_and_no_dscp_rule_are_set(run_op: RunOp) -> None:
    cmds = run_op(roce_facts(pfc="dcb-pfc-off.txt", app="dcb-app-dscp-none.txt"), rdma.rdma_port, ROCE)
    assert cmds == [
        "dcb pfc set dev enp65s0f0np0 prio-pfc all:off 3:on",
        "dcb app replace dev enp65s0f0np0 dscp-prio 26:3",
    ]


@pytest.mark.parametrize(
    ("gid", "why"),
    [("gid-type-3-roce-v1.txt", "is IB/RoCE v1, not RoCE v2"), ("gid-type-3-empty.txt", "is empty")],
)
def test_gid_index_that_is_not_roce_v2_fails(run_op: RunOp, gid: str, why: str) -> None:
    with pytest.raises(OperationError, match=f"mlx5_0 port 1: GID index 3 .*{why}"):
        run_op(roce_facts(gid=gid), rdma.rdma_port, ROCE)


def test_missing_rdma_device_fails(run_op: RunOp) -> None:
    missing = ROCE.model_copy(update={"device": "mlx5_9"})
    with pytest.raises(OperationError, match=r"mlx5_9 port 1: no such port \(rdma link show lists mlx5_0/1"):
        run_op(roce_facts(), rdma.rdma_port, missing)


def test_roce_port_on_another_netdev_fails(run_op: RunOp) -> None:
    assert ROCE.roce is not None
    moved = ROCE.model_copy(update={"roce": ROCE.roce.model_copy(update={"netdev": "ens1f0np0"})})
    with pytest.raises(OperationError, match="on netdev enp65s0f0np0, planned ens1f0np0"):
        run_op(roce_facts(), rdma.rdma_port, moved)


def ib_facts() -> dict[type, object]:
    return {
        IbStat: fact_from(IbStat, "handwritten/ibstat-ib.txt"),
        IbvDevinfo: fact_from(IbvDevinfo, "handwritten/ibv-devinfo-mlx5_0-ib.txt"),
        GidType: fact_from(GidType, "handwritten/gid-type-0-ib.txt"),
    }


def test_active_infiniband_port_as_planned_passes(run_op: RunOp) -> None:
    assert (IB.device, IB.link_layer, IB.mtu, IB.roce) == ("mlx5_0", "InfiniBand", 4096, None)
    assert run_op(ib_facts(), rdma.rdma_port, IB) == []


def test_infiniband_port_down_fails_naming_its_state(run_op: RunOp) -> None:
    down = IB.model_copy(update={"device": "mlx5_1"})
    with pytest.raises(OperationError, match=r"mlx5_1 port 1: state Down \(Polling\), expected Active"):
        run_op(ib_facts(), rdma.rdma_port, down)


def test_infiniband_port_at_another_mtu_fails(run_op: RunOp) -> None:
    smaller = IB.model_copy(update={"mtu": 2048})
    with pytest.raises(OperationError, match="active MTU 4096, planned 2048"):
        run_op(ib_facts(), rdma.rdma_port, smaller)


def test_roce_boot_unit_runs_the_same_settings() -> None:
    assert ROCE.roce is not None
    unit = managed_files(plan("dc1-dr", "st01"))[ROCE_UNIT_FILE]
    for command in rdma.roce_settings(ROCE.roce):
        assert f"ExecStart={command}\n" in unit
    assert "After=sys-subsystem-net-devices-enp65s0f0np0.device" in unit
    assert ROCE_UNIT_FILE not in managed_files(GPU)  # InfiniBand: the subnet manager's settings


# --- limits ---------------------------------------------------------------------------------------


def test_gpu_node_locks_unlimited_memory_for_sessions_and_containerd() -> None:
    files = managed_files(GPU)
    limits = files[LIMITS_FILE].splitlines()
    assert {"* - memlock unlimited", "root - memlock unlimited", "* - nofile 1048576"} <= set(limits)
    dropin = files[CONTAINERD_LIMITS]
    assert "[Service]\nLimitMEMLOCK=infinity\nLimitNOFILE=1048576\n" in dropin
    assert AFTER_CHANGE[CONTAINERD_LIMITS].startswith("systemctl daemon-reload")


def test_lab_node_raises_open_files_but_locks_no_memory() -> None:
    files = managed_files(plan("lab", "lab-st1"))
    assert "memlock" not in files[LIMITS_FILE] and "* - nofile 1048576" in files[LIMITS_FILE]
    assert files[CONTAINERD_LIMITS].endswith("[Service]\nLimitNOFILE=1048576\n")


@pytest.mark.parametrize("rules", [{(26, 2)}, {(26, 3), (26, 2)}, {(24, 3)}])
def test_dscp_rule_other_than_the_plans_is_replaced(rules: set[tuple[int, int]]) -> None:
    assert ROCE.roce is not None
    pfc = {p: p == 3 for p in range(8)}
    assert rdma.roce_commands(ROCE.roce, 9000, pfc, rules) == [
        "dcb app replace dev enp65s0f0np0 dscp-prio 26:3"
    ]


# --- swap (kubelet's prerequisite) ---------------------------------------------------------------

FSTAB_WITH_SWAP = [
    "UUID=1 / ext4 defaults 0 1",
    "/swap.img none swap sw 0 0",
    "/dev/md0 /srv/data xfs defaults 0 2",
]


def test_swap_goes_off_now_and_at_boot(run_op: RunOp) -> None:
    facts = {
        SwapDevices: fact_from(SwapDevices, "handwritten/proc-swaps-on.txt"),
        FileContents: FSTAB_WITH_SWAP,
    }
    assert facts[SwapDevices] == ["/swap.img", "/dev/nvme0n1p3"]
    assert run_op(facts, swap.swap_off) == ["swapoff -a", swap.COMMENT_OUT]


def test_no_swap_and_a_commented_fstab_need_nothing(run_op: RunOp) -> None:
    fstab = [
        "UUID=1 / ext4 defaults 0 1",
        "# /swap.img none swap sw 0 0",
        "/dev/md0 /srv/swapdata xfs defaults 0 2",
    ]
    facts = {SwapDevices: fact_from(SwapDevices, "handwritten/proc-swaps-off.txt"), FileContents: fstab}
    assert run_op(facts, swap.swap_off) == []


def test_kubelet_nodes_load_their_modules_and_turn_swap_off() -> None:
    assert GPU.kernel_modules == ["br_netfilter", "nvidia_peermem", "overlay"] and GPU.swap_off
    assert STORAGE.kernel_modules == [] and not STORAGE.swap_off
    managed = managed_files(GPU)
    assert managed[MODULES_FILE].splitlines()[1:] == ["br_netfilter", "nvidia_peermem", "overlay"]
    assert MODULES_FILE not in managed_files(STORAGE)
    lab = load_inventory("lab")
    # Lab hosts are containers: they load no module and run no kubelet.
    assert all(not plan_node(lab, n).kernel_modules and not plan_node(lab, n).swap_off for n in lab.nodes)


# --- the perf probe's venv -----------------------------------------------------------------------

PERF_ENV = GPU.perf_env
assert PERF_ENV is not None
PIP_INSTALL = [
    "/opt/gpufleet/perf/bin/python", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
    "--index-url", "https://pypi.dc1.example.internal/simple/", "torch==2.9.1+cu130",
]  # fmt: skip


@pytest.mark.parametrize(
    ("installed", "want"),
    [
        (None, [["python3", "-m", "venv", "/opt/gpufleet/perf"], PIP_INSTALL]),
        ({"pip": "24.0", "setuptools": "80.9.0"}, [PIP_INSTALL]),
        (fact_from(VenvPackages, "handwritten/pip-list-torch-2.8.0-cu128.txt"), [PIP_INSTALL]),
        (fact_from(VenvPackages, "handwritten/pip-list-torch-2.9.1-cu130.txt"), []),
    ],
    ids=["no venv", "venv without torch", "older torch", "planned torch"],
)
def test_perf_env_commands(installed: dict[str, str] | None, want: list[list[str]]) -> None:
    assert PERF_ENV is not None
    assert perf.env_commands(PERF_ENV, installed) == want


def test_perf_env_yields_each_argument_quoted(run_op: RunOp) -> None:
    """An index URL with a shell word in it (the model refuses one; this is the last line) stays one word."""
    assert PERF_ENV is not None
    hostile = PERF_ENV.model_copy(update={"index_url": "https://x/simple/;reboot"})
    cmds = run_op({VenvPackages: None}, perf.probe_env, hostile)
    assert cmds[0] == "python3 -m venv /opt/gpufleet/perf"
    assert shlex.split(cmds[1])[-3:] == ["--index-url", "https://x/simple/;reboot", "torch==2.9.1+cu130"]
    converged = fact_from(VenvPackages, "handwritten/pip-list-torch-2.9.1-cu130.txt")
    assert run_op({VenvPackages: converged}, perf.probe_env, PERF_ENV) == []

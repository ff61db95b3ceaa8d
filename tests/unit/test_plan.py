"""The pure plan, table-driven from the shipped sites and small edits of them."""

from __future__ import annotations

from typing import Any

import pytest

from gpufleet.inventory.load import inventory_from_data, load_inventory
from gpufleet.model.catalog import GPUModel, replica_shape
from gpufleet.model.errors import InputError
from gpufleet.model.site import ROCE_HEADER_BYTES, Inventory
from gpufleet.plan import plan_node, plan_site
from gpufleet.plan.expect import host_expectations
from gpufleet.plan.node import GPU_TAINT, NOFILE, READINESS_TAINT, NodePlan


def node_plan(site: str | Inventory, host: str) -> NodePlan:
    inv = load_inventory(site) if isinstance(site, str) else site
    return plan_node(inv, inv.node(host))


def versions(plan: NodePlan) -> dict[str, str | None]:
    return {p.name: p.version for p in plan.packages}


def test_gpu_node_pins_and_holds_the_bom() -> None:
    plan = node_plan("dc1", "gpu01")
    pins = versions(plan)
    assert pins["nvidia-driver-580-open"] == "580.159.04-*"
    assert pins["nvidia-fabricmanager-580"] == "580.159.04-*"
    assert pins["cuda-toolkit-13-0"] == "13.0.*"
    assert pins["libnccl2"] == pins["libnccl-dev"] == "2.28.3-*+cuda13.0"
    assert pins["kubelet"] == "1.31.4-*"
    held = set(plan.held_packages)
    assert {
        "nvidia-driver-580-open",
        "nvidia-fabricmanager-580",
        "cuda-toolkit-13-0",
        "libnccl2",
        "kubelet",
    } <= held
    assert "rdma-core" in pins and "rdma-core" not in held


@pytest.mark.parametrize(
    ("site", "host", "expected"),
    [
        ("dc1", "gpu01", ["NCCL_IB_HCA=" + ",".join(f"mlx5_{i}" for i in range(8)), "NCCL_IB_GID_INDEX=0"]),
        ("dc1-dr", "gpu01", ["NCCL_IB_GID_INDEX=3", "NCCL_IB_TC=106"]),
    ],
)
def test_nccl_conf_lists_the_hosts_hcas_and_gid_index(site: str, host: str, expected: list[str]) -> None:
    conf = node_plan(site, host).nccl_conf
    assert conf is not None
    lines = conf.splitlines()
    assert "NCCL_SOCKET_IFNAME=eno1" in lines
    for line in expected:
        assert line in lines


def test_nodes_without_gpus_get_no_nvidia_software() -> None:
    for host in ("lab-cp1", "lab-st1"):
        plan = node_plan("lab", host)
        assert plan.nccl_conf is None
        assert plan.kernel_cmdline == []
        assert not [p for p in plan.packages if p.name.startswith(("nvidia", "cuda", "libnccl"))]
    plan = node_plan("dc1", "st01")
    assert not [p for p in plan.packages if p.name.startswith(("nvidia", "cuda", "libnccl"))]


def test_gpu_kernel_and_sysctl() -> None:
    plan = node_plan("dc1", "gpu01")
    assert "iommu=pt" in plan.kernel_cmdline
    assert "hugepages=16384" in plan.kernel_cmdline  # 2048 x 2 MiB pages per GPU, 8 GPUs
    assert plan.blacklist_modules == ["nouveau"]
    assert plan.sysctl["net.ipv4.ip_forward"] == "1"
    assert plan.sysctl["net.core.rmem_max"] == "268435456"
    assert {"nvidia-persistenced", "nvidia-fabricmanager", "kubelet"} <= set(plan.services)


def test_h100_pcie_needs_no_fabric_manager(dc1: dict[str, Any]) -> None:
    for node in dc1["nodes"]:
        if "gpu" in node:
            node["gpu"]["model"] = "H100-PCIe-80GB"
    plan = node_plan(inventory_from_data(dc1, "x"), "gpu01")
    assert "nvidia-fabricmanager" not in plan.services
    assert not [p for p in plan.packages if p.name.startswith("nvidia-fabricmanager")]


def test_storage_node_raid6_and_mounts() -> None:
    plan = node_plan("dc1", "st01")
    (array,) = plan.raid
    assert array.level == 6 and array.device == "/dev/md0"
    assert array.members == [f"/dev/sd{c}" for c in "abcdef"]
    assert [(m.device, m.path) for m in plan.mounts] == [("/dev/md0", "/srv/backup")]
    assert plan.ceph_osd_devices == [f"/dev/nvme{i}n1" for i in range(4)]
    assert "mdadm" in versions(plan) and "mdmonitor" in plan.services
    assert "ceph-osd" in versions(plan)


def test_every_node_joins_tainted_until_verified() -> None:
    for site in ("lab", "dc1", "dc1-dr"):
        inv = load_inventory(site)
        for node in inv.nodes:
            plan = plan_node(inv, node)
            # At registration only: an admitted node is as planned without it.
            assert READINESS_TAINT in plan.registration_taints and READINESS_TAINT not in plan.taints
            kubernetes = host_expectations(inv, node).kubernetes
            assert kubernetes is None or kubernetes.taints == plan.taints
            assert (GPU_TAINT in plan.taints) == (node.gpu is not None)
            assert plan.labels["gpufleet.io/site"] == site


def test_digest_is_stable_and_moves_only_with_the_plan(dc1: dict[str, Any]) -> None:
    before = plan_site(load_inventory("dc1")).node_digests
    assert before == plan_site(load_inventory("dc1")).node_digests
    assert len(set(before.values())) == len(before), "every node's plan differs (hostnames, labels)"
    dc1["bom"]["nvidia_driver"]["version"] = "580.95.05"
    after = plan_site(inventory_from_data(dc1, "x")).node_digests
    changed = {h for h in before if before[h] != after[h]}
    assert changed == {f"gpu{i:02d}" for i in range(1, 9)}


def test_site_plan_ceph() -> None:
    ceph = plan_site(load_inventory("dc1")).ceph
    assert ceph is not None
    assert ceph.mons == ["st01", "st02", "st03"]  # odd count keeps quorum
    assert [r.name for r in ceph.crush_rules] == ["replicated-host"]
    for pool in ceph.pools:
        assert (pool.size, pool.min_size, pool.crush_rule) == (3, 2, "replicated-host")
    # The site's pools: 16 OSDs x 100 PGs / (size 3 x 2 pools) = 266, nearest power of two. The
    # model cache's file system: data over 4 pools (133 -> 128), metadata a quarter of that.
    assert [(p.name, p.pg_num, p.application) for p in ceph.pools] == [
        ("models", 256, "rbd"),
        ("datasets", 256, "rbd"),
        (ceph.filesystem.metadata_pool, 32, "cephfs"),
        (ceph.filesystem.data_pool, 128, "cephfs"),
    ]
    # Well under Ceph's mon_max_pg_per_osd (250): (2 x 256 + 32 + 128) x 3 copies / 16 OSDs = 126.
    assert sum(p.pg_num * p.size for p in ceph.pools) / 16 < 250
    lab = plan_site(load_inventory("lab")).ceph
    assert lab is not None and [p.pg_num for p in lab.pools] == [32, 8, 32]


def test_site_plan_kubernetes_and_serving() -> None:
    plan = plan_site(load_inventory("dc1"))
    assert plan.kubernetes.control_planes == ["cp01", "cp02", "cp03"]
    assert plan.kubernetes.workers == [f"gpu{i:02d}" for i in range(1, 9)]
    assert plan.serving is not None and plan.serving.shape is not None
    assert (plan.serving.shape.tensor_parallel, plan.serving.shape.nodes) == (16, 2)
    assert plan.burst is not None
    assert plan.burst.max_nodes == 8 and plan.burst.max_hourly_usd == 400
    # 8 nodes at a Spot max price of $50/h each can never bill more than the $400/h cap.
    assert plan.burst.spot_max_price_usd == 50.0


@pytest.mark.parametrize(("cap", "nodes"), [(400.0, 6), (1000.0, 3), (100.0, 7), (0.3, 1), (333.33, 9)])
def test_spot_max_price_never_lets_a_full_fleet_pass_the_cap(cap: float, nodes: int) -> None:
    """The group states its max price to 4 decimals: 400/6 was written 66.6667 (rounded up), and
    six nodes could bill 400.0002 $/h against a 400 cap (the controller, reading it back, never
    ran the sixth)."""
    from gpufleet.plan.site import spot_max_price

    burst = load_inventory("dc1").site.burst
    assert burst is not None
    price = spot_max_price(burst.model_copy(update={"max_hourly_usd": cap, "max_nodes": nodes}))
    assert price is not None
    assert price == round(price, 4), "the price the group is given is the price planned"
    assert nodes * float(f"{price:.4f}") <= cap
    assert cap - nodes * price < nodes * 0.0001, "no more than the 4th decimal given up"


@pytest.mark.parametrize(
    ("model", "gpu", "tp", "nodes"),
    [
        ("deepseek-r1", GPUModel.H200, 8, 1),
        ("deepseek-r1", GPUModel.H100_SXM, 16, 2),
        ("deepseek-v3", GPUModel.A100_80GB, 16, 2),
        ("deepseek-r1-distill-llama-70b", GPUModel.H100_SXM, 4, 1),
        ("deepseek-r1-distill-llama-70b", GPUModel.H200, 2, 1),
        ("deepseek-r1-distill-qwen-32b", GPUModel.L40S, 2, 1),
        ("deepseek-r1-distill-qwen-14b", GPUModel.L4, 2, 1),
        ("deepseek-r1-distill-qwen-7b", GPUModel.L4, 1, 1),
        ("deepseek-r1-distill-qwen-7b", GPUModel.T4, 2, 1),
    ],
)
def test_replica_shape(model: str, gpu: GPUModel, tp: int, nodes: int) -> None:
    shape = replica_shape(model, gpu)
    assert (shape.tensor_parallel, shape.nodes) == (tp, nodes)


@pytest.mark.parametrize(
    ("site", "host", "memlock", "nofile"),
    [("dc1", "gpu01", True, True), ("dc1", "st01", True, False), ("dc1", "cp01", False, True)],
)
def test_limits_by_what_the_node_runs(site: str, host: str, memlock: bool, nofile: bool) -> None:
    limits = {(x.domain, x.item): x.value for x in node_plan(site, host).limits}
    for domain in ("*", "root"):  # pam_limits' wildcard leaves root out
        assert limits.get((domain, "memlock")) == ("unlimited" if memlock else None)
        assert limits.get((domain, "nofile")) == (str(NOFILE) if nofile else None)


def test_roce_ports_get_jumbo_netdevs_and_pfc_on_nccls_priority() -> None:
    inv = load_inventory("dc1-dr")
    plan = node_plan(inv, "gpu01")
    assert len(plan.rdma) == 8 and {p.link_layer for p in plan.rdma} == {"Ethernet"}
    roce = plan.rdma[0].roce
    assert roce is not None and roce.netdev == "enp26s0np0"
    assert inv.site.networks.storage is not None
    assert roce.netdev_mtu == inv.site.networks.storage.mtu == 9000
    assert roce.netdev_mtu >= plan.rdma[0].mtu + ROCE_HEADER_BYTES
    # NCCL marks its packets with NCCL_IB_TC: DSCP in the upper six bits, the priority DSCP/8.
    assert plan.nccl_conf is not None and f"NCCL_IB_TC={roce.dscp << 2 | 2}" in plan.nccl_conf
    assert (roce.dscp, roce.priority) == (26, 3)


def test_infiniband_ports_have_no_host_side_settings() -> None:
    plan = node_plan("dc1", "gpu01")
    assert [(p.device, p.link_layer, p.mtu, p.roce) for p in plan.rdma][:1] == [
        ("mlx5_0", "InfiniBand", 4096, None)
    ]
    assert node_plan("lab", "lab-st1").rdma == []


def test_roce_needs_a_netdev_and_a_storage_mtu_that_carries_it(dc1: dict[str, Any]) -> None:
    roce = [
        (i, j)
        for i, node in enumerate(dc1["nodes"])
        for j, nic in enumerate(node["nics"].get("rdma", []))
        if nic["link_layer"] == "roce"
    ]
    i, j = roce[0]
    del dc1["nodes"][i]["nics"]["rdma"][j]["netdev"]
    dc1["site"]["networks"]["storage"]["mtu"] = 4000
    with pytest.raises(InputError) as exc:
        inventory_from_data(dc1, "x")
    paths = sorted(p.path for p in exc.value.problems)
    assert paths == sorted(
        [("nodes", i, "nics", "rdma", j, "netdev")]
        + [("nodes", a, "nics", "rdma", b, "mtu") for a, b in roce]
    )

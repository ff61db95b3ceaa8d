"""What a host check expects of one node, derived from its inventory entry, BOM and node plan. Pure.

The host suite (tests/host) compares the machine with these values and nothing else: what
the plan requires is demanded, what it leaves out is not.
"""

from __future__ import annotations

from gpufleet.model.catalog import GPU_CATALOG, Architecture
from gpufleet.model.site import Inventory, Node, Role, Taint
from gpufleet.plan.node import Frozen, Mount, NodePlan, RaidArray, RdmaPort, plan_node
from gpufleet.plan.perf import PerfPlan

# A power limit below this share of the board's TDP means someone capped the GPU.
MIN_POWER_LIMIT_SHARE = 0.8


class GpuExpect(Frozen):
    count: int
    smi_name: str
    driver_version: str
    open_kernel_module: bool
    cuda: str
    nccl_package: str
    nccl_version: str  # apt pattern, e.g. 2.28.3-*+cuda13.0
    min_power_limit_w: float
    # Ampere and newer remap rows instead of retiring pages.
    remaps_rows: bool
    container_toolkit: str | None


class NetworkExpect(Frozen):
    management_device: str
    management_mtu: int
    rdma: list[RdmaPort]  # the plan's: what the deploy set is what the host must show


class StorageExpect(Frozen):
    raid: list[RaidArray]
    mounts: list[Mount]
    ceph_health: bool


class KubernetesExpect(Frozen):
    node_name: str
    labels: dict[str, str]
    taints: list[Taint]
    kernel_modules: list[str]
    swap_off: bool


class HostExpect(Frozen):
    hostname: str
    gpu: GpuExpect | None
    network: NetworkExpect
    storage: StorageExpect
    kubernetes: KubernetesExpect | None
    perf: PerfPlan | None


def host_expectations(inv: Inventory, node: Node, plan: NodePlan | None = None) -> HostExpect:
    """What the host suite checks on `node`; `plan` when the caller has planned the node already."""
    plan = plan if plan is not None else plan_node(inv, node)
    bom = inv.bom
    gpu = None
    if node.gpu is not None and bom.nvidia_driver and bom.cuda and bom.nccl:
        spec = GPU_CATALOG[node.gpu.model]
        nccl = next(p for p in plan.packages if p.name == "libnccl2")
        gpu = GpuExpect(
            count=node.gpu.count,
            smi_name=spec.smi_name,
            driver_version=bom.nvidia_driver.version,
            open_kernel_module=bom.nvidia_driver.open_kernel_module,
            cuda=bom.cuda,
            nccl_package=nccl.name,
            nccl_version=nccl.version or "*",
            min_power_limit_w=spec.tdp_w * MIN_POWER_LIMIT_SHARE,
            remaps_rows=spec.architecture is not Architecture.TURING,
            container_toolkit=bom.nvidia_container_toolkit,
        )
    network = NetworkExpect(
        management_device=node.nics.management.device,
        management_mtu=node.nics.management.mtu or inv.site.networks.management.mtu,
        rdma=plan.rdma,
    )
    # A node is checked as a Kubernetes node when its plan runs a kubelet (not in the lab,
    # whose distribution ships no kubeadm).
    in_cluster = "kubelet" in plan.services
    return HostExpect(
        hostname=node.hostname,
        gpu=gpu,
        network=network,
        storage=StorageExpect(raid=plan.raid, mounts=plan.mounts, ceph_health=Role.STORAGE in node.roles),
        kubernetes=KubernetesExpect(
            node_name=node.hostname,
            labels=plan.labels,
            taints=plan.taints,
            kernel_modules=plan.kernel_modules,
            swap_off=plan.swap_off,
        )
        if in_cluster
        else None,
        perf=plan.perf,
    )

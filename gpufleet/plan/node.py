"""What one node must become: packages, holds, kernel, sysctl, limits, NCCL, RDMA, RAID6, mounts, labels.

Pure: an Inventory and a hostname in, a NodePlan out. Every deploy, role, component and
host check reads its numbers from here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gpufleet.model.catalog import GPU_CATALOG
from gpufleet.model.site import Inventory, LinkLayer, Node, Role, Taint
from gpufleet.plan.perf import PerfEnv, PerfPlan, plan_perf, plan_perf_env

# Nodes register tainted and stay so until the admission gate (host verification) passes and an
# operator admits them. Registration only: it is not part of a node's steady state, so re-running
# the Kubernetes role never re-taints an admitted node and verification never expects it.
READINESS_TAINT = Taint(key="gpufleet.io/unverified", value="true", effect="NoSchedule")
GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")
HUGEPAGES_2M_PER_GPU = 2048  # 4 GiB of 2 MiB pages per GPU for GPUDirect and NCCL buffers
# The containerd runtime (and Kubernetes RuntimeClass) that runs containers through the toolkit.
NVIDIA_RUNTIME = "nvidia"
NOFILE = 1048576  # kubelet, containerd and NCCL's many sockets; the kernel's nr_open default
# RoCE traffic: NCCL_IB_TC is the IP TOS byte, DSCP in its upper six bits (106 = DSCP 26 + ECT(0)).
# DSCP 26 lands on priority 3 by the usual DSCP/8 mapping: PFC makes that priority lossless.
ROCE_TRAFFIC_CLASS = 106
ROCE_DSCP = ROCE_TRAFFIC_CLASS >> 2
ROCE_PRIORITY = ROCE_DSCP >> 3
# Jumbo frames where the site names no storage network: RDMA MTU 4096 + RoCE headers fit.
ROCE_DEFAULT_NETDEV_MTU = 9000


def is_lab(inv: Inventory) -> bool:
    """Lab hosts are containers fed by a mirror built from Debian alone: Debian ships no kubeadm or
    kubelet (the Kubernetes role runs in check mode there), and a container may set only the
    network sysctls of its own namespace."""
    return inv.site.environment == "lab"


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AptSource(Frozen):
    name: str
    uri: str
    suite: str
    components: list[str]


class Package(Frozen):
    name: str
    # An apt preferences version pattern (`580.159.04-*`); None follows the source.
    version: str | None = None
    hold: bool = False


class RaidArray(Frozen):
    device: str
    level: Literal[6]
    members: list[str]
    chunk_kib: int
    filesystem: Literal["xfs"]
    mountpoint: str


class Mount(Frozen):
    device: str
    path: str
    fstype: str
    options: str


class Limit(Frozen):
    """One line of limits.conf(5): `-` sets the soft and the hard limit."""

    domain: str
    type: Literal["soft", "hard", "-"]
    item: Literal["memlock", "nofile"]
    value: str


class Roce(Frozen):
    netdev: str
    netdev_mtu: int
    dscp: int  # trusted for classification: packets carrying it go to `priority`
    priority: int  # the only priority with PFC on


class RdmaPort(Frozen):
    device: str
    port: int
    link_layer: Literal["InfiniBand", "Ethernet"]  # as ibstat and ibv_devinfo name it
    mtu: int  # the active RDMA MTU
    gid_index: int
    roce: Roce | None


class NodePlan(Frozen):
    hostname: str
    roles: list[str]
    apt_sources: list[AptSource]
    packages: list[Package]
    kernel_cmdline: list[str]
    blacklist_modules: list[str]
    # Loaded now and at every boot (modules-load.d), before the sysctls that need them.
    kernel_modules: list[str]
    sysctl: dict[str, str]
    # kubelet will not start on a node with swap on.
    swap_off: bool
    limits: list[Limit]
    services: list[str]
    nccl_conf: str | None
    rdma: list[RdmaPort]
    raid: list[RaidArray]
    mounts: list[Mount]
    ceph_osd_devices: list[str]
    labels: dict[str, str]
    taints: list[Taint]
    # What the node must measure (GPU nodes): expected figures and the gate's thresholds.
    perf: PerfPlan | None
    # The venv the perf probe runs in, where the site names no interpreter of its own.
    perf_env: PerfEnv | None

    @property
    def registration_taints(self) -> list[Taint]:
        """What the node registers with (kubeadm join): its taints, and unverified until admitted."""
        return [*self.taints, READINESS_TAINT]

    @property
    def digest(self) -> str:
        """Stable across runs and Python versions: a preview shows which nodes change."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def held_packages(self) -> list[str]:
        return [p.name for p in self.packages if p.hold]


def plan_node(inv: Inventory, node: Node) -> NodePlan:
    return NodePlan(
        hostname=node.hostname,
        roles=sorted(r.value for r in node.roles),
        apt_sources=apt_sources(inv),
        packages=packages(inv, node),
        kernel_cmdline=kernel_cmdline(node),
        blacklist_modules=["nouveau"] if node.gpu else [],
        kernel_modules=kernel_modules(inv, node),
        sysctl=sysctl(inv, node),
        swap_off=_kubelet(inv, node),
        limits=limits(node),
        services=services(inv, node),
        nccl_conf=nccl_conf(node),
        rdma=rdma(inv, node),
        raid=raid(node),
        mounts=mounts(node),
        ceph_osd_devices=list(node.disks.ceph_osd),
        labels=labels(inv, node),
        taints=[*node.taints, *([GPU_TAINT] if node.gpu else [])],
        perf=plan_perf(inv, node),
        perf_env=plan_perf_env(inv, node),
    )


def apt_sources(inv: Inventory) -> list[AptSource]:
    os_, src, bom = inv.site.os, inv.site.package_sources, inv.bom
    k8s_minor = ".".join(bom.kubernetes.split(".")[:2])
    if src.mirror:
        return [
            AptSource(
                name="gpufleet-mirror",
                uri=src.mirror,
                suite=src.mirror_suite or os_.codename,
                components=["main"],
            )
        ]
    repo = f"{os_.distro}{os_.release.replace('.', '')}"
    sources = [
        AptSource(
            name="kubernetes",
            uri=src.kubernetes or f"https://pkgs.k8s.io/core:/stable:/v{k8s_minor}/deb/",
            suite="/",
            components=[],
        )
    ]
    if bom.nvidia_driver is not None:
        sources.append(
            AptSource(
                name="nvidia-cuda",
                uri=src.nvidia_cuda
                or f"https://developer.download.nvidia.com/compute/cuda/repos/{repo}/x86_64/",
                suite="/",
                components=[],
            )
        )
    return sources


def packages(inv: Inventory, node: Node) -> list[Package]:
    bom = inv.bom
    pkgs = [Package(name="chrony"), Package(name="containerd", version=f"{bom.containerd}*", hold=True)]
    if _kubelet(inv, node):
        k8s = f"{bom.kubernetes}-*"
        pkgs += [Package(name=n, version=k8s, hold=True) for n in ("kubeadm", "kubelet", "kubectl")]
    if node.gpu is not None and bom.nvidia_driver and bom.cuda and bom.nccl:
        drv = bom.nvidia_driver
        flavour = "-open" if drv.open_kernel_module else ""
        driver_ver = f"{drv.version}-*"
        pkgs += [
            Package(name=f"nvidia-driver-{drv.branch}{flavour}", version=driver_ver, hold=True),
            Package(name=f"cuda-toolkit-{bom.cuda.replace('.', '-')}", version=f"{bom.cuda}.*", hold=True),
            Package(name="libnccl2", version=f"{bom.nccl.version}-*+cuda{bom.nccl.cuda}", hold=True),
            Package(name="libnccl-dev", version=f"{bom.nccl.version}-*+cuda{bom.nccl.cuda}", hold=True),
        ]
        if GPU_CATALOG[node.gpu.model].nvswitch:
            pkgs.append(Package(name=f"nvidia-fabricmanager-{drv.branch}", version=driver_ver, hold=True))
        if bom.nvidia_container_toolkit:
            pkgs.append(
                Package(
                    name="nvidia-container-toolkit", version=f"{bom.nvidia_container_toolkit}-*", hold=True
                )
            )
    if plan_perf_env(inv, node) is not None:
        pkgs.append(Package(name="python3-venv"))  # Debian's venv and ensurepip, for the perf probe
    if node.nics.rdma:
        pkgs += [Package(name=n) for n in ("rdma-core", "ibverbs-utils", "infiniband-diags", "perftest")]
    if node.disks.raid6 is not None:
        pkgs += [Package(name="mdadm"), Package(name="xfsprogs")]
    elif node.disks.nvme_scratch:
        pkgs.append(Package(name="xfsprogs"))
    if Role.STORAGE in node.roles:
        pkgs += [Package(name=n) for n in ("ceph-mon", "ceph-mgr", "ceph-mds", "ceph-osd")]
    if Role.STORAGE in node.roles or Role.WORKER in node.roles or Role.GPU in node.roles:
        pkgs.append(Package(name="ceph-common"))
    return sorted(pkgs, key=lambda p: p.name)


def kernel_cmdline(node: Node) -> list[str]:
    if node.gpu is None:
        return []
    pages = HUGEPAGES_2M_PER_GPU * node.gpu.count
    # Passthrough IOMMU keeps DMA fast for GPUDirect RDMA while leaving VFIO possible.
    return [
        "iommu=pt",
        "hugepagesz=2M",
        f"hugepages={pages}",
        "modprobe.blacklist=nouveau",
        "rd.driver.blacklist=nouveau",
    ]


def _kubelet(inv: Inventory, node: Node) -> bool:
    return not is_lab(inv) and bool({Role.CONTROL_PLANE, Role.WORKER, Role.GPU} & set(node.roles))


def kernel_modules(inv: Inventory, node: Node) -> list[str]:
    """Kubernetes networking needs br_netfilter (the net.bridge sysctls exist only with it) and
    containerd's snapshotter overlay; GPUDirect RDMA needs nvidia_peermem between the NVIDIA
    driver and the HCA. A lab host can load none (a container), and runs no kubelet."""
    names = []
    if _kubelet(inv, node):
        names += ["br_netfilter", "overlay"]
    if node.gpu is not None and node.nics.rdma and not is_lab(inv):
        names.append("nvidia_peermem")
    return sorted(names)


def sysctl(inv: Inventory, node: Node) -> dict[str, str]:
    values: dict[str, str] = {}
    if Role.CONTROL_PLANE in node.roles or Role.WORKER in node.roles or Role.GPU in node.roles:
        values |= {
            "net.ipv4.ip_forward": "1",
            "net.bridge.bridge-nf-call-iptables": "1",
            "net.bridge.bridge-nf-call-ip6tables": "1",
            "fs.inotify.max_user_instances": "8192",
        }
    if node.gpu is not None:
        values |= {"vm.max_map_count": "1048576", "kernel.numa_balancing": "0"}
    if node.nics.rdma:
        values |= {
            "net.core.rmem_max": "268435456",
            "net.core.wmem_max": "268435456",
            "net.ipv4.tcp_rmem": "4096 87380 134217728",
            "net.ipv4.tcp_wmem": "4096 65536 134217728",
        }
    if is_lab(inv):
        values = {k: v for k, v in values.items() if k.startswith("net.")}
    return dict(sorted(values.items()))


def limits(node: Node) -> list[Limit]:
    """Unlimited locked memory where verbs register memory (RDMA, GPUDirect); more open files
    where Kubernetes runs. pam_limits' `*` leaves out root, so root gets its own lines."""
    items: dict[Literal["memlock", "nofile"], str] = {}
    if node.gpu is not None or node.nics.rdma:
        items["memlock"] = "unlimited"
    if node.gpu is not None or {Role.CONTROL_PLANE, Role.WORKER} & set(node.roles):
        items["nofile"] = str(NOFILE)
    return [
        Limit(domain=domain, type="-", item=item, value=value)
        for domain in ("*", "root")
        for item, value in sorted(items.items())
    ]


def services(inv: Inventory, node: Node) -> list[str]:
    names = ["chrony", "containerd"]
    if _kubelet(inv, node):
        names.append("kubelet")
    if node.gpu is not None:
        names.append("nvidia-persistenced")
        if GPU_CATALOG[node.gpu.model].nvswitch:
            names.append("nvidia-fabricmanager")
    if node.disks.raid6 is not None:
        names.append("mdmonitor")
    return sorted(names)


def nccl_conf(node: Node) -> str | None:
    if node.gpu is None:
        return None
    lines = [f"NCCL_SOCKET_IFNAME={node.nics.management.device}"]
    rdma = node.nics.rdma
    if rdma:
        # One GID index for the host: NCCL takes a single value, so every HCA must agree.
        lines += [
            "NCCL_IB_DISABLE=0",
            f"NCCL_IB_HCA={','.join(n.device for n in rdma)}",
            f"NCCL_IB_GID_INDEX={rdma[0].gid_index}",
            "NCCL_NET_GDR_LEVEL=PHB",
        ]
        if any(n.link_layer is LinkLayer.ROCE for n in rdma):
            lines.append(f"NCCL_IB_TC={ROCE_TRAFFIC_CLASS}")
    else:
        lines.append("NCCL_IB_DISABLE=1")
    return "\n".join(lines) + "\n"


def rdma(inv: Inventory, node: Node) -> list[RdmaPort]:
    """Every RDMA NIC's port 1. RoCE ports also get their netdev's MTU (the storage network's),
    DSCP trust and PFC on the one priority NCCL's traffic class maps to."""
    storage = inv.site.networks.storage
    netdev_mtu = storage.mtu if storage is not None else ROCE_DEFAULT_NETDEV_MTU
    ports = []
    for nic in node.nics.rdma:
        roce = None
        if nic.link_layer is LinkLayer.ROCE:
            assert nic.netdev is not None  # checks require it of every RoCE NIC
            roce = Roce(netdev=nic.netdev, netdev_mtu=netdev_mtu, dscp=ROCE_DSCP, priority=ROCE_PRIORITY)
        ports.append(
            RdmaPort(
                device=nic.device,
                port=1,
                link_layer="Ethernet" if roce else "InfiniBand",
                mtu=nic.mtu,
                gid_index=nic.gid_index,
                roce=roce,
            )
        )
    return ports


def raid(node: Node) -> list[RaidArray]:
    r6 = node.disks.raid6
    if r6 is None:
        return []
    return [
        RaidArray(
            device="/dev/md0",
            level=6,
            members=list(r6.members),
            chunk_kib=r6.chunk_kib,
            filesystem="xfs",
            mountpoint=r6.mountpoint,
        )
    ]


def mounts(node: Node) -> list[Mount]:
    out = [
        Mount(device=a.device, path=a.mountpoint, fstype=a.filesystem, options="defaults,noatime,nofail")
        for a in raid(node)
    ]
    out += [
        Mount(device=dev, path=f"/scratch/nvme{i}", fstype="xfs", options="defaults,noatime,nofail,discard")
        for i, dev in enumerate(node.disks.nvme_scratch)
    ]
    return out


def labels(inv: Inventory, node: Node) -> dict[str, str]:
    out = {
        "gpufleet.io/site": inv.site.name,
        "gpufleet.io/environment": inv.site.environment,
        "gpufleet.io/capacity": "on-prem",
    }
    for role in node.roles:
        out[f"gpufleet.io/role-{role.value}"] = "true"
    if node.rack:
        out["topology.kubernetes.io/zone"] = node.rack
    if node.gpu is not None:
        spec = GPU_CATALOG[node.gpu.model]
        out |= {
            "gpufleet.io/gpu-model": node.gpu.model.value,
            "gpufleet.io/gpu-count": str(node.gpu.count),
            "gpufleet.io/gpu-memory-gib": str(spec.memory_gib),
            "gpufleet.io/rdma": "true" if node.nics.rdma else "false",
        }
    out |= node.labels
    return dict(sorted(out.items()))


def kubectl_label_args(plan: NodePlan) -> list[str]:
    """`kubectl label node` arguments, one `key=value` per label: each label a separate argv entry."""
    return [f"{k}={v}" for k, v in plan.labels.items()]


def kubectl_taint_arg(taint: Taint) -> str:
    """`kubectl taint node` syntax: `key=value:Effect`, or `key:Effect` for an empty value."""
    return f"{taint.key}={taint.value}:{taint.effect}" if taint.value else f"{taint.key}:{taint.effect}"


def kubeadm_registration(plan: NodePlan) -> dict[str, object]:
    """kubeadm v1beta4 NodeRegistrationOptions of the node (less name and criSocket, the role's):
    the taints it registers with, and its labels as the kubelet's --node-labels."""
    return {
        "taints": [t.model_dump(mode="json") for t in plan.registration_taints],
        "kubeletExtraArgs": [{"name": "node-labels", "value": ",".join(kubectl_label_args(plan))}],
    }

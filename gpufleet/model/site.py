"""The site document: `inventories/<site>/nodes.yaml`, the only hand-written facts about machines.

Every model forbids unknown keys so a typo is an error, not a silently ignored setting.
Checks that relate several fields live in `gpufleet.model.checks`, which reports the key
path of each problem.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Network
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpufleet.model.catalog import GPUModel, Interconnect
from gpufleet.model.ssh import SshHostKey
from gpufleet.model.types import (
    AbsolutePath,
    Address,
    Cidr,
    DebianSuite,
    DiskPath,
    DnsName,
    Endpoint,
    Hostname,
    IndexUrl,
    Interpreter,
    LabelKey,
    LabelValue,
    Mountpoint,
    TaintValue,
    Url,
    Version,
)

# Any string no field types more narrowly is still bounded.
MAX_STR = 255


class Strict(BaseModel):
    # No NaN or infinity: a cap of `.inf` dollars is no cap.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_STR)


class Role(StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    GPU = "gpu"
    STORAGE = "storage"


class LinkLayer(StrEnum):
    INFINIBAND = "infiniband"
    ROCE = "roce"


class FailureDomain(StrEnum):
    OSD = "osd"
    HOST = "host"
    RACK = "rack"


# --- site-level settings ----------------------------------------------------------------


class OperatingSystem(Strict):
    distro: Literal["ubuntu", "debian"]
    release: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?$", description="VERSION_ID, e.g. 24.04 or 12")
    codename: str = Field(pattern=r"^[a-z]+$", description="VERSION_CODENAME, e.g. noble or bookworm")


class Network(Strict):
    cidr: Cidr
    mtu: int = Field(1500, ge=576, le=9216)
    gateway: Address | None = None


class Networks(Strict):
    management: Network
    storage: Network | None = Field(None, description="RDMA / Ceph cluster network")
    bmc: Network | None = None
    dns: list[Address] = Field(default_factory=list, max_length=16)
    ntp: list[DnsName] = Field(default_factory=list, max_length=16)


class PackageSources(Strict):
    """Vendor repositories by default; one air-gapped mirror replaces them all."""

    nvidia_cuda: Url | None = Field(None, description="NVIDIA CUDA apt repository; default: NVIDIA's")
    kubernetes: Url | None = Field(None, description="Kubernetes apt repository; default: pkgs.k8s.io")
    mirror: Url | None = Field(None, description="Air-gapped mirror serving every package; replaces all")
    mirror_suite: DebianSuite | None = Field(
        None, description="Suite of the mirror; default: the OS codename"
    )
    python_index: IndexUrl | None = Field(
        None, description="Python package index (PyPI mirror) with the BOM's perf_torch build; no default"
    )


class Kubernetes(Strict):
    pod_cidr: Cidr = IPv4Network("10.244.0.0/16")
    service_cidr: Cidr = IPv4Network("10.96.0.0/12")
    control_plane_endpoint: Endpoint


class CephPool(Strict):
    name: Hostname
    size: int = Field(3, ge=2, le=10, description="copies; 1 would lose data with any one disk")
    min_size: int = Field(2, ge=1, le=10)
    failure_domain: FailureDomain = FailureDomain.HOST
    pg_num: int | None = Field(None, ge=1, description="default: from the OSD count")
    application: Literal["rbd", "cephfs", "rgw"] = "rbd"

    @model_validator(mode="after")
    def _min_size_within_size(self) -> CephPool:
        if self.min_size > self.size:
            raise ValueError(f"min_size {self.min_size} is larger than size {self.size}")
        return self


class Ceph(Strict):
    pools: list[CephPool] = Field(min_length=1)


class Slo(Strict):
    queue_wait_p99_s: float = Field(2.0, gt=0)
    ttft_p99_s: float = Field(5.0, gt=0)


class Serving(Strict):
    model: str = Field(pattern=r"^[a-z0-9.-]+$", description="key in the serving model catalog")
    replicas: int = Field(ge=0)
    slo: Slo = Slo()
    max_model_len: int = Field(
        32768, ge=1024, description="longest prompt plus output of one request, tokens"
    )
    tensor_parallel: int | None = Field(
        None, ge=1, description="GPUs per replica; default: the fewest (a power of two) that hold the model"
    )
    canary_from: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{7,40}$",
        description="while set, one replica serves bom.model_revision and the others stay on this revision",
    )
    engine_args: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="vLLM engine arguments over the plan's, checked against the engine's own",
    )


# Burst nodes join the site's own Kubernetes cluster, which Kubernetes supports up to this many
# nodes ("Considerations for large clusters", kubernetes.io/docs/setup/best-practices/cluster-large):
# a burst bound past it names capacity the cluster could never admit.
MAX_CLUSTER_NODES = 5000


class BootBudget(Strict):
    """A burst node's boot-to-serve, part by part (docs/burst-boot.md). The plan adds the weights'
    copy and load from the burst model's size; the other parts are the site's estimates."""

    launch_s: int = Field(
        90, ge=0, le=3600, description="Spot request to user data: fulfilment, EC2 and OS boot"
    )
    image_s: int = Field(
        15,
        ge=0,
        le=3600,
        description="node packages and the serving image ready: baked into the AMI, no pull",
    )
    join_s: int = Field(60, ge=0, le=3600, description="kubeadm join to node Ready with its GPUs advertised")
    engine_s: int = Field(
        60, ge=0, le=3600, description="engine start after the weights are resident: CUDA graphs, warm-up"
    )
    weights_copy_gib_s: float = Field(
        1.0, gt=0, le=100, description="rate of the node's copy of the burst model from S3 onto local NVMe"
    )
    weight_load_gib_s: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="local NVMe into GPU memory; default: the measured cold safetensors rate "
        "(bench/results/serving_weight_load_h200.json)",
    )


class Burst(Strict):
    region: str = Field(pattern=r"^[a-z]{2}-[a-z]+-[0-9]$")
    instance_types: list[Annotated[str, Field(pattern=r"^[a-z0-9-]+\.[a-z0-9]+$")]] | None = Field(
        None, description="default: derived from the model's GPU needs"
    )
    max_nodes: int = Field(
        ge=0,
        le=MAX_CLUSTER_NODES,
        description="burst nodes at most; with the site's own, within Kubernetes' 5,000",
    )
    max_hourly_usd: float = Field(ge=0, le=1_000_000)
    boot: BootBudget = BootBudget()
    vpn_gateway: Address | None = Field(
        None, description="public address of the on-prem VPN endpoint the burst VPC connects to"
    )
    vpn_asn: int = Field(65000, ge=1, le=4294967295, description="BGP ASN of the on-prem VPN endpoint")


Share = Annotated[float, Field(gt=0, le=1)]


class Performance(Strict):
    """What the admission gate's perf part demands: a share of the figures the plan expects."""

    threshold: Share = Field(0.8, description="share of every expected figure a node must reach")
    allreduce: Share | None = Field(None, description="NCCL all-reduce bus bandwidth; default: threshold")
    memory_copy: Share | None = Field(None, description="GPU memory copy bandwidth; default: threshold")
    host_device: Share | None = Field(None, description="host<->device copy bandwidth; default: threshold")
    matmul: Share | None = Field(None, description="16-bit matmul throughput; default: threshold")
    python: Interpreter | None = Field(
        None,
        description="the interpreter on GPU nodes that imports torch (python3 or a normalised absolute "
        "path to python, python3 or python3.N); default: the perf probe environment the node deploy builds",
    )


class Site(Strict):
    name: Hostname
    environment: Literal["lab", "dev", "staging", "prod", "dr"]
    os: OperatingSystem
    networks: Networks
    package_sources: PackageSources = PackageSources()
    kubernetes: Kubernetes
    ceph: Ceph | None = None
    serving: Serving | None = None
    burst: Burst | None = None
    performance: Performance = Performance()


# --- software bill of materials ---------------------------------------------------------


class NvidiaDriver(Strict):
    branch: int = Field(ge=400, le=999)
    version: Version
    open_kernel_module: bool = True

    @model_validator(mode="after")
    def _version_on_branch(self) -> NvidiaDriver:
        if not self.version.startswith(f"{self.branch}."):
            raise ValueError(f"version {self.version} is not on branch {self.branch}")
        return self


class Nccl(Strict):
    version: Version
    cuda: str = Field(pattern=r"^[0-9]+\.[0-9]+$", description="CUDA version this NCCL build targets")


class Torch(Strict):
    version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$", description="release, e.g. 2.9.1")
    cuda: str = Field(pattern=r"^[0-9]+\.[0-9]+$", description="CUDA build (the +cuXY wheel), e.g. 13.0")


IMAGE = r"^[a-z0-9./-]+:[A-Za-z0-9._-]+(@sha256:[0-9a-f]{64})?$"


class Bom(Strict):
    kernel: Version | None = None
    nvidia_driver: NvidiaDriver | None = None
    cuda: str | None = Field(None, pattern=r"^[0-9]+\.[0-9]+$")
    nccl: Nccl | None = None
    perf_torch: Torch | None = Field(None, description="torch of the perf probe's environment on GPU nodes")
    doca_ofed: Version | None = None
    nvidia_container_toolkit: Version | None = None
    containerd: Version
    kubernetes: str = Field(pattern=r"^1\.[0-9]+\.[0-9]+$")
    ceph: Literal["pacific", "quincy", "reef", "squid"] = "reef"
    # A tag, and the digest the registry reports for it once read there: the digest is never
    # invented, and the policy pack fails a production stack whose images lack one.
    triton_image: str | None = Field(
        None, pattern=IMAGE, description="repository:tag, plus @sha256:<digest> as the registry reports it"
    )
    vllm: Version | None = Field(
        None, description="the vLLM release triton_image carries; the engine check reads its wheel"
    )
    gateway_image: str | None = Field(
        None, pattern=IMAGE, description="the admission gateway's HAProxy image, as triton_image"
    )
    controller_image: str | None = Field(
        None,
        pattern=IMAGE,
        description="the burst controller's image (this repository, its virtualenv and the Pulumi CLI), "
        "as triton_image; unset: the controller is not deployed in the cluster",
    )
    model_revision: str | None = Field(None, pattern=r"^[0-9a-f]{7,40}$")
    burst_ami: str | None = Field(
        None,
        pattern=r"^/aws/service/[A-Za-z0-9._/-]+:[0-9]+$",
        description="AWS public SSM parameter of the burst nodes' GPU AMI, pinned to a version (name:version)",
    )
    burst_model_revision: str | None = Field(
        None, pattern=r"^[0-9a-f]{7,40}$", description="revision of the smaller model burst nodes serve"
    )


# --- nodes ------------------------------------------------------------------------------


class Gpu(Strict):
    model: GPUModel
    count: int = Field(ge=1, le=16)
    interconnect: Interconnect | None = Field(
        None, description="how the GPUs reach each other; default: the GPU model's usual board"
    )


class ManagementNic(Strict):
    device: str = Field(pattern=r"^[a-z][a-z0-9._-]{0,14}$")
    mtu: int | None = Field(None, ge=576, le=9216, description="default: the management network's MTU")


IB_MTUS = (256, 512, 1024, 2048, 4096)
# What RoCE v2 adds to an RDMA payload (the kernel's iboe_get_mtu): a netdev MTU below the RDMA
# MTU plus this makes the port fall back to the next smaller RDMA MTU.
ROCE_HEADER_BYTES = 88


class RdmaNic(Strict):
    device: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="RDMA device, e.g. mlx5_0")
    netdev: str | None = Field(None, pattern=r"^[a-z][a-z0-9._-]{0,14}$")
    link_layer: LinkLayer
    mtu: int = 4096
    gid_index: int = Field(0, ge=0, le=255)
    ip: Address | None = None
    rate_gbps: Literal[25, 50, 100, 200, 400, 800] = Field(
        400, description="the link's planned rate (NDR and 400GbE: 400); the inter-node check expects it"
    )

    @field_validator("mtu")
    @classmethod
    def _ib_mtu(cls, mtu: int) -> int:
        if mtu not in IB_MTUS:
            raise ValueError(f"RDMA path MTU must be one of {', '.join(map(str, IB_MTUS))}")
        return mtu


class Nics(Strict):
    management: ManagementNic
    rdma: list[RdmaNic] = Field(default_factory=list)


class Raid6(Strict):
    members: list[DiskPath] = Field(max_length=64)
    mountpoint: Mountpoint = "/srv/data"
    chunk_kib: int = Field(512, ge=4, le=4096)


class Disks(Strict):
    raid6: Raid6 | None = None
    # A disk under /dev; on a lab site, a file under LAB_OSD_DIR instead (checks.py holds both).
    ceph_osd: list[AbsolutePath] = Field(default_factory=list, max_length=64)
    nvme_scratch: list[DiskPath] = Field(default_factory=list, max_length=64)


class Taint(Strict):
    key: LabelKey
    value: TaintValue = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Node(Strict):
    hostname: Hostname
    management_ip: Address
    # What SSH must find on the first connection; without it that connection fails (not on a lab site).
    ssh_host_key: SshHostKey | None = None
    bmc: Address | None = None
    rack: Hostname | None = Field(None, description="becomes the topology.kubernetes.io/zone label")
    roles: list[Role] = Field(min_length=1)
    gpu: Gpu | None = None
    nics: Nics
    disks: Disks = Disks()
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    taints: list[Taint] = Field(default_factory=list, max_length=32)

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles are listed twice")
        return roles


class Inventory(Strict):
    """One site: its settings, its software bill of materials and its nodes."""

    site: Site
    bom: Bom
    nodes: list[Node] = Field(min_length=1)

    def node(self, hostname: str) -> Node:
        for node in self.nodes:
            if node.hostname == hostname:
                return node
        raise KeyError(hostname)

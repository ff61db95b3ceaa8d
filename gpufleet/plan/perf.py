"""What a GPU node must measure: expected figures from the GPU catalog and the node's topology,
and the thresholds the admission gate holds them to. Pure.

Each expected figure is a datasheet rate times the share of it that a healthy node reaches, that
share calibrated on a real machine and against published measurements (docs/host-verification.md
cites them):

- NCCL all-reduce bus bandwidth (ring, NVLink multicast off): the per-direction bandwidth of the
  path between GPUs (NVLink links x 25 GB/s; PCIe x16 of the GPU's generation) times the ring's
  efficiency at large messages, falling at smaller ones as time = latency + bytes / bandwidth.
  On the two-GPU H200 machine (18 NVLink 4 links, 450 GB/s each way) a torch all-reduce reached
  270, 332 and 350 GB/s at 64 MiB, 1 GiB and 4 GiB: 0.78 of the links at the top, half of that
  at about 19 MiB. Published 8x A100 figures (230-250 GB/s on 300) agree.
- GPU memory copy: a device-to-device copy (each byte read and written) reaches 0.88 of the
  datasheet bandwidth (H200: 4.23 of 4.8 TB/s; H100: 2.99 of 3.35, 0.89, the copy baseline in
  bench/results/decode_roofline_h100.md).
- host<->device: a pinned copy reaches 0.87 of the x16 link (H200, Gen5: 55.4 of 63 GB/s each way).
- matmul: dense bf16 8192^3 on random data for 3 s reaches 0.67-0.68 of the datasheet with the
  board at its 700 W power limit (H200: 662-670 of 989 TFLOP/s, SM clock 1425-1500 of 1980 MHz).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from gpufleet.model.catalog import (
    GPU_CATALOG,
    NVLINK_LINK_GB_S,
    PCIE_X16_GB_S,
    Architecture,
    Interconnect,
    default_interconnect,
    topology_problem,
)
from gpufleet.model.site import Inventory, Node


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MIB = 1 << 20
# Message sizes the gate all-reduces: a tensor-parallel layer's activations up to a gradient bucket.
ALLREDUCE_SIZES = (64 * MIB, 1024 * MIB, 4096 * MIB)
RING_EFFICIENCY = {Interconnect.NVSWITCH: 0.78, Interconnect.NVLINK: 0.78, Interconnect.PCIE: 0.7}
# Message size at which the ring reaches half its large-message bandwidth (latency x bandwidth).
RING_HALF_BYTES = {Interconnect.NVSWITCH: 19 * MIB, Interconnect.NVLINK: 19 * MIB, Interconnect.PCIE: 4 * MIB}
COPY_EFFICIENCY = 0.88
HOST_DEVICE_EFFICIENCY = 0.87
MATMUL_EFFICIENCY = 0.68
# Under load an SM clock below this share of its maximum means a capped or throttled GPU. A board
# at its power limit runs lower than its maximum: that is what SW power capping reports, and fine
# (the H200s here: down to 1320-1500 of 1980 MHz at 700 W, 0.67-0.76).
MIN_LOAD_CLOCK_SHARE = 0.5
# Clock-event reasons (nvidia-smi clocks_event_reasons.active bits) that fail a node under load:
# hardware slowdown, software thermal slowdown, hardware thermal slowdown, hardware power brake.
FAILING_CLOCK_EVENTS = {0x8: "HW slowdown", 0x20: "SW thermal slowdown", 0x40: "HW thermal slowdown",
                        0x80: "HW power brake"}  # fmt: skip
# ib_write_bw between two nodes, large messages, several QPs: NDR 394.4 of 400 Gb/s and 100 GbE
# RoCE 98.0 of 100 (tests/fixtures/rdma) are 0.98; 0.95 leaves room for the fabric's own overhead.
RDMA_WRITE_EFFICIENCY = 0.95
RDMA_BASE_PORT = 18515  # perftest's default port
# The probe's own bound: the perf part stays well under a minute per node.
PROBE_DEADLINE_S = 45
# The probe's interpreter, where the site names none: a venv the node deploy builds with the BOM's
# torch from the site's Python index (no system package ships a CUDA torch).
PERF_ENV = "/opt/gpufleet/perf"


class Figure(Frozen):
    expected: float
    share: float  # the site's: below expected x share the check fails
    minimum: float


class AllReduceFigure(Figure):
    bytes: int


class RdmaLink(Figure):
    """One HCA of this node against the same-numbered HCA of the peer (Gb/s)."""

    device: str
    peer_device: str
    gid_index: int
    peer_gid_index: int
    port: int  # ib_write_bw's TCP port for the handshake: one per link, so links never collide


class RdmaPeer(Frozen):
    host: str
    address: str  # the peer's management address: ib_write_bw's handshake
    links: list[RdmaLink]


class PerfEnv(Frozen):
    """The perf probe's environment: a venv with the BOM's torch build, from the site's index."""

    path: str
    python: str
    index_url: str
    torch: str  # the version pip reports, local part included: 2.9.1+cu130

    @property
    def requirement(self) -> str:
        return f"torch=={self.torch}"


class PerfPlan(Frozen):
    gpus: int
    interconnect: str  # e.g. "nvswitch: 18x NVLink 4 (450 GB/s each way)"
    nvlink_links: int  # NV# expected between every pair of GPUs in `nvidia-smi topo -m`; 0 for PCIe
    allreduce_gb_s: list[AllReduceFigure]  # bus bandwidth; none for a single GPU
    memory_copy_tb_s: Figure
    host_device_gb_s: Figure
    matmul_tflops: Figure
    matmul_dtype: str
    min_load_clock_share: float
    failing_clock_events: dict[int, str]
    python: str | None  # None: nothing on the node imports torch, and `python_missing` says why
    python_missing: str | None
    deadline_s: int
    # Inter-node: RDMA writes to the next GPU node with RDMA (in hostname order, a ring, so every
    # node is measured once each way); none where the node has no RDMA or no such peer.
    rdma_peer: RdmaPeer | None


def ring_busbw_gb_s(link_gb_s: float, interconnect: Interconnect, size: int) -> float:
    peak = link_gb_s * RING_EFFICIENCY[interconnect]
    return peak * size / (size + RING_HALF_BYTES[interconnect])


def peer_link_gb_s(node: Node) -> tuple[Interconnect, float, str]:
    """The interconnect, its per-direction GB/s per GPU, and how the plan names it."""
    assert node.gpu is not None
    spec = GPU_CATALOG[node.gpu.model]
    interconnect = node.gpu.interconnect or default_interconnect(node.gpu.model)
    problem = topology_problem(node.gpu.model, node.gpu.count, interconnect)
    if problem:
        raise ValueError(problem)
    if interconnect is Interconnect.PCIE:
        gb_s = PCIE_X16_GB_S[spec.pcie_gen]
        return interconnect, gb_s, f"pcie: Gen{spec.pcie_gen} x16 ({gb_s:g} GB/s each way)"
    gb_s = spec.nvlink_links * NVLINK_LINK_GB_S[spec.nvlink_gen]
    name = f"{interconnect.value}: {spec.nvlink_links}x NVLink {spec.nvlink_gen} ({gb_s:g} GB/s each way)"
    return interconnect, gb_s, name


def plan_perf_env(inv: Inventory, node: Node) -> PerfEnv | None:
    """A venv for GPU nodes whose site names no interpreter of its own, where the site has the wheels."""
    index, torch = inv.site.package_sources.python_index, inv.bom.perf_torch
    if node.gpu is None or inv.site.performance.python is not None or index is None or torch is None:
        return None
    build = f"{torch.version}+cu{torch.cuda.replace('.', '')}"
    return PerfEnv(path=PERF_ENV, python=f"{PERF_ENV}/bin/python", index_url=index, torch=build)


def probe_python(inv: Inventory, env: PerfEnv | None) -> tuple[str | None, str | None]:
    """The probe's interpreter, or why there is none: the site's own, else the planned venv."""
    if inv.site.performance.python is not None:
        return inv.site.performance.python, None
    if env is not None:
        return env.python, None
    unset = [
        key
        for key, value in (
            ("site.package_sources.python_index", inv.site.package_sources.python_index),
            ("bom.perf_torch", inv.bom.perf_torch),
        )
        if value is None
    ]
    return None, (
        f"no interpreter with torch for the probe: {' and '.join(unset)} unset, so the node deploy "
        f"builds no {PERF_ENV} (or name one in site.performance.python)"
    )


def plan_perf(inv: Inventory, node: Node) -> PerfPlan | None:
    if node.gpu is None:
        return None
    spec = GPU_CATALOG[node.gpu.model]
    perf = inv.site.performance
    python, python_missing = probe_python(inv, plan_perf_env(inv, node))

    def figure(expected: float, share: float | None) -> Figure:
        share = share or perf.threshold
        return Figure(expected=round(expected, 3), share=share, minimum=round(expected * share, 3))

    interconnect, link_gb_s, name = peer_link_gb_s(node)
    allreduce = []
    if node.gpu.count > 1:
        for size in ALLREDUCE_SIZES:
            f = figure(ring_busbw_gb_s(link_gb_s, interconnect, size), perf.allreduce)
            allreduce.append(AllReduceFigure(bytes=size, **f.model_dump()))
    return PerfPlan(
        gpus=node.gpu.count,
        interconnect=name,
        nvlink_links=0 if interconnect is Interconnect.PCIE else spec.nvlink_links,
        allreduce_gb_s=allreduce,
        memory_copy_tb_s=figure(spec.hbm_tb_s * COPY_EFFICIENCY, perf.memory_copy),
        host_device_gb_s=figure(PCIE_X16_GB_S[spec.pcie_gen] * HOST_DEVICE_EFFICIENCY, perf.host_device),
        matmul_tflops=figure(spec.tensor_tflops * MATMUL_EFFICIENCY, perf.matmul),
        matmul_dtype="float16" if spec.architecture is Architecture.TURING else "bfloat16",
        min_load_clock_share=MIN_LOAD_CLOCK_SHARE,
        failing_clock_events=FAILING_CLOCK_EVENTS,
        python=python,
        python_missing=python_missing,
        deadline_s=PROBE_DEADLINE_S,
        rdma_peer=rdma_peer(inv, node, perf.threshold),
    )


def rdma_peer(inv: Inventory, node: Node, share: float) -> RdmaPeer | None:
    ring = sorted((n for n in inv.nodes if n.gpu is not None and n.nics.rdma), key=lambda n: n.hostname)
    if node not in ring or len(ring) < 2:
        return None
    peer = ring[(ring.index(node) + 1) % len(ring)]
    links = []
    for i, (nic, peer_nic) in enumerate(zip(node.nics.rdma, peer.nics.rdma, strict=False)):
        expected = min(nic.rate_gbps, peer_nic.rate_gbps) * RDMA_WRITE_EFFICIENCY
        links.append(
            RdmaLink(
                device=nic.device,
                peer_device=peer_nic.device,
                gid_index=nic.gid_index,
                peer_gid_index=peer_nic.gid_index,
                port=RDMA_BASE_PORT + i,
                expected=round(expected, 3),
                share=share,
                minimum=round(expected * share, 3),
            )
        )
    return RdmaPeer(host=peer.hostname, address=str(peer.management_ip), links=links)

"""Static catalogs: GPUs, their driver support, CUDA/driver compatibility, AWS GPU instances.

These are facts about hardware and vendors, not about a site; the site model refers to
them by key and the checks and the plan read them from here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Architecture(StrEnum):
    TURING = "turing"
    AMPERE = "ampere"
    ADA = "ada"
    HOPPER = "hopper"


class GPUModel(StrEnum):
    A100_40GB = "A100-SXM4-40GB"
    A100_80GB = "A100-SXM4-80GB"
    H100_PCIE = "H100-PCIe-80GB"
    H100_SXM = "H100-SXM-80GB"
    H200 = "H200-SXM-141GB"
    L40S = "L40S-48GB"
    L4 = "L4-24GB"
    T4 = "T4-16GB"
    A10G = "A10G-24GB"


@dataclass(frozen=True)
class GPUSpec:
    memory_gib: int
    architecture: Architecture
    compute_capability: str
    nvlink: bool
    # HGX baseboards with eight SXM GPUs route NVLink through NVSwitch, which needs
    # the fabric manager running on the host.
    nvswitch: bool
    # The name `nvidia-smi --query-gpu=name` prints, so host checks compare like with like.
    smi_name: str
    # Oldest driver branch that supports the part.
    min_driver_branch: int
    # Board power (TDP): host checks flag a power limit set far below it.
    tdp_w: int
    # Memory bandwidth (datasheet, TB/s): what bounds decode, and so a serving replica's throughput.
    hbm_tb_s: float
    # NVLink generation and links per GPU (0: none); each link carries NVLINK_LINK_GB_S each way.
    nvlink_gen: int
    nvlink_links: int
    # The host link: PCIe generation, x16.
    pcie_gen: int
    # Dense 16-bit tensor throughput (datasheet TFLOP/s, no sparsity): bf16, fp16 on Turing.
    tensor_tflops: float


class Interconnect(StrEnum):
    """How a node's GPUs reach each other, as NCCL sees it."""

    NVSWITCH = "nvswitch"  # every GPU reaches every other at its full NVLink width (HGX baseboards)
    NVLINK = "nvlink"  # two GPUs joined directly by all their links (a bridged pair)
    PCIE = "pcie"  # no NVLink: peer traffic crosses PCIe


# Per link and direction (GB/s): NVLink 3 (A100: 12 links, 600 GB/s both ways) and NVLink 4
# (H100/H200: 18 links, 900 GB/s both ways) both run 25 GB/s each way.
NVLINK_LINK_GB_S: dict[int, float] = {3: 25.0, 4: 25.0}
# x16, per direction, after line coding (GB/s): 8, 16, 32 GT/s x 16 lanes x 128/130.
PCIE_X16_GB_S: dict[int, float] = {3: 15.75, 4: 31.5, 5: 63.0}


GPU_CATALOG: dict[GPUModel, GPUSpec] = {
    GPUModel.A100_40GB: GPUSpec(
        40, Architecture.AMPERE, "8.0", True, True, "NVIDIA A100-SXM4-40GB", 450, 400, 1.555, 3, 12, 4, 312
    ),
    GPUModel.A100_80GB: GPUSpec(
        80, Architecture.AMPERE, "8.0", True, True, "NVIDIA A100-SXM4-80GB", 450, 400, 2.039, 3, 12, 4, 312
    ),
    GPUModel.H100_PCIE: GPUSpec(
        80, Architecture.HOPPER, "9.0", False, False, "NVIDIA H100 PCIe", 525, 350, 2.0, 0, 0, 5, 756
    ),
    GPUModel.H100_SXM: GPUSpec(
        80, Architecture.HOPPER, "9.0", True, True, "NVIDIA H100 80GB HBM3", 525, 700, 3.35, 4, 18, 5, 989
    ),
    GPUModel.H200: GPUSpec(
        141, Architecture.HOPPER, "9.0", True, True, "NVIDIA H200", 550, 700, 4.8, 4, 18, 5, 989
    ),
    GPUModel.L40S: GPUSpec(
        48, Architecture.ADA, "8.9", False, False, "NVIDIA L40S", 525, 350, 0.864, 0, 0, 4, 362
    ),
    GPUModel.L4: GPUSpec(24, Architecture.ADA, "8.9", False, False, "NVIDIA L4", 525, 72, 0.3, 0, 0, 4, 121),
    GPUModel.T4: GPUSpec(
        16, Architecture.TURING, "7.5", False, False, "Tesla T4", 418, 70, 0.32, 0, 0, 3, 65
    ),
    GPUModel.A10G: GPUSpec(
        24, Architecture.AMPERE, "8.6", False, False, "NVIDIA A10G", 460, 300, 0.6, 0, 0, 4, 70
    ),
}


def default_interconnect(model: GPUModel) -> Interconnect:
    spec = GPU_CATALOG[model]
    if spec.nvswitch:
        return Interconnect.NVSWITCH
    return Interconnect.NVLINK if spec.nvlink_links else Interconnect.PCIE


def topology_problem(model: GPUModel, count: int, interconnect: Interconnect) -> str | None:
    """Why the catalog cannot say how `count` GPUs of `model` joined by `interconnect` perform."""
    spec = GPU_CATALOG[model]
    if interconnect is Interconnect.NVSWITCH and not spec.nvswitch:
        return f"{model.value} is not built on NVSwitch baseboards"
    if interconnect is Interconnect.NVLINK:
        if not spec.nvlink_links:
            return f"{model.value} has no NVLink"
        if count != 2:
            return f"direct NVLink joins a pair of GPUs; {count} GPUs of {model.value} need nvswitch or pcie"
    return None


# Minimum driver branch for each CUDA major version (NVIDIA's CUDA compatibility table).
CUDA_MIN_DRIVER: dict[int, int] = {11: 450, 12: 525, 13: 580}
# The newest minor release of each CUDA major that NVIDIA has published (its CUDA Toolkit archive);
# a BOM naming a later one names a toolkit no repository holds. Add a minor when NVIDIA ships it.
CUDA_LATEST_MINOR: dict[int, int] = {11: 8, 12: 9, 13: 1}


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: GPUModel
    gpus: int
    vcpus: int
    memory_gib: int
    # On-demand price in us-east-1, the ceiling a Spot price is compared against.
    on_demand_usd_hour: float


def _instances(*rows: tuple[str, GPUModel, int, int, int, float]) -> dict[str, InstanceType]:
    return {row[0]: InstanceType(*row) for row in rows}


AWS_GPU_INSTANCES: dict[str, InstanceType] = _instances(
    ("p5en.48xlarge", GPUModel.H200, 8, 192, 2048, 84.80),
    ("p5e.48xlarge", GPUModel.H200, 8, 192, 2048, 79.65),
    ("p5.48xlarge", GPUModel.H100_SXM, 8, 192, 2048, 55.04),
    ("p4de.24xlarge", GPUModel.A100_80GB, 8, 96, 1152, 40.97),
    ("p4d.24xlarge", GPUModel.A100_40GB, 8, 96, 1152, 32.77),
    ("g6e.xlarge", GPUModel.L40S, 1, 4, 32, 1.861),
    ("g6e.2xlarge", GPUModel.L40S, 1, 8, 64, 2.242),
    ("g6e.12xlarge", GPUModel.L40S, 4, 48, 384, 10.49),
    ("g6e.24xlarge", GPUModel.L40S, 4, 96, 768, 15.07),
    ("g6e.48xlarge", GPUModel.L40S, 8, 192, 1536, 30.13),
    ("g6.xlarge", GPUModel.L4, 1, 4, 16, 0.805),
    ("g6.2xlarge", GPUModel.L4, 1, 8, 32, 0.978),
    ("g6.12xlarge", GPUModel.L4, 4, 48, 192, 4.602),
    ("g6.48xlarge", GPUModel.L4, 8, 192, 768, 13.35),
    ("g5.xlarge", GPUModel.A10G, 1, 4, 16, 1.006),
    ("g5.2xlarge", GPUModel.A10G, 1, 8, 32, 1.212),
    ("g5.12xlarge", GPUModel.A10G, 4, 48, 192, 5.672),
    ("g5.48xlarge", GPUModel.A10G, 8, 192, 768, 16.29),
    ("g4dn.xlarge", GPUModel.T4, 1, 4, 16, 0.526),
    ("g4dn.12xlarge", GPUModel.T4, 4, 48, 192, 3.912),
)


@dataclass(frozen=True)
class ServingModel:
    hf_repo: str
    params_b: float
    # Bytes per parameter of the served weights (FP8 = 1, BF16 = 2).
    bytes_per_param: float
    # Weights plus KV cache and activations: the memory a replica needs, as a factor of the weights.
    memory_factor: float = 1.3

    @property
    def weights_gib(self) -> float:
        """The served weights on disk: what a node copies and loads."""
        return self.params_b * self.bytes_per_param * 1e9 / 2**30

    @property
    def memory_gib(self) -> float:
        return self.weights_gib * self.memory_factor


SERVING_MODELS: dict[str, ServingModel] = {
    "deepseek-r1": ServingModel("deepseek-ai/DeepSeek-R1", 671, 1.0),
    "deepseek-v3": ServingModel("deepseek-ai/DeepSeek-V3", 671, 1.0),
    "deepseek-r1-distill-llama-70b": ServingModel("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 70.6, 2.0),
    "deepseek-r1-distill-qwen-32b": ServingModel("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 32.8, 2.0),
    "deepseek-r1-distill-qwen-14b": ServingModel("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 14.8, 2.0),
    "deepseek-r1-distill-qwen-7b": ServingModel("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 7.6, 2.0),
}

GPUS_PER_NODE_MAX = 8


@dataclass(frozen=True)
class ReplicaShape:
    """How one serving replica sits on GPUs of one model."""

    gpu: GPUModel
    tensor_parallel: int
    nodes: int

    @property
    def gpus_per_node(self) -> int:
        return self.tensor_parallel // self.nodes


def replica_shape(model: str, gpu: GPUModel) -> ReplicaShape:
    """Smallest power-of-two tensor-parallel group whose memory holds the model.

    Beyond eight GPUs a replica spans nodes of eight (671B FP8 on H100: 2 x 8).
    """
    need = SERVING_MODELS[model].memory_gib
    per_gpu = GPU_CATALOG[gpu].memory_gib
    tp = 1
    while tp * per_gpu < need:
        tp *= 2
    return ReplicaShape(gpu=gpu, tensor_parallel=tp, nodes=max(1, tp // GPUS_PER_NODE_MAX))


def decode_rate(model: str, gpu: GPUModel, tensor_parallel: int) -> float:
    """Decode steps per second of one replica at the memory roofline: each step reads all the
    weights once, spread over the replica's GPUs. Used as a ratio between replicas, never as an
    absolute rate: prefill, KV-cache reads and communication are left out alike.

    bench/results/decode_roofline_h100.md measured it on an H100: step time is weight bytes over
    a fixed bandwidth up to batch 128, and compute takes over from about 256. A MoE model counts
    all its weights: with 8 of 256 experts per token, a batch of 128 touches 98% of them (a batch
    of 32, 64%, where this understates the MoE replica's rate)."""
    spec = SERVING_MODELS[model]
    weight_bytes = spec.params_b * 1e9 * spec.bytes_per_param
    return tensor_parallel * GPU_CATALOG[gpu].hbm_tb_s * 1e12 / weight_bytes


def replica_capacity(model: str, gpu: GPUModel, gpu_counts: list[int]) -> int:
    """How many replicas of `model` fit on nodes holding `gpu_counts` GPUs of one model each."""
    shape = replica_shape(model, gpu)
    slots = sum(count // shape.gpus_per_node for count in gpu_counts)
    return slots // shape.nodes

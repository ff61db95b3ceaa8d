"""The inference engine behind Triton: vLLM's engine arguments for each served model. Pure.

Triton's vLLM backend loads `<model>/1/model.json` and passes it to `AsyncEngineArgs(**json)`;
these are those arguments, decided from the serving plan and the GPUs a replica sits on. Why
vLLM for DeepSeek-R1/V3 (FP8 block weights, MLA, expert parallelism, MTP, multi-node over Ray):
docs/serving.md.

`ENGINE_ARG_TYPES` is what a site may set in `site.serving.engine_args`; tests check it, and
every generated model.json, against the argument definitions in the vLLM wheel of the
BOM's `vllm` (the release the Triton image carries), so an argument vLLM does not know, or a value of the wrong type, fails CI
before it fails a pod.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gpufleet.model.catalog import GPU_CATALOG, GPUS_PER_NODE_MAX, SERVING_MODELS, GPUModel, replica_shape
from gpufleet.model.checks import dominant_gpu
from gpufleet.model.errors import Problem
from gpufleet.model.site import Inventory

# The Triton image flavour that carries the vLLM backend (`…:<yy.mm>-vllm-python-py3`).
VLLM_FLAVOUR = "-vllm-python-py3"
# The vLLM each Triton release's vLLM image carries (NVIDIA builds it; the upstream release before
# its `+` local version): Triton's release compatibility matrix, "Container Name: vllm-python-py3"
# (triton-inference-server/server docs/introduction/compatibility.md, read at 0f963c9a8c69).
# A release not listed must be read there and added: the BOM's `vllm` is checked against it.
TRITON_VLLM = {
    "26.08": "0.27.1", "26.07": "0.24.0", "26.06": "0.22.1", "26.05": "0.19.0", "26.04": "0.19.0",
    "26.03": "0.17.1", "26.02": "0.15.1", "26.01": "0.13.0", "25.12": "0.11.1", "25.11": "0.11.0",
    "25.10": "0.10.2", "25.09": "0.10.1.1", "25.08": "0.9.2", "25.07": "0.9.0rc1", "25.06": "0.9.0rc1",
    "25.05": "0.8.4", "25.04": "0.8.1", "25.03": "0.7.3", "25.02": "0.7.0", "25.01": "0.6.3.post1",
}  # fmt: skip
WEIGHTS_ROOT = "/weights"
# vLLM's share of each GPU; the rest holds NCCL buffers, CUDA graphs and the sampler.
GPU_MEMORY_UTILIZATION = 0.90
# Activations and CUDA graphs of a step, per GPU, out of vLLM's share.
ACTIVATION_RESERVE_GIB = 4.0
# Tokens per scheduler step: prefill is chunked to this, so a long prompt never stalls the
# decoding batch for more than one chunk (the TTFT of queued requests stays bounded).
MAX_NUM_BATCHED_TOKENS = 8192
# Decode batch ceiling: past 256 sequences a step is compute-bound on Hopper and the inter-token
# latency of every sequence grows with the batch (bench/results/decode_roofline_h100.md).
MAX_NUM_SEQS_CAP = 256
# Sequences are sized for a mean context of a quarter of the longest one allowed.
MEAN_CONTEXT_FRACTION = 0.25
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)
# DeepSeek-V3/R1 ship one multi-token-prediction layer: one draft token per step, accepted
# about 80-90% of the time in DeepSeek's report, which is what vLLM runs as method "mtp"
# (0.27.1 rewrites "deepseek_mtp" to "mtp" with a deprecation warning).
MTP_DRAFT_TOKENS = 1


@dataclass(frozen=True)
class KvLayout:
    """What one token costs in KV cache, and the longest context the model was trained for."""

    layers: int
    # MLA caches one compressed latent (kv_lora_rank + rope dim) per layer, the same on every
    # tensor-parallel rank; grouped-query attention caches K and V per KV head, split over ranks.
    mla_latent: int | None
    kv_heads: int
    head_dim: int
    max_context: int
    moe: bool
    mtp: bool

    def bytes_per_token_per_gpu(self, tensor_parallel: int, pipeline_parallel: int, kv_bytes: int) -> float:
        layers = self.layers / pipeline_parallel
        if self.mla_latent is not None:
            return layers * self.mla_latent * kv_bytes
        heads = max(1, self.kv_heads // tensor_parallel)
        return layers * 2 * heads * self.head_dim * kv_bytes


# From each model's config.json on Hugging Face at the catalogued repository.
_DEEPSEEK_V3 = KvLayout(61, 512 + 64, 128, 192, 163_840, moe=True, mtp=True)
KV_LAYOUTS: dict[str, KvLayout] = {
    "deepseek-r1": _DEEPSEEK_V3,
    "deepseek-v3": _DEEPSEEK_V3,
    "deepseek-r1-distill-llama-70b": KvLayout(80, None, 8, 128, 131_072, moe=False, mtp=False),
    "deepseek-r1-distill-qwen-32b": KvLayout(64, None, 8, 128, 131_072, moe=False, mtp=False),
    "deepseek-r1-distill-qwen-14b": KvLayout(48, None, 8, 128, 131_072, moe=False, mtp=False),
    "deepseek-r1-distill-qwen-7b": KvLayout(28, None, 4, 128, 131_072, moe=False, mtp=False),
}

# What `site.serving.engine_args` may set, with the Python type vLLM declares for it.
ENGINE_ARG_TYPES: dict[str, type] = {
    "max_num_seqs": int,
    "max_num_batched_tokens": int,
    "gpu_memory_utilization": float,
    "enable_chunked_prefill": bool,
    "enable_prefix_caching": bool,
    "enforce_eager": bool,
    "kv_cache_dtype": str,
    "block_size": int,
    "seed": int,
    "disable_log_stats": bool,
    "enable_expert_parallel": bool,
    "enable_eplb": bool,
}
# Integer arguments vLLM bounds with `Field(ge=1)` / `gt=0` (SchedulerConfig, CacheConfig).
ENGINE_ARG_MIN_ONE = ("max_num_seqs", "max_num_batched_tokens", "block_size")
# String arguments vLLM reads from a fixed set (`CacheDType` in vllm/config/cache.py): anything
# else fails every replica at load. tests/unit/test_engine_args.py checks them against the wheel.
ENGINE_ARG_CHOICES: dict[str, tuple[str, ...]] = {
    "kv_cache_dtype": ("auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"),
}


def weights_path(hf_repo: str, revision: str) -> str:
    """Where a revision's files sit in the model cache, as every replica mounts it."""
    return f"{WEIGHTS_ROOT}/{hf_repo}/{revision}"


def fp8_capable(gpu: GPUModel) -> bool:
    major, minor = (int(x) for x in GPU_CATALOG[gpu].compute_capability.split("."))
    return (major, minor) >= FP8_MIN_COMPUTE_CAPABILITY


def kv_budget_gib(
    model: str, gpu: GPUModel, tensor_parallel: int, utilization: float = GPU_MEMORY_UTILIZATION
) -> float:
    """KV-cache room per GPU once the weights and a step's activations are resident, in the
    share of the GPU vLLM takes (`gpu_memory_utilization`, the site's override where it sets one)."""
    spec = SERVING_MODELS[model]
    weights = spec.params_b * spec.bytes_per_param * 1e9 / 2**30 / tensor_parallel
    return GPU_CATALOG[gpu].memory_gib * utilization - weights - ACTIVATION_RESERVE_GIB


def kv_tokens(
    model: str,
    gpus: list[GPUModel],
    tensor_parallel: int,
    nodes: int,
    utilization: float = GPU_MEMORY_UTILIZATION,
) -> int:
    """Tokens of KV cache a replica holds, on the smallest of the GPUs it may land on."""
    layout = KV_LAYOUTS[model]
    kv_bytes = 1 if all(fp8_capable(g) for g in gpus) else 2
    per_gpu_tp = tensor_parallel // nodes
    per_token = layout.bytes_per_token_per_gpu(per_gpu_tp, nodes, kv_bytes)
    budget = min(kv_budget_gib(model, g, tensor_parallel, utilization) for g in gpus)
    return max(0, int(budget * 2**30 / per_token))


def max_num_seqs(
    model: str,
    gpus: list[GPUModel],
    tensor_parallel: int,
    nodes: int,
    max_model_len: int,
    utilization: float = GPU_MEMORY_UTILIZATION,
) -> int:
    mean_context = max(1, int(max_model_len * MEAN_CONTEXT_FRACTION))
    fits = kv_tokens(model, gpus, tensor_parallel, nodes, utilization) // mean_context
    return max(1, min(MAX_NUM_SEQS_CAP, fits))


def engine_args(
    *,
    model: str,
    hf_repo: str,
    revision: str,
    gpus: list[GPUModel],
    tensor_parallel: int,
    nodes: int,
    max_model_len: int,
    overrides: dict[str, bool | int | float | str],
) -> dict[str, Any]:
    """vLLM AsyncEngineArgs for one replica: tensor parallel inside a node, pipeline stages
    across nodes (NVLink carries the per-layer all-reduce, the network only stage hand-offs),
    experts spread over the tensor-parallel ranks, FP8 weights and KV cache where the GPUs have
    FP8, DeepSeek's own MTP head as the speculative draft."""
    layout = KV_LAYOUTS[model]
    spec = SERVING_MODELS[model]
    fp8 = all(fp8_capable(g) for g in gpus)
    path = weights_path(hf_repo, revision)
    utilization = float(overrides.get("gpu_memory_utilization", GPU_MEMORY_UTILIZATION))
    args: dict[str, Any] = {
        "model": path,
        "served_model_name": model,
        "tokenizer": path,
        "load_format": "safetensors",
        # The weights folder is the model cache's copy: nothing runs code from it.
        "trust_remote_code": False,
        "tensor_parallel_size": tensor_parallel // nodes,
        "pipeline_parallel_size": nodes,
        "distributed_executor_backend": "ray" if nodes > 1 else "mp",
        "enable_expert_parallel": layout.moe,
        "max_model_len": max_model_len,
        "max_num_seqs": max_num_seqs(model, gpus, tensor_parallel, nodes, max_model_len, utilization),
        "max_num_batched_tokens": MAX_NUM_BATCHED_TOKENS,
        "enable_chunked_prefill": True,
        "enable_prefix_caching": True,
        "gpu_memory_utilization": utilization,
        "kv_cache_dtype": "fp8" if fp8 else "auto",
    }
    if spec.bytes_per_param == 1:
        # DeepSeek's checkpoint is FP8 with 128x128 block scales; saying so refuses a BF16 copy.
        args["quantization"] = "fp8"
    if layout.mtp:
        args["speculative_config"] = {"method": "mtp", "num_speculative_tokens": MTP_DRAFT_TOKENS}
    return {**args, **overrides}


def check_serving(inv: Inventory) -> Iterator[Problem]:
    """A serving plan no engine can run: each problem names the key that makes it so."""
    serving = inv.site.serving
    if serving is None or serving.model not in SERVING_MODELS:
        return
    where = ("site", "serving")
    image = inv.bom.triton_image
    if image is not None and not image.split("@")[0].endswith(VLLM_FLAVOUR):
        yield Problem(
            ("bom", "triton_image"),
            f"{image} is not Triton's vLLM flavour and the engine is vLLM: name <release>{VLLM_FLAVOUR}",
        )
    elif image is not None and inv.bom.vllm is None:
        yield Problem(("bom", "vllm"), f"name the vLLM release {image} carries: the engine check reads it")
    elif image is not None:
        release = image.split("@")[0].rpartition(":")[2].removesuffix(VLLM_FLAVOUR)
        carried = TRITON_VLLM.get(release)
        if carried is None:
            yield Problem(
                ("bom", "triton_image"),
                f"no recorded vLLM for Triton {release}: read it from Triton's compatibility matrix "
                "(vllm-python-py3) into gpufleet.plan.engine.TRITON_VLLM",
            )
        elif inv.bom.vllm != carried:
            yield Problem(
                ("bom", "vllm"), f"Triton {release}'s vLLM image carries vLLM {carried}, not {inv.bom.vllm}"
            )
    if inv.site.burst is not None and inv.bom.gateway_image is None:
        yield Problem(
            ("bom", "gateway_image"), "the admission gateway in front of the burst fallback needs its image"
        )
    if inv.site.environment == "prod" and inv.bom.model_revision is None:
        yield Problem(("bom", "model_revision"), f"production serves {serving.model}: pin its revision")
    mistyped = set()
    for key, value in serving.engine_args.items():
        want = ENGINE_ARG_TYPES.get(key)
        mistyped.add(key)
        if want is None:
            yield Problem(
                (*where, "engine_args", key),
                f"not an engine argument a site may set; known: {', '.join(ENGINE_ARG_TYPES)}",
            )
        elif type(value) is not want and not (want is float and type(value) is int):
            yield Problem((*where, "engine_args", key), f"vLLM takes {want.__name__}, got {value!r}")
        elif key in ENGINE_ARG_CHOICES and value not in ENGINE_ARG_CHOICES[key]:
            yield Problem((*where, "engine_args", key), f"one of {', '.join(ENGINE_ARG_CHOICES[key])}")
        elif want is int and key in ENGINE_ARG_MIN_ONE and int(value) < 1:
            yield Problem((*where, "engine_args", key), f"vLLM takes 1 or more, got {value}")
        elif key == "gpu_memory_utilization" and not 0 < float(value) <= 1:
            yield Problem(
                (*where, "engine_args", key), f"vLLM takes a fraction of each GPU in (0, 1], got {value}"
            )
        else:
            mistyped.discard(key)
    # The engine arguments every replica starts with (the site's overrides over the plan's),
    # for vLLM's cross-argument rules (SchedulerConfig.verify_max_model_len, CacheConfig).
    args = {k: v for k, v in serving.engine_args.items() if k not in mistyped}
    utilization = float(args.get("gpu_memory_utilization", GPU_MEMORY_UTILIZATION))
    if serving.canary_from is not None:
        if serving.canary_from == inv.bom.model_revision:
            yield Problem((*where, "canary_from"), "is bom.model_revision itself: nothing to compare against")
        elif serving.replicas < 2:
            yield Problem(
                (*where, "canary_from"), f"a canary needs 2 or more replicas, not {serving.replicas}"
            )
    layout = KV_LAYOUTS[serving.model]
    if serving.max_model_len > layout.max_context:
        yield Problem(
            (*where, "max_model_len"),
            f"{serving.model} was trained for {layout.max_context} tokens, not {serving.max_model_len}",
        )
    gpu = dominant_gpu(inv)
    if gpu is None:
        return
    tp = serving.tensor_parallel or replica_shape(serving.model, gpu).tensor_parallel
    counts = {n.gpu.count for n in inv.nodes if n.gpu is not None and n.gpu.model == gpu}
    if (tp > GPUS_PER_NODE_MAX and tp % GPUS_PER_NODE_MAX) or any(
        (c % tp if tp <= c else tp % c) for c in counts
    ):
        yield Problem(
            (*where, "tensor_parallel"),
            f"{tp} GPUs per replica does not divide the nodes' {'/'.join(map(str, sorted(counts)))} {gpu.value} GPUs",
        )
    elif kv_budget_gib(serving.model, gpu, tp, utilization) <= 0:
        spec = SERVING_MODELS[serving.model]
        need = math.ceil(spec.params_b * spec.bytes_per_param * 1e9 / 2**30)
        yield Problem(
            (*where, "tensor_parallel"),
            f"{serving.model} ({need} GiB of weights) does not fit {tp} x {gpu.value} with room for a KV cache"
            f" in {utilization:g} of each GPU",
        )
    elif (
        room := kv_tokens(serving.model, [gpu], tp, max(1, tp // GPUS_PER_NODE_MAX), utilization)
    ) < serving.max_model_len:
        yield Problem(
            (*where, "max_model_len"),
            f"one {serving.max_model_len}-token request does not fit the KV cache of {tp} x {gpu.value} ({room} tokens)",
        )
    else:
        nodes = max(1, tp // GPUS_PER_NODE_MAX)
        seqs = int(
            args.get(
                "max_num_seqs",
                max_num_seqs(serving.model, [gpu], tp, nodes, serving.max_model_len, utilization),
            )
        )
        batched = int(args.get("max_num_batched_tokens", MAX_NUM_BATCHED_TOKENS))
        if batched < seqs:
            yield Problem(
                (*where, "engine_args", "max_num_batched_tokens"),
                f"vLLM refuses {batched} tokens per step below max_num_seqs ({seqs})",
            )
        if not args.get("enable_chunked_prefill", True) and batched < serving.max_model_len:
            yield Problem(
                (*where, "engine_args", "enable_chunked_prefill"),
                f"off, vLLM refuses max_num_batched_tokens ({batched}) below max_model_len ({serving.max_model_len})",
            )

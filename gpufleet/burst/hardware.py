"""How fast one serving replica is, from its model's shape and the measured decode roofline.

The same figures hold for every trace: nothing here looks at a request.

- Decode: bench/results/decode_roofline_<gpu>.json times a decode step's matrix work (a batch of
  token vectors times every weight matrix) by weight bytes per GPU and batch. Its step time is
  proportional to the bytes (23-29x for 24x the bytes), so a replica's batch-1 step is the largest
  measured row scaled to its bytes per GPU, and a batch of n costs what the table's batch n costs
  over its batch 1 - for a mixture of experts only on its active share (the rest of the weights is
  read once per step whatever the batch). Each step also reads every sequence's KV cache, at the
  bandwidth the table's batch-1 row achieves.
- Prefill is compute-bound: 2 x active parameters FLOPs per prompt token, at the highest TFLOP/s
  the table measured.
- KV cache: the replica's GPU memory less the weights and an activation reserve, over the model's
  KV bytes per token, bounds the tokens (prompt and answer) of the sequences in flight; vLLM's
  `max_num_seqs` (256 by default) bounds their number.

GPUs without a measurement here (A100, L40S) take the H100's table scaled by datasheet bandwidth and
tensor throughput (gpufleet.model.catalog), which the H100/H200 pair shows to be close (the H200 row
is 0.95x the H100's per byte over bandwidth).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from gpufleet.inventory.load import REPO_ROOT
from gpufleet.model.catalog import GPU_CATALOG, SERVING_MODELS, GPUModel

RESULTS = REPO_ROOT / "bench" / "results"
MEASURED: dict[GPUModel, Path] = {
    GPUModel.H100_SXM: RESULTS / "decode_roofline_h100.json",
    GPUModel.H200: RESULTS / "decode_roofline_h200.json",
}
# vLLM's default --max-num-seqs, and the GPU memory it leaves to activations (gpu_memory_utilization 0.9).
MAX_NUM_SEQS = 256
GPU_MEMORY_UTILISATION = 0.9
# The batch at which a replica's nominal tokens/s (the capacity model's unit) is taken.
NOMINAL_BATCH = 128
GIB = 2**30
WEIGHT_LOAD = RESULTS / "serving_weight_load_h200.json"


@dataclass(frozen=True)
class ModelShape:
    """From each model's config.json on Hugging Face."""

    layers: int
    # K and V elements cached per token and layer: 2 x KV heads x head dim; MLA caches its
    # compressed latent plus the rotary key (DeepSeek-V3/R1: 512 + 64).
    kv_elements: int
    # Parameters a token passes through (a mixture of experts: the routed experts plus the shared).
    active_params_b: float
    kv_bytes_per_element: float = 2.0  # vLLM's kv_cache_dtype "auto": the activations' BF16

    @property
    def kv_bytes_per_token(self) -> float:
        return self.layers * self.kv_elements * self.kv_bytes_per_element


SHAPES: dict[str, ModelShape] = {
    "deepseek-r1": ModelShape(61, 576, 37.0),
    "deepseek-v3": ModelShape(61, 576, 37.0),
    "deepseek-r1-distill-llama-70b": ModelShape(80, 2 * 8 * 128, 70.6),
    "deepseek-r1-distill-qwen-32b": ModelShape(64, 2 * 8 * 128, 32.8),
    "deepseek-r1-distill-qwen-14b": ModelShape(48, 2 * 8 * 128, 14.8),
    "deepseek-r1-distill-qwen-7b": ModelShape(28, 2 * 4 * 128, 7.6),
}


@dataclass(frozen=True)
class Roofline:
    """One GPU's measured decode steps: batch-1 ms per GiB of weights, the step's growth with the
    batch, the bandwidth a step achieves and the best TFLOP/s."""

    ms_per_gib: float
    growth: tuple[tuple[int, float], ...]  # (batch, step / batch-1 step)
    read_bytes_s: float
    tflops: float

    def factor(self, batch: float) -> float:
        batches = [b for b, _ in self.growth]
        i = bisect.bisect_left(batches, batch)
        if i == 0:
            return self.growth[0][1]
        if i == len(batches):
            (b0, f0), (b1, f1) = self.growth[-2], self.growth[-1]
        else:
            (b0, f0), (b1, f1) = self.growth[i - 1], self.growth[i]
        return f0 + (f1 - f0) * (batch - b0) / (b1 - b0)


@cache
def roofline(gpu: GPUModel) -> Roofline:
    """The measured table of `gpu`, or the H100's scaled by the datasheet where none was measured."""
    if gpu not in MEASURED:
        base, ref, spec = roofline(GPUModel.H100_SXM), GPU_CATALOG[GPUModel.H100_SXM], GPU_CATALOG[gpu]
        bw = spec.hbm_tb_s / ref.hbm_tb_s
        return Roofline(
            base.ms_per_gib / bw,
            base.growth,
            base.read_bytes_s * bw,
            base.tflops * spec.tensor_tflops / ref.tensor_tflops,
        )
    rows = json.loads(MEASURED[gpu].read_text())["rows"]
    biggest = max(r["weights_gib"] for r in rows)
    table = sorted((int(r["batch"]), float(r["step_ms"])) for r in rows if r["weights_gib"] == biggest)
    one = table[0][1]
    return Roofline(
        ms_per_gib=one / biggest,
        growth=tuple((b, ms / one) for b, ms in table),
        read_bytes_s=biggest * GIB / (one / 1000),
        tflops=max(float(r["tflops"]) for r in rows),
    )


def weight_bytes(model: str) -> float:
    spec = SERVING_MODELS[model]
    return spec.params_b * 1e9 * spec.bytes_per_param


@dataclass(frozen=True)
class ReplicaHardware:
    """One replica of `model` over `gpus` GPUs of type `gpu` (tensor parallel)."""

    model: str
    gpu: GPUModel
    gpus: int

    @property
    def _shape(self) -> ModelShape:
        return SHAPES[self.model]

    @property
    def weight_bytes(self) -> float:
        return weight_bytes(self.model)

    @property
    def kv_tokens(self) -> int:
        """Tokens of KV cache the replica holds after weights and the activation reserve."""
        memory = self.gpus * GPU_CATALOG[self.gpu].memory_gib * GIB * GPU_MEMORY_UTILISATION
        return max(0, int((memory - self.weight_bytes) / self._shape.kv_bytes_per_token))

    @property
    def prefill_tokens_s(self) -> float:
        return self.gpus * roofline(self.gpu).tflops * 1e12 / (2 * self._shape.active_params_b * 1e9)

    @cached_property
    def _terms(self) -> tuple[Roofline, float, float, float]:
        line = roofline(self.gpu)
        weights_s = line.ms_per_gib / 1000 * self.weight_bytes / GIB / self.gpus
        active = self._shape.active_params_b / SERVING_MODELS[self.model].params_b
        kv_s_per_token = self._shape.kv_bytes_per_token / (self.gpus * line.read_bytes_s)
        return line, weights_s, active, kv_s_per_token

    def step_s(self, batch: int, context_tokens: float) -> float:
        """One decode step of `batch` sequences holding `context_tokens` of KV cache together."""
        line, weights_s, active, kv_s_per_token = self._terms
        return weights_s * (1 + active * (line.factor(max(batch, 1)) - 1)) + context_tokens * kv_s_per_token

    def nominal_tokens_s(self, context_tokens: float) -> float:
        """Decode tokens/s at NOMINAL_BATCH sequences of `context_tokens` each."""
        batch = min(NOMINAL_BATCH, MAX_NUM_SEQS)
        return batch / self.step_s(batch, batch * context_tokens)


@cache
def weight_load_bytes_s() -> float:
    """Cold safetensors load from local disk into GPU memory, per node (the largest file measured)."""
    rows = json.loads(WEIGHT_LOAD.read_text())["rows"]
    biggest = max(rows, key=lambda r: r["size_gib"])
    return float(biggest["safetensors_cold"]["gib_s"]) * GIB


def swap_s(model: str, replicas_per_node: float) -> float:
    """Seconds a node takes to load `replicas_per_node` replicas' weights of `model` from its disk
    (every node of a multi-node replica loads its share at once: pass the share)."""
    return replicas_per_node * weight_bytes(model) / weight_load_bytes_s()


# The request the capacity model counts in, the same for every trace: a chat turn.
NOMINAL_PROMPT = 2048
NOMINAL_ANSWER = 256
# The context at which a replica's nominal decode rate is taken.
NOMINAL_CONTEXT = 4096


def request_seconds(hw: ReplicaHardware, prompt: int, answer: int) -> float:
    """Seconds of one replica a request takes at nominal batching: its prefill and its decode."""
    return prompt / hw.prefill_tokens_s + max(1, answer) / hw.nominal_tokens_s(NOMINAL_CONTEXT)


def relative_capacity(other: ReplicaHardware, replicas: int, site: ReplicaHardware) -> float:
    """What `replicas` replicas on `other` serve, in replicas of the site's own, for the nominal request."""
    return (
        replicas
        * request_seconds(site, NOMINAL_PROMPT, NOMINAL_ANSWER)
        / request_seconds(other, NOMINAL_PROMPT, NOMINAL_ANSWER)
    )

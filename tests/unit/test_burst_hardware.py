"""A replica's speed from its model's shape and the measured roofline, the same for every trace."""

from __future__ import annotations

import json

import pytest

from gpufleet.burst.hardware import GIB, MEASURED, ReplicaHardware, roofline
from gpufleet.model.catalog import GPU_CATALOG, GPUModel


def test_a_dense_replica_reproduces_the_measured_step_at_the_measured_size() -> None:
    rows = json.loads(MEASURED[GPUModel.H200].read_text())["rows"]
    measured = {(r["weights_gib"], r["batch"]): r["step_ms"] for r in rows}
    line = roofline(GPUModel.H200)
    for batch in (1, 64, 256, 1024):
        # 48 GiB of weights on one GPU: the step the table holds, without the KV-cache term.
        step = line.ms_per_gib * 48 * line.factor(batch)
        assert step == pytest.approx(measured[(48, batch)], rel=1e-9)
    # Other sizes scale by bytes: within 20% of the measured 24 GiB row up to batch 128.
    for batch in (1, 8, 32, 128):
        assert line.ms_per_gib * 24 * line.factor(batch) == pytest.approx(measured[(24, batch)], rel=0.2)


def test_a_mixture_of_experts_grows_with_the_batch_only_on_its_active_share() -> None:
    r1 = ReplicaHardware("deepseek-r1", GPUModel.H100_SXM, 16)
    dense = ReplicaHardware("deepseek-r1-distill-llama-70b", GPUModel.H100_SXM, 4)
    growth_moe = r1.step_s(1024, 0) / r1.step_s(1, 0)
    growth_dense = dense.step_s(1024, 0) / dense.step_s(1, 0)
    assert growth_dense > 3 and 1 < growth_moe < 1 + (growth_dense - 1) * 37 / 671 + 1e-9


def test_the_kv_cache_holds_what_memory_leaves_after_the_weights() -> None:
    r = ReplicaHardware("deepseek-r1-distill-llama-70b", GPUModel.H200, 4)
    left = 4 * 141 * GIB * 0.9 - 70.6e9 * 2
    assert r.kv_tokens == int(left / (80 * 2048 * 2))
    # An L40S replica of the same model holds a tenth of it: long prompts queue on KV, not slots.
    small = ReplicaHardware("deepseek-r1-distill-llama-70b", GPUModel.L40S, 4)
    assert small.kv_tokens < r.kv_tokens / 8


def test_kv_reads_lengthen_the_step() -> None:
    r = ReplicaHardware("deepseek-r1-distill-llama-70b", GPUModel.H200, 4)
    assert r.step_s(64, 64 * 8192) > 1.5 * r.step_s(64, 64 * 128)


def test_unmeasured_gpus_scale_the_h100_table_by_the_datasheet() -> None:
    h100, l40s = roofline(GPUModel.H100_SXM), roofline(GPUModel.L40S)
    ratio = GPU_CATALOG[GPUModel.L40S].hbm_tb_s / GPU_CATALOG[GPUModel.H100_SXM].hbm_tb_s
    assert l40s.ms_per_gib == pytest.approx(h100.ms_per_gib / ratio)
    assert l40s.growth == h100.growth


def test_prefill_is_compute_bound_on_active_parameters() -> None:
    r1 = ReplicaHardware("deepseek-r1", GPUModel.H100_SXM, 16)
    assert r1.prefill_tokens_s == pytest.approx(16 * roofline(GPUModel.H100_SXM).tflops * 1e12 / (2 * 37e9))

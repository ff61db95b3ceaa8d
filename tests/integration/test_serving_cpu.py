"""The serving path on CPU: the generated Triton config served by the real tritonserver binary.

A tiny DeepSeek-V3 (random weights, real architecture) in Triton's Python backend; requests
over HTTP; Triton's own /metrics shows whether requests were batched. The same flow runs at
size on the H100 in bench/serving.py.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.plan import plan_site
from gpufleet.plan.site import ServingPlan
from gpufleet.plan.triton import double_model_config, naive_double_config
from gpufleet.serving.loadgen import infer, scrape
from gpufleet.serving.repository import TINY, write_repository
from gpufleet.serving.tritonserver import tritonserver

pytestmark = pytest.mark.integration

REQUESTS = 24
PROMPT = list(range(1, 17))


@pytest.fixture(scope="module")
def serving() -> ServingPlan:
    plan = plan_site(load_inventory("dc1")).serving
    assert plan is not None
    return plan


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _burst(url: str, model: str) -> list[list[int]]:
    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        futures = [pool.submit(infer, url, model, [(i % 7) + t for t in PROMPT], 8) for i in range(REQUESTS)]
        return [f.result() for f in futures]


def test_generated_config_is_served_and_batches(serving: ServingPlan, tmp_path: Path) -> None:
    config = double_model_config(serving, kind="KIND_CPU")
    write_repository(tmp_path / "repo", config, TINY)
    with tritonserver(tmp_path / "repo", tmp_path / "work") as server:
        assert urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=5).status == 200
        loaded = _get(f"{server.url}/v2/models/{config.name}/config")
        batching = loaded["dynamic_batching"]
        assert isinstance(batching, dict)
        assert [
            int(b) for b in batching["preferred_batch_size"]
        ] == config.dynamic_batching.preferred_batch_size  # type: ignore[union-attr]
        assert loaded["instance_group"][0]["count"] == config.instance_count  # type: ignore[index]

        first = infer(server.url, config.name, PROMPT, 8)
        assert len(first) == 8 and all(0 <= t < TINY.vocab_size for t in first)
        outputs = _burst(server.url, config.name)
        assert all(len(o) == 8 for o in outputs)
        # Greedy decoding of seeded weights: the same prompt gives the same tokens, batched or not,
        # on either instance.
        assert outputs[0] == outputs[7] == outputs[14]

        # Triton publishes its counters on its metrics interval (500 ms): read until they caught up.
        deadline = time.monotonic() + 10
        metrics = scrape(server.metrics(), config.name)
        while metrics["nv_inference_request_success"] < REQUESTS + 1 and time.monotonic() < deadline:
            time.sleep(0.25)
            metrics = scrape(server.metrics(), config.name)
        assert metrics["nv_inference_request_success"] == REQUESTS + 1
        assert metrics["nv_inference_request_failure"] == 0
        assert metrics["nv_inference_exec_count"] < REQUESTS, "dynamic batching merged no requests"
        assert metrics["nv_inference_queue_duration_us"] > 0
        assert metrics["nv_inference_pending_request_count"] == 0


def test_naive_config_runs_one_request_per_execution(serving: ServingPlan, tmp_path: Path) -> None:
    config = naive_double_config(serving, kind="KIND_CPU")
    write_repository(tmp_path / "repo", config, TINY)
    with tritonserver(tmp_path / "repo", tmp_path / "work") as server:
        _burst(server.url, config.name)
        metrics = scrape(server.metrics(), config.name)
        assert metrics["nv_inference_request_success"] == REQUESTS
        assert metrics["nv_inference_exec_count"] == REQUESTS
    assert server.process.returncode is not None, "tritonserver was left running"

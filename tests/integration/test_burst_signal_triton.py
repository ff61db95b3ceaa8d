"""The burst signal read from a real Triton server (CPU, Python backend) under generated load."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpufleet.burst.signal import SignalError, Snapshot, TritonMetrics, between
from gpufleet.serving.tritonserver import tritonserver

pytestmark = pytest.mark.integration

SERVICE_S = 0.02
REQUESTS = 80
CONCURRENCY = 10

CONFIG = """
name: "sleepy"
backend: "python"
max_batch_size: 0
input [ { name: "IN", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""

# One request at a time, SERVICE_S each: with CONCURRENCY clients a queue forms in Triton.
MODEL = f"""
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            time.sleep({SERVICE_S})
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x.astype(np.float32))]))
        return responses
"""


def _repository(root: Path) -> Path:
    (root / "sleepy" / "1").mkdir(parents=True)
    (root / "sleepy" / "config.pbtxt").write_text(CONFIG)
    (root / "sleepy" / "1" / "model.py").write_text(MODEL)
    return root


def _infer(url: str) -> float:
    body = json.dumps({"inputs": [{"name": "IN", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode()
    request = urllib.request.Request(
        f"{url}/v2/models/sleepy/infer", data=body, headers={"Content-Type": "application/json"}
    )
    start = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        resp.read()
    return time.monotonic() - start


def _settled(reader: TritonMetrics, success: int) -> Snapshot:
    """Triton refreshes its metrics every --metrics-interval-ms (500 ms here): wait for the count."""
    deadline = time.monotonic() + 10
    while True:
        snapshot = reader.snapshot(time.monotonic())
        if snapshot.success >= success or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.1)


def test_queue_wait_and_rate_from_real_triton_metrics(tmp_path: Path) -> None:
    with tritonserver(_repository(tmp_path / "repo"), tmp_path / "work") as server:
        reader = TritonMetrics(server.metrics_url, "sleepy")
        _infer(server.url)  # the first request creates the series
        before = _settled(reader, 1)
        pending_seen: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.05):
                pending_seen.append(reader.snapshot(time.monotonic()).pending)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                latencies = list(pool.map(lambda _: _infer(server.url), range(REQUESTS)))
        finally:
            stop.set()
            watcher.join(timeout=10)
        after = _settled(reader, 1 + REQUESTS)
        reading = between(before, after)

        assert after.success - before.success == REQUESTS
        assert reading.request_rps == pytest.approx(REQUESTS / reading.interval_s)
        # Each request waited for the others ahead of it: Triton's queue time per request is the
        # client's latency less the model's own time (and a little HTTP), and it is substantial.
        mean_latency = sum(latencies) / len(latencies)
        assert reading.queue_wait_s > 3 * SERVICE_S
        assert reading.queue_wait_s < mean_latency
        assert reading.queue_wait_s == pytest.approx(mean_latency - SERVICE_S, rel=0.35)
        assert max(pending_seen) >= 1, "a queue of waiting requests shows in the pending gauge"
        assert after.pending == 0

        signals = reading.signals(t=1.0, replica_rps=1 / SERVICE_S, ready_replicas=1)
        # Ten clients keep the single instance busy: close to one replica of load.
        assert 0.5 < signals.load_replicas <= 1.05
        assert signals.queue_wait_s == reading.queue_wait_s

        with pytest.raises(SignalError, match="no nv_inference_request_success series for model 'absent'"):
            TritonMetrics(server.metrics_url, "absent").snapshot(time.monotonic())

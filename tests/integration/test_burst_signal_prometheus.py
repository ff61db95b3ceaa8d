"""The burst signal through a real Prometheus (Debian's 2.42, from scripts/setup.sh) scraping a
real Triton under load: the controller's PromQL is parsed and evaluated by Prometheus itself."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from gpufleet.burst.signal import PrometheusQuery, SignalError
from gpufleet.serving.tritonserver import free_port, tritonserver
from tests.integration.servers import serving
from tests.integration.test_burst_signal_triton import SERVICE_S, _infer, _repository

pytestmark = pytest.mark.integration

PROMETHEUS = Path(sys.executable).parent / "prometheus"
REQUESTS = 80
CONCURRENCY = 10
# What pod scraping adds in the cluster: the Kubernetes node a Triton pod runs on.
NODE = "spot-node-1"


@contextmanager
def prometheus(target: str, workdir: Path) -> Iterator[str]:
    """Prometheus on 127.0.0.1 scraping `target` (host:port) every second; stopped by PID."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run scripts/setup.sh"
    workdir.mkdir(parents=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "triton",
                        "static_configs": [{"targets": [target], "labels": {"node": NODE}}],
                    }
                ],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(PROMETHEUS),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with serving(args, f"{url}/-/ready", workdir / "prometheus.log"):
        yield url


def _instant(url: str, query: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=5
    ) as resp:
        return list(json.loads(resp.read())["data"]["result"])


def _scraped(url: str, query: str, value: float) -> None:
    """Wait (bounded) until Prometheus holds `value` for `query`: Triton refreshes its counters every
    500 ms, Prometheus scrapes every second."""
    deadline = time.monotonic() + 20
    while True:
        result = _instant(url, query)
        if result and float(result[0]["value"][1]) >= value:  # type: ignore[index]
            return
        assert time.monotonic() < deadline, f"{query} did not reach {value}: {result}"
        time.sleep(0.25)


def test_promql_signals_from_a_real_prometheus_scraping_a_real_triton(tmp_path: Path) -> None:
    with tritonserver(_repository(tmp_path / "repo"), tmp_path / "triton") as triton:
        _infer(triton.url)
        target = f"127.0.0.1:{triton.metrics_port}"
        with prometheus(target, tmp_path / "prometheus") as url:
            success = 'sum(nv_inference_request_success{model="sleepy"})'
            _scraped(url, success, 1)
            query = PrometheusQuery(url, "sleepy", window="20s")

            inflight: list[dict[str, int]] = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.wait(0.5):
                    inflight.append(query.inflight_by_node())

            watcher = threading.Thread(target=watch)
            watcher.start()
            start = time.monotonic()
            try:
                with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                    latencies = list(pool.map(lambda _: _infer(triton.url), range(REQUESTS)))
            finally:
                stop.set()
                watcher.join(timeout=10)
            busy_s = time.monotonic() - start
            _scraped(url, success, 1 + REQUESTS)
            reading = query.reading()

    # rate() over the 20 s window: the 80 requests, extrapolated to the window's edges.
    assert reading.request_rps * 20 == pytest.approx(REQUESTS, rel=0.3)
    assert reading.request_rps < REQUESTS / busy_s
    # Queue time per request, as Prometheus divides the two rates: the wait behind the other
    # clients, the client's latency less the model's own time.
    mean_latency = sum(latencies) / len(latencies)
    assert reading.queue_wait_s > 3 * SERVICE_S
    assert reading.queue_wait_s == pytest.approx(mean_latency - SERVICE_S, rel=0.35)
    assert reading.pending == 0
    # The queue rose and emptied again inside the window: its slope (deriv) is small beside the
    # rate served, and the query is PromQL that the real server evaluates.
    assert abs(reading.queue_growth_rps) < reading.request_rps
    # A CPU Triton with a Python model: no GPU, TensorRT-LLM or first-response series. The queries
    # for them are valid PromQL (Prometheus rejects a bad one with an error) that find nothing.
    assert (reading.gpu_util, reading.trt_waiting, reading.kv_cache_used, reading.ttft_p99_s) == (
        None,
        None,
        None,
        None,
    )
    # Requests in flight per node, for the scale-in choice: the label that scraping attached.
    assert all(set(seen) == {NODE} for seen in inflight) and inflight
    assert max(seen[NODE] for seen in inflight) >= 1


def test_prometheus_rejects_a_bad_query_and_the_reader_says_why(tmp_path: Path) -> None:
    with prometheus("127.0.0.1:9", tmp_path / "prometheus") as url:
        with pytest.raises(SignalError, match="bad_data"):
            PrometheusQuery(url, 'sleepy"}').reading()
        with pytest.raises(SignalError, match="Prometheus has no nv_inference_request_success"):
            PrometheusQuery(url, "sleepy").reading()

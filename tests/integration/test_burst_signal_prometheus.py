"""The burst signal through a real Prometheus (Debian's 2.42, from scripts/setup.sh) scraping a
real Triton under load, and the real admission gateway (Debian's HAProxy, its own Prometheus
exporter) in front of it: the controller's PromQL is parsed and evaluated by Prometheus itself,
on the series those exporters really emit."""

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
from gpufleet.plan.admission import FALLBACK, PRIMARY, SHED, Backend, plan_admission
from gpufleet.serving.gateway import haproxy, write_config
from gpufleet.serving.tritonserver import TritonServer, free_port, tritonserver
from tests.integration.servers import serving
from tests.integration.test_admission import KEYS, call, triton, wait_queue  # noqa: F401  (fixture)
from tests.integration.test_admission import MODEL as GATEWAY_MODEL
from tests.integration.test_burst_signal_triton import SERVICE_S, _infer, _repository

pytestmark = pytest.mark.integration

PROMETHEUS = Path(sys.executable).parent / "prometheus"
REQUESTS = 80
CONCURRENCY = 10
# What pod scraping adds in the cluster: the Kubernetes node a Triton pod runs on.
NODE = "spot-node-1"
# P2 requests the gateway degrades to the fallback model, and then sheds.
DEGRADED = 6
SHED_COUNT = 8


@contextmanager
def prometheus(target: str, workdir: Path, *more: str) -> Iterator[str]:
    """Prometheus on 127.0.0.1 scraping `target` (host:port), and `more` targets, every second;
    stopped by PID."""
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
                        "static_configs": [{"targets": [target, *more], "labels": {"node": NODE}}],
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
    with tritonserver(_repository(tmp_path / "repo"), tmp_path / "triton") as server:
        _infer(server.url)
        target = f"127.0.0.1:{server.metrics_port}"
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
                    latencies = list(pool.map(lambda _: _infer(server.url), range(REQUESTS)))
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


def test_shed_and_degraded_rates_from_the_real_gateways_exporter(
    triton: TritonServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The gateway (rendered by gpufleet.plan.admission) degrades P2 to the fallback model while the
    primary has a queue, then sheds it with 429 once the fallback's queue is full; Prometheus scrapes
    its exporter, and the controller's reading counts both as demand Triton never saw."""
    addr = triton.url.removeprefix("http://")
    # One request/s at a 2 s SLO: P2 leaves the primary at a queue of 1; the fallback sheds at 1.
    primary = Backend(name=PRIMARY, model=GATEWAY_MODEL, servers=[addr], slots=1, rate_rps=1)
    fallback = Backend(name=FALLBACK, model="fallback", servers=[addr], slots=1, rate_rps=1)
    plan = plan_admission(2.0, primary, fallback)
    assert plan.degrade_queue["P2"] == 1 and plan.shed_queue == 1
    port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path / "gw", plan, primary, fallback, KEYS, port, metrics_port)
    window_s = 60
    with (
        haproxy(config, port, tmp_path / "gw", metrics_port=metrics_port) as gw,
        prometheus(
            f"127.0.0.1:{triton.metrics_port}", tmp_path / "prometheus", f"127.0.0.1:{metrics_port}"
        ) as url,
    ):
        # The exporter's series as scraped before anything was turned away: rate() starts from 0.
        _scraped(url, f'sum(haproxy_backend_http_requests_total{{proxy="{SHED}"}})', 0)
        held = [_hold(gw.url, "key-p0") for _ in range(3)]  # one in service, two queued
        wait_queue(gw, PRIMARY, 2)
        degraded = [call(gw.url, "key-p2", 1) for _ in range(DEGRADED)]
        held += [_hold(gw.url, "key-p2") for _ in range(2)]  # the fallback: one in service, one queued
        wait_queue(gw, FALLBACK, 1)
        shed = [call(gw.url, "key-p2", 1) for _ in range(SHED_COUNT)]
        for thread in held:
            thread.join(120)
        _scraped(url, f'sum(haproxy_backend_http_requests_total{{proxy="{SHED}"}})', SHED_COUNT)
        _scraped(url, f'sum(haproxy_backend_http_requests_total{{proxy="{FALLBACK}"}})', DEGRADED + 2)
        # rate() needs two of Triton's samples in the window; a scrape of the busy Python model
        # can be late, so wait for the series the reading divides by rather than racing it.
        _scraped(url, f'sum(rate(nv_inference_request_success{{model="{GATEWAY_MODEL}"}}[{window_s}s]))', 0)
        query = PrometheusQuery(url, GATEWAY_MODEL, window=f"{window_s}s")
        reading = query.reading()
        # The gateway-queue query (what a KEDA ScaledObject on this queue reads) finds the series
        # the real exporter emits (a wrong name or `proxy` label finds none: an empty vector). Its
        # value while requests wait is the exporter's own (wait_queue above saw 2 past maxconn 1);
        # that queue lasts under a scrape interval here, so Prometheus is not raced for it.
        assert len(_instant(url, query.queries()["gateway_queue"])) == 1
    assert all(r.status == 200 and r.served_by == "fallback" for r in degraded), degraded
    assert all(r.status == 429 for r in shed), shed
    # Every held request has finished: the primary's queue is empty again.
    assert reading.gateway_queue == 0
    # rate() over the window: what the exporter counted, extrapolated towards the window's edges.
    # Every sample lies inside the window, so the extrapolation only adds (never below the count);
    # how much it adds depends on the scrape times a loaded machine gives Prometheus.
    assert SHED_COUNT <= reading.shed_rps * window_s <= 2 * SHED_COUNT
    assert DEGRADED + 2 <= reading.degraded_rps * window_s <= 2 * (DEGRADED + 2)
    # Triton counted the primary's requests only; the gateway's are added to the offered load.
    signals = reading.signals(t=0.0, replica_rps=1.0, ready_replicas=1)
    served = max(0.0, reading.request_rps + reading.queue_growth_rps)
    assert signals.load_replicas == pytest.approx(served + reading.shed_rps + reading.degraded_rps)
    assert reading.shed_rps + reading.degraded_rps > 0.5 * served


def _hold(url: str, key: str) -> threading.Thread:
    """A long request (400 tokens) that keeps a server slot, on a thread of its own."""
    thread = threading.Thread(target=call, args=(url, key, 400))
    thread.start()
    return thread

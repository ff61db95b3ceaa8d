"""Signal parsing and rates from Triton /metrics text; the Prometheus query API reader.

There is no Prometheus server here: the reader is tested against a local HTTP server that answers
/api/v1/query in Prometheus' documented response format (instant vectors, empty results, errors).
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from gpufleet.burst.signal import (
    PrometheusQuery,
    Reading,
    SignalError,
    Snapshot,
    between,
    histogram_quantile,
    parse_query_response,
    parse_triton,
)

# Triton 2.51's exposition for a TensorRT-LLM model on two GPUs (the series the controller reads).
TRITON_TEXT = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="deepseek",version="1"} 1200
nv_inference_request_success{model="deepseek",version="2"} 300
nv_inference_request_success{model="other",version="1"} 99999
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds (includes cached requests)
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="deepseek",version="1"} 600000000
nv_inference_queue_duration_us{model="deepseek",version="2"} 150000000
nv_inference_queue_duration_us{model="other",version="1"} 1
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="deepseek",version="1"} 7
nv_inference_pending_request_count{model="deepseek",version="2"} 1
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-0"} 0.98
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.96
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="deepseek",request_type="waiting",version="1"} 12
nv_trt_llm_request_metrics{model="deepseek",request_type="active",version="1"} 64
nv_trt_llm_request_metrics{model="deepseek",request_type="max",version="1"} 64
# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="deepseek",version="1"} 0.91
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="deepseek",version="1"} 910
"""


def test_parse_sums_a_models_versions_and_reads_trt_llm_series() -> None:
    snap = parse_triton(TRITON_TEXT, "deepseek", t=10.0)
    assert snap.success == 1500
    assert snap.queue_us == 750_000_000
    assert snap.pending == 8
    assert snap.gpu_util == pytest.approx(0.97)
    assert (snap.trt_waiting, snap.trt_active, snap.kv_cache_used) == (12, 64, 0.91)


def test_queue_wait_is_queue_time_rate_over_success_rate() -> None:
    before = Snapshot(t=0.0, success=1000, queue_us=100_000_000, pending=0)
    after = Snapshot(t=60.0, success=1600, queue_us=400_000_000, pending=5)
    reading = between(before, after)
    assert reading.request_rps == 10.0
    assert reading.queue_wait_s == pytest.approx(0.5)  # 300 s of queueing over 600 requests
    assert reading.pending == 5


def test_a_restarted_triton_counts_from_zero() -> None:
    before = Snapshot(t=0.0, success=5000, queue_us=9e9, pending=0)
    after = Snapshot(t=30.0, success=60, queue_us=60_000_000, pending=0)
    reading = between(before, after)
    assert reading.request_rps == 2.0
    assert reading.queue_wait_s == pytest.approx(1.0)


def test_no_requests_means_no_wait_not_a_division_by_zero() -> None:
    snap = Snapshot(t=0.0, success=10, queue_us=5, pending=0)
    assert between(snap, Snapshot(t=15.0, success=10, queue_us=5, pending=0)).queue_wait_s == 0.0


def test_signals_prefer_trt_llm_waiting_over_triton_pending() -> None:
    snap = parse_triton(TRITON_TEXT, "deepseek", t=10.0)
    reading = between(Snapshot(t=0.0, success=1000, queue_us=0, pending=0), snap)
    signals = reading.signals(t=10.0, replica_rps=25.0, ready_replicas=4)
    assert signals.pending == 12
    # 500 served in 10 s, and Triton's queue grew from 0 to 8: 50.8 arrivals per second.
    assert signals.load_replicas == pytest.approx(50.8 / 25.0)
    assert signals.gpu_util == pytest.approx(0.97)


def test_offered_load_counts_arrivals_the_servers_could_not_take_yet() -> None:
    """At capacity completions flatten; arrivals are completions plus what the queue grew by."""
    before = Snapshot(t=0.0, success=1000, queue_us=0, pending=20)
    surge = between(before, Snapshot(t=60.0, success=1600, queue_us=0, pending=320))
    assert surge.request_rps == 10.0 and surge.queue_growth_rps == 5.0
    assert surge.signals(t=60.0, replica_rps=10.0, ready_replicas=1).load_replicas == pytest.approx(1.5)
    # The queue draining after the surge: fewer arrive than are served.
    drain = between(before, Snapshot(t=60.0, success=1600, queue_us=0, pending=0))
    assert drain.signals(t=60.0, replica_rps=10.0, ready_replicas=1).load_replicas == pytest.approx(
        (600 - 20) / 60 / 10
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [("garbage{", "not Prometheus text"), ("# TYPE x counter\nx 1\n", "no nv_inference_request_success")],
)
def test_unusable_metrics_raise_signal_error(text: str, message: str) -> None:
    with pytest.raises(SignalError, match=message):
        parse_triton(text, "deepseek", t=0.0)


def _vector(value: str | None) -> dict[str, object]:
    result = [] if value is None else [{"metric": {}, "value": [1732400000.123, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class _FakePrometheus(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, dict[str, object]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)["query"][0]
        type(self).seen.append(query)
        body: dict[str, object] = next(
            (answer for prefix, answer in self.answers.items() if query.startswith(prefix)), _vector(None)
        )
        status = 400 if body.get("status") == "error" else 200
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakePrometheus.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_reader_asks_promql_and_reads_instant_vectors(prometheus: str) -> None:
    _FakePrometheus.answers = {
        "sum(rate(nv_inference_request_success": _vector("42.5"),
        "sum(rate(nv_inference_queue_duration_us": _vector("1.75"),
        "sum(nv_inference_pending_request_count": _vector("9"),
        "avg(nv_gpu_utilization": _vector("0.99"),
    }
    reading = PrometheusQuery(prometheus, "deepseek", window="2m").reading()
    assert reading.request_rps == 42.5
    assert reading.queue_wait_s == 1.75
    assert reading.pending == 9
    assert reading.gpu_util == 0.99
    assert reading.trt_waiting is None and reading.kv_cache_used is None
    assert reading.ttft_p99_s is None
    assert reading.interval_s == 120
    assert (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(nv_inference_first_response_histogram_ms_bucket{model="deepseek"}[2m]))) / 1000'
    ) in _FakePrometheus.seen
    assert (
        'sum(rate(nv_inference_queue_duration_us{model="deepseek"}[2m])) / '
        'sum(rate(nv_inference_request_success{model="deepseek"}[2m])) / 1e6'
    ) in _FakePrometheus.seen


def test_prometheus_without_the_series_is_an_error(prometheus: str) -> None:
    _FakePrometheus.answers = {}
    with pytest.raises(SignalError, match="no nv_inference_request_success"):
        PrometheusQuery(prometheus, "deepseek").reading()


def test_a_rejected_query_reports_prometheus_own_error(prometheus: str) -> None:
    _FakePrometheus.answers = {
        "sum(rate(nv_inference_request_success": {
            "status": "error",
            "errorType": "bad_data",
            "error": 'invalid parameter "query"',
        }
    }
    with pytest.raises(SignalError, match="Prometheus query failed: bad_data"):
        PrometheusQuery(prometheus, "deepseek").reading()


def test_prometheus_errors_and_nan_are_read_as_such() -> None:
    error = {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}
    with pytest.raises(SignalError, match="bad_data: parse error"):
        parse_query_response(json.dumps(error).encode())
    assert parse_query_response(json.dumps(_vector("NaN")).encode()) is None
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1732400000.1, "3"]}}
    assert parse_query_response(json.dumps(scalar).encode()) == 3.0


def test_unreachable_prometheus_is_a_signal_error() -> None:
    with pytest.raises(SignalError, match="cannot read"):
        PrometheusQuery("http://127.0.0.1:9", "deepseek", timeout_s=2).reading()


def test_inflight_per_node_for_the_scale_in_choice(prometheus: str) -> None:
    by_node = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"node": "ip-10-0-3-17"}, "value": [1732400000.1, "12"]},
                {"metric": {"node": "ip-10-0-3-18"}, "value": [1732400000.1, "0"]},
                {"metric": {}, "value": [1732400000.1, "99"]},
            ],
        },
    }
    _FakePrometheus.answers = {"sum by (node)": by_node}
    assert PrometheusQuery(prometheus, "deepseek").inflight_by_node() == {
        "ip-10-0-3-17": 12,
        "ip-10-0-3-18": 0,
    }
    assert _FakePrometheus.seen == [
        'sum by (node) (nv_trt_llm_request_metrics{model="deepseek",request_type="active"}) '
        'or sum by (node) (nv_inference_pending_request_count{model="deepseek"})'
    ]


# Triton 24.05+ with --metrics-config histogram_latencies=true (a decoupled, streaming model).
def _ttft_text(counts: tuple[int, int, int, int, int]) -> str:
    bounds = ("100", "500", "1000", "5000", "+Inf")
    rows = "\n".join(
        f'nv_inference_first_response_histogram_ms_bucket{{model="deepseek",version="1",le="{le}"}} {n}'
        for le, n in zip(bounds, counts, strict=True)
    )
    return (
        TRITON_TEXT
        + "# HELP nv_inference_first_response_histogram_ms Duration from request to first response in milliseconds\n"
        + "# TYPE nv_inference_first_response_histogram_ms histogram\n"
        + rows
        + f'\nnv_inference_first_response_histogram_ms_count{{model="deepseek",version="1"}} {counts[-1]}\n'
        + 'nv_inference_first_response_histogram_ms_sum{model="deepseek",version="1"} 123456\n'
    )


def test_ttft_p99_from_the_first_response_histogram_between_scrapes() -> None:
    before = parse_triton(_ttft_text((50, 90, 100, 100, 100)), "deepseek", t=0.0)
    assert before.ttft_buckets == ((100.0, 50), (500.0, 90), (1000.0, 100), (5000.0, 100), (math.inf, 100))
    # 100 more requests: none under 100 ms, 10 under 500, 10 more under 1 s, 90 more under 5 s.
    after = parse_triton(_ttft_text((50, 100, 110, 200, 200)), "deepseek", t=60.0)
    reading = between(before, after)
    # Rank 99 of 100 lies in (1000, 5000], which holds ranks 11..100: 1000 + 4000 * 89/90 ms.
    assert reading.ttft_p99_s == pytest.approx((1000 + 4000 * 89 / 90) / 1000)
    # The whole history would say otherwise: the rate is over the interval only.
    assert histogram_quantile(0.99, after.ttft_buckets or ()) != pytest.approx(reading.ttft_p99_s * 1000)
    assert reading.signals(60.0, 1.0, 4).ttft_s == reading.ttft_p99_s
    assert reading.signals(60.0, 1.0, 4).kv_cache_used == 0.91


def test_histogram_quantile_follows_prometheus() -> None:
    assert histogram_quantile(0.5, [(1.0, 0), (2.0, 10), (math.inf, 10)]) == 1.5
    # Past the highest finite bound: that bound, as Prometheus answers.
    assert histogram_quantile(0.99, [(1.0, 0), (2.0, 1), (math.inf, 10)]) == 2.0
    assert histogram_quantile(0.99, [(1.0, 0), (math.inf, 0)]) is None


def test_without_the_histogram_there_is_no_ttft() -> None:
    a, b = parse_triton(TRITON_TEXT, "deepseek", 0.0), parse_triton(TRITON_TEXT, "deepseek", 10.0)
    assert a.ttft_buckets is None and between(a, b).ttft_p99_s is None


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"status":"success"}',
        b'{"status":"success","data":[]}',
        b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"]]}]}}',
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}',
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":"3"}]}}',
        b'{"status":"success","data":{"resultType":"vector","result":["x"]}}',
        b'{"status":"success","data":{"resultType":"vector","result":{"a":1}}}',
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":[],"value":[1,"2"]}]}}',
        b"\xff\xfe",
        b"null",
        # A value Prometheus would send as a string, sent as JSON true or a number.
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,true]}]}}',
        b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,5]}]}}',
        # Two series for a query that sums to one (found by the attacker review: the first was taken).
        b'{"status":"success","data":{"resultType":"vector","result":'
        b'[{"metric":{},"value":[1,"5"]},{"metric":{},"value":[1,"0"]}]}}',
    ],
)
def test_any_body_prometheus_should_not_send_is_a_signal_error(body: bytes) -> None:
    with pytest.raises(SignalError):
        parse_query_response(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_rps", math.nan),
        ("request_rps", -0.5),
        ("request_rps", math.inf),
        ("pending", math.inf),
        ("pending", math.nan),
        ("queue_wait_s", -1.0),
        ("gpu_util", math.nan),
        ("kv_cache_used", -math.inf),
        ("ttft_p99_s", math.inf),
        ("shed_rps", -0.2),
        ("shed_rps", math.inf),
        ("shed_rps", math.nan),
        ("degraded_rps", -1.0),
        ("degraded_rps", math.nan),
    ],
)
def test_a_reading_that_cannot_be_true_is_refused(prometheus: str, field: str, value: float) -> None:
    """NaN, infinities and negative rates reach the policy from nowhere: the controller holds."""
    queries = PrometheusQuery(prometheus, "deepseek").queries()
    good = {"rps": "10", "queue_wait_s": "0.5", "pending": "3", "gpu_util": "0.9", "kv_cache_used": "0.5"}
    good["ttft_p99_s"] = "0.2"
    good["shed_rps"] = good["degraded_rps"] = "0.0"
    name = {"request_rps": "rps"}.get(field, field)
    answers = {**good, name: str(value)}
    _FakePrometheus.answers = {queries[k]: _vector(v) for k, v in answers.items()}
    if math.isnan(value):
        # PromQL's NaN reads as no sample: a missing rate is an error, a missing gauge is absent.
        if field == "request_rps":
            with pytest.raises(SignalError, match="no nv_inference_request_success"):
                PrometheusQuery(prometheus, "deepseek").reading()
        else:
            assert getattr(PrometheusQuery(prometheus, "deepseek").reading(), field) in (None, 0.0)
        return
    with pytest.raises(SignalError, match=f"{field} is"):
        PrometheusQuery(prometheus, "deepseek").reading()


def test_nan_counters_in_triton_text_are_refused() -> None:
    before = parse_triton(TRITON_TEXT, "deepseek", t=0.0)
    text = TRITON_TEXT.replace('{model="deepseek",version="1"} 1200', '{model="deepseek",version="1"} NaN')
    after = parse_triton(text, "deepseek", t=15.0)
    with pytest.raises(SignalError, match="request_rps is nan"):
        between(before, after)
    inf = TRITON_TEXT.replace(
        'pending_request_count{model="deepseek",version="1"} 7',
        'pending_request_count{model="deepseek",version="1"} +Inf',
    )
    with pytest.raises(SignalError, match="pending is inf"):
        between(before, parse_triton(inf, "deepseek", t=15.0))


def test_shed_and_degraded_requests_are_demand_the_fleet_does_not_serve() -> None:
    """The gateway turned them away or to the fallback model: Triton never counted them."""
    served = Reading(interval_s=60.0, request_rps=20.0, queue_wait_s=0.5, pending=4, queue_growth_rps=-2.0)
    turned_away = replace(served, shed_rps=3.0, degraded_rps=5.0)
    plain = served.signals(t=60.0, replica_rps=10.0, ready_replicas=2).load_replicas
    assert plain == pytest.approx(1.8)
    assert turned_away.signals(t=60.0, replica_rps=10.0, ready_replicas=2).load_replicas == pytest.approx(2.6)
    # A queue draining faster than anything arrives still leaves what the gateway turned away.
    idle = Reading(interval_s=60.0, request_rps=0.0, queue_wait_s=0.0, pending=0, queue_growth_rps=-5.0)
    assert replace(idle, shed_rps=1.0).signals(60.0, 10.0, 2).load_replicas == pytest.approx(0.1)


def test_shed_and_degraded_rates_come_from_the_gateways_exporter(prometheus: str) -> None:
    queries = PrometheusQuery(prometheus, "deepseek", window="2m").queries()
    assert queries["shed_rps"] == 'sum(rate(haproxy_backend_http_requests_total{proxy="shed"}[2m]))'
    assert queries["degraded_rps"] == 'sum(rate(haproxy_backend_http_requests_total{proxy="fallback"}[2m]))'
    _FakePrometheus.answers = {
        "sum(rate(nv_inference_request_success": _vector("10"),
        queries["shed_rps"]: _vector("0.75"),
        queries["degraded_rps"]: _vector("2.5"),
    }
    reading = PrometheusQuery(prometheus, "deepseek", window="2m").reading()
    assert (reading.shed_rps, reading.degraded_rps) == (0.75, 2.5)
    # No gateway series (none deployed, or not scraped yet): nothing turned away is seen.
    _FakePrometheus.answers = {"sum(rate(nv_inference_request_success": _vector("10")}
    reading = PrometheusQuery(prometheus, "deepseek").reading()
    assert (reading.shed_rps, reading.degraded_rps) == (0.0, 0.0)


def test_what_the_gateway_turns_away_holds_burst_nodes_a_quiet_triton_would_let_go() -> None:
    """Triton serves little because the gateway sheds and degrades the rest: no scale-in."""
    from gpufleet.burst.policy import CapacityModel, Gpufleet, Node, Pool

    model = CapacityModel(
        onprem_replicas=4,
        replicas_per_node=1,
        max_nodes=8,
        max_hourly_usd=400.0,
        boot_to_serve_s=900,
        slo_queue_wait_s=2.0,
        target_utilisation=0.8,
    )
    pool = Pool("p5e.48xlarge", "us-east-1a")
    nodes = [Node(f"n{i}", pool, True, False, 0.0, 0, 40.0) for i in range(3)]
    served = Reading(interval_s=15.0, request_rps=20.0, queue_wait_s=0.1, pending=0)
    turned_away = replace(served, shed_rps=15.0, degraded_rps=25.0)

    def decide(reading: Reading) -> tuple[int, int]:
        policy = Gpufleet(model, average_s=60.0, quiet_s=120.0, cooldown_s=0.0)
        window = [reading.signals(t, replica_rps=10.0, ready_replicas=7) for t in range(0, 600, 15)]
        decision = policy.decide(600.0, window, nodes, {pool: 30.0})
        return len(decision.launch), len(decision.drain)

    assert decide(served) == (0, 3)  # 2 replicas of load: the three burst nodes go
    launch, drain = decide(turned_away)
    assert drain == 0 and launch > 0  # 6 replicas of load: they stay, and more come

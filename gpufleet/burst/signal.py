"""Load signals for the burst policy: Triton's /metrics text, or a Prometheus server's query API.

The signal that matters for an LLM server is queue wait per request,
rate(nv_inference_queue_duration_us) / rate(nv_inference_request_success), and the pending
request count; TensorRT-LLM's waiting/active requests and KV-cache use sharpen it when present,
and so does time to first response, p99 from Triton's nv_inference_first_response_histogram_ms
(Triton 24.05+ with --metrics-config histogram_latencies=true; for a streaming LLM backend the
first response is the first token). GPU utilisation is read only as a secondary signal: it sits
near 100% while batching.

The gateway in front of Triton (HAProxy, gpufleet.plan.admission) adds what Triton never sees:
requests it shed (429) and requests it sent to the distilled fallback model. Both are demand the
fleet does not serve, so they count as offered load, pressure to scale out, and never as a reason
to scale in. Prometheus reads them from the gateway's own exporter.

Parsing and rates are pure; the two readers below only fetch.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gpufleet.burst.policy import Signals
from gpufleet.plan.admission import FALLBACK, PRIMARY, SHED, backend_rate_query


class SignalError(RuntimeError):
    """The metrics source could not be read or made no sense; the controller holds its fleet."""


@dataclass(frozen=True)
class Snapshot:
    """Triton's counters and gauges for one model at one instant (monotonic seconds)."""

    t: float
    success: float
    queue_us: float
    pending: float
    gpu_util: float | None = None
    trt_waiting: float | None = None
    trt_active: float | None = None
    kv_cache_used: float | None = None
    # Time to first response: cumulative (upper bound ms, count) per histogram bucket, +Inf last.
    ttft_buckets: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class Reading:
    """What happened between two snapshots (or over a Prometheus rate window)."""

    interval_s: float
    request_rps: float
    queue_wait_s: float
    pending: float
    gpu_util: float | None = None
    trt_waiting: float | None = None
    trt_active: float | None = None
    kv_cache_used: float | None = None
    ttft_p99_s: float | None = None
    # How fast the queue grew (requests/s; negative while it drains): arrivals are what was served
    # plus this. A surge shows here before completions rise: served requests flatten at capacity.
    queue_growth_rps: float = 0.0
    # Requests/s the gateway shed (429) and sent to the fallback model: demand not served here.
    shed_rps: float = 0.0
    degraded_rps: float = 0.0
    # Requests in the gateway's queue for the primary backend (past its servers' maxconn): the
    # queue a KEDA ScaledObject reads from HAProxy's exporter; Triton's pending count misses it.
    gateway_queue: float = 0.0

    def __post_init__(self) -> None:
        # A reading is acted on, so one that cannot be true (NaN, infinite, a negative rate or
        # count) is refused here, whichever source made it: the controller then holds its fleet.
        for name in (
            "request_rps",
            "queue_wait_s",
            "pending",
            "gpu_util",
            "trt_waiting",
            "trt_active",
            "kv_cache_used",
            "ttft_p99_s",
            "shed_rps",
            "degraded_rps",
            "gateway_queue",
        ):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise SignalError(f"{name} is {value!r}: not a finite, non-negative number")
        if not math.isfinite(self.queue_growth_rps):
            raise SignalError(f"queue_growth_rps is {self.queue_growth_rps!r}: not a finite number")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise SignalError(f"interval_s is {self.interval_s!r}: not a positive number of seconds")

    def signals(self, t: float, replica_rps: float, ready_replicas: float) -> Signals:
        """Offered load in replicas: what was served, what the queue grew by, and what the gateway
        shed or degraded, over one replica's throughput (from the capacity model: requests per
        second at full batch). Shed and degraded requests only ever add to it."""
        waiting = self.trt_waiting if self.trt_waiting is not None else self.pending
        arrivals = max(0.0, self.request_rps + self.queue_growth_rps) + self.shed_rps + self.degraded_rps
        return Signals(
            t=t,
            load_replicas=arrivals / replica_rps,
            queue_wait_s=self.queue_wait_s,
            pending=round(waiting),
            gpu_util=self.gpu_util if self.gpu_util is not None else 0.0,
            ready_replicas=ready_replicas,
            ttft_s=self.ttft_p99_s,
            kv_cache_used=self.kv_cache_used,
            gateway_queue=self.gateway_queue,
        )


def parse_triton(text: str, model: str, t: float) -> Snapshot:
    """Sum one model's series over versions (and GPUs for the GPU gauges) from /metrics text."""
    sums: dict[str, float] = {}
    seen: set[str] = set()
    gpu: list[float] = []
    buckets: dict[float, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise SignalError(f"not Prometheus text: {exc}") from None
    for family in families:
        if family.name == TTFT_HISTOGRAM and family.type == "histogram":
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("model") == model:
                    try:
                        le = float(sample.labels["le"])
                    except (KeyError, ValueError):
                        raise SignalError(
                            f"{TTFT_HISTOGRAM} bucket without a numeric le: {sample.labels}"
                        ) from None
                    buckets[le] = buckets.get(le, 0.0) + float(sample.value)
            continue
        if family.type not in {"counter", "gauge", "untyped", "unknown"}:
            continue
        for sample in family.samples:
            # The parser names counter samples `<family>_total`; Triton's series are the family's name.
            name, labels, value = family.name, sample.labels, float(sample.value)
            if name == "nv_gpu_utilization":
                gpu.append(value)
                continue
            if labels.get("model") != model:
                continue
            key = name
            if name == "nv_trt_llm_request_metrics":
                key = f"trt:{labels.get('request_type')}"
            elif name == "nv_trt_llm_kv_cache_block_metrics":
                key = f"kv:{labels.get('kv_cache_block_type')}"
            sums[key] = sums.get(key, 0.0) + value
            seen.add(key)
    if "nv_inference_request_success" not in seen:
        raise SignalError(f"no nv_inference_request_success series for model {model!r}")
    return Snapshot(
        t=t,
        success=sums["nv_inference_request_success"],
        queue_us=sums.get("nv_inference_queue_duration_us", 0.0),
        pending=sums.get("nv_inference_pending_request_count", 0.0),
        gpu_util=sum(gpu) / len(gpu) if gpu else None,
        trt_waiting=sums.get("trt:waiting"),
        trt_active=sums.get("trt:active"),
        kv_cache_used=sums.get("kv:fraction"),
        ttft_buckets=tuple(sorted(buckets.items())) if buckets else None,
    )


TTFT_HISTOGRAM = "nv_inference_first_response_histogram_ms"


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets, +Inf last:
    linear within the bucket that holds the rank; the highest finite bound if it lies in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == math.inf:
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def _ttft_p99_s(before: Snapshot, after: Snapshot) -> float | None:
    if after.ttft_buckets is None:
        return None
    old = dict(before.ttft_buckets or ())
    delta = [(le, n - old.get(le, 0.0)) for le, n in after.ttft_buckets]
    if any(n < 0 for _, n in delta):  # a restart: what the later scrape holds is all there is
        delta = list(after.ttft_buckets)
    p99_ms = histogram_quantile(0.99, delta)
    return None if p99_ms is None else p99_ms / 1000


def between(before: Snapshot, after: Snapshot) -> Reading:
    """Rates between two scrapes; a counter that went down means Triton restarted, and the
    later value is then all that happened since."""
    interval = after.t - before.t
    if interval <= 0:
        raise SignalError("snapshots are not in time order")
    served = after.success - before.success if after.success >= before.success else after.success
    queued = after.queue_us - before.queue_us if after.queue_us >= before.queue_us else after.queue_us
    return Reading(
        interval_s=interval,
        request_rps=served / interval,
        queue_wait_s=queued / served / 1e6 if served > 0 else 0.0,
        pending=after.pending,
        gpu_util=after.gpu_util,
        trt_waiting=after.trt_waiting,
        trt_active=after.trt_active,
        kv_cache_used=after.kv_cache_used,
        ttft_p99_s=_ttft_p99_s(before, after),
        queue_growth_rps=(after.pending - before.pending) / interval,
    )


# An answer larger than this is not one of the controller's queries: refused, not held in memory.
MAX_ANSWER_BYTES = 8 << 20


def _get(url: str, timeout: float) -> bytes:
    """The body of one answer, whole within `timeout` (the socket's own timeout bounds each read
    only: a body sent a byte at a time would hold the loop for as long as it lasted)."""
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            chunks, size = [], 0
            while chunk := resp.read1(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise SignalError(f"cannot read {url}: answer over {MAX_ANSWER_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise SignalError(f"cannot read {url}: answer timed out after {timeout:g} s")
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        # Prometheus explains a bad query in the body of its 400/422 answer.
        body = exc.read()
        if body:
            return bytes(body)
        raise SignalError(f"cannot read {url}: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SignalError(f"cannot read {url}: {exc}") from None


@dataclass
class TritonMetrics:
    """Scrapes Triton's /metrics endpoint directly (one server, or a load balancer's view)."""

    url: str
    model: str
    timeout_s: float = 5.0

    def snapshot(self, t: float) -> Snapshot:
        return parse_triton(_get(self.url, self.timeout_s).decode(), self.model, t)


@dataclass
class PrometheusQuery:
    """Asks a Prometheus server (its /api/v1/query) for the same signals over all replicas."""

    base_url: str
    model: str
    window: str = "1m"
    timeout_s: float = 5.0

    def queries(self) -> dict[str, str]:
        sel = f'model="{self.model}"'
        w = self.window
        return {
            "rps": f"sum(rate(nv_inference_request_success{{{sel}}}[{w}]))",
            "queue_wait_s": (
                f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[{w}])) / "
                f"sum(rate(nv_inference_request_success{{{sel}}}[{w}])) / 1e6"
            ),
            "pending": f"sum(nv_inference_pending_request_count{{{sel}}})",
            "queue_growth_rps": f"sum(deriv(nv_inference_pending_request_count{{{sel}}}[{w}]))",
            "gpu_util": "avg(nv_gpu_utilization)",
            "trt_waiting": f'sum(nv_trt_llm_request_metrics{{{sel},request_type="waiting"}})',
            "trt_active": f'sum(nv_trt_llm_request_metrics{{{sel},request_type="active"}})',
            "kv_cache_used": f'avg(nv_trt_llm_kv_cache_block_metrics{{{sel},kv_cache_block_type="fraction"}})',
            "ttft_p99_s": (
                f"histogram_quantile(0.99, sum by (le) (rate({TTFT_HISTOGRAM}_bucket{{{sel}}}[{w}]))) / 1000"
            ),
            # The gateway's exporter, summed over its replicas.
            "shed_rps": backend_rate_query(SHED, w),
            "degraded_rps": backend_rate_query(FALLBACK, w),
            "gateway_queue": f'sum(haproxy_backend_current_queue{{proxy="{PRIMARY}"}})',
        }

    def reading(self) -> Reading:
        values = {name: self._scalar(q) for name, q in self.queries().items()}
        if values["rps"] is None:
            raise SignalError(f"Prometheus has no nv_inference_request_success for model {self.model!r}")
        seconds = float(self.window[:-1]) * {"s": 1, "m": 60, "h": 3600}[self.window[-1]]
        return Reading(
            interval_s=seconds,
            request_rps=values["rps"],
            # No requests in the window: no wait to speak of (0/0 in PromQL is NaN, so no sample).
            queue_wait_s=values["queue_wait_s"] or 0.0,
            pending=values["pending"] or 0.0,
            gpu_util=values["gpu_util"],
            trt_waiting=values["trt_waiting"],
            trt_active=values["trt_active"],
            kv_cache_used=values["kv_cache_used"],
            ttft_p99_s=values["ttft_p99_s"],
            # One sample in the window has no slope: no growth to count.
            queue_growth_rps=values["queue_growth_rps"] or 0.0,
            # No gateway series (none deployed, or not scraped yet): nothing shed or degraded seen.
            shed_rps=values["shed_rps"] or 0.0,
            degraded_rps=values["degraded_rps"] or 0.0,
            gateway_queue=values["gateway_queue"] or 0.0,
        )

    def inflight_by_node(self, label: str = "node") -> dict[str, int]:
        """Requests in flight per Kubernetes node (the `node` label that pod scraping adds):
        TensorRT-LLM's active requests where present, else Triton's pending ones."""
        sel = f'model="{self.model}"'
        query = (
            f'sum by ({label}) (nv_trt_llm_request_metrics{{{sel},request_type="active"}}) '
            f"or sum by ({label}) (nv_inference_pending_request_count{{{sel}}})"
        )
        url = f"{self.base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        return {
            series[label]: round(value)
            for series, value in parse_vector(_get(url, self.timeout_s))
            if label in series
        }

    def _scalar(self, query: str) -> float | None:
        url = f"{self.base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        return parse_query_response(_get(url, self.timeout_s))


def parse_vector(body: bytes) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each series of an instant-query answer, NaN values left out. Any other
    shape (a matrix, a body without data, a value that is not a number) is a SignalError: the
    controller holds its fleet rather than act on what it cannot read."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SignalError(f"Prometheus answered something that is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SignalError(f"Prometheus answered a JSON {type(data).__name__}, not an object")
    if data.get("status") != "success":
        raise SignalError(f"Prometheus query failed: {data.get('errorType')}: {data.get('error')}")
    answer = data.get("data")
    if not isinstance(answer, dict) or answer.get("resultType") not in {"vector", "scalar"}:
        kind = answer.get("resultType") if isinstance(answer, dict) else None
        raise SignalError(f"Prometheus answered no instant vector (resultType {kind!r})")
    result = answer.get("result")
    if answer["resultType"] == "scalar":
        result = [{"metric": {}, "value": result}]
    if not isinstance(result, list):
        raise SignalError("Prometheus answered a vector whose result is not a list")
    out = []
    for series in result:
        try:
            labels, (_, text) = series.get("metric", {}), series["value"]
            if not isinstance(text, str):  # Prometheus sends every sample value as a string
                raise TypeError(text)
            value = float(text)
        except (AttributeError, KeyError, TypeError, ValueError):
            raise SignalError(
                f"Prometheus answered a sample that is not [time, number]: {series!r:.80}"
            ) from None
        if not isinstance(labels, dict):
            raise SignalError(f"Prometheus answered series labels that are not an object: {labels!r:.80}")
        if value == value:
            out.append(({str(k): str(v) for k, v in labels.items()}, value))
    return out


def parse_query_response(body: bytes) -> float | None:
    """The single value of an instant-vector answer; None when the vector is empty or NaN. More
    than one series (a query that lost its `sum`, duplicate series) is a SignalError: taking the
    first would read an arbitrary part of the load."""
    series = parse_vector(body)
    if len(series) > 1:
        raise SignalError(f"Prometheus answered {len(series)} series where the query asks for one")
    return series[0][1] if series else None

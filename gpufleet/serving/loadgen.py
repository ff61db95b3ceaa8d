"""Closed-loop load against Triton's HTTP API, and the queue metrics Triton reports meanwhile."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from prometheus_client.parser import text_string_to_metric_families

# Triton's per-model counters the burst controller reads (cumulative since start).
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)


def scrape(metrics_text: str, model: str) -> dict[str, float]:
    """This model's Triton counters (and pending-request gauge) from Prometheus text."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        # The parser names counter samples `<family>_total`; Triton's own names have no suffix.
        if family.name not in COUNTERS and family.name != "nv_inference_pending_request_count":
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model and sample.name in (family.name, f"{family.name}_total"):
                values[family.name] = values.get(family.name, 0.0) + sample.value
    return values


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    tokens_per_request: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def tokens_per_s(self) -> float:
        return self.requests * self.tokens_per_request / self.duration_s

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return float("inf")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def infer_body(prompt: list[int], max_tokens: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "input_ids", "shape": [1, len(prompt)], "datatype": "INT32", "data": prompt},
                {"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [max_tokens]},
            ]
        }
    ).encode()


def _connect(url: str, timeout: float) -> http.client.HTTPConnection:
    parsed = urlparse(url)
    return http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=timeout)


def infer(url: str, model: str, prompt: list[int], max_tokens: int, timeout: float = 120) -> list[int]:
    """One request; returns the generated token ids."""
    conn = _connect(url, timeout)
    try:
        conn.request(
            "POST",
            f"/v2/models/{model}/infer",
            infer_body(prompt, max_tokens),
            {"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"infer failed ({resp.status}): {payload}")
        return [int(x) for x in payload["outputs"][0]["data"]]
    finally:
        conn.close()


def run_load(
    url: str,
    model: str,
    *,
    concurrency: int,
    duration_s: float,
    prompt_tokens: int,
    max_tokens: int,
    vocab: int,
    seed: int = 0,
    timeout: float = 120,
) -> LoadResult:
    """`concurrency` clients, each sending its next request when the last returns, for `duration_s`."""
    result = LoadResult(concurrency=concurrency, duration_s=duration_s, tokens_per_request=max_tokens)
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def client(worker: int) -> None:
        rng = random.Random(seed * 10_000 + worker)
        conn = _connect(url, timeout)
        try:
            while time.monotonic() < deadline:
                body = infer_body([rng.randrange(1, vocab) for _ in range(prompt_tokens)], max_tokens)
                start = time.monotonic()
                try:
                    conn.request(
                        "POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"}
                    )
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = _connect(url, timeout)
                elapsed = time.monotonic() - start
                with lock:
                    # Requests finishing after the window still count: their latency is real.
                    if ok:
                        result.latencies_s.append(elapsed)
                    else:
                        result.errors += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + timeout)
    result.duration_s = max(duration_s, time.monotonic() - (deadline - duration_s))
    return result


@dataclass
class Reply:
    status: int
    served_by: str | None
    retry_after: str | None
    seconds: float


def gateway_request(
    url: str, model: str, key: str, prompt: list[int], max_tokens: int, priority: str | None = None
) -> Reply:
    """One request through the admission gateway with a tenant's API key; what it answered."""
    conn = _connect(url, 120)
    headers = {"Content-Type": "application/json", "X-Api-Key": key}
    if priority:
        headers["X-Priority"] = priority
    start = time.monotonic()
    try:
        conn.request("POST", f"/v2/models/{model}/infer", infer_body(prompt, max_tokens), headers)
        resp = conn.getresponse()
        resp.read()
        return Reply(
            resp.status,
            resp.getheader("X-Served-By"),
            resp.getheader("Retry-After"),
            time.monotonic() - start,
        )
    finally:
        conn.close()

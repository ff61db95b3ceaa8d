"""Admission for real: Debian's HAProxy, configured by gpufleet.plan.admission, in front of the
real tritonserver serving the CPU test double as both the primary and the distilled fallback.

What this cannot see: vLLM's own queueing inside a replica (the double queues in Triton), and
many gateway replicas sharing limits (each HAProxy keeps its own stick table: per-replica limits
are the configured rate over the gateway replicas).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.inventory.load import load_inventory
from gpufleet.plan import plan_site
from gpufleet.plan.admission import (
    DEGRADED_RATE_QUERY,
    FALLBACK,
    METRICS_PATH,
    PRIMARY,
    SHED,
    SHED_RATE_QUERY,
    Backend,
    Tenant,
    plan_admission,
)
from gpufleet.plan.triton import double_model_config
from gpufleet.serving.gateway import Gateway, check_config, haproxy, write_config
from gpufleet.serving.loadgen import Reply, gateway_request
from gpufleet.serving.repository import TINY, write_repository
from gpufleet.serving.tritonserver import TritonServer, free_port, tritonserver

pytestmark = pytest.mark.integration

MODEL = "deepseek-r1"
KEYS = {
    "key-p0": Tenant(name="bank", priority="P0", requests_per_s=1000),
    "key-p1": Tenant(name="app", priority="P1", requests_per_s=1000),
    "key-p2": Tenant(name="batch", priority="P2", requests_per_s=1000),
    "key-small": Tenant(name="trial", priority="P2", requests_per_s=1),
}
PROMPT = list(range(1, 17))


def call(url: str, key: str, max_tokens: int, priority: str | None = None) -> Reply:
    return gateway_request(url, MODEL, key, PROMPT, max_tokens, priority)


def gauges(gw: Gateway, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(gw.metrics()):
        for s in family.samples:
            if s.name == name and "proxy" in s.labels:
                out[s.labels["proxy"]] = s.value
    return out


def wait_queue(gw: Gateway, backend: str, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while gauges(gw, "haproxy_backend_current_queue").get(backend, 0) < at_least:
        assert time.monotonic() < deadline, f"{backend} queue never reached {at_least}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    serving = plan_site(load_inventory("dc1")).serving
    assert serving is not None
    root = tmp_path_factory.mktemp("adm")
    config = double_model_config(serving, kind="KIND_CPU")
    write_repository(root / "repo", config, TINY)
    write_repository(root / "repo", config.model_copy(update={"name": "fallback"}), TINY)
    with tritonserver(root / "repo", root / "work") as server:
        yield server


def _gateway(triton: TritonServer, tmp: Path, primary_rps: float, fallback_rps: float, slots: int):  # type: ignore[no-untyped-def]
    addr = triton.url.removeprefix("http://")
    primary = Backend(name=PRIMARY, model=MODEL, servers=[addr], slots=slots, rate_rps=primary_rps)
    fallback = Backend(name=FALLBACK, model="fallback", servers=[addr], slots=slots, rate_rps=fallback_rps)
    plan = plan_admission(2.0, primary, fallback)
    port, metrics_port = free_port(), free_port()
    config = write_config(tmp / "gw", plan, primary, fallback, KEYS, port, metrics_port)
    checked = check_config(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return plan, haproxy(config, port, tmp / "gw", metrics_port=metrics_port)


def test_fallback_turns_on_and_off_at_the_planned_queue_and_p0_is_never_shed(
    triton: TritonServer, tmp_path: Path
) -> None:
    # 4 req/s at a 2 s SLO: P2 leaves the primary at a queue of 2, P1 at 4; the fallback sheds at 2.
    plan, gateway = _gateway(triton, tmp_path, primary_rps=4, fallback_rps=2, slots=1)
    assert plan.degrade_queue == {"P1": 4, "P2": 2} and plan.shed_queue == 2
    with gateway as gw:
        assert call(gw.url, "key-p2", 1).served_by == "primary"  # idle: everyone on the primary
        held: list[threading.Thread] = []
        replies: dict[str, Reply] = {}

        def hold(name: str, key: str, tokens: int) -> None:
            t = threading.Thread(target=lambda: replies.__setitem__(name, call(gw.url, key, tokens)))
            t.start()
            held.append(t)

        hold("busy", "key-p0", 400)  # in service
        hold("q1", "key-p0", 400)
        wait_queue(gw, PRIMARY, 1)
        hold("p2-below", "key-p2", 1)  # queue 1 < 2: still the primary
        wait_queue(gw, PRIMARY, 2)
        assert call(gw.url, "key-p2", 1).served_by == "fallback"  # queue 2: P2 degraded
        hold("p1-below", "key-p1", 1)  # 2 < 4: P1 stays
        wait_queue(gw, PRIMARY, 3)
        # A P1 key lowered to P2 by its own header is degraded like P2; a P2 key cannot climb.
        assert call(gw.url, "key-p1", 1, priority="P2").served_by == "fallback"
        assert call(gw.url, "key-p2", 1, priority="P0").served_by == "fallback"
        # Fill the fallback: one in service, two queued, then P2 is shed with Retry-After.
        for i in range(3):
            hold(f"fb{i}", "key-p2", 400)
        wait_queue(gw, FALLBACK, 2)
        shed = call(gw.url, "key-p2", 1)
        assert shed.status == 429 and shed.retry_after == str(plan.retry_after_s)
        p1 = call(gw.url, "key-p1", 1)  # P1 under its own threshold still goes to the primary
        # P0 is never shed: it queues on the primary and is served.
        p0 = call(gw.url, "key-p0", 1)
        assert p0.status == 200 and p0.served_by == "primary"
        assert p1.status == 200 and p1.served_by == "primary"
        for t in held:
            t.join(120)
        assert replies["p2-below"].served_by == "primary" and replies["p1-below"].served_by == "primary"
        statuses = {name: r.status for name, r in replies.items()}
        # Degraded requests wait in the fallback's queue at most the SLO, then get 503.
        assert all(v == 200 for k, v in statuses.items() if not k.startswith("fb")), statuses
        assert statuses["fb0"] == 200 and {statuses["fb1"], statuses["fb2"]} <= {200, 503}, statuses
        # Drained: fallback off again.
        assert call(gw.url, "key-p2", 1).served_by == "primary"
        totals = gauges(gw, "haproxy_backend_http_requests_total")
        assert totals[SHED] == 1 and totals[FALLBACK] == 6
        # The exporter has its own port: the API port does not show it to a caller without a key.
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(gw.url + METRICS_PATH, timeout=10)
        assert denied.value.code == 401
    # The burst controller's queries name these same counters.
    assert f'proxy="{SHED}"' in SHED_RATE_QUERY and f'proxy="{FALLBACK}"' in DEGRADED_RATE_QUERY


def test_token_buckets_hold_per_tenant_and_class(triton: TritonServer, tmp_path: Path) -> None:
    _, gateway = _gateway(triton, tmp_path, primary_rps=50, fallback_rps=50, slots=4)
    with gateway as gw:
        replies = [call(gw.url, "key-small", 1) for _ in range(25)]
        ok = [r for r in replies if r.status == 200]
        limited = [r for r in replies if r.status == 429]
        # 1 request/s over a 10 s window: ten pass, the rest wait for the window.
        assert len(ok) == 10 and len(limited) == 15
        assert all(r.retry_after == "10" for r in limited)
        assert call(gw.url, "key-p2", 1).status == 200  # another tenant's bucket is its own
        assert call(gw.url, "no-such-key", 1).status == 401


def test_under_overload_p0_keeps_its_latency_while_p2_is_degraded_then_shed(
    triton: TritonServer, tmp_path: Path
) -> None:
    plan, gateway = _gateway(triton, tmp_path, primary_rps=20, fallback_rps=10, slots=2)
    results: dict[str, list[Reply]] = {"P0": [], "P2": []}
    lock = threading.Lock()
    deadline = time.monotonic() + 12

    def client(cls: str, key: str) -> None:
        while time.monotonic() < deadline:
            r = call(gw.url, key, 8)
            with lock:
                results[cls].append(r)
            if r.status == 429:
                time.sleep(0.05)

    with gateway as gw:
        threads = [threading.Thread(target=client, args=("P0", "key-p0")) for _ in range(2)]
        threads += [threading.Thread(target=client, args=("P2", "key-p2")) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    p0, p2 = results["P0"], results["P2"]
    assert p0 and all(r.status == 200 and r.served_by == "primary" for r in p0)
    latencies = sorted(r.seconds for r in p0)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    assert p99 <= plan.slo_queue_wait_s, f"P0 p99 {p99:.2f}s"
    served_by = {r.served_by for r in p2 if r.status == 200}
    assert "fallback" in served_by
    assert sum(r.status == 429 for r in p2) > 0

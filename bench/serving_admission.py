"""Admission benchmark: P0 latency and goodput under 3x overload, with admission and fallback
against the same stack without them, in one run.

Both stacks are Debian's HAProxy in front of the same real tritonserver, which serves the CPU
test double as the primary model and as the distilled fallback. With admission: the
configuration gpufleet.plan.admission renders (priority classes, fallback, shedding). Without:
the same gateway, the same primary slots and queue timeout, every request to the primary in
arrival order (what a plain load balancer does).

First the primary's capacity is measured (closed loop at its slots, straight to Triton): that
rate is what the admission plan is given, as production gives it the capacity model's rate.
Then open-loop Poisson arrivals at 3x that capacity, 20% of them P0 and the rest P2, for the
same seconds on each stack. P0 goodput: P0 requests answered 200 within the SLO latency bound,
per second.

    .venv/bin/python bench/serving_admission.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpufleet.inventory.load import load_inventory
from gpufleet.plan import plan_site
from gpufleet.plan.admission import FALLBACK, PRIMARY, Backend, Tenant, plan_admission
from gpufleet.plan.triton import double_model_config
from gpufleet.serving.gateway import check_config, haproxy, write_config
from gpufleet.serving.loadgen import Reply, gateway_request, run_load
from gpufleet.serving.repository import TINY, write_repository
from gpufleet.serving.tritonserver import TritonServer, free_port, tritonserver

MODEL = "deepseek-r1"
PROMPT = list(range(1, 17))
TOKENS = 8
SLOTS = 2
FALLBACK_SLOTS = 1
FALLBACK_ARCH = TINY.model_copy(update={"num_hidden_layers": 1})
SLO_S = 1.0  # queue-wait SLO of this run; P0's latency bound is the SLO plus one service time
KEYS = {
    "key-p0": Tenant(name="bank", priority="P0", requests_per_s=10_000),
    "key-p2": Tenant(name="batch", priority="P2", requests_per_s=10_000),
}


def baseline_cfg(primary: Backend, port: int, queue_timeout_s: int) -> str:
    """The same gateway without admission: one backend, the same slots, arrival order."""
    return "\n".join(
        [
            "global",
            "  maxconn 4096",
            "defaults",
            "  mode http",
            "  timeout connect 5s",
            "  timeout client 600s",
            "  timeout server 600s",
            f"  timeout queue {queue_timeout_s}s",
            "frontend api",
            f"  bind 127.0.0.1:{port}",
            "  http-request use-service prometheus-exporter if { path /metrics }",
            f"  default_backend {PRIMARY}",
            f"backend {PRIMARY}",
            *(f"  server {PRIMARY}-{i} {a} maxconn {primary.slots}" for i, a in enumerate(primary.servers)),
            "",
        ]
    )


def offered(rate: float, seconds: float, p0_share: float, seed: int) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        out.append((t, "key-p0" if rng.random() < p0_share else "key-p2"))


def drive(url: str, arrivals: list[tuple[float, str]]) -> list[tuple[str, Reply]]:
    results: list[tuple[str, Reply]] = []
    lock = threading.Lock()
    start = time.monotonic()

    def one(at: float, key: str) -> None:
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            r = gateway_request(url, MODEL, key, PROMPT, TOKENS)
        except OSError:
            r = Reply(599, None, None, time.monotonic() - start - at)
        with lock:
            results.append((key, r))

    with ThreadPoolExecutor(max_workers=512) as pool:
        for at, key in arrivals:
            pool.submit(one, at, key)
    return results


def summarise(name: str, results: list[tuple[str, Reply]], seconds: float, bound: float) -> dict[str, Any]:
    p0 = [r for k, r in results if k == "key-p0"]
    p2 = [r for k, r in results if k == "key-p2"]
    ok0 = sorted(r.seconds for r in p0 if r.status == 200)
    p99 = ok0[min(len(ok0) - 1, int(0.99 * len(ok0)))] if len(ok0) == len(p0) and ok0 else float("inf")
    return {
        "stack": name,
        "p0_offered": len(p0),
        "p0_ok": len(ok0),
        "p0_p99_s": p99,
        "p0_goodput_rps": sum(1 for s in ok0 if s <= bound) / seconds,
        "p2_offered": len(p2),
        "p2_primary": sum(1 for r in p2 if r.status == 200 and r.served_by != "fallback"),
        "p2_fallback": sum(1 for r in p2 if r.status == 200 and r.served_by == "fallback"),
        "p2_shed_429": sum(1 for r in p2 if r.status == 429),
        "errors": sum(1 for _, r in results if r.status not in (200, 429)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--overload", type=float, default=3.0)
    parser.add_argument("--p0-share", type=float, default=0.2)
    args = parser.parse_args()
    serving = plan_site(load_inventory("dc1")).serving
    assert serving is not None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = double_model_config(serving, kind="KIND_CPU")
        write_repository(work / "repo", config, TINY)
        # The distilled fallback is the smaller model: one layer of the double's two.
        write_repository(work / "repo", config.model_copy(update={"name": "fallback"}), FALLBACK_ARCH)
        with tritonserver(work / "repo", work / "triton") as server:
            rows = run(server, work, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving_admission.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "serving_admission.md").write_text(table(rows, args))
    print(table(rows, args))


def run(server: TritonServer, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    capacity = run_load(
        server.url,
        MODEL,
        concurrency=SLOTS,
        duration_s=5,
        prompt_tokens=16,
        max_tokens=TOKENS,
        vocab=TINY.vocab_size,
    )
    fallback_capacity = run_load(
        server.url,
        "fallback",
        concurrency=FALLBACK_SLOTS,
        duration_s=5,
        prompt_tokens=16,
        max_tokens=TOKENS,
        vocab=TINY.vocab_size,
    )
    rate = capacity.requests_per_s
    service_p99 = capacity.percentile(0.99)
    addr = server.url.removeprefix("http://")
    primary = Backend(name=PRIMARY, model=MODEL, servers=[addr], slots=SLOTS, rate_rps=rate)
    fallback = Backend(
        name=FALLBACK,
        model="fallback",
        servers=[addr],
        slots=FALLBACK_SLOTS,
        rate_rps=fallback_capacity.requests_per_s,
    )
    plan = plan_admission(SLO_S, primary, fallback)
    bound = SLO_S + service_p99
    arrivals = offered(rate * args.overload, args.seconds, args.p0_share, seed=1)
    port, metrics_port = free_port(), free_port()
    admitted = write_config(work / "gw", plan, primary, fallback, KEYS, port, metrics_port)
    plain = work / "plain" / "haproxy.cfg"
    plain.parent.mkdir(parents=True)
    plain.write_text(baseline_cfg(primary, port, plan.p0_queue_timeout_s))
    results = []
    for name, cfg in (("without admission", plain), ("admission + fallback", admitted)):
        checked = check_config(cfg)
        assert checked.returncode == 0, checked.stderr
        with haproxy(cfg, port, cfg.parent, metrics_port=metrics_port if cfg == admitted else None) as gw:
            start = time.monotonic()
            replies = drive(gw.url, arrivals)
            elapsed = time.monotonic() - start
        results.append({**summarise(name, replies, args.seconds, bound), "wall_s": elapsed})
        time.sleep(2)  # the server drains between stacks
    return {
        "host": platform.node(),
        "capacity_rps": rate,
        "fallback_capacity_rps": fallback.rate_rps,
        "service_p99_s": service_p99,
        "slo_queue_wait_s": SLO_S,
        "p0_bound_s": bound,
        "offered_rps": rate * args.overload,
        "admission": plan.model_dump(),
        "stacks": results,
    }


def table(r: dict[str, Any], args: argparse.Namespace) -> str:
    base, adm = r["stacks"]
    ratio = adm["p0_goodput_rps"] / base["p0_goodput_rps"] if base["p0_goodput_rps"] else float("inf")
    lines = [
        "# Admission under overload: P0 with admission + fallback vs the same stack without",
        "",
        "Real HAProxy (Debian 2.6) in front of the real tritonserver serving the CPU test double as primary",
        "and fallback (a one-layer double: the smaller model). Capacity measured first: primary",
        f"{r['capacity_rps']:.1f} req/s at {SLOTS} slots (service p99 {r['service_p99_s']:.2f} s), fallback",
        f"{r['fallback_capacity_rps']:.1f} req/s at {FALLBACK_SLOTS}. Offered: {args.overload:.0f}x that ({r['offered_rps']:.1f} req/s,",
        f"Poisson, {args.p0_share:.0%} P0, the rest P2) for {args.seconds:.0f} s on each stack. Queue-wait SLO",
        f"{r['slo_queue_wait_s']:.1f} s; P0 latency bound {r['p0_bound_s']:.2f} s (SLO + service p99). Admission plan:",
        f"P2 to fallback at a primary queue of {r['admission']['degrade_queue']['P2']}, shed at a fallback queue of",
        f"{r['admission']['shed_queue']}.",
        "",
        "| stack | P0 offered | P0 200 | P0 p99 s | P0 goodput req/s | P2 primary | P2 fallback | P2 429 | other errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in (base, adm):
        lines.append(
            f"| {s['stack']} | {s['p0_offered']} | {s['p0_ok']} | {s['p0_p99_s']:.2f} | {s['p0_goodput_rps']:.2f} | "
            f"{s['p2_primary']} | {s['p2_fallback']} | {s['p2_shed_429']} | {s['errors']} |"
        )
    lines += [
        "",
        f"P0 goodput ratio (admission / without): **{ratio:.1f}x** (target >= 3x); P0 p99 with admission "
        f"{'inside' if adm['p0_p99_s'] <= r['p0_bound_s'] else 'OUTSIDE'} its bound.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

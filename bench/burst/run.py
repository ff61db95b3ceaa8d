"""Burst benchmark: every policy, through the production controller step, on both public traces.

    .venv/bin/python bench/burst/run.py          # writes bench/results/burst.md and burst_*.png

For each trace in ../shared/traces (falling back to /work/shared/traces) and each of 5 seeds, one
scenario per calendar mode (exact, factor-wrong, start-wrong, none) with a x3 surge of 20 minutes in
the middle of what follows the warm-start boot window, over HOURS hours (the trace replayed end to
end); and the same with a x1.5 surge (FEASIBLE: what dc1's 8 nodes and $400/h can hold, by the
exact bounds) for the exact calendar and none. The baselines read no calendar, so they run once per trace and seed; gpufleet runs once per
mode. Every run sees the same requests, classes, prices, Spot outages and interruption draws. The
exact bounds (gpufleet.sim.bounds, SciPy HiGHS) are solved once per trace and seed.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.report import RESULTS, met, write  # noqa: E402
from gpufleet.burst.cli import bound_summary  # noqa: E402
from gpufleet.burst.hardware import NOMINAL_CONTEXT  # noqa: E402
from gpufleet.burst.policy import CapacityModel, Policy  # noqa: E402
from gpufleet.inventory.load import load_inventory  # noqa: E402
from gpufleet.plan.aws import plan_fleet  # noqa: E402
from gpufleet.plan.site import plan_site  # noqa: E402
from gpufleet.sim import scenario as sc  # noqa: E402
from gpufleet.sim.baselines import POLICY_NAMES, make_policy  # noqa: E402
from gpufleet.sim.bounds import BOUND_NAMES  # noqa: E402
from gpufleet.sim.trace import Surge, cover, load_trace  # noqa: E402

SHARED = REPO.parent / "shared" / "traces"
TRACES_DIR = SHARED if SHARED.is_dir() else Path("/work/shared/traces")
TRACES = ("azure_llm_2023_code.csv", "mooncake_synthetic.jsonl")
SEEDS = (0, 1, 2, 3, 4)
HOURS = 2.0
MODES = sc.ANNOUNCE_MODES
BASELINES = tuple(p for p in POLICY_NAMES if p != "gpufleet")
SITE = "dc1"
SURGE = 3.0
# A surge dc1's burst bound holds: both exact bounds meet every minute's need at it (x2 leaves
# Azure's minutes unmet). Its runs go by the prefix FEASIBLE.
FEASIBLE_SURGE = 1.5
FEASIBLE = f"x{FEASIBLE_SURGE:g}"
FEASIBLE_MODES = ("exact", "none")


@dataclass(frozen=True)
class Job:
    trace: str
    seed: int


# The Spot boot issue 13 states its unannounced target at (the site's own budget is shorter).
ISSUE_BOOT_S = 900.0
SLOW_BOOT = "boot900"


def surge_for(horizon_s: float, boot_s: float, factor: float = SURGE) -> Surge:
    duration = 1200.0
    return Surge(factor, boot_s + (horizon_s - boot_s - duration) / 2, duration)


def policy_for(scenario: sc.Scenario, capacity: CapacityModel) -> Policy:
    return make_policy("gpufleet", capacity, peaks=scenario.peaks)


def run_job(job: Job) -> dict[str, Any]:
    """One trace and seed: the baselines once, gpufleet per mode, the two bounds."""
    started = time.process_time()
    inv = load_inventory(SITE)
    trace = load_trace(TRACES_DIR / job.trace)
    horizon = HOURS * 3600
    played = cover(trace, horizon)
    burst = plan_site(inv).burst
    assert burst is not None
    boot = float(burst.boot_to_serve_s)
    surge = surge_for(horizon, boot)
    out: dict[str, Any] = {"job": job, "runs": {}, "timelines": {}}

    def build(peak: Surge, mode: str, boot_budget_s: float | None = None) -> sc.Scenario:
        return sc.build_scenario(
            inv,
            f"inventories/{SITE}/nodes.yaml",
            played,
            [peak],
            horizon_s=horizon,
            announce=mode,
            boot_budget_s=boot_budget_s,
            seed=job.seed,
        )

    for mode in MODES:
        scenario = build(surge, mode)
        names = ["gpufleet", *BASELINES] if mode == "exact" else ["gpufleet"]
        for name in names:
            result = scenario.run(name)
            key = name if name != "gpufleet" else f"gpufleet/{mode}"
            out["runs"][key] = result.summary()
            if job.seed == 0 and mode in ("exact", "none"):
                out["timelines"][key] = result.timeline
        if mode == "none":
            # The levers measured: none switched, and degradation forced (as if its swap were free
            # to the policy's reckoning; the simulated swap still takes its measured time).
            off = replace(scenario.simulation(policy_for(scenario, scenario.capacity)), levers=False)
            out["runs"]["gpufleet/none, no levers"] = off.run().summary()
            forced = replace(scenario.capacity, distilled_swap_s=0.0)
            out["runs"]["gpufleet/none, degradation forced"] = (
                scenario.simulation(policy_for(scenario, forced)).run().summary()
            )
        if mode == "exact":
            for name in BOUND_NAMES:
                out["runs"][name] = bound_summary(scenario.bound(name))
            out["meta"] = {
                "weight": scenario.weight,
                "requests": len(scenario.arrivals),
                "replica_rps": scenario.replica_rps,
                "initial_nodes": scenario.initial_nodes,
                "onprem_tokens_s": scenario.onprem.nominal_tokens_s(NOMINAL_CONTEXT),
                "prefill_tokens_s": scenario.onprem.prefill_tokens_s,
                "surge": surge,
                "minute_load": scenario.minute_load,
                "outages": len(scenario.outages),
            }
    # The issue's unannounced row as it states it: a 900 s Spot boot (no baked image or NVMe
    # weights), the surge after that boot window; gpufleet and static-peak, the row's two runs.
    slow = build(surge_for(horizon, ISSUE_BOOT_S), "none", ISSUE_BOOT_S)
    for name, key in (("gpufleet", "gpufleet/none"), ("static-peak", "static-peak")):
        out["runs"][f"{SLOW_BOOT} {key}"] = slow.run(name).summary()
    feasible = surge_for(horizon, boot, FEASIBLE_SURGE)
    for mode in FEASIBLE_MODES:
        scenario = build(feasible, mode)
        for name in ["gpufleet", *BASELINES] if mode == "exact" else ["gpufleet"]:
            key = name if name != "gpufleet" else f"gpufleet/{mode}"
            out["runs"][f"{FEASIBLE} {key}"] = scenario.run(name).summary()
        if mode == "exact":
            for name in BOUND_NAMES:
                out["runs"][f"{FEASIBLE} {name}"] = bound_summary(scenario.bound(name))
    out["cpu_s"] = time.process_time() - started
    return out


def plot(trace: str, done: dict[str, Any], path: Path, slo_s: float, cap: float) -> None:
    timelines, meta = done["timelines"], done["meta"]
    fig, (load_ax, wait_ax, spend_ax) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    minutes = list(range(len(meta["minute_load"])))
    load_ax.plot(minutes, meta["minute_load"], color="black", lw=2, label="offered load")
    for name, timeline in sorted(timelines.items()):
        load_ax.step(minutes, [m.ready_replicas for m in timeline], where="post", label=name)
        wait_ax.step(minutes, [max(m.p99_ttft_s, 1e-3) for m in timeline], where="post", label=name)
        spend_ax.step(minutes, [m.spend_usd_hour for m in timeline], where="post", label=name)
    load_ax.set_ylabel("on-prem replicas (load / serving)")
    load_ax.legend(ncol=4, fontsize=8)
    wait_ax.axhline(slo_s, color="red", ls="--", lw=1)
    wait_ax.set_yscale("log")
    wait_ax.set_ylabel("p99 time to first token per minute (s)")
    spend_ax.axhline(cap, color="red", ls="--", lw=1)
    spend_ax.set_ylabel("Spot spend ($/h)")
    spend_ax.set_xlabel("minute")
    s = meta["surge"]
    for ax in (load_ax, wait_ax, spend_ax):
        ax.axvspan(s.start_s / 60, s.end_s / 60, color="orange", alpha=0.1)
    fig.suptitle(f"{trace} (seed 0): x{s.factor:g} surge shaded")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    jobs = [Job(t, s) for t in TRACES for s in SEEDS]
    # BURST_BENCH_CACHE=FILE keeps the runs, to write the report again without running them.
    cache = Path(os.environ["BURST_BENCH_CACHE"]) if os.environ.get("BURST_BENCH_CACHE") else None
    if cache is not None and cache.exists():
        done, wall_s = pickle.loads(cache.read_bytes())
    else:
        started = time.monotonic()
        with ProcessPoolExecutor(max_workers=2) as pool:
            done = list(pool.map(run_job, jobs))
        wall_s = time.monotonic() - started
        if cache is not None:
            cache.write_bytes(pickle.dumps((done, wall_s)))
    by = {(d["job"].trace, d["job"].seed): d for d in done}
    inv = load_inventory(SITE)
    plan = plan_site(inv)
    assert plan.serving is not None and plan.burst is not None
    capacity = CapacityModel.from_plan(plan, plan_fleet(inv, SITE), plan.burst.spot_max_price_usd)
    serving = plan.serving
    slo_ttft = serving.slo_ttft_p99_s
    first = by[(TRACES[0], 0)]["meta"]
    lines = [
        "# Burst benchmark",
        "",
        "`.venv/bin/python bench/burst/run.py`. Every policy runs through the production burst controller's",
        "own step (`Controller.step`: Prometheus query -> production signal parsing -> policy -> ASG/stack",
        "actuation, and Spot warnings through `interrupt.handle` and `Controller.replacement`) against a",
        "simulated fleet behind the same boto3/Pulumi calls (`gpufleet/sim/engine.py`). No policy gets an",
        "input production would not have: the load signal is Triton's counters as Prometheus answers them.",
        "Every request is routed by the site's own gateway (`gpufleet.plan.admission.site_gateway`, the plan",
        "the on-prem stack renders into haproxy.cfg) with haproxy.cfg's rules in order: P0 to the on-prem",
        "model only, P1/P2 to the burst nodes' distilled model past the on-prem queue's thresholds, shed when",
        "that is full, failed past a queue timeout; the controller's one admission rule switches it while",
        "capacity boots (see the audit below).",
        "",
        f"Site {SITE}: {capacity.onprem_replicas} on-prem replicas of {serving.model} "
        f"({first['onprem_tokens_s']:,.0f} decode tokens/s each at batch 128 and 4k context, "
        f"{first['prefill_tokens_s']:,.0f} prefill tokens/s, from the measured roofline: "
        "`gpufleet/burst/hardware.py`, the same figures for both traces); burst nodes of the fleet plan "
        f"(<= {capacity.max_nodes} nodes, ${capacity.max_hourly_usd:g}/h cap, {capacity.boot_to_serve_s:.0f} s "
        "boot-to-serve). SLO per minute: p99 queue wait <= "
        f"{capacity.slo_queue_wait_s:g} s and p99 TTFT <= {slo_ttft:g} s; "
        "a P0 violation minute is one where P0 requests alone miss either.",
        "",
        f"Scenario (`gpufleet/sim/scenario.py`, documented there): {HOURS:g} h, the trace replayed end to end; "
        f"volume: tenants like the trace filling on-prem to {sc.BASE_UTILISATION:.0%} of nominal on average; "
        f"classes {', '.join(f'{k} {v:.0%}' for k, v in sc.CLASS_SHARES)}; warm start (on-prem serving, the "
        "group holding the nodes the base load's busiest minute needs); one x3 surge of 20 minutes in the "
        f"middle of what follows the first boot window, and apart the same with a x{FEASIBLE_SURGE:g} surge (what "
        "dc1's 8 nodes and $400/h can hold: both exact bounds meet every minute's need; exact calendar and "
        "none); tenant limits 3x each class's share of the ordinary traffic's busiest 10 s; calendar exact, factor wrong by 1/3 (under on even "
        "seeds, over on odd), start wrong by 10 minutes (late on even seeds, early on odd), or none; Spot "
        f"interruptions {sc.INTERRUPTIONS_PER_NODE_HOUR}/node-hour; Spot capacity outages "
        f"{sc.OUTAGES_PER_POOL_HOUR}/pool-hour of {sc.OUTAGE_S[0] / 60:.0f}-{sc.OUTAGE_S[1] / 60:.0f} min "
        "(a launch there fails, the group tries its next type); Spot prices: `gpufleet.sim.prices.random_walk`, "
        "each pool starting at 35-55% of on-demand and moving by a Gaussian 5% every 300 s, kept within 20-90%.",
        "",
    ]
    targets: list[str] = []
    for trace in TRACES:
        rows = [by[(trace, s)]["runs"] for s in SEEDS]
        meta = by[(trace, 0)]["meta"]
        lines += [
            f"## {trace}",
            "",
            f"{meta['requests']} simulated requests per run (each standing for {meta['weight']:.2f}), "
            f"controller --replica-rps {meta['replica_rps']:.1f}, {meta['initial_nodes']} burst node(s) at the "
            f"warm start, {meta['outages']} Spot capacity outages (seed 0). Means over {len(SEEDS)} seeds "
            f"(min-max); ratios per seed, then averaged. Plot: [burst_{Path(trace).stem}.png](burst_{Path(trace).stem}.png)",
            "",
            f"x{SURGE:g} surge:",
            "",
            *table(
                rows,
                [
                    *BASELINES,
                    *(f"gpufleet/{m}" for m in MODES),
                    "gpufleet/none, no levers",
                    "gpufleet/none, degradation forced",
                    *BOUND_NAMES,
                ],
                "",
            ),
            "",
            f"{FEASIBLE} surge, the same window (feasible: both bounds meet every minute's need):",
            "",
            *table(
                rows,
                [*BASELINES, *(f"gpufleet/{m}" for m in FEASIBLE_MODES), *BOUND_NAMES],
                f"{FEASIBLE} ",
            ),
        ]
        lines += [
            "",
            f"x{SURGE:g} surge, unannounced, at the issue's {ISSUE_BOOT_S:.0f} s Spot boot (the surge after that "
            "boot window; no bounds solved for it):",
            "",
            *table(rows, ["static-peak", "gpufleet/none"], f"{SLOW_BOOT} "),
        ]
        lines.append("")
        plot(
            trace,
            by[(trace, 0)],
            RESULTS / f"burst_{Path(trace).stem}.png",
            slo_ttft,
            capacity.max_hourly_usd,
        )
        targets += target_rows(trace, rows, capacity.boot_to_serve_s, "")
        targets += target_rows(trace, rows, capacity.boot_to_serve_s, f"{FEASIBLE} ")
    cpu = sum(d["cpu_s"] for d in done)
    lines += [
        "## Targets (issue 13), per trace over the 5 seeds",
        "",
        "| trace | scenario | target | measured (worst seed) | |",
        "|---|---|---|---|---|",
        *targets,
        "",
        "Bounds are exact optima of the capacity model's need per minute (MILP, SciPy HiGHS; "
        "`gpufleet/sim/bounds.py`): bound-clairvoyant knows every minute, bound-calendar each surge's "
        "window and worst minute. They are bounds on cost in the capacity model, not simulated runs: their "
        "SLO column is the share of minutes whose need their plan holds.",
        "",
        f"Run time: {wall_s / 60:.0f} minutes wall, {cpu:.0f} s of CPU in the simulations and bounds, two "
        "worker processes on the 2-core development machine shared with other work.",
        "",
        *AUDIT,
    ]
    write("burst.md", lines)


def table(rows: list[dict[str, Any]], names: list[str], prefix: str) -> list[str]:
    """One row per run name (means over the seeds, min-max), ratios to the same surge's bounds
    where they were solved."""
    lines = [
        "| policy | SLO ok % | served % | P0 viol. min | viol. min | p99 wait s | p99 TTFT s | GPU-h | $ | $ / bound-clairvoyant | $ / bound-calendar | cap viol. | actions | degraded % | shed % | failed % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        vals = [r[prefix + name] for r in rows]

        def span(key: str, fmt: str, vals: list[dict[str, Any]] = vals) -> str:
            xs = [v.get(key) for v in vals]
            if any(x is None for x in xs):
                return "-"
            lo, hi, avg = min(xs), max(xs), mean(xs)
            return (
                f"{avg:{fmt}}"
                if format(lo, fmt) == format(hi, fmt)
                else f"{avg:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"
            )

        def ratio(bound: str, vals: list[dict[str, Any]] = vals) -> str:
            if f"{prefix}{bound}" not in rows[0]:
                return "-"  # no bound solved for this surge
            return f"{mean(v['cost_usd'] / r[prefix + bound]['cost_usd'] for v, r in zip(vals, rows, strict=True)):.2f}"

        lines.append(
            f"| {name} | {span('slo_ok_minutes_pct', '.1f')} | {span('served_minutes_pct', '.1f')} | "
            f"{span('p0_violation_minutes', '.1f')} | "
            f"{span('slo_violation_minutes', '.1f')} | {span('p99_queue_wait_s', '.2f')} | {span('p99_ttft_s', '.2f')} | "
            f"{span('gpu_hours', '.1f')} | {span('cost_usd', '.2f')} | {ratio('bound-clairvoyant')} | {ratio('bound-calendar')} | "
            f"{sum(v['cap_violations'] for v in vals)} | {span('scale_actions', '.0f')} | "
            f"{span('degraded_requests_pct', '.1f')} | {span('shed_requests_pct', '.1f')} | "
            f"{span('failed_requests_pct', '.1f')} |"
        )
    return lines


AUDIT = [
    "## Audit: what could flatter gpufleet",
    "",
    "- Same inputs: every policy replays the same requests and classes, Spot prices, capacity outages "
    "and interruption draws (seeded per launch), from the same warm start and capacity model. The "
    "baselines read no calendar, so they run once per trace and seed.",
    "- The production step: every decision comes from `Controller.step`; a fault injected into it "
    "shows in the simulation (`tests/unit/test_sim_engine.py::test_a_fault_in_the_controllers_step_"
    "shows_in_the_simulation`). Spot warnings go through `interrupt.handle` and `Controller.replacement`.",
    "- The production gateway: every request is routed by the site's own gateway plan "
    "(`gpufleet.plan.admission.site_gateway`, what the on-prem stack renders into haproxy.cfg) with "
    "haproxy.cfg's rules in order (`tests/unit/test_sim_gateway.py` checks each rule per arrival and "
    "compares every threshold, timeout and maxconn with dc1's rendered haproxy.cfg): P0 only to the "
    "on-prem model; P1/P2 to the burst nodes' distilled model only once the on-prem queue reaches "
    "their threshold (dc1: 134 and 67 requests), shed when that fallback's queue per server reaches "
    "its bound (1) or it has no server; a request left in HAProxy's queue past `timeout queue` (20 s "
    "on the primary, 2 s on the fallback) fails and is scored with that wait and no first token "
    "(failed %). So burst capacity serves only what the gateway degrades to it, which is what "
    "production runs. The fallback has one `server-template` per GPU class of the fleet and one for "
    "the degraded on-prem replicas (HAProxy's servers over each class's SRV records), each server "
    "taking its class's engine sequences (dc1: H200 256, H100 112, A100 56, L40S 20), full at "
    "`shed_queue` queued per serving server (the slowest class's bound), as the gateway renders it.",
    "- One admission rule: the controller's own (`tighten_admission`, P2 shed and P1 over half its "
    "limit while capacity it ordered boots and the on-prem queue wait or TTFT p99 is past a quarter of its "
    "SLO) switches the simulated gateway through the same "
    "`set_booting` call production's GatewayAdmission answers; the policy has no admission lever. "
    "Every policy runs behind the same gateway, so every policy sheds: the baselines too.",
    "- Tenant limits: one tenant per class, each at 3x (the largest surge sold) its class's share of "
    "the ordinary traffic's busiest 10 s (`gpufleet/sim/scenario.py`); over them, 429 (in shed %). "
    "HAProxy counts refused requests in the rate, as the simulator does.",
    "- No privileged input: the controller reads Prometheus answers built from Triton's counters, "
    "the gateway's shed and fallback counters, and the group's API. `--replica-rps` is set from the "
    "ordinary traffic's mean request, as an operator sets it from history; only gpufleet reads load "
    "through it. Triton's series are the on-prem model's replicas only, as production's `model=` "
    "label selects them (the distilled replicas' requests reach the controller through the "
    "gateway's fallback rate, once; until 1 December 2026 the simulator counted them twice). "
    "Triton's queue duration includes HAProxy's queue wait here (production's Triton "
    "sees only its own part); the pending count is only what passed `maxconn`, as production's.",
    "- keda-queue as a KEDA user runs it: the Prometheus scaler on the gateway's queue, "
    '`sum(haproxy_backend_current_queue{proxy="primary"})` (the queue is in HAProxy past `maxconn`; '
    "Triton's pending count, which it read before, stays near 0 behind it), an AverageValue target "
    "of the primary's lowest degrade threshold over the on-prem replicas (an operator scales before "
    "the gateway sends requests away), HPA's algorithm: desired = ceil(queue / target) outside the "
    "10% tolerance, scale-up at once, 300 s scale-down stabilisation, 30 s polling.",
    "- What would flatter the SLO column: shedding. A shed request gets a 429 and is not scored "
    "in `SLO ok %`; `served %` counts a minute only if its admitted p99s hold and shed, over-limit "
    "and failed requests are at most 1% of what it was offered, and the targets are judged on "
    "`served %` (the audit found the first column rewarded whoever sheds most). P0 is never shed (only a "
    "tenant over its limit is), so the P0 violation minutes are not flattered; P0 requests that "
    "time out in the queue count against them.",
    "- The exact calendar tells gpufleet the surge's window and factor: that is the scenario. "
    "static-peak is told the worst minute's load (a handicap for gpufleet, not a help).",
    "- The bounds are in the capacity model (the need is load over 0.85 utilisation, served by nodes at "
    "their capacity-model size, as if every burst replica took any request), not simulated: they say "
    "what capacity costs, not that it meets the SLO behind the gateway. HiGHS solves them to its "
    "default relative gap (1e-4); where minutes are unmet, the unmet-need penalty dominates the "
    "objective and the dollar part is exact only to that gap of the whole objective.",
    "- What holds every policy back alike: one simulated request stands for up to six identical ones "
    "(its TTFT is the middle one's), and TTFT is scored against one flat 5 s SLO, which Mooncake's "
    "prompts of up to 191k tokens cannot meet on a burst replica of the 70B (8.7 s of prefill alone "
    "on 4 H100).",
    "",
]


def target_rows(trace: str, rows: list[dict[str, Any]], boot_s: float, prefix: str) -> list[str]:
    out = []
    factor = FEASIBLE_SURGE if prefix else SURGE
    modes = FEASIBLE_MODES if prefix else MODES

    def row(scenario: str, target: str, measured: str, ok: bool) -> None:
        out.append(f"| {trace} | x{factor:g}: {scenario} | {target} | {measured} | {met(ok)} |")

    def run(r: dict[str, Any], name: str) -> dict[str, Any]:
        return dict(r[prefix + name])

    slo = [run(r, "gpufleet/exact")["served_minutes_pct"] for r in rows]
    cost = [run(r, "gpufleet/exact")["cost_usd"] / run(r, "bound-calendar")["cost_usd"] for r in rows]
    row(
        "announced, exact",
        ">= 99% served SLO-minutes at <= 1.15x bound-calendar",
        f"{min(slo):.1f}% at {max(cost):.2f}x",
        min(slo) >= 99 and max(cost) <= 1.15,
    )
    for mode in ("factor-wrong", "start-wrong"):
        if mode not in modes:
            continue
        slo = [run(r, f"gpufleet/{mode}")["served_minutes_pct"] for r in rows]
        cost = [run(r, f"gpufleet/{mode}")["cost_usd"] / run(r, "gpufleet/exact")["cost_usd"] for r in rows]
        row(
            f"announced, {mode}",
            ">= 95% served SLO-minutes at <= 1.5x the exact-calendar cost",
            f"{min(slo):.1f}% at {max(cost):.2f}x",
            min(slo) >= 95 and max(cost) <= 1.5,
        )
    p0 = [run(r, "gpufleet/none")["p0_violation_minutes"] for r in rows]
    cost = [run(r, "gpufleet/none")["cost_usd"] / run(r, "static-peak")["cost_usd"] for r in rows]
    row(
        # The issue states this target at a 900 s Spot boot; the site's budget of parts (the baked
        # image and the weights on NVMe) gives dc1 a shorter one, and that is what ran.
        f"unannounced for 20 min, {boot_s:.0f} s boot (the issue's: x3, 900 s)",
        "<= 2 P0 violation minutes per surge, cost <= 0.7x static-peak",
        f"{max(p0)} P0 min at {max(cost):.2f}x",
        max(p0) <= 2 and max(cost) <= 0.7,
    )
    if not prefix:
        p0 = [r[f"{SLOW_BOOT} gpufleet/none"]["p0_violation_minutes"] for r in rows]
        cost = [
            r[f"{SLOW_BOOT} gpufleet/none"]["cost_usd"] / r[f"{SLOW_BOOT} static-peak"]["cost_usd"]
            for r in rows
        ]
        row(
            f"unannounced for 20 min, {ISSUE_BOOT_S:.0f} s boot (the issue's row as stated)",
            "<= 2 P0 violation minutes per surge, cost <= 0.7x static-peak",
            f"{max(p0)} P0 min at {max(cost):.2f}x",
            max(p0) <= 2 and max(cost) <= 0.7,
        )
    for mode in modes:
        g = [run(r, f"gpufleet/{mode}") for r in rows]
        h = [run(r, "hpa-gpu70") for r in rows]
        fewer = all(
            x["p0_violation_minutes"] * 5 <= y["p0_violation_minutes"] or x["p0_violation_minutes"] == 0
            for x, y in zip(g, h, strict=True)
        )
        cheaper = all(
            x["cost_usd"] <= y["cost_usd"] for x, y in zip(g, h, strict=True) if y["served_minutes_pct"] >= 95
        )
        row(
            f"{mode}: vs hpa-gpu70",
            ">= 5x fewer P0 violation minutes; no more cost where HPA keeps >= 95%",
            f"P0 min gpufleet {max(x['p0_violation_minutes'] for x in g)} vs HPA {min(y['p0_violation_minutes'] for y in h)}-"
            f"{max(y['p0_violation_minutes'] for y in h)}; cost / HPA {max(x['cost_usd'] / y['cost_usd'] for x, y in zip(g, h, strict=True)):.2f}x",
            fewer and cheaper,
        )
    caps = sum(v["cap_violations"] for r in rows for k, v in r.items() if k.startswith(prefix) or not prefix)
    row("every scenario", "0 cap violations", str(caps), caps == 0)
    return out


if __name__ == "__main__":
    main()

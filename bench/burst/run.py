"""Burst benchmark: replay real LLM traces with surges through every policy, side by side.

    .venv/bin/python bench/burst/run.py            # writes bench/results/burst.md and burst_*.png

Each scenario replays one trace (bench/burst/data, see its NOTICE) on the dc1 site's capacity
model with a x3 surge of 20 minutes in the middle, Spot interruptions at 0.05 per node-hour
with the two-minute notice, and a Spot price random walk per pool; every policy sees the same
requests, prices and interruption draws. "announced" scenarios tell gpufleet's policy the surge
window and factor ahead (a promotion on the calendar); "unannounced" ones do not. Costs are
compared with two exact bounds (gpufleet.sim.bounds): bound-clairvoyant knows every minute's load
ahead, bound-calendar each surge's window and worst minute.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.report import RESULTS, write  # noqa: E402
from gpufleet.burst.policy import POLICY_NAMES, PeakHold  # noqa: E402
from gpufleet.inventory.load import load_inventory  # noqa: E402
from gpufleet.sim.bounds import BOUND_NAMES  # noqa: E402
from gpufleet.sim.engine import Result  # noqa: E402
from gpufleet.sim.scenario import Scenario, build_scenario  # noqa: E402
from gpufleet.sim.trace import Surge, default_surge, load_trace, repeat  # noqa: E402

DATA = REPO / "bench" / "burst" / "data"
SEEDS = (0, 1, 2, 3, 4)
INTERRUPTIONS_PER_NODE_HOUR = 0.05


@dataclass(frozen=True)
class Case:
    name: str
    trace: str
    times: int
    announce: bool


CASES = (
    Case("azure-code-announced", "azure_llm_2023_code.csv", 1, True),
    Case("azure-code-unannounced", "azure_llm_2023_code.csv", 1, False),
    # The Mooncake trace spans 17 minutes, shorter than one Spot boot: played four times back to back.
    Case("mooncake-x4-announced", "mooncake_synthetic.jsonl", 4, True),
    Case("mooncake-x4-unannounced", "mooncake_synthetic.jsonl", 4, False),
)


@cache  # calibrating a scenario replays its trace a dozen times: build each once
def scenario(case: Case, seed: int) -> tuple[Scenario, Surge]:
    trace = repeat(load_trace(DATA / case.trace), case.times)
    surge = default_surge(trace)
    return build_scenario(
        load_inventory("dc1"),
        "inventories/dc1/nodes.yaml",
        trace,
        [surge],
        announce=case.announce,
        interruptions_per_node_hour=INTERRUPTIONS_PER_NODE_HOUR,
        seed=seed,
    ), surge


def plot(case: Case, sc: Scenario, surge: Surge, results: list[Result], path: Path) -> None:
    fig, (load_ax, wait_ax, spend_ax) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    minutes = [m.minute for m in results[0].timeline]
    load_ax.plot(
        minutes, [m.load_replicas for m in results[0].timeline], color="black", lw=2, label="offered load"
    )
    for r in results:
        load_ax.step(minutes, [m.ready_replicas for m in r.timeline], where="post", label=r.policy)
        wait_ax.step(
            minutes, [max(m.p99_queue_wait_s, 1e-3) for m in r.timeline], where="post", label=r.policy
        )
        spend_ax.step(minutes, [m.spend_usd_hour for m in r.timeline], where="post", label=r.policy)
    load_ax.set_ylabel("replicas (load / serving)")
    load_ax.legend(ncol=4, fontsize=8)
    wait_ax.axhline(sc.capacity.slo_queue_wait_s, color="red", ls="--", lw=1, label="SLO")
    wait_ax.set_yscale("log")
    wait_ax.set_ylabel("p99 queue wait per minute (s)")
    spend_ax.axhline(sc.capacity.max_hourly_usd, color="red", ls="--", lw=1, label="cap")
    spend_ax.set_ylabel("Spot spend ($/h)")
    spend_ax.set_xlabel("minute")
    for ax in (load_ax, wait_ax, spend_ax):
        ax.axvspan(surge.start_s / 60, surge.end_s / 60, color="orange", alpha=0.1)
    told = "announced to gpufleet" if sc.peaks else "not announced"
    fig.suptitle(f"{case.name} (seed 0): x{surge.factor:g} surge shaded, {told}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    first, _ = scenario(CASES[0], 0)
    cap, fleet = first.capacity, first.fleet
    serving = load_inventory("dc1").site.serving
    site_model = serving.model if serving else "-"
    lines = [
        "# Burst benchmark",
        "",
        "`.venv/bin/python bench/burst/run.py`: every policy replays the same trace, surge, Spot prices and",
        f"interruptions. Site dc1: {cap.onprem_replicas} on-prem replicas of {site_model}; burst nodes serve what the",
        f"deployed fleet plan says ({fleet.model}{' (fallback)' if fleet.fallback else ''} on",
        f"{', '.join(fleet.instance_types)}), at most {cap.max_nodes} nodes, ${cap.max_hourly_usd:g}/h cap,",
        f"{cap.boot_to_serve_s:.0f} s boot-to-serve; interruptions {INTERRUPTIONS_PER_NODE_HOUR}/node-hour with the 2-minute",
        "notice. What a burst node adds is the fleet plan's capacity for its type, in on-prem replicas (a",
        "memory-bandwidth roofline, `gpufleet.model.catalog.decode_rate`): "
        + ", ".join(f"{t} {c:.2f}" for t, c in sorted(fleet.capacity.items(), key=lambda kv: kv[1]))
        + ";",
        "the simulator serves each burst replica at that speed and every policy places nodes cheapest per replica",
        "of capacity. Cost and GPU-hours are the Spot burst's; on-prem is the same for all. SLO: p99 queue wait",
        "<= 2 s per minute.",
        "",
        "How to read it: *announced* scenarios give gpufleet's policy the surge's window and factor ahead (a",
        "promotion on the calendar), never its minute-by-minute load; the oracle knows every minute's load.",
        "In *unannounced* ones, capacity ordered at the first sign of the surge serves 900 s later, most of a",
        "20-minute surge: the reactive policies can only shorten the tail, and the table shows by how much.",
        "",
    ]
    targets = [
        "## Targets, per seed",
        "",
        "| scenario | seed | gpufleet SLO ok % | cost / bound-clairvoyant | cost / bound-calendar | HPA viol. min / gpufleet | cost / HPA | bound-clairvoyant / HPA cost | bound-calendar / bound-clairvoyant | oracle / bound-clairvoyant | static-peak / bound-clairvoyant | cap violations (all) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        for seed in SEEDS:
            sc, surge = scenario(case, seed)
            results = [sc.run(name) for name in (*POLICY_NAMES, PeakHold.name)]
            by = {r.policy: r for r in results}
            g, o, h = by["gpufleet"], by["oracle"], by["hpa-gpu70"]
            exact = {name: sc.bound(name) for name in BOUND_NAMES}
            bc, bk = exact["bound-clairvoyant"], exact["bound-calendar"]
            bounds = (
                f"{bk.cost_usd / bc.cost_usd:.2f} | {o.cost_usd / bc.cost_usd:.2f} | "
                f"{by['static-peak'].cost_usd / bc.cost_usd:.2f}"
            )
            ratio = (
                "inf"
                if g.slo_violation_minutes == 0 and h.slo_violation_minutes
                else (
                    f"{h.slo_violation_minutes / g.slo_violation_minutes:.1f}"
                    if g.slo_violation_minutes
                    else "-"
                )
            )
            targets.append(
                f"| {case.name} | {seed} | {g.slo_ok_minutes_pct:.1f} | {g.cost_usd / bc.cost_usd:.2f} | "
                f"{g.cost_usd / bk.cost_usd:.2f} | {ratio} | "
                f"{g.cost_usd / h.cost_usd:.2f} | {bc.cost_usd / h.cost_usd:.2f} | {bounds} | "
                f"{sum(r.cap_violations for r in results)} |"
            )
            if seed != 0:
                continue
            lines += [
                f"## {case.name}",
                "",
                f"{len(sc.trace.requests)} requests over {sc.horizon_s / 60:.0f} min; replica {sc.service.tokens_per_s:,.0f} "
                f"tokens/s (calibrated: on-prem alone meets the SLO on the trace without surge, +10%); planning "
                f"utilisation {sc.capacity.target_utilisation:.2f}. Plot: [burst_{case.name}.png](burst_{case.name}.png)",
                "",
                "| policy | SLO ok % | violation min | p99 wait s | GPU-h | $ | cap violations | scale actions |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in results:
                lines.append(
                    f"| {r.policy} | {r.slo_ok_minutes_pct:.1f} | {r.slo_violation_minutes} | {r.p99_queue_wait_s:.2f} | "
                    f"{r.gpu_hours:.1f} | {r.cost_usd:.2f} | {r.cap_violations} | {r.scale_actions} |"
                )
            for b in exact.values():
                unmet = f" ({b.unmet_minutes} min beyond the cap)" if b.unmet_minutes else ""
                lines.append(
                    f"| {b.name}{unmet} | - | - | - | {b.gpu_hours:.1f} | {b.cost_usd:.2f} | 0 | - |"
                )
            lines.append("")
            plot(
                case,
                sc,
                surge,
                [r for r in results if r.policy in POLICY_NAMES],
                RESULTS / f"burst_{case.name}.png",
            )
            print(f"{case.name}: done", file=sys.stderr)
    lines += [
        *targets,
        "",
        "Issue 13's announced target: >= 99% of minutes inside the SLO at <= 1.15x bound-calendar; and >= 5x fewer",
        "violation minutes than hpa-gpu70 at no higher cost where HPA keeps >= 95% of minutes in the SLO; 0 cap violations.",
        "",
        "The two bounds are exact optima (`gpufleet/sim/bounds.py`, a MILP solved by SciPy's HiGHS, checked against",
        "enumeration in tests/unit/test_sim_bounds.py): the cheapest fleet, pool by pool and minute by minute, that",
        "holds the capacity model's need (`CapacityModel.missing`) in every minute under the same boot-to-serve time,",
        "node bound, $/hour cap reservations and Spot prices, from a warm start, without interruptions.",
        "",
        "- *bound-clairvoyant* knows every minute's load. Where bound-clairvoyant / HPA > 1, HPA saves money by",
        "  missing the SLO: no policy that holds the capacity model's need can cost less.",
        "- *bound-calendar* knows each surge's window and its worst minute's load, but not which minute that is:",
        "  it holds the worst minute's need through the window (elsewhere it is clairvoyant). bound-calendar /",
        "  bound-clairvoyant is the price of not knowing the minutes, which no calendar-only policy can save.",
        "- *oracle* and *peak-hold* (the simulated greedy policies of issue 5) are kept as policies: oracle /",
        "  bound-clairvoyant shows how far the old reference was from the optimum.",
        "- *static-peak* holds the worst minute's capacity all the time. Without notice, a surge's first",
        f"  {cap.boot_to_serve_s / 60:.0f} minutes are served only by capacity already running, so meeting the SLO through an",
        "  unannounced surge costs about static-peak / bound-clairvoyant.",
        "",
        "What the bounds leave out, and what still flatters or handicaps the figures: the capacity model's need",
        "per minute is the load over the planning utilisation, and that utilisation and each replica's tokens/s",
        "are still fitted to each trace (issue 13's capacity from hardware is not done); the simulator still gives",
        "the policies each arrival's work as their load signal, not Triton's counters.",
        "",
    ]
    lines += boot_sensitivity(cap.boot_to_serve_s)
    write("burst.md", lines)


def boot_sensitivity(site_boot_s: float) -> list[str]:
    """The same scenarios with a shorter boot-to-serve: what faster capacity would buy."""
    out = [
        "## What a shorter boot-to-serve buys",
        "",
        f"The site model's {site_boot_s:.0f} s is instance boot, cluster join, image pull and model load. The same",
        "runs with less (ranges over the 5 seeds; a pre-pulled image and weights on local NVMe are what",
        "shorten it):",
        "",
        "| scenario | boot-to-serve s | gpufleet SLO ok % | hpa-gpu70 violation min | gpufleet cost / HPA |",
        "|---|---:|---:|---:|---:|",
    ]

    def span(values: list[float], fmt: str) -> str:
        low, high = min(values), max(values)
        return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{low:{fmt}}-{high:{fmt}}"

    for case in CASES:
        for boot in (300.0, 600.0):
            rows = []
            for seed in SEEDS:
                sc, _ = scenario(case, seed)
                sc = replace(sc, capacity=replace(sc.capacity, boot_to_serve_s=boot))
                runs = {name: sc.run(name) for name in ("gpufleet", "hpa-gpu70")}
                rows.append((runs["gpufleet"], runs["hpa-gpu70"]))
            g = [r[0] for r in rows]
            h = [r[1] for r in rows]
            out.append(
                f"| {case.name} | {boot:.0f} | {span([x.slo_ok_minutes_pct for x in g], '.1f')} | "
                f"{span([float(x.slo_violation_minutes) for x in h], '.0f')} | "
                f"{span([x.cost_usd / y.cost_usd for x, y in zip(g, h, strict=True)], '.2f')} |"
            )
        print(f"{case.name}: boot sensitivity done", file=sys.stderr)
    return [
        *out,
        "",
        "The exact bounds are not computed for these shorter boots: at 300 s HiGHS did not solve the MILP",
        "within minutes (not investigated yet). Without notice, the minutes out of the SLO are the boot time plus the time the",
        "queue built meanwhile takes to drain; HPA's zero comes from capacity it keeps running ahead of",
        "any surge, at 2.5-4 times gpufleet's cost.",
        "",
    ]


if __name__ == "__main__":
    main()

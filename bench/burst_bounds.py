"""How long HiGHS takes to prove the exact burst bounds, per trace, seed and boot-to-serve time.

    .venv/bin/python bench/burst_bounds.py          # writes bench/results/burst_bounds.md

The same scenarios as bench/burst (dc1's capacity model, a x3 surge of 20 minutes in the middle
of each trace, a Spot price walk per pool and seed), each bound solved by the production code
(`gpufleet.sim.bounds.cheapest_fleet`) under its default time limit. A bound HiGHS could not
prove shows its status and MIP gap, never a cost passed off as the optimum.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import write  # noqa: E402
from gpufleet.inventory.load import load_inventory  # noqa: E402
from gpufleet.sim.bounds import BOUND_NAMES, TIME_LIMIT_S  # noqa: E402
from gpufleet.sim.scenario import build_scenario  # noqa: E402
from gpufleet.sim.trace import Surge, horizon, load_trace, repeat  # noqa: E402

DATA = REPO / "bench" / "burst" / "data"
TRACES = (("azure-code", "azure_llm_2023_code.csv", 1), ("mooncake-x4", "mooncake_synthetic.jsonl", 4))
SEEDS = (0, 1, 2)
BOOTS_S = (300.0, 600.0, 900.0)


def main() -> None:
    lines = [
        "# Exact burst bounds: time to prove them",
        "",
        "`.venv/bin/python bench/burst_bounds.py`: each bound of each scenario solved by",
        f"`gpufleet.sim.bounds.cheapest_fleet` (SciPy {_scipy()} HiGHS, time limit {TIME_LIMIT_S:.0f} s), on the",
        "project's shared 2-CPU VM (other jobs running: times are an upper bound of an idle machine's).",
        "",
        "| trace | seed | boot-to-serve s | bound | status | MIP gap | cost $ | solve s |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    slowest = 0.0
    for label, name, times in TRACES:
        trace = repeat(load_trace(DATA / name), times)
        span = horizon(trace, None)
        # x3 for 20 minutes (or half what follows the longest boot), after the longest boot.
        duration = min(1200.0, (span - max(BOOTS_S)) / 2)
        surge = Surge(3.0, max(BOOTS_S) + (span - max(BOOTS_S) - duration) / 2, duration)
        for seed in SEEDS:
            scenario = build_scenario(
                load_inventory("dc1"),
                "inventories/dc1/nodes.yaml",
                trace,
                [surge],
                horizon_s=span,
                seed=seed,
            )
            for boot in BOOTS_S:
                sc = replace(scenario, capacity=replace(scenario.capacity, boot_to_serve_s=boot))
                for bound in BOUND_NAMES:
                    start = time.perf_counter()
                    result = sc.bound(bound)
                    took = time.perf_counter() - start
                    slowest = max(slowest, took)
                    gap = "-" if result.mip_gap is None else f"{result.mip_gap:.2e}"
                    lines.append(
                        f"| {label} | {seed} | {boot:.0f} | {bound} | {result.status} | {gap} | "
                        f"{result.cost_usd:.2f} | {took:.1f} |"
                    )
                    print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"Slowest solve: {slowest:.1f} s.", ""]
    write("burst_bounds.md", lines)


def _scipy() -> str:
    import scipy

    return str(scipy.__version__)


if __name__ == "__main__":
    main()

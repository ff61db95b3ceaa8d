"""`gpufleet burst ...`: the burst controller's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpufleet.burst.policy import POLICY_NAMES
from gpufleet.inventory.load import REPO_ROOT, display, load_inventory, site_file
from gpufleet.model.errors import InputError, Problem
from gpufleet.sim.engine import Result
from gpufleet.sim.scenario import build_scenario
from gpufleet.sim.trace import Surge, apply_surges, default_surge, load_trace, parse_surge, repeat

burst_app = typer.Typer(
    help="AWS Spot burst capacity: simulate policies, run the controller.", no_args_is_help=True
)

DEFAULT_TRACE = REPO_ROOT / "bench" / "burst" / "data" / "azure_llm_2023_code.csv"


def _surges(values: list[str], default: Surge) -> list[Surge]:
    if not values:
        return [default]
    if values == ["none"]:
        return []
    surges = []
    for value in values:
        try:
            surges.append(parse_surge(value))
        except ValueError as exc:
            raise InputError("--surge", [Problem((), str(exc))]) from None
    return surges


def _policies(value: str) -> list[str]:
    if value == "all":
        return list(POLICY_NAMES)
    if value not in POLICY_NAMES:
        raise InputError(
            "--policy", [Problem((), f"unknown policy {value!r}; one of all, {', '.join(POLICY_NAMES)}")]
        )
    return [value]


@burst_app.command()
def simulate(
    trace: Annotated[
        Path,
        typer.Option("--trace", help="request trace: Azure CSV or Mooncake JSONL (see bench/burst/data)"),
    ] = DEFAULT_TRACE,
    surge: Annotated[
        list[str] | None,
        typer.Option(
            "--surge",
            help="FACTOR@START:DURATION, e.g. 3@20m:20m; repeatable; 'none' for none "
            "(default: x3 for 20 minutes in the middle of the trace)",
        ),
    ] = None,
    policy: Annotated[str, typer.Option("--policy", help=f"all or one of {', '.join(POLICY_NAMES)}")] = "all",
    site: Annotated[
        str, typer.Option("--site", help="site whose on-prem replicas and burst settings to model")
    ] = "dc1",
    announce: Annotated[
        bool,
        typer.Option(
            "--announce/--no-announce", help="tell gpufleet's policy the surges ahead (known peaks)"
        ),
    ] = True,
    interruptions: Annotated[
        float, typer.Option("--interruptions", min=0.0, help="Spot interruptions per node-hour")
    ] = 0.05,
    times: Annotated[
        int, typer.Option("--repeat", min=1, help="play the trace this many times back to back")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="seed for surge copies, prices and interruptions")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Replay a trace with surges through each policy and compare SLO minutes, cost and cap."""
    # Imported here: gpufleet.cli imports this module to register the sub-app.
    from gpufleet.cli import bad_input, emit_json, out

    with bad_input():
        names = _policies(policy)
        loaded = repeat(load_trace(trace), times)
        surges = _surges(surge or [], default_surge(loaded))
        inv = load_inventory(site)
        scenario = build_scenario(
            inv,
            display(site_file(site)),
            loaded,
            surges,
            announce=announce,
            interruptions_per_node_hour=interruptions,
            seed=seed,
        )
    results = [scenario.run(name) for name in names]
    if as_json:
        emit_json([r.summary() for r in results])
        return
    surged = apply_surges(loaded, surges, seed=seed)
    out.print(
        f"{trace.name}: {len(surged.requests)} requests over {scenario.horizon_s / 60:.0f} min; "
        f"surges {', '.join(f'x{s.factor:g} at {s.start_s / 60:.1f} min for {s.duration_s / 60:.1f} min' for s in surges) or 'none'}; "
        f"{scenario.capacity.onprem_replicas} on-prem replicas of {scenario.service.tokens_per_s:,.0f} tokens/s; "
        f"burst {scenario.burst.model}{' (fallback)' if scenario.burst.fallback else ''} on "
        f"{', '.join(scenario.burst.replicas_per_node)}, <= {scenario.capacity.max_nodes} nodes, "
        f"${scenario.capacity.max_hourly_usd:g}/h cap"
    )
    out.print(_table(results, scenario.capacity.slo_queue_wait_s))


def _table(results: list[Result], slo_s: float) -> Table:
    table = Table(title=f"SLO: p99 queue wait <= {slo_s:g} s per minute")
    for column in ("policy", "SLO ok %", "violation min", "p99 wait s", "GPU-h", "$", "cap viol.", "actions"):
        table.add_column(
            column, justify="left" if column == "policy" else "right", no_wrap=column == "policy"
        )
    for r in results:
        table.add_row(
            r.policy,
            f"{r.slo_ok_minutes_pct:.1f}",
            str(r.slo_violation_minutes),
            f"{r.p99_queue_wait_s:.2f}",
            f"{r.gpu_hours:.1f}",
            f"{r.cost_usd:.2f}",
            str(r.cap_violations),
            str(r.scale_actions),
        )
    return table

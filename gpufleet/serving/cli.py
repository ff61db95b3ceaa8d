"""`gpufleet serving ...`: roll the served model back."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.inventory.load import display, site_file
from gpufleet.inventory.stacks import load_stack
from gpufleet.serving.rollout import apply, canary_in_progress, plan_rollback, promote

serving_app = typer.Typer(help="The served model: roll back to the previous revision.", no_args_is_help=True)


@serving_app.command()
def rollback(
    stack: Annotated[str, typer.Argument(help="stack whose site's served revision to roll back")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would change, change nothing")] = False,
) -> None:
    """Pin the site's previous model revision (from the inventory's git history, still in the
    model cache); review it with `gpufleet plan STACK` and a pull request, apply with `pulumi up`."""
    # Imported here: gpufleet.cli imports this module to register the sub-app.
    from gpufleet.cli import bad_input, out

    with bad_input():
        path = site_file(load_stack(stack).config.site)
        plan = plan_rollback(path)
    out.print(f"{display(path)}: bom.model_revision: {plan.current} -> {plan.previous}", highlight=False)
    if not dry_run:
        apply(plan)
        out.print(f"next: gpufleet plan {stack} --base origin/main, then a pull request", highlight=False)


@serving_app.command("tenants")
def tenants_cmd(
    file: Annotated[Path, typer.Argument(help="the key issuer's tenants file (YAML)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for tenants.map and limits.map")],
) -> None:
    """Check the key issuer's tenants and write the gateway's two HAProxy maps (mode 0600), the
    content of the `gateway-tenants` Secret. Bad input: one line per problem, exit 2, nothing written."""
    from gpufleet.cli import bad_input, out
    from gpufleet.serving.tenants import load_tenants, write_maps

    with bad_input():
        keys = load_tenants(file)
    written = write_maps(keys, out_dir)
    classes = Counter(t.priority for t in keys.values())
    summary = ", ".join(f"{p} {classes[p]}" for p in sorted(classes))
    out.print(f"{len(keys)} keys ({summary}): {', '.join(display(p) for p in written)}", highlight=False)


@serving_app.command("promote")
def promote_cmd(
    stack: Annotated[str, typer.Argument(help="stack whose canary to promote")],
    triton_metrics: Annotated[
        str, typer.Option("--triton-metrics", help="the canary replica's Triton /metrics URL")
    ],
    window: Annotated[float, typer.Option("--window", help="seconds between the two scrapes", min=1)] = 600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="judge only, change nothing")] = False,
) -> None:
    """Judge the canary over a window of its own Triton counters; if it holds the SLO, move every
    replica to the pinned revision (drop `site.serving.canary_from`). Exit 1 if it does not."""
    from gpufleet.cli import bad_input, err, out
    from gpufleet.inventory.load import load_inventory
    from gpufleet.model.errors import InputError, Problem
    from gpufleet.plan.canary import judge_canary
    from gpufleet.plan.site import plan_site
    from gpufleet.serving.loadgen import scrape

    def read(model: str) -> dict[str, float]:
        try:
            with urllib.request.urlopen(triton_metrics, timeout=10) as resp:
                return scrape(resp.read().decode(), model)
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(
                "--triton-metrics", [Problem((), f"cannot read {triton_metrics}: {exc}")]
            ) from None

    with bad_input():
        path = site_file(load_stack(stack).config.site)
        serving = plan_site(load_inventory(str(path))).serving
        if serving is None or canary_in_progress(path) is None:
            raise InputError(
                display(path), [Problem(("site", "serving", "canary_from"), "no canary in progress")]
            )
        before = read(serving.model)
        time.sleep(window)
        after = read(serving.model)
    verdict = judge_canary(before, after, serving.slo_queue_wait_p99_s)
    if not verdict.holds:
        err.print(f"canary does not hold the SLO: {verdict.reason}", highlight=False)
        raise typer.Exit(1)
    out.print(f"canary holds the SLO: {verdict.reason}", highlight=False)
    if not dry_run:
        promote(path)
        out.print(
            f"{display(path)}: site.serving.canary_from removed; every replica on {serving.revision}",
            highlight=False,
        )

"""`gpufleet serving ...`: roll the served model back."""

from __future__ import annotations

from typing import Annotated

import typer

from gpufleet.inventory.load import display, site_file
from gpufleet.inventory.stacks import load_stack
from gpufleet.serving.rollout import apply, plan_rollback

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

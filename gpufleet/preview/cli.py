"""`gpufleet plan <stack> [--base REF] [--out DIR]`: the offline structural plan for reviews."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StackArg = Annotated[str, typer.Argument(help="stack name: stacks/Pulumi.<stack>.yaml")]
BaseOpt = Annotated[str | None, typer.Option("--base", help="git ref to compare with (e.g. origin/main)")]
OutOpt = Annotated[
    Path, typer.Option("--out", help="directory for preview.json, summary.md, manifests/, nodes/")
]


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(stack: StackArg, base: BaseOpt = None, out: OutOpt = Path("plan")) -> None:
        """Structural plan of a stack under mocks (no cloud access), against the stack at --base.

        Exit 1 when the policy pack reports a violation.
        """
        from gpufleet.cli import bad_input, err
        from gpufleet.preview.plan import structural_plan

        with bad_input():
            preview = structural_plan(stack, base, out)
        counts = preview["changeSummary"]
        err.print(
            f"{stack}: {counts['create']} to create, {counts['update']} to update, "
            f"{counts['replace']} to replace, {counts['delete']} to delete, "
            f"{counts['same']} unchanged (structural plan vs {base or 'an empty stack'}) -> {out}/",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        for v in preview["policyViolations"]:
            err.print(
                f"policy {v['policy']}: {v['urn']}: {v['message']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if preview["policyViolations"]:
            raise typer.Exit(1)

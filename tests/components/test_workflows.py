"""The PR workflows cover every stack and run the commands this repository has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.inventory.load import REPO_ROOT
from gpufleet.inventory.stacks import stack_names

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return data


def test_preview_workflow_covers_every_stack_both_ways() -> None:
    jobs = load("pulumi-preview.yml")["jobs"]
    for job in ("offline-plan", "preview"):
        assert jobs[job]["strategy"]["matrix"]["stack"] == sorted(
            stack_names(), key=["lab", "dc1-prod", "dc1-dr", "burst-prod"].index
        )
    # The real preview needs secrets: never on a fork. The offline plan runs on every pull request.
    assert "head.repo.full_name == github.repository" in jobs["preview"]["if"]
    assert "if" not in jobs["offline-plan"]
    action = next(s for s in jobs["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert action["with"]["command"] == "preview" and action["with"]["diff"] is True
    assert action["with"]["comment-on-pr"] is True and action["with"]["policyPacks"] == "policies"
    assert (REPO_ROOT / action["with"]["policyPacks"] / "PulumiPolicy.yaml").is_file()


def test_the_offline_plan_step_uses_the_real_cli_options() -> None:
    step = next(
        s
        for s in load("pulumi-preview.yml")["jobs"]["offline-plan"]["steps"]
        if s.get("name") == "gpufleet plan"
    )
    assert step["run"].startswith(".venv/bin/gpufleet plan ")
    help_text = CliRunner().invoke(app, ["plan", "--help"]).output
    for option in ("--base", "--out"):
        assert option in step["run"] and option in help_text


def test_the_comment_workflow_never_runs_pull_request_code() -> None:
    wf = load("pulumi-plan-comment.yml")
    assert wf[True]["workflow_run"]["workflows"] == [
        load("pulumi-preview.yml")["name"]
    ]  # `on:` loads as True
    steps = wf["jobs"]["comment"]["steps"]
    assert not [s for s in steps if str(s.get("uses", "")).startswith("actions/checkout")]
    assert not [s for s in steps if "run" in s]
    assert Path(WORKFLOWS / "pulumi-plan-comment.yml").read_text().count("summary.md") == 1

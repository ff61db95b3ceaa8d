"""User commands run on the runtime dependencies alone: nothing from the dev extra is imported."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.conftest import REPO

# Modules of every distribution in the dev extra, made unimportable in the child process.
BLOCKER = """
import runpy, sys
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (dev extra only)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["gpufleet", *sys.argv[2:]]
from gpufleet.cli import app
app()
"""


def dev_only_modules() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    dev = names(project["optional-dependencies"]["dev"]) - names(project["dependencies"])
    return {
        module
        for module, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in dev for d in dists) and not module.startswith("_")
    }


def test_pulumi_policy_is_a_runtime_dependency() -> None:
    assert "pulumi_policy" not in dev_only_modules()


@pytest.mark.parametrize("command", [["plan", "lab"], ["stacks"]])
def test_user_commands_run_without_the_dev_extra(command: list[str], tmp_path: Path) -> None:
    blocked = dev_only_modules()
    assert {"pytest", "moto", "kubernetes_validate"} <= blocked  # the block is real
    args = [*command, "--out", str(tmp_path / "plan")] if command[0] == "plan" else command
    run = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]

"""`gpufleet serving rollback STACK` on a real git history of the site's inventory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpufleet.inventory.load import REPO_ROOT, site_file

pytestmark = pytest.mark.integration

REVS = ["1111111aaaaaaa", "2222222bbbbbbb", "3333333ccccccc"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def _site(tmp_path: Path, revisions: list[str]) -> Path:
    repo = tmp_path / "site-repo"
    path = repo / "inventories" / "dc1" / "nodes.yaml"
    path.parent.mkdir(parents=True)
    _git(repo, "init", "-q")
    original = site_file("dc1").read_text()
    current = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
    for rev in revisions:
        path.write_text(original.replace(f"model_revision: {current}", f"model_revision: {rev}"))
        _git(repo, "add", ".")
        _git(repo, "commit", "-q", "-m", f"pin {rev}")
    return path


def _rollback(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUFLEET_INVENTORIES": str(path.parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "serving", "rollback", "dc1-prod", *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rollback_pins_the_previous_revision_as_a_one_line_change(tmp_path: Path) -> None:
    path = _site(tmp_path, REVS)
    before = path.read_text()
    dry = _rollback(path, "--dry-run")
    assert dry.returncode == 0 and f"{REVS[2]} -> {REVS[1]}" in dry.stdout
    assert path.read_text() == before
    done = _rollback(path)
    assert done.returncode == 0, done.stderr
    diff = subprocess.run(
        ["git", "-C", str(path.parent), "diff", "-U0"], capture_output=True, text=True, check=True
    ).stdout
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == [f"-  model_revision: {REVS[2]}", f"+  model_revision: {REVS[1]}"]


def test_a_single_revision_has_nothing_to_roll_back_to(tmp_path: Path) -> None:
    path = _site(tmp_path, REVS[:1])
    run = _rollback(path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"{path}: bom.model_revision: {REVS[0]} is the only revision in this file's history"
    ]

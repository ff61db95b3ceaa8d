"""`gpufleet serving rollback STACK` on a real git history of the site's inventory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


def _rollback(path: Path, *extra: str, stack: str = "dc1-prod") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUFLEET_INVENTORIES": str(path.parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "serving", "rollback", stack, *extra],
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


def test_a_site_without_a_pinned_model_says_it_serves_none(tmp_path: Path) -> None:
    repo = tmp_path / "site-repo"
    path = repo / "inventories" / "lab" / "nodes.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(site_file("lab").read_text())
    assert "model_revision:" not in path.read_text(), "the lab pins a model now: fix the test"
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "lab")
    run = _rollback(path, "--dry-run", stack="lab")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"{path}: bom.model_revision: no pinned model revision: the site serves no model to roll back"
    ]


def _with_canary(path: Path, old: str) -> None:
    text = path.read_text()
    path.write_text(text.replace("  replicas: 4\n", f"  replicas: 4\n    canary_from: {old}\n", 1))
    assert f"canary_from: {old}" in path.read_text(), "dc1's serving block moved: fix the test"
    _git(path.parents[2], "commit", "-qam", "canary")


def test_rollback_during_a_canary_puts_every_replica_back_on_the_stable_revision(tmp_path: Path) -> None:
    path = _site(tmp_path, REVS)
    _with_canary(path, REVS[1])
    done = _rollback(path)
    assert done.returncode == 0, done.stderr
    text = path.read_text()
    assert f"model_revision: {REVS[1]}" in text and "canary_from" not in text


def _promote(path: Path, metrics: str, window: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPUFLEET_INVENTORIES": str(path.parents[1])}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gpufleet.cli",
            "serving",
            "promote",
            "dc1-prod",
            "--triton-metrics",
            metrics,
            "--window",
            window,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promote_judges_the_canary_on_its_triton_metrics(tmp_path: Path) -> None:
    import threading

    from gpufleet.plan import plan_site
    from gpufleet.plan.triton import double_model_config
    from gpufleet.serving.loadgen import infer
    from gpufleet.serving.repository import TINY, write_repository
    from gpufleet.serving.tritonserver import tritonserver

    path = _site(tmp_path, REVS)
    _with_canary(path, REVS[1])
    from gpufleet.inventory.load import load_inventory

    serving = plan_site(load_inventory("dc1")).serving
    assert serving is not None
    config = double_model_config(serving, kind="KIND_CPU")
    write_repository(tmp_path / "repo", config, TINY)
    with tritonserver(tmp_path / "repo", tmp_path / "work") as server:
        # No traffic in the window: too little to judge, nothing changes.
        idle = _promote(path, server.metrics_url, "1")
        assert idle.returncode == 1 and "fewer than 20" in idle.stderr
        assert "canary_from" in path.read_text()
        stop = time.monotonic() + 6
        load = threading.Thread(
            target=lambda: [
                infer(server.url, config.name, [1, 2, 3], 2)
                for _ in iter(lambda: time.monotonic() < stop, False)
            ]
        )
        load.start()
        time.sleep(0.5)
        served = _promote(path, server.metrics_url, "4")
        load.join(30)
    assert served.returncode == 0, served.stdout + served.stderr
    assert "canary holds the SLO" in served.stdout
    assert "canary_from" not in path.read_text() and f"model_revision: {REVS[2]}" in path.read_text()

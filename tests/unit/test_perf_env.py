"""The perf probe's interpreter (gpufleet.plan.perf): the site's own, else a venv with the BOM's torch
from the site's Python index, else an explicit reason that the perf part fails on, one line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.inventory.load import load_inventory
from gpufleet.model.site import Inventory
from gpufleet.plan.node import plan_node
from gpufleet.plan.perf import PERF_ENV
from gpufleet.verify.perf import probe_command
from tests.conftest import site_data

VENV_PYTHON = f"{PERF_ENV}/bin/python"
INDEX = "https://pypi.example.internal/simple/"


def _site(base: str, **changes: Any) -> Inventory:
    """A site's document with `a.b.c=value` changes (None drops the key), checked as the loader does."""
    doc = copy.deepcopy(site_data(base))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = doc
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    return Inventory.model_validate(doc)


# site, changes, host, (probe interpreter, venv's requirement or None, the reason's keys or None)
CASES: list[tuple[str, dict[str, Any], str, str | None, str | None, list[str]]] = [
    ("dc1", {}, "gpu01", VENV_PYTHON, "torch==2.9.1+cu130", []),
    ("dc1-dr", {}, "gpu01", VENV_PYTHON, "torch==2.9.1+cu130", []),
    ("dc1", {"bom__perf_torch": {"version": "2.9.1", "cuda": "12.8"}}, "gpu01", VENV_PYTHON,
     "torch==2.9.1+cu128", []),
    ("dc1", {"site__performance": {"python": "/usr/bin/python3"}}, "gpu01", "/usr/bin/python3", None, []),
    ("h200x2", {}, "h200x2-1", "python3", None, []),
    ("h100", {"site__performance": None}, "h100-1", None, None, ["site.package_sources.python_index", "bom.perf_torch"]),
    ("h100", {"site__performance": None, "site__package_sources": {"python_index": INDEX}}, "h100-1", None, None, ["bom.perf_torch"]),
    ("h100", {"site__performance": None, "bom__perf_torch": {"version": "2.9.1", "cuda": "13.0"}}, "h100-1", None, None,
     ["site.package_sources.python_index"]),
    ("h100", {"site__performance": None, "site__package_sources": {"python_index": INDEX}, "bom__perf_torch": {"version": "2.9.1",
     "cuda": "13.0"}}, "h100-1", VENV_PYTHON, "torch==2.9.1+cu130", []),
]  # fmt: skip


@pytest.mark.parametrize(("site", "changes", "host", "python", "requirement", "unset"), CASES)
def test_probe_interpreter(
    site: str,
    changes: dict[str, Any],
    host: str,
    python: str | None,
    requirement: str | None,
    unset: list[str],
) -> None:
    inv = _site(site, **changes)
    plan = plan_node(inv, inv.node(host))
    assert plan.perf is not None
    assert plan.perf.python == python
    venv_package = "python3-venv" in [p.name for p in plan.packages]
    if requirement is None:
        assert plan.perf_env is None and not venv_package
    else:
        assert plan.perf_env is not None and venv_package
        assert (plan.perf_env.requirement, plan.perf_env.python) == (requirement, VENV_PYTHON)
        assert plan.perf_env.index_url == (inv.site.package_sources.python_index or "")
    if unset:
        assert plan.perf.python_missing is not None
        assert [k for k in ("site.package_sources.python_index", "bom.perf_torch")
                if k in plan.perf.python_missing] == unset  # fmt: skip
        assert "site.performance.python" in plan.perf.python_missing
        # The perf part fails on this one line, not on a command that cannot run.
        with pytest.raises(ValueError, match=r"^no interpreter with torch for the probe"):
            probe_command(plan.perf)
    else:
        assert plan.perf.python_missing is None


def test_nodes_without_gpus_get_no_probe_environment() -> None:
    inv = load_inventory("dc1")
    for node in inv.nodes:
        plan = plan_node(inv, node)
        assert (plan.perf_env is not None) == (node.gpu is not None), node.hostname


def test_plan_node_shows_the_probe_environment_and_its_absence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = CliRunner().invoke(app, ["plan-node", "dc1", "gpu01"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"probe interpreter: {VENV_PYTHON}" in shown.output
    assert f"{PERF_ENV}: torch==2.9.1+cu130 from https://pypi.dc1.example.internal/simple/" in shown.output
    doc = site_data("h100")
    del doc["site"]["performance"]
    (tmp_path / "inventories" / "bare").mkdir(parents=True)
    (tmp_path / "inventories" / "bare" / "nodes.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    missing = CliRunner().invoke(app, ["plan-node", "bare", "h100-1"], env={"COLUMNS": "250"})
    assert missing.exit_code == 0, missing.output
    assert "probe interpreter: none (no interpreter with torch for the probe: " in missing.output

"""The burst boot budget: its parts, its arithmetic from the measured load rate, and bad input.

Expected figures are computed here from the benchmark's own table (read by its keys) and the
catalog, never copied from the plan.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.burst.policy import CapacityModel
from gpufleet.cli import app
from gpufleet.inventory import load
from gpufleet.inventory.load import inventory_from_data, load_inventory
from gpufleet.model.catalog import SERVING_MODELS
from gpufleet.model.errors import InputError
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.burst import boot_to_serve_s, measured_weight_load_gib_s, plan_boot
from gpufleet.plan.site import plan_site
from tests.conftest import REPO

TABLE = REPO / "bench" / "results" / "serving_weight_load_h200.json"


def slowest_cold_rate() -> float:
    return float(min(row["safetensors_cold"]["gib_s"] for row in json.loads(TABLE.read_text())["rows"]))


@pytest.mark.parametrize("site", ["dc1", "dc1-dr"])
def test_the_budget_adds_its_parts_and_loads_the_burst_model_at_the_measured_rate(site: str) -> None:
    inv = load_inventory(site)
    assert inv.site.burst is not None
    parts = inv.site.burst.boot
    model = plan_fleet(inv, "t").model
    gib = SERVING_MODELS[model].params_b * SERVING_MODELS[model].bytes_per_param * 1e9 / 2**30
    boot = plan_boot(inv)
    assert boot.model == model
    assert boot.weight_load_gib_s == slowest_cold_rate()
    assert boot.weights_copy_s == pytest.approx(gib / parts.weights_copy_gib_s, abs=0.05)
    assert boot.weight_load_s == pytest.approx(gib / slowest_cold_rate(), abs=0.05)
    want: float = parts.launch_s + parts.image_s + parts.join_s + parts.engine_s
    want += gib / parts.weights_copy_gib_s + gib / slowest_cold_rate()
    assert boot.total_s == math.ceil(want) or boot.total_s == math.ceil(want) + 1  # parts rounded to 0.1 s
    assert list(boot.parts) == ["launch", "image", "weights copy", "join", "weight load", "engine"]


def test_the_controller_and_the_simulator_plan_with_the_budget(dc1: dict[str, Any]) -> None:
    inv = load_inventory("dc1")
    plan = plan_site(inv)
    assert plan.burst is not None
    assert plan.burst.boot_to_serve_s == boot_to_serve_s(inv) == plan.burst.boot.total_s
    # CapacityModel.from_plan is what `gpufleet burst run` and `burst simulate` build.
    fleet = plan_fleet(inv, "t")
    capacity = CapacityModel.from_plan(plan, fleet, plan.burst.spot_max_price_usd)
    assert capacity.boot_to_serve_s == boot_to_serve_s(inv)
    # A slower copy moves the figure by exactly its own share.
    dc1["site"]["burst"]["boot"]["weights_copy_gib_s"] = 0.5
    slower = inventory_from_data(dc1, "x")
    gib = plan_boot(inv).weights_gib
    assert boot_to_serve_s(slower) - boot_to_serve_s(inv) == pytest.approx(gib, abs=1)


def test_a_site_may_state_its_own_measured_load_rate(dc1: dict[str, Any]) -> None:
    dc1["site"]["burst"]["boot"]["weight_load_gib_s"] = 4.0
    boot = plan_boot(inventory_from_data(dc1, "x"))
    assert boot.weight_load_gib_s == 4.0
    assert boot.weight_load_s == pytest.approx(boot.weights_gib / 4.0, abs=0.05)


def test_plan_site_prints_the_budget() -> None:
    result = CliRunner().invoke(app, ["plan-site", "dc1"])
    assert result.exit_code == 0, result.output
    boot = plan_boot(load_inventory("dc1"))
    line = next(x for x in result.output.splitlines() if x.startswith("burst boot-to-serve"))
    assert line.startswith(f"burst boot-to-serve {boot.total_s} s = launch 90, image 15, weights copy ")
    assert f"loaded at {slowest_cold_rate():.2f} GiB/s" in line


@pytest.mark.parametrize(
    ("value", "shown"),
    [("fast", "'fast'"), (0, "0"), (-1.5, "-1.5"), (True, "True"), (None, "None"), (float("inf"), "inf")],
)
def test_a_bad_measurement_names_the_table_and_its_key(
    value: Any, shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.loads(TABLE.read_text())
    doc["rows"][2]["safetensors_cold"]["gib_s"] = value
    bad = tmp_path / "weight_load.json"
    bad.write_text(json.dumps(doc))
    monkeypatch.setattr(load, "WEIGHT_LOAD_TABLE", bad)
    result = CliRunner().invoke(app, ["plan-site", "dc1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        f"{bad}: rows[2].safetensors_cold.gib_s: must be a positive number of GiB/s, got {shown}"
    ]


def test_a_missing_or_broken_table_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for text, why in (
        ("{not json", "cannot read the weight-load table"),
        ('{"rows": []}', "rows: the weight"),
    ):
        bad = tmp_path / f"t{len(text)}.json"
        bad.write_text(text)
        monkeypatch.setattr(load, "WEIGHT_LOAD_TABLE", bad)
        result = CliRunner().invoke(app, ["validate", "dc1"])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert why in result.output and str(bad) in result.output
    monkeypatch.setattr(load, "WEIGHT_LOAD_TABLE", tmp_path / "absent.json")
    result = CliRunner().invoke(app, ["plan-site", "dc1"])
    assert result.exit_code == 2 and "absent.json: cannot read the weight-load table" in result.output


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("join_s", -5, "greater than or equal to 0"),
        ("launch_s", "soon", "valid integer"),
        ("weights_copy_gib_s", 0, "greater than 0"),
        ("weight_load_gib_s", float("nan"), "finite number"),
        ("pull_s", 3, "unknown key"),
    ],
)
def test_a_bad_budget_part_names_the_inventory_and_its_key(
    key: str, value: Any, why: str, dc1: dict[str, Any], tmp_path: Path
) -> None:
    dc1["site"]["burst"]["boot"][key] = value
    site = tmp_path / "bad" / "nodes.yaml"
    site.parent.mkdir()
    site.write_text(yaml.safe_dump(dc1))
    result = CliRunner().invoke(app, ["plan-site", str(site)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"{site}: site.burst.boot.{key}: ") and why in line, line


def test_the_pure_parse_refuses_a_table_without_rows() -> None:
    docs: list[Any] = [[], {"rows": "x"}, {"rows": [{"size_gib": 1}]}]
    for doc in docs:
        with pytest.raises(InputError) as exc:
            measured_weight_load_gib_s(doc, "t.json")
        assert exc.value.lines()[0].startswith("t.json: rows")

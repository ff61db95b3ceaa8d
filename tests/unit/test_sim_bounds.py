"""The exact bounds: the MILP's optimum against every fleet plan enumerated on small cases."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import numpy as np
import pytest

from gpufleet.burst.policy import CapacityModel, Pool
from gpufleet.sim.bounds import BoundResult, calendar_need, cheapest_fleet, minute_prices
from gpufleet.sim.prices import PriceSeries

POOLS = [Pool("p5en.48xlarge", "us-east-1a"), Pool("p5e.48xlarge", "us-east-1b")]
SIZE = {"p5en.48xlarge": 2.0, "p5e.48xlarge": 1.0}
GPUS = {"p5en.48xlarge": 8, "p5e.48xlarge": 8}


def _model(max_nodes: int, cap: float, boot_s: float = 120.0) -> CapacityModel:
    return CapacityModel(
        onprem_replicas=1,
        replicas_per_node=1.0,
        node_capacity=SIZE,
        max_nodes=max_nodes,
        max_hourly_usd=cap,
        boot_to_serve_s=boot_s,
        slo_queue_wait_s=2.0,
        fleet_max_price=30.0,
    )


def _brute(need: list[float], price: np.ndarray, model: CapacityModel) -> tuple[float, int]:
    """(cost, unmet minutes) of the best plan over every billed-node profile of both pools:
    fewest unmet replica-minutes first, then cheapest, as the MILP's penalty orders them."""
    minutes, boot = len(need), int(model.boot_to_serve_s // 60)
    best: tuple[float, float, int] | None = None
    profiles = list(itertools.product(range(model.max_nodes + 1), repeat=minutes))
    for a in profiles:
        for b in profiles:
            if any(
                x + y > model.max_nodes or (x + y) * 30.0 > model.max_hourly_usd
                for x, y in zip(a, b, strict=True)
            ):
                continue
            short, unmet = 0.0, 0
            for m in range(minutes):
                window = range(max(0, m - boot), m + 1)
                held = 2.0 * min(a[j] for j in window) + 1.0 * min(b[j] for j in window)
                if held < need[m] - 1e-9:
                    short += need[m] - held
                    unmet += 1
            cost = float(sum(a[m] * price[0, m] + b[m] * price[1, m] for m in range(minutes)) / 60)
            key = (round(short, 9), cost, unmet)
            if best is None or key[:2] < best[:2]:
                best = key
    assert best is not None
    return best[1], best[2]


@pytest.mark.parametrize("seed", range(6))
def test_the_milp_finds_the_cheapest_plan(seed: int) -> None:
    rng = random.Random(seed)
    minutes = 5
    need = [rng.choice([0.0, 0.5, 1.0, 2.0, 3.0]) for _ in range(minutes)]
    price = np.array([[rng.uniform(10, 40) for _ in range(minutes)] for _ in POOLS])
    model = _model(max_nodes=2, cap=rng.choice([30.0, 60.0]))
    bound = cheapest_fleet(need, POOLS, price, SIZE.__getitem__, GPUS.__getitem__, model, "bound-clairvoyant")
    cost, unmet = _brute(need, price, model)
    assert bound.cost_usd == pytest.approx(cost, abs=1e-6)
    assert bound.unmet_minutes == unmet


def test_a_node_serves_only_a_boot_time_after_it_is_billed() -> None:
    # Nothing needed until minute 4, then 1 replica: the node is billed from minute 2 (boot 2 min).
    need = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    price = np.full((2, 6), 20.0)
    bound = cheapest_fleet(need, POOLS, price, SIZE.__getitem__, GPUS.__getitem__, _model(2, 100.0), "b")
    assert bound.nodes == (0, 0, 1, 1, 1, 1)
    assert bound.cost_usd == pytest.approx(4 * 20.0 / 60)
    assert bound.gpu_hours == pytest.approx(4 * 8 / 60)


HARD_SIZE = {**SIZE, "g6e.48xlarge": 0.3}


def _hard_case() -> tuple[list[float], list[Pool], np.ndarray, CapacityModel]:
    """Twelve hours on 18 pools whose prices jump every minute: HiGHS proves it in about 4.5 s on
    an idle 2-core machine (four hours took 1 s, too close to the test's limit)."""
    rng = random.Random(1)
    pools = [Pool(t, f"us-east-1{z}") for t in HARD_SIZE for z in "abcdef"]
    minutes = 720
    need = [max(0.0, 6 * math.sin(m / 20) + rng.uniform(-2, 4)) for m in range(minutes)]
    price = np.array([[rng.uniform(10, 40) for _ in range(minutes)] for _ in pools])
    return need, pools, price, replace(_model(max_nodes=8, cap=1e4, boot_s=300.0), node_capacity=HARD_SIZE)


def test_a_bound_cut_short_by_its_time_limit_says_so_with_its_gap() -> None:
    need, pools, price, model = _hard_case()
    bound = cheapest_fleet(
        need, pools, price, HARD_SIZE.__getitem__, lambda _: 8, model, "bound-clairvoyant", time_limit_s=0.5
    )
    assert bound.status == "time limit" and not bound.optimal
    assert bound.summary()["status"] == "time limit"
    if bound.nodes:  # the best plan found so far, with HiGHS' own distance to what it proved
        assert bound.mip_gap is not None and bound.mip_gap > 0 and math.isfinite(bound.cost_usd)
        assert bound.summary()["mip_gap"] == round(bound.mip_gap, 6)
        assert bound.label() == f"bound-clairvoyant (NOT OPTIMAL: time limit, gap {bound.mip_gap:.1%})"
    else:  # the limit came before any plan (a loaded machine): no cost, no gap
        assert bound.mip_gap is None and bound.summary()["cost_usd"] is None


def test_a_plan_not_proved_optimal_shows_its_gap_in_table_and_json() -> None:
    cut = BoundResult("bound-clairvoyant", 12.5, 3.0, (1, 2), 0, "time limit", 0.0345)
    assert not cut.optimal and cut.summary()["status"] == "time limit"
    assert cut.summary()["mip_gap"] == 0.0345 and cut.summary()["cost_usd"] == 12.5
    assert cut.label() == "bound-clairvoyant (NOT OPTIMAL: time limit, gap 3.5%)"


def test_a_time_limit_before_any_plan_reports_no_cost() -> None:
    need, pools, price, model = _hard_case()
    bound = cheapest_fleet(
        need, pools, price, HARD_SIZE.__getitem__, lambda _: 8, model, "b", time_limit_s=1e-6
    )
    assert bound.status == "time limit" and bound.mip_gap is None and bound.nodes == ()
    assert bound.summary()["cost_usd"] is None and bound.summary()["gpu_hours"] is None
    with pytest.raises(ValueError, match="time_limit_s must be positive"):
        cheapest_fleet(need, pools, price, HARD_SIZE.__getitem__, lambda _: 8, model, "b", time_limit_s=0)


def test_an_infeasible_model_is_reported_not_solved() -> None:
    # A cap below zero: not even an empty fleet fits under it.
    price = np.full((2, 3), 20.0)
    bound = cheapest_fleet([1.0] * 3, POOLS, price, SIZE.__getitem__, GPUS.__getitem__, _model(2, -1.0), "b")
    assert bound.status == "infeasible" and not bound.optimal and bound.mip_gap is None
    assert math.isnan(bound.cost_usd) and bound.summary()["cost_usd"] is None
    assert bound.label() == "b (NOT OPTIMAL: infeasible)"


def test_an_optimum_says_so() -> None:
    price = np.full((2, 6), 20.0)
    bound = cheapest_fleet(
        [0, 0, 0, 0, 1.0, 1.0], POOLS, price, SIZE.__getitem__, GPUS.__getitem__, _model(2, 100.0), "b"
    )
    assert bound.optimal and bound.mip_gap == 0.0 and bound.label() == "b"
    assert bound.summary() == {
        "policy": "b",
        "status": "optimal",
        "mip_gap": 0.0,
        "gpu_hours": 0.53,
        "cost_usd": 1.33,
        "cap_violations": 0,
        "unmet_minutes": 0,
    }


def test_the_calendar_holds_a_windows_worst_minute_throughout() -> None:
    need = [0.0, 1.0, 4.0, 2.0, 0.0, 0.0]
    assert calendar_need(need, [(60.0, 240.0)]) == [0.0, 4.0, 4.0, 4.0, 0.0, 0.0]


def test_minute_prices_weigh_a_change_inside_the_minute() -> None:
    pool = POOLS[0]
    series = PriceSeries((0.0, 90.0), ({pool: 10.0}, {pool: 40.0}))
    assert minute_prices(series, [pool], 3).tolist() == [[10.0, 25.0, 40.0]]

"""Exact cost bounds for the burst benchmark, solved as a MILP with SciPy's HiGHS.

`bound-clairvoyant` knows every minute's load ahead; `bound-calendar` knows each surge's window
and the load of its worst minute, but not which minute that is, so it must hold that minute's
capacity through the window (every minute outside the windows it knows, as the clairvoyant
does). Both find the cheapest fleet over the whole horizon under the rules every policy plays by:
the same capacity model (a minute needs `CapacityModel.missing(load)` replicas of burst capacity),
the same boot-to-serve time, node bound and $/hour cap, each pool's Spot price minute by minute,
and a warm start (capacity serving at minute 0 needs no boot).

The model, per pool p and minute m: `billed[p, m]` nodes are paid for, `serving[p, m]` of them
serve. A node serves in minute m only if it was launched at least the boot time before and kept
since, so `serving[p, m] <= billed[p, j]` for every minute j of the boot window before m. Stacking
nodes as layers (layer h runs while billed >= h) realises any such profile with whole nodes, so
the optimum of the MILP is the optimum over fleets, at one-minute resolution. What it leaves
out makes it a lower bound: no interruptions and no launch failures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from gpufleet.burst.policy import CapacityModel, Pool, max_price_for
from gpufleet.sim.prices import PriceSeries

BOUND_NAMES = ("bound-clairvoyant", "bound-calendar")


# Dollars per replica-minute of need left unmet: above any fleet's price, so the optimum meets
# every minute it can and leaves unmet only what the cap or the node bound forbid.
UNMET_PENALTY = 1e6


@dataclass(frozen=True)
class BoundResult:
    name: str
    cost_usd: float
    gpu_hours: float
    # Burst nodes billed per minute (all pools).
    nodes: tuple[int, ...]
    # Minutes whose need no fleet under the cap and the node bound can hold.
    unmet_minutes: int


def minute_prices(
    prices: PriceSeries, pools: Sequence[Pool], minutes: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """$/hour of each pool averaged over each minute (the series is piecewise constant)."""
    out = np.zeros((len(pools), minutes))
    edges = [*prices.times, math.inf]
    for m in range(minutes):
        start, end = 60.0 * m, 60.0 * (m + 1)
        for i in range(len(prices.times)):
            overlap = min(end, edges[i + 1]) - max(start, edges[i])
            if overlap > 0:
                row = prices.prices[i]
                out[:, m] += [row[p] * overlap / 60.0 for p in pools]
    return out


def cheapest_fleet(
    need: Sequence[float],
    pools: Sequence[Pool],
    price: np.ndarray[Any, np.dtype[np.float64]],
    capacity: Callable[[str], float],
    gpus: Callable[[str], int],
    model: CapacityModel,
    name: str,
) -> BoundResult:
    """The cheapest billed-node plan whose serving nodes hold `need[m]` replicas every minute."""
    n_pools, minutes = len(pools), len(need)
    boot = math.ceil(model.boot_to_serve_s / 60)
    count = n_pools * minutes

    def billed(p: int, m: int) -> int:
        return p * minutes + m

    def serving(p: int, m: int) -> int:
        return count + p * minutes + m

    def unmet(m: int) -> int:
        return 2 * count + m

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper: list[float] = []

    def constraint(terms: Sequence[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(lower)
        for col, val in terms:
            rows.append(row)
            cols.append(col)
            vals.append(val)
        lower.append(lo)
        upper.append(hi)

    for p in range(n_pools):
        for m in range(minutes):
            constraint([(serving(p, m), 1.0), (billed(p, m), -1.0)], -np.inf, 0.0)
            # Warm start: minutes before 0 are not in the plan; nodes serving then are already up.
            for j in range(max(0, m - boot), m):
                constraint([(serving(p, m), 1.0), (billed(p, j), -1.0)], -np.inf, 0.0)
    for m in range(minutes):
        held = [(serving(p, m), capacity(pools[p].instance_type)) for p in range(n_pools)]
        constraint([*held, (unmet(m), 1.0)], need[m], np.inf)
        constraint([(billed(p, m), 1.0) for p in range(n_pools)], -np.inf, model.max_nodes)
        # Each node reserves its max price against the cap, as the policy reserves it.
        reserve = [
            model.fleet_max_price
            if model.fleet_max_price is not None
            else max_price_for(pools[p], float(price[p, m]))
            for p in range(n_pools)
        ]
        constraint([(billed(p, m), reserve[p]) for p in range(n_pools)], -np.inf, model.max_hourly_usd)
    width = 2 * count + minutes
    matrix = coo_array((vals, (rows, cols)), shape=(len(lower), width)).tocsr()
    cost = np.concatenate([price.reshape(-1) / 60.0, np.zeros(count), np.full(minutes, UNMET_PENALTY)])
    answer = milp(
        cost,
        constraints=LinearConstraint(matrix, lower, upper),
        integrality=np.concatenate([np.ones(2 * count), np.zeros(minutes)]),
        bounds=Bounds(0, np.concatenate([np.full(2 * count, model.max_nodes), np.full(minutes, np.inf)])),
    )
    if answer.status != 0 or answer.x is None:
        raise RuntimeError(f"{name}: HiGHS found no optimum ({answer.message})")
    plan = np.rint(answer.x[:count]).reshape(n_pools, minutes)
    short = answer.x[2 * count :]
    gpu_minutes = sum(gpus(pools[p].instance_type) * plan[p].sum() for p in range(n_pools))
    return BoundResult(
        name=name,
        cost_usd=float((plan * price).sum() / 60.0),
        gpu_hours=float(gpu_minutes / 60.0),
        nodes=tuple(int(v) for v in plan.sum(axis=0)),
        unmet_minutes=int((short > 1e-6).sum()),
    )


def calendar_need(need: Sequence[float], windows: Sequence[tuple[float, float]]) -> list[float]:
    """What a calendar that names each surge's window and worst minute, not which minute that
    is, must hold: the worst minute's need through the whole window."""
    held = list(need)
    for start, end in windows:
        first, last = int(start // 60), min(len(need), math.ceil(end / 60))
        worst = max(need[first:last], default=0.0)
        for m in range(first, last):
            held[m] = max(held[m], worst)
    return held

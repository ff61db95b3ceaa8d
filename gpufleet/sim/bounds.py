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

HiGHS solves it within `time_limit_s`. A result it could not prove optimal (the limit came first,
or the model has no solution) says so in `status`, with the relative MIP gap of the best plan
found: it is never reported as the optimum.
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


# HiGHS' time per bound unless the caller gives another: the hour-long traces solve in seconds.
TIME_LIMIT_S = 120.0
# scipy.optimize.milp's status codes, as this module reports them.
STATUS = {0: "optimal", 1: "time limit", 2: "infeasible", 3: "unbounded", 4: "solver error"}


@dataclass(frozen=True)
class BoundResult:
    name: str
    # What the best plan found costs; NaN when HiGHS found none. The optimum only when `optimal`.
    cost_usd: float
    gpu_hours: float
    # Burst nodes billed per minute (all pools); empty when there is no plan.
    nodes: tuple[int, ...]
    # Minutes whose need no fleet under the cap and the node bound can hold.
    unmet_minutes: int
    # "optimal", or why not: "time limit", "infeasible", "unbounded", "solver error".
    status: str = "optimal"
    # HiGHS' relative gap between the best plan found and its proven bound (0 at the optimum);
    # None without a plan.
    mip_gap: float | None = 0.0

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"

    def summary(self) -> dict[str, object]:
        """The bound's `--json` object: a result that is not the optimum says so."""
        known = math.isfinite(self.cost_usd)
        return {
            "policy": self.name,
            "status": self.status,
            "mip_gap": None if self.mip_gap is None else round(self.mip_gap, 6),
            "gpu_hours": round(self.gpu_hours, 2) if known else None,
            "cost_usd": round(self.cost_usd, 2) if known else None,
            "cap_violations": 0,
            "unmet_minutes": self.unmet_minutes,
        }

    def label(self) -> str:
        """The bound's name as a table shows it, with why it is not the optimum where it is not."""
        if self.optimal:
            return (
                f"{self.name} ({self.unmet_minutes} min beyond the cap)" if self.unmet_minutes else self.name
            )
        # A plan not proved optimal may leave minutes unmet that a better one would meet.
        gap = f", gap {self.mip_gap:.1%}" if self.mip_gap is not None else ""
        return f"{self.name} (NOT OPTIMAL: {self.status}{gap})"


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
    time_limit_s: float = TIME_LIMIT_S,
) -> BoundResult:
    """The cheapest billed-node plan whose serving nodes hold `need[m]` replicas every minute,
    or the best HiGHS found within `time_limit_s` (its `status` then says it is not the optimum)."""
    if not time_limit_s > 0:
        raise ValueError(f"time_limit_s must be positive (got {time_limit_s!r})")
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
            # Warm start: minutes before 0 are not in the plan; nodes serving then are already up.
            for j in range(max(0, m - boot), m + 1):
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
        # Serving nodes are whole too, though a whole billed plan makes them so anyway: HiGHS
        # proves the optimum faster with them integer (bench/results/burst_bounds.md).
        integrality=np.concatenate([np.ones(2 * count), np.zeros(minutes)]),
        bounds=Bounds(0, np.concatenate([np.full(2 * count, model.max_nodes), np.full(minutes, np.inf)])),
        options={"time_limit": time_limit_s},
    )
    status = STATUS.get(answer.status, "solver error")
    if answer.x is None:
        return BoundResult(name, math.nan, math.nan, (), 0, status, None)
    plan = np.rint(answer.x[:count]).reshape(n_pools, minutes)
    short = answer.x[2 * count :]
    gpu_minutes = sum(gpus(pools[p].instance_type) * plan[p].sum() for p in range(n_pools))
    gap = getattr(answer, "mip_gap", None)
    return BoundResult(
        name=name,
        cost_usd=float((plan * price).sum() / 60.0),
        gpu_hours=float(gpu_minutes / 60.0),
        nodes=tuple(int(v) for v in plan.sum(axis=0)),
        unmet_minutes=int((short > 1e-6).sum()),
        status=status,
        mip_gap=None if gap is None else float(gap),
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

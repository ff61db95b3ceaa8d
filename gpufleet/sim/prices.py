"""Spot price series per pool: piecewise constant, changing at known instants."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

from gpufleet.burst.policy import Pool
from gpufleet.model.catalog import AWS_GPU_INSTANCES


@dataclass(frozen=True)
class PriceSeries:
    """prices[i] holds from times[i] until times[i + 1]; times[0] is 0."""

    times: tuple[float, ...]
    prices: tuple[dict[Pool, float], ...]

    def at(self, t: float) -> dict[Pool, float]:
        return self.prices[max(0, bisect.bisect_right(self.times, t) - 1)]

    @property
    def pools(self) -> list[Pool]:
        return sorted(self.prices[0])


def pools_for(region: str, instance_types: Sequence[str], zones: int = 3) -> list[Pool]:
    return [Pool(t, f"{region}{chr(ord('a') + z)}") for t in instance_types for z in range(zones)]


def random_walk(
    pools: Sequence[Pool],
    horizon_s: float,
    seed: int = 0,
    step_s: float = 300.0,
    discount: tuple[float, float] = (0.35, 0.55),
    volatility: float = 0.05,
) -> PriceSeries:
    """Spot prices as a fraction of on-demand per pool, moving a few percent every `step_s`.

    The defaults sit where AWS GPU Spot prices usually are (a third to a half of on-demand) and
    stay between 20% and 90% of it, so a pool is occasionally worth leaving but never dearer than
    on-demand, which AWS does not charge above.
    """
    rng = random.Random(seed)
    level = {p: rng.uniform(*discount) for p in pools}
    times: list[float] = []
    prices: list[dict[Pool, float]] = []
    t = 0.0
    while t <= horizon_s:
        times.append(t)
        prices.append(
            {p: round(AWS_GPU_INSTANCES[p.instance_type].on_demand_usd_hour * f, 4) for p, f in level.items()}
        )
        level = {p: min(0.9, max(0.2, f * (1 + rng.gauss(0, volatility)))) for p, f in level.items()}
        t += step_s
    return PriceSeries(tuple(times), tuple(prices))

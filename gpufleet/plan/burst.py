"""A burst node's boot-to-serve as a budget of parts, and the measured rate its weight load uses. Pure.

launch → image → weights copy (S3 → local NVMe, verified) → join → weight load (NVMe → GPU
memory) → engine start, in that order: the user data copies and verifies the weights before
`kubeadm join`, so a node whose copy does not verify never joins (docs/burst-boot.md).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import computed_field

from gpufleet.model.catalog import SERVING_MODELS
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.node import Frozen

# The weight-load benchmark's table (bench/serving_weight_load.py), read by the inventory loader.
WEIGHT_LOAD_MEASURED = "bench/results/serving_weight_load_h200.json"
# Its figure for a node that reads the weights from its own disk: safetensors into GPU memory,
# page cache dropped first (a fresh node's page cache holds none of them).
WEIGHT_LOAD_KEY = ("safetensors_cold", "gib_s")


class BootPlan(Frozen):
    model: str  # the model burst nodes serve
    weights_gib: float
    weights_copy_gib_s: float
    weight_load_gib_s: float
    launch_s: float
    image_s: float
    weights_copy_s: float
    join_s: float
    weight_load_s: float
    engine_s: float

    @property
    def parts(self) -> dict[str, float]:
        """Seconds per part, in the order a node goes through them."""
        return {
            "launch": self.launch_s,
            "image": self.image_s,
            "weights copy": self.weights_copy_s,
            "join": self.join_s,
            "weight load": self.weight_load_s,
            "engine": self.engine_s,
        }

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_s(self) -> int:
        return math.ceil(sum(self.parts.values()))


def measured_weight_load_gib_s(doc: Any, source: str) -> float:
    """The slowest cold safetensors rate the benchmark measured over its file sizes: a budget that
    holds for every shard size it saw. Bad values name the file and the key."""
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise InputError(source, [Problem(("rows",), "the weight-load table has no rows")])
    rates = []
    for i, row in enumerate(rows):
        measured = row.get(WEIGHT_LOAD_KEY[0]) if isinstance(row, dict) else None
        value = measured.get(WEIGHT_LOAD_KEY[1]) if isinstance(measured, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            problem = Problem(
                ("rows", i, *WEIGHT_LOAD_KEY), f"must be a positive number of GiB/s, got {value!r}"
            )
            raise InputError(source, [problem])
        rates.append(float(value))
    return min(rates)


def plan_boot(inv: Inventory) -> BootPlan:
    """The site's burst boot budget; the inventory loader has filled in the measured load rate."""
    from gpufleet.plan.aws import plan_fleet  # aws.py plans on top of this module's site plan

    burst = inv.site.burst
    if burst is None:
        raise ValueError(f"site {inv.site.name} has no burst")
    boot = burst.boot
    if boot.weight_load_gib_s is None:
        raise InputError(
            f"site {inv.site.name}",
            [
                Problem(
                    ("site", "burst", "boot", "weight_load_gib_s"),
                    f"no weight-load rate: load the site with load_inventory (it reads {WEIGHT_LOAD_MEASURED})",
                )
            ],
        )
    model = plan_fleet(inv, f"site {inv.site.name}").model
    gib = SERVING_MODELS[model].weights_gib
    return BootPlan(
        model=model,
        weights_gib=round(gib, 1),
        weights_copy_gib_s=boot.weights_copy_gib_s,
        weight_load_gib_s=boot.weight_load_gib_s,
        launch_s=boot.launch_s,
        image_s=boot.image_s,
        weights_copy_s=round(gib / boot.weights_copy_gib_s, 1),
        join_s=boot.join_s,
        weight_load_s=round(gib / boot.weight_load_gib_s, 1),
        engine_s=boot.engine_s,
    )


def boot_to_serve_s(site: Inventory) -> int:
    """Seconds from a Spot launch to a burst node serving: what the controller and simulator plan with."""
    return plan_boot(site).total_s

"""A simulation scenario from a site, a trace and surges: the capacity model every policy shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gpufleet.burst.policy import (
    POLICY_NAMES,
    CapacityModel,
    Gpufleet,
    HpaGpu,
    KedaQueue,
    KnownPeak,
    Oracle,
    PeakHold,
    Policy,
    ReactivePending,
    StaticPeak,
)
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.aws import BurstFleet, plan_fleet
from gpufleet.plan.site import plan_site
from gpufleet.sim.bounds import BOUND_NAMES, BoundResult, calendar_need, cheapest_fleet, minute_prices
from gpufleet.sim.engine import Result, ServiceModel, Simulation
from gpufleet.sim.prices import PriceSeries, pools_for, random_walk
from gpufleet.sim.trace import Surge, Trace, apply_surges

# On-prem is sized for the ordinary trace: the slowest replica with which the on-prem fleet alone
# keeps every minute of the trace without surges inside the SLO, plus this much headroom. That is
# what fixes a replica's tokens/s from the trace's own token counts.
ONPREM_HEADROOM = 1.1
_CALIBRATION_STEPS = 12


@dataclass(frozen=True)
class Scenario:
    trace: Trace
    capacity: CapacityModel
    service: ServiceModel
    # What burst nodes serve and how many replicas each type holds: the deployed fleet plan's.
    fleet: BurstFleet
    prices: PriceSeries
    # Every surge in the trace; `announced` says whether gpufleet's policy is told of them.
    surges: tuple[KnownPeak, ...]
    announced: bool
    horizon_s: float
    minute_load: tuple[float, ...]
    interruptions_per_node_hour: float
    seed: int

    @property
    def peaks(self) -> tuple[KnownPeak, ...]:
        """What gpufleet's calendar holds."""
        return self.surges if self.announced else ()

    def policy(self, name: str) -> Policy:
        m = self.capacity
        if name == "static-peak":
            return StaticPeak(m, peak_need=m.missing(max(self.minute_load)))
        if name == "hpa-gpu70":
            return HpaGpu(m)
        if name == "keda-queue":
            return KedaQueue(m)
        if name == "reactive-pending":
            return ReactivePending(m, slots_per_replica=self.service.slots)
        if name == "gpufleet":
            return Gpufleet(m, peaks=self.peaks)
        if name == "oracle":
            return Oracle(m, future_load=self.minute_load)
        if name == PeakHold.name:
            return PeakHold(
                m, future_load=self.minute_load, windows=tuple((p.start_s, p.end_s) for p in self.surges)
            )
        raise ValueError(f"unknown policy {name!r}; one of {', '.join((*POLICY_NAMES, PeakHold.name))}")

    def run(self, name: str) -> Result:
        return Simulation(
            requests=self.trace.requests,
            policy=self.policy(name),
            capacity=self.capacity,
            service=self.service,
            prices=self.prices,
            replicas_per_node=replicas_per_node(self.fleet),
            replica_speed=replica_speed(self.fleet),
            horizon_s=self.horizon_s,
            interruptions_per_node_hour=self.interruptions_per_node_hour,
            seed=self.seed,
        ).run()

    def bound(self, name: str) -> BoundResult:
        """The exact cost bound `name` (see gpufleet.sim.bounds) for this scenario's need per
        minute, pools, prices, boot time, node bound and cap."""
        types = replicas_per_node(self.fleet)
        pools = [p for p in self.prices.pools if p.instance_type in types]
        price = minute_prices(self.prices, pools, len(self.minute_load))
        need = [self.capacity.missing(load) for load in self.minute_load]
        if name == "bound-calendar":
            need = calendar_need(need, [(p.start_s, p.end_s) for p in self.surges])
        elif name != "bound-clairvoyant":
            raise ValueError(f"unknown bound {name!r}; one of {', '.join(BOUND_NAMES)}")
        return cheapest_fleet(
            need,
            pools,
            price,
            self.capacity.capacity_of,
            lambda t: AWS_GPU_INSTANCES[t].gpus,
            self.capacity,
            name,
        )


def calibrate(trace: Trace, capacity: CapacityModel, prices: PriceSeries, fleet: BurstFleet) -> ServiceModel:
    """Bisect a replica's tokens/s on an on-prem-only replay of the trace without surges."""

    def meets_slo(tokens_per_s: float) -> bool:
        result = Simulation(
            requests=trace.requests,
            policy=StaticPeak(capacity),
            capacity=capacity,
            service=ServiceModel(tokens_per_s=tokens_per_s),
            prices=prices,
            replicas_per_node=replicas_per_node(fleet),
            horizon_s=60.0 * math.ceil(max(trace.duration_s, 1.0) / 60),
        ).run()
        return result.slo_violation_minutes == 0

    probe = ServiceModel(tokens_per_s=1.0)
    total = sum(probe.work_s(r) for r in trace.requests)
    # From "all the work in one second" (always enough) down to "spread evenly" (never enough).
    hi = total
    lo = total / max(trace.duration_s, 1.0) / max(capacity.onprem_replicas, 1)
    for _ in range(_CALIBRATION_STEPS):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if meets_slo(mid) else (mid, hi)
    return ServiceModel(tokens_per_s=hi * ONPREM_HEADROOM)


def replicas_per_node(fleet: BurstFleet) -> dict[str, int]:
    return {choice.name: choice.replicas for choice in fleet.instances}


def replica_speed(fleet: BurstFleet) -> dict[str, float]:
    """A burst replica's throughput in on-prem replicas, by instance type (the fleet plan's roofline)."""
    return {choice.name: choice.capacity / choice.replicas for choice in fleet.instances}


def minute_loads(trace: Trace, service: ServiceModel, horizon_s: float) -> list[float]:
    """Offered load per minute, in replicas."""
    loads = [0.0] * max(1, int(horizon_s // 60))
    for request in trace.requests:
        loads[min(len(loads) - 1, int(request.arrival_s // 60))] += service.work_s(request) / 60
    return loads


def build_scenario(
    inv: Inventory,
    source: str,
    trace: Trace,
    surges: Sequence[Surge],
    *,
    announce: bool = True,
    interruptions_per_node_hour: float = 0.0,
    seed: int = 0,
) -> Scenario:
    """`source` names the site file, for errors about what the site lacks."""
    plan = plan_site(inv)
    if plan.burst is None or plan.serving is None:
        missing = "burst" if plan.burst is None else "serving"
        raise InputError(
            source, [Problem(("site", missing), f"the site has no {missing} section to simulate")]
        )
    fleet = plan_fleet(inv, source)
    surged = apply_surges(trace, list(surges), seed=seed)
    horizon = 60.0 * math.ceil(max(trace.duration_s, surged.duration_s, 1.0) / 60)
    pools = pools_for(plan.burst.region, sorted(fleet.instance_types))
    prices = random_walk(pools, horizon, seed=seed)
    # As deployed: SpotBurst sets the group's SpotMaxPrice from the same plan.
    capacity = CapacityModel.from_plan(plan, fleet, plan.burst.spot_max_price_usd)
    service = calibrate(trace, capacity, prices, fleet)
    # Plan each minute's load at the utilisation at which on-prem alone met the SLO on the
    # ordinary trace's busiest minute: that is what the capacity model has shown to be safe.
    proven = max(minute_loads(trace, service, horizon)) / max(capacity.onprem_replicas, 1)
    capacity = replace(capacity, target_utilisation=min(0.9, max(0.3, proven)))
    return Scenario(
        trace=surged,
        capacity=capacity,
        service=service,
        fleet=fleet,
        prices=prices,
        surges=tuple(KnownPeak(s.start_s, s.end_s, s.factor) for s in surges),
        announced=announce,
        horizon_s=horizon,
        minute_load=tuple(minute_loads(surged, service, horizon)),
        interruptions_per_node_hour=interruptions_per_node_hour,
        seed=seed,
    )

"""A simulation scenario: a site, a trace, surges, a calendar, prices and Spot capacity.

Every figure that sizes serving comes from hardware (gpufleet.burst.hardware), the same for every
trace. What a scenario sets, and documents, instead:

- Volume. A public trace is one service's sample (the Azure code trace: 2.5 requests/s), far below
  what a site of 64 H100s serves. The site is taken to serve as many tenants like it as fill its
  on-prem replicas to BASE_UTILISATION of their nominal capacity on average: the trace is played as
  copies shifted in time, each request standing for `weight` (at most MAX_WEIGHT) identical
  requests. The rule is one and the same for every trace; only the trace's mean sets the volume.
- Classes: each request is P0, P1 or P2 with CLASS_SHARES, seeded.
- Warm start: the burst group starts with the nodes the base load's busiest minute needs, ready,
  for every policy alike; no surge may start inside the first boot-to-serve time.
- Calendar (what gpufleet's policy is told): exact, the factor wrong by FACTOR_ERROR (under-stated
  on even seeds, over-stated on odd ones), the start wrong by START_ERROR_S (late on even seeds,
  early on odd ones), or none.
- Spot capacity: each pool runs out now and then (OUTAGES_PER_POOL_HOUR, each OUTAGE_S long),
  when a launch there fails and the group tries its next type.
- Prices: gpufleet.sim.prices.random_walk's documented parameters.
- Gateway: the site's own (gpufleet.plan.admission.site_gateway, what the on-prem stack renders
  into haproxy.cfg): primary the on-prem model, fallback the burst nodes' distilled model; see
  gpufleet.sim.engine for its rules. One tenant per class. TENANT_LIMIT: each tenant's limit is
  its class's share of the ordinary traffic's busiest rate window (RATE_WINDOW_S) times SURGE_SOLD
  (3, the largest surge the site sells), so ordinary traffic and a sold surge pass (a limit of 3x
  the mean rate would not: the Azure trace's busiest 10 s send 2.6x its mean); the booting limit
  is BOOT_P1_SHARE of it (gpufleet.plan.admission.boot_limit).
- Degradation: the distilled model on an on-prem replica's GPUs is the burst fleet's, at its
  tensor parallelism, loaded at the measured cold weight-load rate
  (gpufleet.burst.hardware.swap_s) in both directions; its replicas join the fallback.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gpufleet.burst.hardware import ReplicaHardware, request_seconds, swap_s
from gpufleet.burst.policy import CapacityModel, KnownPeak, Policy, Pool
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.admission import RATE_WINDOW_S, GatewayPlan, site_gateway
from gpufleet.plan.aws import BurstFleet, plan_fleet
from gpufleet.plan.site import plan_site
from gpufleet.sim.baselines import make_policy
from gpufleet.sim.bounds import BOUND_NAMES, BoundResult, calendar_need, cheapest_fleet, minute_prices
from gpufleet.sim.engine import Arrival, Result, Simulation
from gpufleet.sim.prices import PriceSeries, pools_for, random_walk
from gpufleet.sim.trace import Request, Surge, Trace, apply_surges

BASE_UTILISATION = 0.7
# A simulated request stands for at most this many identical ones (more copies: slower runs).
MAX_WEIGHT = 6.0
CLASS_SHARES = (("P0", 0.2), ("P1", 0.4), ("P2", 0.4))
FACTOR_ERROR = 1 / 3
START_ERROR_S = 600.0
OUTAGES_PER_POOL_HOUR = 0.25
OUTAGE_S = (600.0, 1800.0)
INTERRUPTIONS_PER_NODE_HOUR = 0.05
# The largest surge the site sells: a tenant's limit is this many times its class's share of the
# ordinary traffic's busiest rate window.
SURGE_SOLD = 3.0
ANNOUNCE_MODES = ("exact", "factor-wrong", "start-wrong", "none")


@dataclass(frozen=True)
class Scenario:
    arrivals: tuple[Arrival, ...]
    capacity: CapacityModel
    onprem: ReplicaHardware
    fleet: BurstFleet
    burst: dict[str, tuple[ReplicaHardware, int]]
    prices: PriceSeries
    surges: tuple[KnownPeak, ...]
    # What gpufleet's calendar holds (per the announce mode).
    peaks: tuple[KnownPeak, ...]
    horizon_s: float
    minute_load: tuple[float, ...]
    base_peak_load: float
    replica_rps: float
    weight: float
    initial_nodes: int
    distilled: tuple[ReplicaHardware, int, float, float] | None
    gateway: GatewayPlan
    tenant_limit_rps: dict[str, float]
    spot_max_price: float | None
    outages: tuple[tuple[Pool, float, float], ...]
    slo_ttft_s: float
    interruptions_per_node_hour: float
    seed: int

    def run(self, name: str) -> Result:
        m = self.capacity
        # KEDA on the gateway's queue: scale as it reaches the lowest degrade threshold (per replica).
        keda = min(self.gateway.admission.degrade_queue.values()) / max(1, m.onprem_replicas)
        policy = make_policy(
            name,
            m,
            peak_need=m.missing(max(self.minute_load)),
            peaks=self.peaks,
            keda_threshold=keda,
        )
        return self.simulation(policy).run()

    def simulation(self, policy: Policy) -> Simulation:
        return Simulation(
            arrivals=self.arrivals,
            policy=policy,
            capacity=self.capacity,
            onprem=self.onprem,
            onprem_replicas=self.capacity.onprem_replicas,
            burst=self.burst,
            prices=self.prices,
            horizon_s=self.horizon_s,
            replica_rps=self.replica_rps,
            minute_load=self.minute_load,
            spot_max_price=self.spot_max_price,
            interruptions_per_node_hour=self.interruptions_per_node_hour,
            outages=self.outages,
            initial_nodes=self.initial_nodes,
            distilled=self.distilled,
            gateway=self.gateway,
            tenant_limit_rps=self.tenant_limit_rps,
            seed=self.seed,
            slo_ttft_s=self.slo_ttft_s,
        )

    def bound(self, name: str) -> BoundResult:
        """The exact cost bound `name` (gpufleet.sim.bounds) for this scenario's need per minute,
        pools, prices, boot time, node bound and cap."""
        pools = [p for p in self.prices.pools if p.instance_type in self.burst]
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


def replica_seconds(hw: ReplicaHardware, request: Request) -> float:
    """Seconds of one replica's nominal capacity a request takes: its prefill and its decode."""
    return request_seconds(hw, request.input_tokens, request.output_tokens)


def calendar(surges: Sequence[Surge], mode: str, seed: int) -> tuple[KnownPeak, ...]:
    """What the calendar says of `surges` in announce mode `mode`."""
    sign = -1.0 if seed % 2 == 0 else 1.0
    if mode == "none":
        return ()
    if mode == "exact":
        return tuple(KnownPeak(s.start_s, s.end_s, s.factor) for s in surges)
    if mode == "factor-wrong":
        return tuple(
            KnownPeak(s.start_s, s.end_s, max(1.0, s.factor * (1 + sign * FACTOR_ERROR))) for s in surges
        )
    if mode == "start-wrong":
        shift = -sign * START_ERROR_S
        return tuple(KnownPeak(s.start_s + shift, s.end_s + shift, s.factor) for s in surges)
    raise ValueError(f"unknown announce mode {mode!r}; one of {', '.join(ANNOUNCE_MODES)}")


def outages(pools: Sequence[Pool], horizon_s: float, seed: int) -> tuple[tuple[Pool, float, float], ...]:
    rng = random.Random(f"outages-{seed}")
    out = []
    for pool in pools:
        t = rng.expovariate(OUTAGES_PER_POOL_HOUR / 3600)
        while t < horizon_s:
            length = rng.uniform(*OUTAGE_S)
            out.append((pool, t, t + length))
            t += length + rng.expovariate(OUTAGES_PER_POOL_HOUR / 3600)
    return tuple(out)


def tenants(trace: Trace, copies: int, seed: int) -> Trace:
    """`copies` copies of the trace, each but the first shifted round the trace's length."""
    rng = random.Random(f"tenants-{seed}")
    period = max(trace.duration_s, 1.0)
    out = list(trace.requests)
    for _ in range(copies - 1):
        shift = rng.uniform(0, period)
        out += [
            Request((r.arrival_s + shift) % period, r.input_tokens, r.output_tokens) for r in trace.requests
        ]
    out.sort()
    return Trace(trace.name, tuple(out))


def build_scenario(
    inv: Inventory,
    source: str,
    trace: Trace,
    surges: Sequence[Surge],
    *,
    horizon_s: float,
    announce: str = "exact",
    boot_budget_s: float | None = None,
    interruptions_per_node_hour: float = INTERRUPTIONS_PER_NODE_HOUR,
    launch_failures: bool = True,
    seed: int = 0,
) -> Scenario:
    """`trace` covers `horizon_s` (see gpufleet.sim.trace.cover); `source` names the site file."""
    plan = plan_site(inv)
    if plan.burst is None or plan.serving is None or plan.serving.shape is None:
        missing = "burst" if plan.burst is None else "serving"
        raise InputError(
            source, [Problem(("site", missing), f"the site has no {missing} section to simulate")]
        )
    fleet = plan_fleet(inv, source)
    gateway = site_gateway(inv, plan, fleet)
    if gateway is None:
        raise InputError(source, [Problem(("site", "serving"), "the site renders no gateway to simulate")])
    capacity = CapacityModel.from_plan(plan, fleet, plan.burst.spot_max_price_usd)
    if boot_budget_s is not None:
        capacity = replace(capacity, boot_to_serve_s=boot_budget_s)
    for s in surges:
        if s.start_s < capacity.boot_to_serve_s or s.end_s > horizon_s:
            raise InputError(
                "--surge",
                [
                    Problem(
                        (),
                        f"x{s.factor:g} at {s.start_s:.0f}s for {s.duration_s:.0f}s must start after the "
                        f"first boot-to-serve time ({capacity.boot_to_serve_s:.0f}s, the warm start) and "
                        f"end within the {horizon_s:.0f}s horizon",
                    )
                ],
            )
    shape = plan.serving.shape
    onprem = ReplicaHardware(plan.serving.model, shape.gpu, shape.tensor_parallel)
    burst = {
        c.name: (ReplicaHardware(fleet.model, c.gpu, fleet.tensor_parallel), c.replicas)
        for c in fleet.instances
    }
    mean_work = sum(replica_seconds(onprem, r) for r in trace.requests) / len(trace.requests)
    volume = BASE_UTILISATION * capacity.onprem_replicas * horizon_s / (len(trace.requests) * mean_work)
    copies = max(1, math.ceil(volume / MAX_WEIGHT))
    weight = volume / copies
    base = tenants(trace, copies, seed)
    surged = apply_surges(base, list(surges), seed=seed)
    rng = random.Random(f"classes-{seed}")
    arrivals = tuple(Arrival(r, _klass(rng.random()), weight) for r in surged.requests)
    minutes = max(1, math.ceil(horizon_s / 60))

    def per_minute(requests: Sequence[Request]) -> list[float]:
        load = [0.0] * minutes
        for r in requests:
            load[min(minutes - 1, int(r.arrival_s // 60))] += weight * replica_seconds(onprem, r) / 60
        return load

    base_load = per_minute(base.requests)
    # TENANT_LIMIT's base: requests/s in the ordinary traffic's busiest rate window.
    windows = Counter(int(r.arrival_s // RATE_WINDOW_S) for r in base.requests)
    busiest = weight * max(windows.values(), default=1) / RATE_WINDOW_S
    per_onprem = shape.tensor_parallel // fleet.tensor_parallel
    distilled = (
        (
            ReplicaHardware(fleet.model, shape.gpu, fleet.tensor_parallel),
            per_onprem,
            swap_s(fleet.model, per_onprem / shape.nodes),
            swap_s(plan.serving.model, 1 / shape.nodes),
        )
        if capacity.distilled_per_replica > 0 and per_onprem > 0
        else None
    )
    first_type = fleet.instances[0].name
    initial = math.ceil(capacity.missing(max(base_load)) / capacity.capacity_of(first_type) - 1e-9)
    pools = pools_for(plan.burst.region, fleet.instance_types)
    return Scenario(
        arrivals=arrivals,
        capacity=capacity,
        onprem=onprem,
        fleet=fleet,
        burst=burst,
        prices=random_walk(pools, horizon_s, seed=seed),
        surges=tuple(KnownPeak(s.start_s, s.end_s, s.factor) for s in surges),
        peaks=calendar(surges, announce, seed),
        horizon_s=horizon_s,
        minute_load=tuple(per_minute(surged.requests)),
        base_peak_load=max(base_load),
        # What an operator sets --replica-rps to: one replica's nominal capacity over the mean
        # request of the site's ordinary traffic.
        replica_rps=1.0 / mean_work,
        weight=weight,
        initial_nodes=min(initial, capacity.max_nodes),
        distilled=distilled,
        gateway=gateway,
        tenant_limit_rps={k: SURGE_SOLD * share * busiest for k, share in CLASS_SHARES},
        spot_max_price=plan.burst.spot_max_price_usd,
        outages=outages(pools, horizon_s, seed) if launch_failures else (),
        slo_ttft_s=plan.serving.slo_ttft_p99_s,
        interruptions_per_node_hour=interruptions_per_node_hour,
        seed=seed,
    )


def _klass(x: float) -> str:
    for name, share in CLASS_SHARES:
        if x < share:
            return name
        x -= share
    return CLASS_SHARES[-1][0]

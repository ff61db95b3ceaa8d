"""Burst decisions, pure: from a window of signals and a capacity model to desired Spot nodes.

Nothing here reads a clock, a file or the network. The simulator and the controller feed the
same functions, so what the benchmark measures is what runs in production.

Units: load and capacity are counted in *replicas* of the site's own (on-prem) model: offered
load is the arrival rate of work divided by one on-prem replica's throughput (1.0 = one replica
fully busy), and a burst node adds its instance type's capacity in the same unit (the fleet plan's
roofline: a distilled model on L40S adds a third of a replica per node, on H200 three and more).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gpufleet.burst.hardware import SHAPES, ReplicaHardware, relative_capacity, swap_s
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.plan.aws import BurstFleet
from gpufleet.plan.site import SitePlan

# AWS gives two minutes between the interruption warning and the reclaim.
SPOT_NOTICE_S = 120.0
# KV-cache use (TensorRT-LLM's block fraction) from which scale-in waits, and at which requests
# that wait are waiting for cache blocks rather than for compute.
KV_CACHE_HIGH = 0.9
KV_CACHE_FULL = 0.95


@dataclass(frozen=True, order=True)
class Pool:
    """A Spot capacity pool: one instance type in one availability zone."""

    instance_type: str
    az: str

    def __str__(self) -> str:
        return f"{self.instance_type}/{self.az}"


@dataclass(frozen=True)
class Node:
    id: str
    pool: Pool
    ready: bool
    draining: bool
    launched_at: float
    inflight: int
    # The Spot max price it was launched with ($/h): AWS reclaims the node rather than bill above it,
    # which is what makes the $/hour cap hold between two decisions when prices move.
    max_price: float


@dataclass(frozen=True)
class Signals:
    """One sample of what the metrics say, aggregated over the sample interval."""

    t: float
    load_replicas: float
    queue_wait_s: float
    pending: int
    gpu_util: float
    # What serves now, in on-prem replica equivalents (on-prem plus ready burst nodes).
    ready_replicas: float
    # p99 time to first response over the interval, and the KV cache's used fraction (TensorRT-LLM):
    # None where the serving stack does not report them.
    ttft_s: float | None = None
    kv_cache_used: float | None = None
    # Requests waiting in the gateway's queue for the primary backend (HAProxy's exporter).
    gateway_queue: float = 0.0


@dataclass(frozen=True)
class KnownPeak:
    """A peak announced ahead (a promotion): load times `factor` during [start_s, end_s)."""

    start_s: float
    end_s: float
    factor: float


@dataclass(frozen=True)
class CapacityModel:
    onprem_replicas: int
    # What a burst node adds, in on-prem replicas: per instance type where known (`node_capacity`),
    # else `replicas_per_node`, which is also the least any type adds (what a node of a type the
    # group picks itself is counted as before it is seen).
    replicas_per_node: float
    max_nodes: int
    max_hourly_usd: float
    boot_to_serve_s: float
    slo_queue_wait_s: float
    # One Spot max price for all burst nodes when the group sets it (SpotMaxPrice); None: each
    # node's own, its launch price plus headroom.
    fleet_max_price: float | None = None
    # Continuous batching keeps queue wait near zero until a replica saturates, then it explodes:
    # plan for this much of each replica's throughput.
    target_utilisation: float = 0.85
    # p99 time to first token; None: the site holds only the queue-wait SLO.
    slo_ttft_s: float | None = None
    node_capacity: Mapping[str, float] = field(default_factory=dict)
    # What one on-prem replica's GPUs serve running the burst fleet's distilled model instead, in
    # on-prem replicas (the fleet plan's roofline for a burst type of the same GPU); 0: none known.
    distilled_per_replica: float = 0.0
    # Seconds a replica serves nothing while it loads the distilled model's weights.
    distilled_swap_s: float = 0.0

    @classmethod
    def from_plan(cls, site: SitePlan, fleet: BurstFleet, fleet_max_price: float | None) -> CapacityModel:
        """The site's serving and burst plans; `fleet_max_price` as deployed (or as planned)."""
        if site.burst is None or site.serving is None:
            raise ValueError(f"site {site.site} plans no burst or no serving")
        capacity = _node_capacity(site, fleet)
        return cls(
            onprem_replicas=site.serving.replicas,
            replicas_per_node=min(capacity.values()),
            node_capacity=capacity,
            max_nodes=site.burst.max_nodes,
            max_hourly_usd=site.burst.max_hourly_usd,
            boot_to_serve_s=site.burst.boot_to_serve_s,
            slo_queue_wait_s=site.serving.slo_queue_wait_p99_s,
            fleet_max_price=fleet_max_price,
            slo_ttft_s=site.serving.slo_ttft_p99_s,
            distilled_per_replica=_distilled(site, fleet),
            distilled_swap_s=_distilled_swap_s(site, fleet),
        )

    def degrading_pays(self) -> bool:
        """Whether moving a replica to the distilled model serves more before burst capacity
        arrives: the replica serves nothing while it loads, then the gain until a boot-to-serve
        from now must repay that."""
        gain = self.distilled_per_replica - 1.0
        return gain * (self.boot_to_serve_s - self.distilled_swap_s) > self.distilled_swap_s

    def booting(self, nodes: Sequence[Node]) -> bool:
        return self.burst_capacity(nodes) > self.burst_capacity(nodes, ready_only=True) + 1e-9

    def capacity_of(self, instance_type: str) -> float:
        return self.node_capacity.get(instance_type, self.replicas_per_node)

    def burst_capacity(self, nodes: Sequence[Node], ready_only: bool = False) -> float:
        """On-prem replica equivalents of the live (not draining) burst nodes."""
        return sum(
            self.capacity_of(n.pool.instance_type)
            for n in nodes
            if not n.draining and (n.ready or not ready_only)
        )

    def missing(self, load_replicas: float, utilisation: float | None = None) -> float:
        """Burst capacity (on-prem replica equivalents) that on-prem lacks to carry the load at the
        utilisation."""
        u = utilisation or self.target_utilisation
        return max(0.0, load_replicas / u - self.onprem_replicas)

    def pressure(self, s: Signals) -> str:
        """Why scale-in must wait: a latency at half its SLO or more, or a KV cache nearly full."""
        if s.queue_wait_s > self.slo_queue_wait_s / 2:
            return f"queue wait {s.queue_wait_s:.2f}s"
        if s.ttft_s is not None and self.slo_ttft_s is not None and s.ttft_s > self.slo_ttft_s / 2:
            return f"TTFT p99 {s.ttft_s:.2f}s"
        if s.kv_cache_used is not None and s.kv_cache_used >= KV_CACHE_HIGH:
            return f"KV cache {s.kv_cache_used:.0%} used"
        return ""

    def breach(self, recent: Sequence[Signals]) -> str:
        """An SLO missed on every sample of `recent`, or requests waiting on a full KV cache: the
        load model says capacity suffices and the servers say it does not (long prompts, long
        answers, a KV cache too small for the batch)."""
        if not recent:
            return ""
        if all(s.queue_wait_s > self.slo_queue_wait_s for s in recent):
            return f"queue wait over its {self.slo_queue_wait_s:g}s SLO"
        ttft = self.slo_ttft_s
        if ttft is not None and all(s.ttft_s is not None and s.ttft_s > ttft for s in recent):
            return f"TTFT p99 over its {ttft:g}s SLO"
        if all(
            s.kv_cache_used is not None and s.kv_cache_used >= KV_CACHE_FULL and s.pending for s in recent
        ):
            return "requests waiting on a full KV cache"
        return ""


def _site_replica(site: SitePlan) -> ReplicaHardware | None:
    serving = site.serving
    if serving is None or serving.shape is None or serving.model not in SHAPES:
        return None
    return ReplicaHardware(serving.model, serving.shape.gpu, serving.shape.tensor_parallel)


def _node_capacity(site: SitePlan, fleet: BurstFleet) -> dict[str, float]:
    """What each burst type adds in on-prem replicas, from the hardware (gpufleet.burst.hardware:
    prefill and decode of the nominal request); the fleet plan's decode roofline where the site's
    model has no known shape."""
    own = _site_replica(site)
    if own is None or fleet.model not in SHAPES:
        return dict(fleet.capacity)
    return {
        c.name: relative_capacity(ReplicaHardware(fleet.model, c.gpu, fleet.tensor_parallel), c.replicas, own)
        for c in fleet.instances
    }


def _distilled_swap_s(site: SitePlan, fleet: BurstFleet) -> float:
    own = _site_replica(site)
    if own is None or site.serving is None or site.serving.shape is None:
        return 0.0
    return swap_s(fleet.model, own.gpus // fleet.tensor_parallel / site.serving.shape.nodes)


def _distilled(site: SitePlan, fleet: BurstFleet) -> float:
    """What one on-prem replica's GPUs serve running the fleet's distilled model, in on-prem replicas."""
    own = _site_replica(site)
    if own is None or fleet.model not in SHAPES or own.gpus % fleet.tensor_parallel:
        return 0.0
    distilled = ReplicaHardware(fleet.model, own.gpu, fleet.tensor_parallel)
    return relative_capacity(distilled, own.gpus // fleet.tensor_parallel, own)


@dataclass(frozen=True)
class Launch:
    pool: Pool
    max_price: float


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    launch: tuple[Launch, ...] = ()
    drain: tuple[str, ...] = ()
    # On-prem replicas to serve the lower classes (P1, P2) from the distilled model (lever 1),
    # carried out by the controller's Degrader. Admission is not the policy's: the controller
    # tightens the gateways while capacity boots and the site is overloaded
    # (gpufleet.burst.controller.tighten_admission).
    degraded: int = 0

    @property
    def acts(self) -> bool:
        return bool(self.launch or self.drain)


# --- placement: where new nodes go, and within which budget -------------------------------

# Pools priced within this factor of the cheapest count as equally good; nodes spread over them
# so that one pool's reclaim takes only part of the burst capacity.
DIVERSIFY_BAND = 1.25
# A node's max price is its launch price plus this headroom (never above on-demand): enough to
# ride ordinary price moves, and what the cap budget reserves for it.
MAX_PRICE_HEADROOM = 0.3


def committed_usd(nodes: Sequence[Node]) -> float:
    """The most the live fleet can cost per hour: AWS never bills a node above its max price."""
    return sum(n.max_price for n in nodes)


def place(
    need: float,
    nodes: Sequence[Node],
    prices: Mapping[Pool, float],
    cap_usd: float | None,
    avoid: frozenset[Pool] = frozenset(),
    fleet_max_price: float | None = None,
    capacity: Callable[[str], float] = lambda _type: 1.0,
    room: int | None = None,
) -> tuple[tuple[Launch, ...], str]:
    """Pools for new nodes that add `need` on-prem replicas of capacity, each node its type's:
    cheapest per replica of capacity first (as an Auto Scaling group weighs instance types by
    capacity units), spread over pools within DIVERSIFY_BAND of that, at most `room` nodes and
    none smaller than what each remaining slot must bring. Small nodes that are cheap for a small
    need would fill a node bound that a later, larger need then cannot use.

    With a cap, each launch reserves its max price and stops when the next would cross the cap,
    so the fleet's bill stays under it whatever prices do later. Without (the baselines), every
    node goes to the cheapest pool at the default max price, on-demand.

    `fleet_max_price`: one Spot max price for every node (an Auto Scaling group's SpotMaxPrice);
    each node then reserves it, and pools priced above it are not offered.
    """
    offered = {p: price for p, price in prices.items() if p not in avoid} or dict(prices)
    if fleet_max_price is not None:
        offered = {p: price for p, price in offered.items() if price <= fleet_max_price}

    def reserve(pool: Pool) -> float:
        return fleet_max_price if fleet_max_price is not None else max_price_for(pool, offered[pool])

    def per_replica(pool: Pool) -> float:
        return offered[pool] / capacity(pool.instance_type)

    def big_enough(pools: list[Pool], missing: float) -> list[Pool]:
        """Under a node bound, nodes at least as big as what each remaining slot must bring."""
        if room is None or not pools:
            return pools
        each = missing / max(1, room - len(launches))
        fit = [p for p in pools if capacity(p.instance_type) >= each - 1e-9]
        return fit or [max(pools, key=lambda p: (capacity(p.instance_type), -offered[p]))]

    launches: list[Launch] = []
    added = 0.0

    def more() -> bool:
        return added < need - 1e-9 and (room is None or len(launches) < room)

    if not offered:
        return (), ""
    if cap_usd is None:
        while more():
            pools = big_enough(list(offered), need - added)
            pool = min(pools, key=lambda p: (per_replica(p), p))
            launches.append(Launch(pool, AWS_GPU_INSTANCES[pool.instance_type].on_demand_usd_hour))
            added += capacity(pool.instance_type)
        return tuple(launches), ""
    spread = Counter(n.pool for n in nodes if not n.draining)
    budget = cap_usd - committed_usd(nodes)
    while more():
        missing = need - added
        affordable = big_enough([p for p in offered if reserve(p) <= budget + 1e-9], missing)
        if not affordable:
            return tuple(launches), f"the ${cap_usd:g}/h cap leaves ${max(budget, 0):.2f}/h"
        floor = min(per_replica(p) for p in affordable)
        band = [p for p in affordable if per_replica(p) <= floor * DIVERSIFY_BAND]
        pool = min(band, key=lambda p: (spread[p], per_replica(p), p))
        launch = Launch(pool, reserve(pool))
        launches.append(launch)
        spread[pool] += 1
        budget -= launch.max_price
        added += capacity(pool.instance_type)
    if added < need - 1e-9:
        return tuple(launches), f"the {room}-node room left under the bound"
    return tuple(launches), ""


def max_price_for(pool: Pool, price: float) -> float:
    od = AWS_GPU_INSTANCES[pool.instance_type].on_demand_usd_hour
    return round(max(price, min(od, price * (1 + MAX_PRICE_HEADROOM))), 4)


def fewest_inflight(nodes: Sequence[Node], count: int) -> tuple[str, ...]:
    """Scale-in victims: nodes not serving yet first, then those with the fewest requests in flight."""
    live = [n for n in nodes if not n.draining]
    order = sorted(live, key=lambda n: (n.ready, n.inflight, -n.max_price, n.id))
    return tuple(n.id for n in order[: max(0, count)])


def newest_first(nodes: Sequence[Node], count: int) -> tuple[str, ...]:
    """What a Kubernetes ReplicaSet does on scale-down: not-ready pods first, then the newest."""
    live = [n for n in nodes if not n.draining]
    order = sorted(live, key=lambda n: (n.ready, -n.launched_at, n.id))
    return tuple(n.id for n in order[: max(0, count)])


# --- policies -------------------------------------------------------------------------------


class Policy(Protocol):
    name: str
    model: CapacityModel
    tick_s: float
    # Whether launches respect the $/hour cap (gpufleet and the oracle) or not (the baselines).
    cap_aware: bool

    def decide(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision: ...

    def on_notice(
        self, t: float, node: Node, nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision: ...

    def initial_capacity(self) -> float: ...


def live_count(nodes: Sequence[Node]) -> int:
    return sum(1 for n in nodes if not n.draining)


def signals_since(window: Sequence[Signals], t: float, seconds: float) -> list[Signals]:
    return [s for s in window if s.t > t - seconds] or list(window[-1:])


@dataclass
class FleetPolicy:
    model: CapacityModel

    name = "base"
    tick_s = 15.0
    cap_aware = False

    def initial_capacity(self) -> float:
        return 0.0

    def on_notice(
        self, t: float, node: Node, nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        # The usual autoscalers do not read Spot warnings: the node simply disappears two minutes later.
        return Decision(live_count(nodes), "interruption warning ignored")

    def _to(self, need: float, reason: str, nodes: Sequence[Node], prices: Mapping[Pool, float]) -> Decision:
        """Launch until the burst fleet holds `need` on-prem replicas of capacity, or drain the
        nodes (in this policy's order) that it can do without."""
        m = self.model
        live = [n for n in nodes if not n.draining]
        have = m.burst_capacity(nodes)
        if need > have + 1e-9:
            launch, capped = place(
                need - have,
                nodes,
                prices,
                m.max_hourly_usd if self.cap_aware else None,
                fleet_max_price=m.fleet_max_price,
                capacity=m.capacity_of,
                room=max(0, m.max_nodes - len(live)),
            )
            reason = f"{reason}; {capped}" if capped else reason
            return Decision(len(live) + len(launch), reason, launch=launch)
        by_id = {n.id: n for n in live}
        drain: list[str] = []
        for node_id in self._victims(nodes, len(live)):
            size = m.capacity_of(by_id[node_id].pool.instance_type)
            if have - size >= need - 1e-9:
                drain.append(node_id)
                have -= size
        return Decision(len(live) - len(drain), reason, drain=tuple(drain))

    def _victims(self, nodes: Sequence[Node], count: int) -> tuple[str, ...]:
        return newest_first(nodes, count)

    def _replace(self, node: Node, nodes: Sequence[Node], prices: Mapping[Pool, float]) -> Decision:
        """Drain a node under an interruption warning and launch its capacity again before it goes,
        in other pools (its own is being reclaimed), within the cap and the node bound. The warned
        node still runs, and is billed, until it is reclaimed (a rebalance recommendation may never
        be followed by a reclaim): its reservation stays until it is gone, so a fleet at the cap
        or the bound replaces it only then, on the next decision."""
        m = self.model
        launch, capped = place(
            m.capacity_of(node.pool.instance_type),
            nodes,
            prices,
            m.max_hourly_usd,
            avoid=frozenset({node.pool}),
            fleet_max_price=m.fleet_max_price,
            capacity=m.capacity_of,
            room=max(0, m.max_nodes - live_count(nodes)),
        )
        reason = (
            f"interruption warning for {node.id}: drain, replace in {', '.join(str(x.pool) for x in launch)}"
            if launch
            else f"interruption warning for {node.id}: drain; no replacement, {capped}"
        )
        return Decision(live_count(nodes), reason, launch, (node.id,))


@dataclass
class Gpufleet(FleetPolicy):
    """Offered load against the capacity model, held at its peak over the quiet period; a trend
    term for load still climbing; announced peaks; a missed SLO or a full KV cache; quiet-period
    scale-in with hysteresis; the $/hour cap; replacement on interruption warnings.

    Announced peaks normalise the load: a sample taken while a peak of factor f runs counts as
    load / f of *base* load, and capacity is planned for the held base load times the highest
    factor due within one boot-to-serve time. So the announced rise is not counted twice (once
    by the calendar, once by the rise term), capacity is there when a peak starts, and it goes
    when the peak's end is due instead of a quiet period later. A wrong announcement corrects
    itself: the plan follows the measured load, only divided by what the calendar explains."""

    peaks: tuple[KnownPeak, ...] = ()
    # Load is the mean over this window: one scrape of a bursty LLM load is noise.
    average_s: float = 60.0
    quiet_s: float = 300.0
    cooldown_s: float = 120.0
    # Scale-in plans for a utilisation this much lower (relative) than scale-up: the hysteresis
    # band that keeps a load near a threshold from flapping a node in and out.
    hysteresis: float = 0.2
    # Trend: when the last five minutes' mean base load is `rise_from` times the five before's,
    # load is taken to climb on by as much again, adding that increase to the last five minutes'
    # peak (at most `rise_max` times it). Additive: a ratio of two near-idle minutes means nothing.
    rise_s: float = 300.0
    rise_from: float = 1.3
    rise_max: float = 1.5
    name = "gpufleet"
    tick_s = 15.0
    cap_aware = True
    _bases: deque[tuple[float, float]] = field(default_factory=deque)
    _last_scale_in: float = -math.inf
    _last_scale_up: float = -math.inf
    _keep_booting: bool = False
    _degraded: int = 0

    def decide(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        decision = self._scale(t, window, nodes, prices)
        return replace(decision, degraded=self._degrade(t, window, nodes))

    def _degrade(self, t: float, window: Sequence[Signals], nodes: Sequence[Node]) -> int:
        """While capacity boots and the SLO stays missed, where the distilled model serves more on
        the same GPUs: move one more on-prem replica to it for P1 and P2 each step (at most half
        of them: P0 keeps the rest), where that repays its swap before burst capacity arrives.
        Nothing boots and no pressure: all back to the site's model."""
        m = self.model
        if not window:
            return self._degraded
        recent = signals_since(window, t, self.average_s)
        short = bool(m.pressure(window[-1])) or bool(m.breach(recent))
        booting = m.booting(nodes)
        if booting and m.breach(recent) and m.degrading_pays():
            self._degraded = min(self._degraded + 1, m.onprem_replicas // 2)
        elif not booting and not short:
            self._degraded = 0
        return self._degraded

    def _scale(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        m = self.model
        recent = signals_since(window, t, self.average_s)
        load = sum(s.load_replicas for s in recent) / len(recent)
        base = sum(s.load_replicas / self.factor_at(s.t) for s in recent) / len(recent)
        ahead = self._factor_ahead(t)
        self._bases.append((t, base))
        keep = max(self.quiet_s, self._lead())
        while self._bases[0][0] < t - keep:
            self._bases.popleft()
        # Around a peak's start, its level comes from the base's worst minute over a whole boot
        # time: capacity ordered then serves the peak's first minutes, whatever the base does.
        look = keep if self._near_start(t) else self.quiet_s
        # LLM traffic comes in bursts of a minute or two: capacity sized for the mean flaps.
        held = max(v for s, v in self._bases if s > t - look) * ahead
        latest = max(v for s, v in self._bases if s > t - self.quiet_s) * ahead
        rise, climb = self._rise(window, t)
        # The trend extends the recent peak; a peak held over a longer look-back is a floor to it.
        trend = min(latest + climb * ahead, latest * self.rise_max) if rise >= self.rise_from else latest
        projected = max(held, trend)
        live = live_count(nodes)
        have = m.burst_capacity(nodes)
        need = m.missing(projected)
        peak_note = f", announced peak x{ahead:g}" if ahead != 1.0 else ""
        why = f"load {load:.2f} replicas, planned peak {projected:.2f}, rise x{rise:.2f}{peak_note}"
        breach = m.breach(recent)
        if breach and need <= have + 1e-9 and have == m.burst_capacity(nodes, ready_only=True):
            # One more of the smallest node's worth, and only while none is booting: the next
            # comes if this was not enough.
            need, why = have + m.replicas_per_node, f"{why}; {breach}"
        if need > have + 1e-9:
            up = self._to(need, f"{why} -> {need:.2f} replicas on burst", nodes, prices)
            if up.launch:
                self._last_scale_up = t
            return up
        down = m.missing(projected, m.target_utilisation * (1 - self.hysteresis))
        # What was ordered is not drained while it boots, until a boot and a quiet period have
        # passed (then its boot failed): the quiet period after a one-minute breach is shorter than
        # a boot, and draining it then pays a boot for nothing and orders it again at the next one.
        self._keep_booting = t - self._last_scale_up < self._lead() + self.quiet_s
        scale_in = self._to(
            down, f"{why}; quiet {self.quiet_s:.0f}s -> {down:.2f} replicas on burst", nodes, prices
        )
        quiet_enough = bool(window) and window[0].t <= t - self.quiet_s
        saturated = m.pressure(window[-1])
        cooled = t - self._last_scale_in >= self.cooldown_s
        if scale_in.drain and quiet_enough and not saturated and cooled:
            self._last_scale_in = t
            return scale_in
        held_by = f" ({saturated})" if saturated and scale_in.drain else ""
        return Decision(live, f"{why}; hold {live}{held_by}")

    def factor_at(self, t: float) -> float:
        """What the calendar multiplies base load by at `t` (overlapping peaks multiply)."""
        return math.prod(p.factor for p in self.peaks if p.start_s <= t < p.end_s)

    def _lead(self) -> float:
        return self.model.boot_to_serve_s + 2 * self.tick_s

    def _near_start(self, t: float) -> bool:
        return any(p.start_s - self._lead() <= t < p.start_s + self.quiet_s for p in self.peaks)

    def _factor_ahead(self, t: float) -> float:
        """The highest factor due from now until capacity ordered now would serve."""
        starts = [t, *(p.start_s for p in self.peaks if t < p.start_s <= t + self._lead())]
        return max(self.factor_at(s) for s in starts)

    def _rise(self, window: Sequence[Signals], t: float) -> tuple[float, float]:
        """Mean base load of the last `rise_s` against the `rise_s` before, as (ratio, increase):
        the rise the calendar does not explain."""
        last = [s.load_replicas / self.factor_at(s.t) for s in window if s.t > t - self.rise_s]
        before = [
            s.load_replicas / self.factor_at(s.t)
            for s in window
            if t - 2 * self.rise_s < s.t <= t - self.rise_s
        ]
        if not last or not before or sum(before) <= 0:
            return 1.0, 0.0
        now, then = sum(last) / len(last), sum(before) / len(before)
        return now / then, max(0.0, now - then)

    def on_notice(
        self, t: float, node: Node, nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        return self._replace(node, nodes, prices)

    def _victims(self, nodes: Sequence[Node], count: int) -> tuple[str, ...]:
        if self._keep_booting:
            nodes = [n for n in nodes if n.ready]
        return fewest_inflight(nodes, count)

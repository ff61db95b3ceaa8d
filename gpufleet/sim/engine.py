"""Discrete-event simulation of a serving fleet driven by the production burst controller.

One path: every decision comes from `gpufleet.burst.controller.Controller.step` (signal -> decide ->
actuate) and every Spot warning from `gpufleet.burst.interrupt.handle` with the controller's
`replacement`, exactly as `gpufleet burst run` wires them. The simulation stands in only where the
controller meets the outside world:

- Prometheus: `SimPrometheus` answers the controller's own PromQL queries (`PrometheusQuery.queries`)
  with the HTTP API's JSON body, computed from Triton's counters as the simulated servers keep them
  (nv_inference_request_success, nv_inference_queue_duration_us, nv_inference_pending_request_count,
  nv_gpu_utilization, nv_inference_first_response_histogram_ms) and scraped every `scrape_s`; the
  controller parses them with production's code. The per-model series count the on-prem model's
  replicas only (the primary backend), as the query's `model=` label selects them in production:
  the burst and degraded replicas serve the distilled model, which the gateway's own
  fallback-rate series counts instead. It answers nothing for TensorRT-LLM's series,
  which a vLLM backend does not export.
- AWS: `SimAutoscaling` and `SimEc2` answer the boto3 calls production's AsgActuator, SpotPrices and
  fleet_view make (describe_auto_scaling_groups, set_desired_capacity,
  terminate_instance_in_auto_scaling_group, describe_spot_price_history); the group launches into
  its overrides in priority order (capacity-optimized-prioritized), balanced over zones, and a pool
  without Spot capacity fails the launch (the next type is tried; none: retried a minute later).
- Pulumi: `SimStack.set_burst_nodes` sets the group's desired capacity, as the burst stack's up does.
- Kubernetes: no API: a retired or warned node is drained by the simulated group (no new requests,
  those in flight finish, then it goes; a reclaim cuts the rest off and they start over).

The gateway is production's: the site's own `GatewayPlan` (gpufleet.plan.admission.site_gateway,
the one the on-prem stack renders into haproxy.cfg), its rules applied in haproxy.cfg's order to
each arrival (`_route`):
1. over the tenant's limit (HAProxy's `http_req_rate` over RATE_WINDOW_S, every request counted,
   the refused ones too): 429;
2. while the controller says capacity boots (`set_booting`, the admission map): P2 shed, P1 shed
   over BOOT_P1_SHARE of its limit;
3. P1/P2 with `queue(primary)` at their class's degrade threshold: shed when the fallback has no
   server or its queue reaches `shed_queue` per serving server (`queue(fallback)` less
   `nbsrv(fallback) x shed_queue`), else to the fallback;
4. the rest, P0 always, to the primary.
The primary backend is the on-prem replicas serving the site's model: one Service server with
`maxconn` = its planned slots (replicas x max_num_seqs). The fallback is one server per serving
replica of the distilled model (each ready burst replica, and each on-prem replica degraded to it),
`maxconn` = its `server-template`'s: its class's max_num_seqs (a burst replica's by its GPU, a
degraded one's the on-prem template's); `slots(fallback)` sums those of the replicas serving. A backend's HAProxy queue is what it holds past its `maxconn`;
what is inside `maxconn` and not yet running waits in the engines (for sequence slots or KV).
Each backend queues by class (HAProxy's priority queue: P0, then P1, then P2; a class whose head
cannot start holds the classes behind it). A request still in HAProxy's queue after `timeout
queue` (the primary: p0_queue_timeout_s; the fallback: ceil(SLO)) fails (503): it is scored with
that wait and no first token. A request routed is never routed again.

Serving (per replica, the model's own speed from gpufleet.burst.hardware): a request starts on the
backend's replica with the most room when it has a sequence slot (the engine's max_num_seqs, the
backend's slots; a weighted group takes one when its middle member fits) and KV cache for its
prompt and answer, is prefilled one after another at the prefill rate (compute-bound; vLLM's
chunked prefill rides along the memory-bound decode steps, so decode is not paused for it), then
decodes with the others: each step advances every sequence by one token and takes the roofline's
time for the batch and its KV cache. Queue wait (arrival to start) and time to first token (to the
end of prefill plus one step) are what the SLOs score.

What this cannot see: Triton's queue duration in the simulated counters is the whole wait,
HAProxy's queue included (production's Triton sees only the part inside `maxconn`; its pending
count is modelled as that part); a cut-off request on a reclaimed node starts over in the
fallback's queue (production's client gets an error and retries); HAProxy's queue and the engine's
are both taken as priority-ordered.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from gpufleet.burst.actuate import Applied, AsgActuator
from gpufleet.burst.controller import Controller, PrometheusSource, SpotPrices
from gpufleet.burst.hardware import ReplicaHardware
from gpufleet.burst.interrupt import Drainer, Warning, handle
from gpufleet.burst.policy import SPOT_NOTICE_S, CapacityModel, Policy, Pool
from gpufleet.burst.signal import PrometheusQuery, histogram_quantile, parse_query_response
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.plan.admission import (
    FALLBACK,
    OVER_LIMIT,
    PRIMARY,
    RATE_WINDOW_S,
    SHED,
    GatewayPlan,
    boot_limit,
    limit_per_window,
)
from gpufleet.sim.prices import PriceSeries
from gpufleet.sim.trace import Request

GROUP = "gpufleet-burst-sim"
# Event kinds, in the order they run when they share an instant.
(
    _PRICE,
    _PREFILLED,
    _DONE,
    _ARRIVE,
    _TIMEOUT,
    _READY,
    _RECONCILE,
    _SWAPPED,
    _NOTICE,
    _RECLAIM,
    _SCRAPE,
    _TICK,
) = range(12)
# After the horizon the fleet serves what is queued, for at most this long.
_DRAIN_LIMIT_S = 1800.0
# Triton's first-response histogram buckets (ms) as the serving stack configures them.
TTFT_BUCKETS_MS = (50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, math.inf)
CLASSES = ("P0", "P1", "P2")
BACKENDS = (PRIMARY, FALLBACK)


@dataclass(frozen=True)
class Arrival:
    """A trace request as the gateway sees it: `weight` identical requests of class `klass`."""

    request: Request
    klass: str
    weight: float = 1.0


class Routed(NamedTuple):
    """One arrival as the gateway's log would have it: the fetches its rules read, and the backend."""

    klass: str
    rate: float  # sc_http_req_rate(0): the tenant's requests in the rate window, this one included
    limit: int
    booting: bool
    queue_primary: float  # queue(primary)
    fallback_servers: int  # nbsrv(fallback)
    avg_queue_fallback: float  # queue(fallback) / nbsrv(fallback), exactly
    backend: str  # primary, fallback, shed or over_limit


@dataclass(frozen=True)
class Minute:
    minute: int
    load_replicas: float
    ready_replicas: float
    p99_queue_wait_s: float
    p99_ttft_s: float
    spend_usd_hour: float


@dataclass(frozen=True)
class Result:
    policy: str
    slo_ok_minutes_pct: float
    # A minute is served only if its admitted p99s hold AND shed + failed <= 1% of its offered
    # requests: slo_ok_minutes_pct scores the admitted alone, so a policy that sheds more looks better.
    served_minutes_pct: float
    p0_violation_minutes: int
    slo_violation_minutes: int
    p99_queue_wait_s: float
    p99_ttft_s: float
    gpu_hours: float
    cost_usd: float
    cap_violations: int
    scale_actions: int
    degraded_requests_pct: float
    shed_requests_pct: float
    failed_requests_pct: float
    max_spend_usd_hour: float
    step_errors: int
    timeline: tuple[Minute, ...]
    decisions: tuple[tuple[float, str], ...]

    def summary(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "slo_ok_minutes_pct": round(self.slo_ok_minutes_pct, 2),
            "served_minutes_pct": round(self.served_minutes_pct, 2),
            "p0_violation_minutes": self.p0_violation_minutes,
            "slo_violation_minutes": self.slo_violation_minutes,
            "p99_queue_wait_s": round(self.p99_queue_wait_s, 3),
            "p99_ttft_s": round(self.p99_ttft_s, 3),
            "gpu_hours": round(self.gpu_hours, 2),
            "cost_usd": round(self.cost_usd, 2),
            "cap_violations": self.cap_violations,
            "scale_actions": self.scale_actions,
            "degraded_requests_pct": round(self.degraded_requests_pct, 2),
            "shed_requests_pct": round(self.shed_requests_pct, 2),
            "failed_requests_pct": round(self.failed_requests_pct, 2),
        }


class _Replica:
    """Continuous batching on one replica: a prefill queue, then a decode batch sharing its steps."""

    def __init__(
        self, hw: ReplicaHardware, node: _SimNode | None, now: float, backend: str, max_seqs: int
    ) -> None:
        self.hw = hw
        self.node = node
        self.backend = backend  # the gateway backend whose server it is
        self.max_seqs = max_seqs  # the engine's max_num_seqs
        self.kv = hw.kv_tokens
        self.prefill_rate = hw.prefill_tokens_s
        self.seqs = 0.0  # sequences admitted (prefill and decode)
        self.ctx = 0.0  # KV tokens reserved by them
        self.prefill: deque[int] = deque()
        self.prefilling = False
        self.dec_n = 0.0
        self.dec_ctx = 0.0
        self.v = 0.0  # tokens each decoding sequence has made (virtual time)
        self.last = now
        self.heap: list[tuple[float, int]] = []
        self.version = 0  # of the pending decode completion
        self.node_version = 0  # bumped when the node goes: its pending prefill is void
        self.busy_s = 0.0
        self._step_key = (-1.0, -1.0)
        self._step = 0.0

    def room(self, need_seqs: float, need_ctx: float) -> bool:
        if self.seqs == 0:
            return True  # a request larger than the whole cache still runs alone
        # A group of `weight` requests starts when its middle member has a slot: on average the
        # replica runs max_num_seqs sequences, as its single requests would.
        return self.seqs + need_seqs / 2 <= self.max_seqs and self.ctx + need_ctx <= self.kv

    def step_s(self) -> float:
        if self._step_key != (self.dec_n, self.dec_ctx):
            self._step_key = (self.dec_n, self.dec_ctx)
            self._step = self.hw.step_s(max(1, round(self.dec_n)), self.dec_ctx)
        return self._step

    def advance(self, now: float) -> None:
        dt = now - self.last
        self.last = now
        if dt <= 0:
            return
        if self.prefilling or self.dec_n > 0:
            self.busy_s += dt
        if self.dec_n > 0:
            self.v += dt / self.step_s()


@dataclass
class _OnPrem:
    """One on-prem replica's GPUs: the site's model, or (degraded) the distilled model's replicas."""

    primary: _Replica
    distilled: list[_Replica] = field(default_factory=list)
    mode: str = "primary"  # primary, distilled, or swapping (loading weights: takes nothing new)
    target: str = "primary"
    swap: int = 0

    def serving(self) -> list[_Replica]:
        if self.mode == "primary":
            return [self.primary]
        return self.distilled if self.mode == "distilled" else []


@dataclass
class _SimNode:
    id: str
    pool: Pool
    launched_at: float
    max_price: float
    state: str = "Pending"  # Pending -> InService -> Terminating -> gone
    gone: bool = False
    replicas: list[_Replica] = field(default_factory=list)
    warned: bool = False


class SimAutoscaling:
    """The boto3 autoscaling calls the controller makes, on the simulated group."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def describe_auto_scaling_groups(self, AutoScalingGroupNames: list[str]) -> dict[str, Any]:
        s = self.sim
        if AutoScalingGroupNames != [GROUP]:
            return {"AutoScalingGroups": []}
        distribution: dict[str, str] = {"SpotAllocationStrategy": "capacity-optimized-prioritized"}
        if s.spot_max_price is not None:
            distribution["SpotMaxPrice"] = f"{s.spot_max_price:.4f}"
        return {
            "AutoScalingGroups": [
                {
                    "AutoScalingGroupName": GROUP,
                    "DesiredCapacity": s.desired,
                    "MinSize": 0,
                    "MaxSize": s.capacity.max_nodes,
                    "Instances": [
                        {
                            "InstanceId": n.id,
                            "InstanceType": n.pool.instance_type,
                            "AvailabilityZone": n.pool.az,
                            "LifecycleState": n.state,
                        }
                        for n in s.nodes.values()
                    ],
                    "MixedInstancesPolicy": {
                        "LaunchTemplate": {"Overrides": [{"InstanceType": t} for t in s.instance_types]},
                        "InstancesDistribution": distribution,
                    },
                }
            ]
        }

    def set_desired_capacity(
        self, AutoScalingGroupName: str, DesiredCapacity: int, HonorCooldown: bool
    ) -> None:
        self.sim.set_desired(DesiredCapacity)

    def terminate_instance_in_auto_scaling_group(
        self, InstanceId: str, ShouldDecrementDesiredCapacity: bool
    ) -> None:
        node = self.sim.nodes.get(InstanceId)
        if node is None:
            raise KeyError(f"no instance {InstanceId}")
        if ShouldDecrementDesiredCapacity:
            self.sim.desired -= 1
        self.sim.drain(node)


class SimEc2:
    """EC2's Spot price history: the current price of each pool of the asked types."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def describe_spot_price_history(self, InstanceTypes: list[str], **_: Any) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.sim.now, UTC)
        return {
            "SpotPriceHistory": [
                {
                    "InstanceType": p.instance_type,
                    "AvailabilityZone": p.az,
                    "SpotPrice": f"{price:.4f}",
                    "Timestamp": stamp,
                }
                for p, price in self.sim.prices.at(self.sim.now).items()
                if p.instance_type in InstanceTypes
            ]
        }


@dataclass
class SimStack:
    """The burst stack: an up declares the group's desired capacity."""

    sim: Simulation

    def set_burst_nodes(self, count: int) -> Applied:
        self.sim.set_desired(count)
        return Applied(stack="sim", burst_nodes=count, summary="1 update")


class _NoKubernetes(Drainer):
    """The simulated group drains its own nodes: no Kubernetes node to find."""

    def node_for_instance(self, instance_id: str) -> str | None:
        return None


class SimPrometheus(PrometheusQuery):
    """Answers the controller's PromQL with the JSON Prometheus' HTTP API returns, computed from
    the scrapes of the simulated Triton counters within the query's window."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(base_url="http://prometheus.sim", model="sim")
        self.sim = sim
        self._names = {query: name for name, query in self.queries().items()}

    def _scalar(self, query: str) -> float | None:
        return parse_query_response(self.body(query))

    def body(self, query: str) -> bytes:
        value = self._value(self._names.get(query, ""))
        result = [] if value is None else [{"metric": {}, "value": [self.sim.now, repr(value)]}]
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()

    def _value(self, name: str) -> float | None:
        scrapes = [s for s in self.sim.scrapes if s[0] > self.sim.now - 60.0 - 1e-9]
        if not scrapes:
            return None
        first, last = scrapes[0], scrapes[-1]
        span = last[0] - first[0]
        if name == "pending":
            return last[3]
        if name == "gpu_util":
            return last[4]
        if name == "gateway_queue":
            return last[8]  # haproxy_backend_current_queue{proxy="primary"} at the last scrape
        if span <= 0:
            return None  # one sample has no rate: Prometheus returns an empty vector
        if name == "rps":
            return (last[1] - first[1]) / span
        if name == "shed_rps":
            return (last[6] - first[6]) / span
        if name == "degraded_rps":
            return (last[7] - first[7]) / span
        if name == "queue_wait_s":
            served = last[1] - first[1]
            return None if served <= 0 else (last[2] - first[2]) / served / 1e6
        if name == "queue_growth_rps":
            xs = [s[0] for s in scrapes]
            ys = [s[3] for s in scrapes]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            den = sum((x - mx) ** 2 for x in xs)
            return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den
        if name == "ttft_p99_s":
            delta = [(le, b - a) for le, a, b in zip(TTFT_BUCKETS_MS, first[5], last[5], strict=True)]
            p99 = histogram_quantile(0.99, delta)
            return None if p99 is None else p99 / 1000
        return None


@dataclass
class Simulation:
    arrivals: Sequence[Arrival]
    policy: Policy
    capacity: CapacityModel
    onprem: ReplicaHardware
    onprem_replicas: int
    # What a burst node runs: its replica's hardware and how many replicas, by instance type, in
    # the group's priority order.
    burst: dict[str, tuple[ReplicaHardware, int]]
    prices: PriceSeries
    horizon_s: float
    # Requests/s one on-prem replica serves, as the controller is configured (--replica-rps).
    replica_rps: float
    # Offered load per minute in on-prem replicas (the timeline's, never shown to a policy).
    minute_load: Sequence[float]
    # The site's gateway (gpufleet.plan.admission.site_gateway): thresholds, timeouts, slots.
    gateway: GatewayPlan
    # Each class's tenant limit at the gateway, requests/s (its limits map: x RATE_WINDOW_S).
    tenant_limit_rps: Mapping[str, float]
    spot_max_price: float | None = None
    interruptions_per_node_hour: float = 0.0
    # Pools without Spot capacity: (pool, from, to) windows in which a launch there fails.
    outages: Sequence[tuple[Pool, float, float]] = ()
    # Burst nodes serving at t=0 (warm start), launched into the group's priority order.
    initial_nodes: int = 0
    # Lever 1: the distilled model on one on-prem replica's GPUs: its replica hardware, how many,
    # and the seconds to load it and to load the site's model back; None: no degradation.
    distilled: tuple[ReplicaHardware, int, float, float] | None = None
    # False: the controller has no admission switch and no degrader (it only logs the count).
    levers: bool = True
    scrape_s: float = 15.0
    tick_s: float = 15.0
    seed: int = 0
    slo_ttft_s: float = 5.0

    @property
    def instance_types(self) -> list[str]:
        return list(self.burst)

    def run(self) -> Result:
        self.now = 0.0
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        # Per backend, HAProxy's priority queue: P0 first, then P1, then P2, each in arrival order.
        self.queue: dict[str, dict[str, deque[int]]] = {b: {k: deque() for k in CLASSES} for b in BACKENDS}
        # Weight queued (HAProxy's and the engines'), per backend and class.
        self._waiting = {b: dict.fromkeys(CLASSES, 0.0) for b in BACKENDS}
        self._inflight = {b: 0.0 for b in BACKENDS}  # weight started on the backend's replicas
        self._where: list[str | None] = [None] * len(self.arrivals)  # the backend it waits for
        self._enqueued = [0] * len(self.arrivals)  # times queued: a timeout of an earlier one is void
        self.booting = False
        self.routes: list[Routed] = []
        self.started_on: list[str | None] = [None] * len(self.arrivals)  # the backend of its replica
        # HAProxy's rate counters per tenant (one per class): period start, this period's and the last's.
        self._rate = {k: (0.0, 0.0, 0.0) for k in CLASSES}
        self._shed = [False] * len(self.arrivals)
        self._failed = [False] * len(self.arrivals)
        self._shed_w = self._limited_w = self._failed_w = self._degraded_w = self._total_w = 0.0
        self.nodes: dict[str, _SimNode] = {}
        self.desired = 0
        self._retrying = False
        self._serial = 0
        self._serving_now: list[_Replica] | None = None
        self._fallback_servers = 0
        self._fallback_slots = 0
        self._onprem = [_OnPrem(self._primary_replica()) for _ in range(self.onprem_replicas)]
        n = len(self.arrivals)
        self._wait = [math.nan] * n
        self._ttft = [math.nan] * n
        self._done = 0
        self._success = self._queue_us = 0.0
        self._ttft_counts = [0.0] * len(TTFT_BUCKETS_MS)
        self.scrapes: deque[
            tuple[float, float, float, float, float, tuple[float, ...], float, float, float]
        ] = deque(maxlen=16)
        self._busy_mark = 0.0
        self._spend_t = 0.0
        self._cost = self._gpu_s = self._max_spend = 0.0
        self._cap_minutes: set[int] = set()
        minutes = max(1, math.ceil(self.horizon_s / 60))
        self._m_ready = [0.0] * minutes
        self._m_spend = [0.0] * minutes
        self._decisions: list[tuple[float, str]] = []
        self._actions = 0
        self.controller = Controller(
            policy=self.policy,
            source=PrometheusSource(SimPrometheus(self)),
            prices=SpotPrices(SimEc2(self), self.instance_types),
            asg=AsgActuator(GROUP, self.capacity.max_nodes, SimAutoscaling(self)),
            pulumi=SimStack(self),
            replica_rps=self.replica_rps,
            clock=lambda: self.now,
            admission=self if self.levers else None,
            degrade=self if self.levers else None,
        )
        self._drainer = _NoKubernetes(core=None)

        for t in self.prices.times[1:]:
            self._push(t, _PRICE, None)
        if n:
            self._push(self.arrivals[0].request.arrival_s, _ARRIVE, 0)
        # Prometheus has scraped the servers before the controller starts (warm start).
        self._push(0.0, _SCRAPE, None)
        self._push(self.tick_s, _TICK, None)
        self.desired = self.initial_nodes
        self._reconcile(ready_now=True)

        limit = self.horizon_s + _DRAIN_LIMIT_S
        while self._events:
            t, kind, _, payload = heapq.heappop(self._events)
            if t > limit or (t > self.horizon_s and self._done == n and not self._queued()):
                break
            self.now = t
            self._handle(kind, payload)
        self._account(max(self.now, self.horizon_s))
        return self._result(minutes)

    # --- events ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, payload))

    def _handle(self, kind: int, payload: Any) -> None:
        if kind == _ARRIVE:
            self._arrive(payload)
        elif kind == _PREFILLED:
            replica, version = payload
            if version == replica.node_version:
                self._prefilled(replica)
        elif kind == _DONE:
            replica, version = payload
            if version == replica.version:
                self._complete(replica)
        elif kind == _TIMEOUT:
            i, enqueued = payload
            if enqueued == self._enqueued[i]:
                self._timeout(i)
        elif kind == _READY:
            if not payload.gone and payload.state == "Pending":
                self._ready(payload)
        elif kind == _SWAPPED:
            unit, swap = payload
            if swap == unit.swap:
                self._swapped(unit)
        elif kind == _RECONCILE:
            self._retrying = False
            self._reconcile()
        elif kind == _NOTICE:
            self._notice(payload)
        elif kind == _RECLAIM:
            self._terminate(payload)
        elif kind == _PRICE:
            self._reprice()
        elif kind == _SCRAPE:
            self._scrape()
            if self.now + self.scrape_s <= self.horizon_s:
                self._push(self.now + self.scrape_s, _SCRAPE, None)
        elif kind == _TICK:
            decision = self.controller.step(self.now)
            if decision is not None and decision.acts:
                self._actions += 1
                self._decisions.append((self.now, decision.reason))
            if self.now + self.tick_s <= self.horizon_s:
                self._push(self.now + self.tick_s, _TICK, None)

    def _notice(self, node: _SimNode) -> None:
        if node.gone:
            return
        warning = Warning("interruption", node.id, self.now, receipt=node.id, event_id=node.id)
        handled = handle(warning, self._drainer, self.controller.asg, self._replace)
        self._decisions.append((self.now, f"interruption warning for {node.id}: {handled.replacement}"))

    def _replace(self, warning: Warning) -> str:
        # As the interruption consumer does: the drain goes on whatever the replacement met.
        try:
            return self.controller.replacement(warning)
        except Exception as exc:
            return f"no replacement: {exc}"

    # --- serving -------------------------------------------------------------------------

    def _arrive(self, i: int) -> None:
        a = self.arrivals[i]
        self._total_w += a.weight
        backend = self._route(a)
        if backend == OVER_LIMIT:
            self._shed[i] = True
            self._limited_w += a.weight
        elif backend == SHED:
            self._shed[i] = True
            self._shed_w += a.weight
        else:
            if backend == FALLBACK:
                self._degraded_w += a.weight
            self._enqueue(i, backend)
            self._fill()
        if i + 1 < len(self.arrivals):
            self._push(self.arrivals[i + 1].request.arrival_s, _ARRIVE, i + 1)

    def _route(self, a: Arrival) -> str:
        """haproxy.cfg's `use_backend` rules, in its order (gpufleet.plan.admission.haproxy_cfg)."""
        limit = limit_per_window(self.tenant_limit_rps[a.klass])
        rate = self._track(a)
        queue = self.haproxy_queue(PRIMARY)
        servers = self.fallback_servers()
        avg = self.haproxy_queue(FALLBACK) / servers if servers else 0.0
        threshold = self.gateway.admission.degrade_queue.get(a.klass)  # type: ignore[call-overload]
        if rate > limit:
            backend = OVER_LIMIT
        elif self.booting and (a.klass == "P2" or (a.klass == "P1" and rate > boot_limit(limit))):
            backend = SHED  # `p2 booting`, `p1 booting over_boot_limit`
        elif threshold is not None and queue >= threshold:
            full = servers == 0 or avg >= self.gateway.admission.shed_queue
            backend = SHED if full else FALLBACK
        else:
            backend = PRIMARY
        self.routes.append(Routed(a.klass, rate, limit, self.booting, queue, servers, avg, backend))
        return backend

    def _track(self, a: Arrival) -> float:
        """`track-sc0` then `sc_http_req_rate(0)`: HAProxy's rate over RATE_WINDOW_S periods, this
        period's count plus the last one's for the part of the window it still covers."""
        start, current, previous = self._rate[a.klass]
        periods = math.floor((self.now - start) / RATE_WINDOW_S)
        if periods >= 1:
            start += periods * RATE_WINDOW_S
            current, previous = 0.0, current if periods == 1 else 0.0
        current += a.weight
        self._rate[a.klass] = (start, current, previous)
        return current + previous * (1 - (self.now - start) / RATE_WINDOW_S)

    def slots(self, backend: str) -> float:
        """Concurrent requests HAProxy passes to the backend: its servers' maxconn summed."""
        if backend == PRIMARY:
            return self.gateway.primary.slots
        self._serving()
        return self._fallback_slots

    def fallback_servers(self) -> int:
        """`nbsrv(fallback)`: replicas serving the distilled model, on burst nodes or degraded on-prem."""
        self._serving()
        return self._fallback_servers

    def haproxy_queue(self, backend: str) -> float:
        """`queue(backend)`: what waits in HAProxy's queue, past the servers' maxconn."""
        waiting = sum(self._waiting[backend].values())
        return max(0.0, self._inflight[backend] + waiting - self.slots(backend))

    def queue_timeout_s(self, backend: str) -> float:
        if backend == PRIMARY:
            return self.gateway.admission.p0_queue_timeout_s
        return max(1, math.ceil(self.gateway.admission.slo_queue_wait_s))

    def _enqueue(self, i: int, backend: str, front: bool = False) -> None:
        a = self.arrivals[i]
        queue = self.queue[backend][a.klass]
        queue.appendleft(i) if front else queue.append(i)
        self._waiting[backend][a.klass] += a.weight
        self._where[i] = backend
        self._enqueued[i] += 1
        self._push(self.now + self.queue_timeout_s(backend), _TIMEOUT, (i, self._enqueued[i]))

    def _dequeue(self, i: int) -> None:
        backend = self._where[i]
        assert backend is not None
        a = self.arrivals[i]
        queue = self.queue[backend][a.klass]
        if queue[0] == i:
            queue.popleft()
        else:
            queue.remove(i)
        # An empty queue holds nothing: float sums of weights would leave a -1e-14 behind, which
        # Triton's pending count never shows.
        self._waiting[backend][a.klass] = self._waiting[backend][a.klass] - a.weight if queue else 0.0
        self._where[i] = None

    def _timeout(self, i: int) -> None:
        """`timeout queue`: a request still in HAProxy's queue (not yet inside the servers' maxconn,
        by its place in the priority order) fails with 503."""
        backend = self._where[i]
        if backend is None:
            return
        a = self.arrivals[i]
        ahead = sum(self._waiting[backend][k] for k in CLASSES[: CLASSES.index(a.klass)])
        for j in self.queue[backend][a.klass]:
            ahead += self.arrivals[j].weight
            if j == i:
                break
        if ahead <= max(0.0, self.slots(backend) - self._inflight[backend]) + 1e-9:
            return  # inside maxconn: the engine holds it, and `timeout server` is far off
        self._dequeue(i)
        self._failed[i] = True
        self._failed_w += a.weight
        self._wait[i] = self.now - a.request.arrival_s

    def set_booting(self, booting: bool) -> list[str]:
        """The controller's admission switch (the admission map's `booting` entry)."""
        self.booting = booting
        return []

    def set_degraded(self, count: int) -> list[str]:
        """The controller's degrader: `count` on-prem replicas to the distilled model."""
        if self.distilled is None:
            return (
                [f"no distilled model fits the on-prem GPUs: {count} replicas not degraded"] if count else []
            )
        want = max(0, min(count, len(self._onprem)))
        for k, unit in enumerate(self._onprem):
            target = "distilled" if k >= len(self._onprem) - want else "primary"
            if target != unit.target:
                self._swap(unit, target)
        return []

    def _swap(self, unit: _OnPrem, target: str) -> None:
        """Load the other model's weights: the unit takes nothing new until they are in (what it
        has in flight finishes meanwhile)."""
        assert self.distilled is not None
        _, _, to_distilled_s, to_primary_s = self.distilled
        unit.mode, unit.target = "swapping", target
        self._changed()
        unit.swap += 1
        seconds = to_distilled_s if target == "distilled" else to_primary_s
        self._push(self.now + seconds, _SWAPPED, (unit, unit.swap))

    def template_slots(self, hw: ReplicaHardware, degraded: bool) -> int:
        """A fallback replica's maxconn: its class's `server-template` (burst by GPU, or the
        Degrader's on-prem replicas)."""
        return next(
            t.slots for t in self.gateway.fallback.templates if t.gpu == hw.gpu and t.degraded == degraded
        )

    def _primary_replica(self) -> _Replica:
        seqs = max(1, self.gateway.primary.slots // max(1, self.onprem_replicas))
        return _Replica(self.onprem, None, self.now, PRIMARY, seqs)

    def _swapped(self, unit: _OnPrem) -> None:
        assert self.distilled is not None
        hw, count, _, _ = self.distilled
        if unit.target == "primary":
            unit.primary = self._primary_replica()
        else:
            unit.distilled = [
                _Replica(hw, None, self.now, FALLBACK, self.template_slots(hw, degraded=True))
                for _ in range(count)
            ]
        unit.mode = unit.target
        self._changed()
        self._fill()

    def _queued(self) -> bool:
        return any(q for b in BACKENDS for q in self.queue[b].values())

    def _serving(self) -> list[_Replica]:
        """The replicas taking requests; kept until a node or an on-prem unit changes (`_changed`)."""
        if self._serving_now is None:
            out = [r for unit in self._onprem for r in unit.serving()]
            for node in self.nodes.values():
                if node.state == "InService":
                    out.extend(node.replicas)
            self._serving_now = out
            self._fallback_servers = sum(1 for r in out if r.backend == FALLBACK)
            self._fallback_slots = sum(r.max_seqs for r in out if r.backend == FALLBACK)
        return self._serving_now

    def _changed(self) -> None:
        self._serving_now = None

    def _fill(self) -> None:
        if not self._queued():
            return
        serving = self._serving()
        for backend in BACKENDS:
            replicas = [r for r in serving if r.backend == backend]
            for klass in CLASSES:
                queue = self.queue[backend][klass]
                while queue:
                    a = self.arrivals[queue[0]]
                    need = a.weight * (a.request.input_tokens + a.request.output_tokens)
                    fit = [r for r in replicas if r.room(a.weight, need)]
                    if not fit:
                        break
                    replica = min(fit, key=lambda r: r.ctx / max(r.kv, 1) + r.seqs / r.max_seqs)
                    self._start(replica, queue[0], need)
                if queue:
                    break  # the priority queue: a class that waits holds the ones behind it

    def _start(self, replica: _Replica, i: int, need: float) -> None:
        a = self.arrivals[i]
        wait = self.now - a.request.arrival_s
        self._wait[i] = wait
        if replica.backend == PRIMARY:  # the distilled model's series carry another `model` label
            self._queue_us += a.weight * wait * 1e6
        self._dequeue(i)
        self.started_on[i] = replica.backend
        self._inflight[replica.backend] += a.weight
        replica.seqs += a.weight
        replica.ctx += need
        replica.prefill.append(i)
        if not replica.prefilling:
            self._next_prefill(replica)

    def _next_prefill(self, replica: _Replica) -> None:
        replica.advance(self.now)
        if replica.prefill:
            i = replica.prefill[0]
            a = self.arrivals[i]
            replica.prefilling = True
            seconds = a.weight * a.request.input_tokens / replica.prefill_rate
            self._push(self.now + seconds, _PREFILLED, (replica, replica.node_version))
        else:
            replica.prefilling = False

    def _prefilled(self, replica: _Replica) -> None:
        replica.advance(self.now)
        i = replica.prefill.popleft()
        a = self.arrivals[i]
        replica.dec_n += a.weight
        replica.dec_ctx += a.weight * (a.request.input_tokens + a.request.output_tokens)
        # The group's `weight` identical requests were prefilled one after another: its TTFT is its
        # middle member's, not the last one's (a real client's copies spread over replicas).
        single = a.request.input_tokens / replica.prefill_rate
        ttft = self.now - single * (a.weight - 1) / 2 + replica.step_s() - a.request.arrival_s
        self._ttft[i] = ttft
        for b, le in enumerate(TTFT_BUCKETS_MS):
            if replica.backend == PRIMARY and ttft * 1000 <= le:
                self._ttft_counts[b] += a.weight
        heapq.heappush(replica.heap, (replica.v + max(1, a.request.output_tokens), i))
        replica.prefilling = False
        self._schedule(replica)
        self._next_prefill(replica)

    def _schedule(self, replica: _Replica) -> None:
        replica.version += 1
        if replica.heap:
            at = self.now + max(0.0, replica.heap[0][0] - replica.v) * replica.step_s()
            self._push(at, _DONE, (replica, replica.version))

    def _complete(self, replica: _Replica) -> None:
        replica.advance(self.now)
        while replica.heap and replica.heap[0][0] <= replica.v + 1e-9:
            _, i = heapq.heappop(replica.heap)
            a = self.arrivals[i]
            need = a.weight * (a.request.input_tokens + a.request.output_tokens)
            replica.dec_n -= a.weight
            replica.dec_ctx -= need
            replica.seqs -= a.weight
            replica.ctx -= need
            self._inflight[replica.backend] -= a.weight
            if replica.backend == PRIMARY:
                self._success += a.weight
            self._done += 1
        self._schedule(replica)
        node = replica.node
        if node is not None and node.state == "Terminating":
            if all(r.seqs <= 1e-9 for r in node.replicas):
                self._terminate(node)
            return
        self._fill()

    # --- the group -----------------------------------------------------------------------

    def set_desired(self, count: int) -> None:
        self.desired = count
        self._reconcile()

    def _live(self) -> list[_SimNode]:
        return [n for n in self.nodes.values() if n.state != "Terminating"]

    def _reconcile(self, ready_now: bool = False) -> None:
        """The group's own loop: launch what desired capacity lacks, end what exceeds it."""
        live = self._live()
        for node in sorted(live, key=lambda n: (n.state == "InService", n.launched_at))[
            : max(0, len(live) - self.desired)
        ]:
            self.drain(node)
        owed = self.desired - len(self._live())
        for _ in range(owed):
            pool = self._pool_for_launch()
            if pool is None:
                if not self._retrying:
                    self._retrying = True
                    self._push(self.now + 60.0, _RECONCILE, None)
                return
            self._launch(pool, ready_now)

    def _pool_for_launch(self) -> Pool | None:
        prices = self.prices.at(self.now)
        spread = {p: 0 for p in prices}
        for n in self._live():
            spread[n.pool] = spread.get(n.pool, 0) + 1
        for kind in self.instance_types:
            pools = [
                p
                for p in prices
                if p.instance_type == kind and not self._out(p) and prices[p] <= self._max_price(p) + 1e-9
            ]
            if pools:
                return min(pools, key=lambda p: (spread[p], p.az))
        return None

    def _out(self, pool: Pool) -> bool:
        return any(p == pool and start <= self.now < end for p, start, end in self.outages)

    def _max_price(self, pool: Pool) -> float:
        if self.spot_max_price is not None:
            return self.spot_max_price
        return max(AWS_GPU_INSTANCES[t].on_demand_usd_hour for t in self.instance_types)

    def _launch(self, pool: Pool, ready_now: bool) -> None:
        self._account(self.now)
        self._serial += 1
        node = _SimNode(
            id=f"i-{self._serial:08x}", pool=pool, launched_at=self.now, max_price=self._max_price(pool)
        )
        self.nodes[node.id] = node
        if ready_now:
            self._ready(node)
        else:
            self._push(self.now + self.capacity.boot_to_serve_s, _READY, node)
        rate = self.interruptions_per_node_hour / 3600
        if rate > 0:
            # Seeded per launch serial: every policy meets the same draws.
            at = self.now + random.Random(f"{self.seed}-{self._serial}").expovariate(rate)
            if at < self.horizon_s:
                self._push(at, _NOTICE, node)
                self._push(at + SPOT_NOTICE_S, _RECLAIM, node)

    def _ready(self, node: _SimNode) -> None:
        self._account(self.now)
        node.state = "InService"
        self._changed()
        hw, count = self.burst[node.pool.instance_type]
        node.replicas = [
            _Replica(hw, node, self.now, FALLBACK, self.template_slots(hw, degraded=False))
            for _ in range(count)
        ]
        self._fill()

    def drain(self, node: _SimNode) -> None:
        self._account(self.now)
        if node.gone:
            return
        node.state = "Terminating"
        self._changed()
        if all(r.seqs <= 1e-9 for r in node.replicas):
            self._terminate(node)

    def _terminate(self, node: _SimNode) -> None:
        self._account(self.now)
        if node.gone:
            return
        node.gone = True
        for replica in node.replicas:
            replica.version += 1
            replica.node_version += 1
            # Cut off: prefilling and decoding requests start over in the queue.
            for i in sorted([*replica.prefill, *(i for _, i in replica.heap)], reverse=True):
                self._inflight[replica.backend] -= self.arrivals[i].weight
                self._enqueue(i, replica.backend, front=True)
        del self.nodes[node.id]
        self._changed()
        self._reconcile()
        self._fill()

    def _reprice(self) -> None:
        self._account(self.now)
        prices = self.prices.at(self.now)
        for node in list(self.nodes.values()):
            # AWS reclaims a Spot node whose pool price passes its max price rather than bill more.
            if prices[node.pool] > node.max_price + 1e-9:
                self._terminate(node)

    # --- metrics -------------------------------------------------------------------------

    def _scrape(self) -> None:
        serving = self._serving()
        for r in serving:
            r.advance(self.now)
        busy = sum(r.busy_s for r in serving)
        interval = self.now - self._busy_mark
        self._busy_mark = self.now
        util = min(1.0, busy / (interval * len(serving))) if serving and interval > 0 else 0.0
        for r in serving:
            r.busy_s = 0.0
        # The on-prem model's pending count: what waits inside its servers' maxconn (the rest is
        # HAProxy's queue).
        pending = min(
            sum(self._waiting[PRIMARY].values()), max(0.0, self.slots(PRIMARY) - self._inflight[PRIMARY])
        )
        self.scrapes.append(
            (
                self.now,
                self._success,
                self._queue_us,
                pending,
                util,
                tuple(self._ttft_counts),
                self._shed_w,
                self._degraded_w,
                self.haproxy_queue(PRIMARY),
            )
        )

    def _account(self, t: float) -> None:
        """Bill and log the time since the last change of fleet or prices (called before each)."""
        start, end = self._spend_t, min(t, self.horizon_s)
        self._spend_t = max(self._spend_t, t)
        if end <= start:
            return
        prices = self.prices.at(start)
        live = list(self.nodes.values())
        spend = sum(prices[n.pool] for n in live)
        gpus = sum(AWS_GPU_INSTANCES[n.pool.instance_type].gpus for n in live)
        ready = self.onprem_replicas + sum(
            self.capacity.capacity_of(n.pool.instance_type) for n in live if n.state == "InService"
        )
        self._cost += spend * (end - start) / 3600
        self._gpu_s += gpus * (end - start)
        self._max_spend = max(self._max_spend, spend)
        for minute in range(int(start // 60), min(math.ceil(end / 60), len(self._m_spend))):
            overlap = min(end, (minute + 1) * 60) - max(start, minute * 60)
            self._m_spend[minute] += spend * overlap / 60
            self._m_ready[minute] += ready * overlap / 60
            if spend > self.capacity.max_hourly_usd + 1e-6 and overlap > 0:
                self._cap_minutes.add(minute)

    def _result(self, minutes: int) -> Result:
        end = self.horizon_s + _DRAIN_LIMIT_S
        waits = [
            end - a.request.arrival_s if math.isnan(w) else w
            for a, w in zip(self.arrivals, self._wait, strict=True)
        ]
        ttfts = [
            end - a.request.arrival_s if math.isnan(w) else w
            for a, w in zip(self.arrivals, self._ttft, strict=True)
        ]
        every: list[list[int]] = [[] for _ in range(minutes)]  # the admitted, per minute
        offered = [0.0] * minutes
        refused = [0.0] * minutes  # shed, over a limit or failed
        for i, a in enumerate(self.arrivals):
            minute = int(a.request.arrival_s // 60)
            if minute >= minutes:
                continue
            offered[minute] += a.weight
            if self._shed[i] or self._failed[i]:
                refused[minute] += a.weight
            if not self._shed[i]:
                every[minute].append(i)
        slo_wait, slo_ttft = self.capacity.slo_queue_wait_s, self.slo_ttft_s

        def missed(ids: list[int]) -> bool:
            return _p99([waits[i] for i in ids]) > slo_wait or _p99([ttfts[i] for i in ids]) > slo_ttft

        counted = [ids for ids in every if ids]
        violations = sum(1 for ids in counted if missed(ids))
        busy = [m for m in range(minutes) if offered[m] > 0]
        served = sum(
            1 for m in busy if refused[m] <= _REFUSED_MAX * offered[m] and every[m] and not missed(every[m])
        )
        p0 = sum(
            1
            for ids in counted
            if (mine := [i for i in ids if self.arrivals[i].klass == "P0"]) and missed(mine)
        )
        timeline = tuple(
            Minute(
                m,
                self.minute_load[m] if m < len(self.minute_load) else 0.0,
                self._m_ready[m],
                _p99([waits[i] for i in every[m]]) if every[m] else 0.0,
                _p99([ttfts[i] for i in every[m]]) if every[m] else 0.0,
                self._m_spend[m],
            )
            for m in range(minutes)
        )
        errors = sum(
            self.controller.registry.get_sample_value(f"gpufleet_burst_{name}_total") or 0.0
            for name in ("actuation_errors", "signal_errors")
        )
        return Result(
            policy=self.policy.name,
            slo_ok_minutes_pct=100.0 * (len(counted) - violations) / len(counted) if counted else 100.0,
            served_minutes_pct=100.0 * served / len(busy) if busy else 100.0,
            p0_violation_minutes=p0,
            slo_violation_minutes=violations,
            p99_queue_wait_s=_p99([w for w, shed in zip(waits, self._shed, strict=True) if not shed]),
            p99_ttft_s=_p99([w for w, shed in zip(ttfts, self._shed, strict=True) if not shed]),
            gpu_hours=self._gpu_s / 3600,
            cost_usd=self._cost,
            cap_violations=len(self._cap_minutes),
            scale_actions=self._actions,
            degraded_requests_pct=100.0 * self._degraded_w / self._total_w if self._total_w else 0.0,
            # Every 429: the shed backend's and the tenant limits'.
            shed_requests_pct=100.0 * (self._shed_w + self._limited_w) / self._total_w
            if self._total_w
            else 0.0,
            failed_requests_pct=100.0 * self._failed_w / self._total_w if self._total_w else 0.0,
            max_spend_usd_hour=self._max_spend,
            step_errors=int(errors),
            timeline=timeline,
            decisions=tuple(self._decisions),
        )


_REFUSED_MAX = 0.01  # shed + failed share of a minute's offered requests that still counts as served


def _p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

"""Discrete-event simulation of a serving fleet under a burst policy.

Serving model: each replica runs continuous batching. Up to `saturation` requests in flight each
progress at their own pace (a small batch leaves throughput unused, yet the GPU is busy: that is
why GPU utilisation reads near 100% long before the replica is full); beyond it they share the
replica's full throughput, up to `slots` requests; the rest wait in one queue (Triton's queue) and
go to the least-loaded replica that frees a slot. A request's work is
its prefill plus its decode in prefill-equivalent tokens over the replica's tokens/s, so long
prompts and long answers both cost what they should. Queue wait is what the SLO is about.

Burst nodes boot for `boot_to_serve_s`, are billed at their pool's Spot price from launch to
termination (never above their max price: AWS reclaims instead), may get an interruption warning
two minutes before being reclaimed, and leave by draining (no new requests, then gone) or at once.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpufleet.burst.policy import (
    SPOT_NOTICE_S,
    CapacityModel,
    Decision,
    Node,
    Policy,
    Pool,
    Signals,
    place,
)
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.sim.prices import PriceSeries
from gpufleet.sim.trace import Request

# Event kinds, in the order they run when they share an instant: prices first (reclaims),
# then completions and arrivals, then what the controller sees and does.
_PRICE, _DONE, _ARRIVE, _READY, _NOTICE, _RECLAIM, _SAMPLE, _TICK = range(8)
# After the trace ends the fleet keeps serving what is queued, for at most this long.
_DRAIN_LIMIT_S = 3600.0


@dataclass(frozen=True)
class ServiceModel:
    """How fast one replica serves: prefill-equivalent tokens per second, shared by the batch."""

    tokens_per_s: float
    # One generated token costs about this many prompt tokens of throughput: decode is memory-bound.
    decode_weight: float = 8.0
    slots: int = 32
    saturation: int = 8

    def work_s(self, request: Request) -> float:
        return (request.input_tokens + self.decode_weight * request.output_tokens) / self.tokens_per_s


@dataclass(frozen=True)
class Minute:
    minute: int
    load_replicas: float
    ready_replicas: float
    p99_queue_wait_s: float
    spend_usd_hour: float


@dataclass(frozen=True)
class Result:
    policy: str
    slo_ok_minutes_pct: float
    slo_violation_minutes: int
    p99_queue_wait_s: float
    gpu_hours: float
    cost_usd: float
    cap_violations: int
    scale_actions: int
    max_spend_usd_hour: float
    timeline: tuple[Minute, ...]
    decisions: tuple[tuple[float, str], ...]

    def summary(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "slo_ok_minutes_pct": round(self.slo_ok_minutes_pct, 2),
            "slo_violation_minutes": self.slo_violation_minutes,
            "p99_queue_wait_s": round(self.p99_queue_wait_s, 3),
            "gpu_hours": round(self.gpu_hours, 2),
            "cost_usd": round(self.cost_usd, 2),
            "cap_violations": self.cap_violations,
            "scale_actions": self.scale_actions,
        }


class _Replica:
    __slots__ = ("draining", "heap", "last", "n", "node", "saturation", "speed", "v", "version")

    def __init__(self, node: _SimNode | None, now: float, saturation: int, speed: float = 1.0) -> None:
        self.node = node
        self.saturation = saturation
        # Throughput relative to an on-prem replica (the fleet plan's roofline for burst types).
        self.speed = speed
        self.v = 0.0  # virtual time: each in-flight request gets 1/max(n, saturation) of the replica
        self.last = now
        self.heap: list[tuple[float, int]] = []
        self.n = 0
        self.version = 0
        self.draining = False

    def advance(self, now: float) -> float:
        """Move virtual time to `now`; returns the busy seconds elapsed (the GPU-utilisation signal)."""
        dt = now - self.last
        self.last = now
        if self.n == 0 or dt <= 0:
            return 0.0
        self.v += dt * self.speed / max(self.n, self.saturation)
        return dt


@dataclass
class _SimNode:
    id: str
    pool: Pool
    launched_at: float
    max_price: float
    ready: bool = False
    draining: bool = False
    gone: bool = False
    replicas: list[_Replica] = field(default_factory=list)

    def view(self) -> Node:
        return Node(
            id=self.id,
            pool=self.pool,
            ready=self.ready,
            draining=self.draining,
            launched_at=self.launched_at,
            inflight=sum(r.n for r in self.replicas),
            max_price=self.max_price,
        )


@dataclass
class Simulation:
    requests: Sequence[Request]
    policy: Policy
    capacity: CapacityModel
    service: ServiceModel
    prices: PriceSeries
    replicas_per_node: dict[str, int]
    horizon_s: float
    # Each burst replica's throughput relative to an on-prem one, by instance type (default 1).
    replica_speed: dict[str, float] = field(default_factory=dict)
    interruptions_per_node_hour: float = 0.0
    sample_s: float = 5.0
    seed: int = 0

    def run(self) -> Result:
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._now = 0.0
        self._queue: deque[int] = deque()
        self._onprem = [
            _Replica(None, 0.0, self.service.saturation) for _ in range(self.capacity.onprem_replicas)
        ]
        self._nodes: dict[str, _SimNode] = {}
        self._serial = 0
        n = len(self.requests)
        self._work = [self.service.work_s(r) for r in self.requests]
        self._waits = [math.nan] * n
        self._done = 0
        self._window: deque[Signals] = deque(maxlen=max(2, int(1200 / self.sample_s)))
        self._acc_work = self._acc_busy = self._acc_wait = 0.0
        self._acc_started = 0
        self._last_sample = 0.0
        self._spend_t = 0.0
        self._cost = self._gpu_s = self._max_spend = 0.0
        self._cap_minutes: set[int] = set()
        self._actions = 0
        self._decisions: list[tuple[float, str]] = []
        minutes = math.ceil(self.horizon_s / 60) or 1
        self._m_load = [0.0] * minutes
        self._m_ready = [0.0] * minutes
        self._m_spend = [0.0] * minutes

        for time in self.prices.times[1:]:
            self._push(time, _PRICE, None)
        if n:
            self._push(self.requests[0].arrival_s, _ARRIVE, 0)
        self._push(self.sample_s, _SAMPLE, None)
        self._push(self.policy.tick_s, _TICK, None)
        prices0 = self.prices.at(0.0)
        initial, _ = place(
            self.policy.initial_capacity(),
            [],
            {p: v for p, v in prices0.items() if p.instance_type in self.replicas_per_node},
            None,
            capacity=self.capacity.capacity_of,
            room=self.capacity.max_nodes,
        )
        for launch in initial:
            self._launch(launch.pool, launch.max_price, ready_now=True)

        limit = self.horizon_s + _DRAIN_LIMIT_S
        while self._events:
            t, kind, _, payload = heapq.heappop(self._events)
            if t > limit or (t > self.horizon_s and self._done == n and not self._queue):
                break
            self._account(t)
            self._now = t
            self._handle(kind, payload)
        self._account(min(max(self._now, self.horizon_s), limit))
        for i, w in enumerate(self._waits):
            if math.isnan(w):
                self._waits[i] = limit - self.requests[i].arrival_s
        return self._result(minutes)

    # --- events ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, payload))

    def _handle(self, kind: int, payload: object) -> None:
        if kind == _ARRIVE:
            assert isinstance(payload, int)
            self._arrive(payload)
        elif kind == _DONE:
            assert isinstance(payload, tuple)
            replica, version = payload
            if version == replica.version and (replica.node is None or not replica.node.gone):
                self._complete(replica)
        elif kind == _READY:
            assert isinstance(payload, _SimNode)
            if not payload.gone:
                self._ready(payload)
        elif kind == _NOTICE:
            assert isinstance(payload, _SimNode)
            if not payload.gone:
                self._apply(self.policy.on_notice(self._now, payload.view(), self._views(), self._prices()))
        elif kind == _RECLAIM:
            assert isinstance(payload, _SimNode)
            self._terminate(payload)
        elif kind == _PRICE:
            self._reprice()
        elif kind == _SAMPLE:
            self._sample()
            if self._now + self.sample_s <= self.horizon_s:
                self._push(self._now + self.sample_s, _SAMPLE, None)
        elif kind == _TICK:
            if self._window:
                self._apply(self.policy.decide(self._now, list(self._window), self._views(), self._prices()))
            if self._now + self.policy.tick_s <= self.horizon_s:
                self._push(self._now + self.policy.tick_s, _TICK, None)

    def _prices(self) -> dict[Pool, float]:
        return {
            p: v for p, v in self.prices.at(self._now).items() if p.instance_type in self.replicas_per_node
        }

    def _views(self) -> list[Node]:
        return [node.view() for node in self._nodes.values() if not node.gone]

    def _arrive(self, i: int) -> None:
        request = self.requests[i]
        self._acc_work += self._work[i]
        minute = int(request.arrival_s // 60)
        if minute < len(self._m_load):
            self._m_load[minute] += self._work[i] / 60
        self._queue.append(i)
        self._fill()
        if i + 1 < len(self.requests):
            self._push(self.requests[i + 1].arrival_s, _ARRIVE, i + 1)

    def _serving(self) -> list[_Replica]:
        replicas = [r for r in self._onprem]
        for node in self._nodes.values():
            if node.ready and not node.draining and not node.gone:
                replicas.extend(node.replicas)
        return replicas

    def _fill(self) -> None:
        if not self._queue:
            return
        replicas = [r for r in self._serving() if r.n < self.service.slots]
        while self._queue and replicas:
            # The replica with the most of its throughput to spare per request in flight.
            replica = min(replicas, key=lambda r: r.n / r.speed)
            i = self._queue.popleft()
            self._start(replica, i)
            if replica.n >= self.service.slots:
                replicas.remove(replica)

    def _start(self, replica: _Replica, i: int) -> None:
        self._acc_busy += replica.advance(self._now)
        wait = self._now - self.requests[i].arrival_s
        self._waits[i] = wait
        self._acc_wait += wait
        self._acc_started += 1
        heapq.heappush(replica.heap, (replica.v + self._work[i], i))
        replica.n += 1
        self._schedule(replica)

    def _schedule(self, replica: _Replica) -> None:
        replica.version += 1
        if replica.heap:
            share = replica.speed / max(replica.n, replica.saturation)
            at = self._now + max(0.0, replica.heap[0][0] - replica.v) / share
            self._push(at, _DONE, (replica, replica.version))

    def _complete(self, replica: _Replica) -> None:
        self._acc_busy += replica.advance(self._now)
        while replica.heap and replica.heap[0][0] <= replica.v + 1e-9:
            heapq.heappop(replica.heap)
            replica.n -= 1
            self._done += 1
        self._schedule(replica)
        node = replica.node
        if node is not None and node.draining:
            if all(r.n == 0 for r in node.replicas):
                self._terminate(node)
            return
        self._fill()

    # --- fleet ---------------------------------------------------------------------------

    def _launch(self, pool: Pool, max_price: float, ready_now: bool = False) -> None:
        self._serial += 1
        node = _SimNode(id=f"burst-{self._serial}", pool=pool, launched_at=self._now, max_price=max_price)
        self._nodes[node.id] = node
        if ready_now:
            self._ready(node)
        else:
            self._push(self._now + self.capacity.boot_to_serve_s, _READY, node)
        per_second = self.interruptions_per_node_hour / 3600
        if per_second > 0:
            # Seeded per node serial, so every policy meets the same interruption draws.
            rng = random.Random(f"{self.seed}-{self._serial}")
            at = self._now + rng.expovariate(per_second)
            if at < self.horizon_s:
                self._push(at, _NOTICE, node)
                self._push(at + SPOT_NOTICE_S, _RECLAIM, node)

    def _ready(self, node: _SimNode) -> None:
        node.ready = True
        kind = node.pool.instance_type
        node.replicas = [
            _Replica(node, self._now, self.service.saturation, self.replica_speed.get(kind, 1.0))
            for _ in range(self.replicas_per_node[kind])
        ]
        if node.draining:
            self._terminate(node)
            return
        self._fill()

    def _drain(self, node: _SimNode) -> None:
        node.draining = True
        if not node.ready or all(r.n == 0 for r in node.replicas):
            self._terminate(node)

    def _terminate(self, node: _SimNode) -> None:
        if node.gone:
            return
        node.gone = True
        requeue: list[int] = []
        for replica in node.replicas:
            requeue.extend(i for _, i in replica.heap)
            replica.heap.clear()
            replica.n = 0
            replica.version += 1
        # Requests cut off mid-flight start over at the head of the queue.
        for i in sorted(requeue, key=lambda i: self.requests[i].arrival_s, reverse=True):
            self._queue.appendleft(i)
        del self._nodes[node.id]
        self._fill()

    def _apply(self, decision: Decision) -> None:
        if decision.acts:
            self._actions += 1
            self._decisions.append((self._now, decision.reason))
        for node_id in decision.drain:
            if node_id in self._nodes:
                self._drain(self._nodes[node_id])
        for launch in decision.launch:
            self._launch(launch.pool, launch.max_price)

    def _reprice(self) -> None:
        prices = self.prices.at(self._now)
        for node in list(self._nodes.values()):
            # AWS reclaims a Spot node whose pool price passes its max price rather than bill more.
            if prices[node.pool] > node.max_price + 1e-9:
                self._terminate(node)

    # --- accounting ------------------------------------------------------------------------

    def _account(self, t: float) -> None:
        """Bill the interval since the last event at the prices and fleet that held during it."""
        start, end = self._spend_t, min(t, self.horizon_s)
        self._spend_t = max(self._spend_t, t)
        if end <= start:
            return
        prices = self.prices.at(start)
        live = list(self._nodes.values())
        spend = sum(prices[n.pool] for n in live)
        gpus = sum(AWS_GPU_INSTANCES[n.pool.instance_type].gpus for n in live)
        ready = self.capacity.onprem_replicas + sum(
            r.speed for n in live if n.ready and not n.draining for r in n.replicas
        )
        self._cost += spend * (end - start) / 3600
        self._gpu_s += gpus * (end - start)
        self._max_spend = max(self._max_spend, spend)
        first, last = int(start // 60), math.ceil(end / 60)
        for minute in range(first, min(last, len(self._m_spend))):
            overlap = min(end, (minute + 1) * 60) - max(start, minute * 60)
            self._m_spend[minute] += spend * overlap / 60
            self._m_ready[minute] += ready * overlap / 60
            if spend > self.capacity.max_hourly_usd + 1e-6 and overlap > 0:
                self._cap_minutes.add(minute)

    def _sample(self) -> None:
        interval = self._now - self._last_sample
        self._last_sample = self._now
        serving = self._serving()
        for replica in serving:
            self._acc_busy += replica.advance(self._now)
        wait = self._acc_wait / self._acc_started if self._acc_started else 0.0
        if self._queue:
            wait = max(wait, self._now - self.requests[self._queue[0]].arrival_s)
        self._window.append(
            Signals(
                t=self._now,
                load_replicas=self._acc_work / interval,
                queue_wait_s=wait,
                pending=len(self._queue),
                gpu_util=min(1.0, self._acc_busy / (interval * len(serving))) if serving else 0.0,
                ready_replicas=sum(r.speed for r in serving),
            )
        )
        self._acc_work = self._acc_busy = self._acc_wait = 0.0
        self._acc_started = 0

    def _result(self, minutes: int) -> Result:
        by_minute: list[list[float]] = [[] for _ in range(minutes)]
        for request, wait in zip(self.requests, self._waits, strict=True):
            minute = int(request.arrival_s // 60)
            if minute < minutes:
                by_minute[minute].append(wait)
        p99s = [_p99(ws) if ws else 0.0 for ws in by_minute]
        counted = [p for p, ws in zip(p99s, by_minute, strict=True) if ws]
        slo = self.capacity.slo_queue_wait_s
        violations = sum(1 for p in counted if p > slo)
        timeline = tuple(
            Minute(m, self._m_load[m], self._m_ready[m], p99s[m], self._m_spend[m]) for m in range(minutes)
        )
        return Result(
            policy=self.policy.name,
            slo_ok_minutes_pct=100.0 * (len(counted) - violations) / len(counted) if counted else 100.0,
            slo_violation_minutes=violations,
            p99_queue_wait_s=_p99(self._waits) if self._waits else 0.0,
            gpu_hours=self._gpu_s / 3600,
            cost_usd=self._cost,
            cap_violations=len(self._cap_minutes),
            scale_actions=self._actions,
            max_spend_usd_hour=self._max_spend,
            timeline=timeline,
            decisions=tuple(self._decisions),
        )


def _p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

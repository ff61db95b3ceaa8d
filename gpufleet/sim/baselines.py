"""The baselines gpufleet's burst policy is measured against, and the one registry of policies.

Each is what a team would deploy instead: provisioning for the peak, Kubernetes' HPA on GPU
utilisation, KEDA on the gateway's queue, a Karpenter-like reactive provisioner. They implement the
same policy interface as gpufleet's (`gpufleet.burst.policy.FleetPolicy`) and run in the simulator
through the same controller step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpufleet.burst.policy import (
    CapacityModel,
    Decision,
    FleetPolicy,
    Gpufleet,
    KnownPeak,
    Node,
    Policy,
    Pool,
    Signals,
    live_count,
    place,
    signals_since,
)


@dataclass
class StaticPeak(FleetPolicy):
    """Provision for the known peak, all the time."""

    # On-prem replica equivalents of burst capacity for the peak.
    peak_need: float = 0.0
    name = "static-peak"
    tick_s = 60.0

    def initial_capacity(self) -> float:
        return self.peak_need

    def decide(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        return self._to(
            self.peak_need, f"static: {self.peak_need:.2f} replicas sized for the peak", nodes, prices
        )


# HPA leaves the replica count alone while usage is within this ratio of its target.
HPA_TOLERANCE = 0.1


@dataclass
class _Stabilized(FleetPolicy):
    """Kubernetes HPA behaviour: scale up at once, scale down to the highest recommendation of the window."""

    stabilization_s: float = 300.0
    _history: deque[tuple[float, float]] = field(default_factory=deque)

    def _stabilize(self, t: float, recommended: float, current: float) -> float:
        self._history.append((t, recommended))
        while self._history and self._history[0][0] < t - self.stabilization_s:
            self._history.popleft()
        if recommended >= current:
            return recommended
        return max(r for _, r in self._history)

    def _current(self, nodes: Sequence[Node]) -> float:
        """Replicas as an HPA counts them: on-prem and every live burst node, booting ones too."""
        return self.model.onprem_replicas + self.model.burst_capacity(nodes)

    def _desired(self, usage: float, target: float, current: float) -> float:
        """HPA's algorithm for a usage summed over replicas against a per-replica target:
        ceil(usage / target), or the current count while the ratio is within its tolerance."""
        ratio = usage / (current * target) if current else math.inf
        return current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(usage / target)

    def _recommend(
        self, t: float, recommended: float, why: str, nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        total = self._stabilize(t, max(self.model.onprem_replicas, recommended), self._current(nodes))
        need = max(0.0, total - self.model.onprem_replicas)
        return self._to(need, f"{why} -> {total:.1f} replicas", nodes, prices)


@dataclass
class HpaGpu(_Stabilized):
    """HPA on GPU utilisation: desired replicas = ceil(sum of utilisation / target), 10% tolerance."""

    target: float = 0.7
    name = "hpa-gpu70"
    tick_s = 15.0

    def decide(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        recent = signals_since(window, t, 60.0)
        util = sum(s.gpu_util for s in recent) / len(recent)
        busy = util * recent[-1].ready_replicas
        # Replicas still booting count as idle, as HPA does for pods that are not ready.
        recommended = self._desired(busy, self.target, self._current(nodes))
        why = f"GPU utilisation {util:.0%} over {recent[-1].ready_replicas:.1f} ready replicas"
        return self._recommend(t, recommended, why, nodes, prices)


@dataclass
class KedaQueue(_Stabilized):
    """KEDA's Prometheus scaler on the gateway's queue, `sum(haproxy_backend_current_queue{proxy=
    "primary"})` (the queue is in HAProxy, past the servers' maxconn: Triton's pending count stays
    near 0), as an AverageValue target: HPA's desired = ceil(queue / threshold) unless the usage
    ratio is within its 10% tolerance, 30 s polling, scale-up at once, 300 s down-stabilisation.

    `threshold` (requests queued per replica) is what an operator sets knowing the SLO and the
    gateway: the primary's lowest degrade threshold over the on-prem replicas, so KEDA asks for
    capacity as the queue reaches the point where the gateway starts sending requests away."""

    threshold: float = 1.0
    name = "keda-queue"
    tick_s = 30.0

    def decide(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        queue = window[-1].gateway_queue
        recommended = self._desired(queue, self.threshold, self._current(nodes))
        why = f"{queue:.0f} queued at the gateway, {self.threshold:.0f} per replica"
        return self._recommend(t, recommended, why, nodes, prices)


@dataclass
class ReactivePending(FleetPolicy):
    """Karpenter-like: launch nodes for what is pending now; consolidate when the rest can carry the load."""

    slots_per_replica: int = 32
    consolidate_below: float = 0.5
    name = "reactive-pending"
    tick_s = 10.0

    def decide(
        self, t: float, window: Sequence[Signals], nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        m = self.model
        live = [n for n in nodes if not n.draining]
        have = m.burst_capacity(nodes)
        booting = have - m.burst_capacity(nodes, ready_only=True)
        pending = window[-1].pending
        if pending > 0:
            extra = max(0.0, pending / self.slots_per_replica - booting)
            return self._to(
                have + extra, f"{pending} pending requests, {booting:.1f} replicas booting", nodes, prices
            )
        recent = signals_since(window, t, 300.0)
        busy = sum(s.gpu_util * s.ready_replicas for s in recent) / len(recent)
        smallest = min((m.capacity_of(n.pool.instance_type) for n in live), default=0.0)
        without_one = m.onprem_replicas + have - smallest
        if live and booting == 0 and busy < self.consolidate_below * without_one:
            return self._to(
                have - smallest,
                f"consolidate: {busy:.1f} busy replicas fit on {without_one:.1f}",
                nodes,
                prices,
            )
        return Decision(len(live), "nothing pending")

    def on_notice(
        self, t: float, node: Node, nodes: Sequence[Node], prices: Mapping[Pool, float]
    ) -> Decision:
        # Karpenter reads the same SQS interruption queue: it cordons the node and launches a replacement.
        m = self.model
        size = m.capacity_of(node.pool.instance_type)
        launch, _ = place(size, nodes, prices, None, avoid=frozenset({node.pool}), capacity=m.capacity_of)
        return Decision(live_count(nodes), f"interruption warning for {node.id}: replace", launch, (node.id,))


POLICY_NAMES = ("static-peak", "hpa-gpu70", "keda-queue", "reactive-pending", "gpufleet")


def make_policy(
    name: str,
    model: CapacityModel,
    *,
    peak_need: float = 0.0,
    peaks: tuple[KnownPeak, ...] = (),
    keda_threshold: float = 1.0,
) -> Policy:
    """The policy `name`: `peak_need` is static-peak's burst capacity (on-prem replicas), `peaks`
    gpufleet's calendar, `keda_threshold` keda-queue's queued requests per replica."""
    if name == "static-peak":
        return StaticPeak(model, peak_need=peak_need)
    if name == "hpa-gpu70":
        return HpaGpu(model)
    if name == "keda-queue":
        return KedaQueue(model, threshold=keda_threshold)
    if name == "reactive-pending":
        return ReactivePending(model)
    if name == "gpufleet":
        return Gpufleet(model, peaks=peaks)
    raise ValueError(f"unknown policy {name!r}; one of {', '.join(POLICY_NAMES)}")

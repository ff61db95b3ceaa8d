"""The burst controller loop: signal -> decision -> actuation, with its own Prometheus metrics.

The fleet it acts on is reached through a narrow interface: the Auto Scaling group's API (boto3's
autoscaling client behind AsgActuator), EC2's Spot price history (SpotPrices) and the burst stack
(BurstStack). `gpufleet burst run` passes AWS and Pulumi; the simulator (gpufleet.sim.engine) passes
a simulated group behind the same calls, so the benchmark runs this step, not a copy of it.

Each step reads the load signal, the Spot prices of the offered pools and the burst group's
instances, asks the policy (the same one the benchmark measures), logs the decision with its
reason, and carries it out: scale-out by declaring the new node count on the burst stack
(Pulumi Automation API); scale-in by draining and retiring the chosen instances (fewest requests
in flight first) and then declaring the lower count, so the stack and the group agree.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client.exceptions import OpenApiException
from prometheus_client import CollectorRegistry, Counter, Gauge
from urllib3.exceptions import HTTPError as Urllib3Error

from gpufleet.burst.actuate import (
    AWS_ERRORS,
    ActuationError,
    Applied,
    AsgActuator,
    desired_guard,
)
from gpufleet.burst.interrupt import Drainer, Warning
from gpufleet.burst.policy import Decision, Node, Policy, Pool, Signals
from gpufleet.burst.signal import PrometheusQuery, Reading, SignalError, Snapshot, TritonMetrics, between
from gpufleet.model.catalog import AWS_GPU_INSTANCES

log = logging.getLogger("gpufleet.burst")


class Source(Protocol):
    def read(self, t: float) -> Reading | None: ...


class BurstStack(Protocol):
    """Declares the burst node count and applies it: the burst stack's `pulumi up`
    (PulumiActuator), or the simulated group's (gpufleet.sim.engine.SimStack)."""

    def set_burst_nodes(self, count: int) -> Applied: ...


class Admission(Protocol):
    """The gateways' lower-class admission (gpufleet.plan.admission's `booting` entry): production's
    GatewayAdmission through HAProxy's runtime API, or the simulator's gateway."""

    def set_booting(self, booting: bool) -> list[str]: ...


class Degrader(Protocol):
    """On-prem replicas moved to the distilled model for P1 and P2 (lever 1, the policy's
    `Decision.degraded`); the distilled pods join the gateway's fallback backend. Returns what it
    could not do, as Admission does."""

    def set_degraded(self, count: int) -> list[str]: ...


@dataclass
class TritonSource:
    """Rates between consecutive scrapes of one Triton /metrics endpoint."""

    metrics: TritonMetrics
    _last: Snapshot | None = None

    def read(self, t: float) -> Reading | None:
        snapshot = self.metrics.snapshot(t)
        last, self._last = self._last, snapshot
        return between(last, snapshot) if last is not None else None


@dataclass
class PrometheusSource:
    query: PrometheusQuery

    def read(self, t: float) -> Reading | None:
        return self.query.reading()


@dataclass
class SpotPrices:
    """Current Spot price per pool of the offered instance types (EC2 price history)."""

    ec2: Any
    instance_types: list[str]

    def current(self) -> dict[Pool, float]:
        answer = self.ec2.describe_spot_price_history(
            InstanceTypes=self.instance_types,
            ProductDescriptions=["Linux/UNIX (Amazon VPC)"],
            StartTime=datetime.now(UTC),
        )
        latest: dict[Pool, tuple[str, float]] = {}
        for row in answer.get("SpotPriceHistory", []):
            pool = Pool(row["InstanceType"], row["AvailabilityZone"])
            stamp = str(row.get("Timestamp", ""))
            if pool not in latest or stamp > latest[pool][0]:
                latest[pool] = (stamp, float(row["SpotPrice"]))
        return {pool: price for pool, (_, price) in latest.items()}


def inflight_by_instance(query: PrometheusQuery, drainer: Drainer) -> Callable[[], dict[str, int]]:
    """Requests in flight per burst instance, for the scale-in choice (fewest first)."""

    def read() -> dict[str, int]:
        try:
            by_node = query.inflight_by_node()
        except SignalError as exc:
            # Without it every node counts as idle: scale-in then prefers booting and dearer nodes.
            log.warning("in-flight requests per node unavailable: %s", exc)
            return {}
        instances = drainer.instances_by_node()
        return {instances[node]: count for node, count in by_node.items() if node in instances}

    return read


def group_max_price(group: dict[str, Any], instance_types: list[str]) -> float:
    """The most AWS will bill one of the group's Spot nodes per hour: the group's SpotMaxPrice,
    or, when it sets none, AWS's default, the on-demand price (of the dearest offered type)."""
    distribution = group.get("MixedInstancesPolicy", {}).get("InstancesDistribution", {})
    if distribution.get("SpotMaxPrice"):
        return float(distribution["SpotMaxPrice"])
    return max(AWS_GPU_INSTANCES[t].on_demand_usd_hour for t in instance_types)


# While capacity boots, the gateways tighten once the on-prem queue wait or TTFT p99 passes this
# share of its SLO (the site is overloaded, P0 at risk), and relax again below the lower share.
TIGHTEN_SLO_SHARE = 0.25
RELAX_SLO_SHARE = 0.1


def slo_pressure(signals: Signals, slo_queue_wait_s: float, slo_ttft_s: float | None) -> float:
    """The worse of the queue wait's and the TTFT p99's share of its SLO (TTFT where reported)."""
    pressure = signals.queue_wait_s / slo_queue_wait_s
    if signals.ttft_s is not None and slo_ttft_s is not None:
        pressure = max(pressure, signals.ttft_s / slo_ttft_s)
    return pressure


def tighten_admission(
    t: float,
    booting: bool,
    since: float | None,
    boot_to_serve_s: float,
    pressure: float | None,
    tightened: bool,
) -> tuple[bool, float | None]:
    """Whether lower-class admission is tightened now, and since when capacity boots: only while it
    boots and the site is overloaded (`pressure`, the SLO share of `slo_pressure`, past
    TIGHTEN_SLO_SHARE; once tightened, until it falls to RELAX_SLO_SHARE), and never past twice the
    boot-to-serve time (the boot failed: shedding on would only turn demand away). No valid
    reading (`pressure` None or not a finite, non-negative number) never tightens."""
    if not booting:
        return False, None
    since = t if since is None else since
    if t - since > 2 * boot_to_serve_s or pressure is None or not 0 <= pressure < math.inf:
        return False, since
    return pressure > (RELAX_SLO_SHARE if tightened else TIGHTEN_SLO_SHARE), since


# A node the group owes (desired capacity it has not launched yet) goes by this id prefix.
LAUNCHING = "launching-"


def fleet_view(
    group: dict[str, Any], prices: dict[Pool, float], inflight: dict[str, int], max_price: float
) -> list[Node]:
    """The burst group's instances as the policy sees them; each reserves `max_price` of the cap.

    Desired capacity the group has not yet turned into instances (the seconds after an up, or a
    while when no pool has Spot capacity) shows as booting nodes of the group's first-priority
    type, the one capacity-optimized-prioritized launches when it can: counted as nothing, they
    would be ordered again on the next step."""
    nodes = []
    for instance in group.get("Instances", []):
        state = instance.get("LifecycleState", "")
        if state == "Terminated":
            continue
        pool = Pool(instance.get("InstanceType", ""), instance["AvailabilityZone"])
        nodes.append(
            Node(
                id=instance["InstanceId"],
                pool=pool,
                ready=state == "InService",
                draining=state.startswith("Terminating") or state == "Standby",
                launched_at=0.0,
                inflight=inflight.get(instance["InstanceId"], 0),
                max_price=max_price,
            )
        )
    owed = int(group.get("DesiredCapacity", 0)) - sum(1 for n in nodes if not n.draining)
    overrides = group.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("Overrides", [])
    first = overrides[0].get("InstanceType", "") if overrides else ""
    nodes += [Node(f"{LAUNCHING}{i}", Pool(first, ""), False, False, 0.0, 0, max_price) for i in range(owed)]
    return nodes


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "gpufleet_burst_decisions", "Burst decisions by action", ["action"], registry=registry
        )
        self.errors = Counter(
            "gpufleet_burst_actuation_errors", "Failed actuations (Pulumi or ASG)", registry=registry
        )
        self.desired = Gauge(
            "gpufleet_burst_desired_nodes", "Burst nodes the policy wants", registry=registry
        )
        self.actual = Gauge("gpufleet_burst_actual_nodes", "Burst nodes in service", registry=registry)
        self.spend = Gauge(
            "gpufleet_burst_spend_usd_per_hour", "Spot spend rate of the burst fleet", registry=registry
        )
        self.cap = Gauge("gpufleet_burst_cap_usd_per_hour", "The $/hour cap", registry=registry)
        self.signal = Gauge(
            "gpufleet_burst_signal", "Signal values the policy saw", ["name"], registry=registry
        )
        self.signal_errors = Counter(
            "gpufleet_burst_signal_errors", "Signal reads that failed (fleet held)", registry=registry
        )
        self.admission = Gauge(
            "gpufleet_burst_admission_tightened",
            "1 while burst capacity boots and the gateways shed P2 and hold P1 back",
            registry=registry,
        )
        self.gateway_errors = Counter(
            "gpufleet_burst_gateway_errors", "Gateways the admission switch did not reach", registry=registry
        )
        self.degrade_errors = Counter(
            "gpufleet_burst_degrade_errors",
            "On-prem degradation changes that failed (replicas not moved to or from the distilled model)",
            registry=registry,
        )
        self.interruptions = Counter(
            "gpufleet_burst_interruptions",
            "Spot warnings and lifecycle events: handled, ignored (foreign, duplicate, stale) or failed",
            ["outcome", "kind"],
            registry=registry,
        )


# What the AWS, Kubernetes and HTTP clients raise when their service is down, throttles or refuses.
SERVICE_ERRORS: tuple[type[Exception], ...] = (
    *AWS_ERRORS,
    OpenApiException,
    Urllib3Error,
    OSError,
)
STEP_ERRORS: tuple[type[Exception], ...] = (ActuationError, *SERVICE_ERRORS)


@dataclass
class Controller:
    policy: Policy
    source: Source
    prices: SpotPrices
    asg: AsgActuator
    pulumi: BurstStack
    replica_rps: float
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    drainer: Drainer | None = None
    inflight: Callable[[], dict[str, int]] = dict
    window: deque[Signals] = field(default_factory=lambda: deque(maxlen=240))
    clock: Callable[[], float] = time.time
    # The gateways whose lower-class admission tightens while burst capacity boots; None: none.
    admission: Admission | None = None
    # What moves on-prem replicas to the distilled model; None: the decision's count is logged only.
    degrade: Degrader | None = None
    _booting_since: float | None = None
    # Whether this process last set the gateways tightened; None until it first sets them (they
    # may hold a tightening from a controller that crashed).
    _tightened: bool | None = None

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.registry)
        self.metrics.cap.set(self.policy.model.max_hourly_usd)

    def step(self, t: float) -> Decision | None:
        """One decision. Whatever the metrics, AWS, Kubernetes or Pulumi answer, it returns: a
        signal it cannot trust holds the fleet (never a scale-in), a failed actuation leaves the
        fleet as it was and the next step tries again."""
        try:
            decision = self._step(t)
            if decision is not None:
                return decision
        except SignalError as exc:
            # Without a signal there is nothing to decide on: hold the fleet as it is.
            self.metrics.signal_errors.inc()
            log.error("no usable signal, holding the fleet: %s", exc)
        except STEP_ERRORS as exc:
            self.metrics.errors.inc()
            log.error("step failed, fleet unchanged: %s: %s", type(exc).__name__, exc)
        except Exception:  # the loop outlives what no one foresaw, and says so loudly
            self.metrics.errors.inc()
            log.exception("step failed on an unexpected error, fleet unchanged")
        self._release_overdue(t)
        return None

    def _release_overdue(self, t: float) -> None:
        """A step that decided nothing still ends a tightening past twice the boot time: neither a
        signal that stays bad nor a restart (the gateways may hold one from before it, this
        process counts from its first step) holds lower classes back for good."""
        if self.admission is None or self._tightened is False:
            return
        if self._booting_since is None:
            self._booting_since = t
        if t - self._booting_since <= 2 * self.policy.model.boot_to_serve_s:
            return
        failed = self.admission.set_booting(False)
        for failure in failed:
            self.metrics.gateway_errors.inc()
            log.error("gateway admission not released: %s", failure)
        if not failed:
            self._tightened = False
            self.metrics.admission.set(0)
            log.info("gateway admission normal: no decision for twice the boot time")

    def _group(self) -> dict[str, Any]:
        groups = self.asg.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.asg.group])[
            "AutoScalingGroups"
        ]
        if not groups:
            raise ActuationError(f"no Auto Scaling group {self.asg.group!r}")
        return dict(groups[0])

    def _fleet(self, inflight: dict[str, int]) -> tuple[list[Node], dict[Pool, float]]:
        prices = self.prices.current()
        group = self._group()
        # The group launches every node at its own max price, new ones too: the policy must
        # reserve that for launches as well as for the nodes it sees. Read every step: raised (or
        # removed, so AWS bills up to on-demand) since the start, it is what AWS may bill now; never
        # lowered, as nodes launched before keep the max price they were launched at.
        reserve = self.policy.model.fleet_max_price
        current = group_max_price(group, self.prices.instance_types)
        # The group states its price to 4 decimals (components/burst.py): no rise within that.
        if reserve is None or current > float(f"{reserve:.4f}"):
            if reserve is not None:
                log.warning(
                    "the burst group's max price rose to %.4f $/h (was %.4f): reserved from now",
                    current,
                    reserve,
                )
            reserve = current
            self.policy.model = replace(self.policy.model, fleet_max_price=reserve)
        return fleet_view(group, prices, inflight, reserve), prices

    def _step(self, t: float) -> Decision | None:
        reading = self.source.read(t)
        if reading is None:
            log.info("first scrape taken; deciding from the next one")
            return None
        model = self.policy.model
        nodes, prices = self._fleet(self.inflight())
        ready = model.onprem_replicas + model.burst_capacity(nodes, ready_only=True)
        signals = reading.signals(t, self.replica_rps, ready)
        self.window.append(signals)
        decision = self.policy.decide(t, list(self.window), nodes, prices)
        self._observe(signals, nodes, prices, decision)
        # What the serving stack reports beyond Triton's core counters, when it does, and what the
        # gateway turned away (counted in the load above).
        for name, value in (
            ("trt_active", reading.trt_active),
            ("kv_cache_used", reading.kv_cache_used),
            ("ttft_p99_s", reading.ttft_p99_s),
            ("shed_rps", reading.shed_rps),
            ("degraded_rps", reading.degraded_rps),
        ):
            if value is not None:
                self.metrics.signal.labels(name=name).set(value)
        live = [n for n in nodes if not n.draining]
        action = "scale_up" if decision.launch else "scale_in" if decision.drain else "hold"
        self.metrics.decisions.labels(action=action).inc()
        log.info(
            "decision %s: %d -> %d burst nodes (policy wants %d), %d on-prem replicas degraded: %s",
            action,
            len(live),
            len(live) + len(decision.launch) - len(decision.drain),
            decision.desired,
            decision.degraded,
            decision.reason,
        )
        if self.degrade is not None:
            # Before the fleet's up, which may take minutes: the swap starts now.
            for failure in self.degrade.set_degraded(decision.degraded):
                self.metrics.degrade_errors.inc()
                log.error("on-prem degradation not set: %s", failure)
        try:
            self._carry_out(decision, len(live))
        except STEP_ERRORS:
            self._admit(t, nodes, decision, signals, launched=False)  # only what already booted
            raise
        self._admit(t, nodes, decision, signals, launched=bool(decision.launch))
        return decision

    def _admit(
        self, t: float, nodes: list[Node], decision: Decision, signals: Signals, launched: bool
    ) -> None:
        """Tighten the gateways' lower-class admission while burst capacity boots, what serves is
        short of what the policy wants, and the site is overloaded (queue wait or TTFT p99 past a
        share of its SLO, with hysteresis); normal again once it serves, the overload passes, or
        the boot has taken twice the boot time (it failed). A replacement booting beside enough
        capacity holds no one back."""
        if self.admission is None:
            return
        serving = sum(1 for n in nodes if n.ready and not n.draining)
        booting = (
            launched or any(not n.ready and not n.draining for n in nodes)
        ) and decision.desired > serving
        model = self.policy.model
        tighten, self._booting_since = tighten_admission(
            t,
            booting,
            self._booting_since,
            model.boot_to_serve_s,
            slo_pressure(signals, model.slo_queue_wait_s, model.slo_ttft_s),
            bool(self._tightened),
        )
        failed = self.admission.set_booting(tighten)
        self._tightened = tighten
        self.metrics.admission.set(int(tighten))
        for failure in failed:
            self.metrics.gateway_errors.inc()
            log.error("gateway admission not switched: %s", failure)
        log.info(
            "gateway admission %s",
            "tightened: burst capacity boots, site overloaded" if tighten else "normal",
        )

    def _carry_out(self, decision: Decision, live: int) -> None:
        launched = [i for i in decision.drain if not i.startswith(LAUNCHING)]
        # Not launched yet: the lower count below cancels it. The others drain side by side, each
        # within its own two minutes, so a scale-in of several nodes holds the loop two minutes.
        target = live + len(decision.launch) - (len(decision.drain) - len(launched))
        if launched:
            with ThreadPoolExecutor(max_workers=len(launched), thread_name_prefix="scale-in") as pool:
                target -= sum(pool.map(self._retire, launched))
        if decision.acts:
            applied = self.pulumi.set_burst_nodes(target)
            log.info("stack %s: burstNodes=%d (%s)", applied.stack, applied.burst_nodes, applied.summary)

    def _retire(self, instance_id: str) -> bool:
        """Drain one instance chosen for scale-in and take it out of the group; False if it stays."""
        try:
            if self.drainer is not None:
                node = self.drainer.node_for_instance(instance_id)
                if node is not None:
                    report = self.drainer.drain(node, deadline=self.drainer.clock() + 120)
                    log.info("drained %s (%s): %d pods evicted", node, instance_id, len(report.evicted))
            self.asg.retire(instance_id)
            return True
        except SERVICE_ERRORS as exc:
            # It stays counted: a lower count would let the group pick an undrained node.
            self.metrics.errors.inc()
            log.error("could not retire %s, it stays: %s", instance_id, exc)
            return False

    def replacement(self, warning: Warning) -> str:
        """Replacement capacity for a warned node, as the policy plans it within the cap and the
        node bound, ordered on the group directly (an up takes minutes, the notice two). One at a
        time from reading the fleet to raising its size: two warnings planned on the same view
        would each take the last room under the cap."""
        with desired_guard:
            nodes, prices = self._fleet({})
            node = next((n for n in nodes if n.id == warning.instance_id), None)
            if node is None:
                return f"no replacement: {warning.instance_id} is not in the group"
            decision = self.policy.on_notice(self.clock(), node, nodes, prices)
            if not decision.launch:
                return f"no replacement: {decision.reason}"
            return f"desired capacity raised to {self.asg.add(len(decision.launch))}: {decision.reason}"

    def count_interruption(self, outcome: str, kind: str) -> None:
        self.metrics.interruptions.labels(outcome=outcome, kind=kind).inc()

    def _observe(
        self, signals: Signals, nodes: list[Node], prices: dict[Pool, float], decision: Decision
    ) -> None:
        self.metrics.desired.set(decision.desired)
        self.metrics.actual.set(sum(1 for n in nodes if n.ready))
        self.metrics.spend.set(sum(prices.get(n.pool, 0.0) for n in nodes))
        for name in ("load_replicas", "queue_wait_s", "pending", "gpu_util"):
            self.metrics.signal.labels(name=name).set(float(getattr(signals, name)))

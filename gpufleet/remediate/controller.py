"""Take a faulted GPU node out of service through the Kubernetes API, and back only through the gate.

Each round: cordon the node, taint it `gpufleet.io/unverified` (NoSchedule, the taint it registered
with), and evict its pods through the eviction API, which refuses (429) what the serving
PodDisruptionBudget does not allow: such a pod stays and is tried again next round, so the drain
never takes more replicas than the budget. DaemonSet and mirror pods stay, as with kubectl drain.
`admit` lifts the taint and the cordon only for a passing admission-gate report of that node.
Every Kubernetes call goes through `gpufleet.kubeapi.NodeApi`, the project's one adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge

from gpufleet.kubeapi import KubeError, NodeApi
from gpufleet.plan.node import READINESS_TAINT
from gpufleet.remediate.faults import Fault, by_node
from gpufleet.verify.runner import VerifyReport


@dataclass
class Round:
    node: str
    reasons: list[str]
    cordoned: bool = False
    tainted: bool = False
    evicted: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # the disruption budget said not yet
    error: str = ""  # the API refused a step: tried again next round

    @property
    def drained(self) -> bool:
        return not self.blocked


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.faults = Counter("gpufleet_remediation_faults", "GPU faults seen, by kind", ["kind"], registry=r)
        self.cordons = Counter("gpufleet_remediation_cordons", "nodes cordoned for a GPU fault", registry=r)
        self.evictions = Counter(
            "gpufleet_remediation_evictions", "pod evictions, by result", ["result"], registry=r
        )
        self.quarantined = Gauge(
            "gpufleet_remediation_quarantined_nodes", "nodes out of service until the gate passes", registry=r
        )
        self.pods_left = Gauge(
            "gpufleet_remediation_pods_left", "pods the budget keeps on a faulted node", ["node"], registry=r
        )
        self.errors = Counter(
            "gpufleet_remediation_api_errors", "node rounds the API refused (retried)", registry=r
        )
        self.admissions = Counter(
            "gpufleet_remediation_admissions",
            "nodes returned to service, by gate result",
            ["result"],
            registry=r,
        )


class Remediator:
    def __init__(self, nodes: NodeApi, metrics: Metrics | None = None) -> None:
        self.nodes = nodes
        self.metrics = metrics or Metrics()
        self.quarantined: set[str] = set()
        self.reasons: dict[str, set[str]] = {}  # what took each quarantined node out
        # What a node was admitted with, while its source still shows it (dcgm-exporter's last-Xid
        # gauge holds until the GPU is reset): not a new fault, so the node is not taken out again.
        self.acknowledged: dict[str, set[str]] = {}

    def reconcile(self, faults: list[Fault]) -> list[Round]:
        rounds: list[Round] = []
        # First, nodes that came back since the last round (`gpufleet remediate admit` runs in its
        # own process): a node without the unverified taint passed the gate and is left alone.
        draining: list[Round] = []
        for node in sorted(self.quarantined):
            done = self._guarded(Round(node, []), self._returned)
            (rounds if done.error else draining).append(done)
        current = by_node(faults)
        for node in set(self.acknowledged) - set(current):
            del self.acknowledged[node]  # cleared at the source: the next fault there counts
        for node, found in sorted(current.items()):
            acknowledged = self.acknowledged.get(node, set())
            if node in self.acknowledged:
                self.acknowledged[node] = acknowledged & {f.reason for f in found}
            if all(f.reason in acknowledged for f in found):
                continue
            for fault in found:
                if fault.reason not in self.reasons.get(node, set()) | acknowledged:
                    self.metrics.faults.labels(fault.kind).inc()
            rounds.append(self._guarded(Round(node, [f.reason for f in found]), self.quarantine))
        # Nodes taken out earlier keep draining until the budget lets their last pod go.
        taken = {r.node for r in rounds}
        for done in draining:
            if done.node in self.quarantined and done.node not in taken:
                rounds.append(self._guarded(done, self.drain))
        self.metrics.quarantined.set(len(self.quarantined))
        return rounds

    def _guarded(self, done: Round, step: Callable[[Round], Round]) -> Round:
        """One node's round; an API error (a conflict, the server away) fails that node's round
        alone, which the next round repeats: the other faulted nodes are still taken out."""
        try:
            return step(done)
        except ApiException as exc:
            self.metrics.errors.inc()
            done.error = f"API {exc.status}: {exc.reason}"
            return done
        except KubeError as exc:
            self.metrics.errors.inc()
            done.error = f"API {exc}"
            return done

    def _returned(self, done: Round) -> Round:
        if not self.nodes.has_taint(done.node, READINESS_TAINT.key, READINESS_TAINT.effect):
            self._release(done.node)
        return done

    def _release(self, node: str) -> None:
        self.quarantined.discard(node)
        self.acknowledged[node] = self.reasons.pop(node, set())
        self.metrics.pods_left.labels(node).set(0)
        self.metrics.quarantined.set(len(self.quarantined))

    def quarantine(self, done: Round) -> Round:
        node = done.node
        self.nodes.cordon(node)
        # Appended to the list, so the node controller's own unschedulable taint stays.
        done.tainted = self.nodes.add_taint(node, READINESS_TAINT)
        # Quarantined once cordoned and tainted: a node without the taint counts as returned.
        if node not in self.quarantined:
            self.metrics.cordons.inc()
            done.cordoned = True
        self.quarantined.add(node)
        self.reasons.setdefault(node, set()).update(done.reasons)
        return self.drain(done)

    def drain(self, done: Round) -> Round:
        """Evict what the disruption budget allows from a cordoned, tainted node."""
        node = done.node
        for pod in self.nodes.pods_to_evict(node):
            result = self.nodes.evict(pod.metadata.namespace, pod.metadata.name)
            if result.outcome == "blocked":
                done.blocked.append(result.pod)
                self.metrics.evictions.labels("blocked").inc()
            elif result.outcome == "evicted":
                done.evicted.append(result.pod)
                self.metrics.evictions.labels("evicted").inc()
        self.metrics.pods_left.labels(node).set(len(done.blocked))
        return done

    def admit(self, node: str, report: VerifyReport) -> bool:
        """Back into service only after the gate passed on this node: taint off, then uncordon."""
        passed = report.ok and node in report.hosts and all(r.host == node for r in report.results)
        self.metrics.admissions.labels("passed" if passed else "refused").inc()
        if not passed:
            return False
        self.nodes.remove_taint(node, READINESS_TAINT.key, READINESS_TAINT.effect)
        self.nodes.uncordon(node)
        self._release(node)
        return True

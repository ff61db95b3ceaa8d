"""Take a faulted GPU node out of service through the Kubernetes API, and back only through the gate.

Each round: cordon the node, taint it `gpufleet.io/unverified` (NoSchedule, the taint it registered
with), and evict its pods through the eviction API, which refuses (429) what the serving
PodDisruptionBudget does not allow: such a pod stays and is tried again next round, so the drain
never takes more replicas than the budget. DaemonSet and mirror pods stay, as with kubectl drain.
`admit` lifts the taint and the cordon only for a passing admission-gate report of that node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge

from gpufleet.plan.node import READINESS_TAINT
from gpufleet.remediate.faults import Fault, by_node
from gpufleet.verify.runner import VerifyReport

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


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
    def __init__(self, core: Any, metrics: Metrics | None = None) -> None:
        self.core = core  # kubernetes.client.CoreV1Api
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

    def _returned(self, done: Round) -> Round:
        taints = self.core.read_node(done.node).spec.taints or []
        if not any(t.key == READINESS_TAINT.key for t in taints):
            self._release(done.node)
        return done

    def _release(self, node: str) -> None:
        self.quarantined.discard(node)
        self.acknowledged[node] = self.reasons.pop(node, set())
        self.metrics.pods_left.labels(node).set(0)
        self.metrics.quarantined.set(len(self.quarantined))

    def quarantine(self, done: Round) -> Round:
        node = done.node
        cordoned = self.core.patch_node(node, {"spec": {"unschedulable": True}}, _content_type=MERGE_PATCH)
        taints = list(cordoned.spec.taints or [])
        if not any(t.key == READINESS_TAINT.key for t in taints):
            ours = {
                "key": READINESS_TAINT.key,
                "value": READINESS_TAINT.value,
                "effect": READINESS_TAINT.effect,
            }
            value = [self.core.api_client.sanitize_for_serialization(t) for t in taints] + [ours]
            # The test on the version makes the whole-list write lose to a concurrent change
            # (the node controller adds its own unschedulable taint) instead of undoing it.
            version = cordoned.metadata.resource_version
            patch = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                {"op": "add", "path": "/spec/taints", "value": value},
            ]
            self.core.patch_node(node, patch, _content_type=JSON_PATCH)
            done.tainted = True
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
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
        for pod in pods:
            if not _evictable(pod):
                continue
            name, namespace = pod.metadata.name, pod.metadata.namespace
            body = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": name, "namespace": namespace},
            }
            try:
                self.core.create_namespaced_pod_eviction(name, namespace, body)
            except ApiException as exc:
                if exc.status == 429:
                    done.blocked.append(f"{namespace}/{name}")
                    self.metrics.evictions.labels("blocked").inc()
                    continue
                if exc.status == 404:
                    continue
                raise
            done.evicted.append(f"{namespace}/{name}")
            self.metrics.evictions.labels("evicted").inc()
        self.metrics.pods_left.labels(node).set(len(done.blocked))
        return done

    def admit(self, node: str, report: VerifyReport) -> bool:
        """Back into service only after the gate passed on this node: taint off, then uncordon."""
        passed = report.ok and node in report.hosts and all(r.host == node for r in report.results)
        self.metrics.admissions.labels("passed" if passed else "refused").inc()
        if not passed:
            return False
        current = self.core.read_node(node)
        for index, taint in enumerate(current.spec.taints or []):
            if taint.key == READINESS_TAINT.key:
                patch = [
                    {"op": "test", "path": f"/spec/taints/{index}/key", "value": READINESS_TAINT.key},
                    {"op": "remove", "path": f"/spec/taints/{index}"},
                ]
                self.core.patch_node(node, patch, _content_type=JSON_PATCH)
                break
        self.core.patch_node(node, {"spec": {"unschedulable": False}}, _content_type=MERGE_PATCH)
        self._release(node)
        return True


def _evictable(pod: Any) -> bool:
    owners = pod.metadata.owner_references or []
    return (
        not any(o.kind == "DaemonSet" for o in owners)
        and "kubernetes.io/config.mirror" not in (pod.metadata.annotations or {})
        and pod.status.phase not in {"Succeeded", "Failed"}
    )

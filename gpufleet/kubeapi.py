"""The Kubernetes API calls that take a node in and out of service: cordon, taints, drain, admit.

A thin adapter over the `kubernetes` client's CoreV1Api, written against what a real
kube-apiserver answers (recorded in `../shared/fixtures/k8s-api/`, served by `tests/k8sapi.py`):

- cordon is a merge patch of `spec.unschedulable`; taints are a JSON patch of `spec.taints`; every
  patch names its content type rather than leave it to the client's guess.
- an eviction the PodDisruptionBudget forbids is `429` (`TooManyRequests`, cause `DisruptionBudget`):
  not an error, the pod stays and the drain asks again until its deadline; a pod already gone is
  `404`; an allowed eviction is `201`.
- the node lifecycle controller adds `node.kubernetes.io/unschedulable` to a cordoned node, so a
  taint's index is read from the node right before it is removed, with a `test` of the key first.
- a server-side apply with `fieldValidation=Strict` of a field the schema does not know is refused
  (`500`, "field not declared in schema"): `ApplyRefused` with the server's own message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from gpufleet.model.site import Taint

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "gpufleet"
DISRUPTION_BUDGET = "DisruptionBudget"  # the cause of a 429 that a PodDisruptionBudget answers


class KubeError(RuntimeError):
    """An answer the caller cannot go on from; the message is the server's."""


class ApplyRefused(KubeError):
    """A strict server-side apply the API server refused (an unknown field, a wrong type)."""


def status_message(exc: ApiException) -> tuple[str, dict[str, str]]:
    """The Status body's message, and its causes' messages by reason."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.reason or exc.status), {}
    causes = {
        str(c.get("reason")): str(c.get("message")) for c in (body.get("details") or {}).get("causes") or []
    }
    return str(body.get("message") or exc.reason or exc.status), causes


@dataclass(frozen=True)
class Eviction:
    pod: str  # namespace/name
    outcome: str  # "evicted" (201), "gone" (404), "blocked" (429: a disruption budget or throttling)
    message: str = ""


@dataclass(frozen=True)
class DrainReport:
    node: str
    evicted: tuple[str, ...]
    left: tuple[str, ...]
    finished_in_time: bool
    # Why each pod left behind stayed: the server's message (e.g. the disruption budget's).
    blocked: tuple[str, ...] = field(default=())


def _key(pod: Any) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


@dataclass
class NodeApi:
    """Node operations through a CoreV1Api; `clock` and `sleep` are the drain's time."""

    core: Any
    clock: Callable[[], float] = time.time
    poll_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    # Each API call's limit in seconds (the client's `_request_timeout`); None waits as long as the
    # connection does.
    request_timeout_s: float | None = None

    def _limit(self) -> dict[str, Any]:
        return {} if self.request_timeout_s is None else {"_request_timeout": self.request_timeout_s}

    def cordon(self, node: str, unschedulable: bool = True) -> None:
        self.core.patch_node(
            node, {"spec": {"unschedulable": unschedulable}}, _content_type=MERGE_PATCH, **self._limit()
        )

    def uncordon(self, node: str) -> None:
        self.cordon(node, unschedulable=False)

    def taints(self, node: str) -> list[dict[str, Any]]:
        taints = self.core.read_node(node, **self._limit()).spec.taints or []
        return [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]

    def has_taint(self, node: str, key: str, effect: str | None = None) -> bool:
        return any(t["key"] == key and effect in (None, t["effect"]) for t in self.taints(node))

    def add_taint(self, node: str, taint: Taint) -> bool:
        """Add `taint` unless the node has its key and effect; True if it was added."""
        current = self.taints(node)
        if any((t["key"], t["effect"]) == (taint.key, taint.effect) for t in current):
            return False
        value = {"key": taint.key, "value": taint.value, "effect": taint.effect}
        patch = (
            [{"op": "add", "path": "/spec/taints/-", "value": value}]
            if current
            else [{"op": "add", "path": "/spec/taints", "value": [value]}]
        )
        self.core.patch_node(node, patch, _content_type=JSON_PATCH, **self._limit())
        return True

    def remove_taint(self, node: str, key: str, effect: str | None = None) -> bool:
        """Remove the taint with `key` (and `effect`); True if there was one."""
        for index, t in enumerate(self.taints(node)):
            if t["key"] == key and effect in (None, t["effect"]):
                # The index is only good while nobody else edits the list: the test makes the
                # server refuse the patch rather than remove someone else's taint.
                patch = [
                    {"op": "test", "path": f"/spec/taints/{index}/key", "value": key},
                    {"op": "remove", "path": f"/spec/taints/{index}"},
                ]
                self.core.patch_node(node, patch, _content_type=JSON_PATCH, **self._limit())
                return True
        return False

    def pods_to_evict(self, node: str) -> list[Any]:
        """Pods on the node that a drain moves: not DaemonSet or mirror pods, not finished ones."""
        pods = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}", **self._limit()
        ).items
        return [
            p
            for p in pods
            if not any(o.kind == "DaemonSet" for o in (p.metadata.owner_references or []))
            and "kubernetes.io/config.mirror" not in (p.metadata.annotations or {})
            and (p.status is None or p.status.phase not in {"Succeeded", "Failed"})
        ]

    def evict(self, namespace: str, name: str, grace_s: int | None = None) -> Eviction:
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if grace_s is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_s}
        pod = f"{namespace}/{name}"
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body, **self._limit())
        except ApiException as exc:
            message, causes = status_message(exc)
            if exc.status == 404:
                return Eviction(pod, "gone", message)
            if exc.status == 429:
                # DisruptionBudget cause: the budget allows no disruption now (its message says how
                # many healthy pods it needs); without it, the server's own throttling. Either way
                # the pod stays and a later try may pass.
                budget = causes.get(DISRUPTION_BUDGET)
                return Eviction(pod, "blocked", f"{message} {budget}" if budget else message)
            raise KubeError(f"evict {pod}: {exc.status} {message}") from None
        return Eviction(pod, "evicted")

    def drain(self, node: str, deadline: float) -> DrainReport:
        """Cordon, then evict every pod a drain moves, asking again for those a budget keeps,
        until all are gone or the deadline passes; never deletes a pod behind a budget's back."""
        self.cordon(node)
        evicted: list[str] = []
        blocked: dict[str, str] = {}
        while True:
            pods = self.pods_to_evict(node)
            for pod in pods:
                if _key(pod) in evicted:
                    continue  # evicted, still terminating
                # The pod's own grace period, but never past the deadline.
                grace = max(0, int(deadline - self.clock()))
                result = self.evict(pod.metadata.namespace, pod.metadata.name, grace)
                if result.outcome == "evicted":
                    evicted.append(result.pod)
                    blocked.pop(result.pod, None)
                elif result.outcome == "blocked":
                    blocked[result.pod] = result.message
            left = [_key(p) for p in self.pods_to_evict(node)]
            now = self.clock()
            if not left or now >= deadline:
                break
            self.sleep(min(self.poll_s, max(0.0, deadline - now)))
        return DrainReport(
            node=node,
            evicted=tuple(evicted),
            left=tuple(left),
            finished_in_time=not left,
            blocked=tuple(f"{p}: {blocked[p]}" for p in left if p in blocked),
        )

    def delete_node(self, node: str) -> bool:
        """Remove the Node object; False if there was none."""
        try:
            self.core.delete_node(node, **self._limit())
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeError(f"delete node {node}: {exc.status} {status_message(exc)[0]}") from None
        return True

    def apply_strict(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of `obj` with strict field validation; an unknown field is refused."""
        group_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        meta = obj["metadata"]
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        ns = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
        path = f"{base}{ns}/{_plural(kind)}/{meta['name']}"
        query = [("fieldManager", FIELD_MANAGER), ("fieldValidation", "Strict"), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        api = self.core.api_client
        request = api.param_serialize(
            method="PATCH",
            resource_path=path,
            query_params=query,
            header_params={"Content-Type": APPLY_PATCH, "Accept": "application/json"},
            body=obj,
        )
        try:
            response = api.call_api(*request)
            response.read()
            answer = api.response_deserialize(response, {"200": "object", "201": "object"})
        except ApiException as exc:
            message, _ = status_message(exc)
            if "field not declared in schema" in message or exc.status in (400, 422):
                raise ApplyRefused(f"{kind} {meta['name']}: {message}") from None
            raise KubeError(f"apply {kind} {meta['name']}: {exc.status} {message}") from None
        result: dict[str, Any] = answer.data
        return result

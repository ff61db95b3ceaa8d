"""A Kubernetes API for the Degrader's calls: the `scale` subresource of a LeaderWorkerSet and a
Deployment, and a HorizontalPodAutoscaler, served over HTTP on 127.0.0.1 so the kubernetes
client's requests and deserialisation run for real.

No recording covers scale or HPA writes (`../shared/fixtures/k8s-api/` holds node, pod, eviction
and apply exchanges), so the answers are shaped from the kubernetes client's own models
(`V1Scale`, `V2HorizontalPodAutoscaler`, serialised as the client serialises them) and every
error is the recorded `Status` body of `eviction-pod-not-found` (the server's one error shape)
with the reason, code and message the API server sends for that case: 404 NotFound, 409
Conflict ("the object has been modified; please apply your changes to the latest version and try
again", the optimistic-concurrency message), 422 Invalid, 500 InternalError. Each answer is
checked against the official schema (kubernetes-validate) before it is sent.

The server's rules it keeps: a merge patch whose `metadata.resourceVersion` is not the object's
is refused with 409 (optimistic concurrency); a write bumps the version; an HPA whose
`minReplicas` passes its `maxReplicas` is refused with 422; a scale subresource exists only
where the CRD in `../shared/k8s/crds/` declares one (and a Deployment's).

What it cannot see, and how that is closed:
- the controllers behind the objects: no LWS controller deletes a group, no HPA acts on its new
  bounds, no scheduler keeps a distilled pod Pending while the primary's pods still hold the
  GPUs. The order of writes that relies on them is asserted from the fake's log of writes, and
  the GPU bound over every reachable state by the plan's property test
  (tests/unit/test_degrade_plan.py).
- RBAC: the Role is checked as data against the calls this fake saw (tests/components).
- the 409 the real server sends for a stale resourceVersion on a scale subresource is taken from
  its documented optimistic-concurrency behaviour, not a recording.
- requests of any other shape (another content type, a field beyond resourceVersion and the
  counts) are 501 and fail the test through `unrecorded`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kubernetes_validate
import yaml
from kubernetes import client as k8s

from tests.k8sapi import K8S_SCHEMA_VERSION, SHARED, recorded, serve_fake

LWS_CRD = SHARED / "k8s" / "crds" / "leaderworkerset.x-k8s.io_leaderworkersets.yaml"
MERGE = "application/merge-patch+json"


def crd_scale(path: Any = LWS_CRD) -> dict[str, str]:
    """The scale subresource the CRD's served version declares."""
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage"))
    return dict(version["subresources"]["scale"])


def _serialise(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(model)
    return data


def status(code: int, reason: str, message: str, name: str, kind: str, group: str = "") -> dict[str, Any]:
    body = copy.deepcopy(recorded("eviction-pod-not-found")["body"])
    body.update(message=message, reason=reason, code=code)
    body["details"] = {"name": name, "kind": kind, **({"group": group} if group else {})}
    return body


class ScaleApiFake:
    """Workloads by (group, plural, name) with a replica count and a resourceVersion; HPAs by name."""

    def __init__(self, namespace: str = "serving") -> None:
        self.namespace = namespace
        self.lock = threading.Lock()
        self.version = 100
        self.workloads: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.hpas: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, int | tuple[int, int]]] = []  # what changed, in order
        self.calls: list[tuple[str, str, str]] = []  # method, path, content type
        self.unrecorded: list[str] = []
        # Scripted faults: (method, path) -> statuses (500, 503, 403) answered before the real
        # answer, consumed in order. A 409 is never scripted: `race` makes the real one.
        self.faults: dict[tuple[str, str], list[int]] = {}
        # Seconds a request for a path (by regex) waits before its answer: the timeouts.
        self.delays: dict[str, float] = {}
        # Someone (the HPA, a person) rescales between the Degrader's read and its write, once.
        self.race: dict[str, int] = {}
        self.scale_plurals = {("leaderworkerset.x-k8s.io", "leaderworkersets"), ("apps", "deployments")}

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def add(self, group: str, plural: str, name: str, replicas: int) -> None:
        self.workloads[(group, plural, name)] = {"replicas": replicas, "rv": self._bump()}

    def add_hpa(self, name: str, min_replicas: int, max_replicas: int) -> None:
        self.hpas[name] = {"min": min_replicas, "max": max_replicas, "rv": self._bump()}

    def replicas(self, name: str) -> int:
        return int(next(w["replicas"] for (_, _, n), w in self.workloads.items() if n == name))

    # --- answers -------------------------------------------------------------------------------

    def _scale_body(self, group: str, plural: str, name: str) -> dict[str, Any]:
        w = self.workloads[(group, plural, name)]
        body = _serialise(
            k8s.V1Scale(
                api_version="autoscaling/v1",
                kind="Scale",
                metadata=k8s.V1ObjectMeta(name=name, namespace=self.namespace, resource_version=w["rv"]),
                spec=k8s.V1ScaleSpec(replicas=w["replicas"]),
                status=k8s.V1ScaleStatus(
                    replicas=w["replicas"], selector=f"app.kubernetes.io/instance={name}"
                ),
            )
        )
        kubernetes_validate.validate(body, K8S_SCHEMA_VERSION, strict=True)
        return body

    def _hpa_body(self, name: str) -> dict[str, Any]:
        h = self.hpas[name]
        body = _serialise(
            k8s.V2HorizontalPodAutoscaler(
                api_version="autoscaling/v2",
                kind="HorizontalPodAutoscaler",
                metadata=k8s.V1ObjectMeta(name=name, namespace=self.namespace, resource_version=h["rv"]),
                spec=k8s.V2HorizontalPodAutoscalerSpec(
                    min_replicas=h["min"],
                    max_replicas=h["max"],
                    scale_target_ref=k8s.V2CrossVersionObjectReference(
                        api_version="leaderworkerset.x-k8s.io/v1", kind="LeaderWorkerSet", name=name
                    ),
                ),
            )
        )
        kubernetes_validate.validate(body, K8S_SCHEMA_VERSION, strict=True)
        return body

    def _conflict(self, name: str, plural: str, group: str) -> tuple[int, dict[str, Any]]:
        return 409, status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {plural}.{group} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            name,
            plural,
            group,
        )

    def handle(self, method: str, raw: str, content_type: str, body: Any) -> tuple[int, dict[str, Any]]:
        path = urllib.parse.urlparse(raw).path
        for pattern, seconds in self.delays.items():
            if re.search(pattern, path):
                time.sleep(seconds)
        with self.lock:
            self.calls.append((method, path, content_type))
            scripted = self.faults.get((method, path))
            if scripted:
                code = scripted.pop(0)
                name = path.rsplit("/", 2)[-2] if path.endswith("/scale") else path.rsplit("/", 1)[-1]
                reasons = {500: "InternalError", 503: "ServiceUnavailable", 403: "Forbidden"}
                return code, status(code, reasons[code], f"the server answered {code}", name, "scale")
            answer = self._answer(method, path, content_type, body)
            if answer is None:
                self.unrecorded.append(f"{method} {raw} ({content_type}) {json.dumps(body)}")
                return 501, {"kind": "Status", "status": "Failure", "message": "not recorded", "code": 501}
            return answer

    def _answer(
        self, method: str, path: str, content_type: str, body: Any
    ) -> tuple[int, dict[str, Any]] | None:
        ns = re.escape(self.namespace)
        if m := re.fullmatch(rf"/apis/([^/]+)/v1/namespaces/{ns}/([^/]+)/([^/]+)/scale", path):
            group, plural, name = m[1], m[2], m[3]
            if (group, plural) not in self.scale_plurals:
                return None
            key = (group, plural, name)
            if key not in self.workloads:
                return 404, status(
                    404, "NotFound", f'{plural}.{group} "{name}" not found', name, plural, group
                )
            if method == "GET":
                return 200, self._scale_body(group, plural, name)
            if method != "PATCH" or content_type != MERGE or not _scale_patch(body):
                return None
            w = self.workloads[key]
            if name in self.race:
                w["replicas"], w["rv"] = self.race.pop(name), self._bump()
            if body["metadata"]["resourceVersion"] != w["rv"]:
                return self._conflict(name, plural, group)
            w["replicas"], w["rv"] = body["spec"]["replicas"], self._bump()
            self.writes.append((name, w["replicas"]))
            return 200, self._scale_body(group, plural, name)
        if m := re.fullmatch(rf"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/([^/]+)", path):
            name = m[1]
            if name not in self.hpas:
                return 404, status(
                    404, "NotFound", f'horizontalpodautoscalers.autoscaling "{name}" not found', name,
                    "horizontalpodautoscalers", "autoscaling",
                )  # fmt: skip
            if method == "GET":
                return 200, self._hpa_body(name)
            if method != "PATCH" or content_type != MERGE or not _hpa_patch(body):
                return None
            h = self.hpas[name]
            if body["metadata"]["resourceVersion"] != h["rv"]:
                return self._conflict(name, "horizontalpodautoscalers", "autoscaling")
            low, high = body["spec"]["minReplicas"], body["spec"]["maxReplicas"]
            if not 1 <= low <= high:
                return 422, status(
                    422, "Invalid",
                    f'HorizontalPodAutoscaler.autoscaling "{name}" is invalid: spec.maxReplicas: Invalid value: '
                    f"{high}: must be greater than or equal to `minReplicas`",
                    name, "HorizontalPodAutoscaler", "autoscaling",
                )  # fmt: skip
            h.update(min=low, max=high, rv=self._bump())
            self.writes.append((f"hpa/{name}", (low, high)))
            return 200, self._hpa_body(name)
        return None

    @contextmanager
    def serve(self) -> Iterator[Any]:
        """A CustomObjectsApi on this fake."""
        with serve_fake(self.handle, k8s.CustomObjectsApi) as api:
            yield api


def _scale_patch(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"metadata", "spec"}
        and set(body["metadata"]) == {"resourceVersion"}
        and set(body["spec"]) == {"replicas"}
        and isinstance(body["spec"]["replicas"], int)
        and body["spec"]["replicas"] >= 0
    )


def _hpa_patch(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"metadata", "spec"}
        and set(body["metadata"]) == {"resourceVersion"}
        and set(body["spec"]) == {"minReplicas", "maxReplicas"}
    )

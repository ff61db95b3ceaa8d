"""A Kubernetes API that answers as the real kube-apiserver answered, for tests that drain, cordon,
taint and admit nodes. No API server can be installed here.

Every answer is built from the responses recorded from a real kube-apiserver v1.36.2 (with its
controller manager) in `../shared/fixtures/k8s-api/` (see its README), which this module reads in
place: the Node, Pod, PodList and PodDisruptionBudget objects as the server returned them, the
`Status` bodies of an allowed eviction (201), one a budget forbids (429, cause `DisruptionBudget`),
a missing pod (404) and a strict server-side apply of an unknown field (500). The state between
answers (who is cordoned, which taints, which pods are left, what the budget allows) follows the
server's own rules, and `tests/unit/test_kubeapi.py` replays each recorded request against this
fake and compares the answers with the recordings.

What it cannot see, and how that is closed:
- requests of a shape nobody recorded: they get `501` and land in `unrecorded`; the fixture fails
  the test that made them. A strategic-merge cordon, a JSON patch with an object body, an eviction
  in `policy/v1beta1`: all fail here.
- deletion grace: an evicted pod is gone at once (a real one terminates within its grace period);
  the drain's wait-for-gone loop is exercised by pods the budget keeps.
- listing nodes, reading and deleting one, a strict apply that passes: not recorded; the answers
  are the recorded Node object in the recorded list shape, so the client's deserialisation runs.
- schemas for the strict apply come from `kubernetes-validate`'s v1.36 OpenAPI, not the server.
- authentication, RBAC, watch, API priority and fairness (a 429 without a budget cause).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import jsonschema
import pytest
import yaml
from kubernetes import client as k8s

REPO = Path(__file__).resolve().parents[1]
# CI clones the repository beside `shared/`; the engineers' worktrees find it at /work/shared.
SHARED = next(
    (p for p in (REPO.parent / "shared", Path("/work/shared")) if (p / "fixtures").is_dir()),
    REPO.parent / "shared",
)
FIXTURES = SHARED / "fixtures" / "k8s-api"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
K8S_SCHEMA_VERSION = "1.36.0"


def recorded(name: str) -> dict[str, Any]:
    """One recorded exchange: request, status, body."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def _match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _healthy(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return status.get("phase") == "Running" and ready


class KubeApiFake:
    """Stateful: nodes, pods and budgets as the recordings left them; `serve()` gives a CoreV1Api."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exchanges = {p.stem: recorded(p.stem) for p in sorted(FIXTURES.glob("*.json"))}
        node = copy.deepcopy(self.exchanges["node-cordon"]["body"])
        node["spec"] = {}  # as created by setup-objects.yaml: schedulable, no taints
        self._node_template = node
        pod_list = self.exchanges["pods-on-node"]["body"]
        self._list_template = {k: v for k, v in pod_list.items() if k != "items"}
        self._pod_template = copy.deepcopy(pod_list["items"][0])
        self.nodes: dict[str, dict[str, Any]] = {"gpu01": copy.deepcopy(node)}
        self.pods: list[dict[str, Any]] = copy.deepcopy(pod_list["items"])
        pdb = self.exchanges["pdb-status-blocking"]["body"]
        self.pdbs: list[dict[str, Any]] = [copy.deepcopy(pdb)]
        self.calls: list[tuple[str, str, Any]] = []
        # When each write arrived (monotonic seconds, path): for the tests of drain timing.
        self.stamps: list[tuple[float, str]] = []
        self.unrecorded: list[str] = []
        self.core: Any = None  # set by the kube_fake fixture

    # --- building state from the recorded objects ---------------------------------------------------

    def add_node(self, name: str, provider_id: str | None = None) -> dict[str, Any]:
        node = copy.deepcopy(self._node_template)
        node["metadata"]["name"] = name
        node["metadata"]["labels"] = {"kubernetes.io/hostname": name}
        if provider_id:
            node["spec"]["providerID"] = provider_id
        self.nodes[name] = node
        return node

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        labels: dict[str, str] | None = None,
        owner_kind: str | None = None,
        phase: str = "Running",
    ) -> dict[str, Any]:
        pod = copy.deepcopy(self._pod_template)
        meta = pod["metadata"]
        meta.update(name=name, namespace=namespace, labels=labels or {})
        meta.pop("managedFields", None)
        if owner_kind:
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "x", "uid": "u"}]
        pod["spec"]["nodeName"] = node
        pod["status"]["phase"] = phase
        if phase != "Running":
            pod["status"]["conditions"] = []
        self.pods.append(pod)
        return pod

    def set_min_available(self, pdb: str, value: int) -> None:
        next(p for p in self.pdbs if p["metadata"]["name"] == pdb)["spec"]["minAvailable"] = value

    def pod_names(self, node: str | None = None) -> list[str]:
        return [
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in self.pods
            if node is None or p["spec"].get("nodeName") == node
        ]

    # --- the server's rules ---------------------------------------------------------------------

    def _node_controller(self) -> None:
        """The node lifecycle controller: a cordoned node carries the unschedulable taint, and an
        uncordoned one loses it. It acts after a write is answered (the recordings show it)."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for node in self.nodes.values():
            spec = node["spec"]
            taints = spec.get("taints") or []
            has = any(t["key"] == UNSCHEDULABLE_TAINT for t in taints)
            if spec.get("unschedulable") and not has:
                spec["taints"] = [
                    *taints,
                    {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": stamp},
                ]
            elif not spec.get("unschedulable") and has:
                spec["taints"] = [t for t in taints if t["key"] != UNSCHEDULABLE_TAINT] or None
                if spec["taints"] is None:
                    del spec["taints"]

    def evict(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        pod = next(
            (
                p
                for p in self.pods
                if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, name)
            ),
            None,
        )
        if pod is None:
            body = copy.deepcopy(self.exchanges["eviction-pod-not-found"]["body"])
            body["message"] = f'pods "{name}" not found'
            body["details"]["name"] = name
            return 404, body
        labels = pod["metadata"].get("labels") or {}
        for pdb in self.pdbs:
            if pdb["metadata"]["namespace"] != namespace or not _match(
                pdb["spec"]["selector"].get("matchLabels", {}), labels
            ):
                continue
            if not _healthy(pod):
                break  # an unhealthy (e.g. Pending) pod is always evictable
            covered = [
                p
                for p in self.pods
                if p["metadata"]["namespace"] == namespace
                and _match(pdb["spec"]["selector"].get("matchLabels", {}), p["metadata"].get("labels") or {})
            ]
            healthy = sum(_healthy(p) for p in covered)
            desired = int(pdb["spec"]["minAvailable"])
            if healthy - desired <= 0:
                body = copy.deepcopy(self.exchanges["eviction-blocked-by-pdb"]["body"])
                body["details"]["causes"][0]["message"] = (
                    f"The disruption budget {pdb['metadata']['name']} needs {desired} healthy pods "
                    f"and has {healthy} currently"
                )
                return 429, body
        self.pods.remove(pod)
        return 201, copy.deepcopy(self.exchanges["eviction-allowed"]["body"])

    def patch_node(self, name: str, content_type: str, patch: Any) -> tuple[int, dict[str, Any]] | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        if content_type == "application/merge-patch+json" and patch == {
            "spec": {"unschedulable": patch["spec"].get("unschedulable")}
        }:
            node["spec"]["unschedulable"] = patch["spec"]["unschedulable"]
            if not node["spec"]["unschedulable"]:
                del node["spec"]["unschedulable"]
        elif (
            content_type == "application/json-patch+json"
            and isinstance(patch, list)
            and all(op.get("path", "").startswith("/spec/taints") for op in patch)
        ):
            try:
                self.nodes[name] = node = jsonpatch.apply_patch(node, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
                return None  # the server's 422 for a failed test or a bad index was not recorded
        else:
            return None
        answer = copy.deepcopy(node)
        self._node_controller()
        return 200, answer

    def apply(
        self, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]] | None:
        if query.get("fieldValidation") != ["Strict"] or not query.get("fieldManager"):
            return None
        import kubernetes_validate

        try:
            kubernetes_validate.validate(body, K8S_SCHEMA_VERSION, strict=True)
        except jsonschema.ValidationError as exc:
            if exc.validator != "additionalProperties":
                return None  # a wrong type or a missing field: the server's 422 was not recorded
            meta = body.get("metadata") or {}
            where = (
                f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
            )
            group_version, kind = body["apiVersion"], body["kind"]
            gv = group_version if "/" in group_version else f"/{group_version}"
            answer = copy.deepcopy(self.exchanges["ssa-unknown-field"]["body"])
            answer["message"] = (
                f"failed to create typed patch object ({where}; {gv}, Kind={kind}): "
                f"{_field_path(body, exc)}: field not declared in schema"
            )
            return 500, answer
        if body.get("kind") == "Node" and path.startswith("/api/v1/nodes/"):
            node = self.nodes.get(body["metadata"]["name"])
            if node is None:
                return None
            node["metadata"].setdefault("labels", {}).update(body["metadata"].get("labels") or {})
            return 200, copy.deepcopy(node)
        return 200, body

    # --- HTTP ----------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, content_type: str, body: Any) -> tuple[int, dict[str, Any]]:
        url = urllib.parse.urlparse(raw_path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        with self.lock:
            self.calls.append((method, raw_path, body))
            if method != "GET":
                self.stamps.append((time.monotonic(), path))
            answer: tuple[int, dict[str, Any]] | None = None
            if method == "GET" and path == "/api/v1/pods":
                node = query.get("fieldSelector", [""])[0].removeprefix("spec.nodeName=")
                items = [p for p in self.pods if p["spec"].get("nodeName") == node]
                answer = 200, {**copy.deepcopy(self._list_template), "items": copy.deepcopy(items)}
            elif method == "GET" and path == "/api/v1/nodes":
                items = copy.deepcopy(list(self.nodes.values()))
                answer = 200, {**copy.deepcopy(self._list_template), "kind": "NodeList", "items": items}
            elif (m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path)) and m[1] in self.nodes:
                name = m[1]
                if method == "GET":
                    answer = 200, copy.deepcopy(self.nodes[name])
                elif method == "DELETE":
                    answer = 200, self.nodes.pop(name)
                elif method == "PATCH" and content_type == "application/apply-patch+yaml":
                    answer = self.apply(path, query, body)
                elif method == "PATCH":
                    answer = self.patch_node(name, content_type, body)
            elif method == "POST" and (
                m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", path)
            ):
                if (
                    isinstance(body, dict)
                    and body.get("apiVersion") == "policy/v1"
                    and body.get("kind") == "Eviction"
                ):
                    answer = self.evict(m[1], m[2])
            elif method == "GET" and (
                m := re.fullmatch(r"/apis/policy/v1/namespaces/([^/]+)/poddisruptionbudgets/([^/]+)", path)
            ):
                pdb = next((p for p in self.pdbs if p["metadata"]["name"] == m[2]), None)
                if pdb is not None:
                    answer = 200, copy.deepcopy(pdb)
            elif method == "PATCH" and content_type == "application/apply-patch+yaml":
                answer = self.apply(path, query, body)
            if answer is None:
                self.unrecorded.append(f"{method} {raw_path} ({content_type})")
                return 501, {"kind": "Status", "status": "Failure", "message": "not recorded", "code": 501}
            return answer

    @contextmanager
    def serve(self) -> Iterator[Any]:
        """A CoreV1Api on this fake over HTTP on 127.0.0.1: the client's requests and
        deserialisation run for real."""
        with serve_fake(self.handle, k8s.CoreV1Api) as api:
            yield api


def _field_path(body: dict[str, Any], exc: jsonschema.ValidationError) -> str:
    """The field as the server names it: `.spec.template.spec.containers[name="c"].bogusField`."""
    error = exc
    unknown = re.search(r"\('([^']+)' was unexpected\)", error.message)
    out, node = "", body
    for part in error.absolute_path:
        if isinstance(part, int):
            item = node[part]
            out += f'[name="{item["name"]}"]' if isinstance(item, dict) and "name" in item else f"[{part}]"
        else:
            out += f".{part}"
        node = node[part]
    return out + (f".{unknown[1]}" if unknown else "")


@pytest.fixture
def kube_fake() -> Iterator[KubeApiFake]:
    """The fake with `core` (a CoreV1Api on it); a request nobody recorded fails the test."""
    fake = KubeApiFake()
    with fake.serve() as core:
        fake.core = core
        yield fake
    assert not fake.unrecorded, f"requests the recordings do not cover: {fake.unrecorded}"


@contextmanager
def serve_fake(
    handle: Callable[[str, str, str, Any], tuple[int, Any]], api: Callable[[k8s.ApiClient], Any]
) -> Iterator[Any]:
    """`api` (a kubernetes client API class) on a fake server over HTTP on 127.0.0.1, whose
    `handle(method, path, content_type, body)` answers (status, JSON body): the client's requests
    and deserialisation run for real. Bodies are read as YAML (JSON is YAML too)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = (self.headers.get("Content-Type") or "").split(";")[0]
            body = yaml.safe_load(raw) if raw else None
            status, answer = handle(self.command, self.path, content_type, body)
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api_client = k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}"))
    try:
        yield api(api_client)
    finally:
        api_client.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""The node operations (gpufleet.kubeapi) against the fake that answers as the real kube-apiserver
answered (tests/k8sapi.py), and the fake itself against the recordings it is built from."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.inventory.load import load_inventory
from gpufleet.kubeapi import ApplyRefused, NodeApi
from gpufleet.plan.node import READINESS_TAINT, NodePlan, plan_node
from gpufleet.provision.membership import admit
from tests.k8sapi import KubeApiFake, kube_fake, recorded  # noqa: F401


def _spec(node: dict[str, Any]) -> dict[str, Any]:
    """A node's spec with the controller's timestamps left out (they are the recording's clock)."""
    spec = copy.deepcopy(node["spec"])
    for taint in spec.get("taints") or []:
        taint.pop("timeAdded", None)
    return spec


def test_the_fake_answers_each_recorded_request_as_the_server_did() -> None:
    fake = KubeApiFake()
    assert fake.handle("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dgpu01", "", None) == (
        200,
        recorded("pods-on-node")["body"],
    )
    pdb = recorded("pdb-status-blocking")
    assert fake.handle("GET", pdb["request"]["path"], "", None) == (200, pdb["body"])
    assert fake.handle("POST", "/api/v1/namespaces/default/pods/nope/eviction", "application/json",
                       {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "nope"}}) == (
        404,
        recorded("eviction-pod-not-found")["body"],
    )  # fmt: skip
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "serving-0"}}
    blocked = recorded("eviction-blocked-by-pdb")
    assert fake.handle("POST", blocked["request"]["path"], "application/json", eviction) == (
        429,
        blocked["body"],
    )
    fake.set_min_available("serving", 1)  # the recording's context: the budget relaxed
    allowed = recorded("eviction-allowed")
    assert fake.handle("POST", allowed["request"]["path"], "application/json", eviction) == (
        201,
        allowed["body"],
    )
    assert fake.pod_names() == ["default/serving-1"]

    # cordon, taint, untaint: the node after each as the server answered, controller's taint included.
    merge, json_patch = "application/merge-patch+json", "application/json-patch+json"
    steps = [
        ("node-cordon", merge, {"spec": {"unschedulable": True}}),
        ("node-taint-add", json_patch,
         [{"op": "add", "path": "/spec/taints", "value": [{"key": "gpufleet.io/unverified", "effect": "NoSchedule"}]}]),
        ("node-taint-remove", json_patch, [{"op": "remove", "path": "/spec/taints/0"}]),
    ]  # fmt: skip
    for name, content_type, patch in steps:
        status, body = fake.handle("PATCH", "/api/v1/nodes/gpu01", content_type, patch)
        assert (status, _spec(body)) == (recorded(name)["status"], _spec(recorded(name)["body"])), name

    ssa = recorded("ssa-unknown-field")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "t", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "t"}},
            "template": {
                "metadata": {"labels": {"app": "t"}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/t:1", "bogusField": 1}]},
            },
        },
    }
    path = "/apis/apps/v1/namespaces/default/deployments/t?fieldManager=gpufleet&dryRun=All&fieldValidation=Strict"
    assert fake.handle("PATCH", path, "application/apply-patch+yaml", deployment) == (500, ssa["body"])
    assert fake.unrecorded == []


def test_requests_of_a_shape_nobody_recorded_are_refused_and_reported() -> None:
    fake = KubeApiFake()
    # What the old drain sent: the client's default patch type for an object body.
    strategic = fake.handle("PATCH", "/api/v1/nodes/gpu01", "application/strategic-merge-patch+json",
                            {"spec": {"unschedulable": True}})  # fmt: skip
    v1beta1 = fake.handle("POST", "/api/v1/namespaces/default/pods/serving-0/eviction", "application/json",
                          {"apiVersion": "policy/v1beta1", "kind": "Eviction"})  # fmt: skip
    assert strategic[0] == v1beta1[0] == 501
    assert len(fake.unrecorded) == 2
    assert fake.pod_names() == ["default/serving-0", "default/serving-1"], "nothing was evicted"


def test_a_drain_never_breaks_a_disruption_budget_and_says_why_it_stopped(kube_fake: KubeApiFake) -> None:  # noqa: F811
    clock = [0.0]
    api = NodeApi(
        kube_fake.core, clock=lambda: clock[0], poll_s=5, sleep=lambda s: clock.__setitem__(0, clock[0] + s)
    )
    report = api.drain("gpu01", deadline=30.0)
    assert not report.finished_in_time and report.evicted == ()
    assert report.left == ("default/serving-0", "default/serving-1")
    assert report.blocked == tuple(
        f"default/serving-{i}: Cannot evict pod as it would violate the pod's disruption budget. "
        "The disruption budget serving needs 2 healthy pods and has 2 currently"
        for i in (0, 1)
    )
    assert clock[0] == 30.0, "it asked again until the deadline, then stopped"
    assert kube_fake.nodes["gpu01"]["spec"]["unschedulable"] is True
    evictions = [c for c in kube_fake.calls if c[0] == "POST"]
    assert len(evictions) == 2 * 7  # every 5 s from 0 to 30


def test_a_drain_finishes_once_the_budget_allows_and_skips_what_a_drain_leaves(
    kube_fake: KubeApiFake,  # noqa: F811
) -> None:
    # The service's replicas elsewhere keep the budget whole while gpu01's pods leave.
    kube_fake.add_node("gpu02")
    for i in (2, 3):
        kube_fake.add_pod("default", f"serving-{i}", "gpu02", labels={"app": "serving"})
    kube_fake.add_pod("kube-system", "dcgm-exporter-x", "gpu01", owner_kind="DaemonSet")
    kube_fake.add_pod("default", "warming-0", "gpu01", labels={"app": "serving"}, phase="Pending")
    report = NodeApi(kube_fake.core, poll_s=0).drain("gpu01", deadline=10**12)
    assert report.finished_in_time and report.left == () and report.blocked == ()
    assert sorted(report.evicted) == ["default/serving-0", "default/serving-1", "default/warming-0"]
    assert kube_fake.pod_names("gpu01") == ["kube-system/dcgm-exporter-x"]
    assert kube_fake.pod_names("gpu02") == ["default/serving-2", "default/serving-3"]


def test_a_pending_pod_is_evicted_even_when_the_budget_is_spent(kube_fake: KubeApiFake) -> None:  # noqa: F811
    kube_fake.add_pod("default", "serving-2", "gpu01", labels={"app": "serving"}, phase="Pending")
    api = NodeApi(kube_fake.core)
    assert api.evict("default", "serving-2").outcome == "evicted"
    assert api.evict("default", "serving-0").outcome == "blocked"
    assert api.evict("default", "gone-0").outcome == "gone"


def test_taints_are_added_and_removed_by_key_whatever_the_controller_adds(kube_fake: KubeApiFake) -> None:  # noqa: F811
    api = NodeApi(kube_fake.core)
    api.cordon("gpu01")
    assert api.taints("gpu01") == [
        {"key": "node.kubernetes.io/unschedulable", "value": None, "effect": "NoSchedule"}
    ]
    assert api.add_taint("gpu01", READINESS_TAINT)
    assert not api.add_taint("gpu01", READINESS_TAINT), "already there: no second copy"
    assert [t["key"] for t in api.taints("gpu01")] == [
        "node.kubernetes.io/unschedulable",
        "gpufleet.io/unverified",
    ]
    assert api.remove_taint("gpu01", READINESS_TAINT.key)
    assert not api.remove_taint("gpu01", READINESS_TAINT.key)
    api.uncordon("gpu01")
    assert api.taints("gpu01") == [], "uncordoned: the controller took its taint back"
    patches = [(c[2]) for c in kube_fake.calls if c[0] == "PATCH"]
    assert patches[2] == [
        {"op": "test", "path": "/spec/taints/1/key", "value": "gpufleet.io/unverified"},
        {"op": "remove", "path": "/spec/taints/1"},
    ]


def test_a_strict_apply_of_an_unknown_field_is_refused_with_the_servers_message(
    kube_fake: KubeApiFake,  # noqa: F811
) -> None:
    api = NodeApi(kube_fake.core)
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu01", "labels": {"gpufleet.io/gpu": "h100"}},
    }
    assert api.apply_strict(node)["metadata"]["labels"]["gpufleet.io/gpu"] == "h100"
    with pytest.raises(ApplyRefused) as refused:
        api.apply_strict({**node, "spec": {"unschedulable": True, "unschedulabel": True}})
    assert str(refused.value) == (
        "Node gpu01: failed to create typed patch object (gpu01; /v1, Kind=Node): "
        ".spec.unschedulabel: field not declared in schema"
    )
    assert "unschedulable" not in kube_fake.nodes["gpu01"]["spec"], "a refused apply changes nothing"


def _kubeconfig(tmp_path: Path, core: Any) -> Path:
    path = tmp_path / "kubeconfig"
    server = core.api_client.configuration.host
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_gpufleet_drain_exits_1_with_the_budgets_message_then_0_once_it_allows(
    kube_fake: KubeApiFake,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = _kubeconfig(tmp_path, kube_fake.core)
    args = ["drain", "dc1", "gpu01", "--kubeconfig", str(config), "--timeout", "0"]
    held = CliRunner().invoke(app, args)
    assert held.exit_code == 1, held.output
    assert "gpu01: cordoned; 0 pods evicted, 2 left" in held.stdout
    assert (
        "default/serving-0: Cannot evict pod as it would violate the pod's disruption budget." in held.stderr
    )
    kube_fake.add_node("gpu02")
    kube_fake.add_pod("default", "serving-2", "gpu02", labels={"app": "serving"})
    kube_fake.add_pod("default", "serving-3", "gpu02", labels={"app": "serving"})
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert kube_fake.pod_names("gpu01") == []


def _registered(fake: KubeApiFake, plan: NodePlan) -> NodeApi:
    """gpu01 as it joins: cordoned by the rolling play, tainted unverified by its registration."""
    api = NodeApi(fake.core)
    api.cordon(plan.hostname)
    for taint in plan.registration_taints:
        api.add_taint(plan.hostname, taint)
    return api


def test_admission_changes_nothing_on_a_failed_gate(kube_fake: KubeApiFake) -> None:  # noqa: F811
    inv = load_inventory("dc1")
    plan = plan_node(inv, inv.node("gpu01"))
    api = _registered(kube_fake, plan)
    before = copy.deepcopy(kube_fake.nodes["gpu01"])
    writes = len([c for c in kube_fake.calls if c[0] != "GET"])
    admission = admit(api, plan, lambda: (False, ["gpu: nvidia-smi: 7 GPUs, planned 8"]))
    assert not admission.admitted and admission.failed == ("gpu: nvidia-smi: 7 GPUs, planned 8",)
    assert len([c for c in kube_fake.calls if c[0] != "GET"]) == writes
    assert kube_fake.nodes["gpu01"] == before


def test_admission_labels_untaints_and_uncordons_a_node_that_passes(kube_fake: KubeApiFake) -> None:  # noqa: F811
    inv = load_inventory("dc1")
    plan = plan_node(inv, inv.node("gpu01"))
    api = _registered(kube_fake, plan)
    admission = admit(api, plan, lambda: (True, []))
    assert admission.admitted
    assert admission.done[1:] == ("taint gpufleet.io/unverified removed", "uncordoned")
    node = kube_fake.nodes["gpu01"]
    assert plan.labels and plan.labels.items() <= node["metadata"]["labels"].items()
    assert "unschedulable" not in node["spec"]
    planned = [{"key": t.key, "value": t.value, "effect": t.effect} for t in plan.taints]
    assert [
        {k: t.get(k) for k in ("key", "value", "effect")} for t in node["spec"].get("taints", [])
    ] == planned


def test_a_deleted_node_is_drained_then_removed_from_kubernetes_and_ceph(
    kube_fake: KubeApiFake,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Node provider's delete (components.provisioning.remove_node), its playbooks recorded."""
    from components import provisioning

    plays: list[tuple[str, dict[str, Any] | None]] = []
    kubeconfig = _kubeconfig(tmp_path, kube_fake.core).read_text()

    def playbook(site: str, name: str, _dir: Path, extravars: dict[str, Any] | None = None) -> dict[str, Any]:
        plays.append((name, extravars))
        return {"kubeconfig": kubeconfig} if name == "kubernetes_outputs" else {"purged_osds": [7, 8]}

    monkeypatch.setattr(provisioning, "run_cluster_playbook", playbook)
    inv = load_inventory("dc1")
    plan = plan_node(inv, inv.node("gpu01")).model_copy(update={"ceph_osd_devices": ["/dev/nvme9n1"]})
    # The recorded budget keeps both pods: the delete fails and the node stays, in Kubernetes too.
    with pytest.raises(
        RuntimeError, match="gpu01: drain did not finish, node kept: default/serving-0: Cannot evict"
    ):
        provisioning.remove_node("dc1", plan, drain_timeout_s=0)
    assert "gpu01" in kube_fake.nodes and [p[0] for p in plays] == ["kubernetes_outputs"]
    kube_fake.add_node("gpu02")
    for i in (2, 3):
        kube_fake.add_pod("default", f"serving-{i}", "gpu02", labels={"app": "serving"})
    done = provisioning.remove_node("dc1", plan, drain_timeout_s=60)
    assert done == ["drained (2 pods) and deleted from Kubernetes", "OSDs 7, 8 purged from Ceph"]
    assert "gpu01" not in kube_fake.nodes
    assert plays[-1] == ("ceph_remove_host", {"ceph_remove_host": "gpu01"})


def test_an_api_error_stops_drain_with_one_line_and_exit_1(tmp_path: Path) -> None:
    # gpu02 is not registered; the fake answers what nobody recorded with 501, which stands for any
    # refusal here: the command must not end in a traceback.
    fake = KubeApiFake()
    with fake.serve() as core:
        result = CliRunner().invoke(
            app, ["drain", "dc1", "gpu02", "--kubeconfig", str(_kubeconfig(tmp_path, core)), "--timeout", "1"]
        )
    assert result.exit_code == 1
    assert result.stderr.strip() == "gpu02: 501 Not Implemented"
    assert fake.unrecorded == ["PATCH /api/v1/nodes/gpu02 (application/merge-patch+json)"]

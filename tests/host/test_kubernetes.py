"""Kubernetes part: kubelet, node Ready, labels and taints as planned."""

from __future__ import annotations

import json

import pytest

from gpufleet.plan.expect import HostExpect
from tests.host.conftest import Run, not_planned

pytestmark = pytest.mark.kubernetes


def test_kubelet_running_and_node_as_planned(run: Run, expect: HostExpect) -> None:
    want = expect.kubernetes
    if want is None:
        not_planned("Kubernetes")
    assert want is not None
    assert run("systemctl is-active kubelet").strip() == "active"
    node = json.loads(
        run(f"kubectl --kubeconfig /etc/kubernetes/kubelet.conf get node {want.node_name} -o json")
    )
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready")
    assert ready == "True", f"node {want.node_name}: expected Ready, found {ready}"
    labels = node["metadata"].get("labels", {})
    wrong = {k: (v, labels.get(k)) for k, v in want.labels.items() if labels.get(k) != v}
    assert not wrong, f"labels (expected, found): {wrong}"
    taints = {(t["key"], t.get("value", ""), t["effect"]) for t in node["spec"].get("taints", [])}
    planned = {(t.key, t.value, t.effect) for t in want.taints}
    assert planned <= taints, f"taints: expected {sorted(planned)}, missing {sorted(planned - taints)}"

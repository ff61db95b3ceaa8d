"""Kubernetes part: kubelet, node Ready, labels and taints as planned; its host prerequisites."""

from __future__ import annotations

import json

import pytest

from gpufleet.plan.expect import HostExpect
from gpufleet.verify.parse import parse_swaps
from tests.host.conftest import Run, not_planned

pytestmark = pytest.mark.kubernetes


@pytest.mark.cluster
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


def test_modules_loaded_and_swap_off(run: Run, expect: HostExpect) -> None:
    want = expect.kubernetes
    if want is None:
        not_planned("Kubernetes")
    assert want is not None
    # A loaded module (or one built into the kernel with parameters) has its /sys/module entry.
    missing = [
        m for m in want.kernel_modules if run(f"test -d /sys/module/{m} && echo yes || true").strip() != "yes"
    ]
    assert not missing, f"kernel modules not loaded: {missing}"
    if want.swap_off:
        active = parse_swaps(run("cat /proc/swaps"))
        assert not active, f"swap is on ({', '.join(active)}): kubelet will not start"

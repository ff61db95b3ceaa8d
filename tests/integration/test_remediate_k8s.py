"""The remediation controller through NodeApi and the real `kubernetes` client against
`tests/k8sapi.py`'s KubeApiFake, which answers as the recorded kube-apiserver answered
(../shared/fixtures/k8s-api) and keeps the state between answers (cordon, taints, pods, budget).

What the fake cannot see is in its docstring. Here in particular: a refused request (a conflict,
the server away) is not recorded, so the fake's `501` for a request nobody recorded stands for any
refusal; the tests that need one make it on purpose and check that it is the only one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from gpufleet.kubeapi import NodeApi
from gpufleet.remediate.controller import Metrics, Remediator
from gpufleet.remediate.faults import Fault
from gpufleet.verify.runner import CheckResult, VerifyReport
from tests.k8sapi import KubeApiFake, kube_fake, recorded  # noqa: F401

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NODE = "/api/v1/nodes/gpu01"
OURS = {"key": "gpufleet.io/unverified", "value": "true", "effect": "NoSchedule"}


FAULT = Fault("gpu01", "0", "xid", "Xid 79 (GPU has fallen off the bus)")


def _metric(metrics: Metrics, line: str) -> bool:
    return line in generate_latest(metrics.registry).decode().splitlines()


def _remediator(fake: KubeApiFake, metrics: Metrics | None = None) -> Remediator:
    return Remediator(NodeApi(fake.core), metrics)


def _taint_keys(fake: KubeApiFake, node: str = "gpu01") -> list[str]:
    return [t["key"] for t in fake.nodes[node]["spec"].get("taints") or []]


def test_a_fault_cordons_taints_and_drains_within_the_budget(kube_fake: KubeApiFake) -> None:  # noqa: F811
    metrics = Metrics()
    remediator = _remediator(kube_fake, metrics)

    (first,) = remediator.reconcile([FAULT])
    assert (
        first.cordoned and first.tainted and first.reasons == ["GPU 0: Xid 79 (GPU has fallen off the bus)"]
    )
    # The budget (minAvailable 2 of 2 Running) refuses both evictions: nothing is taken by force.
    assert first.evicted == [] and first.blocked == ["default/serving-0", "default/serving-1"]
    assert kube_fake.pod_names("gpu01") == ["default/serving-0", "default/serving-1"]
    cordon, read, taint = kube_fake.calls[:3]
    assert cordon == ("PATCH", NODE, {"spec": {"unschedulable": True}})
    assert read[:2] == ("GET", NODE)
    # Appended after the node controller's own taint, which stays.
    assert taint == ("PATCH", NODE, [{"op": "add", "path": "/spec/taints/-", "value": OURS}])
    assert kube_fake.nodes["gpu01"]["spec"]["unschedulable"] is True
    assert _taint_keys(kube_fake) == ["node.kubernetes.io/unschedulable", "gpufleet.io/unverified"]
    assert _metric(metrics, 'gpufleet_remediation_evictions_total{result="blocked"} 2.0')
    assert _metric(metrics, 'gpufleet_remediation_pods_left{node="gpu01"} 2.0')
    assert _metric(metrics, "gpufleet_remediation_quarantined_nodes 1.0")

    # A replacement replica came up elsewhere, so the budget allows one more: the next round,
    # with no new fault, keeps draining the quarantined node.
    kube_fake.add_pod("default", "serving-2", "gpu02", labels={"app": "serving"})
    (second,) = remediator.reconcile([])
    assert (
        not second.cordoned
        and second.evicted == ["default/serving-0"]
        and second.blocked == ["default/serving-1"]
    )
    assert kube_fake.pod_names("gpu01") == ["default/serving-1"]
    assert _metric(metrics, 'gpufleet_remediation_evictions_total{result="evicted"} 1.0')
    assert _metric(metrics, 'gpufleet_remediation_pods_left{node="gpu01"} 1.0')
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="xid"} 1.0')
    assert _metric(metrics, "gpufleet_remediation_cordons_total 1.0")


def test_a_node_admitted_meanwhile_is_not_taken_out_again(kube_fake: KubeApiFake) -> None:  # noqa: F811
    """`gpufleet remediate admit` runs in its own process: the running controller must see the node
    came back (our taint gone) and leave it alone, not cordon, taint and drain it again."""
    metrics = Metrics()
    remediator = _remediator(kube_fake, metrics)
    remediator.reconcile([FAULT])
    before = len(kube_fake.calls)

    # Still tainted: the drain goes on, and nothing is patched again.
    (again,) = remediator.reconcile([])
    patches = [c for c in kube_fake.calls[before:] if c[0] == "PATCH"]
    assert again.blocked == ["default/serving-0", "default/serving-1"] and patches == []

    # Admitted by another process, while the exporter still shows the Xid it was admitted with:
    # that is not a new fault.
    assert _remediator(kube_fake).admit("gpu01", _report("gpu01", "passed"))
    before = len(kube_fake.calls)
    assert remediator.reconcile([FAULT]) == []
    assert [c[:2] for c in kube_fake.calls[before:]] == [("GET", NODE)]
    assert remediator.quarantined == set()
    assert _metric(metrics, "gpufleet_remediation_quarantined_nodes 0.0")
    assert _metric(metrics, 'gpufleet_remediation_pods_left{node="gpu01"} 0.0')


def test_an_admitted_node_is_not_taken_out_again_for_the_fault_it_was_admitted_with(
    kube_fake: KubeApiFake,  # noqa: F811
) -> None:
    """dcgm-exporter's last-Xid gauge keeps the Xid until the GPU is reset: a node that passed the
    gate must not flap out and back; once the source clears, the next fault takes it out again."""
    metrics = Metrics()
    remediator = _remediator(kube_fake, metrics)
    remediator.reconcile([FAULT])
    assert remediator.admit("gpu01", _report("gpu01", "passed"))
    before = len(kube_fake.calls)
    assert remediator.reconcile([FAULT]) == [] and remediator.reconcile([FAULT]) == []
    assert kube_fake.calls[before:] == []
    # Another fault on the admitted node is new: out again.
    ecc = Fault("gpu01", "1", "ecc", "2 uncorrectable (double-bit) ECC errors")
    (again,) = remediator.reconcile([FAULT, ecc])
    assert again.cordoned and again.tainted and again.reasons == [FAULT.reason, ecc.reason]
    assert "gpufleet.io/unverified" in _taint_keys(kube_fake)
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="xid"} 1.0')
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="ecc"} 1.0')

    # Cleared at the source (GPU reset), then the same Xid again: a new fault.
    assert remediator.admit("gpu01", _report("gpu01", "passed"))
    remediator.reconcile([])
    (recurred,) = remediator.reconcile([FAULT])
    assert recurred.cordoned
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="xid"} 2.0')


def _refuse_once(fake: KubeApiFake, content_type: str) -> None:
    """The next node patch of `content_type` is refused (the fake's 501 for a refusal)."""
    patch_node = fake.patch_node
    refused: list[bool] = []

    def refusing(name: str, kind: str, patch: Any) -> tuple[int, dict[str, Any]] | None:
        if kind == content_type and not refused:
            refused.append(True)
            return None
        return patch_node(name, kind, patch)

    fake.patch_node = refusing  # type: ignore[method-assign]


def test_a_node_whose_taint_failed_is_taken_out_again_not_taken_for_returned(
    kube_fake: KubeApiFake,  # noqa: F811
) -> None:
    metrics = Metrics()
    remediator = _remediator(kube_fake, metrics)
    _refuse_once(kube_fake, "application/json-patch+json")  # cordoned, our taint refused
    (first,) = remediator.reconcile([FAULT])
    assert first.error == "API 501: Not Implemented" and remediator.quarantined == set()
    assert kube_fake.unrecorded == ["PATCH /api/v1/nodes/gpu01 (application/json-patch+json)"]
    kube_fake.unrecorded.clear()
    assert "gpufleet.io/unverified" not in _taint_keys(kube_fake)
    (second,) = remediator.reconcile([FAULT])
    assert second.cordoned and second.tainted and second.error == ""
    assert remediator.quarantined == {"gpu01"}
    assert "gpufleet.io/unverified" in _taint_keys(kube_fake)
    assert _metric(metrics, "gpufleet_remediation_api_errors_total 1.0")


def test_a_node_the_api_refuses_does_not_stop_the_others(kube_fake: KubeApiFake) -> None:  # noqa: F811
    """A node the API does not know (the fake refuses: nothing recorded for it) fails its own round."""
    metrics = Metrics()
    gone = Fault("gpu00", "3", "xid", "Xid 94 (contained ECC error)")
    gone_round, gpu01 = _remediator(kube_fake, metrics).reconcile([gone, FAULT])
    assert gone_round.node == "gpu00" and gone_round.error == "API 501: Not Implemented"
    assert gpu01.cordoned and gpu01.tainted and gpu01.error == ""
    assert _metric(metrics, "gpufleet_remediation_api_errors_total 1.0")
    assert kube_fake.unrecorded == ["PATCH /api/v1/nodes/gpu00 (application/merge-patch+json)"]
    kube_fake.unrecorded.clear()


def test_an_eviction_the_server_refuses_fails_the_round_not_the_controller(
    kube_fake: KubeApiFake,  # noqa: F811
) -> None:
    """An eviction answered with neither 201, 404 nor 429 is an API error: counted, retried."""
    metrics = Metrics()
    remediator = _remediator(kube_fake, metrics)
    evict = kube_fake.evict
    kube_fake.evict = lambda namespace, name: (500, recorded("ssa-unknown-field")["body"])  # type: ignore[method-assign]
    (first,) = remediator.reconcile([FAULT])
    assert first.error.startswith("API evict default/serving-0: 500 ") and remediator.quarantined == {"gpu01"}
    assert _metric(metrics, "gpufleet_remediation_api_errors_total 1.0")
    kube_fake.evict = evict  # type: ignore[method-assign]
    kube_fake.add_pod("default", "serving-2", "gpu02", labels={"app": "serving"})
    (second,) = remediator.reconcile([])
    assert second.error == "" and second.evicted == ["default/serving-0"]


def _report(host: str, outcome: str) -> VerifyReport:
    result = CheckResult(
        host=host, check="test_nccl_allreduce_bus_bandwidth", part="perf", outcome=outcome, message=""
    )
    return VerifyReport(
        site="dc1", hosts=[host], results=[result], returncode=0 if outcome == "passed" else 1
    )


def test_the_node_returns_only_after_a_passing_gate(kube_fake: KubeApiFake) -> None:  # noqa: F811
    metrics = Metrics()
    remediator = _remediator(kube_fake, metrics)
    remediator.reconcile([FAULT])
    before = len(kube_fake.calls)

    assert not remediator.admit("gpu01", _report("gpu01", "failed"))
    assert not remediator.admit("gpu01", _report("gpu02", "passed"))
    assert len(kube_fake.calls) == before and remediator.quarantined == {"gpu01"}

    assert remediator.admit("gpu01", _report("gpu01", "passed"))
    get, remove, uncordon = kube_fake.calls[before:]
    assert get[:2] == ("GET", NODE)
    # Our taint is second, after the node controller's; the test op guards against another
    # write moving it between the read and the patch.
    assert remove == (
        "PATCH",
        NODE,
        [
            {"op": "test", "path": "/spec/taints/1/key", "value": "gpufleet.io/unverified"},
            {"op": "remove", "path": "/spec/taints/1"},
        ],
    )
    assert uncordon == ("PATCH", NODE, {"spec": {"unschedulable": False}})
    # Uncordoned, the node controller lifts its own taint too: the node is as it registered.
    assert kube_fake.nodes["gpu01"]["spec"] == {}
    assert remediator.quarantined == set()
    assert _metric(metrics, 'gpufleet_remediation_admissions_total{result="refused"} 2.0')
    assert _metric(metrics, "gpufleet_remediation_quarantined_nodes 0.0")


def test_the_controller_command_takes_a_node_out_from_its_kernel_log(
    kube_fake: KubeApiFake,  # noqa: F811
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from gpufleet.cli import app

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": kube_fake.core.api_client.configuration.host}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    log = tmp_path / "gpu01.log"
    real = (REPO / "tests" / "fixtures" / "h200x2" / "dmesg-nvrm.txt").read_text()
    log.write_text(
        real
        + "[ 5120.418112] NVRM: Xid (PCI:0000:00:07): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
    )
    # An exporter that does not answer (nothing listens on port 1) is reported, not fatal.
    args = ["remediate", "run", "--kernel-log", f"gpu01={log}", "--rounds", "1", "--metrics-port", "0"]
    args += ["--dcgm", "http://127.0.0.1:1/metrics"]
    result = CliRunner().invoke(app, [*args, "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    assert (
        "gpu01: GPU PCI:0000:00:07: Xid 79 (GPU has fallen off the bus); evicted 0, kept by the disruption budget 2"
        in result.stdout
    )
    assert "not read, tried again next round: http://127.0.0.1:1/metrics: " in result.stdout
    assert [c[:2] for c in kube_fake.calls[:3]] == [("PATCH", NODE), ("GET", NODE), ("PATCH", NODE)]
    assert "gpufleet.io/unverified" in _taint_keys(kube_fake)


def test_admit_keeps_a_node_out_when_the_gate_fails(
    kube_fake: KubeApiFake,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The real gate on this machine, which has no GPU: it fails, and the API is never asked."""
    from typer.testing import CliRunner

    from gpufleet.cli import app

    result = CliRunner().invoke(
        app, ["remediate", "admit", "h200x2", "h200x2-1", "--local", "--kubeconfig", str(tmp_path / "none")]
    )
    assert result.exit_code == 1
    assert (
        "h200x2-1 stays out of service: the gate failed (test_driver_loaded_at_the_bom_version: "
        in result.stdout
    )
    assert kube_fake.calls == []

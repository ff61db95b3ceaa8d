"""The remediation controller through the real `kubernetes` client against an API stand-in on
127.0.0.1 that answers with responses recorded from a real kube-apiserver (../shared/fixtures/k8s-api).

What the stand-in cannot see: it answers by route, not by state, so a request the real server
would reject for its content (a bad JSON patch, a failed `test` op on a stale resourceVersion)
passes here. The test closes that in part by checking each request body against what was recorded
(merge patch of spec.unschedulable, JSON patch of spec.taints). GET of a node and uncordon were not
recorded: GET answers the last recorded Node (after the taint), uncordon the cordon's response.
Kept small and local on purpose: the lead folds it with the drain stand-in of the nodes branch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from prometheus_client import generate_latest

from gpufleet.remediate.controller import Metrics, Remediator
from gpufleet.remediate.faults import Fault
from gpufleet.verify.runner import CheckResult, VerifyReport

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHARED = next(
    p for p in (REPO.parent / "shared", Path("/work/shared")) if (p / "fixtures" / "k8s-api").is_dir()
)
RECORDED = SHARED / "fixtures" / "k8s-api"


def recorded(name: str) -> tuple[int, dict[str, Any]]:
    doc = json.loads((RECORDED / f"{name}.json").read_text())
    return int(doc["status"]), doc["body"]


class StandIn:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, Any]] = []
        self.blocked = {"serving-0", "serving-1"}  # the budget: minAvailable 2 of 2
        self.node = "node-taint-add"  # what GET of the node answers: tainted unverified
        self.refuse_taint = False

    def answer(self, method: str, path: str, content_type: str, body: Any) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path, content_type, body))
        if method == "GET" and path.startswith("/api/v1/pods?"):
            assert "fieldSelector=spec.nodeName%3Dgpu01" in path
            return recorded("pods-on-node")
        if method == "GET" and path == "/api/v1/nodes/gpu01":
            return recorded(self.node)
        if method == "PATCH" and path == "/api/v1/nodes/gpu01":
            if content_type == "application/merge-patch+json":
                return recorded("node-cordon")
            ops = {op["op"] for op in body}
            if self.refuse_taint and "add" in ops:
                # Not recorded: what the server answers when the JSON patch's test op fails.
                return 422, {"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422}
            return recorded("node-taint-add" if "add" in ops else "node-taint-remove")
        if method == "POST" and path.endswith("/eviction"):
            pod = path.split("/")[-2]
            if pod in self.blocked:
                return recorded("eviction-blocked-by-pdb")
            return recorded("eviction-allowed")
        return 404, {"kind": "Status", "code": 404, "message": f"no recording for {method} {path}"}


@pytest.fixture
def api() -> Iterator[tuple[StandIn, k8s.CoreV1Api]]:
    stand_in = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "").split(";")[0]
            status, body = stand_in.answer(
                self.command, self.path, content_type, json.loads(raw) if raw else None
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = k8s.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield stand_in, k8s.CoreV1Api(k8s.ApiClient(config))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


FAULT = Fault("gpu01", "0", "xid", "Xid 79 (GPU has fallen off the bus)")


def _metric(metrics: Metrics, line: str) -> bool:
    return line in generate_latest(metrics.registry).decode().splitlines()


def test_a_fault_cordons_taints_and_drains_within_the_budget(api: tuple[StandIn, k8s.CoreV1Api]) -> None:
    stand_in, core = api
    metrics = Metrics()
    remediator = Remediator(core, metrics)

    (first,) = remediator.reconcile([FAULT])
    assert (
        first.cordoned and first.tainted and first.reasons == ["GPU 0: Xid 79 (GPU has fallen off the bus)"]
    )
    # The budget (minAvailable 2 of 2 Running) refuses both evictions: nothing is taken by force.
    assert first.evicted == [] and first.blocked == ["default/serving-0", "default/serving-1"]
    methods = [(m, p, c) for m, p, c, _ in stand_in.requests]
    assert methods[:2] == [
        ("PATCH", "/api/v1/nodes/gpu01", "application/merge-patch+json"),
        ("PATCH", "/api/v1/nodes/gpu01", "application/json-patch+json"),
    ]
    assert stand_in.requests[0][3] == {"spec": {"unschedulable": True}}
    test_op, add_op = stand_in.requests[1][3]
    assert test_op == {"op": "test", "path": "/metadata/resourceVersion", "value": "276"}
    assert add_op == {
        "op": "add",
        "path": "/spec/taints",
        "value": [{"key": "gpufleet.io/unverified", "value": "true", "effect": "NoSchedule"}],
    }
    assert _metric(metrics, 'gpufleet_remediation_evictions_total{result="blocked"} 2.0')
    assert _metric(metrics, 'gpufleet_remediation_pods_left{node="gpu01"} 2.0')
    assert _metric(metrics, "gpufleet_remediation_quarantined_nodes 1.0")

    # The budget allows one more (a replacement replica came up elsewhere): the next round,
    # with no new fault, keeps draining the quarantined node.
    stand_in.blocked = {"serving-1"}
    (second,) = remediator.reconcile([])
    assert (
        not second.cordoned
        and second.evicted == ["default/serving-0"]
        and second.blocked == ["default/serving-1"]
    )
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="xid"} 1.0')
    assert _metric(metrics, "gpufleet_remediation_cordons_total 1.0")


def test_a_node_admitted_meanwhile_is_not_taken_out_again(api: tuple[StandIn, k8s.CoreV1Api]) -> None:
    """`gpufleet remediate admit` runs in its own process: the running controller must see the node
    came back (our taint gone) and leave it alone, not cordon, taint and drain it again."""
    stand_in, core = api
    metrics = Metrics()
    remediator = Remediator(core, metrics)
    remediator.reconcile([FAULT])
    before = len(stand_in.requests)

    # Still tainted: the drain goes on, and nothing is patched again.
    (again,) = remediator.reconcile([])
    patches = [r for r in stand_in.requests[before:] if r[0] == "PATCH"]
    assert again.blocked == ["default/serving-0", "default/serving-1"] and patches == []

    # Admitted elsewhere (the recorded node after our taint was removed), while the exporter
    # still shows the Xid it was admitted with: that is not a new fault.
    stand_in.node = "node-taint-remove"
    before = len(stand_in.requests)
    assert remediator.reconcile([FAULT]) == []
    assert [r[:2] for r in stand_in.requests[before:]] == [("GET", "/api/v1/nodes/gpu01")]
    assert remediator.quarantined == set()
    assert _metric(metrics, "gpufleet_remediation_quarantined_nodes 0.0")
    assert _metric(metrics, 'gpufleet_remediation_pods_left{node="gpu01"} 0.0')


def test_an_admitted_node_is_not_taken_out_again_for_the_fault_it_was_admitted_with(
    api: tuple[StandIn, k8s.CoreV1Api],
) -> None:
    """dcgm-exporter's last-Xid gauge keeps the Xid until the GPU is reset: a node that passed the
    gate must not flap out and back; once the source clears, the next fault takes it out again."""
    stand_in, core = api
    metrics = Metrics()
    remediator = Remediator(core, metrics)
    remediator.reconcile([FAULT])
    assert remediator.admit("gpu01", _report("gpu01", "passed"))
    before = len(stand_in.requests)
    assert remediator.reconcile([FAULT]) == [] and remediator.reconcile([FAULT]) == []
    # Another fault on the admitted node is new: out again.
    ecc = Fault("gpu01", "1", "ecc", "2 uncorrectable (double-bit) ECC errors")
    (again,) = remediator.reconcile([FAULT, ecc])
    assert again.cordoned and again.reasons == [FAULT.reason, ecc.reason]
    assert len(stand_in.requests) > before
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="xid"} 1.0')
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="ecc"} 1.0')

    # Cleared at the source (GPU reset), then the same Xid again: a new fault.
    assert remediator.admit("gpu01", _report("gpu01", "passed"))
    remediator.reconcile([])
    (recurred,) = remediator.reconcile([FAULT])
    assert recurred.cordoned
    assert _metric(metrics, 'gpufleet_remediation_faults_total{kind="xid"} 2.0')


def test_a_node_whose_taint_failed_is_taken_out_again_not_taken_for_returned(
    api: tuple[StandIn, k8s.CoreV1Api],
) -> None:
    stand_in, core = api
    remediator = Remediator(core)
    stand_in.refuse_taint, stand_in.node = True, "node-cordon"  # cordoned, our taint refused
    (first,) = remediator.reconcile([FAULT])
    assert first.error == "API 422: Unprocessable Entity" and remediator.quarantined == set()
    stand_in.refuse_taint = False
    (second,) = remediator.reconcile([FAULT])
    assert second.cordoned and second.tainted and second.error == ""
    assert remediator.quarantined == {"gpu01"}


def test_a_node_the_api_refuses_does_not_stop_the_others(api: tuple[StandIn, k8s.CoreV1Api]) -> None:
    """A node gone from the API (404 from the stand-in: no recording for it) fails its own round."""
    _, core = api
    metrics = Metrics()
    gone = Fault("gpu00", "3", "xid", "Xid 94 (contained ECC error)")
    gone_round, gpu01 = Remediator(core, metrics).reconcile([gone, FAULT])
    assert gone_round.node == "gpu00" and gone_round.error == "API 404: Not Found"
    assert gpu01.cordoned and gpu01.tainted and gpu01.error == ""
    assert _metric(metrics, "gpufleet_remediation_api_errors_total 1.0")


def _report(host: str, outcome: str) -> VerifyReport:
    result = CheckResult(
        host=host, check="test_nccl_allreduce_bus_bandwidth", part="perf", outcome=outcome, message=""
    )
    return VerifyReport(
        site="dc1", hosts=[host], results=[result], returncode=0 if outcome == "passed" else 1
    )


def test_the_node_returns_only_after_a_passing_gate(api: tuple[StandIn, k8s.CoreV1Api]) -> None:
    stand_in, core = api
    metrics = Metrics()
    remediator = Remediator(core, metrics)
    remediator.reconcile([FAULT])
    before = len(stand_in.requests)

    assert not remediator.admit("gpu01", _report("gpu01", "failed"))
    assert not remediator.admit("gpu01", _report("gpu02", "passed"))
    assert len(stand_in.requests) == before and remediator.quarantined == {"gpu01"}

    assert remediator.admit("gpu01", _report("gpu01", "passed"))
    get, remove, uncordon = stand_in.requests[before:]
    assert get[:2] == ("GET", "/api/v1/nodes/gpu01")
    # The recorded node has our taint at index 0; the test op guards against the node
    # controller's own taint moving it.
    assert remove[3] == [
        {"op": "test", "path": "/spec/taints/0/key", "value": "gpufleet.io/unverified"},
        {"op": "remove", "path": "/spec/taints/0"},
    ]
    assert uncordon[2:] == ("application/merge-patch+json", {"spec": {"unschedulable": False}})
    assert remediator.quarantined == set()
    assert _metric(metrics, 'gpufleet_remediation_admissions_total{result="refused"} 2.0')
    assert _metric(metrics, "gpufleet_remediation_quarantined_nodes 0.0")


def test_the_controller_command_takes_a_node_out_from_its_kernel_log(
    api: tuple[StandIn, k8s.CoreV1Api], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gpufleet.cli import app

    stand_in, core = api
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": core.api_client.configuration.host}}],
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
    assert [r[:2] for r in stand_in.requests[:2]] == [("PATCH", "/api/v1/nodes/gpu01")] * 2


def test_admit_keeps_a_node_out_when_the_gate_fails(
    api: tuple[StandIn, k8s.CoreV1Api], tmp_path: Path
) -> None:
    """The real gate on this machine, which has no GPU: it fails, and the API is never asked."""
    from typer.testing import CliRunner

    from gpufleet.cli import app

    stand_in, _ = api
    result = CliRunner().invoke(
        app, ["remediate", "admit", "h200x2", "h200x2-1", "--local", "--kubeconfig", str(tmp_path / "none")]
    )
    assert result.exit_code == 1
    assert (
        "h200x2-1 stays out of service: the gate failed (test_driver_loaded_at_the_bom_version: "
        in result.stdout
    )
    assert stand_in.requests == []

"""Attacks on the burst controller that the fault-injection test does not make: each one broke it.

The gateway is the real HAProxy (Debian's, configured by gpufleet.plan.admission) and its admission
map is read back through HAProxy's own runtime API. Its backends point at a closed port: these
tests look only at the admission switch, never at a served request.

What this cannot see: the signal source here is a reader that always fails (as a Prometheus that
answers garbage or times out does; the parsers' own tests feed them the real server's bodies), and
AWS, Pulumi and the prices are never reached on that path, so they are left out.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpufleet.burst.actuate import GatewayAdmission, _runtime
from gpufleet.burst.controller import Controller
from gpufleet.burst.policy import CapacityModel, Gpufleet
from gpufleet.burst.signal import PrometheusQuery, Reading, SignalError
from gpufleet.plan.admission import ADMISSION_MAP, FALLBACK, PRIMARY, Backend, Tenant, plan_admission
from gpufleet.serving.gateway import haproxy, write_config
from gpufleet.serving.tritonserver import free_port

pytestmark = pytest.mark.integration

BOOT_S = 60.0


@pytest.fixture
def admission(tmp_path: Path) -> Iterator[GatewayAdmission]:
    closed = f"127.0.0.1:{free_port()}"
    primary = Backend(name=PRIMARY, model="m", servers=[closed], slots=8, rate_rps=100)
    fallback = Backend(name=FALLBACK, model="f", servers=[closed], slots=8, rate_rps=100)
    port, metrics_port, runtime_port = free_port(), free_port(), free_port()
    folder = tmp_path / "gw"
    keys = {"k": Tenant(name="t", priority="P2", requests_per_s=1)}
    config = write_config(
        folder,
        plan_admission(2.0, primary, fallback),
        primary,
        fallback,
        keys,
        port,
        metrics_port,
        runtime_port,
    )
    with haproxy(config, port, folder, metrics_port=metrics_port):
        yield GatewayAdmission([f"127.0.0.1:{runtime_port}"], str(folder / ADMISSION_MAP))


def _booting(admission: GatewayAdmission) -> str:
    """The gateway's own `booting` entry, as HAProxy holds it now."""
    host, _, port = admission.addresses[0].rpartition(":")
    answer = _runtime((host, int(port)), f"show map {admission.map_path}\n", 2.0)
    return {line.split()[1]: line.split()[2] for line in answer.splitlines() if line.strip()}["booting"]


class _Garbage:
    """A signal that never makes sense again (Prometheus down, or answering `[]`)."""

    def read(self, t: float) -> Reading | None:
        raise SignalError("Prometheus answered a JSON list, not an object")


def _controller(admission: GatewayAdmission) -> Controller:
    model = CapacityModel(
        onprem_replicas=0,
        replicas_per_node=1,
        max_nodes=6,
        max_hourly_usd=1000.0,
        boot_to_serve_s=BOOT_S,
        slo_queue_wait_s=2.0,
    )
    none: Any = None  # never reached: the signal fails first
    return Controller(
        policy=Gpufleet(model),
        source=_Garbage(),
        prices=none,
        asg=none,
        pulumi=none,
        replica_rps=1.0,
        admission=admission,
    )


def test_admission_is_released_after_twice_the_boot_time_while_the_signal_is_bad(
    admission: GatewayAdmission,
) -> None:
    # The controller tightened admission for a boot at t=1000; then its signal went bad for good.
    assert admission.set_booting(True) == []
    controller = _controller(admission)
    controller._booting_since, controller._tightened = 1000.0, True
    for t in (1000.0 + 30, 1000.0 + 2 * BOOT_S):
        assert controller.step(t) is None
        assert _booting(admission) == "1", t  # still within twice the boot time
    assert controller.step(1000.0 + 2 * BOOT_S + 1) is None
    assert _booting(admission) == "0"


def test_a_restarted_controller_releases_what_its_predecessor_tightened(admission: GatewayAdmission) -> None:
    # The last controller crashed with admission tightened; its successor cannot read a signal.
    assert admission.set_booting(True) == []
    controller = _controller(admission)
    start = 5000.0
    for t in (start, start + 2 * BOOT_S):
        assert controller.step(t) is None
        assert _booting(admission) == "1", t  # it may be a boot still under way
    assert controller.step(start + 2 * BOOT_S + 1) is None
    assert _booting(admission) == "0"


class _Drip(BaseHTTPRequestHandler):
    """A Prometheus that answers at once and then sends its body a byte at a time, each byte
    within the client's per-read timeout: only a deadline on the whole answer ends it."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "3"]}]},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)

    def log_message(self, format: str, *args: object) -> None:
        return


def test_a_prometheus_that_drips_its_answer_is_cut_off_at_the_timeout() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        query = PrometheusQuery(f"http://127.0.0.1:{server.server_address[1]}", "deepseek", timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(SignalError, match="timed out"):
            query.reading()
        # One query's deadline, not the body's 20 s of drip times the eleven queries.
        assert time.monotonic() - started < 5
    finally:
        server.shutdown()

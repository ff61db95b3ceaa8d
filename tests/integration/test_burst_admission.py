"""Admission while burst capacity boots: the controller switches the real gateway (Debian's HAProxy,
configured by gpufleet.plan.admission) through HAProxy's runtime API, in front of the real
tritonserver, with moto's AWS and the fake `pulumi` resizing the group as a real up would.

While capacity the controller ordered boots, P2 is shed (429) and P1 keeps half its rate; P0 is
untouched. Normal again when the capacity serves, and never tightened when the up fails.

What this cannot see: moto's instances are in service the moment they launch, so "booting" here
lasts from the scale-out decision to the next step; a boot that never serves (Spot capacity
lacking) is released after twice the boot time, which the unit tests of `tighten_admission`
check on the clock. The runtime API is reached over TCP on 127.0.0.1; in a cluster it must be
reachable by the controller alone (it can rewrite maps).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from gpufleet.burst.actuate import AsgActuator, GatewayAdmission, PulumiActuator
from gpufleet.burst.controller import Controller, SpotPrices, TritonSource, tighten_admission
from gpufleet.burst.policy import CapacityModel, Gpufleet
from gpufleet.burst.signal import TritonMetrics
from gpufleet.plan.admission import ADMISSION_MAP, FALLBACK, PRIMARY, Backend, Tenant, plan_admission
from gpufleet.serving.gateway import Gateway, check_config, haproxy, write_config
from gpufleet.serving.loadgen import Reply, gateway_request
from gpufleet.serving.tritonserver import TritonServer, free_port
from tests.integration.test_admission import MODEL, PROMPT, triton  # noqa: F401  (fixture)
from tests.integration.test_burst_aws import GROUP, _aws
from tests.integration.test_burst_pulumi import STACK

pytestmark = pytest.mark.integration

KEYS = {
    "key-p0": Tenant(name="bank", priority="P0", requests_per_s=1000),
    "key-p2": Tenant(name="batch", priority="P2", requests_per_s=1000),
    # Six requests per 10 s window; three while capacity boots. One tenant per phase, so that no
    # phase's requests count against the next one's window.
    **{f"key-p1-{phase}": Tenant(name=f"app-{phase}", priority="P1", requests_per_s=0.6) for phase in "abcd"},
}
P1_LIMIT, P1_BOOT_LIMIT = 6, 3


@pytest.fixture
def gateway(triton: TritonServer, tmp_path: Path) -> Iterator[tuple[Gateway, GatewayAdmission]]:  # noqa: F811
    addr = triton.url.removeprefix("http://")
    # Ample capacity: no queue, so nothing is degraded or shed but for the boot.
    primary = Backend(name=PRIMARY, model=MODEL, servers=[addr], slots=8, rate_rps=100)
    fallback = Backend(name=FALLBACK, model="fallback", servers=[addr], slots=8, rate_rps=100)
    port, metrics_port, runtime_port = free_port(), free_port(), free_port()
    folder = tmp_path / "gw"
    config = write_config(
        folder,
        plan_admission(2.0, primary, fallback),
        primary,
        fallback,
        KEYS,
        port,
        metrics_port,
        runtime_port,
    )
    checked = check_config(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with haproxy(config, port, folder, metrics_port=metrics_port) as gw:
        yield gw, GatewayAdmission([f"127.0.0.1:{runtime_port}"], str(folder / ADMISSION_MAP))


def _call(gw: Gateway, key: str) -> Reply:
    return gateway_request(gw.url, MODEL, key, PROMPT, 1)


def _admitted(gw: Gateway, phase: str) -> dict[str, Any]:
    """What each class gets now: P0 and P2 once, P1 as many times as its normal limit allows."""
    p1 = [_call(gw, f"key-p1-{phase}").status for _ in range(P1_LIMIT)]
    return {"P0": _call(gw, "key-p0").status, "P2": _call(gw, "key-p2").status, "P1": p1}


NORMAL = {"P0": 200, "P2": 200, "P1": [200] * P1_LIMIT}
TIGHTENED = {"P0": 200, "P2": 429, "P1": [200] * P1_BOOT_LIMIT + [429] * (P1_LIMIT - P1_BOOT_LIMIT)}


def test_lower_classes_are_held_back_only_while_burst_capacity_boots(
    triton: TritonServer,  # noqa: F811
    gateway: tuple[Gateway, GatewayAdmission],
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    gw, admission = gateway
    model = CapacityModel(
        onprem_replicas=0,
        replicas_per_node=1,
        max_nodes=6,
        max_hourly_usd=1000.0,
        boot_to_serve_s=60.0,
        # Any time a request waits in Triton's queue (its real counter) is past this SLO: the site
        # reads as overloaded under load, so admission tightens exactly while capacity boots.
        slo_queue_wait_s=1e-9,
    )
    controller = Controller(
        # Any request served is far more than the group holds: every step under load scales out.
        policy=Gpufleet(model, average_s=1.0, quiet_s=3600.0, cooldown_s=0.0),
        source=TritonSource(TritonMetrics(triton.metrics_url, MODEL)),
        prices=SpotPrices(_aws("ec2", moto_url), ["p5en.48xlarge"]),
        asg=AsgActuator(GROUP, model.max_nodes, asg),
        pulumi=PulumiActuator(
            stack=STACK,
            work_dir=project,
            pulumi_root=pulumi_root,
            lock_dir=project / ".locks",
            env={"FAKE_PULUMI_ASG_URL": moto_url, "FAKE_PULUMI_ASG_GROUP": GROUP},
        ),
        replica_rps=0.01,
        admission=admission,
    )
    state = pulumi_root.parent / "state"
    assert controller.step(time.monotonic()) is None  # the first scrape sets the baseline
    assert _admitted(gw, "a") == NORMAL

    def busy_step() -> Any:
        """P0 load through the gateway while Triton's counters move, then one step."""
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                _call(gw, "key-p0")

        worker = threading.Thread(target=load)
        worker.start()
        try:
            time.sleep(2.5)
            return controller.step(time.monotonic())
        finally:
            stop.set()
            worker.join(timeout=60)

    # The up fails: nothing boots, admission stays normal.
    (state / "fail_ups").write_text("1")
    assert busy_step() is None
    assert _admitted(gw, "b") == NORMAL
    assert "gpufleet_burst_admission_tightened 0.0" in generate_latest(controller.registry).decode()

    # The up goes through: capacity boots, P2 is shed and P1 held to half its rate; P0 goes on.
    decision = busy_step()
    assert decision is not None and decision.launch, decision
    assert _admitted(gw, "c") == TIGHTENED
    assert "gpufleet_burst_admission_tightened 1.0" in generate_latest(controller.registry).decode()
    shed = _call(gw, "key-p2")
    assert shed.status == 429 and shed.retry_after is not None and shed.served_by is None

    # The booted nodes serve (moto's are in service at once): normal again.
    decision = busy_step()
    assert decision is not None and not decision.launch, decision
    assert _admitted(gw, "d") == NORMAL
    assert "gpufleet_burst_admission_tightened 0.0" in generate_latest(controller.registry).decode()
    assert "gpufleet_burst_gateway_errors_total 0.0" in generate_latest(controller.registry).decode()


def test_an_unreachable_or_refusing_gateway_is_reported_not_fatal(
    gateway: tuple[Gateway, GatewayAdmission],
) -> None:
    gw, admission = gateway
    wrong_map = GatewayAdmission(admission.addresses, "/no/such.map")
    assert wrong_map.set_booting(True) == [
        f"{admission.addresses[0]}: Unknown map identifier. Please use #<id> or <file>."
    ]
    down = GatewayAdmission([f"127.0.0.1:{free_port()}", *admission.addresses], admission.map_path)
    failed = down.set_booting(True)
    assert len(failed) == 1 and "Connection refused" in failed[0]
    # The reachable one was switched all the same.
    assert _call(gw, "key-p2").status == 429
    assert admission.set_booting(False) == [] and _call(gw, "key-p2").status == 200


def test_a_boot_that_never_serves_releases_admission_after_twice_its_boot_time() -> None:
    # The site overloaded throughout (queue wait at its SLO): only the boot's clock ends it.
    assert tighten_admission(100.0, False, None, 60.0, 1.0, False) == (False, None)
    assert tighten_admission(100.0, True, None, 60.0, 1.0, False) == (True, 100.0)
    assert tighten_admission(220.0, True, 100.0, 60.0, 1.0, True) == (True, 100.0)
    assert tighten_admission(221.0, True, 100.0, 60.0, 1.0, True) == (False, 100.0)
    # Served (nothing boots any more): the clock starts again with the next boot.
    assert tighten_admission(230.0, False, 100.0, 60.0, 1.0, False) == (False, None)

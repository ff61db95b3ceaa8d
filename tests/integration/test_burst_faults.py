"""Fault injection: the real controller and interruption consumer against moto's AWS, the fake
`pulumi` (its ups resize moto's group) and a Prometheus that answers what the test scripts.

More than a thousand random faults: garbage query answers (non-JSON, `[]`, bodies without data,
matrices, values that are not numbers, NaN, infinities, negative rates, 500s; the gateway's shed
and degraded rates among them), failed ups, a stack lock held by another update or another
operation of this controller, and Spot messages that are duplicated, reordered, stale, foreign
(account, region, group, instance), dated ahead, with fields that would forge log lines, or not
events at all (deep JSON among them). After every step: nothing escaped (not
even to the loop's last-resort handler), an unusable signal scaled nothing in and ran no up, the
fleet and every desired capacity stayed under the cap, the stack file declares what the last
successful up applied, and no instance was replaced twice.

What this cannot see: moto launches at once and never reclaims, so a reclaim racing a drain is not
here (test_burst_controller covers drains against their deadlines); the Prometheus is scripted, so
PromQL itself is checked against a real Prometheus elsewhere (test_burst_signal_prometheus).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from gpufleet.burst.actuate import BURST_NODES_KEY, AsgActuator, PulumiActuator, one_operation
from gpufleet.burst.controller import Controller, PrometheusSource, SpotPrices, group_max_price
from gpufleet.burst.interrupt import INTERRUPTION, REBALANCE, Drainer, Interruptions, WarningQueue
from gpufleet.burst.policy import CapacityModel, Gpufleet
from gpufleet.burst.signal import PrometheusQuery
from tests.integration.test_burst_aws import ACCOUNT, GROUP, REGION, _aws, _event, _hook_event
from tests.integration.test_burst_pulumi import STACK, upped_nodes

pytestmark = pytest.mark.integration

TYPES = ["p5en.48xlarge", "p5e.48xlarge"]
# Steps of the run; each injects about seven faults.
STEPS = int(os.environ.get("GPUFLEET_FAULT_STEPS", "140"))
# How many nodes the cap pays for (the group's MaxSize, 6, and the site's bound are higher).
CAP_NODES = 4


class _ScriptedPrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query: a vector per query name, or the step's fault for one query or all."""

    values: ClassVar[dict[str, str]] = {}
    fault: ClassVar[tuple[str, str | None] | None] = None  # (kind, query name or None for all)
    names: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query", [""])[0]
        name = self.names.get(query, "")
        status, body = 200, _vector(self.values.get(name))
        if self.fault is not None and self.fault[1] in (None, name):
            status, body = FAULT_BODIES[self.fault[0]](name)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


def _vector(value: str | None) -> dict[str, Any]:
    result = [] if value is None else [{"metric": {}, "value": [1796000000.5, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


FAULT_BODIES: dict[str, Any] = {
    "empty-list": lambda name: (200, b"[]"),
    "no-data": lambda name: (200, {"status": "success"}),
    "not-json": lambda name: (200, b"<html>bad gateway</html>"),
    "matrix": lambda name: (
        200,
        {
            "status": "success",
            "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "3"]]}]},
        },
    ),
    "abc": lambda name: (200, _vector("abc")),
    "nan": lambda name: (200, _vector("NaN")),
    "inf": lambda name: (200, _vector("+Inf")),
    "negative": lambda name: (200, _vector("-4.5")),
    "http-500": lambda name: (500, b"internal error"),
    "error": lambda name: (422, {"status": "error", "errorType": "execution", "error": "query timed out"}),
    "missing": lambda name: (200, _vector(None)),
}


def _unusable(fault: tuple[str, str | None] | None) -> bool:
    """Whether the reading under this fault must be refused. The one fault that leaves it usable:
    NaN or no sample for queue wait, pending, GPU utilisation or the gateway's shed and degraded
    rates, which PromQL answers when there is nothing to report (no requests, no GPU exporter, no
    gateway). The request rate is never optional."""
    if fault is None:
        return False
    kind, query = fault
    optional = {"queue_wait_s", "pending", "gpu_util", "shed_rps", "degraded_rps"}
    return not (query in optional and kind in {"nan", "missing"})


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    _ScriptedPrometheus.names = {q: n for n, q in PrometheusQuery(url, "deepseek").queries().items()}
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _hold(lock_dir: Path, held: threading.Event, release: threading.Event) -> None:
    with one_operation(STACK, lock_dir):
        held.set()
        release.wait(30)


def _group(asg: Any) -> dict[str, Any]:
    return dict(asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0])


def _declared(project: Path) -> str:
    doc = yaml.safe_load((project / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    return str(doc["config"][BURST_NODES_KEY])


def test_a_thousand_random_faults(
    prometheus: str,
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gpufleet.burst")
    rng = random.Random(13)
    reserve = group_max_price(_group(asg), TYPES)
    capacity = CapacityModel(
        onprem_replicas=1,
        replicas_per_node=1,
        max_nodes=6,
        max_hourly_usd=(CAP_NODES + 0.5) * reserve,
        boot_to_serve_s=60.0,
        slo_queue_wait_s=2.0,
        fleet_max_price=reserve,
    )
    state = pulumi_root.parent / "state"
    lock_dir = project / ".locks"
    controller = Controller(
        policy=Gpufleet(capacity, average_s=15.0, quiet_s=60.0, cooldown_s=30.0),
        source=PrometheusSource(PrometheusQuery(prometheus, "deepseek", timeout_s=2)),
        prices=SpotPrices(_aws("ec2", moto_url), TYPES),
        asg=AsgActuator(GROUP, capacity.max_nodes, asg),
        pulumi=PulumiActuator(
            stack=STACK,
            work_dir=project,
            pulumi_root=pulumi_root,
            lock_dir=lock_dir,
            lock_timeout_s=0.5,
            backoff_max_s=0.2,
            env={
                "FAKE_PULUMI_ASG_URL": moto_url,
                "FAKE_PULUMI_ASG_GROUP": GROUP,
                "FAKE_PULUMI_UP_SECONDS": "0",
            },
        ),
        replica_rps=1.0,
    )
    sqs = _aws("sqs", moto_url)
    queue_url = sqs.create_queue(QueueName=f"faults-{time.monotonic_ns()}")["QueueUrl"]
    consumer = Interruptions(
        queue=WarningQueue(sqs, queue_url, wait_s=0),
        drainer=Drainer(kube.core, poll_s=0.05),
        asg=controller.asg,
        replace_for=controller.replacement,
        account=ACCOUNT,
        region=REGION,
        on_event=controller.count_interruption,
    )
    declared = _declared(project)
    replaced: list[str] = []
    faults: dict[str, int] = {}
    load = 1.0
    serial = 0

    def message_faults(members: list[str]) -> list[str]:
        nonlocal serial
        now = datetime.now(UTC)
        some = rng.choice(members) if members else "i-0123456789abcdef0"
        serial += 1
        kind = rng.choice(
            [
                "duplicate",
                "reordered",
                "stale",
                "account",
                "region",
                "other-group",
                "own-hook",
                "stranger",
                "future",
                "forged-field",
                "garbage",
            ]
        )
        faults[f"message:{kind}"] = faults.get(f"message:{kind}", 0) + 1
        if kind == "duplicate":
            return [_event(REBALANCE, some, now, event_id=f"dup-{serial}")] * rng.randint(2, 4)
        if kind == "reordered":
            # The interruption arrives before the rebalance recommendation that preceded it.
            return [
                _event(INTERRUPTION, some, now, event_id=f"int-{serial}"),
                _event(REBALANCE, some, now - timedelta(seconds=40), event_id=f"reb-{serial}"),
            ]
        if kind == "stale":
            return [
                _event(INTERRUPTION, some, now - timedelta(seconds=rng.randint(121, 7200)), f"old-{serial}")
            ]
        if kind == "account":
            return [_event(INTERRUPTION, some, now, event_id=f"acct-{serial}", account="999999999999")]
        if kind == "region":
            return [_event(INTERRUPTION, some, now, event_id=f"reg-{serial}", region="eu-central-1")]
        if kind == "other-group":
            return [_hook_event(some, "another-team-asg", now, event_id=f"hook-{serial}")]
        if kind == "own-hook":
            # moto has no CompleteLifecycleAction: the handling fails, and must fail alone.
            return [_hook_event(some, GROUP, now, event_id=f"own-{serial}")]
        if kind == "stranger":
            return [_event(INTERRUPTION, f"i-{serial:017x}", now, event_id=f"str-{serial}")]
        if kind == "future":
            # Dated ahead: its deadline would hold a drain that long.
            return [_event(INTERRUPTION, some, now + timedelta(days=rng.randint(1, 3650)), f"fut-{serial}")]
        if kind == "forged-field":
            return [_event(INTERRUPTION, f"{some}\n[00:00:00] forged log line", now, event_id=f"ff-{serial}")]
        return [
            rng.choice(
                [
                    "{",
                    "[]",
                    "null",
                    '{"detail": 5}',
                    json.dumps({"source": "aws.ec2", "detail": {}}),
                    "[" * 50_000,  # nested past the parser: RecursionError, not a decode error
                ]
            )
        ]

    for i in range(STEPS):
        t = 10_000.0 + 15.0 * i
        # Load wanders so that the controller scales out and in between the faults.
        if rng.random() < 0.1:
            load = rng.choice([0.2, 1.0, 2.5, 4.0, 6.0])
        _ScriptedPrometheus.values = {
            "rps": str(load * rng.uniform(0.9, 1.1)),
            "queue_wait_s": str(0.1 if load < 2 else 3.0),
            "pending": str(int(load * 5)),
            "gpu_util": "0.9",
            # The gateway turns some away while the fleet is short.
            "shed_rps": str(max(0.0, load - 3.0) * 0.2),
            "degraded_rps": str(max(0.0, load - 2.0) * 0.3),
        }
        fault: tuple[str, str | None] | None = None
        if rng.random() < 0.6:
            fault = (
                rng.choice(list(FAULT_BODIES)),
                rng.choice([None, "rps", "queue_wait_s", "pending", "gpu_util", "shed_rps", "degraded_rps"]),
            )
            faults[f"metrics:{fault[0]}"] = faults.get(f"metrics:{fault[0]}", 0) + 1
        _ScriptedPrometheus.fault = fault
        invalid = _unusable(fault)
        pulumi_fault = rng.choice([None, None, None, "fail-up", "stack-lock", "our-lock"])
        if pulumi_fault:
            faults[f"pulumi:{pulumi_fault}"] = faults.get(f"pulumi:{pulumi_fault}", 0) + 1
        (state / "fail_ups").write_text("1" if pulumi_fault == "fail-up" else "0")
        stack_lock = state / "locks" / f"{STACK}.json"
        stack_lock.parent.mkdir(exist_ok=True)
        if pulumi_fault == "stack-lock":
            stack_lock.write_text("{}")
        ups_before = len(upped_nodes(pulumi_root))
        desired_before = int(_group(asg)["DesiredCapacity"])
        members_before = {x["InstanceId"] for x in _group(asg)["Instances"]}
        hold = threading.Event()
        release = threading.Event()
        holder = None
        if pulumi_fault == "our-lock":
            # Another operation of this controller holds the stack (an emergency resize, say).
            holder = threading.Thread(target=_hold, args=(lock_dir, hold, release))
            holder.start()
            hold.wait(10)
        try:
            decision = controller.step(t)
        finally:
            release.set()
            if holder is not None:
                holder.join(timeout=30)
            stack_lock.unlink(missing_ok=True)
        group = _group(asg)
        members = [x["InstanceId"] for x in group["Instances"]]
        if invalid:
            assert decision is None, f"step {i}: acted on {fault}: {decision}"
            assert len(upped_nodes(pulumi_root)) == ups_before, f"step {i}: an up on {fault}"
            assert int(group["DesiredCapacity"]) >= desired_before, f"step {i}: scaled in on {fault}"
            assert members_before <= set(members), f"step {i}: retired a node on {fault}"
        # Spot messages, handled between steps as the consumer thread would.
        bodies = [body for _ in range(rng.randint(5, 8)) for body in message_faults(members)]
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[start : start + 10])]
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        for _ in range(10):
            futures = consumer.poll()
            for future in futures:
                handled = future.result(timeout=60)
                if handled is not None and handled.replacement.startswith("desired capacity raised"):
                    replaced.append(handled.warning.instance_id)
            if not futures:
                break
        group = _group(asg)
        live = [x for x in group["Instances"] if x["LifecycleState"] != "Terminated"]
        assert int(group["DesiredCapacity"]) <= CAP_NODES, f"step {i}: desired over the cap"
        assert len(live) * reserve <= capacity.max_hourly_usd, f"step {i}: {len(live)} nodes over the cap"
        applied = upped_nodes(pulumi_root)
        if applied:
            declared = applied[-1]
        assert _declared(project) == declared, f"step {i}: the stack file holds a size no up applied"
    assert len(replaced) == len(set(replaced)), "an instance was replaced twice"
    assert sum(faults.values()) >= 1000, faults
    assert "unexpected error" not in caplog.text, "a fault reached the loop's last-resort handler"
    # The run did scale both ways and handle warnings, so the faults met a working controller.
    decisions = caplog.text
    assert "decision scale_up" in decisions and "decision scale_in" in decisions
    assert replaced
    consumer.stop()

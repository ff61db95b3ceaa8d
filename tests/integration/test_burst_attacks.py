"""Attacks on the burst controller beyond the fault-injection test's: forged and poisonous queue
messages, Pulumi that hangs or fails after it applied, and `gpufleet burst run` given bad values.
Each test here failed before the fix it names.

The AWS side is moto's server, Pulumi the fake CLI of test_burst_pulumi, Kubernetes the API fake
that answers as the recorded kube-apiserver did (tests/k8sapi.py).

What this cannot see: moto delivers what is sent and never reclaims, so SQS's own limits on a
body (256 KiB, XML characters only) are not exercised: the parser is also fed bodies directly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.burst.actuate import BURST_NODES_KEY, ActuationError, AsgActuator, PulumiActuator, StackBusy
from gpufleet.burst.controller import Controller, SpotPrices, group_max_price
from gpufleet.burst.interrupt import INTERRUPTION, Drainer, Interruptions, WarningQueue, parse_event
from gpufleet.burst.policy import CapacityModel, Gpufleet
from gpufleet.burst.signal import Reading
from tests.integration.test_burst_aws import (
    ACCOUNT,
    GROUP,
    REGION,
    _aws,
    _event,
    _hook_event,
    _instances,
    _node,
)
from tests.integration.test_burst_pulumi import STACK, actuator, upped_nodes

pytestmark = pytest.mark.integration


def _consumer(asg: Any, kube: Any, moto_url: str, **kw: Any) -> tuple[Interruptions, Any, str]:
    sqs = _aws("sqs", moto_url)
    queue_url = sqs.create_queue(QueueName=f"attacks-{time.monotonic_ns()}")["QueueUrl"]
    actuator = AsgActuator(GROUP, max_nodes=6, client=asg)
    consumer = Interruptions(
        queue=WarningQueue(sqs, queue_url, wait_s=0),
        drainer=Drainer(kube.core, poll_s=0.05),
        asg=actuator,
        replace_for=lambda warning: "no replacement: not under test",
        account=ACCOUNT,
        region=REGION,
        **kw,
    )
    return consumer, sqs, queue_url


# --- the interruption queue -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,  # json.loads raised RecursionError, not a decode error
        '{"detail": ' * 50_000 + "1" + "}" * 50_000,
        '{"detail": {"instance-id": "i-1"}, "time": "2026-01-01T00:00:00Z", "source": "aws.ec2", '
        '"detail-type": "EC2 Spot Instance Interruption Warning", "id": ' + "[" * 100_000 + "}",
    ],
)
def test_deeply_nested_json_is_not_an_event(body: str) -> None:
    assert parse_event(body, "r") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("instance", "i-0123456789abcdef0\n[19:40:00] WARNING  spot interruption for i-0aaa handled"),
        ("instance", "i-\udc80"),
        ("instance", "../../etc/passwd"),
        ("account", "123456789012\nforged"),
        ("region", "us-east-1\u202eforged"),
        ("id", "x" * 10_000),
    ],
)
def test_an_event_whose_fields_would_forge_log_lines_is_not_an_event(field: str, value: str) -> None:
    """What an event names goes into the log: a newline in it wrote a line of the attacker's."""
    now = datetime.now(UTC)
    fields = {"instance": "i-0123456789abcdef0", "account": ACCOUNT, "region": REGION, "id": "e-1"}
    fields[field] = value
    body = _event(
        INTERRUPTION,
        fields["instance"],
        now,
        event_id=fields["id"],
        account=fields["account"],
        region=fields["region"],
    )
    assert parse_event(body, "r") is None
    assert parse_event(_event(INTERRUPTION, "i-0123456789abcdef0", now), "r") is not None


def test_a_forged_lifecycle_event_of_our_own_group_does_not_drain_a_serving_node(
    asg: Any,
    kube: Any,
    moto_url: str,
) -> None:
    """A termination hook event names an instance the group holds in Terminating:Wait. One naming
    an instance in service (forged, or replayed after the group changed its mind) drained it: the
    node stayed cordoned and empty, and completing the action then failed."""
    consumer, sqs, queue_url = _consumer(asg, kube, moto_url)
    serving = _instances(asg)[0]
    _node(kube, "n1", serving)
    kube.add_pod("serving", "triton-0", "n1")
    sqs.send_message(QueueUrl=queue_url, MessageBody=_hook_event(serving, GROUP, datetime.now(UTC), "forged"))
    assert consumer.poll() == []
    assert kube.pod_names() == ["serving/triton-0"]
    assert [c for c in kube.calls if c[0] != "GET"] == [], "nothing cordoned"
    consumer.stop()


def test_the_groups_own_termination_hook_is_still_drained(kube: Any, moto_url: str) -> None:
    """The other side of the check above: an instance in Terminating:Wait is drained and let go.
    moto's hooks never fire, so the group's answer and CompleteLifecycleAction are botocore's
    Stubber, checked against the AWS API model; the queue is moto's."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "autoscaling", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    instance = "i-0123456789abcdef0"
    _node(kube, "n9", instance)
    kube.add_pod("serving", "triton-9", "n9")
    sqs = _aws("sqs", moto_url)
    queue_url = sqs.create_queue(QueueName=f"hook-{time.monotonic_ns()}")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody=_hook_event(instance, GROUP, datetime.now(UTC), "real"))
    group = {
        "AutoScalingGroupName": GROUP,
        "MinSize": 0,
        "MaxSize": 6,
        "DesiredCapacity": 1,
        "DefaultCooldown": 300,
        "AvailabilityZones": [f"{REGION}a"],
        "HealthCheckType": "EC2",
        "CreatedTime": datetime.now(UTC),
        "Instances": [
            {
                "InstanceId": instance,
                "AvailabilityZone": f"{REGION}a",
                "LifecycleState": "Terminating:Wait",
                "HealthStatus": "Healthy",
                "ProtectedFromScaleIn": False,
            }
        ],
    }
    with Stubber(client) as stub:
        stub.add_response(
            "describe_auto_scaling_groups", {"AutoScalingGroups": [group]}, {"AutoScalingGroupNames": [GROUP]}
        )
        stub.add_response(
            "complete_lifecycle_action",
            {},
            {
                "LifecycleHookName": "burst-prod-drain",
                "AutoScalingGroupName": GROUP,
                "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
                "LifecycleActionResult": "CONTINUE",
                "InstanceId": instance,
            },
        )
        consumer = Interruptions(
            queue=WarningQueue(sqs, queue_url, wait_s=0),
            drainer=Drainer(kube.core, poll_s=0.05),
            asg=AsgActuator(GROUP, max_nodes=6, client=client),
            replace_for=lambda warning: "no replacement: not under test",
            account=ACCOUNT,
            region=REGION,
        )
        (handled,) = [f.result(timeout=60) for f in consumer.poll()]
        stub.assert_no_pending_responses()
    assert handled is not None and handled.drain is not None
    assert handled.drain.evicted == ("serving/triton-9",)
    consumer.stop()


def test_a_poison_message_is_dropped_with_its_reason_and_spares_its_batch(
    asg: Any,
    kube: Any,
    moto_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deep JSON in one message of a batch made every receive raise: the real warning beside it
    came back after each visibility timeout, never handled, until SQS's retention dropped both."""
    consumer, sqs, queue_url = _consumer(asg, kube, moto_url)
    doomed = _instances(asg)[0]
    _node(kube, "n1", doomed)
    sqs.send_message(QueueUrl=queue_url, MessageBody="[" * 100_000)
    sqs.send_message(QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, doomed, datetime.now(UTC), "real"))
    handled = []
    for _ in range(5):
        handled += [f.result(timeout=60) for f in consumer.poll()]
    assert [h.warning.instance_id for h in handled if h is not None] == [doomed]
    assert (
        sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0, VisibilityTimeout=0).get("Messages")
        is None
    )
    # Dropped, and said so with the message it was: not lost silently.
    assert "dropped message" in caplog.text and "not a JSON object" in caplog.text
    consumer.stop()


def test_a_warning_from_the_future_is_not_drained_against_its_forged_deadline(
    asg: Any,
    kube: Any,
    moto_url: str,
) -> None:
    """An interruption dated a year ahead passed the staleness check and drained until its own
    deadline: a disruption budget that holds its pod then held a worker for a year."""
    consumer, sqs, queue_url = _consumer(asg, kube, moto_url)
    doomed = _instances(asg)[0]
    _node(kube, "n1", doomed)
    ahead = datetime.now(UTC) + timedelta(days=365)
    sqs.send_message(QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, doomed, ahead, "future"))
    assert consumer.poll() == []
    assert doomed in _instances(asg)
    assert [c for c in kube.calls if c[0] != "GET"] == [], "nothing cordoned"
    consumer.stop()


# --- Pulumi -----------------------------------------------------------------------------------


def test_an_up_that_hangs_returns_the_step_and_holds_the_stack(project: Path, pulumi_root: Path) -> None:
    """`pulumi up` has no timeout in the Automation API: an up that hung held the loop (its signal,
    its metrics, the gateways' release) for as long as it hung."""
    burst_stack = actuator(project, pulumi_root, operation_timeout_s=2.0, env={"FAKE_PULUMI_UP_SECONDS": "8"})
    started = time.monotonic()
    with pytest.raises(ActuationError, match=r"pulumi up for 5 burst nodes still runs after 2s"):
        burst_stack.set_burst_nodes(5)
    assert time.monotonic() - started < 6
    # It goes on alone, and nothing else runs on the stack meanwhile.
    with pytest.raises(StackBusy):
        burst_stack.set_burst_nodes(6)
    deadline = time.monotonic() + 30
    while not upped_nodes(pulumi_root):
        assert time.monotonic() < deadline, "the hung up never ended"
        time.sleep(0.1)
    assert upped_nodes(pulumi_root) == ["5"]
    # Once it has ended, the stack takes the next operation.
    burst_stack.env["FAKE_PULUMI_UP_SECONDS"] = "0.2"
    deadline = time.monotonic() + 10
    while True:
        try:
            burst_stack.set_burst_nodes(4)
            break
        except StackBusy:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert upped_nodes(pulumi_root) == ["5", "4"]


def test_an_up_that_applied_is_not_undone_when_reading_its_outputs_fails(
    project: Path,
    pulumi_root: Path,
) -> None:
    """The Automation API reads the outputs and the summary after the up, in the same call: a
    backend hiccup there raised like a failed up, and the stack file got the old size back
    while the group had the new one (the next `pulumi up` by anyone would have undone it)."""
    (pulumi_root.parent / "state" / "fail_outputs").write_text("")
    burst_stack = actuator(project, pulumi_root)
    applied = burst_stack.set_burst_nodes(5)
    assert upped_nodes(pulumi_root) == ["5"]
    assert applied.burst_nodes == 5 and "could not be read" in applied.summary
    declared = yaml.safe_load((project / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"]
    assert declared[BURST_NODES_KEY] == "5"


def test_an_up_whose_outputs_are_garbage_applied_and_says_so(
    project: Path,
    pulumi_root: Path,
) -> None:
    """The up exited 0 and the Automation API then failed to parse what `stack output` printed:
    the ValueError reached the loop's last-resort handler as an unexpected error."""
    (pulumi_root.parent / "state" / "outputs.json").write_text("{not json")
    burst_stack = actuator(project, pulumi_root)
    applied = burst_stack.set_burst_nodes(3)
    assert upped_nodes(pulumi_root) == ["3"]
    assert "could not be read" in applied.summary
    declared = yaml.safe_load((project / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"]
    assert declared[BURST_NODES_KEY] == "3"


def test_an_up_that_could_not_start_leaves_the_stack_file_as_it_was(
    project: Path,
    pulumi_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI could not be started for the up (no file descriptors left, the binary gone): an
    OSError, not a CommandError, left the stack file declaring a size no up applied."""
    from pulumi import automation as auto

    path = project / "stacks" / f"Pulumi.{STACK}.yaml"
    before = yaml.safe_load(path.read_text())["config"][BURST_NODES_KEY]

    def cannot_start(*args: object, **kwargs: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(auto.Stack, "up", cannot_start)
    burst_stack = actuator(project, pulumi_root)
    with pytest.raises(ActuationError, match=r"Too many open files.*restored"):
        burst_stack.set_burst_nodes(5)
    assert str(yaml.safe_load(path.read_text())["config"][BURST_NODES_KEY]) == str(before)
    assert upped_nodes(pulumi_root) == []


@pytest.mark.parametrize("answer", ["{not json", "[1, 2]", '"text"'])
def test_outputs_that_are_not_an_object_are_an_actuation_error(
    answer: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    (pulumi_root.parent / "state" / "outputs.json").write_text(answer)
    burst_stack = actuator(project, pulumi_root)
    with pytest.raises(ActuationError, match=f"cannot read the outputs of stack {STACK}"):
        burst_stack.outputs()


# --- `gpufleet burst run` ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--replica-rps", "inf"], "--replica-rps"),  # load/inf is 0: every node drained
        (["--interval", "1e308"], "--interval"),  # time.sleep overflowed after the first step
        (["--metrics-port", "70000"], "--metrics-port"),
        (["--metrics-port", "-5"], "--metrics-port"),
        (["--metrics-address", "no such host"], "--metrics-address"),
        (["--aws-endpoint", "not a url"], "--aws-endpoint"),
        (["--aws-endpoint", "http://127.0.0.1:1"], "--aws-endpoint"),  # nothing listens
        (["--gateway-admin", "gateway-without-port"], "--gateway-admin"),
        (["--gateway-admin", "127.0.0.1:1", "--admission-map", "x; shutdown frontend fe"], "--admission-map"),
        (["--prometheus", "ftp://prometheus"], "--prometheus"),
        (["--triton-metrics", "triton:8002/metrics"], "--triton-metrics"),
        (["--model", 'x"} or vector(1) #'], "--model"),
        (["--interruption-queue", "https://sqs.us-east-1.amazonaws.com/1/q"], "--interruption-queue"),
        (["--interruption-queue", "warnings"], "--interruption-queue"),
        (["--degrade"], "--degrade"),  # no cluster to scale replicas in
    ],
)
def test_burst_run_refuses_a_bad_value_with_one_line(
    args: list[str],
    option: str,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No cluster to drain in: no in-cluster service account, no kubeconfig.
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(project / "no-kubeconfig"))
    result = _burst_run(args, moto_url, project, pulumi_root, {"asgName": GROUP})
    _refused(result, option, asg, pulumi_root)


@pytest.mark.parametrize(
    ("outputs", "option"),
    [
        ('{"asgName": ""}', "--asg"),
        ('{"asgName": 5}', "--asg"),
        ('{"asgName": ["burst-prod-spot"]}', "--asg"),
        ("{not json", "--asg"),
        (json.dumps({"asgName": GROUP, "queueUrl": 7}), "--interruption-queue"),
    ],
)
def test_burst_run_refuses_stack_outputs_of_the_wrong_type(
    outputs: str,
    option: str,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    (pulumi_root.parent / "state" / "outputs.json").write_text(outputs)
    _refused(_burst_run([], moto_url, project, pulumi_root, None), option, asg, pulumi_root)


@pytest.mark.parametrize("value", ["-3", "many", "1000000000"])
def test_burst_run_checks_the_stack_file_it_will_change(
    value: str,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    """A burstNodes edited by hand in --work-dir's stack file: the repository's copy was checked."""
    path = project / "stacks" / f"Pulumi.{STACK}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"][BURST_NODES_KEY] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = _burst_run([], moto_url, project, pulumi_root, {"asgName": GROUP})
    _refused(result, f"{project.name}/stacks/Pulumi.{STACK}.yaml", asg, pulumi_root)
    assert "gpufleet:burstNodes" in result.stderr


def _burst_run(
    args: list[str],
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    outputs: dict[str, object] | None,
) -> Any:
    from typer.testing import CliRunner

    from gpufleet.cli import app
    from gpufleet.serving.tritonserver import free_port

    if outputs is not None:
        (pulumi_root.parent / "state" / "outputs.json").write_text(json.dumps(outputs))
    given = dict(zip(args[::2], args[1::2], strict=False))
    defaults = {
        "--aws-endpoint": moto_url,
        "--metrics-port": str(free_port()),
        "--triton-metrics": "http://127.0.0.1:1/metrics",
        "--pulumi-root": str(pulumi_root),
        "--work-dir": str(project),
    }
    if "--prometheus" in given:
        defaults.pop("--triton-metrics")
    extra = [x for k, v in defaults.items() if k not in given for x in (k, v)]
    return CliRunner().invoke(
        app,
        [
            "burst",
            "run",
            STACK,
            *args,
            *extra,
            "--iterations",
            "1",
        ],
        env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "COLUMNS": "200"},
    )


def _refused(result: Any, option: str, asg: Any, pulumi_root: Path) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and option in lines[0].split(": ")[0], result.stderr
    assert "Traceback" not in result.output
    assert upped_nodes(pulumi_root) == [], "nothing applied"
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 2, "nothing changed"


def test_burst_run_refuses_a_metrics_port_in_use(
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    """It failed with a traceback after the interruption consumer had started."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = _burst_run(["--metrics-port", port], moto_url, project, pulumi_root, {"asgName": GROUP})
    _refused(result, "--metrics-port", asg, pulumi_root)


# --- the $/hour cap ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Steady:
    """The same reading every step."""

    reading: Reading

    def read(self, t: float) -> Reading:
        return self.reading


# Six nodes at most, the cap far above what they cost.
_CAPACITY = CapacityModel(
    onprem_replicas=1,
    replicas_per_node=1,
    max_nodes=6,
    max_hourly_usd=1000.0,
    boot_to_serve_s=60.0,
    slo_queue_wait_s=2.0,
)
# A load far past what the fleet serves, as Triton's counters would show it; and none at all.
_BUSY = _Steady(Reading(interval_s=15.0, request_rps=50.0, queue_wait_s=30.0, pending=400.0, gpu_util=1.0))
_IDLE = _Steady(Reading(interval_s=15.0, request_rps=0.0, queue_wait_s=0.0, pending=0.0, gpu_util=0.0))


def _group_pulumi(project: Path, pulumi_root: Path, moto_url: str) -> PulumiActuator:
    """An actuator whose fake `pulumi up` sets the moto group's desired capacity."""
    return actuator(
        project, pulumi_root, env={"FAKE_PULUMI_ASG_URL": moto_url, "FAKE_PULUMI_ASG_GROUP": GROUP}
    )


def test_a_max_price_raised_behind_the_controllers_back_is_reserved(
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    """The controller read the group's Spot max price once, at start. Here the group's SpotMaxPrice
    was removed since (AWS then bills up to on-demand, twice what was read): it went on sizing
    the fleet at the old price, to twice the cap."""
    types = ["p5en.48xlarge", "p5e.48xlarge"]
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    now_billed = group_max_price(group, types)
    read_at_start = now_billed / 2
    capacity = replace(
        _CAPACITY,
        max_hourly_usd=4.5 * read_at_start,  # room for 4 nodes at the old price, 2 at today's
        fleet_max_price=read_at_start,
    )
    controller = Controller(
        policy=Gpufleet(capacity, average_s=1.0, cooldown_s=0.0),
        source=_BUSY,
        prices=SpotPrices(_aws("ec2", moto_url), types),
        asg=AsgActuator(GROUP, capacity.max_nodes, asg),
        pulumi=_group_pulumi(project, pulumi_root, moto_url),
        replica_rps=1.0,
    )
    for i in range(3):
        controller.step(1000.0 + 15 * i)
    desired = int(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0][
            "DesiredCapacity"
        ]
    )
    assert desired * now_billed <= capacity.max_hourly_usd, (
        f"{desired} nodes may bill {desired * now_billed:.0f} $/h"
    )


# --- concurrency ------------------------------------------------------------------------------


def test_a_scale_in_whose_node_a_spot_warning_retired_first_does_not_grow_the_group(
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    """A scale-in drains a node while its interruption warning's handler drains it too and retires
    it first. The scale-in's own retirement then failed, the node was counted as staying, and the
    up declared one node more than the policy kept: the group launched a node nobody asked for."""
    types = ["p5en.48xlarge", "p5e.48xlarge"]
    AsgActuator(GROUP, 6, asg).set_desired(3)
    instances = _instances(asg)
    for i, instance in enumerate(instances):
        _node(kube, f"n{i}", instance)
    drainer = Drainer(kube.core, poll_s=0.05)
    raced: list[str] = []
    plain_drain = drainer.drain

    def drain_raced_by_a_warning(node: str, deadline: float) -> Any:
        report = plain_drain(node, deadline)
        if not raced:
            # The warning's handler got there first: its drain ended, it retired the instance.
            raced.append(drainer.instances_by_node()[node])
            AsgActuator(GROUP, 6, asg).retire(raced[0])
        return report

    drainer.drain = drain_raced_by_a_warning  # type: ignore[method-assign]
    controller = Controller(
        policy=Gpufleet(_CAPACITY, average_s=1.0, quiet_s=1.0, cooldown_s=0.0),
        source=_IDLE,
        prices=SpotPrices(_aws("ec2", moto_url), types),
        asg=AsgActuator(GROUP, _CAPACITY.max_nodes, asg),
        pulumi=_group_pulumi(project, pulumi_root, moto_url),
        replica_rps=1.0,
        drainer=drainer,
    )
    decision = None
    for i in range(6):
        decision = controller.step(1000.0 + 15 * i) or decision
        if decision is not None and decision.drain:
            break
    assert decision is not None and decision.drain, "the idle fleet was scaled in"
    assert raced, "the race was run"
    kept = len(instances) - len(decision.drain)
    assert upped_nodes(pulumi_root)[-1] == str(kept), "the up declared what the policy kept"
    assert len(_instances(asg)) == kept


class _ProxyPage(BaseHTTPRequestHandler):
    """What a proxy in front of AWS answers when it refuses (Apache's page): not AWS's XML."""

    def do_POST(self) -> None:
        body = (
            b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
            b"<title>403 Forbidden</title>\n</head><body>\n<h1>Forbidden</h1>\n</body></html>\n"
        )
        self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def test_an_aws_answer_that_is_not_aws_s_is_a_service_error(
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """botocore's ResponseParserError is not a BotoCoreError: it reached the loop's last resort,
    and in a scale-in it stopped every retirement after the first."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy = f"http://127.0.0.1:{server.server_address[1]}"
        controller = Controller(
            policy=Gpufleet(_CAPACITY),
            source=_IDLE,
            prices=SpotPrices(_aws("ec2", moto_url), ["p5en.48xlarge"]),
            asg=AsgActuator(GROUP, 6, _aws("autoscaling", proxy)),
            pulumi=actuator(project, pulumi_root),
            replica_rps=1.0,
        )
        assert controller.step(1000.0) is None
    finally:
        server.shutdown()
        server.server_close()
    assert "step failed, fleet unchanged: ResponseParserError" in caplog.text
    assert "unexpected error" not in caplog.text
    assert upped_nodes(pulumi_root) == []


@pytest.mark.parametrize("version", ["v2.0.0", "not a version"])
def test_burst_run_with_a_pulumi_cli_it_cannot_use_says_so_in_one_line(
    version: str,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    tmp_path: Path,
) -> None:
    """The Automation API's InvalidVersionError is not a CommandError: it went out as a traceback."""
    old = tmp_path / "old-pulumi"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "pulumi").write_text(f"#!/bin/sh\necho '{version}'\n")
    (old / "bin" / "pulumi").chmod(0o755)
    result = _burst_run(["--pulumi-root", str(old)], moto_url, project, pulumi_root, {"asgName": GROUP})
    _refused(result, "--asg", asg, pulumi_root)
    assert "Pulumi CLI" in result.stderr


def test_the_in_cluster_controllers_arguments_pass_the_checks() -> None:
    """The checks above must not refuse what gpufleet renders for the controller in the cluster."""
    import typer

    from gpufleet.burst.cli import check_run_values
    from gpufleet.cli import app
    from gpufleet.inventory.load import load_inventory
    from gpufleet.plan.controller import plan_controller
    from gpufleet.serving.tritonserver import free_port

    inv = load_inventory("dc1")
    inv = inv.model_copy(
        update={"bom": inv.bom.model_copy(update={"controller_image": "registry.example/gpufleet:1"})}
    )
    plan = plan_controller(inv, STACK, None, ["gateway-admin.serving.svc.cluster.local:9999"])
    assert plan is not None
    burst: Any = typer.main.get_command(app).commands["burst"]  # type: ignore[attr-defined]
    p = burst.commands["run"].make_context("run", list(plan.args[2:])).params
    urls = {"--prometheus": p["prometheus"], "--triton-metrics": p["triton_metrics"], "--aws-endpoint": None}
    # Its port is bound here on a free one: the rendered one may be taken on this machine.
    check_run_values(
        p["replica_rps"],
        p["interval"],
        free_port(),
        p["metrics_address"],
        urls,
        p["model"],
        p["gateway_admin"],
        p["admission_map"],
    )

"""The AWS side of the burst controller against moto's server on 127.0.0.1, and the drain
against the Kubernetes API fake that answers as a real kube-apiserver answered (tests/k8sapi.py).

moto_server runs as a subprocess on a free port and is stopped by PID.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from gpufleet.burst.actuate import ActuationError, AsgActuator
from gpufleet.burst.interrupt import (
    INTERRUPTION,
    REBALANCE,
    Drainer,
    Warning,
    WarningQueue,
    handle,
    parse_event,
)
from gpufleet.serving.tritonserver import free_port
from tests.integration.servers import serving
from tests.k8sapi import KubeApiFake

pytestmark = pytest.mark.integration

REGION = "us-east-1"
GROUP = "burst-prod-spot"


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Without Amazon's catalogue of 1,301 public AMIs: listing it took moto 2-4.5 s per group on
    # an idle machine (minutes on a loaded one, past botocore's 60 s read timeout, whose retries
    # piled more of the same onto the server), and every instance launch scanned it again.
    moto = [
        "env",
        "MOTO_EC2_LOAD_DEFAULT_AMIS=false",
        str(Path(sys.executable).parent / "moto_server"),
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with serving(moto, f"{url}/moto-api/", tmp_path_factory.mktemp("moto") / "moto.log"):
        yield url


def _aws(service: str, url: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def asg(moto_url: str) -> Iterator[Any]:
    ec2, autoscaling = _aws("ec2", moto_url), _aws("autoscaling", moto_url)
    name = f"burst-{time.monotonic_ns()}"
    # The burst node image, as the stack's launch template names one of its own.
    image = ec2.register_image(Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64")["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": image, "InstanceType": "p5e.48xlarge"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
        MinSize=0,
        MaxSize=6,
        DesiredCapacity=2,
        AvailabilityZones=[f"{REGION}a", f"{REGION}b"],
    )
    try:
        yield autoscaling
    finally:
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=GROUP, ForceDelete=True)
        ec2.delete_launch_template(LaunchTemplateName=name)
        ec2.deregister_image(ImageId=image)


def test_asg_desired_capacity_inside_group_and_site_bounds(asg: Any) -> None:
    actuator = AsgActuator(GROUP, max_nodes=8, client=asg)
    assert actuator.set_desired(4) == 2
    desired, in_service, low, high = actuator.current()
    assert (desired, in_service, low, high) == (4, 4, 0, 6)
    with pytest.raises(ActuationError, match=r"outside burst-prod-spot's bounds 0\.\.6"):
        actuator.set_desired(7)
    with pytest.raises(ActuationError, match=r"bounds 0\.\.3 \(group max 6, site max 3\)"):
        AsgActuator(GROUP, max_nodes=3, client=asg).set_desired(4)
    assert actuator.current()[0] == 4, "a refused request changes nothing"


# --- interruptions ----------------------------------------------------------------------------


def _instances(asg: Any) -> list[str]:
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    return [i["InstanceId"] for i in group["Instances"]]


@pytest.fixture
def kube() -> Iterator[KubeApiFake]:
    """The Kubernetes API as recorded (tests/k8sapi.py), without the recording's own objects:
    each test adds the nodes (backed by EC2 instances, as the AWS cloud provider names them) and pods."""
    fake = KubeApiFake()
    fake.nodes.clear()
    fake.pods.clear()
    with fake.serve() as core:
        fake.core = core
        yield fake
    assert not fake.unrecorded, f"requests the recordings do not cover: {fake.unrecorded}"


def _node(kube: KubeApiFake, name: str, instance: str, az: str = "a") -> None:
    kube.add_node(name, provider_id=f"aws:///{REGION}{az}/{instance}")


ACCOUNT = "123456789012"  # moto's account


def _event(
    kind: str,
    instance: str,
    when: datetime,
    event_id: str = "1e5527d7-bb36-4607-3370-4164db56a40e",
    account: str = ACCOUNT,
    region: str = REGION,
) -> str:
    """An EC2 Spot warning as EventBridge delivers it to SQS (the documented event's shape)."""
    detail: dict[str, str] = {"instance-id": instance}
    if kind == INTERRUPTION:
        detail["instance-action"] = "terminate"
    return json.dumps(
        {
            "version": "0",
            "id": event_id,
            "detail-type": kind,
            "source": "aws.ec2",
            "account": account,
            "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [f"arn:aws:ec2:{REGION}a:instance/{instance}"],
            "detail": detail,
        }
    )


def _hook_event(
    instance: str, group: str, when: datetime, event_id: str = "468fa0f7-9f6a-4e1c-bd8f-a7d3e3d5b7a1"
) -> str:
    """The group's termination lifecycle hook, as EventBridge delivers it."""
    return json.dumps(
        {
            "version": "0",
            "id": event_id,
            "detail-type": "EC2 Instance-terminate Lifecycle Action",
            "source": "aws.autoscaling",
            "account": ACCOUNT,
            "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [
                f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:x:autoScalingGroupName/{group}"
            ],
            "detail": {
                "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
                "AutoScalingGroupName": group,
                "LifecycleHookName": "burst-prod-drain",
                "EC2InstanceId": instance,
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                "NotificationMetadata": "",
                "Origin": "AutoScalingGroup",
                "Destination": "EC2",
            },
        }
    )


def _add_one(actuator: AsgActuator) -> Callable[[Warning], str]:
    """Replacement as a fixed +1 (the controller plans it within the cap: test_burst_controller)."""
    return lambda warning: f"desired capacity raised to {actuator.add(1)}"


def test_interruption_warning_replaces_first_then_drains_within_the_notice(
    asg: Any, kube: Any, moto_url: str
) -> None:
    sqs = _aws("sqs", moto_url)
    queue_url = sqs.create_queue(QueueName=f"spot-warnings-{time.monotonic_ns()}")["QueueUrl"]
    actuator = AsgActuator(GROUP, max_nodes=8, client=asg)
    doomed, other = _instances(asg)[:2]
    for i, iid in enumerate((doomed, other)):
        _node(kube, f"ip-10-0-0-{i}", iid)
    kube.add_pod("serving", "triton-0", "ip-10-0-0-0")
    kube.add_pod("kube-system", "dcgm-exporter-abc", "ip-10-0-0-0", owner_kind="DaemonSet")
    kube.add_pod("serving", "triton-1", "ip-10-0-0-1")
    now = datetime.now(UTC)
    sqs.send_message(QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, doomed, now))
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"source": "aws.health", "detail-type": "x"}))

    queue = WarningQueue(sqs, queue_url, wait_s=1)
    warnings = queue.receive() + queue.receive()
    assert [(w.kind, w.instance_id) for w in warnings] == [("interruption", doomed)]
    warning = warnings[0]
    assert warning.drain_deadline == pytest.approx(now.replace(microsecond=0).timestamp() + 90)

    handled = handle(warning, Drainer(kube.core, poll_s=0.1), actuator, _add_one(actuator))
    queue.done(warning.receipt)

    assert handled.replacement == "desired capacity raised to 3"
    assert handled.node == "ip-10-0-0-0"
    assert handled.drain is not None and handled.drain.finished_in_time
    assert handled.drain.evicted == ("serving/triton-0",)  # the DaemonSet pod stays
    cordon = next(c for c in kube.calls if c[0] == "PATCH")
    assert cordon == ("PATCH", "/api/v1/nodes/ip-10-0-0-0", {"spec": {"unschedulable": True}})
    assert kube.nodes["ip-10-0-0-0"]["spec"]["unschedulable"] is True
    eviction = next(c for c in kube.calls if c[0] == "POST")
    assert eviction[1] == "/api/v1/namespaces/serving/pods/triton-0/eviction"
    assert 0 < eviction[2]["deleteOptions"]["gracePeriodSeconds"] <= 90
    # The replacement came first and stays; the interrupted instance left with its desired slot.
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    remaining = {i["InstanceId"] for i in group["Instances"]}
    assert group["DesiredCapacity"] == 2
    assert doomed not in remaining and other in remaining and len(remaining) == 2
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None


def test_rebalance_recommendation_replaces_and_cordons_only(asg: Any, kube: Any) -> None:
    actuator = AsgActuator(GROUP, max_nodes=8, client=asg)
    instance = _instances(asg)[0]
    _node(kube, "n1", instance, "b")
    kube.add_pod("serving", "triton-0", "n1")
    warning = parse_event(_event(REBALANCE, instance, datetime.now(UTC)), "r")
    assert warning is not None and warning.kind == "rebalance"
    assert Drainer(kube.core).instances_by_node() == {"n1": instance}
    handled = handle(warning, Drainer(kube.core), actuator, _add_one(actuator))
    assert handled.drain is None and handled.node == "n1"
    assert [c[0] for c in kube.calls if c[0] != "GET"] == ["PATCH"]
    assert kube.pod_names() == ["serving/triton-0"], "a rebalance recommendation evicts nothing"
    assert actuator.current()[0] == 3


def test_a_drain_that_a_disruption_budget_holds_stops_at_the_deadline(kube: KubeApiFake) -> None:
    # The recorded budget: minAvailable 2 over two Running, Ready pods; the server answers 429.
    recorded = KubeApiFake()
    kube.nodes.update(recorded.nodes)
    kube.pods.extend(recorded.pods)
    clock = [1000.0]

    def tick() -> float:
        clock[0] += 0.5
        return clock[0]

    report = Drainer(kube.core, clock=tick, poll_s=0.01, sleep=lambda _s: None).drain(
        "gpu01", deadline=1003.0
    )
    assert not report.finished_in_time and report.evicted == ()
    assert report.left == ("default/serving-0", "default/serving-1")
    assert all("disruption budget" in why for why in report.blocked)
    assert clock[0] >= 1003.0
    assert kube.pod_names() == ["default/serving-0", "default/serving-1"], "nothing deleted past the budget"


def test_the_groups_own_termination_is_drained_then_let_go(kube: Any) -> None:
    # moto has no CompleteLifecycleAction (its lifecycle hooks never fire): botocore's Stubber checks
    # the call against the real API model instead.
    from botocore.stub import Stubber

    client = boto3.client(
        "autoscaling", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    _node(kube, "n9", "i-0123456789abcdef0")
    kube.add_pod("serving", "triton-9", "n9")
    event = _hook_event("i-0123456789abcdef0", GROUP, datetime.now(UTC))
    warning = parse_event(event, "r")
    assert warning is not None and warning.kind == "terminate"
    with Stubber(client) as stub:
        stub.add_response(
            "complete_lifecycle_action",
            {},
            {
                "LifecycleHookName": "burst-prod-drain",
                "AutoScalingGroupName": GROUP,
                "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
                "LifecycleActionResult": "CONTINUE",
                "InstanceId": "i-0123456789abcdef0",
            },
        )
        actuator = AsgActuator(GROUP, max_nodes=8, client=client)
        handled = handle(warning, Drainer(kube.core, poll_s=0.1), actuator, _add_one(actuator))
        stub.assert_no_pending_responses()
    assert handled.drain is not None and handled.drain.evicted == ("serving/triton-9",)
    assert handled.replacement.startswith("none needed")

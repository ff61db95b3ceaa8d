"""Attacks on the burst controller beyond the fault-injection test's: forged and poisonous queue
messages, Pulumi that hangs or fails after it applied, and `gpufleet burst run` given bad values.
Each test here failed before the fix it names.

The AWS side is moto's server, Pulumi the fake CLI of test_burst_pulumi, Kubernetes the API fake
that answers as the recorded kube-apiserver did (tests/k8sapi.py).

What this cannot see: moto delivers what is sent and never reclaims, so SQS's own limits on a
body (256 KiB, XML characters only) are not exercised: the parser is also fed bodies directly.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gpufleet.burst.actuate import AsgActuator
from gpufleet.burst.interrupt import INTERRUPTION, Drainer, Interruptions, WarningQueue, parse_event
from tests.integration.test_burst_aws import (  # noqa: F401  (fixtures)
    ACCOUNT,
    GROUP,
    REGION,
    _aws,
    _event,
    _instances,
    _node,
    asg,
    kube,
    moto_url,
)

pytestmark = pytest.mark.integration


def _consumer(asg: Any, kube: Any, moto_url: str, **kw: Any) -> tuple[Interruptions, Any, str]:  # noqa: F811
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


def test_a_poison_message_is_dropped_with_its_reason_and_spares_its_batch(
    asg: Any,  # noqa: F811
    kube: Any,  # noqa: F811
    moto_url: str,  # noqa: F811
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
    asg: Any,  # noqa: F811
    kube: Any,  # noqa: F811
    moto_url: str,  # noqa: F811
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

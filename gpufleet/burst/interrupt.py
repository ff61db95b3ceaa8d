"""Spot interruption warnings and rebalance recommendations: EventBridge -> SQS -> drain.

AWS gives two minutes between the warning and the reclaim. In that time: ask for replacement
capacity first (it takes longest), then cordon the node and evict its pods through the Kubernetes
API with a deadline inside the notice, so in-flight requests finish or move before the node goes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpufleet.burst.actuate import ActuationError, AsgActuator
from gpufleet.burst.policy import SPOT_NOTICE_S
from gpufleet.kubeapi import DrainReport, NodeApi

INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
# The burst group's termination lifecycle hook (scale-in, capacity rebalancing) holds an instance
# in Terminating:Wait until someone drains it and completes the action.
TERMINATE_HOOK = "EC2 Instance-terminate Lifecycle Action"
# Leave this much of the notice for the node to actually go: kubelet, the load balancer, the reclaim.
DRAIN_MARGIN_S = 30.0


@dataclass(frozen=True)
class LifecycleAction:
    hook: str
    group: str
    token: str


@dataclass(frozen=True)
class Warning:
    kind: str  # "interruption", "rebalance" or "terminate" (the group's lifecycle hook)
    instance_id: str
    at: float  # epoch seconds of the event
    receipt: str
    action: LifecycleAction | None = None

    @property
    def drain_deadline(self) -> float:
        """When the drain must be done: inside the notice, with a margin."""
        return self.at + SPOT_NOTICE_S - DRAIN_MARGIN_S


def parse_event(body: str, receipt: str) -> Warning | None:
    """An EventBridge event as SQS delivers it; None for events this controller does not act on."""
    try:
        event = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        return None
    detail, kind_text = event["detail"], str(event.get("detail-type"))
    try:
        when = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    if event.get("source") == "aws.ec2" and kind_text in (INTERRUPTION, REBALANCE):
        instance = detail.get("instance-id")
        if not isinstance(instance, str):
            return None
        kind = "interruption" if kind_text == INTERRUPTION else "rebalance"
        return Warning(kind=kind, instance_id=instance, at=when, receipt=receipt)
    if event.get("source") == "aws.autoscaling" and kind_text == TERMINATE_HOOK:
        fields = ("EC2InstanceId", "LifecycleHookName", "AutoScalingGroupName", "LifecycleActionToken")
        if not all(isinstance(detail.get(f), str) for f in fields):
            return None
        action = LifecycleAction(
            hook=detail["LifecycleHookName"],
            group=detail["AutoScalingGroupName"],
            token=detail["LifecycleActionToken"],
        )
        return Warning(
            kind="terminate", instance_id=detail["EC2InstanceId"], at=when, receipt=receipt, action=action
        )
    return None


@dataclass
class WarningQueue:
    """Long-polls the SQS queue the EventBridge rule targets; deletes what was handled."""

    sqs: Any
    queue_url: str
    wait_s: int = 10

    def receive(self) -> list[Warning]:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s
        )
        warnings = []
        for message in answer.get("Messages", []):
            warning = parse_event(message["Body"], message["ReceiptHandle"])
            if warning is None:
                # Not ours to act on (another event type): drop it so it does not come back forever.
                self.done(message["ReceiptHandle"])
            else:
                warnings.append(warning)
        return warnings

    def done(self, receipt: str) -> None:
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)


@dataclass
class Drainer(NodeApi):
    """Cordon and drain through the Kubernetes API (gpufleet.kubeapi), found by EC2 instance id."""

    def instances_by_node(self) -> dict[str, str]:
        """Kubernetes node name -> EC2 instance id, from each node's providerID."""
        out = {}
        for node in self.core.list_node().items:
            provider = node.spec.provider_id or ""
            if provider.startswith("aws://"):
                out[str(node.metadata.name)] = provider.rsplit("/", 1)[-1]
        return out

    def node_for_instance(self, instance_id: str) -> str | None:
        # EKS and kubeadm-on-EC2 nodes carry providerID aws:///<az>/<instance-id>.
        for node in self.core.list_node().items:
            if (node.spec.provider_id or "").rsplit("/", 1)[-1] == instance_id:
                return str(node.metadata.name)
        return None


@dataclass(frozen=True)
class Handled:
    warning: Warning
    node: str | None
    replacement: str
    drain: DrainReport | None


def handle(warning: Warning, drainer: Drainer, asg: AsgActuator) -> Handled:
    """Replacement first (a Spot node takes minutes to serve, a drain seconds), then the node:
    an interruption is drained within the notice and its instance retired from the group; a
    rebalance recommendation only cordons, so the node finishes its work but takes no more.
    A termination the group itself decided (its lifecycle hook) needs no replacement: drain,
    then let the termination go on."""
    if warning.action is not None:
        node = drainer.node_for_instance(warning.instance_id)
        report = drainer.drain(node, warning.drain_deadline) if node is not None else None
        asg.client.complete_lifecycle_action(
            LifecycleHookName=warning.action.hook,
            AutoScalingGroupName=warning.action.group,
            LifecycleActionToken=warning.action.token,
            LifecycleActionResult="CONTINUE",
            InstanceId=warning.instance_id,
        )
        return Handled(
            warning=warning, node=node, replacement="none needed: the group's own termination", drain=report
        )
    try:
        replacement = f"desired capacity raised to {asg.replace()}"
    except ActuationError as exc:
        replacement = f"no replacement: {exc}"
    node = drainer.node_for_instance(warning.instance_id)
    report = None
    if node is not None and warning.kind == "interruption":
        report = drainer.drain(node, warning.drain_deadline)
    elif node is not None:
        drainer.cordon(node)
    if warning.kind == "interruption":
        asg.retire(warning.instance_id)
    return Handled(warning=warning, node=node, replacement=replacement, drain=report)

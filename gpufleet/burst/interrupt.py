"""Spot interruption warnings and rebalance recommendations: EventBridge -> SQS -> drain.

AWS gives two minutes between the warning and the reclaim. In that time: ask for replacement
capacity first (it takes longest), then cordon the node and evict its pods through the Kubernetes
API with a deadline inside the notice, so in-flight requests finish or move before the node goes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from gpufleet.burst.actuate import AsgActuator
from gpufleet.burst.policy import SPOT_NOTICE_S
from gpufleet.kubeapi import DrainReport, NodeApi

log = logging.getLogger("gpufleet.burst")

INTERRUPTION = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
# The burst group's termination lifecycle hook (scale-in, capacity rebalancing) holds an instance
# in Terminating:Wait until someone drains it and completes the action.
TERMINATE_HOOK = "EC2 Instance-terminate Lifecycle Action"
# Leave this much of the notice for the node to actually go: kubelet, the load balancer, the reclaim.
DRAIN_MARGIN_S = 30.0
# An event dated further ahead of this clock than NTP lets two clocks drift is forged or broken: its
# deadline would hold a drain (and its worker) that long.
CLOCK_SKEW_S = 60.0


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
    # The EventBridge event's id (one event delivered twice keeps it), account and region.
    event_id: str = ""
    account: str = ""
    region: str = ""

    @property
    def drain_deadline(self) -> float:
        """When the drain must be done: inside the notice, with a margin."""
        return self.at + SPOT_NOTICE_S - DRAIN_MARGIN_S


# EC2's instance ids. What else an event names goes into the log: one printable line each, or a
# forged message writes log lines of its own.
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")


def _one_line(*texts: str) -> bool:
    return all(text.isprintable() and len(text) <= 256 for text in texts)


def _json(body: str) -> Any:
    """The body's JSON; None when it is not JSON (nesting deeper than the parser recurses included)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def parse_event(body: str, receipt: str) -> Warning | None:
    """An EventBridge event as SQS delivers it; None for events this controller does not act on."""
    event = _json(body)
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        return None
    detail, kind_text = event["detail"], str(event.get("detail-type"))
    try:
        stamp = datetime.fromisoformat(str(event.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None  # EventBridge times are UTC with a Z: one without a zone is not its event
    when = stamp.timestamp()
    event_id, account, region = (str(event.get(k, "")) for k in ("id", "account", "region"))
    if event.get("source") == "aws.ec2" and kind_text in (INTERRUPTION, REBALANCE):
        instance = detail.get("instance-id")
        if not isinstance(instance, str) or not _INSTANCE_ID.fullmatch(instance):
            return None
        if not _one_line(event_id, account, region):
            return None
        kind = "interruption" if kind_text == INTERRUPTION else "rebalance"
        return Warning(
            kind=kind,
            instance_id=instance,
            at=when,
            receipt=receipt,
            event_id=event_id,
            account=account,
            region=region,
        )
    if event.get("source") == "aws.autoscaling" and kind_text == TERMINATE_HOOK:
        fields = ("EC2InstanceId", "LifecycleHookName", "AutoScalingGroupName", "LifecycleActionToken")
        if not all(isinstance(detail.get(f), str) for f in fields):
            return None
        if not _INSTANCE_ID.fullmatch(detail["EC2InstanceId"]):
            return None
        if not _one_line(*(detail[f] for f in fields[1:]), event_id, account, region):
            return None
        action = LifecycleAction(
            hook=detail["LifecycleHookName"],
            group=detail["AutoScalingGroupName"],
            token=detail["LifecycleActionToken"],
        )
        return Warning(
            kind="terminate",
            instance_id=detail["EC2InstanceId"],
            at=when,
            receipt=receipt,
            action=action,
            event_id=event_id,
            account=account,
            region=region,
        )
    return None


@dataclass
class WarningQueue:
    """Long-polls the SQS queue the EventBridge rule targets; deletes what was handled."""

    sqs: Any
    queue_url: str
    wait_s: int = 10
    # Why each message dropped unread was dropped, for the consumer's metrics.
    ignored: list[str] = field(default_factory=list)

    def receive(self) -> list[Warning]:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s
        )
        warnings = []
        for message in answer.get("Messages", []):
            warning = parse_event(message["Body"], message["ReceiptHandle"])
            if warning is None:
                # Not ours to act on: drop it so it does not come back forever, and say so.
                body = message["Body"]
                is_event = isinstance(_json(body), dict)
                why = "not a Spot warning or lifecycle event" if is_event else "not a JSON object"
                log.warning(
                    "dropped message %s (%d characters): %s", message.get("MessageId"), len(body), why
                )
                self.ignored.append(why)
                self.done(message["ReceiptHandle"])
            else:
                # Without an event id, SQS's own message id still tells a redelivery.
                warnings.append(
                    warning if warning.event_id else replace(warning, event_id=message["MessageId"])
                )
        return warnings

    def done(self, receipt: str) -> None:
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)


@dataclass
class Drainer(NodeApi):
    """Cordon and drain through the Kubernetes API (gpufleet.kubeapi), found by EC2 instance id."""

    # Each API call's limit: a hung API server must not hold a drain past its deadline.
    request_timeout_s: float | None = 10.0

    def instances_by_node(self) -> dict[str, str]:
        """Kubernetes node name -> EC2 instance id, from each node's providerID."""
        out = {}
        for node in self.core.list_node(**self._limit()).items:
            provider = node.spec.provider_id or ""
            if provider.startswith("aws://"):
                out[str(node.metadata.name)] = provider.rsplit("/", 1)[-1]
        return out

    def node_for_instance(self, instance_id: str) -> str | None:
        # EKS and kubeadm-on-EC2 nodes carry providerID aws:///<az>/<instance-id>.
        for node in self.core.list_node(**self._limit()).items:
            if (node.spec.provider_id or "").rsplit("/", 1)[-1] == instance_id:
                return str(node.metadata.name)
        return None


@dataclass(frozen=True)
class Handled:
    warning: Warning
    node: str | None
    replacement: str
    drain: DrainReport | None


def handle(
    warning: Warning, drainer: Drainer, asg: AsgActuator, replace_for: Callable[[Warning], str]
) -> Handled:
    """Replacement first (a Spot node takes minutes to serve, a drain seconds), then the node:
    an interruption is drained within the notice and its instance retired from the group; a
    rebalance recommendation only cordons, so the node finishes its work but takes no more.
    A termination the group itself decided (its lifecycle hook) needs no replacement: drain,
    then let the termination go on. `replace_for` orders the replacement within the cap (the
    controller's policy) and says what it did."""
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
    replacement = replace_for(warning)
    node = drainer.node_for_instance(warning.instance_id)
    report = None
    if node is not None and warning.kind == "interruption":
        report = drainer.drain(node, warning.drain_deadline)
    elif node is not None:
        drainer.cordon(node)
    if warning.kind == "interruption":
        asg.retire(warning.instance_id)
    return Handled(warning=warning, node=node, replacement=replacement, drain=report)


# Event ids remembered for deduplication: far more than a queue delivers within a notice.
SEEN_IDS = 4096


@dataclass
class Interruptions:
    """The one consumer of the burst group's interruption queue (the termination handler does not
    read it: two consumers would each see only part of the warnings).

    It runs beside the controller's decide-and-actuate step, never behind it: a `pulumi up` takes
    minutes and a warning gives two. Each warning is checked (this account, this region, this
    group, not seen before, not older than its notice) and handled on a worker of its own, so
    several drains run in parallel against their own deadlines."""

    queue: WarningQueue
    drainer: Drainer
    asg: AsgActuator
    replace_for: Callable[[Warning], str]
    account: str
    region: str
    # The group's termination lifecycle hook waits this long for its drain (heartbeat timeout).
    hook_timeout_s: float = 300.0
    workers: int = 8
    clock: Callable[[], float] = time.time
    on_event: Callable[[str, str], None] = lambda outcome, detail: None

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="spot-warning")
        self._guard = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._busy: set[tuple[str, str]] = set()
        self._replaced: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def why_not(self, warning: Warning, members: dict[str, str]) -> str:
        """Why this warning is not acted on; "" when it is."""
        if warning.account != self.account:
            return f"account {warning.account or '?'} is not {self.account}"
        if warning.region != self.region:
            return f"region {warning.region or '?'} is not {self.region}"
        if warning.action is not None and warning.action.group != self.asg.group:
            return f"lifecycle event of group {warning.action.group}"
        if warning.action is None and warning.instance_id not in members:
            return f"{warning.instance_id} is not in group {self.asg.group}"
        if warning.action is not None and not members.get(warning.instance_id, "").startswith("Terminating"):
            # The hook holds the instance in Terminating:Wait; one in service was never let go.
            return f"{warning.instance_id} is not terminating in group {self.asg.group}"
        notice = self.hook_timeout_s if warning.action is not None else SPOT_NOTICE_S
        if warning.at - self.clock() > CLOCK_SKEW_S:
            return f"dated {warning.at - self.clock():.0f}s ahead of this clock"
        if self.clock() - warning.at > notice:
            return f"stale: {self.clock() - warning.at:.0f}s old, past its {notice:.0f}s notice"
        with self._guard:
            if warning.event_id in self._seen:
                return f"duplicate of event {warning.event_id}"
            self._seen[warning.event_id] = None
            while len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
            if (warning.kind, warning.instance_id) in self._busy:
                return f"a {warning.kind} of {warning.instance_id} is being handled"
            self._busy.add((warning.kind, warning.instance_id))
        return ""

    def poll(self) -> list[Future[Handled | None]]:
        """Receive once, hand each warning to a worker; what is not acted on is deleted."""
        warnings = self.queue.receive()
        for _ in self.queue.ignored:
            self.on_event("ignored", "other")
        self.queue.ignored.clear()
        if not warnings:
            return []
        members = self._members()
        futures = []
        for warning in warnings:
            reason = self.why_not(warning, members)
            if reason:
                log.info("spot %s for %s ignored: %s", warning.kind, warning.instance_id, reason)
                self.on_event("ignored", warning.kind)
                self.queue.done(warning.receipt)
                continue
            futures.append(self._pool.submit(self._handle, warning))
        return futures

    def _members(self) -> dict[str, str]:
        """The group's instances and their lifecycle states."""
        groups = self.asg.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.asg.group])[
            "AutoScalingGroups"
        ]
        return {
            i["InstanceId"]: str(i.get("LifecycleState", "")) for g in groups for i in g.get("Instances", [])
        }

    def _replace_once(self, warning: Warning) -> str:
        """A rebalance recommendation and the interruption that follows it need one replacement."""
        with self._guard:
            if warning.instance_id in self._replaced:
                return "already replaced"
            self._replaced.add(warning.instance_id)
        try:
            return self.replace_for(warning)
        except Exception as exc:  # the drain must go on whatever the replacement met
            with self._guard:
                self._replaced.discard(warning.instance_id)
            return f"no replacement: {exc}"

    def _handle(self, warning: Warning) -> Handled | None:
        try:
            handled = handle(warning, self.drainer, self.asg, self._replace_once)
        except Exception as exc:  # one warning's failure must not stop the others
            log.error("spot %s for %s failed: %s", warning.kind, warning.instance_id, exc)
            self.on_event("failed", warning.kind)
            return None
        finally:
            with self._guard:
                self._busy.discard((warning.kind, warning.instance_id))
            try:
                self.queue.done(warning.receipt)
            except Exception as exc:  # redelivered, it is a duplicate by id
                log.warning("could not delete the message for %s: %s", warning.instance_id, exc)
        log.warning(
            "spot %s for %s (node %s): %s; drain %s",
            warning.kind,
            warning.instance_id,
            handled.node or "unknown",
            handled.replacement,
            "done in time" if handled.drain and handled.drain.finished_in_time else "not needed or late",
        )
        self.on_event("handled", warning.kind)
        return handled

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spot-warnings", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # SQS or the group unreachable: try again, never stop consuming
                log.error("interruption queue: %s", exc)
                self.on_event("failed", "receive")
                self._stop.wait(1.0)

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if self._thread is not None and wait:
            self._thread.join(timeout=self.queue.wait_s + 5)
        self._pool.shutdown(wait=wait)

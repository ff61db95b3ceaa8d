"""Carry out a burst decision: Pulumi Automation API on the burst stack, or the ASG directly.

The default path sets `gpufleet:burstNodes` in the burst stack's config and runs `pulumi up`,
so capacity stays declared, reviewable and reproducible. One operation at a time per stack: a
process lock (and an advisory file lock across processes) keeps this controller from ever running
two ups; a lock held by someone else (another `pulumi up`) is retried with backoff, and a lock that
outlives the retries is reported with the command that clears it. The Automation API gives an up
no timeout: past `operation_timeout_s` the step gets an error and the operation goes on alone,
holding the stack until it ends, so a hung up never stops the loop.

The direct Auto Scaling path is for emergencies: it sets the group's desired capacity within the
group's and the site's bounds, and the next Pulumi up makes the stack agree again.

The admission gateways are switched through HAProxy's runtime API: while burst capacity boots,
P2 is shed and P1 held to part of its rate (the rules are in gpufleet.plan.admission).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from botocore.parsers import ResponseParserError  # type: ignore[import-untyped]
from pulumi import automation as auto
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from gpufleet.plan.admission import BOOTING_KEY

BURST_NODES_KEY = "gpufleet:burstNodes"
# What an AWS call raises when AWS fails or refuses it; ResponseParserError (an answer that is not
# AWS's, a proxy's error page) is not a BotoCoreError.
AWS_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError, ResponseParserError)

log = logging.getLogger("gpufleet.burst")


class ActuationError(RuntimeError):
    pass


class StackBusy(ActuationError):
    """Another gpufleet operation on this stack is running: never start a second up."""


class StaleLock(ActuationError):
    """The stack stayed locked through every retry: a crashed update left its lock behind."""


@dataclass(frozen=True)
class Applied:
    stack: str
    burst_nodes: int
    summary: str


_process_locks: dict[str, threading.Lock] = {}
# Desired capacity is read, then written: one such change at a time in this process. Re-entrant,
# so that a replacement holds it from reading the fleet it plans on to writing its result.
desired_guard = threading.RLock()
_process_locks_guard = threading.Lock()


@contextmanager
def one_operation(stack: str, lock_dir: Path) -> Iterator[None]:
    """Exclusive for this stack within the process and across processes on this host."""
    with _process_locks_guard:
        lock = _process_locks.setdefault(stack, threading.Lock())
    if not lock.acquire(blocking=False):
        raise StackBusy(f"stack {stack}: another burst operation is running in this controller")
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = lock_dir / f"{stack}.lock"
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise StackBusy(f"stack {stack}: another gpufleet process holds {path} ({holder})") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        lock.release()


@dataclass
class PulumiActuator:
    stack: str
    work_dir: Path
    # Where the `pulumi` CLI lives (<root>/bin/pulumi); None: the one on PATH.
    pulumi_root: Path | None = None
    lock_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "gpufleet"
    )
    # How long to wait out someone else's update before calling its lock stale.
    lock_timeout_s: float = 600.0
    backoff_max_s: float = 30.0
    # How long a caller waits for one operation, lock waits included.
    operation_timeout_s: float = 900.0
    on_output: Callable[[str], None] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def _stack(self) -> auto.Stack:
        try:
            command = (
                auto.PulumiCommand(root=str(self.pulumi_root)) if self.pulumi_root else auto.PulumiCommand()
            )
        except FileNotFoundError:
            where = f"{self.pulumi_root}/bin/pulumi" if self.pulumi_root else "`pulumi` on PATH"
            raise ActuationError(
                f"the Pulumi CLI is not installed (no {where}; see pulumi.com/docs/install, "
                "or --pulumi-root DIR)"
            ) from None
        except auto.InvalidVersionError as exc:  # too old, or not Pulumi at all
            where = f"{self.pulumi_root}/bin/pulumi" if self.pulumi_root else "`pulumi` on PATH"
            raise ActuationError(f"the Pulumi CLI {where} cannot be used: {exc}") from None
        options = auto.LocalWorkspaceOptions(
            work_dir=str(self.work_dir), pulumi_command=command, env_vars=self.env
        )
        return auto.select_stack(stack_name=self.stack, work_dir=str(self.work_dir), opts=options)

    def outputs(self) -> dict[str, object]:
        """The burst stack's outputs (asgName, queueUrl, ...), as its last `up` left them."""
        try:
            outputs = self._within("reading its outputs", lambda: self._stack().outputs())
            return {key: out.value for key, out in outputs.items()}
        except (auto.CommandError, ValueError, LookupError, TypeError, AttributeError) as exc:
            # The CLI's answer not JSON, or JSON that is not an object of outputs.
            raise ActuationError(f"cannot read the outputs of stack {self.stack}: {exc}") from None

    def _within(self, what: str, operation: Callable[[], Any]) -> Any:
        """Run `operation` on a thread of its own and wait at most `operation_timeout_s` for it;
        past that it goes on alone (whatever locks it holds, it holds until it ends) and says how it
        ended in the log."""
        done: Future[Any] = Future()
        abandoned = threading.Event()

        def run() -> None:
            try:
                done.set_result(operation())
            except BaseException as exc:  # handed to the caller, or logged once it has left
                done.set_exception(exc)
            if abandoned.is_set():
                failure = done.exception()
                if failure is None:
                    log.warning(
                        "stack %s: %s ended after its caller left: %s", self.stack, what, done.result()
                    )
                else:
                    log.error("stack %s: %s ended after its caller left: %s", self.stack, what, failure)

        threading.Thread(target=run, name=f"pulumi-{self.stack}", daemon=True).start()
        try:
            return done.result(timeout=self.operation_timeout_s)
        except TimeoutError:
            abandoned.set()
            raise ActuationError(
                f"stack {self.stack}: {what} still runs after {self.operation_timeout_s:.0f}s; it goes "
                "on in the background, and the stack takes no other operation from this controller until it ends"
            ) from None

    def set_burst_nodes(self, count: int) -> Applied:
        """Declare `count` burst nodes and run `pulumi up`. If the up fails, the stack file gets
        its previous value back: it must never declare a size that was not applied."""
        if count < 0:
            raise ValueError(f"burst nodes must be >= 0 (got {count})")
        applied: Applied = self._within(
            f"pulumi up for {count} burst nodes", lambda: self._set_burst_nodes(count)
        )
        return applied

    def _set_burst_nodes(self, count: int) -> Applied:
        with one_operation(self.stack, self.lock_dir):
            try:
                stack = self._stack()
                previous = self._declared(stack)
                stack.set_config(BURST_NODES_KEY, auto.ConfigValue(value=str(count)))
            except (auto.CommandError, auto.InvalidVersionError, OSError, ValueError) as exc:
                # Nothing declared yet: the CLI failed, is too old, could not start, or answered garbage.
                raise ActuationError(
                    f"stack {self.stack}: cannot declare {count} burst nodes: {_error(exc)}"
                ) from None
            # Names this update in the stack's history: whether it applied can be asked there.
            message = f"gpufleet burst: {BURST_NODES_KEY}={count} ({uuid.uuid4().hex[:12]})"
            try:
                result = self._up(stack, message)
            except StaleLock as exc:
                raise StaleLock(f"{exc}; {self._restore(stack, previous)}") from None
            except (auto.CommandError, OSError) as exc:
                # A failed command or one that could not start; the Automation API also reads outputs
                # and summary after the up, in the same call: if the up applied, the stack's history
                # says so, and the stack file keeps what it applied.
                why = _error(exc)
                if self._succeeded(stack, message):
                    return Applied(
                        stack=self.stack,
                        burst_nodes=count,
                        summary=f"applied; its summary could not be read: {why}",
                    )
                restored = self._restore(stack, previous)
                raise ActuationError(
                    f"stack {self.stack}: pulumi up for {count} burst nodes failed: {why}; {restored}"
                ) from None
            except (ValueError, LookupError, TypeError) as exc:
                # Only an up that exited 0 gets its output parsed: it applied, its summary is unreadable.
                return Applied(
                    stack=self.stack,
                    burst_nodes=count,
                    summary=f"applied; its summary could not be read: {type(exc).__name__}: {exc}",
                )
        changes = result.summary.resource_changes or {}
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(changes.items())) or "no changes"
        return Applied(stack=self.stack, burst_nodes=count, summary=summary)

    def _succeeded(self, stack: auto.Stack, message: str) -> bool:
        """Whether the stack's last update is the one named `message`, and it succeeded; False when
        the history cannot be read either (then it is taken as not applied)."""
        try:
            last = stack.history(page_size=1, show_secrets=False)
        except (auto.CommandError, ValueError, KeyError, TypeError):
            return False
        return bool(last) and last[0].message == message and last[0].result == "succeeded"

    def _declared(self, stack: auto.Stack) -> str | None:
        try:
            return stack.get_config(BURST_NODES_KEY).value
        except auto.CommandError as exc:
            if "not found" in str(exc):
                return None
            raise

    def _restore(self, stack: auto.Stack, previous: str | None) -> str:
        try:
            if previous is None:
                stack.remove_config(BURST_NODES_KEY)
            else:
                stack.set_config(BURST_NODES_KEY, auto.ConfigValue(value=previous))
        except (auto.CommandError, OSError) as exc:
            return (
                f"the stack file still declares the failed size and could not be restored ({_error(exc)}): "
                f"pulumi config set {BURST_NODES_KEY} {previous} --stack {self.stack}"
            )
        return f"{BURST_NODES_KEY} restored to {previous if previous is not None else 'unset'}"

    def _up(self, stack: auto.Stack, message: str) -> Any:
        retrying = Retrying(
            retry=retry_if_exception_type(auto.ConcurrentUpdateError),
            wait=wait_exponential(multiplier=1, min=1, max=self.backoff_max_s),
            stop=stop_after_delay(self.lock_timeout_s),
        )
        try:
            for attempt in retrying:
                with attempt:
                    return stack.up(on_output=self.on_output, message=message)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            holder = _lock_holder(str(last))
            raise StaleLock(
                f"stack {self.stack} stayed locked for {self.lock_timeout_s:.0f}s{holder}; if no update is "
                f"running there, clear the lock with: pulumi cancel --yes --stack {self.stack}"
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")


def _error(exc: Exception) -> str:
    """The CLI's own error lines (stderr), not the whole command dump."""
    text = str(exc).strip()
    lines = [line[line.index("error:") :].strip() for line in text.splitlines() if "error:" in line]
    if lines:
        return "; ".join(lines)
    return text.splitlines()[-1] if text else type(exc).__name__


def _lock_holder(message: str) -> str:
    """The line Pulumi prints about who holds the lock (file, user@host, pid, time), if any."""
    for line in message.splitlines():
        if "created by" in line:
            return f" ({line.strip()})"
    return ""


@dataclass
class AsgActuator:
    """Emergency path: the burst Auto Scaling group's desired capacity, within its bounds."""

    group: str
    max_nodes: int
    client: Any

    def current(self) -> tuple[int, int, int, int]:
        """(desired, in service, min, max) of the group."""
        groups = self.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])[
            "AutoScalingGroups"
        ]
        if not groups:
            raise ActuationError(f"no Auto Scaling group {self.group!r}")
        g = groups[0]
        in_service = sum(1 for i in g.get("Instances", []) if i.get("LifecycleState") == "InService")
        return int(g["DesiredCapacity"]), in_service, int(g["MinSize"]), int(g["MaxSize"])

    def set_desired(self, count: int) -> int:
        """Set the desired capacity; returns the previous one. Refuses what the bounds forbid."""
        desired, _, low, high = self.current()
        top = min(high, self.max_nodes)
        if not low <= count <= top:
            raise ActuationError(
                f"{count} nodes is outside {self.group}'s bounds {low}..{top} (group max {high}, site max {self.max_nodes})"
            )
        self.client.set_desired_capacity(
            AutoScalingGroupName=self.group, DesiredCapacity=count, HonorCooldown=False
        )
        return desired

    def add(self, count: int) -> int:
        """Raise desired capacity by `count` now (replacement ahead of a node that is going away);
        returns the new desired capacity. Read and write under one lock, so two warnings handled
        at once add two, not one."""
        with desired_guard:
            desired, _, _, _ = self.current()
            self.set_desired(desired + count)
            return desired + count

    def retire(self, instance_id: str) -> None:
        """Take one chosen instance out (after its drain), lowering desired capacity with it. One
        already on its way out is retired: a scale-in and a Spot warning for the same node both
        retire it, and the group lowered its desired capacity for the first."""
        try:
            self.client.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
            )
        except AWS_ERRORS:
            if not self._leaving(instance_id):
                raise

    def _leaving(self, instance_id: str) -> bool:
        """Whether the instance is no longer, or no longer for long, in the group."""
        groups = self.client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])[
            "AutoScalingGroups"
        ]
        states = [
            i.get("LifecycleState", "")
            for g in groups
            for i in g.get("Instances", [])
            if i.get("InstanceId") == instance_id
        ]
        return bool(groups) and all(s.startswith("Terminat") for s in states)


@dataclass
class GatewayAdmission:
    """The admission gateways' runtime API (HAProxy's stats socket at operator level): lower
    classes are held back while burst capacity boots (gpufleet.plan.admission's `booting` entry).
    Every call sets every gateway, so one restarted since (back to normal from its file) is put
    in line again at the next step; a host name stands for every address it resolves to (a
    headless Service names each replica)."""

    addresses: list[str]  # host:port of each gateway's runtime API
    map_path: str  # the admission map's file, as the gateways loaded it
    timeout_s: float = 2.0

    def set_booting(self, booting: bool) -> list[str]:
        """Set the mode on every gateway; the ones that refused or could not be reached, and why."""
        command = f"set map {self.map_path} {BOOTING_KEY} {int(booting)}\n"
        failed = []
        for address in self.addresses:
            host, _, port = address.rpartition(":")
            try:
                found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
                targets = {(str(info[4][0]), int(info[4][1])) for info in found}
            except (OSError, ValueError) as exc:
                failed.append(f"{address}: {exc}")
                continue
            for target in sorted(targets):
                try:
                    answer = _runtime(target, command, self.timeout_s)
                except OSError as exc:
                    failed.append(f"{target[0]}:{target[1]}: {exc}")
                    continue
                if answer.strip():  # HAProxy answers an empty line when the command took
                    failed.append(f"{target[0]}:{target[1]}: {answer.strip()}")
        return failed


def _runtime(target: tuple[str, int], command: str, timeout_s: float) -> str:
    """One command on HAProxy's runtime API; it answers and closes."""
    with socket.create_connection(target, timeout=timeout_s) as conn:
        conn.sendall(command.encode())
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")

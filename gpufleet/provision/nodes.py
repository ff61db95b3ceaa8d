"""Run the node deploy (deploys/node.py) on a site's hosts through the pyinfra API.

Every host runs the same deploy with its own plan in host data. A host that fails (an
unreachable sshd, a failing command) drops out; the others go on to the end.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.inventory import Inventory as PyinfraInventory
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback, State

from gpufleet.inventory.load import display, load_inventory
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.node import NodePlan, plan_node
from gpufleet.provision.connection import pyinfra_ssh_data
from gpufleet.provision.logs import log_file

CONNECT_TIMEOUT_S = 10
HOST_TIMEOUT_S = 3600.0  # a whole driver and CUDA install over a slow mirror fits


@dataclass
class HostResult:
    hostname: str
    ok: bool = True
    ops: int = 0
    changed: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


# (hostname, what happened): "connected", "start: <operation>", "ok" (an operation), "failed: <why>",
# then "finished" once the host's result is in.
Event = Callable[[str, str], None]


def select_hosts(inv: Inventory, limit: list[str] | None) -> list[str]:
    names = [n.hostname for n in inv.nodes]
    unknown = [h for h in limit or [] if h not in names]
    if unknown:
        raise InputError(
            "--limit",
            [Problem((), f"unknown host {h!r}; the site has {', '.join(names)}") for h in unknown],
        )
    return [h for h in names if not limit or h in limit]


def _op_name(state: State, op_hash: Any) -> str:
    # pyinfra prefixes the deploys an operation runs in ("gpufleet node | services | ..."): keep the op.
    return ", ".join(sorted(n.rsplit(" | ", 1)[-1] for n in state.get_op_meta(op_hash).names))


def _progress(results: dict[str, HostResult], on_event: Event, started: float) -> BaseStateCallback:
    class Progress(BaseStateCallback):
        @staticmethod
        def host_connect_error(state: State, host: Host, error: Any) -> None:
            r = results[host.name]
            r.ok, r.error = False, f"connect: {error}"
            on_event(host.name, r.error)

        @staticmethod
        def host_connect(state: State, host: Host) -> None:
            on_event(host.name, "connected")

        @staticmethod
        def operation_host_start(state: State, host: Host, op_hash: Any) -> None:
            on_event(host.name, f"start: {_op_name(state, op_hash)}")

        @staticmethod
        def operation_host_success(state: State, host: Host, op_hash: Any, retry_count: int = 0) -> None:
            results[host.name].seconds = time.monotonic() - started
            on_event(host.name, "ok")

        @staticmethod
        def operation_host_error(
            state: State, host: Host, op_hash: Any, retry_count: int = 0, max_retries: int = 0
        ) -> None:
            r = results[host.name]
            name = _op_name(state, op_hash)
            meta = state.ops[host][op_hash].operation_meta
            output = meta._combined_output if meta.is_complete() else None
            lines = (output.stderr_lines or output.stdout_lines) if output else []
            for line in output.stdout_lines + output.stderr_lines if output else []:
                print(f"{name}: {line}", file=sys.stderr)
            detail = " ".join(lines[-3:])
            r.ok, r.error, r.seconds = False, f"{name}: {detail}".strip(), time.monotonic() - started
            on_event(host.name, f"failed: {r.error}")

    return Progress()


def provision(inv: Inventory, limit: list[str] | None, dry_run: bool, on_event: Event) -> list[HostResult]:
    """Converge (or, with dry_run, only diff) the node deploy on the selected hosts of `inv`."""
    by_name = {n.hostname: n for n in inv.nodes}
    targets = {
        h: Target(str(by_name[h].management_ip), plan_node(inv, by_name[h])) for h in select_hosts(inv, limit)
    }
    return provision_hosts(inv.site.name, targets, dry_run, on_event)


@dataclass(frozen=True)
class Target:
    address: str
    plan: NodePlan
    # Why to boot the node again (for the "reboot" deploy); the deploy's own marker counts too.
    reboot_for: tuple[str, ...] = ()


DEPLOYS = {"node": "deploys.node:node", "reboot": "deploys.reboot:reboot"}


def provision_hosts(
    site: str, targets: dict[str, Target], dry_run: bool, on_event: Event, deploy: str = "node"
) -> list[HostResult]:
    """Run `deploy` on each host at its address with its plan: the Node provider's own inputs, or
    the inventory's through `provision`.

    One process per host: pyinfra gathers facts host after host within one state, so separate
    states in parallel are several times faster, and a host that fails or hangs is alone in its
    process, which cannot hold the others back.
    """
    # Host keys are the inventory's (strict checking on real sites): the one thing read here.
    ssh = pyinfra_ssh_data(load_inventory(site))
    logs = {h: log_file(site, "provision", h) for h in targets}
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    procs = {}
    for h, target in targets.items():
        data = {"ssh_hostname": target.address, "ssh_user": "root", **ssh, "gpufleet_plan": target.plan,
                "gpufleet_reboot_for": list(target.reboot_for)}  # fmt: skip
        procs[h] = ctx.Process(
            target=_host_process, args=(h, data, dry_run, queue, logs[h], DEPLOYS[deploy]), daemon=True
        )
        procs[h].start()
    selected = list(targets)
    results: dict[str, HostResult] = {}
    deadline = time.monotonic() + HOST_TIMEOUT_S
    while len(results) < len(selected) and time.monotonic() < deadline:
        try:
            kind, host, payload = queue.get(timeout=1)
        except Empty:
            for h, proc in procs.items():
                if h not in results and not proc.is_alive() and queue.empty():
                    results[h] = HostResult(
                        h,
                        ok=False,
                        error=f"deploy process exited {proc.exitcode} (full text: {display(logs[h])})",
                    )
            continue
        if kind == "event":
            on_event(host, payload)
        else:
            results[host] = payload
            on_event(host, "finished")
    for h, proc in procs.items():
        if h not in results:
            results[h] = HostResult(h, ok=False, error=f"no result after {HOST_TIMEOUT_S:.0f}s")
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [results[h] for h in selected]


def _host_process(
    hostname: str, data: dict[str, Any], dry_run: bool, queue: Any, log: Path, deploy: str
) -> None:
    # This process's stderr is the host's log: pyinfra's and gevent's tracebacks, a failed
    # command's whole output. The terminal gets one line per host that names the file.
    with log.open("w") as fh:
        os.dup2(fh.fileno(), 2)
        logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True)
        try:
            result = _converge(hostname, data, dry_run, lambda h, what: queue.put(("event", h, what)), deploy)
        except Exception as exc:  # anything unexpected still ends as this host's failed result
            traceback.print_exc()
            result = HostResult(hostname, ok=False, error=f"{type(exc).__name__}: {exc}")
        sys.stderr.flush()
        if result.error:
            print(f"result: {result.error}", file=sys.stderr, flush=True)
            result.error = f"{result.error.splitlines()[0][:240]} (full text: {display(log)})"
    queue.put(("result", hostname, result))


def _converge(hostname: str, data: dict[str, Any], dry_run: bool, on_event: Event, deploy: str) -> HostResult:
    module, function = deploy.split(":")
    node_deploy = getattr(importlib.import_module(module), function)
    state = State(
        PyinfraInventory(([(hostname, data)], {})),  # type: ignore[no-untyped-call]
        Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT_S, FAIL_PERCENT=None),  # type: ignore[no-untyped-call]
    )
    started = time.monotonic()
    results = {hostname: HostResult(hostname)}
    state.add_callback_handler(_progress(results, on_event, started))  # type: ignore[no-untyped-call]
    try:
        connect_all(state)
        add_deploy(state, node_deploy)
        if not dry_run:
            run_ops(state)
    except PyinfraError as exc:
        # pyinfra stops when its host is gone; the callbacks have recorded why, if they could.
        r = results[hostname]
        if r.ok:
            r.ok, r.error = False, str(exc)
    finally:
        disconnect_all(state)
    for host in state.inventory:
        r = results[host.name]
        if not r.seconds:
            r.seconds = time.monotonic() - started
        for op_hash in state.get_op_order():  # type: ignore[no-untyped-call]
            op = state.ops[host].get(op_hash)
            if op is None:
                continue
            r.ops += 1
            meta = op.operation_meta
            # A dry run counts what would change by itself; operations conditional on another's change
            # (apt update after a new source, a restart after a new config) follow from those.
            changed = (
                meta.did_change()
                if meta.is_complete()
                else (dry_run and bool(meta._maybe_is_change) and not op.global_arguments.get("_if"))
            )
            if changed:
                r.changed.append(_op_name(state, op_hash))
    return results[hostname]

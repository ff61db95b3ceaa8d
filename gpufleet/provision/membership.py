"""A node's membership of the Kubernetes cluster: drain it out, admit it in, remove it.

Admission is the end of the node's gate: the host suite passes (node and cluster checks), then its
planned labels are applied by a strict server-side apply (a label the plan and the API disagree on
is refused with the server's message, not half-applied), the `gpufleet.io/unverified` taint it
registered with is removed and it is uncordoned. A node that fails the suite is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpufleet.kubeapi import DrainReport, NodeApi
from gpufleet.model.errors import InputError, Problem
from gpufleet.plan.node import READINESS_TAINT, NodePlan


def node_api(kubeconfig: Path, poll_s: float = 2.0) -> NodeApi:
    """A NodeApi on the cluster a kubeconfig names; a missing or unreadable file is bad input."""
    from kubernetes import client, config

    if not kubeconfig.is_file():
        raise InputError("--kubeconfig", [Problem((), f"{kubeconfig}: no such file")])
    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    except (config.ConfigException, ValueError, KeyError) as exc:
        raise InputError("--kubeconfig", [Problem((), f"{kubeconfig}: {exc}")]) from None
    return NodeApi(client.CoreV1Api(api_client), poll_s=poll_s)


@dataclass(frozen=True)
class Admission:
    host: str
    admitted: bool
    failed: tuple[str, ...]  # the gate's failed checks, when not admitted
    done: tuple[str, ...]  # what admission changed, in order


def admit(api: NodeApi, plan: NodePlan, gate: Callable[[], tuple[bool, list[str]]]) -> Admission:
    """Run `gate` (the host suite); only on a pass: labels, the readiness taint off, uncordon."""
    ok, failed = gate()
    if not ok:
        return Admission(plan.hostname, False, tuple(failed), ())
    return Admission(plan.hostname, True, (), _let_in(api, plan.hostname, plan.labels))


def _let_in(api: NodeApi, host: str, labels: dict[str, str]) -> tuple[str, ...]:
    done = []
    api.apply_strict({"apiVersion": "v1", "kind": "Node", "metadata": {"name": host, "labels": labels}})
    done.append(f"labels {', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or 'none'}")
    if api.remove_taint(host, READINESS_TAINT.key, READINESS_TAINT.effect):
        done.append(f"taint {READINESS_TAINT.key} removed")
    api.uncordon(host)
    done.append("uncordoned")
    return tuple(done)


def admit_registered(api: NodeApi, host: str, labels: dict[str, str]) -> tuple[str, ...]:
    """What the stack does once a node's own gate has passed: admit it as `admit` does, if it still
    carries the unverified taint it registered with; a node admitted before is left as it is (a
    cordon on it is an operator's). Returns what changed, () for a node left alone."""
    if not any(t["key"] == READINESS_TAINT.key for t in api.taints(host)):
        return ()
    return _let_in(api, host, labels)


def drain(api: NodeApi, host: str, timeout_s: float) -> DrainReport:
    """Cordon and drain within `timeout_s`, as far as every disruption budget allows."""
    return api.drain(host, deadline=api.clock() + timeout_s)


def remove(api: NodeApi, host: str, timeout_s: float) -> tuple[DrainReport, bool]:
    """Drain, then delete the Node object, only once nothing is left on it; (report, deleted)."""
    report = drain(api, host, timeout_s)
    if not report.finished_in_time:
        return report, False
    return report, api.delete_node(host)


def gate_of(site: str, host: str) -> Callable[[], tuple[bool, list[str]]]:
    """The full host suite for one host (node and cluster checks), as admission's gate."""

    def run() -> tuple[bool, list[str]]:
        from gpufleet.verify import verify_site

        report = verify_site(site, [host])
        failed = [f"{r.check}: {r.message}" for r in report.failed] or (
            [] if report.ok else [f"host suite exit {report.returncode}"]
        )
        return report.ok, failed

    return run

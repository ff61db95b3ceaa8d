"""`gpufleet remediate run|admit`: the fault controller, and the way back through the gate."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gpufleet.model.errors import InputError, Problem
from gpufleet.remediate.faults import Fault, faults_from_dcgm, faults_from_kernel_log

if TYPE_CHECKING:
    from gpufleet.kubeapi import NodeApi

remediate_app = typer.Typer(
    help="Take GPU nodes with fatal faults out of service; admit them back through the gate."
)


def _kube(kubeconfig: Path | None) -> NodeApi:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from gpufleet.kubeapi import NodeApi

    if kubeconfig is not None:
        k8s_config.load_kube_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        return NodeApi(k8s.CoreV1Api())
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return NodeApi(k8s.CoreV1Api())


def _kernel_logs(specs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for i, spec in enumerate(specs):
        node, sep, path = spec.partition("=")
        if not sep or not node or not path:
            raise InputError("--kernel-log", [Problem((i,), f"expected NODE=FILE, got {spec!r}")])
        out.append((node, Path(path)))
    return out


def read_faults(dcgm: list[str], logs: list[tuple[str, Path]]) -> tuple[list[Fault], list[str]]:
    """The faults every source shows, and a line for each source that could not be read: one
    exporter away must not stop the controller from taking out the nodes the others report."""
    faults: list[Fault] = []
    unread: list[str] = []
    for url in dcgm:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                faults += faults_from_dcgm(response.read().decode())
        except (OSError, ValueError) as exc:
            unread.append(f"{url}: {exc}")
    for node, path in logs:
        try:
            faults += faults_from_kernel_log(node, path.read_text(errors="replace"))
        except OSError as exc:
            unread.append(f"{path}: {exc}")
    return faults, unread


@remediate_app.command("run")
def run(
    dcgm: Annotated[
        list[str] | None, typer.Option("--dcgm", help="dcgm-exporter /metrics URL (repeat)")
    ] = None,
    kernel_log: Annotated[
        list[str] | None, typer.Option("--kernel-log", help="NODE=FILE: a node's kernel log (repeat)")
    ] = None,
    interval_s: Annotated[float, typer.Option("--interval", min=1, help="seconds between rounds")] = 15,
    rounds: Annotated[int, typer.Option("--rounds", min=0, help="stop after this many rounds (0: run)")] = 0,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="serve /metrics here (0: off)")] = 9109,
    metrics_address: Annotated[str, typer.Option("--metrics-address")] = "127.0.0.1",
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="default: in-cluster, then ~/.kube")
    ] = None,
) -> None:
    """Each round: read faults, then cordon, taint gpufleet.io/unverified and drain each faulted node
    through the eviction API (the serving disruption budget holds)."""
    from prometheus_client import start_http_server

    from gpufleet.cli import bad_input, out
    from gpufleet.remediate.controller import Remediator

    with bad_input():
        logs = _kernel_logs(kernel_log or [])
        if not dcgm and not logs:
            raise InputError(
                "gpufleet remediate run", [Problem((), "give --dcgm URL or --kernel-log NODE=FILE")]
            )
    remediator = Remediator(_kube(kubeconfig))
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_address, registry=remediator.metrics.registry)
    done = 0
    while True:
        faults, unread = read_faults(dcgm or [], logs)
        for line in unread:
            out.print(f"not read, tried again next round: {line}", markup=False, soft_wrap=True)
        for r in remediator.reconcile(faults):
            status = (
                f"{r.error}, tried again next round"
                if r.error
                else f"evicted {len(r.evicted)}, kept by the disruption budget {len(r.blocked)}"
            )
            out.print(
                f"{r.node}: {'; '.join(r.reasons) or 'draining'}; {status}", markup=False, soft_wrap=True
            )
        done += 1
        if rounds and done >= rounds:
            return
        time.sleep(interval_s)


@remediate_app.command("admit")
def admit(
    site: Annotated[str, typer.Argument(help="site name under inventories/, a site folder or a nodes.yaml")],
    host: Annotated[str, typer.Argument(help="the node to return to service")],
    local: Annotated[bool, typer.Option("--local", help="the gate runs on this machine as HOST")] = False,
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="default: in-cluster, then ~/.kube")
    ] = None,
) -> None:
    """Run the admission gate on HOST; only if it passes, lift the taint and uncordon (exit 1 otherwise)."""
    from gpufleet.cli import bad_input, out
    from gpufleet.provision.cli import site_host
    from gpufleet.remediate.controller import Remediator
    from gpufleet.verify import verify_site

    with bad_input():
        site_host(site, host)
        report = verify_site(site, [host], local=local)
    if not report.ok:
        failed = (
            "; ".join(f"{r.check}: {r.message}" for r in report.failed)
            or f"pytest exited {report.returncode}"
        )
        out.print(f"{host} stays out of service: the gate failed ({failed})", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    Remediator(_kube(kubeconfig)).admit(host, report)
    out.print(f"{host} passed the gate: taint lifted, uncordoned", markup=False)

"""`gpufleet provision`: the node deploys on a site's hosts, a summary table, exit 1 if any host failed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.status import Status
from rich.table import Table

from gpufleet.inventory.load import load_inventory
from gpufleet.model.errors import InputError, Problem
from gpufleet.provision.rehearse import Phase, run_phases

if TYPE_CHECKING:
    # pyinfra and ansible-runner load only when a command uses them: every other command (and a
    # host without them, such as the GPU machine the host suite runs on) starts without.
    from gpufleet.provision.cluster import PlayResult
    from gpufleet.provision.nodes import HostResult

MAX_DETAIL = 160
SiteArg = Annotated[str, typer.Argument(help="site name under inventories/, a site folder or a nodes.yaml")]
LimitOpt = Annotated[list[str] | None, typer.Option("--limit", help="only this host (repeatable)")]
HostArg = Annotated[str, typer.Argument(help="the node's hostname in the site")]
KubeconfigOpt = Annotated[
    Path,
    typer.Option("--kubeconfig", envvar="KUBECONFIG", help="the cluster's kubeconfig (default $KUBECONFIG)"),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="show what would change per host; change nothing")]


def change_detail(changed: list[str]) -> str:
    """The changed operations, whole, up to MAX_DETAIL characters, then how many more (`--json`
    lists them all): no operation's name is cut."""
    shown: list[str] = []
    for i, op in enumerate(changed):
        rest = len(changed) - i
        if shown and len("; ".join([*shown, op])) + len(f"; +{rest - 1} more (--json)") > MAX_DETAIL:
            return "; ".join(shown) + f"; +{rest} more (--json)"
        shown.append(op)
    return "; ".join(shown)


def summary_table(results: list[HostResult], dry_run: bool) -> Table:
    verb = "would change" if dry_run else "changed"
    table = Table("host", "result", "operations", verb, "seconds", "detail")
    for r in results:
        result = "[red]failed[/]" if not r.ok else ("[yellow]changed[/]" if r.changed else "[green]ok[/]")
        # An error is one line that names its log: never shortened.
        detail = r.error or change_detail(r.changed)
        table.add_row(r.hostname, result, str(r.ops), str(len(r.changed)), f"{r.seconds:.1f}", detail)
    return table


def run_provision(site: str, limit: list[str] | None, dry_run: bool, quiet: bool = False) -> list[HostResult]:
    """Provision with per-host progress and the summary table (on stderr when `quiet`); bad input exits 2."""
    from gpufleet.cli import bad_input, err
    from gpufleet.cli import out as stdout
    from gpufleet.provision.nodes import provision, select_hosts
    from gpufleet.provision.reach import require_reachable

    out = err if quiet else stdout

    with bad_input():
        inv = load_inventory(site)
        hosts = select_hosts(inv, limit)
        require_reachable(inv, hosts)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} ops"), console=out
    ) as progress:
        tasks = {h: progress.add_task(h, total=None) for h in hosts}

        def on_event(hostname: str, what: str) -> None:
            if what == "ok":
                progress.advance(tasks[hostname])
            else:
                progress.update(tasks[hostname], description=f"{hostname} [red]{what}[/]")

        results = provision(inv, hosts, dry_run, on_event)
    out.print(summary_table(results, dry_run))
    return results


class Component(StrEnum):
    ceph = "ceph"
    kubernetes = "kubernetes"
    all = "all"


# The lab has no kubeadm (Debian ships none, and the mirror is built from Debian): its
# Kubernetes play runs in check mode, which proves the role's logic without changing hosts.
def plays(component: Component, lab: bool) -> list[tuple[str, bool]]:
    """(playbook, check mode) in the order a site is built: storage before the cluster that uses it."""
    wanted = [Component.ceph, Component.kubernetes] if component is Component.all else [component]
    return [(f"{c.value}.yml", lab and c is Component.kubernetes) for c in wanted]


def play_table(results: list[PlayResult]) -> Table:
    table = Table("play", "host", "ok", "changed", "failed", "unreachable", "skipped")
    for r in results:
        for host, stats in sorted(r.hosts.items()):
            table.add_row(
                r.playbook,
                host,
                *(str(stats.get(k, 0)) for k in ("ok", "changed", "failures", "dark", "skipped")),
            )
    return table


def run_cluster(site: str, component: Component) -> list[PlayResult]:
    from gpufleet.cli import bad_input, err, out
    from gpufleet.provision.cluster import run_playbook
    from gpufleet.provision.reach import require_reachable

    with bad_input():
        inv = load_inventory(site)
        require_reachable(inv, [n.hostname for n in inv.nodes], limit_option=False)
    results = []
    for playbook, check in plays(component, inv.site.environment == "lab"):
        label = f"{playbook}{' (check mode)' if check else ''}"
        with out.status(f"{label} ...") as status:

            def progress(host: str, task: str, label: str = label, status: Status = status) -> None:
                status.update(f"{label}: {host}: {task}")

            result = run_playbook(inv, playbook, progress, check=check)
        results.append(result)
        out.print(f"{'[green]ok[/]' if result.ok else '[red]failed[/]'} {label} in {result.seconds:.1f}s")
        for line in result.failures:
            err.print(f"  {line}", markup=False, highlight=False)
        if not result.ok:
            break  # what comes later builds on this play
    out.print(play_table(results))
    return results


def phase_table(phases: list[Phase]) -> Table:
    table = Table("phase", "result", "seconds", "detail", title="rehearsal")
    for p in phases:
        table.add_row(p.name, "[green]ok[/]" if p.ok else "[red]failed[/]", f"{p.seconds:.1f}", p.detail)
    table.add_row("total", "", f"{sum(p.seconds for p in phases):.1f}", "", style="bold")
    return table


def rehearse(site: str, keep: bool = False) -> list[Phase]:
    """lab up (lab site) -> provision -> cluster ceph -> verify, each timed.

    A running lab is rebuilt from nothing (it says so first), unless `keep`: then the rehearsal
    converges the hosts that are up, which measures a re-run, not a rebuild."""
    from gpufleet.cli import bad_input, out
    from gpufleet.lab import hosts
    from gpufleet.lab.cli import lab_up
    from gpufleet.lab.image import LabError
    from gpufleet.lab.paths import LabPaths
    from gpufleet.verify import verify_site

    with bad_input():
        inv = load_inventory(site)
        paths = LabPaths.default()
    lab = inv.site.environment == "lab"
    running = lab and any(s.supervisor_pid for s in hosts.status(inv, paths))
    if running and not keep:
        out.print(
            f"The lab is up ({paths.state}): the rehearsal removes it and rebuilds it from nothing. "
            "`gpufleet rehearse --keep` reuses it instead."
        )
    elif running:
        out.print("The lab is up: --keep reuses it (a re-run, not a rebuild from nothing).")

    def previous_lab_down() -> tuple[bool, str]:
        hosts.down(inv, paths, lambda msg: out.print(f"[dim]lab[/] {msg}"))
        return True, "the running lab, removed: the rebuild starts from nothing"

    def lab_phase() -> tuple[bool, str]:
        try:
            rows = lab_up(site)
        except LabError as exc:
            return False, str(exc)
        return True, f"{len(rows)} hosts up"

    def provision_phase() -> tuple[bool, str]:
        try:
            results = run_provision(site, None, dry_run=False)
        except typer.Exit:
            return False, "hosts unreachable (see above)"
        failed = [r.hostname for r in results if not r.ok]
        changed = sum(len(r.changed) for r in results)
        return (
            not failed,
            f"failed: {', '.join(failed)}" if failed else f"{changed} changes on {len(results)} hosts",
        )

    def ceph_phase() -> tuple[bool, str]:
        try:
            results = run_cluster(site, Component.ceph)
        except typer.Exit:
            return False, "hosts unreachable (see above)"
        return all(r.ok for r in results), "; ".join(
            f for r in results for f in r.failures
        ) or "HEALTH and PGs waited for"

    def verify_phase() -> tuple[bool, str]:
        # Every part: what a host's plan leaves out (Kubernetes in the lab) is not demanded.
        report = verify_site(site)
        failed = [f"{r.host}: {r.check}" for r in report.results if r.outcome == "failed"]
        passed = sum(r.outcome == "passed" for r in report.results)
        return report.ok, ", ".join(failed[:5]) if failed else f"{passed} checks passed"

    steps = []
    if running and not keep:
        steps.append(("previous lab down", previous_lab_down))
    if lab and not (running and keep):
        steps.append(("lab up", lab_phase))
    steps += [("provision", provision_phase), ("cluster ceph", ceph_phase), ("verify", verify_phase)]
    phases = run_phases(steps)
    out.print(phase_table(phases))
    if lab and all(p.ok for p in phases):
        out.print("The lab stays up: `gpufleet lab status`, `gpufleet lab down` when done.")
    return phases


def register(app: typer.Typer) -> None:
    @app.command("provision")
    def provision_cmd(
        site: SiteArg = "lab",
        limit: LimitOpt = None,
        dry_run: DryRunOpt = False,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable results")] = False,
    ) -> None:
        """Converge each node to its plan with the pyinfra deploys; a failing host does not stop the others."""
        from gpufleet.cli import emit_json

        results = run_provision(site, limit, dry_run, quiet=as_json)
        if as_json:
            emit_json([asdict(r) for r in results])
        if not all(r.ok for r in results):
            raise typer.Exit(1)

    @app.command("rehearse")
    def rehearse_cmd(
        site: SiteArg = "lab",
        keep: Annotated[
            bool, typer.Option("--keep", help="reuse a running lab instead of rebuilding it from nothing")
        ] = False,
    ) -> None:
        """Rebuild the site from the repository (lab up, provision, Ceph, verify) and time each phase."""
        if not all(p.ok for p in rehearse(site, keep)):
            raise typer.Exit(1)

    @app.command("cluster")
    def cluster_cmd(
        site: SiteArg = "lab",
        component: Annotated[Component, typer.Argument(help="which roles")] = Component.all,
    ) -> None:
        """What spans nodes, with Ansible: Ceph (mons, mgrs, OSDs, pools), then Kubernetes."""
        results = run_cluster(site, component)
        if not all(r.ok for r in results):
            raise typer.Exit(1)

    @app.command("drain")
    def drain_cmd(
        site: SiteArg,
        host: HostArg,
        kubeconfig: KubeconfigOpt = Path("~/.kube/config"),
        timeout: Annotated[
            float, typer.Option("--timeout", help="seconds to wait for every pod to go")
        ] = 600,
    ) -> None:
        """Cordon the node and evict its pods as far as their disruption budgets allow; exit 1 if
        any is left when the time is up (the budget's message says why)."""
        from gpufleet.cli import bad_input, err, out
        from gpufleet.provision.membership import drain, node_api

        with bad_input():
            host = site_host(site, host)
            api = node_api(kubeconfig.expanduser())
        with api_errors(host):
            report = drain(api, host, timeout)
        out.print(
            f"{host}: cordoned; {len(report.evicted)} pods evicted, {len(report.left)} left", highlight=False
        )
        for why in report.blocked or report.left:
            err.print(f"{host}: {why}", markup=False, highlight=False, soft_wrap=True)
        if not report.finished_in_time:
            raise typer.Exit(1)

    @app.command("admit")
    def admit_cmd(site: SiteArg, host: HostArg, kubeconfig: KubeconfigOpt = Path("~/.kube/config")) -> None:
        """The node's gate, then its way in: host suite passes → planned labels, readiness taint off,
        uncordon. Exit 1, changing nothing, when a check fails."""
        from gpufleet.cli import bad_input, err, out
        from gpufleet.plan.node import plan_node
        from gpufleet.provision.membership import admit, gate_of, node_api

        with bad_input():
            host = site_host(site, host)
            inv = load_inventory(site)
            api = node_api(kubeconfig.expanduser())
        with api_errors(host):
            admission = admit(api, plan_node(inv, inv.node(host)), gate_of(site, host))
        for line in admission.failed:
            err.print(f"{host}: {line}", markup=False, highlight=False, soft_wrap=True)
        if not admission.admitted:
            raise typer.Exit(1)
        out.print(f"{host}: admitted ({'; '.join(admission.done)})", highlight=False)


@contextmanager
def api_errors(host: str) -> Iterator[None]:
    """An answer from the API server that stops the command: one line with the server's message, exit 1."""
    from kubernetes.client.exceptions import ApiException

    from gpufleet.cli import err
    from gpufleet.kubeapi import KubeError

    try:
        yield
    except KubeError as exc:
        err.print(f"{host}: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ApiException as exc:
        err.print(f"{host}: {exc.status} {exc.reason}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def site_host(site: str, host: str) -> str:
    """HOST as a node of SITE, or the same one-line error `plan-node` gives, listing the nodes."""
    inv = load_inventory(site)
    names = [n.hostname for n in inv.nodes]
    if host not in names:
        raise InputError(
            f"argument HOST ({site})", [Problem((), f"no node {host!r}; nodes: {', '.join(names)}")]
        )
    return host

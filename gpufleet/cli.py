"""`gpufleet <verb> <site|stack>`: exit 0 ok, 1 a failed check, 2 bad input (nothing changed)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpufleet.inventory.load import load_inventory, site_file
from gpufleet.inventory.render import ansible_inventory, pyinfra_inventory_source
from gpufleet.inventory.stacks import load_stack, stack_names
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.node import RdmaPort, plan_node
from gpufleet.plan.perf import Figure, PerfPlan
from gpufleet.plan.site import plan_site

app = typer.Typer(
    help="Infrastructure as code for hybrid GPU sites serving DeepSeek.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped or captured output is read by a program or a log, not a window: no width to wrap tables to.
UNBOUNDED = 10_000
out = Console(width=None if sys.stdout.isatty() else UNBOUNDED)
err = Console(stderr=True, width=None if sys.stderr.isatty() else UNBOUNDED)

SiteArg = Annotated[str, typer.Argument(help="site name under inventories/, a site folder or a nodes.yaml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@contextmanager
def bad_input() -> Iterator[None]:
    """Bad input: one plain line per problem on stderr, exit 2, no traceback."""
    try:
        yield
    except InputError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _load(site: str) -> Inventory:
    with bad_input():
        return load_inventory(site)


@app.command()
def validate(site: SiteArg = "lab", as_json: JsonOpt = False) -> None:
    """Load and check a site inventory."""
    inv = _load(site)
    roles = Counter(r.value for n in inv.nodes for r in n.roles)
    gpus: Counter[str] = Counter()
    for n in inv.nodes:
        if n.gpu is not None:
            gpus[n.gpu.model.value] += n.gpu.count
    summary = {
        "site": inv.site.name,
        "nodes": len(inv.nodes),
        "roles": dict(roles),
        "gpus": dict(gpus),
        "ok": True,
    }
    if as_json:
        emit_json(summary)
        return
    gpu_text = ", ".join(f"{c}x {m}" for m, c in gpus.items()) or "no GPUs"
    role_text = ", ".join(f"{c} {r}" for r, c in roles.items())
    out.print(f"[green]ok[/] {inv.site.name}: {len(inv.nodes)} nodes ({role_text}); {gpu_text}")


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
) -> None:
    """JSON Schema of inventories/<site>/nodes.yaml, for editors."""
    text = json.dumps(Inventory.model_json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"wrote {output}")


class InventoryFormat(StrEnum):
    ANSIBLE = "ansible"
    PYINFRA = "pyinfra"
    JSON = "json"


@app.command()
def inventory(
    site: SiteArg = "lab",
    fmt: Annotated[InventoryFormat, typer.Option("--format", help="what to render")] = InventoryFormat.JSON,
) -> None:
    """Render the site as an Ansible inventory, a pyinfra inventory module, or the validated model."""
    inv = _load(site)
    if fmt is InventoryFormat.ANSIBLE:
        emit_json(ansible_inventory(inv))
    elif fmt is InventoryFormat.PYINFRA:
        sys.stdout.write(pyinfra_inventory_source(inv))
    else:
        emit_json(inv.model_dump(mode="json"))


@app.command("plan-node")
def plan_node_cmd(
    site: SiteArg, host: Annotated[str, typer.Argument(help="hostname")], as_json: JsonOpt = False
) -> None:
    """What one node must become: packages, kernel, sysctl, limits, NCCL, RDMA, RAID, mounts, labels."""
    inv = _load(site)
    try:
        node = inv.node(host)
    except KeyError:
        known = ", ".join(n.hostname for n in inv.nodes)
        with bad_input():
            raise InputError(
                f"argument HOST ({site})", [Problem((), f"no node {host!r}; nodes: {known}")]
            ) from None
        raise
    plan = plan_node(inv, node)
    if as_json:
        registration = [t.model_dump(mode="json") for t in plan.registration_taints]
        emit_json(
            {**plan.model_dump(mode="json"), "registration_taints": registration, "digest": plan.digest}
        )
        return
    table = Table(title=f"{inv.site.name}/{plan.hostname}  digest {plan.digest}", show_header=False)
    _text_row(table, "roles", ", ".join(plan.roles))
    _text_row(
        table,
        "packages",
        "\n".join(f"{p.name} {p.version or ''}{' (held)' if p.hold else ''}" for p in plan.packages),
    )
    _text_row(table, "kernel", " ".join(plan.kernel_cmdline) or "-")
    _text_row(table, "sysctl", "\n".join(f"{k} = {v}" for k, v in plan.sysctl.items()) or "-")
    _text_row(
        table, "limits", "\n".join(f"{x.domain} {x.type} {x.item} {x.value}" for x in plan.limits) or "-"
    )
    _text_row(table, "services", ", ".join(plan.services))
    _text_row(table, "nccl.conf", (plan.nccl_conf or "-").strip())
    _text_row(table, "rdma", "\n".join(_rdma_port(p) for p in plan.rdma) or "-")
    _text_row(
        table, "raid", "\n".join(f"{a.device} RAID{a.level} {' '.join(a.members)}" for a in plan.raid) or "-"
    )
    _text_row(table, "mounts", "\n".join(f"{m.device} {m.path} {m.fstype}" for m in plan.mounts) or "-")
    _text_row(table, "labels", "\n".join(f"{k}={v}" for k, v in plan.labels.items()))
    _text_row(table, "taints", "\n".join(f"{t.key}={t.value}:{t.effect}" for t in plan.taints))
    extra = [t for t in plan.registration_taints if t not in plan.taints]
    _text_row(table, "at join", "\n".join(f"{t.key}={t.value}:{t.effect} (until admitted)" for t in extra))
    _text_row(table, "perf", _perf_rows(plan.perf) if plan.perf else "-")
    env = plan.perf_env
    _text_row(table, "perf env", f"{env.path}: {env.requirement} from {env.index_url}" if env else "-")
    out.print(table)


def _text_row(table: Table, name: str, value: str) -> None:
    """A row whose value is shown as written: what comes from an inventory is never Rich markup."""
    table.add_row(name, Text(value))


def _perf_rows(perf: PerfPlan) -> str:
    """Expected figures and the gate's minimum (expected x the site's share) for each."""

    def row(what: str, f: Figure, unit: str) -> str:
        return f"{what}: >= {f.minimum:.4g} {unit} ({f.share:g} x {f.expected:.4g})"

    lines = [f"{perf.gpus} GPUs, {perf.interconnect}"]
    lines += [row(f"all-reduce {a.bytes >> 20} MiB busbw", a, "GB/s") for a in perf.allreduce_gb_s]
    lines += [
        row("memory copy per GPU", perf.memory_copy_tb_s, "TB/s"),
        row("host<->device per GPU", perf.host_device_gb_s, "GB/s"),
        row(f"{perf.matmul_dtype} matmul per GPU", perf.matmul_tflops, "TFLOP/s"),
        f"SM clock under load >= {perf.min_load_clock_share:g} x max; probe bounded at {perf.deadline_s} s",
        f"probe interpreter: {perf.python}"
        if perf.python
        else f"probe interpreter: none ({perf.python_missing})",
    ]
    if perf.rdma_peer:
        peer = perf.rdma_peer
        lines += [
            row(f"RDMA write {link.device} -> {peer.host}:{link.peer_device}", link, "Gb/s")
            for link in peer.links
        ]
    return "\n".join(lines)


def _rdma_port(p: RdmaPort) -> str:
    line = f"{p.device}/{p.port} {p.link_layer} MTU {p.mtu} GID {p.gid_index}"
    if p.roce is not None:
        r = p.roce
        line += f"; {r.netdev} MTU {r.netdev_mtu}, DSCP {r.dscp} -> prio {r.priority} (PFC)"
    return line


@app.command("plan-site")
def plan_site_cmd(site: SiteArg = "lab", as_json: JsonOpt = False) -> None:
    """What the site must become: Ceph pools and CRUSH rules, Kubernetes, serving, burst bounds."""
    inv = _load(site)
    plan = plan_site(inv)
    if as_json:
        emit_json(plan.model_dump(mode="json"))
        return
    table = Table(title=f"site {plan.site} ({plan.environment})")
    table.add_column("node")
    table.add_column("roles")
    table.add_column("plan digest")
    for node in inv.nodes:
        table.add_row(node.hostname, ", ".join(r.value for r in node.roles), plan.node_digests[node.hostname])
    out.print(table)
    k8s = plan.kubernetes
    out.print(
        f"kubernetes {k8s.version}: {len(k8s.control_planes)} control plane, {len(k8s.workers)} workers, "
        f"endpoint {k8s.control_plane_endpoint}"
    )
    if plan.ceph:
        pools = ", ".join(
            f"{p.name} (size {p.size}/{p.min_size}, {p.pg_num} PGs, {p.crush_rule})" for p in plan.ceph.pools
        )
        out.print(f"ceph {plan.ceph.release}: mons {', '.join(plan.ceph.mons)}; pools {pools}")
    if plan.serving:
        s = plan.serving
        shape = (
            f"TP {s.shape.tensor_parallel} on {s.shape.gpu} over {s.shape.nodes} node(s)"
            if s.shape
            else "no GPUs"
        )
        out.print(f"serving {s.model}: {s.replicas} replicas, {shape}")
    if plan.burst:
        from gpufleet.plan.aws import plan_fleet

        b = plan.burst
        with bad_input():
            fleet = plan_fleet(inv, str(site_file(site)))
        served = f"{fleet.model} (TP {fleet.tensor_parallel})" + (
            ", a smaller model" if fleet.fallback else ""
        )
        out.print(
            f"burst {b.region}: 0..{b.max_nodes} Spot nodes at most ${b.spot_max_price_usd or 0:g}/h each, "
            f"cap ${b.max_hourly_usd:g}/h; serves {served} on "
            + ", ".join(f"{i.name} ({i.capacity:.2f})" for i in fleet.instances)
            + " (on-prem replicas per node)"
        )


@app.command()
def stacks(as_json: JsonOpt = False) -> None:
    """Check every stacks/Pulumi.<stack>.yaml and the inventory it names."""
    with bad_input():
        loaded = [load_stack(name) for name in stack_names()]
    rows = [
        {"stack": s.name, "site": s.config.site, "layer": s.config.layer, "burst_nodes": s.config.burst_nodes}
        for s in loaded
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table("stack", "site", "layer", "burstNodes")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@app.command()
def verify(
    site: SiteArg = "lab",
    limit: Annotated[list[str] | None, typer.Option("--limit", help="only these hosts (repeat)")] = None,
    part: Annotated[
        list[str] | None,
        typer.Option("--part", help="only these parts: gpu, network, storage, kubernetes, perf"),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="check this machine as the one --limit host")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also list the checks the hosts' plans leave out")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The admission gate: run the host suite against the site's hosts; exit 1 on any failed check."""
    from gpufleet.provision.reach import require_reachable
    from gpufleet.verify import verify_site

    with bad_input():
        if not local:
            inv = load_inventory(site)
            require_reachable(inv, limit or [n.hostname for n in inv.nodes])
        report = verify_site(site, limit, part, local=local)
    if as_json:
        emit_json({**report.model_dump(), "ok": report.ok})
    else:
        # The checks that ran are the gate; what a host's plan leaves out (no GPU, no RDMA) is a count.
        left_out = [r for r in report.results if r.outcome == "skipped"]
        shown = report.results if verbose else [r for r in report.results if r.outcome != "skipped"]
        table = Table("host", "part", "check", "result", "detail", title=f"verify {report.site}")
        style = {"passed": "green", "failed": "red", "skipped": "dim"}
        for r in shown:
            # What a host printed is shown as text: `[/x]` in a check's output is not markup.
            table.add_row(
                r.host,
                r.part,
                Text(r.check),
                Text(r.outcome, style=style.get(r.outcome, "")),
                Text(r.message),
            )
        out.print(table)
        counts = Counter(r.outcome for r in report.results if r.outcome != "skipped")
        ran = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no check ran"
        out.print(f"{sum(counts.values())} checks ran: {ran}")
        if left_out:
            hint = "" if verbose else " (--verbose lists them)"
            out.print(f"{len(left_out)} left out: not in the hosts' plans{hint}")
        if report.failed:
            out.print(f"full text of the failures: {report.log}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


from gpufleet.lab.cli import lab_app  # noqa: E402  (its commands use the helpers above at call time)

app.add_typer(lab_app, name="lab")

from gpufleet.provision.cli import register as register_provision  # noqa: E402

register_provision(app)

from gpufleet.burst.cli import burst_app  # noqa: E402  (its commands use the helpers above at call time)

app.add_typer(burst_app, name="burst")


from gpufleet.remediate.cli import remediate_app  # noqa: E402

app.add_typer(remediate_app, name="remediate")

from gpufleet.serving.cli import serving_app  # noqa: E402  (its commands use the helpers above at call time)

app.add_typer(serving_app, name="serving")

from gpufleet.preview.cli import register as register_plan  # noqa: E402

register_plan(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

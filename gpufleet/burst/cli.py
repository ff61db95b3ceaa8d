"""`gpufleet burst ...`: the burst controller's commands."""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpufleet.burst.policy import POLICY_NAMES, KnownPeak
from gpufleet.inventory.load import REPO_ROOT, display, load_inventory, site_file
from gpufleet.model.errors import InputError, Problem
from gpufleet.sim.bounds import BOUND_NAMES, BoundResult
from gpufleet.sim.engine import Result
from gpufleet.sim.scenario import build_scenario
from gpufleet.sim.trace import (
    Surge,
    apply_surges,
    default_surge,
    load_trace,
    parse_duration,
    parse_surge,
    repeat,
)

burst_app = typer.Typer(
    help="AWS Spot burst capacity: simulate policies, run the controller.", no_args_is_help=True
)

DEFAULT_TRACE = REPO_ROOT / "bench" / "burst" / "data" / "azure_llm_2023_code.csv"


def _surges(values: list[str], default: Surge) -> list[Surge]:
    if not values:
        return [default]
    if values == ["none"]:
        return []
    surges = []
    for value in values:
        try:
            surges.append(parse_surge(value))
        except ValueError as exc:
            raise InputError("--surge", [Problem((), str(exc))]) from None
    return surges


def parse_peak(text: str) -> KnownPeak:
    """`FACTOR@START+DURATION`, START an ISO-8601 time (UTC unless it says otherwise)."""
    factor_text, at, window = text.partition("@")
    start_text, plus, duration_text = window.rpartition("+")
    try:
        if not at or not plus:
            raise ValueError("expected FACTOR@START+DURATION like 3@2026-11-27T18:00+20m")
        factor = float(factor_text)
        if not 0 < factor <= 100:
            raise ValueError(f"FACTOR must be in (0, 100] (got {factor_text!r})")
        when = datetime.fromisoformat(start_text)
        start = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        duration = parse_duration(duration_text)
    except ValueError as exc:
        raise InputError("--peak", [Problem((), f"{exc} (got {text!r})")]) from None
    return KnownPeak(start_s=start, end_s=start + duration, factor=factor)


def _policies(value: str) -> list[str]:
    if value == "all":
        return list(POLICY_NAMES)
    if value not in POLICY_NAMES:
        raise InputError(
            "--policy", [Problem((), f"unknown policy {value!r}; one of all, {', '.join(POLICY_NAMES)}")]
        )
    return [value]


@burst_app.command()
def simulate(
    trace: Annotated[
        Path,
        typer.Option("--trace", help="request trace: Azure CSV or Mooncake JSONL (see bench/burst/data)"),
    ] = DEFAULT_TRACE,
    surge: Annotated[
        list[str] | None,
        typer.Option(
            "--surge",
            help="FACTOR@START:DURATION, e.g. 3@20m:20m; repeatable; 'none' for none "
            "(default: x3 for 20 minutes in the middle of the trace)",
        ),
    ] = None,
    policy: Annotated[str, typer.Option("--policy", help=f"all or one of {', '.join(POLICY_NAMES)}")] = "all",
    site: Annotated[
        str, typer.Option("--site", help="site whose on-prem replicas and burst settings to model")
    ] = "dc1",
    announce: Annotated[
        bool,
        typer.Option(
            "--announce/--no-announce", help="tell gpufleet's policy the surges ahead (known peaks)"
        ),
    ] = True,
    interruptions: Annotated[
        float, typer.Option("--interruptions", min=0.0, help="Spot interruptions per node-hour")
    ] = 0.05,
    times: Annotated[
        int, typer.Option("--repeat", min=1, help="play the trace this many times back to back")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="seed for surge copies, prices and interruptions")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Replay a trace with surges through each policy and compare SLO minutes, cost and cap."""
    # Imported here: gpufleet.cli imports this module to register the sub-app.
    from gpufleet.cli import bad_input, emit_json, out

    with bad_input():
        names = _policies(policy)
        loaded = repeat(load_trace(trace), times)
        surges = _surges(surge or [], default_surge(loaded))
        inv = load_inventory(site)
        scenario = build_scenario(
            inv,
            display(site_file(site)),
            loaded,
            surges,
            announce=announce,
            interruptions_per_node_hour=interruptions,
            seed=seed,
        )
    results = [scenario.run(name) for name in names]
    # The exact bounds come with every run: what any policy's cost is measured against.
    bounds = [scenario.bound(name) for name in BOUND_NAMES]
    if as_json:
        emit_json([r.summary() for r in results] + [b.summary() for b in bounds])
        return
    surged = apply_surges(loaded, surges, seed=seed)
    out.print(
        f"{trace.name}: {len(surged.requests)} requests over {scenario.horizon_s / 60:.0f} min; "
        f"surges {', '.join(f'x{s.factor:g} at {s.start_s / 60:.1f} min for {s.duration_s / 60:.1f} min' for s in surges) or 'none'}; "
        f"{scenario.capacity.onprem_replicas} on-prem replicas of {scenario.service.tokens_per_s:,.0f} tokens/s; "
        f"burst {scenario.fleet.model}{' (fallback)' if scenario.fleet.fallback else ''} on "
        f"{', '.join(scenario.fleet.instance_types)}, <= {scenario.capacity.max_nodes} nodes, "
        f"${scenario.capacity.max_hourly_usd:g}/h cap"
    )
    out.print(_table(results, bounds, scenario.capacity.slo_queue_wait_s))


def _table(results: list[Result], bounds: list[BoundResult], slo_s: float) -> Table:
    table = Table(title=f"SLO: p99 queue wait <= {slo_s:g} s per minute")
    for column in ("policy", "SLO ok %", "violation min", "p99 wait s", "GPU-h", "$", "cap viol.", "actions"):
        table.add_column(
            column, justify="left" if column == "policy" else "right", no_wrap=column == "policy"
        )
    for r in results:
        table.add_row(
            r.policy,
            f"{r.slo_ok_minutes_pct:.1f}",
            str(r.slo_violation_minutes),
            f"{r.p99_queue_wait_s:.2f}",
            f"{r.gpu_hours:.1f}",
            f"{r.cost_usd:.2f}",
            str(r.cap_violations),
            str(r.scale_actions),
        )
    for b in bounds:
        plan = math.isfinite(b.cost_usd)  # HiGHS may stop before it has any plan
        gpu_hours, cost = (f"{b.gpu_hours:.1f}", f"{b.cost_usd:.2f}") if plan else ("-", "-")
        table.add_row(b.label(), "-", "-", "-", gpu_hours, cost, "0", "-")
    return table


@burst_app.command()
def run(
    stack: Annotated[str, typer.Argument(help="burst stack (stacks/Pulumi.<stack>.yaml, layer burst)")],
    triton_metrics: Annotated[
        str | None, typer.Option("--triton-metrics", help="read Triton's /metrics URL directly")
    ] = None,
    prometheus: Annotated[
        str, typer.Option("--prometheus", help="Prometheus server to query (unless --triton-metrics)")
    ] = "http://127.0.0.1:9090",
    model: Annotated[
        str | None, typer.Option("--model", help="Triton model name (default: the site's serving model)")
    ] = None,
    replica_rps: Annotated[
        float, typer.Option("--replica-rps", min=0.001, help="requests/s one replica serves at full batch")
    ] = 2.0,
    group: Annotated[
        str | None,
        typer.Option("--asg", help="burst Auto Scaling group (default: the stack's asgName output)"),
    ] = None,
    aws_endpoint: Annotated[
        str | None, typer.Option("--aws-endpoint", help="AWS endpoint URL override")
    ] = None,
    queue_url: Annotated[
        str | None,
        typer.Option(
            "--interruption-queue",
            help="SQS queue of EventBridge Spot warnings (default: the stack's queueUrl output)",
        ),
    ] = None,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="serve the controller's metrics here")
    ] = 9108,
    metrics_address: Annotated[str, typer.Option("--metrics-address")] = "127.0.0.1",
    interval: Annotated[float, typer.Option("--interval", min=1.0, help="seconds between decisions")] = 15.0,
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, help="stop after this many steps (0: run)")
    ] = 0,
    pulumi_root: Annotated[
        Path | None, typer.Option("--pulumi-root", help="directory holding bin/pulumi (default: PATH)")
    ] = None,
    work_dir: Annotated[
        Path, typer.Option("--work-dir", help="the Pulumi project (Pulumi.yaml)")
    ] = REPO_ROOT,
    peak: Annotated[
        list[str] | None,
        typer.Option(
            "--peak",
            help="an announced peak, FACTOR@START+DURATION, START in UTC: 3@2026-11-27T18:00+20m; repeatable",
        ),
    ] = None,
) -> None:
    """The burst controller: reads the load signal, decides, and declares burstNodes on the stack."""
    # Imported here: gpufleet.cli imports this module to register the sub-app.
    import boto3  # type: ignore[import-untyped]
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from prometheus_client import start_http_server
    from rich.logging import RichHandler

    from gpufleet.burst.actuate import ActuationError, AsgActuator, PulumiActuator
    from gpufleet.burst.controller import (
        Controller,
        PrometheusSource,
        SpotPrices,
        TritonSource,
        group_max_price,
        inflight_by_instance,
    )
    from gpufleet.burst.interrupt import Drainer, Interruptions, WarningQueue
    from gpufleet.burst.policy import CapacityModel, Gpufleet
    from gpufleet.burst.signal import PrometheusQuery, TritonMetrics
    from gpufleet.cli import bad_input
    from gpufleet.inventory.stacks import load_stack, stacks_dir
    from gpufleet.plan.aws import DRAIN_HEARTBEAT_S, plan_fleet
    from gpufleet.plan.site import plan_site

    with bad_input():
        known_peaks = tuple(parse_peak(text) for text in peak or [])
        loaded = load_stack(stack)
        source_file = display(stacks_dir() / f"Pulumi.{stack}.yaml")
        if loaded.config.layer != "burst":
            raise InputError(
                source_file, [Problem(("config", "gpufleet:layer"), "not a burst stack (got 'onprem')")]
            )
        plan = plan_site(loaded.inventory)
        if plan.burst is None or plan.serving is None:
            raise InputError(
                source_file,
                [Problem(("config", "gpufleet:site"), "the site has no serving or burst section")],
            )
        fleet = plan_fleet(loaded.inventory, source_file)
    logging.basicConfig(level=logging.INFO, handlers=[RichHandler(show_path=False)], format="%(message)s")
    pulumi = PulumiActuator(stack=stack, work_dir=work_dir, pulumi_root=pulumi_root)
    if group is None or queue_url is None:
        # What the SpotBurst component created, as the burst stack's last up exported it.
        with bad_input():
            try:
                outputs = pulumi.outputs()
            except ActuationError as exc:
                raise InputError("--asg", [Problem((), f"not given, and {exc}")]) from None
            group = group or (str(outputs["asgName"]) if "asgName" in outputs else None)
            if group is None:
                raise InputError("--asg", [Problem((), f"not given, and stack {stack} exports no asgName")])
            queue_url = queue_url or (str(outputs["queueUrl"]) if "queueUrl" in outputs else None)
    aws = {"region_name": plan.burst.region, "endpoint_url": aws_endpoint}
    autoscaling = boto3.client("autoscaling", **aws)
    asg = AsgActuator(group, plan.burst.max_nodes, autoscaling)
    types = sorted(fleet.instance_types)
    # Every node reserves the most AWS may bill it against the cap: the group's Spot max price.
    described = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg.group])[
        "AutoScalingGroups"
    ]
    if not described:
        with bad_input():
            raise InputError(
                "--asg", [Problem((), f"no Auto Scaling group {asg.group!r} in {plan.burst.region}")]
            )
    capacity = CapacityModel.from_plan(plan, fleet, group_max_price(described[0], types))
    source: TritonSource | PrometheusSource = (
        TritonSource(TritonMetrics(triton_metrics, model or plan.serving.model))
        if triton_metrics
        else PrometheusSource(PrometheusQuery(prometheus, model or plan.serving.model))
    )
    drainer = interruptions = None
    if queue_url:
        try:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
        drainer = Drainer(k8s.CoreV1Api())
    controller = Controller(
        policy=Gpufleet(capacity, peaks=known_peaks),
        source=source,
        prices=SpotPrices(boto3.client("ec2", **aws), types),
        asg=asg,
        pulumi=pulumi,
        replica_rps=replica_rps,
        drainer=drainer,
        inflight=(
            inflight_by_instance(source.query, drainer)
            if drainer is not None and isinstance(source, PrometheusSource)
            else dict
        ),
    )
    if queue_url and drainer is not None:
        # Warnings are only acted on from this account and region, for this group's instances.
        account = str(boto3.client("sts", **aws).get_caller_identity()["Account"])
        interruptions = Interruptions(
            queue=WarningQueue(boto3.client("sqs", **aws), queue_url, wait_s=5),
            drainer=drainer,
            asg=asg,
            replace_for=controller.replacement,
            account=account,
            region=plan.burst.region,
            hook_timeout_s=DRAIN_HEARTBEAT_S,
            workers=max(4, plan.burst.max_nodes),
            on_event=controller.count_interruption,
        )
        interruptions.start()
    start_http_server(metrics_port, addr=metrics_address, registry=controller.registry)
    logging.getLogger("gpufleet.burst").info(
        "controller for %s: metrics on http://%s:%d/metrics, deciding every %.0fs",
        stack,
        metrics_address,
        metrics_port,
        interval,
    )
    step = 0
    try:
        while iterations == 0 or step < iterations:
            started = time.monotonic()
            # Decisions run on wall-clock seconds: announced peaks are given as calendar times.
            controller.step(time.time())
            step += 1
            if iterations == 0 or step < iterations:
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        if interruptions is not None:
            interruptions.stop()

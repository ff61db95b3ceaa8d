"""`gpufleet burst ...`: the burst controller's commands."""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from gpufleet.burst.hardware import NOMINAL_CONTEXT
from gpufleet.burst.policy import KnownPeak
from gpufleet.inventory.load import REPO_ROOT, display, load_inventory, site_file
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.admission import ADMISSION_MAP, GATEWAY_DIR
from gpufleet.plan.site import plan_site
from gpufleet.sim.baselines import POLICY_NAMES
from gpufleet.sim.bounds import BOUND_NAMES, BoundResult
from gpufleet.sim.engine import Result
from gpufleet.sim.scenario import ANNOUNCE_MODES, build_scenario
from gpufleet.sim.trace import Surge, cover, horizon, load_trace, parse_duration, parse_surge

burst_app = typer.Typer(
    help="AWS Spot burst capacity: simulate policies, run the controller.", no_args_is_help=True
)


def _surges(values: list[str], horizon_s: float, boot_s: float) -> list[Surge]:
    if values == ["none"]:
        return []
    if not values:
        # x3 for 20 minutes (or half of what follows the warm-start boot window), in the middle of it.
        duration = min(1200.0, (horizon_s - boot_s) / 2)
        if duration <= 0:
            raise InputError(
                "--hours",
                [
                    Problem(
                        (),
                        f"the horizon ({horizon_s:.0f}s) leaves no room for a surge after the {boot_s:.0f}s boot",
                    )
                ],
            )
        return [Surge(3.0, boot_s + (horizon_s - boot_s - duration) / 2, duration)]
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
    ],
    surge: Annotated[
        list[str] | None,
        typer.Option(
            "--surge",
            help="FACTOR@START:DURATION, e.g. 3@20m:20m; repeatable; 'none' for none "
            "(default: x3 for 20 minutes in the middle of what follows the first boot)",
        ),
    ] = None,
    announce: Annotated[
        str,
        typer.Option(
            "--announce", help=f"what gpufleet's calendar says of the surges: {', '.join(ANNOUNCE_MODES)}"
        ),
    ] = "exact",
    hours: Annotated[
        float | None,
        typer.Option(
            "--hours", help="horizon in hours, the trace replayed end to end (default: its own length)"
        ),
    ] = None,
    boot_budget: Annotated[
        float | None,
        typer.Option("--boot-budget", help="burst boot-to-serve seconds (default: the site's)"),
    ] = None,
    policy: Annotated[str, typer.Option("--policy", help=f"all or one of {', '.join(POLICY_NAMES)}")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="one object per policy and per bound")] = False,
    site: Annotated[
        str, typer.Option("--site", help="site whose serving, hardware and burst settings to model")
    ] = "dc1",
    seed: Annotated[int, typer.Option("--seed", help="seed for tenants, surges, prices and Spot events")] = 0,
) -> None:
    """Replay a trace with surges through the burst controller under each policy, beside the exact bounds."""
    # Imported here: gpufleet.cli imports this module to register the sub-app.
    from gpufleet.cli import bad_input, emit_json, out

    with bad_input():
        names = _policies(policy)
        if announce not in ANNOUNCE_MODES:
            raise InputError(
                "--announce", [Problem((), f"unknown mode {announce!r}; one of {', '.join(ANNOUNCE_MODES)}")]
            )
        if hours is not None and not 0 < hours <= 24:
            raise InputError("--hours", [Problem((), f"must be in (0, 24] (got {hours:g})")])
        if boot_budget is not None and not 0 <= boot_budget <= 7200:
            raise InputError(
                "--boot-budget", [Problem((), f"must be in [0, 7200] seconds (got {boot_budget:g})")]
            )
        loaded = load_trace(trace)
        span = horizon(loaded, hours)
        inv = load_inventory(site)
        source = display(site_file(site))
        boot = boot_budget if boot_budget is not None else _site_boot(inv, source)
        surges = _surges(surge or [], span, boot)
        scenario = build_scenario(
            inv,
            source,
            cover(loaded, span),
            surges,
            horizon_s=span,
            announce=announce,
            boot_budget_s=boot_budget,
            seed=seed,
        )
    results = [scenario.run(name) for name in names]
    # The exact bounds come with every run: what any policy's cost is measured against.
    bounds = [scenario.bound(name) for name in BOUND_NAMES]
    if as_json:
        emit_json([r.summary() for r in results] + [bound_summary(b) for b in bounds])
        return
    c = scenario.capacity
    out.print(
        f"{trace.name}: {len(scenario.arrivals)} requests (x{scenario.weight:.1f} each) over {span / 60:.0f} min; "
        f"surges {', '.join(f'x{s.factor:g} at {s.start_s / 60:.1f} min for {s.duration_s / 60:.1f} min' for s in surges) or 'none'}, "
        f"calendar {announce}; {c.onprem_replicas} on-prem replicas of {scenario.onprem.model} "
        f"({scenario.onprem.nominal_tokens_s(NOMINAL_CONTEXT):,.0f} decode tokens/s each, from the roofline); "
        f"burst {scenario.fleet.model} on {', '.join(scenario.fleet.instance_types)}, <= {c.max_nodes} nodes, "
        f"${c.max_hourly_usd:g}/h cap, {c.boot_to_serve_s:.0f}s boot-to-serve"
    )
    out.print(_table(results, bounds, c.slo_queue_wait_s, scenario.slo_ttft_s))


def bound_summary(b: BoundResult) -> dict[str, object]:
    """A bound in the policies' fields: its minutes are those whose need its plan holds (in the
    capacity model: a bound is not simulated, so it has no wait or TTFT of its own)."""
    minutes = len(b.nodes)
    return {
        **b.summary(),
        "slo_ok_minutes_pct": round(100.0 * (minutes - b.unmet_minutes) / max(minutes, 1), 2),
        "p0_violation_minutes": b.unmet_minutes,
        "slo_violation_minutes": b.unmet_minutes,
        "p99_queue_wait_s": None,
        "p99_ttft_s": None,
        "scale_actions": sum(1 for a, c in zip(b.nodes, b.nodes[1:], strict=False) if a != c),
        "degraded_requests_pct": 0.0,
        "shed_requests_pct": 0.0,
    }


def _site_boot(inv: Inventory, source: str) -> float:
    burst = plan_site(inv).burst
    if burst is None:
        raise InputError(source, [Problem(("site", "burst"), "the site has no burst section to simulate")])
    return float(burst.boot_to_serve_s)


def _table(results: list[Result], bounds: list[BoundResult], slo_s: float, ttft_s: float) -> Table:
    table = Table(title=f"SLO per minute: p99 queue wait <= {slo_s:g} s and p99 TTFT <= {ttft_s:g} s")
    columns = (
        "policy",
        "SLO ok %",
        "P0 viol. min",
        "viol. min",
        "p99 wait s",
        "p99 TTFT s",
        "GPU-h",
        "$",
        "cap viol.",
        "actions",
    )
    for column in columns:
        table.add_column(
            column, justify="left" if column == "policy" else "right", no_wrap=column == "policy"
        )
    for r in results:
        table.add_row(
            r.policy,
            f"{r.slo_ok_minutes_pct:.1f}",
            str(r.p0_violation_minutes),
            str(r.slo_violation_minutes),
            f"{r.p99_queue_wait_s:.2f}",
            f"{r.p99_ttft_s:.2f}",
            f"{r.gpu_hours:.1f}",
            f"{r.cost_usd:.2f}",
            str(r.cap_violations),
            str(r.scale_actions),
        )
    for b in bounds:
        plan = math.isfinite(b.cost_usd)  # HiGHS may stop before it has any plan
        gpu_hours, cost = (f"{b.gpu_hours:.1f}", f"{b.cost_usd:.2f}") if plan else ("-", "-")
        table.add_row(b.label(), "-", "-", "-", "-", "-", gpu_hours, cost, "0", "-")
    return table


_URL = re.compile(r"https?://[^\s/?#@]+(/\S*)?")
# A Triton model is a folder of the model repository; the name goes into PromQL between quotes.
_MODEL = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_INTERVAL_S = 3600.0
T = TypeVar("T")


def _refuse(option: str, message: str) -> InputError:
    return InputError(option, [Problem((), message)])


def check_run_values(
    replica_rps: float,
    interval: float,
    metrics_port: int,
    metrics_address: str,
    urls: dict[str, str | None],
    model: str | None,
    gateway_admin: list[str],
    admission_map: str,
) -> None:
    """What Typer's types let through for `burst run` and the loop would only meet later (a NaN
    or infinite rate, a port out of range, a URL without a scheme): refused before anything runs."""
    if not math.isfinite(replica_rps):
        raise _refuse("--replica-rps", f"must be a finite number of requests/s (got {replica_rps:g})")
    if not 1.0 <= interval <= MAX_INTERVAL_S:
        raise _refuse("--interval", f"must be in [1, {MAX_INTERVAL_S:.0f}] seconds (got {interval:g})")
    if not 1 <= metrics_port <= 65535:
        raise _refuse("--metrics-port", f"must be a TCP port, 1 to 65535 (got {metrics_port})")
    for option, url in urls.items():
        if url is not None and not _URL.fullmatch(url):
            raise _refuse(option, f"not an http:// or https:// URL (got {url!r})")
    if model is not None and not _MODEL.fullmatch(model):
        raise _refuse("--model", f"not a Triton model name (1 to 128 of A-Za-z0-9_.-; got {model!r})")
    for address in gateway_admin:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise _refuse("--gateway-admin", f"not HOST:PORT (got {address!r})")
    if not admission_map or any(c.isspace() or c == ";" for c in admission_map):
        # It is sent inside HAProxy runtime commands, where `;` starts another command.
        raise _refuse("--admission-map", f"a file path without spaces or ';' (got {admission_map!r})")
    try:
        socket.getaddrinfo(metrics_address, metrics_port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _refuse("--metrics-address", f"cannot resolve {metrics_address!r}: {exc}") from None
    try:
        with socket.create_server((metrics_address, metrics_port)):
            pass
    except (OSError, OverflowError) as exc:
        raise _refuse("--metrics-port", f"cannot listen on {metrics_address}:{metrics_port}: {exc}") from None


def stack_output(
    outputs: dict[str, object], key: str, option: str, stack: str, url: bool = False
) -> str | None:
    """One of the burst stack's outputs as the name or URL it must be; None when it exports none."""
    if key not in outputs:
        return None
    value = outputs[key]
    if not isinstance(value, str) or not value or (url and not _URL.fullmatch(value)):
        kind = "an http(s) URL" if url else "a non-empty name"
        raise _refuse(option, f"not given, and stack {stack}'s output {key} is not {kind} (got {value!r})")
    return value


def at_start(option: str, what: str, call: Callable[[], T]) -> T:
    """A call the controller needs before its first step (AWS, Kubernetes): its failure is one line."""
    from kubernetes.config import ConfigException

    from gpufleet.burst.actuate import AWS_ERRORS

    errors: tuple[type[Exception], ...] = (*AWS_ERRORS, ConfigException, OSError, ValueError, TypeError)
    try:
        return call()
    except errors as exc:
        message = " ".join(str(exc).split())
        raise _refuse(option, f"{what}: {message}") from None


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
    gateway_admin: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway-admin",
            help="an admission gateway's runtime API, HOST:PORT (a headless Service name reaches "
            "every replica); while burst capacity boots they shed P2 and hold P1 back; repeatable",
        ),
    ] = None,
    admission_map: Annotated[
        str, typer.Option("--admission-map", help="the admission map's file as the gateways load it")
    ] = f"{GATEWAY_DIR}/{ADMISSION_MAP}",
    peak: Annotated[
        list[str] | None,
        typer.Option(
            "--peak",
            help="an announced peak, FACTOR@START+DURATION, START in UTC: 3@2026-11-27T18:00+20m; repeatable",
        ),
    ] = None,
    degrade: Annotated[
        bool,
        typer.Option(
            "--degrade",
            help="move on-prem replicas to the burst model for P1/P2 while capacity boots (lever 1): "
            "the site's serving workloads, named from the inventory, scaled through the Kubernetes API",
        ),
    ] = False,
) -> None:
    """The burst controller: reads the load signal, decides, and declares burstNodes on the stack."""
    # Imported here: gpufleet.cli imports this module to register the sub-app.
    import boto3  # type: ignore[import-untyped]
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from prometheus_client import start_http_server
    from rich.logging import RichHandler

    from gpufleet.burst.actuate import ActuationError, AsgActuator, GatewayAdmission, PulumiActuator
    from gpufleet.burst.controller import (
        Controller,
        PrometheusSource,
        SpotPrices,
        TritonSource,
        group_max_price,
        inflight_by_instance,
    )
    from gpufleet.burst.degrade import KubernetesDegrader
    from gpufleet.burst.interrupt import Drainer, Interruptions, WarningQueue
    from gpufleet.burst.policy import CapacityModel, Gpufleet
    from gpufleet.burst.signal import PrometheusQuery, TritonMetrics
    from gpufleet.cli import bad_input
    from gpufleet.inventory.stacks import load_stack
    from gpufleet.plan.aws import DRAIN_HEARTBEAT_S, plan_fleet
    from gpufleet.plan.degrade import plan_degrade
    from gpufleet.plan.site import plan_site

    with bad_input():
        check_run_values(
            replica_rps,
            interval,
            metrics_port,
            metrics_address,
            {
                "--aws-endpoint": aws_endpoint,
                "--prometheus": prometheus,
                "--triton-metrics": triton_metrics,
                "--interruption-queue": queue_url,
            },
            model,
            gateway_admin or [],
            admission_map,
        )
        known_peaks = tuple(parse_peak(text) for text in peak or [])
        # The stack file the ups will change: --work-dir's, checked as Pulumi will read it.
        loaded = load_stack(stack, work_dir / "stacks")
        source_file = display(work_dir / "stacks" / f"Pulumi.{stack}.yaml")
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
        degrade_plan = plan_degrade(loaded.inventory, plan, fleet) if degrade else None
        if degrade and degrade_plan is None:
            raise InputError(
                "--degrade",
                [
                    Problem(
                        (),
                        f"site {plan.site} has nothing to degrade to: its burst fleet serves the site's own "
                        "model, or a model whose tensor parallelism does not divide a replica's GPUs",
                    )
                ],
            )
    logging.basicConfig(level=logging.INFO, handlers=[RichHandler(show_path=False)], format="%(message)s")
    pulumi = PulumiActuator(stack=stack, work_dir=work_dir, pulumi_root=pulumi_root)
    if group is None or queue_url is None:
        # What the SpotBurst component created, as the burst stack's last up exported it.
        with bad_input():
            try:
                outputs = pulumi.outputs()
            except ActuationError as exc:
                raise InputError("--asg", [Problem((), f"not given, and {exc}")]) from None
            group = group or stack_output(outputs, "asgName", "--asg", stack)
            if group is None:
                raise InputError("--asg", [Problem((), f"not given, and stack {stack} exports no asgName")])
            queue_url = queue_url or stack_output(
                outputs, "queueUrl", "--interruption-queue", stack, url=True
            )
    aws = {"region_name": plan.burst.region, "endpoint_url": aws_endpoint}
    # AWS unreachable, or refusing these credentials, before the first step: one line, not a traceback.
    aws_option = "--aws-endpoint" if aws_endpoint else "--asg"
    with bad_input():
        autoscaling = at_start(aws_option, "AWS", lambda: boto3.client("autoscaling", **aws))
        asg = AsgActuator(group, plan.burst.max_nodes, autoscaling)
        # Every node reserves the most AWS may bill it against the cap: the group's Spot max price.
        described = at_start(
            aws_option,
            f"cannot describe Auto Scaling group {group!r}",
            lambda: autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg.group]),
        )["AutoScalingGroups"]
        if not described:
            raise InputError(
                "--asg", [Problem((), f"no Auto Scaling group {asg.group!r} in {plan.burst.region}")]
            )
    types = sorted(fleet.instance_types)
    capacity = CapacityModel.from_plan(plan, fleet, group_max_price(described[0], types))
    source: TritonSource | PrometheusSource = (
        TritonSource(TritonMetrics(triton_metrics, model or plan.serving.model))
        if triton_metrics
        else PrometheusSource(PrometheusQuery(prometheus, model or plan.serving.model))
    )
    drainer = interruptions = degrader = None
    if queue_url or degrade_plan is not None:
        try:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            with bad_input():
                at_start(
                    "--interruption-queue" if queue_url else "--degrade",
                    f"{'draining warned nodes' if queue_url else 'degrading'} needs the Kubernetes API "
                    "(no in-cluster account, no kubeconfig)",
                    k8s_config.load_kube_config,
                )
    if queue_url:
        drainer = Drainer(k8s.CoreV1Api())
    if degrade_plan is not None:
        degrader = KubernetesDegrader(degrade_plan, k8s.CustomObjectsApi())
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
        admission=GatewayAdmission(gateway_admin, admission_map) if gateway_admin else None,
        degrade=degrader,
    )
    if queue_url and drainer is not None:
        # Warnings are only acted on from this account and region, for this group's instances.
        with bad_input():
            account = str(
                at_start(
                    aws_option,
                    "cannot tell this account (STS)",
                    lambda: boto3.client("sts", **aws).get_caller_identity(),
                )["Account"]
            )
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
    with bad_input():
        at_start(
            "--metrics-port",
            f"cannot listen on {metrics_address}:{metrics_port}",
            lambda: start_http_server(metrics_port, addr=metrics_address, registry=controller.registry),
        )
    if interruptions is not None:
        interruptions.start()
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

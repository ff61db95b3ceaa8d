"""The controller end to end: a real Triton's metrics under load, moto's AWS (ASG, Spot prices),
and the Automation API on a fake `pulumi` (see test_burst_pulumi for what the fake answers).

The fake CLI records the declared burstNodes and, as the SpotBurst component does in a real up,
sets the moto group's desired capacity to it: the next step sees the instances the last one
declared.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from typer.testing import CliRunner

from gpufleet.burst.actuate import AsgActuator, PulumiActuator
from gpufleet.burst.controller import Controller, SpotPrices, TritonSource, group_max_price
from gpufleet.burst.interrupt import INTERRUPTION, REBALANCE, Drainer, Interruptions, WarningQueue
from gpufleet.burst.policy import CapacityModel, Gpufleet
from gpufleet.burst.signal import TritonMetrics
from gpufleet.cli import app
from gpufleet.serving.tritonserver import free_port, tritonserver
from tests.integration.test_burst_aws import (
    ACCOUNT,
    GROUP,
    REGION,
    _aws,
    _event,
    _hook_event,
    _instances,
    _node,
)
from tests.integration.test_burst_pulumi import STACK, upped_nodes
from tests.integration.test_burst_signal_prometheus import _scraped, prometheus
from tests.integration.test_burst_signal_triton import SERVICE_S, _infer, _repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("triton")
    with tritonserver(_repository(root / "repo"), root / "work") as server:
        _infer(server.url)
        yield server


def _capacity(onprem: int, **kw: float) -> CapacityModel:
    return CapacityModel(
        onprem_replicas=onprem,
        replicas_per_node=1,
        max_nodes=6,
        max_hourly_usd=1000.0,
        boot_to_serve_s=60.0,
        slo_queue_wait_s=2.0,
        **kw,
    )


def _controller(
    policy: Gpufleet,
    metrics: TritonMetrics,
    types: list[str],
    moto_url: str,
    asg: Any,
    project: Path,
    pulumi_root: Path,
    **extra: Any,
) -> Controller:
    """A controller on this Triton's metrics, moto's AWS and the fake pulumi."""
    return Controller(
        policy=policy,
        source=TritonSource(metrics),
        prices=SpotPrices(_aws("ec2", moto_url), types),
        asg=AsgActuator(GROUP, policy.model.max_nodes, asg),
        pulumi=PulumiActuator(
            stack=STACK,
            work_dir=project,
            pulumi_root=pulumi_root,
            lock_dir=project / ".locks",
            env={"FAKE_PULUMI_ASG_URL": moto_url, "FAKE_PULUMI_ASG_GROUP": GROUP},
        ),
        **extra,
    )


def test_controller_scales_out_under_load_and_in_when_quiet(
    triton: Any,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    controller = _controller(
        Gpufleet(_capacity(0, target_utilisation=0.25), average_s=1.0, quiet_s=1.0, cooldown_s=0.0),
        TritonMetrics(triton.metrics_url, "sleepy"),
        ["p5en.48xlarge", "p5e.48xlarge"],
        moto_url,
        asg,
        project,
        pulumi_root,
        replica_rps=1 / SERVICE_S,
    )
    assert controller.step(time.monotonic()) is None  # the first scrape only sets the baseline

    stop = threading.Event()

    def load() -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            while not stop.is_set():
                list(pool.map(lambda _: _infer(triton.url), range(16)))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(2.0)
        busy = controller.step(time.monotonic())
        time.sleep(1.5)
        still_busy = controller.step(time.monotonic())
    finally:
        stop.set()
        worker.join(timeout=60)
    assert busy is not None
    # Eight clients keep the one instance busy (about one replica of load, as this step measured
    # it); at 25% per replica of one node that needs ceil(load / 0.25) nodes (4 at a load of
    # exactly 1, 5 just above it), and the group has two: the rest are launched, declared on the stack.
    measured = re.match(r"load (\d+\.\d+) replicas.* -> (\d+\.\d+) replicas on burst", busy.reason)
    assert measured is not None, busy.reason
    load, need = float(measured.group(1)), float(measured.group(2))  # as printed, to 2 decimals
    assert 0.5 < load < 1.2 and need == pytest.approx(load / 0.25, abs=0.03)
    nodes = busy.desired
    assert math.ceil(need - 0.006) <= nodes <= math.ceil(need + 0.006), busy.reason
    assert len(busy.launch) == nodes - 2 > 0, busy.reason
    # The up resized the group; the next step sees the new instances and orders nothing more.
    assert still_busy is not None and not still_busy.acts, still_busy.reason
    assert upped_nodes(pulumi_root) == [str(nodes)]
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == nodes and len(group["Instances"]) == nodes
    busy_group = group
    text = generate_latest(controller.registry).decode()
    assert 'gpufleet_burst_decisions_total{action="scale_up"} 1.0' in text
    assert f"gpufleet_burst_desired_nodes {float(nodes)}" in text

    # Idle: the quiet window passes and every burst node goes, the busiest last.
    drained: list[str] = []
    for _ in range(4):
        time.sleep(1.5)
        quiet = controller.step(time.monotonic())
        assert quiet is not None and not quiet.launch, quiet.reason
        drained += quiet.drain
        group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
        if group["DesiredCapacity"] == 0:
            break
    assert sorted(drained) == sorted(i["InstanceId"] for i in busy_group["Instances"])
    assert group["DesiredCapacity"] == 0, "the chosen instances were retired from the group"
    assert upped_nodes(pulumi_root)[-1] == "0"
    text = generate_latest(controller.registry).decode()
    assert 'gpufleet_burst_decisions_total{action="scale_in"}' in text


@pytest.mark.parametrize("signal", ["--triton-metrics", "--prometheus"])
def test_burst_run_command_serves_metrics_and_logs_each_decision(
    signal: str,
    caplog: pytest.LogCaptureFixture,
    triton: Any,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        if signal == "--prometheus":
            # A real Prometheus scraping the Triton: the controller's PromQL runs on it.
            source = stack.enter_context(prometheus(f"127.0.0.1:{triton.metrics_port}", tmp_path / "prom"))
            # Two scrapes make a rate.
            _scraped(source, 'sum(rate(nv_inference_request_success{model="sleepy"}[1m]))', 0.0)
        else:
            source = triton.metrics_url
        _run_command(signal, source, caplog, asg, moto_url, project, pulumi_root)


def _run_command(
    signal: str,
    source: str,
    caplog: pytest.LogCaptureFixture,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="gpufleet.burst")
    # The group comes from the stack's outputs, as the SpotBurst component exports it.
    (pulumi_root.parent / "state" / "outputs.json").write_text(json.dumps({"asgName": GROUP}))
    port = free_port()
    scraped: list[str] = []

    def scrape() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not scraped:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    scraped.append(resp.read().decode())
            except OSError:
                time.sleep(0.1)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    result = CliRunner().invoke(
        app,
        [
            "burst",
            "run",
            STACK,
            signal,
            source,
            "--model",
            "sleepy",
            "--aws-endpoint",
            moto_url,
            "--metrics-port",
            str(port),
            "--iterations",
            "2",
            "--interval",
            "1",
            "--pulumi-root",
            str(pulumi_root),
            "--work-dir",
            str(project),
        ],
        env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "COLUMNS": "200"},
    )
    scraper.join(timeout=40)
    assert result.exit_code == 0, result.output
    # The site model is dc1: the trace-free idle Triton is far below its 4 on-prem replicas.
    assert "decision hold: 2 -> 2 burst nodes" in caplog.text
    assert scraped and "gpufleet_burst_cap_usd_per_hour 400.0" in scraped[0]


def test_a_failing_signal_holds_the_fleet(
    triton: Any,
    asg: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    controller = _controller(
        Gpufleet(_capacity(1)),
        TritonMetrics(triton.metrics_url, "not-served"),
        ["p5en.48xlarge"],
        moto_url,
        asg,
        project,
        pulumi_root,
        replica_rps=50.0,
    )
    assert controller.step(time.monotonic()) is None
    assert "gpufleet_burst_signal_errors_total 1.0" in generate_latest(controller.registry).decode()
    assert upped_nodes(pulumi_root) == []


def test_burst_run_without_a_deployed_group_exits_2(project: Path, pulumi_root: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "burst",
            "run",
            STACK,
            "--pulumi-root",
            str(pulumi_root),
            "--work-dir",
            str(project),
            "--iterations",
            "1",
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == f"--asg: not given, and stack {STACK} exports no asgName"


def _interruptions(controller: Controller, kube: Any, moto_url: str) -> tuple[Interruptions, Any, str]:
    sqs = _aws("sqs", moto_url)
    queue_url = sqs.create_queue(QueueName=f"warnings-{time.monotonic_ns()}")["QueueUrl"]
    consumer = Interruptions(
        queue=WarningQueue(sqs, queue_url, wait_s=0),
        drainer=Drainer(kube.core, poll_s=0.1),
        asg=controller.asg,
        replace_for=controller.replacement,
        account=ACCOUNT,
        region=REGION,
        on_event=controller.count_interruption,
    )
    return consumer, sqs, queue_url


def _drain_queue(consumer: Interruptions) -> list[Any]:
    """Poll until SQS has nothing left to deliver; the handled warnings' results."""
    results = []
    for _ in range(20):
        futures = consumer.poll()
        results += [f.result(timeout=60) for f in futures]
        if not futures and not consumer.queue.sqs.receive_message(
            QueueUrl=consumer.queue.queue_url, WaitTimeSeconds=0, VisibilityTimeout=0
        ).get("Messages"):
            break
    return results


def _desired(asg: Any) -> int:
    return int(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0][
            "DesiredCapacity"
        ]
    )


def test_spot_warnings_are_checked_deduplicated_and_replaced_once(
    triton: Any,
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    """A rebalance delivered three times (and once more under a new id, then its interruption)
    replaces once; other accounts, regions, groups and instances, and stale warnings, do nothing."""
    controller = _controller(
        Gpufleet(_capacity(4)),
        TritonMetrics(triton.metrics_url, "sleepy"),
        ["p5en.48xlarge", "p5e.48xlarge"],
        moto_url,
        asg,
        project,
        pulumi_root,
        replica_rps=50.0,
    )
    consumer, sqs, queue_url = _interruptions(controller, kube, moto_url)
    a, b = _instances(asg)
    _node(kube, "na", a)
    _node(kube, "nb", b)
    kube.add_pod("serving", "triton-a", "na")
    kube.add_pod("serving", "triton-b", "nb")
    kube.calls.clear()
    now = datetime.now(UTC)
    bodies = [
        *[_event(REBALANCE, a, now, event_id="rebalance-a")] * 3,
        _event(REBALANCE, a, now, event_id="rebalance-a-again"),
        _event(REBALANCE, b, now, event_id="foreign-account", account="210987654321"),
        _event(INTERRUPTION, b, now, event_id="foreign-region", region="eu-west-1"),
        _event(INTERRUPTION, "i-0000000000000000f", now, event_id="not-ours"),
        _event(INTERRUPTION, b, now - timedelta(seconds=300), event_id="stale"),
        _hook_event(b, "someone-elses-group", now, event_id="other-group"),
        "{not json",
        json.dumps({"source": "aws.health", "detail-type": "AWS Health Event", "detail": {}}),
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    handled = _drain_queue(consumer)
    assert [(h.warning.kind, h.warning.instance_id) for h in handled] == [("rebalance", a)]
    assert _desired(asg) == 3, "one replacement for one instance, whatever the deliveries"
    assert handled[0].replacement.startswith("desired capacity raised to 3")
    # A rebalance cordons and evicts nothing; node b was never touched.
    assert [c for c in kube.calls if c[0] != "GET"] == [
        ("PATCH", "/api/v1/nodes/na", {"spec": {"unschedulable": True}})
    ]
    # Its interruption then drains and retires it, with no second replacement.
    sqs.send_message(QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, a, now, event_id="interrupt-a"))
    handled = _drain_queue(consumer)
    assert [h.replacement for h in handled] == ["already replaced"]
    assert handled[0].drain is not None and handled[0].drain.evicted == ("serving/triton-a",)
    assert _desired(asg) == 2 and a not in _instances(asg)
    text = generate_latest(controller.registry).decode()
    assert 'gpufleet_burst_interruptions_total{kind="rebalance",outcome="handled"} 1.0' in text
    assert 'gpufleet_burst_interruptions_total{kind="interruption",outcome="handled"} 1.0' in text
    ignored = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gpufleet_burst_interruptions_total") and 'outcome="ignored"' in line
    )
    assert ignored == len(bodies) - 1
    consumer.stop()


def test_replacement_stays_under_the_cap(
    triton: Any,
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    types = ["p5en.48xlarge", "p5e.48xlarge"]
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    reserve = group_max_price(group, types)
    # Room for the two nodes the group has, not for a third while the warned one still bills.
    capacity = replace(_capacity(4), max_hourly_usd=2.5 * reserve)
    controller = _controller(
        Gpufleet(capacity),
        TritonMetrics(triton.metrics_url, "sleepy"),
        types,
        moto_url,
        asg,
        project,
        pulumi_root,
        replica_rps=50.0,
    )
    consumer, sqs, queue_url = _interruptions(controller, kube, moto_url)
    a, b = _instances(asg)
    _node(kube, "na", a)
    _node(kube, "nb", b)
    kube.add_pod("serving", "triton-a", "na")
    sqs.send_message(QueueUrl=queue_url, MessageBody=_event(REBALANCE, a, datetime.now(UTC), event_id="r-a"))
    (handled,) = _drain_queue(consumer)
    assert handled.replacement.startswith("no replacement") and "cap" in handled.replacement
    assert _desired(asg) == 2
    consumer.stop()


def test_warnings_handled_at_once_share_the_room_under_the_cap(
    triton: Any,
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    """Two warnings in one batch, room for one more node: one replacement, not two (the fault
    injection test found two workers planning on the same view)."""
    types = ["p5en.48xlarge", "p5e.48xlarge"]
    reserve = group_max_price(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0], types
    )
    capacity = replace(_capacity(4), max_hourly_usd=3.5 * reserve)
    controller = _controller(
        Gpufleet(capacity),
        TritonMetrics(triton.metrics_url, "sleepy"),
        types,
        moto_url,
        asg,
        project,
        pulumi_root,
        replica_rps=50.0,
    )
    consumer, sqs, queue_url = _interruptions(controller, kube, moto_url)
    a, b = _instances(asg)
    now = datetime.now(UTC)
    for instance, event_id in ((a, "r-a"), (b, "r-b")):
        sqs.send_message(QueueUrl=queue_url, MessageBody=_event(REBALANCE, instance, now, event_id=event_id))
    handled = _drain_queue(consumer)
    assert sorted(h.replacement.split(":")[0] for h in handled) == [
        "desired capacity raised to 3",
        "no replacement",
    ]
    assert _desired(asg) == 3
    consumer.stop()


def test_drains_start_at_once_while_an_up_runs_and_run_in_parallel(
    triton: Any,
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
) -> None:
    controller = _controller(
        Gpufleet(_capacity(4)),
        TritonMetrics(triton.metrics_url, "sleepy"),
        ["p5en.48xlarge"],
        moto_url,
        asg,
        project,
        pulumi_root,
        replica_rps=50.0,
    )
    controller.pulumi.env["FAKE_PULUMI_UP_SECONDS"] = "12"
    consumer, sqs, queue_url = _interruptions(controller, kube, moto_url)
    a, b = _instances(asg)
    _node(kube, "na", a)
    _node(kube, "nb", b)
    # Pods the recorded disruption budget keeps (minAvailable 2 of these two): each drain runs
    # until its own deadline.
    kube.add_pod("default", "serving-a", "na", labels={"app": "serving"})
    kube.add_pod("default", "serving-b", "nb", labels={"app": "serving"})
    up = threading.Thread(target=controller.pulumi.set_burst_nodes, args=(2,))
    up.start()
    deadline = time.monotonic() + 30
    while not any(a[0] == "up" for a in _argv_of(pulumi_root)):
        assert time.monotonic() < deadline, "the up never started"
        time.sleep(0.05)
    now = datetime.now(UTC)
    # Warned 84 and 82 s ago: their drains must end 6 and 8 s from now (90 s after each warning).
    sqs.send_message(
        QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, a, now - timedelta(seconds=84), "w-a")
    )
    sqs.send_message(
        QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, b, now - timedelta(seconds=82), "w-b")
    )
    consumer.start()
    received = time.monotonic()
    try:
        while len({path for _, path in kube.stamps if path.startswith("/api/v1/nodes/")}) < 2:
            assert time.monotonic() < received + 10, "both drains must start while the up runs"
            time.sleep(0.05)
        cordoned = time.monotonic()
        assert up.is_alive(), "the up was still running when both drains had started"
        up.join(timeout=60)
    finally:
        consumer.stop()
    assert cordoned - received < 5
    # Both ran against their own deadlines at once: neither waited for the other. The budget
    # answers 429 to each; a drain asks again every poll until its own deadline (b's is 2 s later).
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for stamp, path in kube.stamps:
        if path.endswith("/eviction"):
            first.setdefault(path, stamp)
            last[path] = stamp
    a_path, b_path = (f"/api/v1/namespaces/default/pods/serving-{x}/eviction" for x in "ab")
    assert set(first) == {a_path, b_path}
    assert abs(first[a_path] - first[b_path]) < 3
    assert last[b_path] - last[a_path] > 1, "each drain asked until its own deadline"
    assert time.monotonic() - received < 20


def _argv_of(pulumi_root: Path) -> list[list[str]]:
    path = pulumi_root.parent / "state" / "argv.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_burst_run_consumes_the_interruption_queue_beside_its_steps(
    caplog: pytest.LogCaptureFixture,
    triton: Any,
    asg: Any,
    kube: Any,
    moto_url: str,
    project: Path,
    pulumi_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command wires the consumer: this account (STS), the site's region, the stack's group."""
    caplog.set_level(logging.INFO, logger="gpufleet.burst")
    (pulumi_root.parent / "state" / "outputs.json").write_text(json.dumps({"asgName": GROUP}))
    sqs = _aws("sqs", moto_url)
    queue_url = sqs.create_queue(QueueName=f"run-warnings-{time.monotonic_ns()}")["QueueUrl"]
    doomed = _instances(asg)[0]
    _node(kube, "n1", doomed)
    kube.add_pod("serving", "triton-0", "n1")
    now = datetime.now(UTC)
    sqs.send_message(QueueUrl=queue_url, MessageBody=_event(INTERRUPTION, doomed, now, event_id="run-1"))
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=_event(INTERRUPTION, doomed, now, event_id="run-2", account="999999999999"),
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": kube.core.api_client.configuration.host}}
                ],
                "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    # The kubernetes client reads KUBECONFIG when it is imported, as a process started with it would.
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    result = CliRunner().invoke(
        app,
        [
            "burst",
            "run",
            STACK,
            "--triton-metrics",
            triton.metrics_url,
            "--model",
            "sleepy",
            "--aws-endpoint",
            moto_url,
            "--interruption-queue",
            queue_url,
            "--metrics-port",
            str(free_port()),
            "--iterations",
            "3",
            "--interval",
            "1",
            "--pulumi-root",
            str(pulumi_root),
            "--work-dir",
            str(project),
        ],
        env={
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "COLUMNS": "200",
        },
    )
    assert result.exit_code == 0, result.output
    assert doomed not in _instances(asg), "the warned instance was retired"
    assert kube.pod_names() == [], "and drained first"
    assert f"spot interruption for {doomed} (node n1)" in caplog.text
    assert "account 999999999999 is not 123456789012" in caplog.text
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None

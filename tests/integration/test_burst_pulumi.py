"""The Automation API path on the burst stack, against a fake `pulumi` executable.

The Pulumi CLI cannot be obtained here. The fake below stands at the process boundary the
Automation API drives: it records every argv and answers like the real CLI for the commands a
select + config set + up makes (version check, `stack select`, `config set` written into the
stack's YAML as the CLI writes it, `up`, `stack output --json`, `stack history --json`), including
the DIY backend's lock-conflict message and a `stack output` the backend fails once (`fail_outputs`). Anything else fails loudly, so a change in what the
Automation API sends shows here. Given FAKE_PULUMI_ASG_URL and FAKE_PULUMI_ASG_GROUP (moto's
server and a group in it), `up` also sets that group's desired capacity to burstNodes, as the
SpotBurst component does, so the controller test runs the whole loop.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from gpufleet.burst.actuate import BURST_NODES_KEY, ActuationError, PulumiActuator, StackBusy, StaleLock
from gpufleet.inventory.load import validate
from gpufleet.model.stack import GpufleetConfig
from tests.conftest import REPO

pytestmark = pytest.mark.integration

STACK = "burst-prod"

FAKE_PULUMI = r"""
import json, os, sys, time
from datetime import datetime, timezone
import yaml

# <root>/bin/pulumi keeps its state in <root>/../state: the version check runs before any
# workspace environment is passed.
state = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "state")
argv = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open(os.path.join(state, "argv.jsonl"), "a") as log:
    log.write(json.dumps(argv) + "\n")


def flag(name):
    return argv[argv.index(name) + 1] if name in argv else None


def stack_file(stack):
    project = yaml.safe_load(open("Pulumi.yaml"))
    return os.path.join(project.get("stackConfigDir", "."), f"Pulumi.{stack}.yaml")


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


stack = flag("--stack")
locks = os.path.join(state, "locks")
os.makedirs(locks, exist_ok=True)
if argv == ["version"]:
    print("v3.140.0")
elif argv[:2] == ["stack", "select"]:
    if not os.path.exists(stack_file(stack)):
        sys.stderr.write(f"error: no stack named '{stack}' found\n")
        sys.exit(255)
elif argv[:2] == ["config", "get"]:
    value = (yaml.safe_load(open(stack_file(stack))) or {}).get("config", {}).get(argv[2])
    if value is None:
        sys.stderr.write(f"error: configuration key '{argv[2]}' not found for stack '{stack}'\n")
        sys.exit(255)
    print(json.dumps({"value": str(value), "objectValue": value, "secret": False}))
elif argv[:2] == ["config", "rm"]:
    path = stack_file(stack)
    doc = yaml.safe_load(open(path)) or {}
    doc.get("config", {}).pop(argv[2], None)
    yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
elif argv[:2] == ["config", "set"]:
    key, value = argv[2], argv[argv.index("--") + 1]
    path = stack_file(stack)
    doc = yaml.safe_load(open(path)) or {}
    # The CLI stores plaintext config as strings.
    doc.setdefault("config", {})[key] = str(value)
    yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
elif argv[0] == "up":
    assert argv[1:3] == ["--yes", "--skip-preview"] and flag("--exec-kind") == "auto.local", argv
    lock = os.path.join(locks, f"{stack}.json")
    if os.path.exists(lock):
        sys.stderr.write(
            "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
            "or delete the lock file with `pulumi cancel`.\n"
            f"  file://{lock}: created by ops@bastion-1 (pid 4242) at 2026-11-23T20:01:02Z\n"
        )
        sys.exit(255)
    failing = os.path.join(state, "fail_ups")
    left = int(open(failing).read() or 0) if os.path.exists(failing) else 0
    if left > 0:
        # An ordinary failed update (a provider error): the CLI's message, exit 255, nothing applied.
        open(failing, "w").write(str(left - 1))
        print(f"Updating ({stack})\n")
        print(" ~  aws:autoscaling:Group burst-prod-spot updating (0s) [diff: ~desiredCapacity]")
        sys.stderr.write(
            "error: update failed\n"
            "  aws:autoscaling:Group (burst-prod-spot):\n"
            "    error: updating Auto Scaling Group (burst-prod-spot): operation error Auto Scaling: "
            "UpdateAutoScalingGroup, https response error StatusCode: 400, api error Throttling: Rate exceeded\n"
        )
        sys.exit(255)
    open(lock, "w").write(json.dumps({"pid": os.getpid()}))
    start = time.time()
    nodes = yaml.safe_load(open(stack_file(stack)))["config"].get("gpufleet:burstNodes")
    time.sleep(float(os.environ.get("FAKE_PULUMI_UP_SECONDS", "0.2")))
    if os.environ.get("FAKE_PULUMI_ASG_URL"):
        # What the SpotBurst component does in a real up: the group's desired capacity follows.
        import boto3
        boto3.client(
            "autoscaling", region_name="us-east-1", endpoint_url=os.environ["FAKE_PULUMI_ASG_URL"],
            aws_access_key_id="testing", aws_secret_access_key="testing",
        ).update_auto_scaling_group(
            AutoScalingGroupName=os.environ["FAKE_PULUMI_ASG_GROUP"], DesiredCapacity=int(nodes)
        )
    os.remove(lock)
    with open(os.path.join(state, "ups.jsonl"), "a") as ups:
        ups.write(json.dumps({"stack": stack, "nodes": nodes, "start": start, "end": time.time()}) + "\n")
    print(f"Updating ({stack})\n")
    print(f" ~  aws:autoscaling:Group {stack}-spot update [diff: ~desiredCapacity]")
    print("Resources:\n    ~ 1 updated\n    12 unchanged\n\nDuration: 1s")
    history = {"kind": "update", "startTime": now(), "endTime": now(), "message": flag("--message") or "", "environment": {"exec.kind": "auto.local"},
               "config": {}, "result": "succeeded", "version": 7, "resourceChanges": {"same": 12, "update": 1}}
    open(os.path.join(state, "history.json"), "w").write(json.dumps([history]))
elif argv[:3] == ["stack", "output", "--json"]:
    failing = os.path.join(state, "fail_outputs")
    if os.path.exists(failing):
        # The backend unreachable for a moment (Pulumi Cloud's 5xx, a DIY bucket's timeout).
        os.remove(failing)
        sys.stderr.write("error: could not get stack outputs: 502 Bad Gateway\n")
        sys.exit(255)
    path = os.path.join(state, "outputs.json")
    print(open(path).read() if os.path.exists(path) else "{}")
elif argv[:3] == ["stack", "history", "--json"]:
    path = os.path.join(state, "history.json")
    print(open(path).read() if os.path.exists(path) else "[]")
else:
    sys.stderr.write(f"fake pulumi: unsupported command {argv}\n")
    sys.exit(2)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    (work / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", work / "Pulumi.yaml")
    shutil.copy(REPO / "stacks" / f"Pulumi.{STACK}.yaml", work / "stacks" / f"Pulumi.{STACK}.yaml")
    return work


@pytest.fixture
def pulumi_root(tmp_path: Path) -> Path:
    root = tmp_path / "pulumi"
    (root / "bin").mkdir(parents=True)
    binary = root / "bin" / "pulumi"
    binary.write_text(f"#!{sys.executable}\n{FAKE_PULUMI}")
    binary.chmod(0o755)
    (tmp_path / "state").mkdir()
    return root


def actuator(project: Path, pulumi_root: Path, **kw: object) -> PulumiActuator:
    args: dict[str, object] = {
        "stack": STACK,
        "work_dir": project,
        "pulumi_root": pulumi_root,
        "lock_dir": pulumi_root.parent / "locks",
    }
    args.update(kw)
    return PulumiActuator(**args)  # type: ignore[arg-type]


def _argv(pulumi_root: Path) -> list[list[str]]:
    lines = (pulumi_root.parent / "state" / "argv.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _ups(pulumi_root: Path) -> list[dict[str, object]]:
    """Every `pulumi up` the fake pulumi ran, in order (its record of each)."""
    path = pulumi_root.parent / "state" / "ups.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def upped_nodes(pulumi_root: Path) -> list[str]:
    """The burstNodes each `pulumi up` applied, in order."""
    return [str(up["nodes"]) for up in _ups(pulumi_root)]


def test_sets_burst_nodes_in_stack_config_and_runs_up(project: Path, pulumi_root: Path) -> None:
    output: list[str] = []
    applied = actuator(project, pulumi_root, on_output=output.append).set_burst_nodes(3)
    assert applied.burst_nodes == 3
    assert applied.summary == "12 same, 1 update"
    commands = [a[:2] for a in _argv(pulumi_root)]
    assert commands == [
        ["version"],
        ["stack", "select"],
        ["config", "get"],
        ["config", "set"],
        ["up", "--yes"],
        ["stack", "output"],
        ["stack", "output"],
        ["stack", "history"],
    ]
    config_set = _argv(pulumi_root)[3]
    assert config_set[2] == BURST_NODES_KEY and config_set[-1] == "3" and "--plaintext" in config_set
    # The stack file now declares the capacity, and it still validates as the stack model.
    doc = yaml.safe_load((project / "stacks" / f"Pulumi.{STACK}.yaml").read_text())
    config = validate(
        GpufleetConfig, {k: v for k, v in doc["config"].items() if k.startswith("gpufleet:")}, "x"
    )
    assert config.burst_nodes == 3
    assert _ups(pulumi_root)[0]["nodes"] == "3"
    assert any("desiredCapacity" in line for line in output)


def test_a_lock_held_by_another_update_is_waited_out(project: Path, pulumi_root: Path) -> None:
    lock = pulumi_root.parent / "state" / "locks" / f"{STACK}.json"
    lock.parent.mkdir(parents=True)
    lock.write_text("{}")
    releaser = threading.Timer(2.0, lock.unlink)
    releaser.start()
    try:
        applied = actuator(project, pulumi_root, lock_timeout_s=30, backoff_max_s=1).set_burst_nodes(2)
    finally:
        releaser.cancel()
    assert applied.burst_nodes == 2
    ups = [a for a in _argv(pulumi_root) if a[0] == "up"]
    assert len(ups) >= 2, "the conflicting up was retried"
    assert len(_ups(pulumi_root)) == 1


def test_a_stale_lock_is_reported_with_the_command_to_clear_it(project: Path, pulumi_root: Path) -> None:
    lock = pulumi_root.parent / "state" / "locks" / f"{STACK}.json"
    lock.parent.mkdir(parents=True)
    lock.write_text("{}")
    with pytest.raises(StaleLock) as caught:
        actuator(project, pulumi_root, lock_timeout_s=2, backoff_max_s=0.5).set_burst_nodes(4)
    message = str(caught.value)
    assert f"pulumi cancel --yes --stack {STACK}" in message
    assert "created by ops@bastion-1 (pid 4242)" in message
    assert _ups(pulumi_root) == []


def test_never_two_operations_on_one_stack(project: Path, pulumi_root: Path) -> None:
    slow = actuator(project, pulumi_root, env={"FAKE_PULUMI_UP_SECONDS": "2"})
    first = threading.Thread(target=slow.set_burst_nodes, args=(5,))
    first.start()
    log = pulumi_root.parent / "state" / "argv.jsonl"
    deadline = time.monotonic() + 30
    while not (log.exists() and any(a[0] == "up" for a in _argv(pulumi_root))):
        assert time.monotonic() < deadline, "the first up never started"
        time.sleep(0.05)
    # While that up runs, a second decision for the same stack is refused, not queued behind it.
    with pytest.raises(StackBusy, match="another burst operation"):
        slow.set_burst_nodes(6)
    first.join(timeout=60)
    assert [u["nodes"] for u in _ups(pulumi_root)] == ["5"]
    assert sum(1 for a in _argv(pulumi_root) if a[0] == "up") == 1


def test_file_lock_refuses_a_second_process(project: Path, pulumi_root: Path, tmp_path: Path) -> None:
    import fcntl

    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    handle = (lock_dir / f"{STACK}.lock").open("a+")
    handle.write("pid 999\n")
    handle.flush()
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(StackBusy, match=r"another gpufleet process holds .* \(pid 999\)"):
            actuator(project, pulumi_root, lock_dir=lock_dir).set_burst_nodes(1)
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
    assert _ups(pulumi_root) == []


def test_an_unknown_stack_is_reported(project: Path, pulumi_root: Path) -> None:
    with pytest.raises(
        ActuationError, match="stack nope: cannot declare 1 burst nodes: error: no stack named 'nope'"
    ):
        actuator(project, pulumi_root, stack="nope").set_burst_nodes(1)


def _declared(project: Path) -> object:
    return yaml.safe_load((project / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"].get(
        BURST_NODES_KEY
    )


def test_a_failed_up_leaves_the_stack_file_as_it_was(project: Path, pulumi_root: Path) -> None:
    before = _declared(project)
    (pulumi_root.parent / "state" / "fail_ups").write_text("1")
    with pytest.raises(
        ActuationError, match=r"pulumi up for 5 burst nodes failed: error: update failed; .*Throttling"
    ) as caught:
        actuator(project, pulumi_root).set_burst_nodes(5)
    assert f"{BURST_NODES_KEY} restored to {before}" in str(caught.value)
    assert _declared(project) == str(before), "the failed size must not stay declared"
    assert _ups(pulumi_root) == []
    # The next up goes through, and only then does the file hold the new size.
    assert actuator(project, pulumi_root).set_burst_nodes(5).burst_nodes == 5
    assert _declared(project) == "5"


def test_a_failed_first_declaration_is_removed_again(project: Path, pulumi_root: Path) -> None:
    path = project / "stacks" / f"Pulumi.{STACK}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"].pop(BURST_NODES_KEY, None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (pulumi_root.parent / "state" / "fail_ups").write_text("1")
    with pytest.raises(ActuationError, match=f"{BURST_NODES_KEY} restored to unset"):
        actuator(project, pulumi_root).set_burst_nodes(2)
    assert _declared(project) is None


def test_reads_the_outputs_the_last_up_exported(project: Path, pulumi_root: Path) -> None:
    outputs = {"asgName": "burst-prod-asg-3f1c2e7", "queueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"}
    (pulumi_root.parent / "state" / "outputs.json").write_text(json.dumps(outputs))
    assert actuator(project, pulumi_root).outputs() == outputs
    assert [a[:3] for a in _argv(pulumi_root)][-2:] == [["stack", "output", "--json"]] * 2

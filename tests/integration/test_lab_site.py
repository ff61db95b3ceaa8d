"""The lab site built for real: nspawn hosts, pyinfra, Ansible, Ceph; then torn down to nothing.

One lab for the module, tests in build order (each builds on the one before, as a rebuild does).
It is the suite's own lab (see `labs`): the lab site moved to 198.18.1.0/24, with its own names,
state and cgroups, so a user's lab on this machine stays up and unchanged, which the last test
checks. Everything stays on the labs' addresses and this machine; every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.lab.hosts import exclusive, netns, veth
from gpufleet.lab.supervise import cgroup_dirs
from gpufleet.model.site import Inventory
from gpufleet.plan.site import plan_site
from gpufleet.verify import verify_site
from tests.integration.labs import (
    GPUFLEET,
    SUITE_DIR,
    SUITE_ENV,
    SUITE_NET,
    SUITE_PATHS,
    USER_ENV,
    USER_NET,
    USER_PATHS,
    fingerprint,
    gpufleet,
    moved,
    one_host_site,
    running_hosts,
    write_suite_inventories,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PATHS = SUITE_PATHS
HOSTS = {n.hostname: moved(str(n.management_ip)) for n in load_inventory("lab").nodes}
FAULT_HOST = "lab-st3"
SESSION_LOCK = Path("/run/gpufleet-test-lab-session.lock")
USER_LAB: dict[str, Any] = {}


def suite_inventory() -> Inventory:
    """The lab site as the suite's lab has it (the module's environment points at its copy)."""
    return load_inventory("lab")


def ssh(host: str, command: str, timeout: int = 60) -> str:
    proc = subprocess.run(
        ["ssh", "-F", str(PATHS.ssh_config), f"root@{HOSTS[host]}", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{host}: {command}: {proc.stderr}"
    return proc.stdout


def provision_json(*args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = gpufleet("provision", "lab", "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc.returncode, {r["hostname"]: r for r in json.loads(proc.stdout)}


# The longest a command may go without printing a line: the heartbeat is 8 s (gpufleet.progress),
# with room for a busy machine.
MAX_SILENCE_S = 20.0


def gpufleet_lines(*args: str, timeout: int = 1800) -> tuple[int, str, float]:
    """Run the CLI with its output merged, timing every line: (exit code, output, longest silence)."""
    proc = subprocess.Popen(
        [GPUFLEET, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PATH": f"{Path(GPUFLEET).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert proc.stdout is not None
    lines, last, longest = [], time.monotonic(), 0.0
    deadline = last + timeout
    try:
        for line in proc.stdout:
            now = time.monotonic()
            longest, last = max(longest, now - last), now
            lines.append(line)
            assert now < deadline, f"{args}: still running after {timeout}s"
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, "".join(lines), max(longest, time.monotonic() - last)


def wait_port(address: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{address}:22 not reachable after {timeout_s}s")


@pytest.fixture(scope="module", autouse=True)
def lab() -> Iterator[None]:
    assert os.geteuid() == 0, "the lab integration tests need root (CI runs as root)"
    # Another run of these tests (another clone's CI) waits its turn; a user's lab needs no turn.
    with exclusive(SESSION_LOCK, "test session", timeout_s=1800), pytest.MonkeyPatch.context() as env:
        # A user's lab: the one running, or (bounded cost) the lab site's control-plane host alone,
        # brought up with every default as a user would, to be found unchanged at the end.
        if not running_hosts(USER_PATHS):
            site = str(one_host_site())
            up = gpufleet("lab", "up", "--site", site, env=USER_ENV)
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
            USER_LAB["site"] = site
        USER_LAB["before"] = fingerprint(USER_PATHS)
        SUITE_DIR.mkdir(parents=True, exist_ok=True)
        write_suite_inventories()
        for key, value in SUITE_ENV.items():
            env.setenv(key, value)
        gpufleet("lab", "down")  # the suite's lab left over from an interrupted run
        up = gpufleet("lab", "up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        try:
            yield
        finally:
            gpufleet("lab", "down")
            if "site" in USER_LAB:
                gpufleet("lab", "down", "--site", USER_LAB["site"], env=USER_ENV)
            if not PATHS.state.exists():
                # Its inventory copy and output (a Ceph client keyring among it) go with the lab.
                shutil.rmtree(SUITE_DIR)


def test_lab_up_hosts_are_separate_machines_fed_by_the_mirror_only() -> None:
    status = gpufleet("lab", "status")
    assert status.returncode == 0, status.stdout
    for host in HOSTS:
        assert ssh(host, "hostname").strip() == host
        assert ssh(host, "systemctl is-system-running").strip() == "running"
        assert ssh(host, "ip -4 -o addr show eth0").split()[3] == f"{HOSTS[host]}/24"
        # Air-gapped: no package source yet; the node deploy adds the mirror its plan names.
        assert ssh(
            host, "ls -A /etc/apt/sources.list.d; test -e /etc/apt/sources.list || echo none"
        ).split() == ["none"]
    machine_ids = {ssh(h, "cat /etc/machine-id").strip() for h in HOSTS}
    host_keys = {ssh(h, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] for h in HOSTS}
    assert len(machine_ids) == len(host_keys) == len(HOSTS)


def test_fault_one_host_loses_sshd_mid_provision_the_others_finish() -> None:
    # The first provision installs packages for a minute or more; 15 s in, lab-st3's sshd and every
    # session it holds are killed. A transient unit does it (and brings sshd back 40 s later), so
    # it outlives the session that asked for it.
    proc = subprocess.Popen(
        [GPUFLEET, "provision", "lab", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(15)
        ssh(
            FAULT_HOST,
            "systemd-run --unit=gpufleet-fault --on-active=1 sh -c "
            "'systemctl kill -s KILL ssh.service; systemctl stop ssh.service; sleep 40; systemctl start ssh.service'",
        )
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr[-2000:]
    results = {r["hostname"]: r for r in json.loads(stdout)}
    assert not results[FAULT_HOST]["ok"] and results[FAULT_HOST]["error"]
    assert all(results[h]["ok"] for h in HOSTS if h != FAULT_HOST), results
    wait_port(HOSTS[FAULT_HOST], timeout_s=120)
    rc, rerun = provision_json()
    assert rc == 0 and all(r["ok"] for r in rerun.values()), rerun
    assert rerun[FAULT_HOST]["changed"], "the failed host had work left to converge"


def test_second_provision_reports_zero_changes() -> None:
    rc, results = provision_json()
    assert rc == 0
    assert {h: r["changed"] for h, r in results.items()} == {h: [] for h in HOSTS}


def test_dry_run_shows_drift_and_changes_nothing() -> None:
    ssh("lab-st1", "sed -i 's/= 1/= 0/' /etc/sysctl.d/90-gpufleet.conf")
    rc, dry = provision_json("--dry-run")
    assert rc == 0
    assert dry["lab-st1"]["changed"] == ["file /etc/sysctl.d/90-gpufleet.conf"]
    assert all(not r["changed"] for h, r in dry.items() if h != "lab-st1")
    assert "= 0" in ssh("lab-st1", "cat /etc/sysctl.d/90-gpufleet.conf")
    rc, fixed = provision_json("--limit", "lab-st1")
    assert rc == 0 and list(fixed) == ["lab-st1"] and fixed["lab-st1"]["changed"]
    assert "= 0" not in ssh("lab-st1", "cat /etc/sysctl.d/90-gpufleet.conf")


def test_packages_pinned_and_held_as_planned() -> None:
    holds = set(ssh("lab-st1", "apt-mark showhold").split())
    assert holds == {"containerd"}
    assert ssh("lab-st1", "dpkg-query -W -f '${Version}' containerd").startswith("1.6")
    assert ssh("lab-st1", "systemctl is-active chrony containerd").split() == ["active", "active"]


def test_cluster_ceph_builds_a_healthy_cluster_with_the_planned_pools() -> None:
    run = gpufleet("cluster", "lab", "ceph", timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ceph = plan_site(suite_inventory()).ceph
    assert ceph is not None
    mon = ceph.mons[0]
    status = json.loads(ssh(mon, "ceph status --format json"))
    assert status["health"]["status"] != "HEALTH_ERR", status["health"]
    assert sorted(status["quorum_names"]) == sorted(ceph.mons)
    pgs = status["pgmap"]
    assert pgs["num_pgs"] > 0
    assert [s["state_name"] for s in pgs["pgs_by_state"]] == ["active+clean"], pgs["pgs_by_state"]
    osds = json.loads(ssh(mon, "ceph osd stat --format json"))
    assert (
        osds["num_osds"]
        == osds["num_up_osds"]
        == osds["num_in_osds"]
        == sum(len(d) for d in ceph.osds.values())
    )
    rules = {
        r["rule_id"]: r["rule_name"] for r in json.loads(ssh(mon, "ceph osd crush rule dump --format json"))
    }
    pools = {p["pool_name"]: p for p in json.loads(ssh(mon, "ceph osd pool ls detail --format json"))}
    for want in ceph.pools:
        have = pools[want.name]
        assert (have["size"], have["min_size"], have["pg_num"]) == (want.size, want.min_size, want.pg_num)
        assert rules[have["crush_rule"]] == want.crush_rule
        assert want.application in have["application_metadata"]
    fs = json.loads(ssh(mon, f"ceph fs get {ceph.filesystem.name} --format json"))["mdsmap"]
    print(ssh(mon, "ceph health detail"), ssh(mon, "ceph fs status"), sep="\n")
    assert [i["state"] for i in fs["info"].values()] == ["up:active"], fs["info"]
    assert fs["data_pools"] == [pools[ceph.filesystem.data_pool]["pool_id"]]
    assert fs["metadata_pool"] == pools[ceph.filesystem.metadata_pool]["pool_id"]
    mds = json.loads(ssh(mon, "ceph fs dump --format json"))
    assert sorted([s["name"] for s in mds["standbys"]] + [i["name"] for i in fs["info"].values()]) == sorted(
        ceph.mdss
    )
    assert not {"MDS_ALL_DOWN", "FS_DEGRADED", "MDS_INSUFFICIENT_STANDBY"} & set(status["health"]["checks"])
    # One client per CSI driver, each holding exactly its planned caps (Ceph parsed them).
    for client in ceph.clients:
        keyring = Path(SUITE_ENV["GPUFLEET_OUT"]) / "lab" / f"ceph.client.{client.name}.keyring"
        assert keyring.stat().st_mode & 0o777 == 0o600 and f"[client.{client.name}]" in keyring.read_text()
        (entity,) = json.loads(ssh(mon, f"ceph auth get client.{client.name} --format json"))
        assert entity["caps"] == client.caps


def test_cluster_ceph_again_changes_nothing_and_kubernetes_runs_in_check_mode() -> None:
    run = gpufleet("cluster", "lab", "all", timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ceph.yml" in run.stdout and "kubernetes.yml (check mode)" in run.stdout
    for line in run.stdout.splitlines():
        if "│ ceph.yml" in line:
            assert line.split("│")[4].strip() == "0", line  # the changed column
    assert ssh("lab-cp1", "test -e /etc/kubernetes && echo present || echo absent").strip() == "absent"


def test_pulumi_node_provider_against_a_real_host() -> None:
    """The Node provider's methods on a real host: read (what `pulumi refresh` runs) reports no
    drift on a converged host and the deploy's own drift once a planned file is edited; diff
    wants an update, not a replace; update converges and passes the admission gate; create on a
    converged host changes nothing."""
    from components.onprem import NodeSpec, node_inputs
    from components.providers import NodeProvider
    from gpufleet.plan.expect import host_expectations
    from gpufleet.plan.node import plan_node

    inv = suite_inventory()
    node = inv.node("lab-st2")
    assert str(node.management_ip) == HOSTS["lab-st2"]
    spec = NodeSpec(
        node.hostname, str(node.management_ip), plan_node(inv, node), host_expectations(inv, node)
    )
    props = node_inputs("lab", spec)
    provider = NodeProvider()
    clean = provider.read(f"lab/{node.hostname}", props)
    assert clean.id == "lab/lab-st2" and clean.outs["drift"] == []
    assert not provider.diff(clean.id, clean.outs, props).changes
    ssh("lab-st2", "sed -i 's/= 1/= 0/' /etc/sysctl.d/90-gpufleet.conf")
    drifted = provider.read(clean.id, props)
    assert drifted.outs["drift"] == ["file /etc/sysctl.d/90-gpufleet.conf"]
    diff = provider.diff(drifted.id, drifted.outs, props)
    assert diff.changes and diff.replaces == []
    updated = provider.update(drifted.id, drifted.outs, props)
    assert "file /etc/sysctl.d/90-gpufleet.conf" in updated.outs["changed"] and updated.outs["drift"] == []
    assert "= 0" not in ssh("lab-st2", "cat /etc/sysctl.d/90-gpufleet.conf")
    created = provider.create(props)
    assert created.id == "lab/lab-st2" and created.outs["changed"] == []


def test_host_suite_passes_on_the_lab() -> None:
    report = verify_site("lab")
    failed = [f"{r.host}: {r.check}: {r.message}" for r in report.results if r.outcome == "failed"]
    assert report.ok and not failed, failed
    passed = {r.part for r in report.results if r.outcome == "passed"}
    assert {"network", "storage"} <= passed
    # The lab's plan runs no kubelet (Debian ships no kubeadm): nothing Kubernetes is demanded.
    assert {r.outcome for r in report.results if r.part == "kubernetes"} == {"skipped"}


# Each row of the README's command table, as a new user would first type it: (arguments, exit
# code, what the output must say). A row without an entry here fails the test, so the table and
# this sequence move together. Everything runs on the suite's lab, in the table's order.
README_ROWS: dict[str, list[tuple[list[str], int, str]]] = {
    "rehearse": [(["rehearse", "--keep"], 0, "--keep reuses it")],
    "lab up|down|status": [
        (["lab", "status"], 0, "running"),
        (["lab", "up"], 1, "the lab is already up"),
    ],
    "provision": [
        (["provision", "lab", "--dry-run"], 0, "would change"),
        (["provision", "lab", "--limit", "lab-cp1", "--json"], 0, '"ok": true'),
    ],
    "cluster": [(["cluster", "lab", "kubernetes"], 0, "kubernetes.yml (check mode)")],
    "validate": [(["validate"], 0, "ok lab: 4 nodes")],
    "plan-site": [(["plan-site"], 0, "ceph pacific"), (["plan-site", "dc1"], 0, "burst")],
    "plan-node": [(["plan-node", "lab", "lab-st1"], 0, "ceph-osd")],
    "inventory": [(["inventory", "lab", "--format", "ansible"], 0, "lab-cp1")],
    "schema": [(["schema", "--out", "{tmp}/nodes.schema.json"], 0, "wrote")],
    "stacks": [(["stacks"], 0, "burst-prod")],
    "plan": [(["plan", "lab", "--out", "{tmp}/plan"], 0, "")],
    # The lab runs no Kubernetes, and a new user has no kubeconfig: one line saying so.
    "drain": [(["drain", "lab", "lab-st1"], 2, "--kubeconfig")],
    "admit": [(["admit", "lab", "lab-st1"], 2, "--kubeconfig")],
    "burst simulate": [
        (["burst", "simulate", "--trace", "bench/burst/data/azure_llm_2023_code.csv"], 0, "bound-calendar")
    ],
    # No Pulumi CLI on this machine: the controller says so in one line (bad input, exit 2).
    "burst run": [
        (["burst", "run", "burst-prod", "--iterations", "1"], 2, "the Pulumi CLI is not installed")
    ],
    "serving promote": [
        (
            ["serving", "promote", "dc1-prod", "--triton-metrics", "http://127.0.0.1:9/metrics", "--dry-run"],
            2,
            "no canary in progress",
        )
    ],
    # A new user has no key issuer's file yet: one line naming it.
    "serving tenants": [
        (["serving", "tenants", "{tmp}/tenants.yaml", "--out", "{tmp}/maps"], 2, "file not found")
    ],
    # The suite's lab reads a copy of the inventories, outside git: rollback has no history to read.
    "serving rollback": [
        (["serving", "rollback", "dc1-prod", "--dry-run"], 2, "rollback reads the file's history")
    ],
    "remediate run": [
        (["remediate", "run", "--rounds", "1"], 2, "give --dcgm URL or --kernel-log"),
        # A source, and no cluster to act on: one line naming the kubeconfig it looked for.
        (
            ["remediate", "run", "--kernel-log", f"lab-st1={ROOT / 'README.md'}", "--rounds", "1"],
            2,
            "--kubeconfig",
        ),
    ],
    # The gate passes on a lab host; with no cluster to return it to, one line says so.
    "remediate admit": [(["remediate", "admit", "lab", "lab-st1"], 2, "no such file, and not in a cluster")],
    "verify": [
        (["verify", "lab"], 0, "checks ran"),
        (["verify", "lab", "--verbose"], 0, "not in this host's plan"),
    ],
}


def _readme_table_commands() -> list[str]:
    """Every command in the command column of the README's table of commands (a row may name
    several: `… run …` / `… admit …`), each as its verb words."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| command | does |", 1)[1].split("\n\n", 1)[0]
    keys = []
    for row in table.splitlines()[2:]:
        cell = row[: row.index("` | ") + 1]
        for usage in cell.split("`")[1::2]:
            words = usage.replace("\\|", "|").split()[1:]
            keys.append(" ".join(itertools.takewhile(lambda w: w[0].islower(), words)))
    return keys


def _check(args: list[str], code: int, says: str, tmp: Path) -> None:
    argv = [a.format(tmp=tmp) for a in args]
    proc = gpufleet(*argv, timeout=900)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, (argv, text[-3000:])
    assert proc.returncode == code, (argv, text[-3000:])
    assert says in text, (argv, says, text[-3000:])
    if code != 0:
        # An explained failure: a few plain lines, each a sentence, not a dump.
        assert len(proc.stderr.strip().splitlines()) <= 2, (argv, proc.stderr)


def test_readme_sequence_on_the_lab(tmp_path: Path) -> None:
    """The README's first command, then every command of its table, in order: no traceback, and
    every non-zero exit is the one the row explains."""
    block = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [c.split("#")[0].strip() for line in block.splitlines() for c in line.split("&&")]
    # setup.sh made this environment and pytest is this run: the rehearsal is the one left to run.
    assert commands == ["bash scripts/setup.sh", ".venv/bin/gpufleet rehearse", ".venv/bin/python -m pytest"]
    rc, text, silence = gpufleet_lines("rehearse")
    assert "Traceback" not in text
    assert rc == 0, text[-3000:]
    assert "removes it and rebuilds it from nothing" in text.splitlines()[0]
    # Never silent for long: each host says what it does (powering off, booting, each operation),
    # each play its tasks, and a long step repeats itself.
    assert silence <= MAX_SILENCE_S, (silence, text[-3000:])
    for phase in ("previous lab down", "lab up", "provision", "cluster ceph", "verify"):
        assert f": {phase}\n" in text, phase
    for host in HOSTS:
        # A host still stopping its daemons after 30 s is stopped by its cgroup, and says so.
        assert f"{host}: powered off" in text or f"{host}: no power-off after" in text, host
        assert f"{host}: booting" in text, host
        assert f"{host}: operation 1: " in text, host
    table = _readme_table_commands()
    assert set(table) == set(README_ROWS), set(table) ^ set(README_ROWS)
    for key in table:
        for args, code, says in README_ROWS[key]:
            _check(args, code, says, tmp_path)


def test_a_running_lab_without_its_ssh_config_says_so_and_the_fix() -> None:
    moved_aside = PATHS.ssh_config.with_name("config.moved")
    PATHS.ssh_config.rename(moved_aside)
    try:
        fix = "run `gpufleet lab down`, then `gpufleet lab up`"
        status = gpufleet("lab", "status")
        assert status.returncode == 1 and "Traceback" not in status.stdout + status.stderr
        assert status.stderr.splitlines() == [
            f"the lab's hosts run, but nothing can log in to them: {PATHS.ssh_config} is missing: {fix}"
        ]
        assert status.stdout.count(" unknown ") == len(HOSTS), status.stdout
        proc = gpufleet("provision", "lab", "--dry-run")
        assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
        assert proc.stderr.splitlines()[:-1] == [
            f"{h} ({a}): {PATHS.ssh_config} is missing: {fix}" for h, a in HOSTS.items()
        ]
    finally:
        moved_aside.rename(PATHS.ssh_config)
    assert gpufleet("lab", "status").returncode == 0


def test_a_host_without_sshd_is_one_line_in_seconds() -> None:
    ssh(FAULT_HOST, "systemd-run --unit=gpufleet-nossh --on-active=1 systemctl stop ssh.service")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOSTS[FAULT_HOST], 22), timeout=1).close()
            time.sleep(0.5)
        except OSError:
            break
    start = time.monotonic()
    proc = gpufleet("provision", "lab", "--dry-run")
    assert time.monotonic() - start < 30
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"{FAULT_HOST} ({HOSTS[FAULT_HOST]}): port 22 refused: the host runs but sshd does not answer: "
        f"`gpufleet lab status`; {PATHS.host(FAULT_HOST) / 'console.log'}",
        "1 of 4 hosts unreachable; nothing was run (--limit HOST acts on the others)",
    ]


def test_zz_lab_down_leaves_nothing_behind() -> None:
    pids = [int((PATHS.host(h) / "supervisor.pid").read_text()) for h in HOSTS]
    rc, text, silence = gpufleet_lines("lab", "down", timeout=600)
    assert rc == 0, text
    assert silence <= MAX_SILENCE_S, (silence, text)
    for host in HOSTS:
        assert f"{host}: powering off\n" in text, text
        assert f"{host}: powered off\n" in text or f"{host}: no power-off after" in text, text
    assert f"lab: removing {PATHS.state}\n" in text and text.endswith("lab: removed\n"), text
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"supervisor {pid} still running"
    for host in HOSTS:
        assert not Path(f"/run/netns/{netns(PATHS, host)}").exists()
        assert not Path(f"/sys/class/net/{veth(PATHS, host)}").exists()
        assert not any(d.exists() for d in cgroup_dirs(PATHS.cgroup, host))
    assert not Path(f"/sys/class/net/{PATHS.bridge}").exists()
    assert not PATHS.state.exists() and not PATHS.system_ssh_config.exists()
    assert str(PATHS.state) not in Path("/proc/self/mountinfo").read_text()
    # No probe of the old addresses: with the bridge gone they would route off this machine.
    assert SUITE_NET not in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout


@pytest.mark.parametrize(
    "args",
    [["provision", "lab", "--dry-run"], ["cluster", "lab", "ceph"], ["verify", "lab"], ["lab", "status"]],
)
def test_zz_a_down_lab_gets_one_line_per_host_and_the_fix(args: list[str]) -> None:
    start = time.monotonic()
    proc = gpufleet(*args)
    assert time.monotonic() - start < 30
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    if args[0] == "lab":
        assert lines == [f"no lab host is running ({PATHS.state}): lab is down: run `gpufleet lab up`"]
    else:
        assert lines[:-1] == [
            f"{h} ({a}): no lab key ({PATHS.ssh_key}): lab is down: run `gpufleet lab up`"
            for h, a in HOSTS.items()
        ]


def test_lab_needs_root() -> None:
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", GPUFLEET, "lab", "up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "the lab needs root" in proc.stderr


def test_zzz_the_users_lab_is_still_up_and_unchanged() -> None:
    """Everything above (the suite's lab up, provisioned, faulted, clustered, verified, down) left
    the user's lab as it was: same processes, machines, keys, mirror, bridge, namespaces, cgroups."""
    after = fingerprint(USER_PATHS)
    assert after == USER_LAB["before"]
    assert after["hosts"] and all(
        h["ssh"] == 0 and h["machine-id, systemd"][1] == "running" for h in after["hosts"].values()
    ), after["hosts"]
    assert after["bridge"][2].startswith(USER_NET)
    status = gpufleet(
        "lab", "status", *(["--site", USER_LAB["site"]] if "site" in USER_LAB else []), env=USER_ENV
    )
    assert status.returncode == 0, status.stdout + status.stderr

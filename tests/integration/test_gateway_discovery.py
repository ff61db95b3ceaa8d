"""The fallback's servers follow the burst pods' DNS records, for real: Debian's HAProxy with the
config gpufleet.plan.admission renders, a DNS server on 127.0.0.1 answering two headless
Services' SRV records as Kubernetes DNS does (tests/srvdns.py), one per `server-template` of a
GPU class with its own maxconn and weight, and two real tritonservers serving the CPU test double
as two distilled replicas, one of each class. What HAProxy did is read from its own runtime API
(`show servers state`, `show stat`).

What this cannot see: CoreDNS and the endpoints controller (when a pod's record appears or goes;
its truncation of large answers: tests/unit/test_admission_plan.py bounds the answer's size),
and vLLM's own batching inside a replica (a replica takes its template's `slots`, 2 or 1 here);
how leastconn spreads by weight is HAProxy's (the weights it read are checked, not the spread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from gpufleet.burst.actuate import _runtime
from gpufleet.inventory.load import load_inventory
from gpufleet.model.catalog import GPUModel
from gpufleet.plan import plan_site
from gpufleet.plan.admission import (
    FALLBACK,
    PRIMARY,
    Backend,
    ServerTemplate,
    Tenant,
    plan_admission,
    srv_name,
)
from gpufleet.plan.triton import double_model_config
from gpufleet.serving.gateway import check_config, haproxy, write_config
from gpufleet.serving.loadgen import Reply, gateway_request
from gpufleet.serving.repository import TINY, write_repository
from gpufleet.serving.tritonserver import TritonServer, free_port, tritonserver
from tests.srvdns import dns_server

pytestmark = pytest.mark.integration

MODEL = "deepseek-r1"
KEYS = {
    "key-p0": Tenant(name="bank", priority="P0", requests_per_s=1000),
    "key-p2": Tenant(name="batch", priority="P2", requests_per_s=1000),
}
PROMPT = list(range(1, 17))
# Two classes: a roomy one (two sequences a replica, weight 256) and a small one (one, 128).
CLASSES = {"big": (2, 256, GPUModel.H200), "small": (1, 128, GPUModel.L40S)}
SRV = {c: srv_name(f"{c}-pods", "serving") for c in CLASSES}
RMAINT = 0x20  # HAProxy's admin state: in maintenance by DNS resolution (no record, no address)
UP = 2  # operational state: running


def call(url: str, key: str, max_tokens: int) -> Reply:
    return gateway_request(url, MODEL, key, PROMPT, max_tokens)


def wait(what: str, ok: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f}s"
        time.sleep(0.1)


class Runtime:
    """HAProxy's runtime API on 127.0.0.1:`port`."""

    def __init__(self, port: int) -> None:
        self.port = port

    def ask(self, command: str) -> str:
        return _runtime(("127.0.0.1", self.port), command + "\n", 5)

    def servers(self) -> dict[str, dict[str, str]]:
        """`show servers state fallback`: each server's address, port and states."""
        lines = self.ask(f"show servers state {FALLBACK}").splitlines()
        header = next(line for line in lines if line.startswith("# be_id")).lstrip("# ").split()
        rows = [dict(zip(header, line.split(), strict=True)) for line in lines[2:] if line.strip()]
        return {r["srv_name"]: r for r in rows}

    def up(self) -> dict[str, int]:
        """Servers in service, by name: their port (from the SRV record)."""
        return {
            name: int(s["srv_port"])
            for name, s in self.servers().items()
            if int(s["srv_op_state"]) == UP and not int(s["srv_admin_state"]) & RMAINT
        }

    def stat(self, backend: str) -> dict[str, dict[str, str]]:
        """`show stat`: the backend's rows by server name (BACKEND for the backend itself)."""
        lines = self.ask("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r["pxname"] == backend}


@contextmanager
def _triton(root: Path) -> Iterator[TritonServer]:
    serving = plan_site(load_inventory("dc1")).serving
    assert serving is not None
    config = double_model_config(serving, kind="KIND_CPU")
    write_repository(root / "repo", config, TINY)
    write_repository(root / "repo", config.model_copy(update={"name": "fallback"}), TINY)
    with tritonserver(root / "repo", root / "work") as server:
        yield server


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, TritonServer]]:
    """Two replicas: each serves the primary's and the fallback's model (the primary uses the first)."""
    with ExitStack() as stack:
        a = stack.enter_context(_triton(tmp_path_factory.mktemp("replica-a")))
        b = stack.enter_context(_triton(tmp_path_factory.mktemp("replica-b")))
        yield a, b


def _port(server: TritonServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_fallback_servers_follow_each_templates_records_with_its_classs_maxconn_and_weight(
    replicas: tuple[TritonServer, TritonServer], tmp_path: Path
) -> None:
    a, b = replicas
    # The primary sends P2 to the fallback at a queue of 1; replica a (class big) takes two
    # requests at a time, b (small) one, and the fallback is full at one request queued per
    # replica that serves.
    primary = Backend(name=PRIMARY, model=MODEL, servers=[a.url.removeprefix("http://")], slots=1, rate_rps=2)
    fallback = Backend(
        name=FALLBACK,
        model="fallback",
        templates=[
            ServerTemplate(
                prefix=f"{c}-", srv_name=SRV[c], max_servers=2, slots=n, rate_rps=1, weight=w, gpu=gpu
            )
            for c, (n, w, gpu) in CLASSES.items()
        ],
    )
    plan = plan_admission(2.0, primary, fallback)
    assert plan.degrade_queue["P2"] == 1 and plan.shed_queue == 1
    port, metrics_port, runtime_port, dns_port = free_port(), free_port(), free_port(), free_port()
    pods = {
        "a": ("10-0-0-1.big-pods.serving.svc.cluster.local.", "127.0.0.1", _port(a)),
        "b": ("10-0-0-2.small-pods.serving.svc.cluster.local.", "127.0.0.1", _port(b)),
    }
    with dns_server(dns_port) as records:
        config = write_config(
            tmp_path,
            plan,
            primary,
            fallback,
            KEYS,
            port,
            metrics_port,
            runtime_port,
            nameservers=[f"127.0.0.1:{dns_port}"],
        )
        checked = check_config(config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with haproxy(config, port, tmp_path, metrics_port=metrics_port) as gw:
            rt = Runtime(runtime_port)
            # No ready pod: room for two servers of each class, each in maintenance without an address.
            state = rt.servers()
            assert sorted(state) == ["big-1", "big-2", "small-1", "small-2"]
            assert all(int(s["srv_admin_state"]) & RMAINT and s["srv_addr"] == "-" for s in state.values())
            # Each server as HAProxy read its template: maxconn (slim) and weight.
            stat = rt.stat(FALLBACK)
            for c, (n, w, _) in CLASSES.items():
                for i in (1, 2):
                    assert (int(stat[f"{c}-{i}"]["slim"]), int(stat[f"{c}-{i}"]["uweight"])) == (n, w), stat
            for srv in SRV.values():
                wait(f"HAProxy asked for {srv}", lambda srv=srv: (srv + ".", "SRV") in records.queries)
            _degraded_load_is(gw.url, rt, expect_shed_at_once=True)

            # A pod of each class ready: one server of each in service at its port (hold nx 5s:
            # the next question comes within 5 s of the last NXDOMAIN), the others in maintenance.
            records.set(SRV["big"] + ".", [pods["a"]])
            records.set(SRV["small"] + ".", [pods["b"]])
            wait("two fallback servers UP", lambda: len(rt.up()) == 2, timeout=20)
            assert rt.up() == {"big-1": _port(a), "small-1": _port(b)}
            assert len(rt.servers()) == 4
            _degraded_load_is(gw.url, rt, expect_shed_at_once=False)
            stat = rt.stat(FALLBACK)
            assert int(stat["big-1"]["stot"]) >= 2 and int(stat["small-1"]["stot"]) >= 1, stat

            # Pod a leaves (not ready: its record goes): its server goes to maintenance, b serves on.
            records.set(SRV["big"] + ".", [])
            wait("pod a's server in maintenance", lambda: rt.up() == {"small-1": _port(b)}, timeout=20)
            assert int(rt.servers()["big-1"]["srv_admin_state"]) & RMAINT


def _degraded_load_is(url: str, rt: Runtime, *, expect_shed_at_once: bool) -> None:
    """Hold the primary busy (one in service, one queued) so that P2 is degraded, then send P2.
    With no fallback server, P2 is shed at once. With two, three long P2 requests are in service
    at the same time, two on the big replica (its maxconn) and one on the small; with one queued
    per replica the next is shed."""
    held: list[threading.Thread] = []
    replies: dict[str, Reply] = {}

    def hold(name: str, key: str, tokens: int) -> None:
        t = threading.Thread(target=lambda: replies.__setitem__(name, call(url, key, tokens)))
        t.start()
        held.append(t)

    def queued(backend: str) -> int:
        return int(rt.stat(backend)["BACKEND"]["qcur"])

    hold("busy", "key-p0", 400)
    hold("queued", "key-p0", 400)
    wait("primary queue", lambda: queued(PRIMARY) >= 1)
    if expect_shed_at_once:
        shed = call(url, "key-p2", 1)
        assert shed.status == 429, shed
    else:
        for name in ("fb1", "fb2", "fb3"):
            hold(name, "key-p2", 300)

        def in_service() -> dict[str, int]:
            return {k: int(v["scur"]) for k, v in rt.stat(FALLBACK).items() if k != "BACKEND"}

        # Three requests: each replica up to its class's maxconn, big 2 and small 1.
        wait(
            "each replica full",
            lambda: in_service() == {"big-1": 2, "big-2": 0, "small-1": 1, "small-2": 0},
            timeout=10,
        )
        assert queued(FALLBACK) == 0
        hold("fb4", "key-p2", 1)
        wait("one queued", lambda: queued(FALLBACK) >= 1, timeout=5)
        hold("fb5", "key-p2", 1)  # one queued of two replicas' room: still admitted
        wait("two queued", lambda: queued(FALLBACK) >= 2, timeout=5)
        shed = call(url, "key-p2", 1)
        assert shed.status == 429, shed
    for t in held:
        t.join(120)
    assert replies["busy"].status == 200 and replies["queued"].status == 200
    if not expect_shed_at_once:
        assert {replies[k].served_by for k in ("fb1", "fb2", "fb3")} == {"fallback"}
        assert replies["fb1"].status == replies["fb2"].status == replies["fb3"].status == 200
        # Queued requests wait the fallback's queue timeout (the SLO) at most, never shed.
        assert {replies["fb4"].status, replies["fb5"].status} <= {200, 503}, replies

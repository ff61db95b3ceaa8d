"""The multi-node launch scripts run as rendered, by the real bash, against a stand-in Ray.

Ray's CLI (`ray start/stop`) and its Python API (`ray.init`, `ray.nodes`) are stand-ins written
here (tests/unit/test_launch.py `_fake_ray`): they fail on demand and report the live node count
the test sets. What they cannot see: how the real `ray start` fails and how long the real GCS
takes to mark a dead node (`Alive: False`); the scripts depend only on exit codes and that one
field, as LWS's vLLM example does. The shell, /dev/tcp, the watcher's Python and the HTTP health
check are real.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpufleet.plan.launch import (
    HEAD_ATTEMPTS,
    RAY_PORT,
    leader_command,
    leader_ready_command,
    tritonserver_args,
    worker_command,
)

BASH = "/bin/bash"

_RAY_CLI = """#!/bin/bash
echo "$*" >> "$FAKE/ray.log"
if [ "$1" = start ] && [ -s "$FAKE/start_failures" ]; then
  n=$(cat "$FAKE/start_failures"); echo $((n - 1)) > "$FAKE/start_failures"
  [ "$n" -gt 0 ] && exit 1
fi
[ "$1" = start ] && [ -e "$FAKE/block_exit" ] && exit "$(cat "$FAKE/block_exit")"
exit 0
"""
_RAY_MODULE = """import os
FAKE = os.environ["FAKE"]
def init(**kwargs):
    if os.path.exists(FAKE + "/init_failures"):
        os.remove(FAKE + "/init_failures")
        raise ConnectionError("the head is not up yet")
def nodes():
    with open(FAKE + "/alive") as f:
        return [{"Alive": True}] * int(f.read())
"""
_TRITONSERVER = """#!/bin/bash
echo "$*" > "$FAKE/tritonserver.args"
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    bin_ = tmp_path / "bin"
    (tmp_path / "py" / "ray").mkdir(parents=True)
    bin_.mkdir()
    (bin_ / "ray").write_text(_RAY_CLI)
    (bin_ / "tritonserver").write_text(_TRITONSERVER)
    for exe in bin_.iterdir():
        exe.chmod(0o755)
    # The scripts call `python3`: this interpreter, with the stand-in `ray` first on its path.
    (bin_ / "python3").symlink_to(sys.executable)
    (tmp_path / "py" / "ray" / "__init__.py").write_text(_RAY_MODULE)
    return tmp_path


def _env(fake: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{fake / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(fake / "py"),
        "FAKE": str(fake),
        "LWS_GROUP_SIZE": "2",
        **extra,
    }


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    # stderr to a file: the leader's watcher keeps inherited pipes open after the script ends.
    with open(Path(env["FAKE"]) / "stderr", "w") as err:
        return subprocess.Popen(
            [BASH, *command[1:]],
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def _finish(proc: subprocess.Popen[str], fake: Path, timeout: float) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return proc.returncode, (fake / "stderr").read_text()


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """The leader's watcher outlives the exec'd server in a real pod; here it ends with the test."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)


def test_the_leader_retries_a_failed_head_and_waits_for_every_rank(fake: Path) -> None:
    (fake / "start_failures").write_text("2")  # the port is still held twice
    (fake / "init_failures").write_text("1")  # the first query finds no head yet
    (fake / "alive").write_text("1")
    ranks = fake / "ranks"
    proc = _start(leader_command(8, join_timeout_s=30, poll_s=1, ranks_file=str(ranks)), _env(fake))
    try:
        deadline = time.monotonic() + 20
        while not ranks.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ranks.read_text().split()[1] == "1"
        time.sleep(1.5)
        assert not (fake / "tritonserver.args").exists(), "Triton started with a rank missing"
        (fake / "alive").write_text("2")
        code, err = _finish(proc, fake, 20)
    finally:
        _stop_group(proc)
    assert code == 0, err
    assert (fake / "tritonserver.args").read_text().split() == tritonserver_args()[1:]
    starts = [line for line in (fake / "ray.log").read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 3 and all(f"--head --port={RAY_PORT} --num-gpus=8" in s for s in starts)


def test_the_leader_gives_up_in_one_line(fake: Path) -> None:
    (fake / "start_failures").write_text(str(HEAD_ATTEMPTS))
    code, err = _finish(_start(leader_command(8, poll_s=1), _env(fake)), fake, 30)
    assert (code, err.strip()) == (1, "the Ray head did not start")
    (fake / "alive").write_text("1")
    proc = _start(leader_command(8, join_timeout_s=3, poll_s=1, ranks_file=str(fake / "ranks")), _env(fake))
    try:
        code, err = _finish(proc, fake, 30)
    finally:
        _stop_group(proc)
    assert (code, err.strip().splitlines()[-1]) == (1, "only 1 of 2 ranks joined")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_waits_for_its_head_then_joins_once(fake: Path) -> None:
    port_env = _env(fake, LWS_LEADER_ADDRESS="127.0.0.1")
    command = worker_command(8, join_timeout_s=30, poll_s=1)
    assert f"/dev/tcp/$LWS_LEADER_ADDRESS/{RAY_PORT}" in command[-1]
    # The test's head listens on a free port: the rendered script's port, substituted.
    port = _free_port()
    script = command[-1].replace(f'/{RAY_PORT}"', f'/{port}"')
    proc = _start(["bash", "-c", script], port_env)
    time.sleep(2.5)
    assert not (fake / "ray.log").exists(), "joined before the head listened"
    with socket.create_server(("127.0.0.1", port)):
        (fake / "block_exit").write_text("1")  # later, this rank's Ray processes end
        code, _err = _finish(proc, fake, 20)
    starts = (fake / "ray.log").read_text().splitlines()
    assert starts == [f"start --address=127.0.0.1:{RAY_PORT} --num-gpus=8 --disable-usage-stats --block"]
    assert code == 1, "the container ends with its rank, so LWS recreates the group"


class _Triton(BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/health/ready" and _Triton.ready else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def triton() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Triton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Triton.ready = True
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_readiness_needs_every_rank_a_fresh_count_and_triton_ready(tmp_path: Path, triton: int) -> None:
    ranks = tmp_path / "ranks"
    probe = leader_ready_command(ranks_file=str(ranks), http_port=triton, stale_s=30)

    def ready() -> bool:
        # No PATH at all: the probe runs no program, only bash's builtins.
        env = {"PATH": "/nonexistent", "LWS_GROUP_SIZE": "2"}
        return subprocess.run([BASH, *probe[1:]], env=env, timeout=10).returncode == 0

    now = int(time.time())
    assert not ready()  # no count yet
    ranks.write_text(f"{now} 2\n")
    assert ready()
    ranks.write_text(f"{now} 1\n")
    assert not ready()  # a rank is missing
    ranks.write_text(f"{now - 60} 2\n")
    assert not ready()  # the watcher stopped counting
    ranks.write_text("garbage 2\n")
    assert not ready()
    ranks.write_text(f"{now} 2\n")
    _Triton.ready = False
    assert not ready()  # the model is not loaded

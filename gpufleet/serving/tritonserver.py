"""Run the real `tritonserver` binary (from PyPI's nvidia-pytriton wheel) on 127.0.0.1.

Used by the serving and burst-signal tests and by the serving benchmark on the GPU machine.
The process is started in its own session and stopped by PID, never by name.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed


class TritonNotReady(RuntimeError):
    pass


def _pytriton_root() -> Path:
    # Located, not imported: the package's __init__ pulls in its client stack, which the
    # binary does not need (on the GPU machine only the wheel's files travel).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nvidia-pytriton wheel (which ships tritonserver) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend_directory(workdir: Path) -> Path:
    """A private backends folder: the wheel's Python backend plus the stub for this interpreter."""
    root = _pytriton_root()
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    for source in [*(root / "backends" / "python").iterdir(), stub / "triton_python_backend_stub"]:
        link = target / source.name
        if source.is_file() and not link.exists():
            link.symlink_to(source)
    return target.parent


@dataclass
class TritonServer:
    process: subprocess.Popen[bytes]
    http_port: int
    metrics_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is not None:
            return
        # The server and its Python-backend stubs share the session we created for them.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def _wait_ready(server: TritonServer, timeout: float) -> None:
    @retry(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.25),
        retry=retry_if_exception_type(TritonNotReady),
        reraise=True,
    )
    def probe() -> None:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"tritonserver exited with {server.process.returncode}; log: {server.log_path}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        raise TritonNotReady(f"tritonserver not ready after {timeout:.0f}s; log: {server.log_path}")

    probe()


@contextmanager
def tritonserver(
    model_repository: Path, workdir: Path, *, ready_timeout: float = 120, extra_args: tuple[str, ...] = ()
) -> Iterator[TritonServer]:
    """Start tritonserver on 127.0.0.1 with free ports, yield it once ready, stop it by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    binary = _pytriton_root() / "bin" / "tritonserver"
    args = [
        str(binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_directory(workdir)}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        "--metrics-interval-ms=500",
        "--log-verbose=0",
        *extra_args,
    ]
    # The Python backend's stub finds its interpreter's prefix through PATH: putting this
    # environment's bin/ first makes the models import numpy (and torch) from here.
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.exec_prefix) / "bin"), os.environ.get("PATH", "")]),
        # Its libpython must be this interpreter's too (pyenv builds differ from the distribution's).
        "LD_LIBRARY_PATH": os.pathsep.join(
            filter(None, [sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH")])
        ),
    }
    log_path = workdir / "tritonserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = TritonServer(process, http_port, metrics_port, log_path)
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        server.stop()

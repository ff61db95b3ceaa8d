"""Run HAProxy (Debian's binary) with a rendered admission config on 127.0.0.1.

For the admission tests and benchmark: the gateway production runs, in front of the real
tritonserver. Started in its own session, stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gpufleet.plan.admission import (
    ADMISSION_MAP,
    METRICS_PATH,
    AdmissionPlan,
    Backend,
    Tenant,
    admission_map_text,
    haproxy_cfg,
)
from gpufleet.serving.tenants import write_maps


def haproxy_binary() -> Path:
    local = Path(sys.prefix) / "bin" / "haproxy"
    found = local if local.is_file() else shutil.which("haproxy")
    if found is None:
        raise RuntimeError("haproxy not found: scripts/setup.sh unpacks Debian's into .venv/bin")
    return Path(found)


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`haproxy -c`: HAProxy's own parser on a rendered configuration."""
    return subprocess.run(
        [str(haproxy_binary()), "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30
    )


def write_config(
    folder: Path,
    plan: AdmissionPlan,
    primary: Backend,
    fallback: Backend,
    keys: dict[str, Tenant],
    port: int,
    metrics_port: int,
    runtime_port: int | None = None,
    nameservers: list[str] | None = None,
) -> Path:
    """haproxy.cfg, its two maps (they hold API keys: mode 0600) and the admission map in
    `folder`; HAProxy's runtime API on 127.0.0.1:`runtime_port` where one is given; names
    resolved through `nameservers` (address:port) where given, else resolv.conf's."""
    write_maps(keys, folder)
    (folder / ADMISSION_MAP).write_text(admission_map_text())
    config = folder / "haproxy.cfg"
    config.write_text(
        haproxy_cfg(
            plan,
            primary,
            fallback,
            bind=f"127.0.0.1:{port}",
            metrics_bind=f"127.0.0.1:{metrics_port}",
            tenants_map=str(folder / "tenants.map"),
            limits_map=str(folder / "limits.map"),
            admission_map=str(folder / ADMISSION_MAP),
            runtime_api=None if runtime_port is None else f"ipv4@127.0.0.1:{runtime_port}",
            nameservers=nameservers,
        )
    )
    return config


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    metrics_port: int | None = None  # None: the exporter is on `port`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        port = self.port if self.metrics_port is None else self.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{METRICS_PATH}", timeout=10) as resp:
            return str(resp.read().decode())


@contextmanager
def haproxy(
    config: Path, port: int, workdir: Path, ready_timeout: float = 30, metrics_port: int | None = None
) -> Iterator[Gateway]:
    """HAProxy in the foreground (-db) on a config that binds 127.0.0.1:`port` (and its exporter
    127.0.0.1:`metrics_port`, where that is another port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(haproxy_binary()), "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gateway = Gateway(process, port, log_path, metrics_port)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                gateway.metrics()
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"haproxy exited with {process.returncode}; log: {log_path}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"haproxy not ready after {ready_timeout:.0f}s; log: {log_path}"
                    ) from None
                time.sleep(0.1)
        yield gateway
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)

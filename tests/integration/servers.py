"""Start a server process for a test, wait for its readiness URL, stop it by PID afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serving(args: list[str], ready_url: str, log_path: Path, timeout_s: float = 60) -> Iterator[None]:
    """`args` in its own session (its children go with it), output to `log_path`; ready when
    `ready_url` answers; SIGTERM to the session on the way out."""
    name = Path(args[0]).name
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, f"{name} exited; log: {log_path}"
                assert time.monotonic() < deadline, f"{name} not ready in {timeout_s:.0f} s; log: {log_path}"
                time.sleep(0.2)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

"""One lab host's supervisor: its own cgroups, then systemd-nspawn, restarted when the host reboots.

Started detached by `lab up` (its PID is recorded; `lab down` stops it by that PID). Without a
cgroup of its own every host would share one tree (the machine has no systemd to give each a
scope), and concurrent boots go `degraded`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
REBOOT_EXIT = 133  # nspawn's exit status when the container asked for a reboot


def cgroup_dirs(lab: str, hostname: str = "") -> list[Path]:
    """The host's cgroup in every hierarchy, under its lab's own folder (the folder for no host)."""
    return [root / lab / hostname for root in CGROUP_ROOTS if root.is_dir()]


def enter_cgroups(lab: str, hostname: str) -> None:
    for d in cgroup_dirs(lab, hostname):
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text(f"{os.getpid()}\n")


def main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    enter_cgroups(spec["cgroup"], spec["hostname"])
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: types.FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            # nspawn turns SIGTERM into a clean poweroff of the host's systemd.
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
    with open(spec["log"], "ab") as log:
        while True:
            child = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            rc = child.wait()
            if stopping or rc != REBOOT_EXIT:
                return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""The suite's own lab, and the user's lab it must leave alone.

The suite's lab is the `lab` site moved out of the user's way: every address of the site moved
from 198.18.0.0/24 to 198.18.1.0/24 (one consistent map, in an inventory of its own), its own
kernel names (`gft-<host>`, bridge `gftbr0`), state, cache, lock, ssh config (outside
/etc/ssh/ssh_config.d, so nobody's `ssh lab-cp1` meets it), cgroup folder and output folder.
Nothing the user's lab has is touched: a running user lab stays up through the whole module.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gpufleet.lab.paths import LabPaths
from gpufleet.lab.supervise import CGROUP_ROOTS
from tests.conftest import INVENTORIES, REPO

USER_NET, SUITE_NET = "198.18.0.", "198.18.1."
SUITE_DIR = Path("/var/lib/gpufleet/test-lab")
SUITE_PATHS = LabPaths(
    state=SUITE_DIR / "state",
    cache=Path("/var/cache/gpufleet/test-lab"),
    system_ssh_config=SUITE_DIR / "ssh_config",
    lock=Path("/run/gpufleet-test-lab.lock"),
    name="gft",
)
SUITE_ENV = {
    "GPUFLEET_LAB_NAME": SUITE_PATHS.name,
    "GPUFLEET_LAB_STATE": str(SUITE_PATHS.state),
    "GPUFLEET_LAB_CACHE": str(SUITE_PATHS.cache),
    "GPUFLEET_LAB_LOCK": str(SUITE_PATHS.lock),
    "GPUFLEET_LAB_SSH_CONFIG": str(SUITE_PATHS.system_ssh_config),
    "GPUFLEET_INVENTORIES": str(SUITE_DIR / "inventories"),
    "GPUFLEET_OUT": str(SUITE_DIR / "out"),
}
# The user's lab as the CLI sees it with none of the suite's settings.
USER_ENV = {k: v for k, v in os.environ.items() if k not in SUITE_ENV}
USER_PATHS = LabPaths(
    state=Path("/var/lib/gpufleet/lab"),
    cache=Path("/var/cache/gpufleet/lab"),
    system_ssh_config=Path("/etc/ssh/ssh_config.d/gpufleet-lab.conf"),
    lock=Path("/run/gpufleet-lab.lock"),
)
GPUFLEET = str(Path(sys.executable).parent / "gpufleet")


def moved(address: str) -> str:
    assert address.startswith(USER_NET), address
    return SUITE_NET + address.removeprefix(USER_NET)


def write_suite_inventories() -> Path:
    """Every site as the repository has it; the lab site with every address moved (text-wide)."""
    target = Path(SUITE_ENV["GPUFLEET_INVENTORIES"])
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(INVENTORIES, target, ignore=shutil.ignore_patterns("__pycache__"))
    text = (INVENTORIES / "lab" / "nodes.yaml").read_text()
    assert USER_NET in text and SUITE_NET not in text
    (target / "lab" / "nodes.yaml").write_text(text.replace(USER_NET, SUITE_NET))
    return target


def gpufleet(
    *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (by default with the environment of the test, the suite's lab)."""
    base = dict(os.environ if env is None else env)
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(
        [GPUFLEET, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=base, check=False
    )


def running_hosts(paths: LabPaths) -> dict[str, int]:
    """hostname -> supervisor PID of every host of the lab at `paths` whose supervisor runs."""
    found = {}
    for pidfile in sorted((paths.state / "hosts").glob("*/supervisor.pid")):
        pid = int(pidfile.read_text())
        if Path(f"/proc/{pid}").exists():
            found[pidfile.parent.name] = pid
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "absent"


def fingerprint(paths: LabPaths) -> dict[str, Any]:
    """What a lab is, as its user would notice a change: its processes (a restart changes their
    PIDs), each host's machine id and state over SSH, its keys, configs and mirror, its bridge,
    namespaces and cgroups."""
    hosts = running_hosts(paths)
    addresses = {}
    for line in paths.known_hosts.read_text().splitlines() if paths.known_hosts.exists() else []:
        address, hostname = line.split()[0].split(",")
        addresses[hostname] = address
    per_host = {}
    for hostname, pid in hosts.items():
        children = Path(f"/proc/{pid}/task/{pid}/children")
        proc = subprocess.run(
            ["ssh", "-F", str(paths.ssh_config), f"root@{addresses[hostname]}",
             "cat /etc/machine-id; systemctl is-system-running"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        per_host[hostname] = {
            "supervisor": pid,
            "nspawn": children.read_text().split() if children.exists() else None,
            "ssh": proc.returncode,
            "machine-id, systemd": proc.stdout.split(),
        }
    bridge = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", paths.bridge], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "hosts": per_host,
        "files": {
            str(p): _digest(p)
            for p in (
                paths.ssh_config,
                paths.ssh_key,
                paths.known_hosts,
                paths.system_ssh_config,
                paths.mirror / "dists/bookworm/InRelease",
            )
        },
        "bridge": bridge[1:4],
        "netns": sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{paths.name}-"))
        if Path("/run/netns").exists()
        else [],
        "cgroups": sorted(
            str(p)
            for root in CGROUP_ROOTS
            if (root / paths.cgroup).is_dir()
            for p in (root / paths.cgroup).iterdir()
            if p.is_dir()
        ),
    }


def one_host_site() -> Path:
    """The lab site cut to its control-plane host: what the suite brings up as a user's lab when
    none runs (one host bounds the cost; names, paths and range are the user's defaults)."""
    import yaml

    doc = yaml.safe_load((INVENTORIES / "lab" / "nodes.yaml").read_text())
    doc["nodes"] = [n for n in doc["nodes"] if "control-plane" in n["roles"]]
    del doc["site"]["ceph"]
    target = SUITE_DIR / "user-lab" / "nodes.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(doc))
    return target

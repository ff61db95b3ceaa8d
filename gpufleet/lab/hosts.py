"""Bring the lab's hosts up and down: bridge, a netns each, an overlay root each, nspawn under a supervisor.

Everything `up` creates is recorded under the lab's state folder or named after the lab and the
host (`gf-<host>` namespaces, the `gfbr0` bridge for the default lab name `gf`), and `down` removes
exactly that, processes by PID. Two labs of different names share nothing (see `paths`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gpufleet.lab import image
from gpufleet.lab.image import LabError, run
from gpufleet.lab.paths import LabPaths
from gpufleet.lab.supervise import cgroup_dirs
from gpufleet.model.site import Inventory
from gpufleet.plan.node import plan_node
from gpufleet.progress import Lines

MIRROR_MOUNT = "/srv/gpufleet-mirror"
OSD_FILE_BYTES = 8 << 30  # sparse: BlueStore needs room to allocate, the disk only what is written
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 300.0
REQUIRED_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "apt-ftparchive": "apt-utils",
    "gpg": "gnupg",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}
# Quirks of a host that is a container, set once in the base image, as firmware settings would be:
# no CAP_SYS_TIME (chronyd runs with -x and never sets the clock) and no modprobe for NVMe-oF.
CHRONY_DROPIN = """[Unit]
ConditionCapability=

[Service]
ExecStart=
ExecStart=!/usr/sbin/chronyd -F 1 -x
"""


@dataclass(frozen=True)
class HostStatus:
    hostname: str
    address: str
    supervisor_pid: int | None
    ssh: bool
    systemd: str


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates network namespaces, a bridge, overlay mounts and "
            "systemd-nspawn hosts (run `sudo gpufleet lab up`)"
        )


def require_tools() -> None:
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"missing tools; install them with: apt-get install -y {' '.join(missing)}")


def _ifname(prefix: str, hostname: str) -> str:
    # Kernel names stop at 15 characters; a long hostname gets a digest so names never collide.
    name = f"{prefix}-{hostname}"
    return (
        name
        if len(name) <= 15
        else f"{prefix}-{hashlib.sha1(hostname.encode()).hexdigest()[: 14 - len(prefix)]}"
    )


def netns(paths: LabPaths, hostname: str) -> str:
    return _ifname(paths.name, hostname)


def veth(paths: LabPaths, hostname: str) -> str:
    return _ifname(f"{paths.name}v", hostname)


def lab_packages(inv: Inventory) -> list[str]:
    names = {p.name for n in inv.nodes for p in plan_node(inv, n).packages}
    return sorted(names | set(image.TOOL_PACKAGES))


def ssh_argv(paths: LabPaths, address: str, *command: str, timeout_s: int = 5) -> list[str]:
    return [
        "ssh",
        "-F",
        str(paths.ssh_config),
        "-o",
        f"ConnectTimeout={timeout_s}",
        f"root@{address}",
        *command,
    ]


def supervisor_pid(paths: LabPaths, hostname: str) -> int | None:
    pidfile = paths.host(hostname) / "supervisor.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _port_open(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def exclusive(lock: Path, what: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `lock` (flock) while building or removing the one lab of this machine; wait, bounded."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"another lab {what} holds {lock} for over {timeout_s:.0f}s") from None
                time.sleep(0.5)
        yield


def up(inv: Inventory, paths: LabPaths, report: Lines) -> list[HostStatus]:
    require_root()
    require_tools()
    with exclusive(paths.lock, "up or down"):
        return _up(inv, paths, report)


def _up(inv: Inventory, paths: LabPaths, report: Lines) -> list[HostStatus]:
    if any(supervisor_pid(paths, n.hostname) for n in inv.nodes):
        raise LabError(f"the lab is already up (state in {paths.state}); `gpufleet lab down` first")
    _range_free(inv)
    paths.state.mkdir(parents=True, exist_ok=True)
    cached = paths.base_tarball.exists()
    report.say(
        "lab",
        "base root filesystem: " + ("unpacking the cached one" if cached else "mmdebstrap (cached after)"),
    )
    base = image.unpack_base(paths)
    _prepare_base(base)
    report.say("lab", "mirror: resolving and downloading the node plans' packages")
    debs = image.download(paths, base, lab_packages(inv))
    image.signing_key(paths)
    image.build_mirror(paths, debs)
    report.say("lab", f"mirror: {len(debs)} packages, signed; starting {len(inv.nodes)} hosts")
    shutil.copy(paths.mirror_key, base / "etc/apt/keyrings/gpufleet-mirror.gpg")
    _ssh_client(inv, paths)
    _network_up(inv, paths)
    for node in inv.nodes:
        _host_up(inv, paths, node.hostname, str(node.management_ip))
        report.say(node.hostname, "booting")
    _wait_ready(inv, paths, report)
    return status(inv, paths)


def _range_free(inv: Inventory) -> None:
    """Refuse a management network this machine already routes: another lab (or a real network)
    uses it, and a second bridge with the same addresses would cut that one off."""
    cidr = str(inv.site.networks.management.cidr)
    routes = run(["ip", "-4", "route", "show"]).stdout
    net = ipaddress.ip_network(cidr)
    for line in routes.splitlines():
        prefix = line.split()[0]
        if prefix != "default" and ipaddress.ip_network(prefix, strict=False).overlaps(net):
            raise LabError(
                f"{cidr} is already routed on this machine ({line.strip()}): another lab or network "
                "uses it; give this lab its own range in its inventory"
            )


def _prepare_base(base: Path) -> None:
    # Air-gapped: the only package source a host has is the mirror its plan names.
    (base / "etc/apt/sources.list").unlink(missing_ok=True)
    (base / "etc/apt/keyrings").mkdir(parents=True, exist_ok=True)
    dropin = base / "etc/systemd/system/chrony.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "lab-container.conf").write_text(CHRONY_DROPIN)
    (base / "etc/systemd/system/nvmf-autoconnect.service").symlink_to("/dev/null")
    (base / "etc/dpkg/dpkg.cfg.d/gpufleet-lab").write_text(image.DPKG_LAB)


def _ssh_client(inv: Inventory, paths: LabPaths) -> None:
    paths.ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpufleet-lab", "-f", str(paths.ssh_key)])
    paths.known_hosts.write_text("")
    # Connection reuse makes repeated short commands (testinfra, Ansible) ten times faster.
    settings = (
        "  User root\n"
        f"  IdentityFile {paths.ssh_key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {paths.known_hosts}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
        "  ControlMaster auto\n"
        f"  ControlPath {paths.ssh}/cm-%C\n"
        "  ControlPersist 120s\n"
    )
    paths.ssh_config.write_text("Host *\n" + settings)
    names = " ".join(f"{n.hostname} {n.management_ip}" for n in inv.nodes)
    paths.system_ssh_config.parent.mkdir(parents=True, exist_ok=True)
    paths.system_ssh_config.write_text(
        f"# gpufleet lab (removed by `gpufleet lab down`)\nHost {names}\n{settings}"
    )


def _network_up(inv: Inventory, paths: LabPaths) -> None:
    mgmt = inv.site.networks.management
    net = ipaddress.ip_network(str(mgmt.cidr))
    gateway = str(mgmt.gateway) if mgmt.gateway else str(next(net.hosts()))
    bridge = paths.bridge
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{gateway}/{net.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    for node in inv.nodes:
        ns, pair = netns(paths, node.hostname), veth(paths, node.hostname)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", pair, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", pair, "master", bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{node.management_ip}/{net.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "mtu", str(mgmt.mtu), "up"])
        # A route to the bridge only: there is no forwarding or NAT, nothing leaves the machine.
        run(["ip", "-n", ns, "route", "add", "default", "via", gateway])


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _host_up(inv: Inventory, paths: LabPaths, hostname: str, address: str) -> None:
    hdir = paths.host(hostname)
    upper, work, root = hdir / "upper", hdir / "work", hdir / "root"
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    _write(upper / "etc/hostname", f"{hostname}\n")
    hosts = "".join(f"{n.management_ip} {n.hostname}\n" for n in inv.nodes)
    _write(upper / "etc/hosts", f"127.0.0.1 localhost\n{hosts}")
    _write(upper / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    (upper / "root").mkdir(mode=0o700, exist_ok=True)
    _write(upper / "root/.ssh/authorized_keys", paths.ssh_key.with_suffix(".pub").read_text(), 0o600)
    (upper / "root/.ssh").chmod(0o700)
    (upper / "etc/ssh").mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-A", "-f", str(upper)])
    host_key = (upper / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    with paths.known_hosts.open("a") as kh:
        kh.write(f"{address},{hostname} {host_key[0]} {host_key[1]}\n")
    # The lab's "hardware": each disk the inventory names for an OSD is a sparse file.
    node = next(n for n in inv.nodes if n.hostname == hostname)
    for disk in node.disks.ceph_osd:
        f = upper / disk.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        with f.open("wb") as fh:
            fh.truncate(OSD_FILE_BYTES)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={paths.base},upperdir={upper},workdir={work}", str(root)])  # fmt: skip
    argv = [
        "systemd-nspawn",
        "--boot",
        f"--directory={root}",
        f"--machine={hostname}",
        f"--hostname={hostname}",
        "--keep-unit",
        "--register=no",
        f"--network-namespace-path=/run/netns/{netns(paths, hostname)}",
        "--capability=CAP_NET_ADMIN",
        f"--bind-ro={paths.mirror}:{MIRROR_MOUNT}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ]
    spec = {"hostname": hostname, "cgroup": paths.cgroup, "argv": argv, "log": str(hdir / "console.log")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpufleet.lab.supervise", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(hdir / "supervisor.log").open("ab"),
        start_new_session=True,
    )
    (hdir / "supervisor.pid").write_text(f"{proc.pid}\n")


def _wait_ready(inv: Inventory, paths: LabPaths, report: Lines) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    pending = {n.hostname: str(n.management_ip) for n in inv.nodes}
    while pending:
        for hostname, address in list(pending.items()):
            state = _systemd_state(paths, address) if _port_open(address) else "booting"
            if state in ("running", "degraded"):
                report.done(hostname, f"{state} at {address}")
                del pending[hostname]
        if pending and time.monotonic() > deadline:
            raise LabError(
                f"hosts not up after {BOOT_TIMEOUT_S:.0f}s: {', '.join(sorted(pending))} "
                f"(console logs under {paths.state / 'hosts'})"
            )
        time.sleep(0.5)


def _systemd_state(paths: LabPaths, address: str) -> str:
    proc = subprocess.run(
        ssh_argv(paths, address, "systemctl", "is-system-running"),
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )
    return proc.stdout.strip() or "unreachable"


def status(inv: Inventory, paths: LabPaths) -> list[HostStatus]:
    out = []
    for node in inv.nodes:
        address = str(node.management_ip)
        pid = supervisor_pid(paths, node.hostname)
        ssh = pid is not None and _port_open(address)
        # Without the lab's ssh files nothing can ask the host (the status line says which is missing).
        systemd = (
            "unknown" if ssh and missing_ssh(paths) else _systemd_state(paths, address) if ssh else "down"
        )
        out.append(
            HostStatus(hostname=node.hostname, address=address, supervisor_pid=pid, ssh=ssh, systemd=systemd)
        )
    return out


def missing_ssh(paths: LabPaths) -> list[Path]:
    """What every tool needs to log in to the lab's hosts and is not there (written by `up`)."""
    return [p for p in (paths.ssh_config, paths.ssh_key, paths.known_hosts) if not p.exists()]


def leftovers(inv: Inventory, paths: LabPaths) -> list[str]:
    """What of the lab is still on this machine without its state: processes, namespaces, bridge."""
    found = [f"{n.hostname}'s processes" for n in inv.nodes if _cgroup_pids(paths, n.hostname)]
    found += [ns for n in inv.nodes if Path(f"/run/netns/{(ns := netns(paths, n.hostname))}").exists()]
    return found + ([paths.bridge] if Path(f"/sys/class/net/{paths.bridge}").exists() else [])


def _cgroup_pids(paths: LabPaths, hostname: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(paths.cgroup, hostname):
        for procs in top.rglob("cgroup.procs"):
            pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _power_off(paths: LabPaths, hostnames: list[str], report: Lines) -> None:
    """Ask every host to power off at once, then wait for all (bounded): shutdowns overlap."""
    running = {h: pid for h in hostnames if (pid := supervisor_pid(paths, h)) is not None}
    for hostname, pid in running.items():
        os.kill(pid, signal.SIGTERM)
        report.say(hostname, "powering off")
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while running and time.monotonic() < deadline:
        for hostname in [h for h in running if not supervisor_pid(paths, h)]:
            del running[hostname]
            report.done(hostname, "powered off")
        time.sleep(0.2)
    for hostname in running:
        report.say(hostname, f"no power-off after {STOP_TIMEOUT_S:.0f}s: stopping what is left of it")


def _stop_host(paths: LabPaths, hostname: str) -> None:
    # Whatever is left in the host's own cgroups (a hung boot, a stray daemon) is killed by PID.
    for _ in range(50):
        pids = _cgroup_pids(paths, hostname)
        if not pids:
            break
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.1)
    for top in cgroup_dirs(paths.cgroup, hostname):
        if top.exists():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            top.rmdir()
    root = paths.host(hostname) / "root"
    if os.path.ismount(root):
        run(["umount", str(root)])


def down(inv: Inventory, paths: LabPaths, report: Lines) -> None:
    require_root()
    with exclusive(paths.lock, "up or down"):
        _down(inv, paths, report)


def _down(inv: Inventory, paths: LabPaths, report: Lines) -> None:
    _power_off(paths, [n.hostname for n in inv.nodes], report)
    for node in inv.nodes:
        _stop_host(paths, node.hostname)
        ns, pair = netns(paths, node.hostname), veth(paths, node.hostname)
        # Deleting our end removes the pair even if another mount namespace still pins the netns.
        if Path(f"/sys/class/net/{pair}").exists():
            run(["ip", "link", "del", pair])
        if Path(f"/run/netns/{ns}").exists():
            run(["ip", "netns", "del", ns])
        report.done(node.hostname, "removed (processes, root mount, network namespace)")
    if Path(f"/sys/class/net/{paths.bridge}").exists():
        run(["ip", "link", "del", paths.bridge])
    for cm in paths.ssh.glob("cm-*") if paths.ssh.exists() else []:
        # Control masters of the lab's ssh config end with the hosts; their sockets are state.
        cm.unlink()
    paths.system_ssh_config.unlink(missing_ok=True)
    if paths.state.exists():
        # The hosts' disks, the base and the mirror: on a busy machine the longest step of `down`.
        report.say("lab", f"removing {paths.state}")
        shutil.rmtree(paths.state)
    for root in cgroup_dirs(paths.cgroup):
        if root.exists() and not any(root.iterdir()):
            root.rmdir()
    report.done("lab", "removed")

"""Before a command acts on hosts: can each one be reached at all? Seconds, one line per host.

A host that is down otherwise costs every tool its own long timeout and a page of its own
errors; this says which host, and what to do about it, before anything runs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gpufleet.lab import hosts as hosts_mod
from gpufleet.lab.paths import LabPaths
from gpufleet.model.site import Inventory

CONNECT_TIMEOUT_S = 3.0
SSH_PORT = 22


@dataclass(frozen=True)
class Unreachable:
    hostname: str
    address: str
    reason: str
    fix: str

    def line(self) -> str:
        return f"{self.hostname} ({self.address}): {self.reason}: {self.fix}"


def lab_fix(inv: Inventory, then_up: bool = False, rebuild: bool = False) -> str:
    """What brings a site's lab up: `lab up`; `lab down` first where a broken one is left over
    (`then_up` when it is down, `rebuild` when some of it still runs)."""
    site = "" if inv.site.name == "lab" else f" --site {inv.site.name}"
    if rebuild:
        return f"run `gpufleet lab down{site}`, then `gpufleet lab up{site}`"
    if then_up:
        return f"lab is down: run `gpufleet lab down{site}`, then `gpufleet lab up{site}`"
    return f"lab is down: run `gpufleet lab up{site}`"


def _connect(address: str, timeout_s: float) -> str | None:
    """None if something accepts on the SSH port, else why not."""
    try:
        with socket.create_connection((address, SSH_PORT), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer on port {SSH_PORT} within {timeout_s:g}s"
    except ConnectionRefusedError:
        return f"port {SSH_PORT} refused"
    except OSError as exc:
        return f"port {SSH_PORT}: {exc.strerror or exc}"


def unreachable(inv: Inventory, hosts: list[str], timeout_s: float = CONNECT_TIMEOUT_S) -> list[Unreachable]:
    """The hosts (of `hosts`) that cannot be reached over SSH, checked in parallel."""
    nodes = {n.hostname: str(n.management_ip) for n in inv.nodes if n.hostname in hosts}
    if inv.site.environment != "lab":
        fix = (
            "check that the host is up, that sshd listens, and that this machine routes to "
            f"{inv.site.networks.management.cidr}"
        )
        return _probe(nodes, timeout_s, lambda h: fix)
    paths = LabPaths.default()
    missing = hosts_mod.missing_ssh(paths)
    if missing:
        # Nothing to log in with: no lab at all (the fix is `lab up`), or one that lost its ssh
        # files while its hosts run (`lab up` would refuse: it takes `lab down` first).
        left = any(hosts_mod.supervisor_pid(paths, h) for h in nodes) or hosts_mod.leftovers(inv, paths)
        reason = f"no lab key ({paths.ssh_key})" if paths.ssh_key in missing else f"{missing[0]} is missing"
        fix = lab_fix(inv, rebuild=bool(left))
        return [Unreachable(h, a, reason, fix) for h, a in nodes.items()]
    # A lab host without its supervisor is not running: say so without sending a packet (with the
    # lab's bridge gone, its addresses would route off this machine).
    stopped = {h for h in nodes if not hosts_mod.supervisor_pid(paths, h)}
    down = [Unreachable(h, nodes[h], "not running", lab_fix(inv, then_up=True)) for h in sorted(stopped)]
    running = {h: a for h, a in nodes.items() if h not in stopped}
    return down + _probe(
        running,
        timeout_s,
        lambda h: (
            f"the host runs but sshd does not answer: `gpufleet lab status`; {paths.host(h) / 'console.log'}"
        ),
    )


def _probe(nodes: dict[str, str], timeout_s: float, fix: Callable[[str], str]) -> list[Unreachable]:
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
        reasons = dict(zip(nodes, pool.map(lambda a: _connect(a, timeout_s), nodes.values()), strict=True))
    return [Unreachable(h, nodes[h], r, fix(h)) for h, r in reasons.items() if r is not None]


def require_reachable(inv: Inventory, hosts: list[str], limit_option: bool = True) -> None:
    """Print one line per unreachable host on stderr and exit 1; return if every host answers."""
    import typer

    from gpufleet.cli import err

    down = unreachable(inv, hosts)
    if not down:
        return
    for u in down:
        err.print(u.line(), markup=False, highlight=False, soft_wrap=True)
    more = " (--limit HOST acts on the others)" if limit_option and len(down) < len(hosts) else ""
    err.print(f"{len(down)} of {len(hosts)} hosts unreachable; nothing was run{more}", highlight=False)
    raise typer.Exit(1)

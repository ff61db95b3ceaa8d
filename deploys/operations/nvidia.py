"""A driver upgrade lands in two steps: the package now, the kernel module at the next reboot.

Until that reboot the loaded module and the installed package disagree; the node says so in
/run/reboot-required (Debian's convention), which rolling maintenance reads to reboot it.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import File

from deploys.facts.nvidia import NvidiaLoadedDriver
from gpufleet.plan.node import Package

REBOOT_REQUIRED = "/run/reboot-required"


def driver_pin(packages: list[Package]) -> str | None:
    """The driver version the plan pins (`580.159.04` from `580.159.04-*`), if it pins one."""
    for p in packages:
        if p.name.startswith("nvidia-driver-") and p.version:
            return p.version.split("-", 1)[0]
    return None


def stale_driver(loaded: str | None, packages: list[Package]) -> str | None:
    """Why the node needs a reboot for its driver, or None when the loaded module is the planned one
    (or none is loaded: the first boot after the install loads the planned one)."""
    pinned = driver_pin(packages)
    if pinned is None or loaded is None or loaded == pinned:
        return None
    return f"NVIDIA driver {loaded} loaded, {pinned} planned"


def needs_driver(name: str) -> bool:
    """A module (nvidia_peermem) or service (nvidia-persistenced, nvidia-fabricmanager) that only
    works on top of a loaded NVIDIA module."""
    return name.startswith("nvidia")


def now(names: list[str], driver_loaded: bool) -> list[str]:
    """The planned modules or services to start now. Those that need the NVIDIA module wait for the
    boot that first loads it (modules-load.d, enabled units): a node that has just got its driver,
    with nouveau still bound until that boot, cannot run them yet."""
    return [n for n in names if driver_loaded or not needs_driver(n)]


def reboot_marker_commands(reason: str | None, marker_exists: bool) -> list[str]:
    if reason is None or marker_exists:
        return []
    return [f"echo {shlex.quote(reason)} > {REBOOT_REQUIRED}"]


@operation()
def reboot_marker(packages: list[Package]) -> Generator[str, None, None]:
    """Mark the node for a reboot when its loaded driver is not the planned one."""
    reason = stale_driver(host.get_fact(NvidiaLoadedDriver), packages)
    yield from reboot_marker_commands(reason, bool(host.get_fact(File, path=REBOOT_REQUIRED)))

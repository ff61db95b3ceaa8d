"""Pinned and held packages: install what the plan pins, hold what it holds, upgrade through holds.

A driver upgrade is a BOM change: the pin moves, the held package is released, installed at the
new pinned version, and held again, so unattended upgrades can never move it in between runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Generator
from fnmatch import fnmatchcase

from pyinfra import host
from pyinfra.api import operation

from deploys.facts.packages import DpkgBroken, HeldPackages, InstalledVersions
from gpufleet.plan.node import Package

DPKG_REPAIR = [
    "DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold",
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -f "
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold",
]
PIN_PRIORITY = 1001  # above 1000: apt may downgrade to the pinned version, as a rollback needs
APT_INSTALL = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)


def pin_preferences(packages: list[Package]) -> str:
    """apt preferences for every pinned package; the file the apt `pins` step writes."""
    blocks = [
        f"Package: {p.name}\nPin: version {p.version}\nPin-Priority: {PIN_PRIORITY}\n"
        for p in packages
        if p.version
    ]
    return "\n".join(blocks)


def family(name: str) -> str:
    """A package's name without its version numbers and flavour: `nvidia-driver-570-open`,
    `nvidia-driver-580` and `nvidia-driver-580-open` are one family, so are `cuda-toolkit-12-8` and
    `cuda-toolkit-13-0`."""
    return re.sub(r"-open$|[0-9]+(?:[.-][0-9]+)*", "", name)


def package_commands(
    packages: list[Package], installed: dict[str, str], held: set[str], broken: bool = False
) -> list[str]:
    """What brings installed versions and holds to the plan; nothing when they already match.

    A host that lost its connection (or power) mid-install has packages half-installed or
    unconfigured, perhaps ones the plan never names (a dependency): repair those first, or what
    depends on them fails later, far from the cause.
    """
    outdated = [
        p.name
        for p in packages
        if p.name not in installed or (p.version and not fnmatchcase(installed[p.name], p.version))
    ]
    release = sorted(held & set(outdated))
    release += sorted(p.name for p in packages if not p.hold and p.name in held and p.name not in outdated)
    # A branch change renames the package: the old branch's, held by an earlier plan, would make apt
    # refuse to replace it. Holds outside the plan's families (cuDNN, cuBLAS) are the node's own.
    planned = {p.name for p in packages}
    families = {family(p.name) for p in packages if p.hold}
    release += sorted(h for h in held - planned if family(h) in families)
    hold = sorted(p.name for p in packages if p.hold and (p.name not in held or p.name in outdated))
    commands = list(DPKG_REPAIR) if broken else []
    if release:
        commands.append(f"apt-mark unhold {shlex.join(release)}")
    if outdated:
        commands.append(f"{APT_INSTALL} {shlex.join(outdated)}")
    if hold:
        commands.append(f"apt-mark hold {shlex.join(hold)}")
    return commands


@operation()
def pinned(packages: list[Package]) -> Generator[str, None, None]:
    """Install the plan's packages at their pinned versions and hold the held ones."""
    yield from package_commands(
        packages,
        host.get_fact(InstalledVersions),
        host.get_fact(HeldPackages),
        host.get_fact(DpkgBroken),
    )

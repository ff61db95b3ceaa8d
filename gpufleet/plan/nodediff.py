"""What changes between two plans of one node, as lines a reviewer reads, and whether it needs a reboot.

Pure: the Node provider reboots on `reboot_reasons`, and `gpufleet plan` prints `plan_changes`.
"""

from __future__ import annotations

import json
from typing import Any

from gpufleet.plan.node import NodePlan, Package

DRIVER_PREFIX = "nvidia-driver-"


def _pkg(p: Package) -> str:
    return " ".join(x for x in (p.version or "(any version)", "(held)" if p.hold else "") if x)


def _set_lines(what: str, old: list[str], new: list[str]) -> list[str]:
    gone = [f"- {what} {x}" for x in old if x not in new]
    added = [f"+ {what} {x}" for x in new if x not in old]
    return gone + added


def _map_lines(what: str, old: dict[str, str], new: dict[str, str], sep: str = ": ") -> list[str]:
    out = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            out.append(f"- {what} {key}")
        elif key not in old:
            out.append(f"+ {what} {key}{sep}{new[key]}")
        elif old[key] != new[key]:
            out.append(f"~ {what} {key}: {old[key]} → {new[key]}")
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# Fields with their own readable lines; any other field that changes gets `field: old → new`.
_READABLE = {
    "packages", "kernel_cmdline", "blacklist_modules", "kernel_modules", "sysctl", "services",
    "labels", "taints", "limits", "nccl_conf",
}  # fmt: skip


def plan_changes(old: NodePlan | None, new: NodePlan | None) -> list[str]:
    """`+`/`-`/`~` lines: package pins, kernel arguments, sysctls, modules, services, labels, taints…"""
    if old is None or new is None:
        return []
    lines: list[str] = []
    pkgs_old = {p.name: _pkg(p) for p in old.packages}
    pkgs_new = {p.name: _pkg(p) for p in new.packages}
    lines += _map_lines("package", pkgs_old, pkgs_new, sep=" ")
    lines += _set_lines("kernel argument", old.kernel_cmdline, new.kernel_cmdline)
    lines += _set_lines("blacklisted module", old.blacklist_modules, new.blacklist_modules)
    lines += _set_lines("kernel module", old.kernel_modules, new.kernel_modules)
    lines += _map_lines("sysctl", old.sysctl, new.sysctl, sep=" = ")
    lines += _set_lines("service", old.services, new.services)
    lines += _set_lines("limit", [_limit(x) for x in old.limits], [_limit(x) for x in new.limits])
    lines += _map_lines("label", old.labels, new.labels, sep="=")
    taint = "{0.key}={0.value}:{0.effect}".format
    lines += _set_lines("taint", [taint(t) for t in old.taints], [taint(t) for t in new.taints])
    nccl_old = (old.nccl_conf or "").splitlines()
    nccl_new = (new.nccl_conf or "").splitlines()
    lines += _set_lines("nccl.conf", nccl_old, nccl_new)
    o, n = old.model_dump(mode="json"), new.model_dump(mode="json")
    for field in sorted(o):
        if field not in _READABLE and o[field] != n[field]:
            lines.append(f"~ {field}: {_compact(o[field])} → {_compact(n[field])}")
    return lines


def _limit(x: Any) -> str:
    return f"{x.domain} {x.type} {x.item} {x.value}"


def driver_version(plan: NodePlan) -> str | None:
    return next((p.version for p in plan.packages if p.name.startswith(DRIVER_PREFIX)), None)


def reboot_reasons(old: NodePlan | None, new: NodePlan) -> list[str]:
    """Why the node must boot again before its gate can pass: a new driver module, a new kernel
    command line or module blacklist. A new node needs none from its plan: the deploy marks it
    (/run/reboot-required) when the module it runs is not the planned one."""
    if old is None:
        return []
    reasons = []
    if driver_version(old) != driver_version(new) or {
        p.name for p in old.packages if p.name.startswith(DRIVER_PREFIX)
    } != {p.name for p in new.packages if p.name.startswith(DRIVER_PREFIX)}:
        reasons.append(f"NVIDIA driver {driver_version(old) or 'none'} → {driver_version(new) or 'none'}")
    if old.kernel_cmdline != new.kernel_cmdline:
        reasons.append("kernel command line changed")
    if old.blacklist_modules != new.blacklist_modules:
        reasons.append("module blacklist changed (initramfs)")
    return reasons

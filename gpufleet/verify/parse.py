"""Parsers of the command outputs that host checks read. Pure: text in, facts out.

Each is tested from outputs recorded on a real H100 node (tests/fixtures/h100).
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict

# The fields `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` is asked for, in order.
SMI_FIELDS = (
    "index", "uuid", "name", "pci.bus_id", "driver_version", "vbios_version", "memory.total",
    "persistence_mode", "ecc.mode.current", "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.corrected.volatile.total", "retired_pages.pending", "remapped_rows.failure",
    "remapped_rows.pending", "power.limit", "clocks.max.sm", "clocks.max.mem", "temperature.gpu",
    "pcie.link.gen.current", "pcie.link.width.current", "mig.mode.current", "compute_cap",
)  # fmt: skip
SMI_QUERY = f"nvidia-smi --query-gpu={','.join(SMI_FIELDS)} --format=csv,noheader,nounits"


class Gpu(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    name: str
    driver_version: str
    memory_mib: int
    persistence: bool
    ecc_enabled: bool
    ecc_uncorrected_volatile: int | None
    retired_pages_pending: bool | None  # None: not applicable (Ampere and newer remap rows instead)
    remapped_rows_failure: bool | None
    remapped_rows_pending: bool | None
    power_limit_w: float | None
    max_sm_clock_mhz: int | None
    compute_cap: str


def _na(value: str) -> bool:
    return value.strip() in {"[N/A]", "N/A", "[Not Supported]", "[Unknown Error]"}


def _flag(value: str) -> bool | None:
    value = value.strip()
    if _na(value):
        return None
    if value in {"Enabled", "Yes"}:
        return True
    if value in {"Disabled", "No"}:
        return False
    raise ValueError(f"not a flag: {value!r}")


def _int(value: str) -> int | None:
    return None if _na(value) else int(float(value))


def parse_smi_query(text: str) -> list[Gpu]:
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(SMI_FIELDS):
            raise ValueError(f"expected {len(SMI_FIELDS)} fields, got {len(cells)}: {line!r}")
        row = dict(zip(SMI_FIELDS, cells, strict=True))
        gpus.append(
            Gpu(
                index=int(row["index"]),
                name=row["name"],
                driver_version=row["driver_version"],
                memory_mib=int(row["memory.total"]),
                persistence=bool(_flag(row["persistence_mode"])),
                ecc_enabled=bool(_flag(row["ecc.mode.current"])),
                ecc_uncorrected_volatile=_int(row["ecc.errors.uncorrected.volatile.total"]),
                retired_pages_pending=_flag(row["retired_pages.pending"]),
                remapped_rows_failure=_flag(row["remapped_rows.failure"]),
                remapped_rows_pending=_flag(row["remapped_rows.pending"]),
                power_limit_w=None if _na(row["power.limit"]) else float(row["power.limit"]),
                max_sm_clock_mhz=_int(row["clocks.max.sm"]),
                compute_cap=row["compute_cap"],
            )
        )
    return gpus


def parse_smi_q(text: str) -> dict[str, Any]:
    """`nvidia-smi -q` as nested dicts keyed by its labels, per GPU under 'GPU <bus id>'."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        if not raw.strip() or raw.startswith(("=", "$", "#")):
            continue
        indent = len(raw) - len(raw.lstrip())
        # Values follow padded ` : `; a bare `GPU 00000000:00:06.0` or `ECC Mode` opens a section.
        pair = re.match(r"^(.*?)\s+:\s*(.*)$", raw.strip())
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if pair and pair.group(2):
            parent[pair.group(1)] = pair.group(2).strip()
        else:
            child: dict[str, Any] = {}
            parent[(pair.group(1) if pair else raw).strip()] = child
            stack.append((indent, child))
    return root


def active_slowdowns(smi_q: dict[str, Any]) -> dict[str, list[str]]:
    """Per GPU, the hardware/thermal clock-event reasons that are active (an idle GPU shows none)."""
    bad = {"HW Slowdown", "HW Thermal Slowdown", "HW Power Brake Slowdown", "SW Thermal Slowdown"}
    out = {}
    for gpu, section in smi_q.items():
        if not gpu.startswith("GPU "):
            continue
        reasons = section.get("Clocks Event Reasons", {})
        flat = _flatten(reasons)
        out[gpu] = sorted(k for k, v in flat.items() if k in bad and v == "Active")
    return out


def _flatten(tree: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value)
        else:
            flat[key] = value
    return flat


def parse_driver_version(text: str) -> tuple[str, bool]:
    """`/proc/driver/nvidia/version` → (version, open kernel module?)."""
    match = re.search(
        r"NVRM version: NVIDIA UNIX (Open )?.*?Kernel Module(?: for \S+)?\s+([0-9]+\.[0-9.]+)", text
    )
    if match is None:
        raise ValueError("no NVRM version line")
    return match.group(2), match.group(1) is not None


def parse_key_values(text: str) -> dict[str, str]:
    """`Key : value` lines (nvidia-smi --version, mdadm --detail)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not line.startswith(("$", "#")):
            out[key.strip()] = value.strip()
    return out


XID = re.compile(r"NVRM: Xid \(([^)]*)\): (\d+)")


def parse_xids(dmesg: str) -> list[tuple[str, int, str]]:
    """Xid events in the kernel log: (PCI device, Xid code, the line)."""
    return [
        (m.group(1), int(m.group(2)), line.strip()) for line in dmesg.splitlines() if (m := XID.search(line))
    ]


_MD_ARRAY = re.compile(
    r"^(?P<name>md\d+)\s*:\s*(?P<state>\S+)\s+(?:\((?P<ro>[^)]*)\)\s+)?(?P<level>raid\d+)\s+(?P<members>.*)$"
)
_MD_MEMBER = re.compile(r"(?P<dev>[\w-]+)\[(?P<slot>\d+)\](?P<flags>(?:\([A-Z]\))*)")
_MD_STATUS = re.compile(r"\[(?P<total>\d+)/(?P<up>\d+)\]\s+\[(?P<map>[U_]+)\]")


class MdArray(TypedDict):
    state: str
    level: str
    members: list[str]
    failed: list[str]
    raid_disks: int
    active_disks: int
    resync: str | None


def parse_swaps(output: str | list[str]) -> list[str]:
    """`/proc/swaps`: the active swap devices and files (after the header line)."""
    lines = output.splitlines() if isinstance(output, str) else output
    return [line.split()[0] for line in lines[1:] if line.strip()]


def parse_mdstat(output: str | list[str]) -> dict[str, MdArray]:
    """`/proc/mdstat`: array name (md0) -> state, level, members (as /dev paths), failed ones,
    disks up of disks in the array, and a resync/recovery/check/reshape under way."""
    lines = output.splitlines() if isinstance(output, str) else output
    arrays: dict[str, MdArray] = {}
    current: MdArray | None = None
    for line in lines:
        m = _MD_ARRAY.match(line.strip())
        if m:
            members = list(_MD_MEMBER.finditer(m["members"]))
            current = MdArray(
                state=m["state"],
                level=m["level"],
                members=[f"/dev/{x['dev']}" for x in members],
                failed=[f"/dev/{x['dev']}" for x in members if "(F)" in x["flags"]],
                raid_disks=len(members),
                active_disks=len(members),
                resync=None,
            )
            arrays[m["name"]] = current
            continue
        if current is None:
            continue
        s = _MD_STATUS.search(line)
        if s:
            current["raid_disks"], current["active_disks"] = int(s["total"]), int(s["up"])
        for word in ("resync", "recovery", "check", "reshape"):
            if f"{word} =" in line or f"{word}=" in line:
                current["resync"] = word
    return arrays


def parse_ibv_devinfo(text: str) -> dict[int, dict[str, str]]:
    """`ibv_devinfo -d DEV`: per port number, its state, active_mtu and link_layer."""
    ports: dict[int, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if m := re.match(r"^\s*port:\s*(\d+)", line):
            current = ports.setdefault(int(m.group(1)), {})
        elif current is not None and (kv := re.match(r"^\s*(state|active_mtu|link_layer):\s*(\S+)", line)):
            current[kv.group(1)] = kv.group(2)
    return ports


def _lines(output: str | list[str]) -> list[str]:
    return output.splitlines() if isinstance(output, str) else output


def parse_rdma_link(output: str | list[str]) -> dict[str, dict[str, str]]:
    """`rdma link show`: `DEV/PORT` -> its attributes (state, physical_state, netdev, lid ...).

    Lines read `link mlx5_0/1 state ACTIVE physical_state LINK_UP netdev ens1f0np0`; older
    iproute2 prints `3/1: mlx5_0/1: state ...` instead.
    """
    links: dict[str, dict[str, str]] = {}
    for line in _lines(output):
        words = line.split()
        at = next((i for i, w in enumerate(words) if re.fullmatch(r"[A-Za-z]\w*/\d+:?", w)), None)
        if at is None:
            continue
        rest = words[at + 1 :]
        links[words[at].rstrip(":")] = dict(zip(rest[::2], rest[1::2], strict=False))
    return links


def parse_ibstat(output: str | list[str]) -> dict[str, dict[int, dict[str, str]]]:
    """`ibstat`: CA name -> port number -> its fields (State, Physical state, Rate, Link layer ...)."""
    cas: dict[str, dict[int, dict[str, str]]] = {}
    ports: dict[int, dict[str, str]] | None = None
    port: dict[str, str] | None = None
    for line in _lines(output):
        if m := re.match(r"^CA '([^']+)'", line):
            ports = cas.setdefault(m.group(1), {})
            port = None
        elif ports is not None and (m := re.match(r"^\s+Port (\d+):\s*$", line)):
            port = ports.setdefault(int(m.group(1)), {})
        elif port is not None and ":" in line:
            key, _, value = line.partition(":")
            port[key.strip()] = value.strip()
    return cas


# iproute2's dcb, asked for one parameter; -N prints DSCP values as numbers, not AF31.
DCB_PFC = "dcb pfc show dev {netdev} prio-pfc"
DCB_APP_DSCP = "dcb -N app show dev {netdev} dscp-prio"


def parse_dcb_pfc(output: str | list[str]) -> dict[int, bool]:
    """`dcb pfc show dev DEV prio-pfc`: priority -> PFC on."""
    for line in _lines(output):
        words = line.split()
        if words and words[0] == "prio-pfc":
            return {int(k): v == "on" for k, v in (w.split(":", 1) for w in words[1:])}
    return {}


def parse_dcb_app_dscp(output: str | list[str]) -> set[tuple[int, int]]:
    """`dcb -N app show dev DEV dscp-prio`: the (DSCP, priority) rules."""
    for line in _lines(output):
        words = line.split()
        if words and words[0] == "dscp-prio":
            return {(int(d), int(p)) for d, p in (w.split(":", 1) for w in words[1:])}
    return set()


def parse_findmnt(text: str) -> dict[str, dict[str, str]]:
    """`findmnt -J -o TARGET,SOURCE,FSTYPE`: target → {source, fstype}."""
    data = json.loads(text)
    return {
        fs["target"]: {"source": fs["source"], "fstype": fs["fstype"]} for fs in data.get("filesystems", [])
    }


def version_matches(pattern: str, version: str) -> bool:
    """A plan's apt version pattern (`2.28.3-*+cuda13.0`) against an installed version."""
    return fnmatch.fnmatchcase(version, pattern)

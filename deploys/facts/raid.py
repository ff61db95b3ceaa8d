"""Software RAID and what lies on block devices: /proc/mdstat, mdadm, lsblk."""

from __future__ import annotations

import json
import re
from typing import TypedDict

from pyinfra.api import FactBase

_ARRAY = re.compile(
    r"^(?P<name>md\d+)\s*:\s*(?P<state>\S+)\s+(?:\((?P<ro>[^)]*)\)\s+)?(?P<level>raid\d+)\s+(?P<members>.*)$"
)
_MEMBER = re.compile(r"(?P<dev>[\w-]+)\[(?P<slot>\d+)\](?P<flags>(?:\([A-Z]\))*)")
_STATUS = re.compile(r"\[(?P<total>\d+)/(?P<up>\d+)\]\s+\[(?P<map>[U_]+)\]")


class MdArray(TypedDict):
    state: str
    level: str
    members: list[str]
    failed: list[str]
    raid_disks: int
    active_disks: int
    resync: str | None


class MdStat(FactBase[dict[str, MdArray]]):
    """`/proc/mdstat`: array name -> state, level, members (as /dev paths), degraded or resyncing."""

    def command(self) -> str:
        return "cat /proc/mdstat 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, MdArray]:
        return {}

    def process(self, output: list[str]) -> dict[str, MdArray]:
        arrays: dict[str, MdArray] = {}
        current: MdArray | None = None
        for line in output:
            m = _ARRAY.match(line.strip())
            if m:
                members = list(_MEMBER.finditer(m["members"]))
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
            s = _STATUS.search(line)
            if s:
                current["raid_disks"], current["active_disks"] = int(s["total"]), int(s["up"])
            for word in ("resync", "recovery", "check", "reshape"):
                if f"{word} =" in line or f"{word}=" in line:
                    current["resync"] = word
        return arrays


class MdSuperblocks(FactBase[dict[str, str]]):
    """`mdadm --examine --scan`: array UUID -> array name, for arrays whose members carry superblocks."""

    def command(self) -> str:
        return "mdadm --examine --scan 2>/dev/null || true"

    def requires_command(self) -> str:
        return "mdadm"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in output:
            fields = line.split()
            if len(fields) < 2 or fields[0] != "ARRAY":
                continue
            attrs = dict(f.split("=", 1) for f in fields[2:] if "=" in f)
            if "UUID" in attrs:
                out[attrs["UUID"]] = fields[1]
        return out


class MdDetail(FactBase[dict[str, str]]):
    """`mdadm --detail --export DEVICE`: MD_LEVEL, MD_DEVICES, MD_UUID, MD_DEVICE_<dev>_ROLE ..."""

    def command(self, device: str) -> str:
        return f"mdadm --detail --export {device} 2>/dev/null || true"

    def requires_command(self, device: str) -> str:
        return "mdadm"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return dict(line.strip().split("=", 1) for line in output if "=" in line)


class BlockUse(TypedDict):
    fstype: str | None
    pttype: str | None
    children: int
    mountpoint: str | None


class BlockDevices(FactBase[dict[str, BlockUse]]):
    """`lsblk --json`: what is on each device (filesystem, partition table, children, mount)."""

    def command(self) -> str:
        return "lsblk --json --paths -o NAME,TYPE,FSTYPE,PTTYPE,MOUNTPOINT"

    def requires_command(self) -> str:
        return "lsblk"

    @staticmethod
    def default() -> dict[str, BlockUse]:
        return {}

    def process(self, output: list[str]) -> dict[str, BlockUse]:
        tree = json.loads("\n".join(output) or "{}")
        out: dict[str, BlockUse] = {}

        def walk(devices: list[dict[str, object]]) -> None:
            for d in devices:
                children = d.get("children")
                kids = children if isinstance(children, list) else []
                out[str(d["name"])] = BlockUse(
                    fstype=d.get("fstype") or None,
                    pttype=d.get("pttype") or None,
                    children=len(kids),
                    mountpoint=d.get("mountpoint") or None,
                )
                walk(kids)

        walk(tree.get("blockdevices", []))
        return out

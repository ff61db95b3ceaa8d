"""Software RAID and what lies on block devices: /proc/mdstat, mdadm, lsblk."""

from __future__ import annotations

import json
from typing import TypedDict

from pyinfra.api import FactBase

from gpufleet.verify.parse import MdArray, parse_mdstat


class MdStat(FactBase[dict[str, MdArray]]):
    """`/proc/mdstat`: array name -> state, level, members (as /dev paths), degraded or resyncing."""

    def command(self) -> str:
        return "cat /proc/mdstat 2>/dev/null || true"

    @staticmethod
    def default() -> dict[str, MdArray]:
        return {}

    def process(self, output: list[str]) -> dict[str, MdArray]:
        return parse_mdstat(output)


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

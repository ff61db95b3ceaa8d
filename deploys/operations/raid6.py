"""RAID6: create an array only on blank disks, assemble one that exists, never create over data.

A rebuilt or reinstalled node must find its array again (assemble), a new node gets one
(create), and a disk that holds anything else (a filesystem, a partition table, another
array's superblock) stops the run: losing a dataset to a typo in an inventory is not an option.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import OperationError, operation
from pyinfra.facts.files import FileContents

from deploys.facts.raid import BlockDevices, BlockUse, MdArray, MdDetail, MdStat, MdSuperblocks
from gpufleet.plan.node import RaidArray

RAID_MEMBER = "linux_raid_member"
MDADM_CONF = "/etc/mdadm/mdadm.conf"


class RefuseToCreate(OperationError):
    """A member holds data: creating the array would destroy it."""


def _use(dev: str, block: BlockUse) -> str:
    if block["fstype"] == RAID_MEMBER:
        return "raid"
    if block["fstype"] or block["pttype"] or block["children"] or block["mountpoint"]:
        what = block["fstype"] or (f"{block['pttype']} partition table" if block["pttype"] else "partitions")
        return f"data ({what})"
    return "blank"


def raid6_commands(
    array: RaidArray,
    mdstat: dict[str, MdArray],
    blocks: dict[str, BlockUse],
    detail: dict[str, str],
    superblocks: dict[str, str],
    mdadm_conf: str,
) -> list[str]:
    name = array.device.removeprefix("/dev/")
    members = shlex.join(array.members)
    if name in mdstat:
        running = mdstat[name]
        if sorted(running["members"]) != sorted(array.members):
            raise OperationError(
                f"{array.device} runs on {', '.join(running['members'])}, the plan says "
                f"{', '.join(array.members)}: replace members with mdadm --manage, not by re-creating"
            )
        commands = []
        if detail.get("MD_UUID") and f"UUID={detail['MD_UUID']}" not in mdadm_conf:
            commands.append(f"mdadm --detail --scan {array.device} >> {MDADM_CONF}")
        if blocks.get(array.device, {}).get("fstype") is None:
            commands.append(f"mkfs.{array.filesystem} {array.device}")
        return commands

    missing = [m for m in array.members if m not in blocks]
    if missing:
        raise OperationError(f"RAID6 members not present: {', '.join(missing)}")
    uses = {m: _use(m, blocks[m]) for m in array.members}
    if all(u == "raid" for u in uses.values()):
        if len(superblocks) != 1:
            raise RefuseToCreate(
                f"{array.device}: members carry superblocks of {len(superblocks)} arrays "
                f"({', '.join(sorted(superblocks)) or 'none readable'}); assemble by hand"
            )
        return [f"mdadm --assemble {array.device} {members}"]
    if any(u != "blank" for u in uses.values()):
        found = ", ".join(f"{m}: {u}" for m, u in uses.items() if u != "blank")
        raise RefuseToCreate(f"refusing to create {array.device} over existing data ({found}); wipe by hand")
    return [
        f"mdadm --create {array.device} --run --level=6 --raid-devices={len(array.members)} "
        f"--chunk={array.chunk_kib} --metadata=1.2 {members}",
        f"mdadm --detail --scan {array.device} >> {MDADM_CONF}",
        "update-initramfs -u",
        f"mkfs.{array.filesystem} {array.device}",
    ]


@operation()
def raid6(array: RaidArray) -> Generator[str, None, None]:
    """Bring `array` into being: nothing, assemble, or create on blank members; refuse over data."""
    conf = host.get_fact(FileContents, path=MDADM_CONF) or []
    yield from raid6_commands(
        array,
        host.get_fact(MdStat),
        host.get_fact(BlockDevices),
        host.get_fact(MdDetail, device=array.device),
        host.get_fact(MdSuperblocks),
        "\n".join(conf),
    )

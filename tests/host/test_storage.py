"""Storage part: md arrays, mounts, Ceph health."""

from __future__ import annotations

import json

import pytest

from gpufleet.plan.expect import HostExpect
from gpufleet.verify.parse import parse_findmnt, parse_key_values, parse_mdstat
from tests.host.conftest import Run, not_planned

pytestmark = pytest.mark.storage


def test_md_arrays_clean_with_planned_members(run: Run, expect: HostExpect) -> None:
    if not expect.storage.raid:
        not_planned("md arrays")
    arrays = parse_mdstat(run("cat /proc/mdstat"))
    for want in expect.storage.raid:
        found = arrays.get(want.device.removeprefix("/dev/"))
        assert found is not None, f"{want.device}: expected RAID{want.level}, found no such array"
        assert found["state"] == "active" and found["level"] == f"raid{want.level}", (
            f"{want.device}: found {found}"
        )
        assert sorted(found["members"]) == sorted(want.members), (
            f"{want.device} members: expected {want.members}, found {found['members']}"
        )
        assert not found["failed"] and found["active_disks"] == found["raid_disks"], (
            f"{want.device}: degraded, {found['active_disks']}/{found['raid_disks']} up, failed {found['failed']}"
        )
        state = parse_key_values(run(f"mdadm --detail {want.device}")).get("State", "")
        assert state.split(",")[0].strip() in {"clean", "active"}, f"{want.device}: state {state}"


def test_planned_mounts(run: Run, expect: HostExpect) -> None:
    if not expect.storage.mounts:
        not_planned("mounts")
    mounted = parse_findmnt(run("findmnt -J -o TARGET,SOURCE,FSTYPE"))
    for want in expect.storage.mounts:
        found = mounted.get(want.path)
        assert found == {"source": want.device, "fstype": want.fstype}, (
            f"{want.path}: expected {want.device} ({want.fstype}), found {found}"
        )


@pytest.mark.cluster
def test_ceph_reports_no_error(run: Run, expect: HostExpect) -> None:
    if not expect.storage.ceph_health:
        not_planned("Ceph")
    health = json.loads(run("ceph health --format json"))
    assert health["status"] != "HEALTH_ERR", f"Ceph: expected no error, found {health}"

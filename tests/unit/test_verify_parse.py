"""Parsers of host-check command outputs, from outputs recorded on a real H100 node."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.verify.parse import (
    SMI_FIELDS,
    active_slowdowns,
    parse_dcb_app_dscp,
    parse_dcb_pfc,
    parse_driver_version,
    parse_findmnt,
    parse_ibstat,
    parse_ibv_devinfo,
    parse_key_values,
    parse_mdstat,
    parse_rdma_link,
    parse_smi_q,
    parse_smi_query,
    parse_xids,
    version_matches,
)

H100 = Path(__file__).resolve().parents[1] / "fixtures" / "h100"


def recorded(name: str) -> str:
    """A fixture's output, without its `$ command` first line and `# exit=N` last line."""
    lines = (H100 / name).read_text().splitlines()
    assert lines[0].startswith("$ ") and lines[-1].startswith("# exit=")
    return "\n".join(lines[1:-1]) + "\n"


def test_smi_query_matches_the_recorded_field_order() -> None:
    command = (H100 / "nvidia-smi-query-gpu.txt").read_text().splitlines()[0]
    assert command == f"$ nvidia-smi --query-gpu={','.join(SMI_FIELDS)} --format=csv,noheader,nounits"


def test_smi_query_h100() -> None:
    (gpu,) = parse_smi_query(recorded("nvidia-smi-query-gpu.txt"))
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.driver_version == "580.159.04"
    assert gpu.memory_mib == 81559
    assert gpu.persistence and gpu.ecc_enabled
    assert gpu.ecc_uncorrected_volatile == 0
    assert gpu.retired_pages_pending is None  # [N/A]: Hopper remaps rows instead
    assert gpu.remapped_rows_failure is False and gpu.remapped_rows_pending is False
    assert gpu.power_limit_w == 700.0 and gpu.max_sm_clock_mhz == 1980
    assert gpu.compute_cap == "9.0"


def test_smi_query_rejects_a_short_row() -> None:
    with pytest.raises(ValueError, match="expected 22 fields"):
        parse_smi_query("0, GPU-x, NVIDIA H100 80GB HBM3\n")


def test_smi_q_sections_and_slowdowns() -> None:
    perf = parse_smi_q(recorded("nvidia-smi-q-perf.txt"))
    gpu = perf["GPU 00000000:00:06.0"]
    assert gpu["GPU Power Readings"]["Current Power Limit"] == "700.00 W"
    assert active_slowdowns(perf) == {"GPU 00000000:00:06.0": []}
    throttled = recorded("nvidia-smi-q-perf.txt").replace(
        "            HW Thermal Slowdown                        : Not Active",
        "            HW Thermal Slowdown                        : Active",
    )
    assert active_slowdowns(parse_smi_q(throttled)) == {"GPU 00000000:00:06.0": ["HW Thermal Slowdown"]}
    ecc = parse_smi_q(recorded("nvidia-smi-q-ecc.txt"))["GPU 00000000:00:06.0"]
    assert ecc["Remapped Rows"]["Remapping Failure Occurred"] == "No"


def test_driver_version_open_module() -> None:
    assert parse_driver_version(recorded("proc-driver-version.txt")) == ("580.159.04", True)
    proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n"
    assert parse_driver_version(proprietary) == ("535.183.01", False)
    with pytest.raises(ValueError):
        parse_driver_version("cat: /proc/driver/nvidia/version: No such file or directory")


def test_smi_version_reports_cuda() -> None:
    assert parse_key_values(recorded("nvidia-smi-version.txt"))["CUDA Version"] == "13.0"


def test_xids() -> None:
    assert parse_xids(recorded("dmesg-xid.txt")) == []  # NVRM lines, but no Xid
    line = "[ 8421.113] NVRM: Xid (PCI:0000:18:00): 79, pid=1234, GPU has fallen off the bus."
    assert parse_xids(line) == [("PCI:0000:18:00", 79, line.strip())]


def test_nccl_package_version_against_the_plan_pattern() -> None:
    held = recorded("apt-holds.txt").split()
    assert "libnccl2" in held
    dpkg = [line.split() for line in recorded("dpkg-nvidia.txt").splitlines()]
    version = next(cols[2] for cols in dpkg if cols[1] == "libnccl2")
    assert version_matches("2.28.3-*+cuda13.0", version)
    assert not version_matches("2.28.3-*+cuda12.9", version)
    assert not version_matches("2.27.*", version)


# Not recordable on the H100 node (no md arrays there): hand-written from the kernel's
# documented /proc/mdstat format (Documentation/admin-guide/md.rst).
MDSTAT = """Personalities : [raid6] [raid5] [raid4]
md0 : active raid6 sdf[5] sde[4] sdd[3] sdc[2] sdb[1] sda[0]
      3906764800 blocks super 1.2 level 6, 512k chunk, algorithm 2 [6/6] [UUUUUU]
      bitmap: 0/8 pages [0KB], 65536KB chunk

md1 : active raid6 sdk[4] sdj[3](F) sdi[2] sdh[1] sdg[0]
      2929893376 blocks super 1.2 level 6, 512k chunk, algorithm 2 [5/4] [UUU_U]

unused devices: <none>
"""


def test_mdstat() -> None:
    arrays = parse_mdstat(MDSTAT)
    md0 = arrays["md0"]
    assert md0["state"] == "active" and md0["level"] == "raid6"
    assert sorted(md0["members"]) == [f"/dev/sd{c}" for c in "abcdef"]
    assert (md0["active_disks"], md0["raid_disks"], md0["failed"]) == (6, 6, [])
    md1 = arrays["md1"]
    assert (md1["active_disks"], md1["raid_disks"], md1["failed"]) == (4, 5, ["/dev/sdj"])
    assert parse_mdstat(recorded("mdstat.txt")) == {}  # the H100 node has none


def test_ibv_devinfo_and_findmnt() -> None:
    text = """hca_id:\tmlx5_0
\ttransport:\t\t\tInfiniBand (0)
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_ACTIVE (4)
\t\t\tmax_mtu:\t\t4096 (5)
\t\t\tactive_mtu:\t\t4096 (5)
\t\t\tlink_layer:\t\tInfiniBand
"""
    assert parse_ibv_devinfo(text) == {
        1: {"state": "PORT_ACTIVE", "active_mtu": "4096", "link_layer": "InfiniBand"}
    }
    mounts = parse_findmnt(
        '{"filesystems": [{"target": "/srv/data", "source": "/dev/md0", "fstype": "xfs"}]}'
    )
    assert mounts == {"/srv/data": {"source": "/dev/md0", "fstype": "xfs"}}


RECORDED = H100.parent / "h100-recorded"


def test_outputs_recorded_with_the_suites_own_commands() -> None:
    """scripts/record-fixtures.sh ran the host suite's commands on the H100: parse them."""

    def out(name: str) -> str:
        lines = (RECORDED / name).read_text().splitlines()
        assert lines[-1] == "# exit=0", name
        return "\n".join(lines[1:-1])

    (gpu,) = parse_smi_query(out("nvidia-smi-query-gpu.txt"))
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.persistence
    assert active_slowdowns(parse_smi_q(out("nvidia-smi-q-performance.txt"))) == {"GPU 00000000:00:06.0": []}
    assert version_matches("2.28.3-*+cuda13.0", out("dpkg-query-libnccl2.txt"))
    assert out("sys-class-net.txt").split() == ["up", "1400"]
    assert out("sys-class-infiniband.txt") == ""  # ib_core loaded, no RDMA device
    assert parse_xids(out("dmesg-xid.txt")) == []


def test_rdma_link_both_output_forms() -> None:
    new = "link mlx5_0/1 subnet_prefix fe80:0000:0000:0000 lid 12 sm_lid 1 lmc 0 state ACTIVE physical_state LINK_UP"
    # iproute2 before 5.x prefixed the device index: `IDX/PORT: DEV/PORT: ...`
    old = "3/1: mlx5_1/1: state ACTIVE physical_state LINK_UP netdev ens803f1"
    links = parse_rdma_link(f"{new}\n{old}\n")
    assert links["mlx5_0/1"]["lid"] == "12" and links["mlx5_0/1"]["state"] == "ACTIVE"
    assert links["mlx5_1/1"] == {"state": "ACTIVE", "physical_state": "LINK_UP", "netdev": "ens803f1"}
    assert parse_rdma_link("") == {}


def test_ibstat_two_ports_of_one_ca() -> None:
    text = (
        "CA 'mlx5_0'\n\tCA type: MT4123\n\tNumber of ports: 2\n"
        "\tPort 1:\n\t\tState: Active\n\t\tLink layer: Ethernet\n"
        "\tPort 2:\n\t\tState: Down\n\t\tPhysical state: Disabled\n\t\tLink layer: Ethernet\n"
    )
    ports = parse_ibstat(text)["mlx5_0"]
    assert ports[1] == {"State": "Active", "Link layer": "Ethernet"}
    assert ports[2]["Physical state"] == "Disabled"


def test_dcb_outputs() -> None:
    pfc = parse_dcb_pfc(
        "pfc-cap 8 macsec-bypass off delay 4096\nprio-pfc 0:off 1:off 2:off 3:off 4:off 5:off 6:on 7:on\n"
    )
    assert sorted(p for p, on in pfc.items() if on) == [6, 7]
    # dcb-app(8): two rules for DSCP 24 may coexist; both are reported.
    assert parse_dcb_app_dscp("dscp-prio 0:0 24:2 24:3 48:6") == {(0, 0), (24, 2), (24, 3), (48, 6)}
    assert parse_dcb_app_dscp("") == set()

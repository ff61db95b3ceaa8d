"""Network part: the management interface and every planned RDMA port."""

from __future__ import annotations

import pytest

from gpufleet.plan.expect import HostExpect
from gpufleet.verify.parse import (
    DCB_APP_DSCP,
    DCB_PFC,
    parse_dcb_app_dscp,
    parse_dcb_pfc,
    parse_ibv_devinfo,
)
from tests.host.conftest import Run, not_planned

pytestmark = pytest.mark.network

IB_MTU_CODES = {256: "256", 512: "512", 1024: "1024", 2048: "2048", 4096: "4096"}


def test_management_interface_up_with_planned_mtu(run: Run, expect: HostExpect) -> None:
    dev = expect.network.management_device
    state = run(f"cat /sys/class/net/{dev}/operstate").strip()
    mtu = int(run(f"cat /sys/class/net/{dev}/mtu"))
    assert state == "up", f"{dev}: expected up, found {state}"
    assert mtu == expect.network.management_mtu, (
        f"{dev} MTU: expected {expect.network.management_mtu}, found {mtu}"
    )


def test_rdma_ports_active_as_planned(run: Run, expect: HostExpect) -> None:
    if not expect.network.rdma:
        not_planned("RDMA devices")
    present = run("ls /sys/class/infiniband").split()
    missing = [n.device for n in expect.network.rdma if n.device not in present]
    assert not missing, f"RDMA devices: expected {[n.device for n in expect.network.rdma]}, missing {missing}"
    for nic in expect.network.rdma:
        port = parse_ibv_devinfo(run(f"ibv_devinfo -d {nic.device}")).get(1, {})
        assert port.get("state") == "PORT_ACTIVE", f"{nic.device} port 1: expected PORT_ACTIVE, found {port}"
        assert port.get("link_layer") == nic.link_layer, (
            f"{nic.device}: expected link layer {nic.link_layer}, found {port.get('link_layer')}"
        )
        assert port.get("active_mtu", "").startswith(IB_MTU_CODES[nic.mtu]), (
            f"{nic.device}: expected active MTU {nic.mtu}, found {port.get('active_mtu')}"
        )
        gid = run(f"cat /sys/class/infiniband/{nic.device}/ports/1/gids/{nic.gid_index}").strip()
        assert gid and set(gid.replace(":", "")) != {"0"}, f"{nic.device}: GID index {nic.gid_index} is empty"
        if nic.link_layer == "Ethernet":
            kind = run(
                f"cat /sys/class/infiniband/{nic.device}/ports/1/gid_attrs/types/{nic.gid_index}"
            ).strip()
            assert kind == "RoCE v2", f"{nic.device} GID {nic.gid_index}: expected RoCE v2, found {kind}"


def test_roce_netdevs_carry_mtu_trust_and_pfc_as_planned(run: Run, expect: HostExpect) -> None:
    ports = [(p.device, p.roce) for p in expect.network.rdma if p.roce is not None]
    if not ports:
        not_planned("RoCE ports")
    for device, roce in ports:
        dev = roce.netdev
        mtu = int(run(f"cat /sys/class/net/{dev}/mtu"))
        assert mtu == roce.netdev_mtu, f"{device} netdev {dev} MTU: expected {roce.netdev_mtu}, found {mtu}"
        pfc = parse_dcb_pfc(run(DCB_PFC.format(netdev=dev)))
        on = sorted(prio for prio, enabled in pfc.items() if enabled)
        assert on == [roce.priority], f"{dev} PFC: expected on priority {roce.priority} only, found {on}"
        dscp = {
            prio for d, prio in parse_dcb_app_dscp(run(DCB_APP_DSCP.format(netdev=dev))) if d == roce.dscp
        }
        assert dscp == {roce.priority}, (
            f"{dev}: expected DSCP {roce.dscp} on priority {roce.priority}, found {dscp}"
        )

"""RDMA ports: InfiniBand ones checked against the plan, RoCE ones given MTU, DSCP trust and PFC.

An InfiniBand port's state and MTU are the subnet manager's to set: the deploy can only refuse a
port that is not as planned. A RoCE port's settings live on its netdev and are the host's. Either
way a planned GID index that is empty or not RoCE v2 stops the run: NCCL would use it anyway, and
the node would be slow for no visible reason.
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import OperationError, operation

from deploys.facts.rdma import DcbAppDscp, DcbPfc, GidType, IbStat, IbvDevinfo, NetdevMtu, RdmaLinks
from gpufleet.plan.node import RdmaPort, Roce

ROCE_V2 = "RoCE v2"
PRIORITIES = range(8)


def roce_settings(roce: Roce) -> list[str]:
    """Every command that sets a RoCE netdev as planned; the boot unit runs them all.

    iproute2's dcb has no trust command before 6.3: mlx5 trusts DSCP once a DSCP rule exists.
    """
    return [
        f"ip link set dev {roce.netdev} mtu {roce.netdev_mtu}",
        f"dcb pfc set dev {roce.netdev} prio-pfc all:off {roce.priority}:on",
        f"dcb app replace dev {roce.netdev} dscp-prio {roce.dscp}:{roce.priority}",
    ]


def roce_commands(roce: Roce, mtu: int | None, pfc: dict[int, bool], dscp: set[tuple[int, int]]) -> list[str]:
    """The settings that differ from what the netdev reports; nothing when all match."""
    set_mtu, set_pfc, set_trust = roce_settings(roce)
    out = []
    if mtu != roce.netdev_mtu:
        out.append(set_mtu)
    if pfc != {p: p == roce.priority for p in PRIORITIES}:
        out.append(set_pfc)
    if {p for d, p in dscp if d == roce.dscp} != {roce.priority}:
        out.append(set_trust)
    return out


def _fail(port: RdmaPort, why: str) -> OperationError:
    return OperationError(f"{port.device} port {port.port}: {why}")


def check_gid(port: RdmaPort, gid_type: str | None) -> None:
    where = f"GID index {port.gid_index} (NCCL_IB_GID_INDEX)"
    if gid_type is None:
        hint = f": does {port.roce.netdev} have its address yet?" if port.roce else ""
        raise _fail(port, f"{where} is empty{hint}")
    if port.roce is not None and gid_type != ROCE_V2:
        raise _fail(
            port, f"{where} is {gid_type}, not {ROCE_V2}: pick the RoCE v2 GID of the port's IPv4 address"
        )


def check_infiniband(
    port: RdmaPort, ibstat: dict[str, dict[int, dict[str, str]]], devinfo: dict[int, dict[str, str]]
) -> None:
    """The port is present, Active, InfiniBand, at the planned MTU."""
    if port.device not in ibstat:
        raise _fail(port, f"no such device (ibstat lists {', '.join(sorted(ibstat)) or 'none'})")
    state = ibstat[port.device].get(port.port)
    if state is None:
        raise _fail(port, "no such port")
    if state.get("Link layer") != port.link_layer:
        raise _fail(port, f"link layer {state.get('Link layer')}, planned {port.link_layer}")
    if state.get("State") != "Active":
        raise _fail(
            port,
            f"state {state.get('State')} ({state.get('Physical state')}), expected Active: "
            "check the cable and the subnet manager",
        )
    active = devinfo.get(port.port, {}).get("active_mtu", "").split(" ")[0]
    if active != str(port.mtu):
        raise _fail(port, f"active MTU {active or 'unknown'}, planned {port.mtu}: the subnet manager sets it")


def check_roce(port: RdmaPort, roce: Roce, links: dict[str, dict[str, str]]) -> None:
    """The port is present, on the planned netdev, and its link is up."""
    link = links.get(f"{port.device}/{port.port}")
    if link is None:
        raise _fail(port, f"no such port (rdma link show lists {', '.join(sorted(links)) or 'none'})")
    if link.get("netdev") != roce.netdev:
        raise _fail(port, f"on netdev {link.get('netdev')}, planned {roce.netdev}")
    if link.get("state") != "ACTIVE":
        raise _fail(port, f"state {link.get('state')} ({link.get('physical_state')}), expected ACTIVE")


@operation()
def rdma_port(planned: RdmaPort) -> Generator[str, None, None]:
    """Check an RDMA port against the plan; set a RoCE port's netdev MTU, DSCP trust and PFC."""
    gid_type = host.get_fact(GidType, device=planned.device, port=planned.port, index=planned.gid_index)
    roce = planned.roce
    if roce is None:
        check_infiniband(planned, host.get_fact(IbStat), host.get_fact(IbvDevinfo, device=planned.device))
        check_gid(planned, gid_type)
        return
    check_roce(planned, roce, host.get_fact(RdmaLinks))
    check_gid(planned, gid_type)
    yield from roce_commands(
        roce,
        host.get_fact(NetdevMtu, netdev=roce.netdev),
        host.get_fact(DcbPfc, netdev=roce.netdev),
        host.get_fact(DcbAppDscp, netdev=roce.netdev),
    )

"""RDMA ports as the host reports them: rdma link, ibstat, ibv_devinfo, GID types, RoCE netdevs."""

from __future__ import annotations

from pyinfra.api import FactBase

from gpufleet.verify.parse import (
    DCB_APP_DSCP,
    DCB_PFC,
    parse_dcb_app_dscp,
    parse_dcb_pfc,
    parse_ibstat,
    parse_ibv_devinfo,
    parse_rdma_link,
)


class RdmaLinks(FactBase[dict[str, dict[str, str]]]):
    """`rdma link show` (iproute2): `mlx5_0/1` -> state, physical_state, netdev ..."""

    def command(self) -> str:
        return "rdma link show"

    def requires_command(self) -> str:
        return "rdma"

    @staticmethod
    def default() -> dict[str, dict[str, str]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, str]]:
        return parse_rdma_link(output)


class IbStat(FactBase[dict[str, dict[int, dict[str, str]]]]):
    """`ibstat` (infiniband-diags): CA -> port -> State, Physical state, Rate, Link layer ..."""

    def command(self) -> str:
        return "ibstat"

    def requires_command(self) -> str:
        return "ibstat"

    @staticmethod
    def default() -> dict[str, dict[int, dict[str, str]]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[int, dict[str, str]]]:
        return parse_ibstat(output)


class IbvDevinfo(FactBase[dict[int, dict[str, str]]]):
    """`ibv_devinfo -d DEVICE`: port -> state, active_mtu, link_layer (ibstat shows no MTU)."""

    def command(self, device: str) -> str:
        return f"ibv_devinfo -d {device} 2>/dev/null || true"

    def requires_command(self, device: str) -> str:
        return "ibv_devinfo"

    @staticmethod
    def default() -> dict[int, dict[str, str]]:
        return {}

    def process(self, output: list[str]) -> dict[int, dict[str, str]]:
        return parse_ibv_devinfo("\n".join(output))


class GidType(FactBase[str | None]):
    """The type of one GID table entry (`RoCE v2`, `IB/RoCE v1`); None when the entry is empty."""

    def command(self, device: str, port: int, index: int) -> str:
        # An empty entry reads as EINVAL: no type.
        return f"cat /sys/class/infiniband/{device}/ports/{port}/gid_attrs/types/{index} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return "\n".join(output).strip() or None


class NetdevMtu(FactBase[int | None]):
    """A network device's MTU; None when there is no such device."""

    def command(self, netdev: str) -> str:
        return f"cat /sys/class/net/{netdev}/mtu 2>/dev/null || true"

    def process(self, output: list[str]) -> int | None:
        text = "\n".join(output).strip()
        return int(text) if text else None


class DcbPfc(FactBase[dict[int, bool]]):
    """`dcb pfc show dev NETDEV prio-pfc` (iproute2): priority -> PFC on."""

    def command(self, netdev: str) -> str:
        return DCB_PFC.format(netdev=netdev)

    def requires_command(self, netdev: str) -> str:
        return "dcb"

    @staticmethod
    def default() -> dict[int, bool]:
        return {}

    def process(self, output: list[str]) -> dict[int, bool]:
        return parse_dcb_pfc(output)


class DcbAppDscp(FactBase[set[tuple[int, int]]]):
    """`dcb -N app show dev NETDEV dscp-prio` (iproute2): the (DSCP, priority) rules."""

    def command(self, netdev: str) -> str:
        return DCB_APP_DSCP.format(netdev=netdev)

    def requires_command(self, netdev: str) -> str:
        return "dcb"

    @staticmethod
    def default() -> set[tuple[int, int]]:
        return set()

    def process(self, output: list[str]) -> set[tuple[int, int]]:
        return parse_dcb_app_dscp(output)

"""Swap in use, as the kernel reports it."""

from __future__ import annotations

from pyinfra.api import FactBase

from gpufleet.verify.parse import parse_swaps


class SwapDevices(FactBase[list[str]]):
    """`/proc/swaps`: the active swap devices and files (the header line left out)."""

    def command(self) -> str:
        return "cat /proc/swaps"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return parse_swaps(output)

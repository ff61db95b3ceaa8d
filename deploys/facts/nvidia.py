"""What the NVIDIA driver reports about the GPUs it drives."""

from __future__ import annotations

from pyinfra.api import FactBase

# The fields of the recorded H100 query (tests/fixtures/h100/nvidia-smi-query-gpu.txt), in order.
QUERY = [
    "index", "uuid", "name", "pci.bus_id", "driver_version", "vbios_version", "memory.total",
    "persistence_mode", "ecc.mode.current", "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.corrected.volatile.total", "retired_pages.pending", "remapped_rows.failure",
    "remapped_rows.pending", "power.limit", "clocks.max.sm", "clocks.max.mem", "temperature.gpu",
    "pcie.link.gen.current", "pcie.link.width.current", "mig.mode.current", "compute_cap",
]  # fmt: skip


class NvidiaGpus(FactBase[list[dict[str, str]]]):
    """`nvidia-smi --query-gpu=... --format=csv,noheader,nounits`: one dict per GPU, by field name."""

    def command(self) -> str:
        return f"nvidia-smi --query-gpu={','.join(QUERY)} --format=csv,noheader,nounits"

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> list[dict[str, str]]:
        return []

    def process(self, output: list[str]) -> list[dict[str, str]]:
        rows = [[f.strip() for f in line.split(",")] for line in output]
        return [dict(zip(QUERY, row, strict=True)) for row in rows if len(row) == len(QUERY)]

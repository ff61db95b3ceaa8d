"""What the NVIDIA driver reports about the GPUs it drives."""

from __future__ import annotations

from pyinfra.api import FactBase

from gpufleet.verify.parse import SMI_FIELDS, SMI_QUERY


class NvidiaGpus(FactBase[list[dict[str, str]]]):
    """`nvidia-smi --query-gpu=... --format=csv,noheader,nounits`: one dict per GPU, by field name."""

    def command(self) -> str:
        return SMI_QUERY

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> list[dict[str, str]]:
        return []

    def process(self, output: list[str]) -> list[dict[str, str]]:
        rows = [[f.strip() for f in line.split(",")] for line in output]
        return [dict(zip(SMI_FIELDS, row, strict=True)) for row in rows if len(row) == len(SMI_FIELDS)]

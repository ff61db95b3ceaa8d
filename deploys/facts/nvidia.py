"""What the NVIDIA driver reports about the GPUs it drives."""

from __future__ import annotations

from typing import TypedDict

from pyinfra.api import FactBase

QUERY = ["index", "uuid", "name", "driver_version", "memory.total", "persistence_mode"]


class Gpu(TypedDict):
    index: int
    uuid: str
    name: str
    driver_version: str
    memory_mib: int
    persistence: bool


class NvidiaGpus(FactBase[list[Gpu]]):
    """`nvidia-smi --query-gpu=... --format=csv,noheader,nounits`; empty without a driver."""

    def command(self) -> str:
        return f"nvidia-smi --query-gpu={','.join(QUERY)} --format=csv,noheader,nounits"

    def requires_command(self) -> str:
        return "nvidia-smi"

    @staticmethod
    def default() -> list[Gpu]:
        return []

    def process(self, output: list[str]) -> list[Gpu]:
        gpus: list[Gpu] = []
        for line in output:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != len(QUERY):
                continue
            gpus.append(
                Gpu(
                    index=int(fields[0]),
                    uuid=fields[1],
                    name=fields[2],
                    driver_version=fields[3],
                    memory_mib=int(fields[4]),
                    persistence=fields[5] == "Enabled",
                )
            )
        return gpus

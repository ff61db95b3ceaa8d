"""The NVIDIA kernel module a node runs now (which a driver upgrade changes only at the next boot)."""

from __future__ import annotations

from pyinfra.api import FactBase

from gpufleet.verify.parse import parse_driver_version

DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"


class NvidiaLoadedDriver(FactBase[str | None]):
    """The loaded kernel module's version, from the kernel itself; None when no module is loaded.

    Not from nvidia-smi: once a driver upgrade has installed the new userspace, NVML refuses to
    talk to the old module ("Driver/library version mismatch"), which is exactly when this is read."""

    def command(self) -> str:
        return f"if [ -r {DRIVER_VERSION_FILE} ]; then cat {DRIVER_VERSION_FILE}; fi"

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        text = "\n".join(output)
        return parse_driver_version(text)[0] if text.strip() else None

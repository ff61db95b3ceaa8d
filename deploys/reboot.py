"""Boot the node again when its plan or its deploy says so, and wait until it is back.

The Node provider runs this after the node deploy and before the admission gate: a new driver
module, kernel command line or module blacklist only takes effect after a boot, so the gate
cannot pass before it.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import server

from deploys.operations.nvidia import REBOOT_REQUIRED

# A GPU server's firmware, memory training and driver load: well past the 5-minute default.
REBOOT_TIMEOUT_S = 1800


def reboot_why(planned: list[str], marker: str | None) -> str | None:
    """The reasons, joined; None when the node need not boot again."""
    reasons = [*planned, *([f"{REBOOT_REQUIRED}: {marker}"] if marker is not None else [])]
    return "; ".join(reasons) or None


@deploy("gpufleet reboot")
def reboot() -> None:
    marker = host.get_fact(File, path=REBOOT_REQUIRED)
    why = reboot_why(list(host.data.get("gpufleet_reboot_for") or []), "marked" if marker else None)
    if why is not None:
        server.reboot(name=f"reboot ({why})", delay=5, interval=5, reboot_timeout=REBOOT_TIMEOUT_S)

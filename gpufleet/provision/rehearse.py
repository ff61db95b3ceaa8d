"""A disaster-recovery rehearsal: build a site from the repository alone and time every phase.

The sum of the phases is the recovery time a rebuild reaches; on the lab site it starts from
nothing (no hosts, no mirror) and leaves the site up for inspection until `gpufleet lab down`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Phase:
    name: str
    ok: bool
    seconds: float
    detail: str


def run_phases(
    steps: list[tuple[str, Callable[[], tuple[bool, str]]]], starting: Callable[[int, str], None]
) -> list[Phase]:
    """Run phases in order, timing each; stop at the first that fails, since the rest builds on it.
    `starting(number, name)` is told as each begins."""
    phases = []
    for number, (name, step) in enumerate(steps, start=1):
        starting(number, name)
        start = time.monotonic()
        ok, detail = step()
        phases.append(Phase(name, ok, time.monotonic() - start, detail))
        if not ok:
            break
    return phases

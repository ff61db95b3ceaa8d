"""`gpufleet rehearse` from nothing: wall time per phase, cold (empty caches, as on a fresh machine)
against warm (the base image and packages cached), in one session.

Cold is the disaster-recovery figure: nothing on the machine but the repository. Warm is what a
repeated rehearsal costs. Target (issue 3): the whole rebuild <= 5 minutes on this 2-core machine.
Needs root (the lab). Leaves the lab up, as rehearse does. Writes bench/results/lab_rehearse.md.
"""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import met, write  # noqa: E402
from gpufleet.inventory.load import load_inventory  # noqa: E402
from gpufleet.lab import hosts  # noqa: E402
from gpufleet.lab.hosts import exclusive  # noqa: E402
from gpufleet.lab.paths import LabPaths  # noqa: E402
from gpufleet.provision.cli import rehearse  # noqa: E402
from gpufleet.provision.rehearse import Phase  # noqa: E402

TARGET_S = 300.0


def main() -> None:
    cache = LabPaths.default().cache
    if cache.exists():
        shutil.rmtree(cache)  # cold: what a fresh machine has
    inv, paths = load_inventory("lab"), LabPaths.default()
    runs: dict[str, list[Phase]] = {}
    for name in ("cold", "warm"):
        hosts.down(inv, paths, print)  # both start from nothing; the teardown is not the rebuild
        runs[name] = rehearse("lab")
    for name, phases in runs.items():
        assert all(p.ok for p in phases), (name, [(p.name, p.detail) for p in phases if not p.ok])
    names = [p.name for p in runs["cold"]]
    totals = {k: sum(p.seconds for p in v) for k, v in runs.items()}
    lines = [
        "# `gpufleet rehearse` (lab site) from nothing: seconds per phase",
        "",
        f"`.venv/bin/python bench/lab_rehearse.py` on {platform.node()} ({platform.machine()}), one session: "
        "cold = empty caches (debootstrap and every package downloaded), warm = the same rebuild again "
        "with the base tarball and packages cached. Each starts with no lab hosts.",
        "",
        "| phase | cold (s) | warm (s) | cold / warm |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(names):
        cold, warm = runs["cold"][i].seconds, runs["warm"][i].seconds
        lines.append(f"| {name} | {cold:.1f} | {warm:.1f} | {cold / warm:.2f} |")
    lines.append(
        f"| **total** | **{totals['cold']:.1f}** | **{totals['warm']:.1f}** | "
        f"{totals['cold'] / totals['warm']:.2f} |"
    )
    lines += [
        "",
        f"Target <= {TARGET_S:.0f} s: cold {met(totals['cold'] <= TARGET_S)} "
        f"({totals['cold'] / TARGET_S:.2f} of it), warm {met(totals['warm'] <= TARGET_S)} "
        f"({totals['warm'] / TARGET_S:.2f} of it).",
        "",
    ]
    write("lab_rehearse.md", lines)


if __name__ == "__main__":
    # The machine has one lab: wait for a test run using it (tests/integration/test_lab_site.py).
    with exclusive(Path("/run/gpufleet-lab-session.lock"), "test session", timeout_s=1800):
        main()

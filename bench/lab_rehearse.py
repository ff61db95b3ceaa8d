"""`gpufleet rehearse` from nothing: wall time per phase, cold (empty caches, as on a fresh machine)
against warm (the base image and packages cached), in one session.

Cold is the disaster-recovery figure: nothing on the machine but the repository. Warm is what a
repeated rehearsal costs. Target (issues 3, 16): the whole cold rebuild <= 5 minutes on an idle
2-core machine. The table records the machine's load (1-minute load average, sampled every 5 s
during each run) beside the times, since on a shared machine the load decides them.
Needs root (the lab). Leaves the lab up, as rehearse does. Writes bench/results/lab_rehearse.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import threading
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import met, write  # noqa: E402
from gpufleet.inventory.load import load_inventory  # noqa: E402
from gpufleet.lab import hosts  # noqa: E402
from gpufleet.lab.hosts import exclusive  # noqa: E402
from gpufleet.lab.paths import LabPaths  # noqa: E402
from gpufleet.progress import Lines  # noqa: E402
from gpufleet.provision.cli import rehearse  # noqa: E402
from gpufleet.provision.rehearse import Phase  # noqa: E402

TARGET_S = 300.0


def _sample_load(samples: list[float], stop: threading.Event) -> None:
    while True:
        samples.append(os.getloadavg()[0])
        if stop.wait(5):
            return


def main() -> None:
    cache = LabPaths.default().cache
    if cache.exists():
        shutil.rmtree(cache)  # cold: what a fresh machine has
    inv, paths = load_inventory("lab"), LabPaths.default()
    runs: dict[str, list[Phase]] = {}
    load: dict[str, list[float]] = {}
    for name in ("cold", "warm"):
        with Lines(Console()) as lines:
            hosts.down(inv, paths, lines)  # both start from nothing; the teardown is not the rebuild
        load[name], stop = [], threading.Event()
        sampler = threading.Thread(target=_sample_load, args=(load[name], stop), daemon=True)
        sampler.start()
        runs[name] = rehearse("lab")
        stop.set()
        sampler.join()
    for name, phases in runs.items():
        assert all(p.ok for p in phases), (name, [(p.name, p.detail) for p in phases if not p.ok])
    names = [p.name for p in runs["cold"]]
    totals = {k: sum(p.seconds for p in v) for k, v in runs.items()}
    lines = [
        "# `gpufleet rehearse` (lab site) from nothing: seconds per phase",
        "",
        f"`.venv/bin/python bench/lab_rehearse.py` on {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs), one session: "
        "cold = empty caches (mmdebstrap and every package downloaded), warm = the same rebuild again "
        "with the base tarball and packages cached. Each starts with no lab hosts.",
        "",
        "Load during the runs (1-minute load average; "
        f"{os.cpu_count()} is this machine fully busy): "
        + "; ".join(f"{k} mean {sum(v) / len(v):.1f}, max {max(v):.1f}" for k, v in load.items() if v)
        + ".",
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
    # This rebuilds the user's lab, which the lab tests expect to find unchanged: wait for a run of
    # them (tests/integration/test_lab_site.py holds this lock).
    with exclusive(Path("/run/gpufleet-test-lab-session.lock"), "test session", timeout_s=1800):
        main()

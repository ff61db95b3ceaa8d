"""Load + validate + plan a generated site of 10 / 100 / 1,000 / 10,000 nodes.

Each size runs in a fresh process (so peak RSS is that size's alone) and is compared with a
baseline measured in the same run: `yaml.safe_load` of the same file alone, what a plain
loader pays before it has validated or planned anything.
Targets: <= 2 s at 1,000 nodes on a 2-core machine, and linear growth (time per node flat).
Writes bench/results/model_scale.md.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import write  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)


def measure(path: str) -> dict[str, float]:
    from gpufleet.inventory.load import load_inventory
    from gpufleet.plan import plan_site

    text = Path(path).read_text()
    t0 = time.perf_counter()
    yaml.safe_load(text)
    t_yaml = time.perf_counter() - t0
    t0 = time.perf_counter()
    inv = load_inventory(path)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = plan_site(inv)
    t_plan = time.perf_counter() - t0
    assert len(plan.node_digests) == len(inv.nodes)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"yaml_s": t_yaml, "load_s": t_load, "plan_s": t_plan, "peak_mib": peak_mib}


def main() -> None:
    from bench.sitegen import generate_site

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            path = Path(tmp) / f"site-{size}.yaml"
            path.write_text(yaml.safe_dump(generate_site(size), sort_keys=False))
            proc = subprocess.run(
                [sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=True
            )
            rows.append({"nodes": size, **json.loads(proc.stdout)})
    lines = [
        "# Load + validate + plan a generated site",
        "",
        f"`python bench/model_scale.py` on {platform.machine()}, Python {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores. Each size in a fresh process. Baseline: `yaml.safe_load` of the same file alone.",
        "",
        "| nodes | yaml.safe_load (baseline) s | load + validate s | plan s | total s | total / baseline "
        "| µs per node | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        total = r["load_s"] + r["plan_s"]
        lines.append(
            f"| {r['nodes']:,} | {r['yaml_s']:.3f} | {r['load_s']:.3f} | {r['plan_s']:.3f} | {total:.3f} "
            f"| {total / r['yaml_s']:.1f}x | {total / r['nodes'] * 1e6:.0f} | {r['peak_mib']:.0f} |"
        )
    at_1000 = next(r for r in rows if r["nodes"] == 1_000)
    per_node = [(r["load_s"] + r["plan_s"]) / r["nodes"] for r in rows if r["nodes"] >= 1_000]
    lines += [
        "",
        f"Target <= 2 s at 1,000 nodes: {at_1000['load_s'] + at_1000['plan_s']:.2f} s. "
        f"Growth 1,000 -> 10,000 nodes: time per node x{per_node[-1] / per_node[0]:.2f} (1.0 is linear).",
        "",
    ]
    write("model_scale.md", lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2])))
    else:
        main()

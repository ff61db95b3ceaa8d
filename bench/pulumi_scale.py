"""Evaluate the Pulumi program (all layers) under mocks for generated sites of 10 / 100 / 1,000 GPU nodes.

"All layers": the on-prem stack (nodes, Ceph and Kubernetes roles, platform, serving) and the
burst stack reading its outputs, as `pulumi preview` would run them back to back. Each case
runs in a fresh process (so peak RSS is that case's alone) and is compared with a baseline
measured in the same run: load + validate + plan of the same site — the decisions the program
carries out, without Pulumi. The ratio is what the Pulumi layer costs on top of the plan.
Target: <= 10 s at 1,000 GPU nodes on a 2-core machine, and linear growth (time per node flat).
Writes bench/results/pulumi_scale.md.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import report  # noqa: E402

GPU_NODES = (10, 100, 1_000)
TARGET_S = 10.0
RUNS = 3
ONPREM, BURST = "gen-onprem", "gen-burst"


def site_doc(gpu_nodes: int) -> dict[str, Any]:
    """A dc1-shaped site with exactly `gpu_nodes` GPU nodes, burst-ready like dc1."""
    from bench.sitegen import generate_site

    total = gpu_nodes + 6
    while total - 3 - max(3, total // 10) < gpu_nodes:
        total += 1
    doc = generate_site(total)
    dc1 = yaml.safe_load((HERE.parent / "inventories" / "dc1" / "nodes.yaml").read_text())
    doc["site"]["burst"]["vpn_gateway"] = dc1["site"]["burst"]["vpn_gateway"]
    # Burst nodes resolve the control-plane name through the site's DNS servers.
    doc["site"]["networks"]["dns"] = dc1["site"]["networks"]["dns"]
    for key in ("triton_image", "model_revision", "burst_ami", "burst_model_revision"):
        doc["bom"][key] = dc1["bom"][key]
    assert sum("gpu" in n["roles"] for n in doc["nodes"]) == gpu_nodes
    return doc


def config(layer: str) -> dict[str, str]:
    base = {
        "gpufleet:site": "gen",
        "gpufleet:layer": layer,
        "gpufleet:owner": "bench",
        "gpufleet:costCenter": "bench",
    }
    return base | ({"gpufleet:onpremStack": f"organization/gpufleet/{ONPREM}"} if layer == "burst" else {})


def one(kind: str) -> dict[str, float]:
    """Runs in the child process: GPUFLEET_INVENTORIES points at the generated site."""
    t0 = time.perf_counter()
    if kind == "baseline":
        from gpufleet.inventory.load import load_inventory
        from gpufleet.plan.site import plan_site

        plan = plan_site(load_inventory("gen"))
        resources = len(plan.node_digests)
    else:
        from gpufleet.preview.program import evaluate

        onprem = evaluate(ONPREM, config=config("onprem"))
        burst = evaluate(
            BURST, config=config("burst"), references={f"organization/gpufleet/{ONPREM}": onprem.outputs}
        )
        resources = len(onprem.resources) + len(burst.resources)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "resources": resources,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_case(kind: str, inventories: Path) -> dict[str, float]:
    env = {**os.environ, "GPUFLEET_INVENTORIES": str(inventories)}
    out = subprocess.run(
        [sys.executable, __file__, "--one", kind],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    rows = []
    for gpus in GPU_NODES:
        with tempfile.TemporaryDirectory() as tmp:
            doc = site_doc(gpus)
            (Path(tmp) / "gen").mkdir()
            (Path(tmp) / "gen" / "nodes.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            # Alternate the two so that load from other work on the machine drifts over both alike.
            runs = [(run_case("baseline", Path(tmp)), run_case("program", Path(tmp))) for _ in range(RUNS)]
            base = min((r[0] for r in runs), key=lambda r: r["seconds"])
            prog = min((r[1] for r in runs), key=lambda r: r["seconds"])
        rows.append((gpus, len(doc["nodes"]), base, prog))
        print(
            f"{gpus} GPU nodes: program {prog['seconds']:.2f}s, baseline {base['seconds']:.2f}s",
            file=sys.stderr,
        )
    write(rows)


def write(rows: list[tuple[int, int, dict[str, float], dict[str, float]]]) -> None:
    lines = [
        "# Pulumi program evaluation under mocks",
        "",
        f"`python bench/pulumi_scale.py` on {platform.machine()} ({os.cpu_count()} cores), Python {platform.python_version()}.",
        "Program: the on-prem stack then the burst stack of a generated dc1-shaped site, each run by",
        "`gpufleet.preview.program.evaluate` (real program, mocked engine). Baseline: load + validate +",
        f"plan of the same site in the same run. Best of {RUNS}, each in a fresh process (imports included).",
        "",
        "| GPU nodes | nodes | resources | baseline s | program s | program / baseline | program ms per node | peak MiB baseline | peak MiB program |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for gpus, nodes, base, prog in rows:
        lines.append(
            f"| {gpus:,} | {nodes:,} | {int(prog['resources']):,} | {base['seconds']:.2f} | {prog['seconds']:.2f} | "
            f"{prog['seconds'] / base['seconds']:.1f}x | {1000 * prog['seconds'] / nodes:.2f} | "
            f"{base['peak_mib']:.0f} | {prog['peak_mib']:.0f} |"
        )
    largest = rows[-1]
    # Marginal cost of one more node between sizes: flat means linear growth.
    marginal = [1000 * (b[3]["seconds"] - a[3]["seconds"]) / (b[1] - a[1]) for a, b in pairwise(rows)]
    lines += [
        "",
        f"Target: <= {TARGET_S:g} s at {largest[0]:,} GPU nodes: "
        f"{report.met(largest[3]['seconds'] <= TARGET_S)} ({largest[3]['seconds']:.2f} s).",
        "Growth: marginal ms per added node "
        + ", ".join(
            f"{a[0]:,}->{b[0]:,}: {m:.2f}" for (a, b), m in zip(pairwise(rows), marginal, strict=True)
        )
        + " (flat means linear; the rest is the fixed cost of imports and the platform's fixed resources).",
        "",
    ]
    report.write("pulumi_scale.md", lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
    else:
        main()

"""bench/results/gate_h200x2.md from what bench/gate_h200x2.sh wrote on the GPU machine.

    python bench/gate_report.py OUT_DIR     (here, after the run; copies the raw reports beside it)

The figures are judged by the code the gate runs (gpufleet.verify.perf) against the plan of the
h200x2 site (gpufleet.plan.perf): measured, minimum, expected, and their ratio.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import RESULTS, write
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.perf import plan_perf
from gpufleet.verify.perf import (
    allreduce_busbw,
    clocks_under_load,
    parse_probe,
)

RUNS = {
    "pass": "the gate, healthy node",
    "p2p-disabled": "degraded: `NCCL_P2P_DISABLE=1` (all-reduce through host memory)",
    "gpu-hidden": "degraded: one GPU hidden (`CUDA_VISIBLE_DEVICES=0`)",
    "h100-refused": "the h100 site on this machine",
}


def main(out_dir: Path) -> None:
    inv = load_inventory("h200x2")
    plan = plan_perf(inv, inv.nodes[0])
    assert plan is not None
    commands = [line.split("\t") for line in (out_dir / "commands.tsv").read_text().splitlines()]
    run = parse_probe((out_dir / "probe.json").read_text())
    lines = [
        "# The admission gate on the two-GPU H200 machine",
        "",
        f"Machine: `nvidia-h200-x2`, {'; '.join(g.strip() for g in (out_dir / 'gpus.txt').read_text().splitlines())}"
        " (index, name, driver, PCIe gen, width); torch "
        f"{run.torch}, NCCL {run.nccl}. Run with `bash bench/gate_h200x2.sh OUT` from the repository root"
        " (it exports NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1"
        " PYTHONUNBUFFERED=1 for every command below), rendered here by `python bench/gate_report.py OUT`;"
        " the raw reports are in `bench/results/gate_h200x2/`.",
        "",
        "| run | exact command | exit | seconds | checks |",
        "|---|---|---:|---:|---|",
    ]
    for name, rc, seconds, command in commands:
        if name not in RUNS:
            continue
        report = json.loads((out_dir / f"{name}.json").read_text())
        counts: dict[str, int] = {}
        for r in report["results"]:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        lines.append(f"| {RUNS[name]} | `{command}` | {rc} | {seconds} | {summary} |")
    lines += ["", "What the degraded runs and the h100 site failed on (each check's one line):", ""]
    for name in ("p2p-disabled", "gpu-hidden", "h100-refused"):
        report = json.loads((out_dir / f"{name}.json").read_text())
        for r in report["results"]:
            if r["outcome"] == "failed":
                lines.append(f"- {name}, `{r['check']}`: {r['message']}")
    busbw = allreduce_busbw(run)
    lines += [
        "",
        f"Figures of the probe run on its own (`{commands[-1][3]}`, {commands[-1][2]} s), against the plan"
        f" ({plan.interconnect}; minimum = {plan.memory_copy_tb_s.share:g} x expected):",
        "",
        "| figure | measured | minimum | expected | measured / expected |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(what: str, got: float, minimum: float, expected: float, unit: str) -> None:
        lines.append(f"| {what} | {got:.3g} {unit} | {minimum:.3g} | {expected:.3g} | {got / expected:.2f} |")

    for figure in plan.allreduce_gb_s:
        row(
            f"all-reduce {figure.bytes >> 20} MiB bus bandwidth",
            busbw[figure.bytes],
            figure.minimum,
            figure.expected,
            "GB/s",
        )
    for result in sorted(run.results, key=lambda r: r.rank):
        g = result.rank
        assert result.copy_ is not None and result.matmul is not None
        row(
            f"GPU {g} memory copy",
            result.copy_.per_second() / 1e12,
            plan.memory_copy_tb_s.minimum,
            plan.memory_copy_tb_s.expected,
            "TB/s",
        )
        for direction in ("h2d", "d2h"):
            got = result.host_device[direction].per_second() / 1e9
            row(
                f"GPU {g} {direction}",
                got,
                plan.host_device_gb_s.minimum,
                plan.host_device_gb_s.expected,
                "GB/s",
            )
        tflops = result.matmul.per_second() / 1e12
        row(
            f"GPU {g} bf16 matmul", tflops, plan.matmul_tflops.minimum, plan.matmul_tflops.expected, "TFLOP/s"
        )
    for gpu, clocks in sorted(clocks_under_load(run).items()):
        lines.append(
            f"\nGPU {gpu} under the matmul: SM clock down to {clocks.min_sm_mhz} MHz of {clocks.max_sm_mhz} max"
            f" (minimum allowed {plan.min_load_clock_share * clocks.max_sm_mhz:.0f}),"
            f" clock-event reasons {clocks.reasons:#x} over {clocks.samples} samples."
        )
    write("gate_h200x2.md", [*lines, ""])
    raw = RESULTS / "gate_h200x2"
    raw.mkdir(exist_ok=True)
    for name in [*RUNS, "probe"]:
        shutil.copy(out_dir / f"{name}.json", raw / f"{name}.json")
    shutil.copy(out_dir / "commands.tsv", raw / "commands.tsv")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

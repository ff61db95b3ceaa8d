"""The perf part's runner on this machine's CPU: the probe as the host suite ships and runs it
(base64 through a shell, one process per rank, gloo where the GPU nodes use NCCL), its output
parsed and judged; and `gpufleet verify --part perf` failing here, where there is no GPU.

What this cannot see: CUDA timing, NCCL, pinned host copies and clock sampling run only on a GPU
node (bench/results/gate_h200x2.md); their parsing and verdicts are tested from the outputs
recorded there (tests/unit/test_perf.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.model.site import Inventory
from gpufleet.plan.perf import Figure, PerfPlan, plan_perf
from gpufleet.verify.perf import (
    allreduce_busbw,
    judge_allreduce,
    judge_matmul,
    judge_memory_copy,
    parse_probe,
    probe_command,
)
from tests.conftest import REPO, site_data

pytestmark = pytest.mark.integration

MIB = 1 << 20


def _plan(**changes: Any) -> PerfPlan:
    doc = site_data("h200x2")
    doc["site"]["performance"] = {"python": sys.executable}
    inv = Inventory.model_validate(doc)
    plan = plan_perf(inv, inv.nodes[0])
    assert plan is not None
    return plan.model_copy(update=changes)


def _probe(plan: PerfPlan) -> tuple[int, str]:
    proc = subprocess.run(
        ["bash", "-c", probe_command(plan, device="cpu")], capture_output=True, text=True, timeout=600
    )
    return proc.returncode, proc.stdout


def test_the_probe_measures_and_the_verdicts_follow_the_figures() -> None:
    sizes = [1 * MIB, 4 * MIB]
    allreduce = [
        a.model_copy(update={"bytes": s}) for a, s in zip(_plan().allreduce_gb_s, sizes, strict=False)
    ]
    # A deadline for a CPU shared with other work, not a GPU node's.
    plan = _plan(allreduce_gb_s=allreduce, deadline_s=300)
    code, stdout = _probe(plan)
    run = parse_probe(stdout)
    assert code == 0 and run.errors == [] and run.device == "cpu" and run.ranks == 2
    assert sorted(r.rank for r in run.results) == [0, 1]
    busbw = allreduce_busbw(run)
    assert sorted(busbw) == sizes and all(v > 0 for v in busbw.values())
    # A CPU is far below an H200's figures: every verdict fails, naming what it measured.
    failures = judge_allreduce(run, plan)
    assert len(failures) == 2 and failures[0].startswith("NCCL all-reduce 1 MiB bus bandwidth: ")
    assert all(
        " GB/s, expected >= 217 (0.8 x 271 for 2 GPUs" in f or "expected >= 276" in f for f in failures
    )
    assert len(judge_memory_copy(run, plan)) == 2 and len(judge_matmul(run, plan)) == 2
    # Held to what it did measure, the same runs pass.
    low = Figure(expected=1e-6, share=1.0, minimum=1e-6)
    relaxed = plan.model_copy(
        update={
            "allreduce_gb_s": [a.model_copy(update=low.model_dump()) for a in plan.allreduce_gb_s],
            "memory_copy_tb_s": low,
            "matmul_tflops": low,
        }
    )
    assert (
        judge_allreduce(run, relaxed) == judge_memory_copy(run, relaxed) == judge_matmul(run, relaxed) == []
    )


def test_the_probe_stops_at_its_deadline() -> None:
    code, stdout = _probe(_plan(deadline_s=1))
    run = parse_probe(stdout)
    assert code == 1
    assert run.errors == ["rank 0: stopped at the 1 s deadline", "rank 1: stopped at the 1 s deadline"]
    assert judge_memory_copy(run, _plan())[0].startswith("GPU 0 memory copy: not measured (rank 0: stopped")


def test_verify_perf_fails_here_without_a_gpu(tmp_path: Path) -> None:
    doc: dict[str, Any] = site_data("h200x2")
    doc["site"]["performance"] = {"python": sys.executable}
    folder = tmp_path / "inventories" / "here"
    folder.mkdir(parents=True)
    (folder / "nodes.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "verify", str(folder), "--local", "--json", "--part", "perf"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["ok"] is False
    outcomes = {r["check"]: (r["outcome"], r["message"]) for r in report["results"]}
    assert {r["part"] for r in report["results"]} == {"perf"}
    assert outcomes["test_probe_ran_within_its_deadline"] == (
        "failed",
        "AssertionError: 0 GPUs visible to CUDA, 2 to measure",
    )
    assert outcomes["test_nccl_allreduce_bus_bandwidth"][1] == (
        "AssertionError: NCCL all-reduce: not measured (0 GPUs visible to CUDA, 2 to measure)"
    )
    assert "nvidia-smi topo -m" in outcomes["test_gpus_linked_as_planned"][1]


def _rank_pid(probe: int, rank: int) -> int | None:
    children = Path(f"/proc/{probe}/task/{probe}/children").read_text().split()
    for pid in children:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--rank" in argv and argv[argv.index(b"--rank") + 1] == str(rank).encode():
            return int(pid)
    return None


def test_a_failed_rank_stops_the_others_before_the_deadline() -> None:
    """Rank 1 dies before it joins: rank 0 would wait for it in init_process_group for 30 minutes.
    The probe must stop rank 0 on seeing the failure, not at its deadline (120 s here)."""
    probe = REPO / "gpufleet" / "verify" / "probe.py"
    args = [sys.executable, str(probe), "--gpus", "2", "--device", "cpu", "--deadline-s", "120"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            pid = _rank_pid(proc.pid, 1)
            if pid:
                break
            time.sleep(0.05)
        assert pid, "rank 1 never started"
        os.kill(pid, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=150)
    finally:
        proc.kill()
    run = parse_probe(stdout)
    assert proc.returncode == 1
    assert run.errors == ["rank 0: stopped because another rank failed", "rank 1: exited -9: "]


def test_a_node_without_torch_fails_every_check_on_one_line() -> None:
    """gpufleet's node deploy installs no torch: python3 there cannot run the probe. This machine's
    system python3 has no torch either; every perf verdict must name that, not a traceback."""
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.fail(f"{python} imports torch here: this test needs an interpreter without it")
    plan = _plan(python=python)
    code, stdout = _probe(plan)
    run = parse_probe(stdout)
    assert code == 1 and run.torch is None and len(run.errors) == 1
    assert run.errors[0].startswith(f"{python} cannot import torch (No module named 'torch')")
    assert judge_allreduce(run, plan) == [f"NCCL all-reduce: not measured ({run.errors[0]})"]

"""Measure one node: NCCL all-reduce bus bandwidth, memory copy, host<->device copy and matmul
throughput per GPU, with clocks and clock-event reasons sampled while the GPUs are loaded.

The host suite ships this file to the node and runs it with the node's own python3 and torch, so
it imports nothing from gpufleet and nothing beyond the standard library and torch. It prints one
JSON document; what the figures mean for the node is decided elsewhere (gpufleet.verify.perf).

    python3 probe.py --gpus 2 --sizes 67108864,1073741824 --deadline-s 45

One worker process per GPU (one rank each, NCCL between them); `--device cpu` runs the same code
on the CPU with gloo, which is how CI tests it. Every step runs a fixed number of iterations on a
fixed size, and the whole run is stopped at `--deadline-s`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

WARMUP = 5
ITERS = 20
COPY_BYTES = {"cuda": 1 << 30, "cpu": 64 << 20}
HOST_BYTES = 256 << 20
MATMUL_N = {"cuda": 8192, "cpu": 512}
MATMUL_S = {"cuda": 3.0, "cpu": 0.5}
SAMPLE_S = 0.25
SMI_LOAD = (
    "nvidia-smi --query-gpu=index,clocks.sm,clocks.max.sm,clocks_event_reasons.active,"
    "power.draw,temperature.gpu --format=csv,noheader,nounits"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timer(torch: Any, device: Any) -> Any:
    """Seconds for `fn()` run `n` times, after the device has finished all of it."""

    def timed(fn: Any, n: int) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1000
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    return timed


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    rank, world, cuda = args.rank, args.gpus, args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    timed = _timer(torch, device)
    out: dict[str, Any] = {"rank": rank}
    if world > 1:
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method=f"tcp://127.0.0.1:{args.port}",
            rank=rank,
            world_size=world,
            device_id=device if cuda else None,
        )
        # bf16, as serving's tensor-parallel all-reduces; gloo has no bf16 sum.
        dtype = torch.bfloat16 if cuda else torch.float32
        out["allreduce"] = []
        for size in args.sizes:
            buf = torch.ones(size // dtype.itemsize, dtype=dtype, device=device)
            for _ in range(WARMUP):
                dist.all_reduce(buf)
            dist.barrier()
            seconds = timed(lambda b=buf: dist.all_reduce(b), ITERS)
            out["allreduce"].append({"bytes": size, "iters": ITERS, "seconds": seconds})
            del buf
    size = COPY_BYTES[args.device]
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(WARMUP):
        dst.copy_(src)
    # A copy reads and writes every byte.
    out["copy"] = {"bytes": 2 * size, "iters": ITERS, "seconds": timed(lambda: dst.copy_(src), ITERS)}
    if cuda:
        host = torch.empty(HOST_BYTES, dtype=torch.uint8, pin_memory=True)
        gpu = torch.empty(HOST_BYTES, dtype=torch.uint8, device=device)
        out["host_device"] = {}
        # One GPU at a time: the figure is this GPU's link, not the host's memory shared by all.
        for turn in range(world):
            if turn == rank:
                for name, (a, b) in {"h2d": (gpu, host), "d2h": (host, gpu)}.items():
                    for _ in range(WARMUP):
                        a.copy_(b, non_blocking=True)
                    seconds = timed(lambda a=a, b=b: a.copy_(b, non_blocking=True), ITERS)
                    out["host_device"][name] = {"bytes": HOST_BYTES, "iters": ITERS, "seconds": seconds}
            if world > 1:
                dist.barrier()
    n = MATMUL_N[args.device]
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(WARMUP):
        a @ b
    if world > 1:
        dist.barrier()
    # Long enough for the clocks to settle under the load and be sampled a few times.
    started, iters, seconds = time.time(), 0, 0.0
    while seconds < MATMUL_S[args.device]:
        seconds += timed(lambda: a @ b, 10)
        iters += 10
    out["matmul"] = {
        "flop": 2 * n**3,
        "iters": iters,
        "seconds": seconds,
        "window": [started, time.time()],
        "dtype": str(dtype).removeprefix("torch."),
    }
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


def sample_clocks(timeout_s: float) -> list[dict[str, Any]]:
    """One sample per GPU; TimeoutError when nvidia-smi does not answer (a GPU off the bus)."""
    try:
        proc = subprocess.run(SMI_LOAD.split(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"nvidia-smi did not answer within {timeout_s:.0f} s") from None
    return [{"t": time.time(), "line": line} for line in proc.stdout.strip().splitlines()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="ranks: one per GPU")
    parser.add_argument("--sizes", default="", help="all-reduce message sizes in bytes, comma-separated")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16", help="matmul")
    parser.add_argument("--deadline-s", type=float, default=45)
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.rank is not None:
        print(json.dumps(worker(args)), flush=True)
        return 0
    # The deadline covers the whole run, loading torch included.
    deadline = time.monotonic() + args.deadline_s

    try:
        import torch
    except ImportError as exc:
        # Nothing is measured: every perf check fails on this one line.
        error = f"{sys.executable} cannot import torch ({exc}); site.performance.python names the interpreter"
        nothing = {"device": args.device, "ranks": args.gpus, "torch": None, "nccl": None, "env": {}}
        print(json.dumps({**nothing, "visible": None, "results": [], "clocks": [], "errors": [error]}))
        return 1

    cuda = args.device == "cuda"
    available = cuda and torch.cuda.is_available()
    nccl = torch.cuda.nccl.version() if available else None  # type: ignore[no-untyped-call]
    doc: dict[str, Any] = {
        "device": args.device,
        "ranks": args.gpus,
        "torch": torch.__version__,
        "nccl": ".".join(map(str, nccl)) if nccl else None,
        "env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_") or k == "CUDA_VISIBLE_DEVICES"},
        "visible": torch.cuda.device_count() if cuda else None,
        "results": [],
        "clocks": [],
        "errors": [],
    }
    if cuda and doc["visible"] < args.gpus:
        doc["errors"].append(f"{doc['visible']} GPUs visible to CUDA, {args.gpus} to measure")
        print(json.dumps(doc))
        return 1
    base = [sys.executable, os.path.abspath(__file__), "--gpus", str(args.gpus), "--device", args.device]
    base += ["--dtype", args.dtype]
    base += ["--sizes", ",".join(map(str, args.sizes)), "--port", str(_free_port())]
    procs = [
        subprocess.Popen([*base, "--rank", str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(args.gpus)
    ]
    smi = cuda and shutil.which("nvidia-smi") is not None
    # A rank that fails leaves the others waiting for it in NCCL: stop them all. Every rank is
    # polled each time (a short-circuit would miss a later rank's failure until the deadline).
    while time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes) or any(codes):
            break
        if smi:
            try:
                doc["clocks"] += sample_clocks(min(10.0, max(1.0, deadline - time.monotonic())))
            except TimeoutError as exc:
                # Stop sampling, not measuring: the clocks check then fails naming this.
                doc["errors"].append(str(exc))
                smi = False
        time.sleep(SAMPLE_S)
    failed = any(p.poll() for p in procs)
    for rank, proc in enumerate(procs):
        killed = proc.poll() is None
        if killed:
            proc.kill()
            why = "because another rank failed" if failed else f"at the {args.deadline_s:g} s deadline"
            doc["errors"].append(f"rank {rank}: stopped {why}")
        stdout, stderr = proc.communicate()
        if proc.returncode == 0 and stdout.strip():
            doc["results"].append(json.loads(stdout.strip().splitlines()[-1]))
        elif not killed:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            doc["errors"].append(f"rank {rank}: exited {proc.returncode}: {tail}")
    print(json.dumps(doc))
    return 0 if not doc["errors"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

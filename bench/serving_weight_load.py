"""Weight-load throughput: safetensors files from local disk into GPU memory (GPU machine).

What a replica (or a burst node, from its local NVMe copy) spends between "pod started" and
"weights resident": vLLM reads safetensors shards through `safetensors` and copies each tensor
to its GPU. For files of 1 to 20 GiB this measures, cold (file pages dropped from the page
cache with POSIX_FADV_DONTNEED after an fsync, so the disk is read) and warm (page cache):

- `safetensors`: `safetensors.torch.load_file(path, device="cuda:N")`, the engine's loader format;
- `raw`: the same bytes read sequentially into a pinned host buffer and copied to the GPU, the
  ceiling any loader of that disk can reach (the baseline of the ratio);
- both GPUs at once, one file each: what a node's disk gives when every GPU loads its shard.

    python bench/serving_weight_load.py --dir /tmp/wl --out bench/results   # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

GIB = 2**30
TENSOR_BYTES = 512 * 2**20  # 512 MiB shards of one file: a large expert or embedding block
CHUNK = 64 * 2**20


def write_file(path: Path, size_gib: int) -> None:
    """A safetensors file of `size_gib` GiB of FP8 tensors (DeepSeek's served weight type)."""
    n = size_gib * GIB // TENSOR_BYTES
    tensors = {
        f"model.layers.{i}.mlp.experts.w": torch.randint(
            0, 255, (TENSOR_BYTES,), dtype=torch.uint8, device="cuda"
        )
        .cpu()
        .view(torch.float8_e4m3fn)
        .reshape(-1, 1024)
        for i in range(n)
    }
    save_file(tensors, str(path))
    evict(path)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def load_safetensors(path: Path, device: str) -> int:
    tensors = load_file(str(path), device=device)
    torch.cuda.synchronize(device)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def load_raw(path: Path, device: str) -> int:
    staging = torch.empty(CHUNK, dtype=torch.uint8, pin_memory=True)
    view = memoryview(staging.numpy())
    size = path.stat().st_size
    target = torch.empty(size, dtype=torch.uint8, device=device)
    done = 0
    with path.open("rb", buffering=0) as f:
        while done < size:
            n = f.readinto(view)
            if not n:
                break
            target[done : done + n].copy_(staging[:n])
            done += n
    torch.cuda.synchronize(device)
    return done


def timed(fn: Any, path: Path, device: str, cold: bool) -> dict[str, float]:
    if cold:
        evict(path)
    start = time.perf_counter()
    nbytes = fn(path, device)
    seconds = time.perf_counter() - start
    torch.cuda.empty_cache()
    return {"seconds": seconds, "gib": nbytes / GIB, "gib_s": nbytes / GIB / seconds}


def disk_of(path: Path) -> str:
    out = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True).stdout.splitlines()
    return out[-1] if out else "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 10, 20])
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    rows = []
    for size in args.sizes:
        path = args.dir / f"w{size}.safetensors"
        t0 = time.perf_counter()
        write_file(path, size)
        row: dict[str, Any] = {"size_gib": size, "write_s": time.perf_counter() - t0}
        # Alternate the order so neither method always reads a disk the other just warmed.
        row["raw_cold"] = timed(load_raw, path, "cuda:0", cold=True)
        row["safetensors_cold"] = timed(load_safetensors, path, "cuda:0", cold=True)
        row["safetensors_warm"] = timed(load_safetensors, path, "cuda:0", cold=False)
        row["raw_warm"] = timed(load_raw, path, "cuda:0", cold=False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    parallel: dict[str, Any] | None = None
    if gpus >= 2 and len(args.sizes) >= 1:
        size = max(s for s in args.sizes if s <= 10)
        paths = [args.dir / f"w{size}.safetensors"]
        extra = args.dir / f"w{size}b.safetensors"
        write_file(extra, size)
        paths.append(extra)
        for p in paths:
            evict(p)
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            total = sum(pool.map(load_safetensors, paths, ["cuda:0", "cuda:1"]))
        seconds = time.perf_counter() - start
        parallel = {"files": 2, "size_gib": size, "seconds": seconds, "gib_s": total / GIB / seconds}
        print(json.dumps({"parallel": parallel}), flush=True)
    result = {
        "gpu": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "torch": torch.__version__,
        "host": platform.node(),
        "disk": disk_of(args.dir),
        "rows": rows,
        "parallel_two_gpus": parallel,
    }
    (args.out / "serving_weight_load_h200.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serving_weight_load_h200.md").write_text(table(result))
    print(table(result))


def table(r: dict[str, Any]) -> str:
    lines = [
        "# Weight load: safetensors from local disk into GPU memory",
        "",
        f"{r['gpus']}x {r['gpu']}, torch {r['torch']}; disk: `{r['disk']}`. Cold: file pages evicted",
        "(fsync + POSIX_FADV_DONTNEED) before the load; warm: from the page cache. `raw` reads the same",
        "bytes sequentially into a pinned buffer and copies them to the GPU: the disk's ceiling.",
        "",
        "| file GiB | raw cold GiB/s | safetensors cold GiB/s | ratio | raw warm GiB/s | safetensors warm GiB/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        rc, sc = row["raw_cold"]["gib_s"], row["safetensors_cold"]["gib_s"]
        lines.append(
            f"| {row['size_gib']} | {rc:.2f} | {sc:.2f} | {sc / rc:.2f} | "
            f"{row['raw_warm']['gib_s']:.2f} | {row['safetensors_warm']['gib_s']:.2f} |"
        )
    if r["parallel_two_gpus"]:
        p = r["parallel_two_gpus"]
        lines += [
            "",
            f"Two GPUs loading one {p['size_gib']} GiB file each, cold, at once: {p['gib_s']:.2f} GiB/s together.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

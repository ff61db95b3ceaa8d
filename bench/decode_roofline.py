"""Is a decode step's cost the weight bytes over memory bandwidth? The burst capacity model says so.

    python bench/decode_roofline.py --out bench/results        # on a GPU machine

`gpufleet.model.catalog.decode_rate` ranks burst instance types by a memory-bandwidth roofline:
each decode step reads every weight once, so a replica's steps per second are its GPUs' bandwidth
over its weight bytes. This measures that on one GPU, with what a decode step is made of (a batch
of token vectors times every weight matrix, BF16, 8192 x 8192 matrices):

- time per step against the weight bytes (2 to 48 GiB) at serving batch sizes: linear in the bytes
  is what the roofline assumes;
- the bandwidth a step achieves, against a device-to-device copy of the same bytes in the same run
  (the baseline: the most the memory gives to a simple stream);
- the batch size from which compute, not bandwidth, sets the step time (the ridge): the roofline
  holds below it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

DIM = 8192
GIB = 2**30
SIZES_GIB = (2, 8, 24, 48)
BATCHES = (1, 8, 32, 64, 128, 256, 512, 1024, 2048)
REPEATS = 5


def _timed(fn: object, repeats: int = REPEATS) -> float:
    """Median seconds of `fn()` on the GPU (CUDA events), after one warm-up call."""
    assert callable(fn)
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--small", action="store_true", help="tiny sizes, to try the script")
    args = parser.parse_args()
    dim, sizes, batches = (DIM, SIZES_GIB, BATCHES) if not args.small else (1024, (1, 2), (1, 32))
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    # The baseline, before the weights take the memory: a copy reads and writes every byte once.
    src = torch.empty(min(sizes) * GIB // 2, device=dev, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy = 2 * min(sizes) * GIB / _timed(lambda src=src, dst=dst: dst.copy_(src))
    del src, dst
    per_matrix = dim * dim * 2
    weights = [
        torch.randn(dim, dim, device=dev, dtype=torch.bfloat16) for _ in range(max(sizes) * GIB // per_matrix)
    ]
    rows = []
    for size in sizes:
        ws = weights[: size * GIB // per_matrix]
        nbytes = len(ws) * per_matrix
        for batch in batches:
            x = torch.randn(batch, dim, device=dev, dtype=torch.bfloat16)

            def step(ws: list[torch.Tensor] = ws, x: torch.Tensor = x) -> None:
                for w in ws:
                    torch.matmul(x, w.T)

            seconds = _timed(step)
            rows.append(
                {
                    "weights_gib": size,
                    "batch": batch,
                    "step_ms": seconds * 1000,
                    "bandwidth_tb_s": nbytes / seconds / 1e12,
                    "tflops": 2 * batch * nbytes / 2 / seconds / 1e12,
                    "vs_copy": (nbytes / seconds) / copy,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = next((t for t in ("h100", "h200") if t.upper() in name), "gpu")
    record = {"device": name, "copy_tb_s": copy / 1e12, "rows": rows}
    (args.out / f"decode_roofline_{tag}.json").write_text(json.dumps(record, indent=2))
    (args.out / f"decode_roofline_{tag}.md").write_text(report(name, sizes, batches, rows, copy))


def report(
    name: str, sizes: tuple[int, ...], batches: tuple[int, ...], rows: list[dict[str, float]], copy: float
) -> str:
    at = {(r["weights_gib"], r["batch"]): r for r in rows}
    lines = [
        f"# Decode step vs the memory-bandwidth roofline ({name})",
        "",
        "`python bench/decode_roofline.py`: a decode step's matrix work (a batch of token vectors times "
        f"every weight matrix, BF16), timed with CUDA events, median of {REPEATS}; the baseline is a "
        f"device-to-device copy in the same run: {copy / 1e12:.2f} TB/s.",
    ]

    def table(title: str, key: str) -> list[str]:
        head = ["", title, "", "| weights | " + " | ".join(f"batch {b}" for b in batches) + " |"]
        head.append("|---|" + "---:|" * len(batches))
        return head + [
            f"| {size} GiB | " + " | ".join(f"{at[(size, b)][key]:.2f}" for b in batches) + " |"
            for size in sizes
        ]

    lines += table("Step time (ms) by weight bytes and batch:", "step_ms")
    lines += table(
        "Bandwidth a step achieves (weights read once per step), as a share of the copy's:", "vs_copy"
    )
    small, large = sizes[0], sizes[-1]
    lines += ["", "What it says for the capacity model:", ""]
    for b in batches:
        ratio = at[(large, b)]["step_ms"] / at[(small, b)]["step_ms"]
        slower = at[(large, b)]["step_ms"] / at[(large, batches[0])]["step_ms"]
        lines.append(
            f"- batch {b}: {large} GiB of weights take {ratio:.2f}x the time of {small} GiB (bytes ratio "
            f"{large / small:g}); the step is {slower:.2f}x batch {batches[0]}'s, at {at[(large, b)]['tflops']:.0f} TFLOP/s"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

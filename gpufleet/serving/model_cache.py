"""The model cache Job's program: fetch one pinned revision once per site, verify it, keep three.

Runs in the site's download Job (components/serving.py ships this file in a ConfigMap and runs
it with the Triton image's python3; only the standard library and, for the download,
huggingface_hub, which that image carries). Layout on the shared volume:

    <root>/<org>/<name>/<revision>/...       the repository's files at that revision
    <root>/<org>/<name>/<revision>/.verified  written last, once every shard checked out

Serving pods mount the volume read-only and wait for `.verified`: no pod downloads weights.

Verification against `model.safetensors.index.json`: every shard the index names exists, its
safetensors header parses, it holds exactly the tensors the index maps to it, each tensor's
byte range lies inside the file (a truncated shard fails), and the tensors' bytes add up to
the index's `metadata.total_size`. The hub's own SHA-256 of each LFS file is checked by
huggingface_hub while downloading.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from pathlib import Path

INDEX = "model.safetensors.index.json"
MARKER = ".verified"
KEEP = 3
_DTYPE_BYTES = {"F8_E4M3": 1, "F8_E5M2": 1, "U8": 1, "I8": 1, "BOOL": 1, "BF16": 2, "F16": 2, "I16": 2}
_DTYPE_BYTES |= {"F32": 4, "I32": 4, "U32": 4, "F64": 8, "I64": 8, "U64": 8}


class CacheError(RuntimeError):
    pass


def _header(path: Path) -> tuple[dict[str, dict[str, object]], int]:
    """The tensors a shard declares, and how many bytes of data follow its header."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CacheError(f"{path.name}: shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 2**20:
            raise CacheError(f"{path.name}: header of {length} bytes")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return {name: dict(info) for name, info in header.items()}, path.stat().st_size - 8 - length


def verify(folder: Path) -> int:
    """Check a revision's shards against its index; returns the tensor bytes."""
    index_path = folder / INDEX
    if not index_path.is_file():
        raise CacheError(f"{folder}: no {INDEX}")
    index = json.loads(index_path.read_text())
    by_shard: dict[str, set[str]] = {}
    for tensor, shard in index["weight_map"].items():
        by_shard.setdefault(shard, set()).add(tensor)
    total = 0
    for shard, tensors in sorted(by_shard.items()):
        path = folder / shard
        if not path.is_file():
            raise CacheError(f"{shard}: missing")
        header, data = _header(path)
        if set(header) != tensors:
            raise CacheError(f"{shard}: holds {len(header)} tensors, the index maps {len(tensors)} to it")
        for name, info in header.items():
            begin, end = (int(x) for x in info["data_offsets"])  # type: ignore[attr-defined]
            if not 0 <= begin <= end <= data:
                raise CacheError(f"{shard}: {name} lies outside the file (truncated?)")
            shape = [int(d) for d in info["shape"]]  # type: ignore[attr-defined]
            count = 1
            for d in shape:
                count *= d
            if str(info["dtype"]) in _DTYPE_BYTES and count * _DTYPE_BYTES[str(info["dtype"])] != end - begin:
                raise CacheError(f"{shard}: {name} has {end - begin} bytes for shape {shape}")
            total += end - begin
    want = int(index.get("metadata", {}).get("total_size", total))
    if total != want:
        raise CacheError(f"tensors hold {total} bytes, the index says {want}")
    return total


def prune(model_dir: Path, current: str, keep: int = KEEP) -> list[str]:
    """Delete verified revisions beyond the newest `keep` (the current one always stays)."""
    done = [p for p in model_dir.iterdir() if (p / MARKER).is_file() and p.name != current]
    done.sort(key=lambda p: (p / MARKER).stat().st_mtime, reverse=True)
    removed = []
    for old in done[keep - 1 :]:
        shutil.rmtree(old)
        removed.append(old.name)
    return removed


def main(root: str, repo: str, revision: str) -> int:
    folder = Path(root) / repo / revision
    if not (folder / MARKER).is_file():
        from huggingface_hub import snapshot_download  # in the Job's image only

        snapshot_download(repo_id=repo, revision=revision, local_dir=str(folder))
        size = verify(folder)
        (folder / MARKER).write_text(json.dumps({"revision": revision, "bytes": size, "at": time.time()}))
        print(f"{repo}@{revision}: {size} bytes verified")
    removed = prune(folder.parent, revision)
    print(f"kept the newest {KEEP} revisions; removed {removed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

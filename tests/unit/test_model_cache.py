"""The model cache Job's verification and pruning, on real safetensors files written here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gpufleet.serving.model_cache import MARKER, CacheError, prune, verify


def _revision(folder: Path) -> int:
    folder.mkdir(parents=True)
    shards = {
        "model-00001-of-00002.safetensors": {"a": torch.zeros(4, 8, dtype=torch.bfloat16)},
        "model-00002-of-00002.safetensors": {
            "b": torch.zeros(16, dtype=torch.float32),
            "c": torch.zeros(3, dtype=torch.int64),
        },
    }
    weight_map = {}
    total = 0
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name))
        for t, v in tensors.items():
            weight_map[t] = name
            total += v.numel() * v.element_size()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total


def test_a_complete_revision_verifies(tmp_path: Path) -> None:
    total = _revision(tmp_path / "r1")
    assert verify(tmp_path / "r1") == total == 4 * 8 * 2 + 16 * 4 + 3 * 8


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model-00002-of-00002.safetensors").unlink(), "missing"),
        (lambda f: os.truncate(f / "model-00001-of-00002.safetensors", 100), "outside the file"),
        (
            lambda f: (f / "model.safetensors.index.json").write_text(
                json.dumps(
                    {
                        "metadata": {"total_size": 1},
                        "weight_map": {
                            "a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors",
                            "c": "model-00002-of-00002.safetensors",
                        },
                    }
                )
            ),
            "the index says 1",
        ),
        (
            lambda f: (f / "model.safetensors.index.json").write_text(
                json.dumps(
                    {
                        "weight_map": {
                            "a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors",
                        }
                    }
                )
            ),
            "holds 2 tensors, the index maps 1",
        ),
    ],
)
def test_a_damaged_revision_fails(tmp_path: Path, damage: object, message: str) -> None:
    _revision(tmp_path / "r1")
    damage(tmp_path / "r1")  # type: ignore[operator]
    with pytest.raises(CacheError, match=message):
        verify(tmp_path / "r1")


def test_the_newest_three_verified_revisions_stay(tmp_path: Path) -> None:
    for i, name in enumerate(["r1", "r2", "r3", "r4", "r5"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / MARKER).write_text("{}")
        os.utime(tmp_path / name / MARKER, (1000 + i, 1000 + i))
    (tmp_path / "partial").mkdir()  # a download in progress is never pruned
    # r2 is the pin again (a rollback): it stays, with the two newest others.
    assert sorted(prune(tmp_path, "r2")) == ["r1", "r3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial", "r2", "r4", "r5"]

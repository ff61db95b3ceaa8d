"""Write a Triton model repository: the generated config.pbtxt plus the DeepSeek-architecture model."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gpufleet.plan.triton import TritonModelConfig

BACKEND_MODEL = Path(__file__).parent / "backend" / "model.py"


class ToyDeepseek(BaseModel):
    """Architecture of the random-weight DeepSeek-V3 the repository serves (MLA + MoE, small)."""

    model_config = ConfigDict(frozen=True)

    vocab_size: int = 32000
    hidden_size: int = 1024
    intermediate_size: int = 2816
    moe_intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    n_routed_experts: int = 16
    n_shared_experts: int = 1
    num_experts_per_tok: int = 4
    first_k_dense_replace: int = 1
    q_lora_rank: int = 384
    kv_lora_rank: int = 256
    qk_rope_head_dim: int = 32
    qk_nope_head_dim: int = 64
    v_head_dim: int = 64
    n_group: int = 4
    topk_group: int = 2
    seed: int = 0


TINY = ToyDeepseek(
    vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2,
    q_lora_rank=32, kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_group=2, topk_group=1,
)  # fmt: skip


def write_repository(root: Path, config: TritonModelConfig, arch: ToyDeepseek) -> Path:
    """`root/<model>/config.pbtxt` and `root/<model>/1/model.py`; returns the model's folder."""
    served = config.model_copy(
        update={"parameters": {**config.parameters, **{k: str(v) for k, v in arch.model_dump().items()}}}
    )
    folder = root / config.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(served.pbtxt())
    shutil.copyfile(BACKEND_MODEL, folder / "1" / "model.py")
    return folder

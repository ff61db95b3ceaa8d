"""Triton Python-backend model: DeepSeek-V3 architecture (MLA attention, MoE) built on the spot.

transformers' DeepseekV3 at a small size with seeded random weights: nothing is downloaded,
yet every request runs the real architecture's prefill and greedy decode. The architecture
size comes from the model configuration's parameters (see gpufleet.serving.repository).
Requests in one dynamic batch are left-padded to a common length and decoded together.
"""

import json
import os
from typing import Any

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

ARCH_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "first_k_dense_replace", "q_lora_rank", "kv_lora_rank",
    "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "n_group", "topk_group",
)  # fmt: skip
PAD = 0


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        on_gpu = args["model_instance_kind"] == "GPU"
        if not on_gpu:
            # Instances share the cores: without this each one spawns a thread per core.
            instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // instances))
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        dtype = torch.bfloat16 if on_gpu else torch.float32
        arch: dict[str, Any] = {k: int(params[k]) for k in ARCH_KEYS if k in params}
        torch.manual_seed(int(params.get("seed", "0")))
        model_config = DeepseekV3Config(**arch, max_position_embeddings=4096, tie_word_embeddings=False)
        model = DeepseekV3ForCausalLM(model_config)
        # transformers types `to` through a wrapper mypy cannot follow.
        self.model = model.to(self.device, dtype).eval()  # type: ignore[arg-type]

    def execute(self, requests: list[Any]) -> list[Any]:
        # Tensors cross the backend boundary by DLPack, not numpy: the stub's numpy bridge is
        # built for numpy 1 and mis-sizes outputs under numpy 2 (seen on the GPU machine).
        batches = []
        for request in requests:
            ids = from_dlpack(pb_utils.get_input_tensor_by_name(request, "input_ids").to_dlpack())
            new = from_dlpack(pb_utils.get_input_tensor_by_name(request, "max_tokens").to_dlpack())
            batches.append((ids.cpu().long(), new.cpu()[:, 0].tolist()))
        prompts = [(row, n) for ids, counts in batches for row, n in zip(ids, counts, strict=True)]
        width = max(len(p) for p, _ in prompts)
        max_new = max(n for _, n in prompts)
        ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, (prompt, _) in enumerate(prompts):
            ids[i, width - len(prompt) :] = prompt
            mask[i, width - len(prompt) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=False,
                max_new_tokens=max_new,
                min_new_tokens=max_new,
                pad_token_id=PAD,
                eos_token_id=None,
            )
        generated = out[:, width:].to("cpu", torch.int32)
        responses: list[Any] = []
        row = 0
        for _, counts in batches:
            tokens = torch.stack([generated[row + i, :n] for i, n in enumerate(counts)]).contiguous()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("output_ids", tokens)]))
            row += len(counts)
        return responses

"""Triton model repositories decided from the serving plan. Pure.

Production: `vllm_repository`, what Triton's vLLM backend loads (`config.pbtxt` naming the
backend, `1/model.json` holding the engine arguments of gpufleet.plan.engine). The engine
schedules and batches itself (continuous batching), so Triton's dynamic batcher stays off.

CPU test double: `double_model_config`, a small DeepSeek-V3-architecture model in Triton's
Python backend (gpufleet/serving/backend/model.py), which the real `tritonserver` binary runs
here in CI and behind the gateway tests. It batches dynamically (preferred batch sizes, a queue
delay bounded by the SLO) with two instances per replica; `naive_double_config` is the baseline
the serving benchmark compares against. What the double cannot show: vLLM's own scheduling,
KV-cache pressure and multi-node ranks; the engine arguments are checked against vLLM's
definitions instead (tests/unit/test_engine_args.py).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from gpufleet.plan.node import Frozen
from gpufleet.plan.site import ServingPlan

MAX_BATCH_SIZE = 32
INSTANCES_PER_REPLICA = 2
# Waiting to fill a batch costs latency: spend at most 1% of the queue-wait SLO on it.
QUEUE_DELAY_SLO_FRACTION = 0.01
QUEUE_DELAY_BOUNDS_US = (100, 10_000)


class TensorSpec(Frozen):
    name: str
    data_type: Literal["TYPE_INT32", "TYPE_FP32", "TYPE_STRING"]
    dims: list[int]


class DynamicBatching(Frozen):
    preferred_batch_size: list[int]
    max_queue_delay_microseconds: int


class TritonModelConfig(Frozen):
    name: str
    backend: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    instance_count: int
    instance_kind: Literal["KIND_GPU", "KIND_CPU"]
    dynamic_batching: DynamicBatching | None
    parameters: dict[str, str]

    def pbtxt(self) -> str:
        """Triton's protobuf text format, as config.pbtxt in the model repository."""

        def tensors(specs: list[TensorSpec]) -> str:
            return ",\n".join(
                f'  {{ name: "{t.name}", data_type: {t.data_type}, dims: [ {", ".join(map(str, t.dims))} ] }}'
                for t in specs
            )

        lines = [
            f'name: "{self.name}"',
            f'backend: "{self.backend}"',
            f"max_batch_size: {self.max_batch_size}",
            f"input [\n{tensors(self.inputs)}\n]",
            f"output [\n{tensors(self.outputs)}\n]",
            f"instance_group [ {{ count: {self.instance_count}, kind: {self.instance_kind} }} ]",
        ]
        if self.dynamic_batching is not None:
            sizes = ", ".join(map(str, self.dynamic_batching.preferred_batch_size))
            lines.append(
                "dynamic_batching {\n"
                f"  preferred_batch_size: [ {sizes} ]\n"
                f"  max_queue_delay_microseconds: {self.dynamic_batching.max_queue_delay_microseconds}\n"
                "}"
            )
        lines += [
            f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
            for k, v in sorted(self.parameters.items())
        ]
        return "\n".join(lines) + "\n"


LLM_INPUTS = [
    TensorSpec(name="input_ids", data_type="TYPE_INT32", dims=[-1]),
    TensorSpec(name="max_tokens", data_type="TYPE_INT32", dims=[1]),
]
LLM_OUTPUTS = [TensorSpec(name="output_ids", data_type="TYPE_INT32", dims=[-1])]


def double_model_config(
    serving: ServingPlan,
    *,
    backend: str = "python",
    kind: Literal["KIND_GPU", "KIND_CPU"] = "KIND_GPU",
    max_batch_size: int = MAX_BATCH_SIZE,
) -> TritonModelConfig:
    low, high = QUEUE_DELAY_BOUNDS_US
    delay = int(min(high, max(low, serving.slo_queue_wait_p99_s * 1e6 * QUEUE_DELAY_SLO_FRACTION)))
    preferred = [b for b in (4, 8, 16, 32, 64, 128) if b <= max_batch_size]
    return TritonModelConfig(
        name=serving.model,
        backend=backend,
        max_batch_size=max_batch_size,
        inputs=LLM_INPUTS,
        outputs=LLM_OUTPUTS,
        instance_count=INSTANCES_PER_REPLICA,
        instance_kind=kind,
        dynamic_batching=DynamicBatching(preferred_batch_size=preferred, max_queue_delay_microseconds=delay),
        parameters=_parameters(serving),
    )


def naive_double_config(
    serving: ServingPlan, *, backend: str = "python", kind: Literal["KIND_GPU", "KIND_CPU"] = "KIND_GPU"
) -> TritonModelConfig:
    """The usual first deployment: one instance, no dynamic batching (one request per execution)."""
    return double_model_config(serving, backend=backend, kind=kind).model_copy(
        update={"instance_count": 1, "dynamic_batching": None}
    )


def _parameters(serving: ServingPlan) -> dict[str, str]:
    params = {"hf_repo": serving.hf_repo, "revision": serving.revision or "unpinned"}
    if serving.shape is not None:
        params["tensor_parallel"] = str(serving.shape.tensor_parallel)
        params["nodes_per_replica"] = str(serving.shape.nodes)
    return params


def vllm_repository(name: str, engine: dict[str, Any]) -> dict[str, str]:
    """Files of one model in Triton's repository, by path under `<repository>/<name>/`."""
    config = "\n".join(
        [
            f'name: "{name}"',
            'backend: "vllm"',
            # The engine places itself on the GPUs (and ranks) its arguments name.
            "instance_group [ { count: 1, kind: KIND_MODEL } ]",
            # vLLM's own counters (queue, KV-cache use, TTFT) beside Triton's on /metrics.
            'parameters { key: "REPORT_CUSTOM_METRICS" value: { string_value: "true" } }',
        ]
    )
    return {
        "config.pbtxt": config + "\n",
        "1/model.json": json.dumps(engine, indent=2, sort_keys=True) + "\n",
    }

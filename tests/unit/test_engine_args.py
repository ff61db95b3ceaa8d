"""The generated engine configuration against vLLM's own argument definitions (from its wheel).

What this cannot see: whether vLLM accepts a combination (e.g. MTP with pipeline parallelism on
a given release) or the weights at the path; those fail at engine start, in the canary.
"""

from __future__ import annotations

import json
import time

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.inventory.stacks import load_stack
from gpufleet.plan.aws import plan_burst
from gpufleet.plan.engine import ENGINE_ARG_CHOICES, ENGINE_ARG_TYPES
from gpufleet.plan.k8s import burst_workloads, onprem_workload
from gpufleet.plan.site import plan_site
from tests.vllm_definitions import VLLM_VERSION, Definitions, load, problems, wheel_path


@pytest.fixture(scope="module")
def defs() -> Definitions:
    start = time.monotonic()
    d = load(wheel_path())
    print(f"vLLM definitions read in {time.monotonic() - start:.1f}s")
    return d


def _engines() -> dict[str, dict[str, object]]:
    out = {}
    for site in ("dc1", "dc1-dr"):
        inv = load_inventory(site)
        w = onprem_workload(inv, plan_site(inv))
        assert w is not None
        out[site] = json.loads(w.model_files["1/model.json"])
    stack = load_stack("burst-prod")
    p = plan_burst(stack.inventory, stack.config, "stacks/Pulumi.burst-prod.yaml")
    for w in burst_workloads(stack.inventory, plan_site(stack.inventory), p.fleet, 1):
        out[w.name] = json.loads(w.model_files["1/model.json"])
    return out


@pytest.mark.parametrize("name", ["dc1", "dc1-dr", "burst-prod per GPU class"])
def test_generated_model_json_is_what_vllm_accepts(name: str, defs: Definitions) -> None:
    engines = _engines()
    if name == "burst-prod per GPU class":
        classes = [e for n, e in engines.items() if "-burst-" in n]
        assert len(classes) == 4  # H100, H200, A100, L40S
        for engine in classes:
            assert problems(engine, defs.engine, defs, "model.json") == []
        return
    engine = engines[name]
    # The wheel checked is the vLLM the site's Triton image carries (bom.vllm).
    assert load_inventory("dc1-dr" if name == "dc1-dr" else "dc1").bom.vllm == VLLM_VERSION
    assert problems(engine, defs.engine, defs, "model.json") == []
    spec = engine.get("speculative_config")
    if spec is not None:
        assert isinstance(spec, dict)
        assert problems(spec, defs.speculative, defs, "model.json.speculative_config") == []


def test_the_shapes_of_dc1_and_dc1_dr() -> None:
    engines = _engines()
    # 2 x 8 H100: tensor parallel inside each node over NVLink, two pipeline stages over Ray.
    assert engines["dc1"]["tensor_parallel_size"] == 8 and engines["dc1"]["pipeline_parallel_size"] == 2
    assert engines["dc1"]["distributed_executor_backend"] == "ray"
    # 8 H200 hold the whole model: one node, vLLM's own worker processes.
    assert engines["dc1-dr"]["tensor_parallel_size"] == 8 and engines["dc1-dr"]["pipeline_parallel_size"] == 1
    assert engines["dc1-dr"]["distributed_executor_backend"] == "mp"
    for site in ("dc1", "dc1-dr"):
        e = engines[site]
        assert (
            e["quantization"] == "fp8"
            and e["kv_cache_dtype"] == "fp8"
            and e["enable_expert_parallel"] is True
        )
        # vLLM 0.27.1 rewrites every MTPModelTypes name but "mtp" to "mtp" with a deprecation
        # warning (SpeculativeConfig.__post_init__): name the method it keeps.
        assert e["speculative_config"] == {"method": "mtp", "num_speculative_tokens": 1}
        assert isinstance(e["model"], str) and e["model"].endswith(
            "/56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
        )
    # The distilled burst model is dense BF16 and has no MTP head; L40S and L4 have FP8 for the KV cache.
    for name, burst in engines.items():
        if "-burst-" in name:
            assert "speculative_config" not in burst and "quantization" not in burst
            assert burst["enable_expert_parallel"] is False


def test_every_overridable_argument_is_vllms_with_its_type(defs: Definitions) -> None:
    samples = {int: 7, float: 0.5, bool: True, str: "fp8"}
    for key, kind in ENGINE_ARG_TYPES.items():
        assert problems({key: samples[kind]}, defs.engine, defs, "engine_args") == [], key
    # A string a site may set comes from a fixed set, each of which vLLM accepts; a free string
    # would reach every replica's engine unchecked.
    assert {k for k, kind in ENGINE_ARG_TYPES.items() if kind is str} == set(ENGINE_ARG_CHOICES)
    for key, choices in ENGINE_ARG_CHOICES.items():
        for choice in choices:
            assert problems({key: choice}, defs.engine, defs, "engine_args") == [], (key, choice)


@pytest.mark.parametrize(
    ("args", "fails"),
    [
        ({"max_num_seq": 64}, "max_num_seq: not an argument"),
        ({"max_num_seqs": "64"}, "max_num_seqs: '64' is not"),
        ({"enable_chunked_prefill": 1}, "enable_chunked_prefill: 1 is not"),
        ({"kv_cache_dtype": "fp9"}, "kv_cache_dtype: 'fp9' is not"),
        # `str | DistributedExecutorBackend`: stricter than vLLM, a string must be one of the Literal's.
        ({"distributed_executor_backend": "mpi"}, "distributed_executor_backend: 'mpi' is not"),
        ({"gpu_memory_utilization": 1}, None),
    ],
)
def test_the_check_fails_an_unknown_or_mistyped_argument(
    args: dict[str, object], fails: str | None, defs: Definitions
) -> None:
    found = problems(args, defs.engine, defs, "model.json")
    if fails is None:
        assert found == []
    else:
        assert len(found) == 1 and fails in found[0]


def test_a_wrong_speculative_method_fails(defs: Definitions) -> None:
    found = problems({"method": "deepseek_mpt"}, defs.speculative, defs, "speculative_config")
    assert len(found) == 1 and "deepseek_mpt" in found[0]


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (
            lambda d: d["site"]["serving"].update(tensor_parallel=6),
            "site.serving.tensor_parallel: 6 GPUs per replica does not divide the nodes' 8",
        ),
        (
            lambda d: d["site"]["serving"].update(tensor_parallel=4),
            "site.serving.tensor_parallel: deepseek-r1 (625 GiB of weights) does not fit 4 x",
        ),
        (
            lambda d: d["site"]["serving"].update(engine_args={"max_num_seq": 64}),
            "site.serving.engine_args.max_num_seq: not an engine argument a site may set",
        ),
        (
            lambda d: d["site"]["serving"].update(engine_args={"max_num_seqs": "64"}),
            "site.serving.engine_args.max_num_seqs: vLLM takes int, got '64'",
        ),
        (
            lambda d: d["bom"].pop("model_revision"),
            "bom.model_revision: production serves deepseek-r1: pin its revision",
        ),
        (
            lambda d: d["site"]["serving"].update(canary_from=d["bom"]["model_revision"]),
            "site.serving.canary_from: is bom.model_revision itself",
        ),
        (
            lambda d: d["site"]["serving"].update(canary_from="0123456", replicas=1),
            "site.serving.canary_from: a canary needs 2 or more replicas, not 1",
        ),
        (
            lambda d: d["bom"].update(triton_image="nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3"),
            "bom.triton_image: nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3 is not Triton's vLLM flavour",
        ),
        (lambda d: d["bom"].pop("vllm"), "bom.vllm: name the vLLM release"),
        # No Triton release carries vLLM 0.33 (Triton's compatibility matrix, vllm-python-py3).
        (
            lambda d: d["bom"].update(vllm="0.33.0"),
            "bom.vllm: Triton 26.08's vLLM image carries vLLM 0.27.1, not 0.33.0",
        ),
        (
            lambda d: d["bom"].update(triton_image="nvcr.io/nvidia/tritonserver:26.10-vllm-python-py3"),
            "bom.triton_image: no recorded vLLM for Triton 26.10",
        ),
        (lambda d: d["bom"].pop("gateway_image"), "bom.gateway_image: the admission gateway"),
        # vLLM's own bounds and cross-argument rules (CacheConfig: 0 < gpu_memory_utilization <= 1;
        # SchedulerConfig.verify_max_model_len): each of these starts no replica.
        (
            lambda d: d["site"]["serving"].update(engine_args={"gpu_memory_utilization": 90}),
            "site.serving.engine_args.gpu_memory_utilization: vLLM takes a fraction of each GPU in (0, 1], got 90",
        ),
        (
            lambda d: d["site"]["serving"].update(engine_args={"max_num_seqs": 0}),
            "site.serving.engine_args.max_num_seqs: vLLM takes 1 or more, got 0",
        ),
        (
            lambda d: d["site"]["serving"].update(engine_args={"max_num_batched_tokens": 128}),
            "site.serving.engine_args.max_num_batched_tokens: vLLM refuses 128 tokens per step below max_num_seqs",
        ),
        (
            lambda d: d["site"]["serving"].update(engine_args={"enable_chunked_prefill": False}),
            "site.serving.engine_args.enable_chunked_prefill: off, vLLM refuses max_num_batched_tokens (8192) below max_model_len (32768)",
        ),
        # Half of each H100 holds less than the 16-way share of the weights plus a step's activations.
        (
            lambda d: d["site"]["serving"].update(engine_args={"gpu_memory_utilization": 0.5}),
            "site.serving.tensor_parallel: deepseek-r1 (625 GiB of weights) does not fit 16 x H100-SXM-80GB with room for a KV cache in 0.5 of each GPU",
        ),
        (
            lambda d: d["site"]["serving"].update(max_model_len=200_000),
            "site.serving.max_model_len: deepseek-r1 was trained for 163840 tokens",
        ),
    ],
)
def test_a_serving_plan_no_engine_can_run_is_one_line_naming_the_key(
    edit: object, line: str, tmp_path: object
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from gpufleet.inventory.load import site_file

    doc = yaml.safe_load(site_file("dc1").read_text())
    edit(doc)  # type: ignore[operator]
    path = Path(str(tmp_path)) / "nodes.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    lines = [x for x in (run.stdout + run.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and line in lines[0], lines


def test_a_site_gpu_memory_utilization_sizes_the_batch() -> None:
    """max_num_seqs is sized from the share of each GPU vLLM will actually take."""
    import yaml

    from gpufleet.inventory.load import inventory_from_data, site_file

    doc = yaml.safe_load(site_file("dc1").read_text())
    base = _engines()["dc1"]
    doc["site"]["serving"]["engine_args"] = {"gpu_memory_utilization": 0.8}
    inv = inventory_from_data(doc, "nodes.yaml")
    w = onprem_workload(inv, plan_site(inv))
    assert w is not None
    lower = json.loads(w.model_files["1/model.json"])
    assert lower["gpu_memory_utilization"] == 0.8
    assert 1 <= int(lower["max_num_seqs"]) < int(base["max_num_seqs"])  # type: ignore[call-overload]

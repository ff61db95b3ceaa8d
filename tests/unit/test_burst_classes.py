"""The burst fleet's per GPU class Workloads (gpufleet.plan.k8s.burst_workloads), planned from
dc1's own inventory and fleet: each class's engine sized for its GPU alone, pinned to its nodes by
the label their user data sets, and every name the serving objects derive from it a valid label.

What this cannot see: whether the scheduler places the pods (the label's value is checked against
the user data's own line, not a kubelet's registration)."""

from __future__ import annotations

import re

from gpufleet.inventory.load import load_inventory
from gpufleet.inventory.stacks import load_stack
from gpufleet.model.catalog import GPUModel
from gpufleet.plan.aws import plan_burst, plan_fleet
from gpufleet.plan.engine import engine_args
from gpufleet.plan.k8s import Workload, burst_workloads
from gpufleet.plan.site import plan_site

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Every suffix components/serving.py and the gateway's SRV name add to a Workload's name.
SUFFIXES = ("", "-pods", "-model-repository", "-model-cache")


def _dc1() -> tuple[list[Workload], int]:
    """dc1's classes, and the max_num_seqs one engine for every GPU of the fleet would take."""
    inv = load_inventory("dc1")
    fleet = plan_fleet(inv, "dc1")
    workloads = burst_workloads(inv, plan_site(inv), fleet, 3)
    fleet_wide = engine_args(
        model=fleet.model,
        hf_repo=fleet.hf_repo,
        revision=fleet.revision,
        gpus=[i.gpu for i in fleet.instances],
        tensor_parallel=fleet.tensor_parallel,
        nodes=1,
        max_model_len=workloads[0].engine["max_model_len"],
        overrides={},
    )
    return workloads, fleet_wide["max_num_seqs"]


def test_each_gpu_class_has_its_own_engine() -> None:
    workloads, fleet_wide = _dc1()
    by_gpu = {GPUModel(w.node_selector["gpufleet.io/gpu-model"]): w for w in workloads}
    assert set(by_gpu) == {GPUModel.H100_SXM, GPUModel.H200, GPUModel.A100_80GB, GPUModel.L40S}
    seqs = {g: w.engine["max_num_seqs"] for g, w in by_gpu.items()}
    # The H200's 141 GiB hold more sequences than an H100's 80, which hold more than an L40S's 48;
    # the one fleet-wide engine took the L40S's memory with the A100's BF16 KV cache for all,
    # fewer than any class holds alone.
    assert seqs[GPUModel.H200] > seqs[GPUModel.H100_SXM] > seqs[GPUModel.L40S] > fleet_wide
    assert seqs[GPUModel.A100_80GB] > seqs[GPUModel.L40S]
    # FP8 KV cache where the GPU has FP8 (Hopper, Ada), not on the A100.
    kv = {g: w.engine["kv_cache_dtype"] for g, w in by_gpu.items()}
    assert kv == {
        GPUModel.H100_SXM: "fp8",
        GPUModel.H200: "fp8",
        GPUModel.L40S: "fp8",
        GPUModel.A100_80GB: "auto",
    }


def test_each_class_is_pinned_to_its_nodes_and_sized_by_its_roomiest_type() -> None:
    workloads, _ = _dc1()
    inv = load_inventory("dc1")
    fleet = plan_fleet(inv, "dc1")
    for w in workloads:
        gpu = GPUModel(w.node_selector["gpufleet.io/gpu-model"])
        assert w.node_selector["gpufleet.io/capacity"] == "spot"
        assert w.replicas == 3 * max(i.replicas for i in fleet.instances if i.gpu is gpu)
        assert w.tensor_parallel == fleet.tensor_parallel and w.engine["tensor_parallel_size"] == 4


def test_each_class_selects_the_label_its_nodes_user_data_sets() -> None:
    stack = load_stack("burst-prod")
    inv = stack.inventory
    p = plan_burst(inv, stack.config, "stacks/Pulumi.burst-prod.yaml")
    workloads = burst_workloads(inv, plan_site(inv), p.fleet, stack.config.burst_nodes)
    assert "gpufleet.io/gpu-model=$GPU_MODEL" in p.user_data
    for w in workloads:
        gpu = w.node_selector["gpufleet.io/gpu-model"]
        types = [i.name for i in p.fleet.instances if i.gpu.value == gpu]
        assert types
        for name in types:
            assert f"  {name}) GPU_MODEL={gpu};" in p.user_data


def test_every_derived_name_is_a_dns_label() -> None:
    workloads, _ = _dc1()
    names = {w.name for w in workloads}
    assert len(names) == len(workloads)
    assert "deepseek-r1-distill-llama-70b-burst-h200" in names
    for w in workloads:
        for suffix in SUFFIXES:
            assert DNS_LABEL.match(w.name + suffix), w.name + suffix

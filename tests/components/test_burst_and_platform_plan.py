"""The pure decisions the components carry out: Spot fleet, fallback model, network, workloads."""

from __future__ import annotations

import copy
from ipaddress import IPv4Network
from typing import Any

import pytest

from gpufleet.inventory.load import inventory_from_data
from gpufleet.model.catalog import AWS_GPU_INSTANCES, GPU_CATALOG, SERVING_MODELS
from gpufleet.model.errors import InputError
from gpufleet.model.site import Inventory
from gpufleet.model.stack import GpufleetConfig
from gpufleet.plan.aws import MIN_SPOT_TYPES, plan_burst, plan_fleet
from gpufleet.plan.k8s import nic_cluster_policy, onprem_workload, platform_charts
from gpufleet.plan.site import plan_site

CONFIG = GpufleetConfig.model_validate(
    {"gpufleet:site": "dc1", "gpufleet:layer": "burst", "gpufleet:owner": "o", "gpufleet:costCenter": "c"}
)


def inv(doc: dict[str, Any]) -> Inventory:
    return inventory_from_data(doc, "nodes.yaml")


@pytest.mark.parametrize("model", list(SERVING_MODELS))
def test_fleet_has_enough_types_each_holding_a_replica(dc1: dict[str, Any], model: str) -> None:
    doc = copy.deepcopy(dc1)
    doc["site"]["serving"]["model"] = model
    doc["site"]["serving"]["replicas"] = 1
    fleet = plan_fleet(inv(doc), "s")
    assert len(fleet.instances) >= MIN_SPOT_TYPES
    need = SERVING_MODELS[fleet.model].memory_gib
    for i in fleet.instances:
        it = AWS_GPU_INSTANCES[i.name]
        assert it.gpus >= fleet.tensor_parallel and i.replicas == it.gpus // fleet.tensor_parallel
        assert GPU_CATALOG[it.gpu].memory_gib * fleet.tensor_parallel >= need
    # The largest model that reaches MIN_SPOT_TYPES: never a smaller one than needed.
    assert SERVING_MODELS[fleet.model].memory_gib <= SERVING_MODELS[model].memory_gib
    assert fleet.fallback == (fleet.model != model)


def test_671b_falls_back_because_only_h200_instances_hold_it(dc1: dict[str, Any]) -> None:
    fleet = plan_fleet(inv(dc1), "s")
    assert fleet.fallback and fleet.model == "deepseek-r1-distill-llama-70b"
    assert fleet.revision == dc1["bom"]["burst_model_revision"]


def test_a_fallback_without_a_pinned_revision_is_bad_input(dc1: dict[str, Any]) -> None:
    """Refused when the inventory loads (validate, plan-site and every stack see the same line)."""
    del dc1["bom"]["burst_model_revision"]
    with pytest.raises(InputError) as exc:
        inv(dc1)
    assert exc.value.lines() == [
        "nodes.yaml: bom.burst_model_revision: burst nodes serve deepseek-r1-distill-llama-70b: pin its revision"
    ]


def test_too_few_instance_types_is_bad_input(dc1: dict[str, Any]) -> None:
    dc1["site"]["burst"]["instance_types"] = ["p5.48xlarge", "p5e.48xlarge"]
    with pytest.raises(InputError, match=r"site\.burst\.instance_types: no catalogued model fits 6"):
        plan_fleet(inv(dc1), "s")


def test_burst_needs_the_vpn_endpoint_and_the_ami(dc1: dict[str, Any]) -> None:
    del dc1["site"]["burst"]["vpn_gateway"]
    del dc1["bom"]["burst_ami"]
    with pytest.raises(InputError) as exc:
        plan_burst(inv(dc1), CONFIG, "f.yaml")
    assert [p.path for p in exc.value.problems] == [("site", "burst", "vpn_gateway"), ("bom", "burst_ami")]


def test_vpc_avoids_every_onprem_range(dc1: dict[str, Any]) -> None:
    dc1["site"]["kubernetes"]["pod_cidr"] = "172.16.0.0/15"
    p = plan_burst(inv(dc1), CONFIG, "f")
    vpc = IPv4Network(p.network.vpc_cidr)
    assert not any(vpc.overlaps(IPv4Network(c)) for c in p.network.onprem_cidrs)
    assert "172.16.0.0/15" in p.network.onprem_cidrs
    assert len({s.az for s in p.network.private}) >= 2
    assert all(IPv4Network(s.cidr).subnet_of(vpc) for s in [p.network.public, *p.network.private])


def test_desired_nodes_follow_stack_config(dc1: dict[str, Any]) -> None:
    config = CONFIG.model_copy(update={"burst_nodes": 3})
    assert plan_burst(inv(dc1), config, "f").desired_nodes == 3


def test_operators_never_install_what_pyinfra_owns(dc1: dict[str, Any]) -> None:
    site = inv(dc1)
    charts = {c.name: c for c in platform_charts(site, plan_site(site))}
    assert charts["gpu-operator"].values["driver"]["enabled"] is False
    assert charts["gpu-operator"].values["toolkit"]["enabled"] is False
    # The Network Operator runs only what its NicClusterPolicy names: no OFED driver container.
    policy = nic_cluster_policy(site)
    assert policy is not None and set(policy.spec) == {"rdmaSharedDevicePlugin"}
    assert "network-operator" in charts
    assert "lws" in charts  # 671B on H100 spans two nodes


def test_workload_spans_nodes_only_when_a_replica_needs_more_than_one(dc1: dict[str, Any]) -> None:
    site = inv(dc1)
    w = onprem_workload(site, plan_site(site))
    assert w is not None and w.multi_node and w.nodes_per_replica == 2 and w.gpus_per_pod == 8
    dc1["site"]["serving"]["model"] = "deepseek-r1-distill-qwen-32b"
    site = inv(dc1)
    w = onprem_workload(site, plan_site(site))
    assert w is not None and not w.multi_node and w.tensor_parallel == 1
    assert "lws" not in {c.name for c in platform_charts(site, plan_site(site))}

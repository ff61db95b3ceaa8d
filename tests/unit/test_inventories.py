"""The shipped inventories and stacks are valid and match one to one."""

from __future__ import annotations

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.inventory.stacks import load_stack, stack_names
from gpufleet.model.site import Role
from tests.conftest import SITES

# Described to be verified (gpufleet verify), not deployed: the accelerator machine.
VERIFY_ONLY = {"h100", "h200x2"}


def test_the_sites_ship() -> None:
    assert SITES == ["dc1", "dc1-dr", "h100", "h200x2", "lab"]


@pytest.mark.parametrize("site", SITES)
def test_site_validates(site: str) -> None:
    inv = load_inventory(site)
    assert inv.site.name == site


def test_dc1_is_the_production_shape() -> None:
    inv = load_inventory("dc1")
    by_role = {role: [n for n in inv.nodes if role in n.roles] for role in Role}
    assert len(by_role[Role.CONTROL_PLANE]) == 3
    assert len(by_role[Role.STORAGE]) == 4
    gpu_nodes = by_role[Role.GPU]
    assert len(gpu_nodes) == 8
    for node in gpu_nodes:
        assert node.gpu is not None and node.gpu.model == "H100-SXM-80GB" and node.gpu.count == 8
        assert [n.link_layer for n in node.nics.rdma] == ["infiniband"] * 8
        assert node.disks.nvme_scratch
    for node in by_role[Role.STORAGE]:
        assert node.disks.raid6 is not None and len(node.disks.raid6.members) >= 4
        assert all(d.startswith("/dev/nvme") for d in node.disks.ceph_osd)


def test_lab_is_small_and_gpu_free() -> None:
    inv = load_inventory("lab")
    assert [n.roles for n in inv.nodes].count([Role.CONTROL_PLANE]) == 1
    assert sum(Role.STORAGE in n.roles and Role.WORKER in n.roles for n in inv.nodes) == 3
    assert all(n.gpu is None for n in inv.nodes)
    assert inv.site.package_sources.mirror is not None


def test_dr_site_rebuilds_dc1_on_other_hardware() -> None:
    prod, dr = load_inventory("dc1"), load_inventory("dc1-dr")
    assert dr.site.environment == "dr"
    assert dr.site.serving == prod.site.serving
    assert dr.bom == prod.bom
    prod_gpus = {n.gpu.model for n in prod.nodes if n.gpu}
    dr_gpus = {n.gpu.model for n in dr.nodes if n.gpu}
    assert prod_gpus.isdisjoint(dr_gpus)


def test_stacks_and_inventories_match_one_to_one() -> None:
    stacks = [load_stack(name) for name in stack_names()]
    assert {s.name for s in stacks} == {"lab", "dc1-prod", "dc1-dr", "burst-prod"}
    onprem = [s.config.site for s in stacks if s.config.layer == "onprem"]
    assert sorted(onprem) == sorted(set(SITES) - VERIFY_ONLY), (
        "each deployed site has exactly one on-prem stack"
    )
    for stack in stacks:
        if stack.config.layer == "burst":
            assert stack.config.onprem_stack is not None
            assert stack.config.onprem_stack.endswith(
                next(
                    s.name
                    for s in stacks
                    if s.config.layer == "onprem" and s.config.site == stack.config.site
                )
            )

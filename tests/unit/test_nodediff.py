"""Node-plan changes as reviewers read them, reboot decisions, and which nodes a cluster waits for."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploys.reboot import reboot_why
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.expect import host_expectations
from gpufleet.plan.membership import membership
from gpufleet.plan.node import NodePlan, Package, Taint, plan_node
from gpufleet.plan.nodediff import plan_changes, reboot_reasons
from gpufleet.plan.site import plan_site
from gpufleet.provision.nodes import DEPLOYS

INV = load_inventory("dc1")
PLAN = plan_node(INV, INV.node("gpu01"))


def _driver(plan: NodePlan, name: str, version: str) -> NodePlan:
    packages = [
        p.model_copy(update={"name": name, "version": version}) if p.name.startswith("nvidia-driver-") else p
        for p in plan.packages
    ]
    return plan.model_copy(update={"packages": packages})


def test_changes_read_as_package_pins_kernel_arguments_and_sysctls() -> None:
    driver = _driver(PLAN, "nvidia-driver-580-open", "580.95.05-*")
    old = driver.model_copy(
        update={
            "kernel_cmdline": [a for a in PLAN.kernel_cmdline if a != "iommu=pt"],
            "sysctl": {**PLAN.sysctl, "vm.max_map_count": "65530"},
            "labels": {**PLAN.labels, "gpufleet.io/pool": "old"},
            "packages": [*driver.packages, Package(name="nvtop")],
        }
    )
    new = PLAN.model_copy(
        update={"taints": [*PLAN.taints, Taint(key="x.io/maint", value="1", effect="NoExecute")]}
    )
    assert plan_changes(old, new) == [
        "~ package nvidia-driver-580-open: 580.95.05-* (held) → 580.159.04-* (held)",
        "- package nvtop",
        "+ kernel argument iommu=pt",
        "~ sysctl vm.max_map_count: 65530 → 1048576",
        "- label gpufleet.io/pool",
        "+ taint x.io/maint=1:NoExecute",
    ]
    assert plan_changes(PLAN, PLAN) == []
    assert plan_changes(None, PLAN) == []


@pytest.mark.parametrize(
    ("old", "reasons"),
    [
        (
            _driver(PLAN, "nvidia-driver-580-open", "580.95.05-*"),
            ["NVIDIA driver 580.95.05-* → 580.159.04-*"],
        ),
        # Another branch's package at the same version string: still another module.
        (_driver(PLAN, "nvidia-driver-580", "580.159.04-*"), ["NVIDIA driver 580.159.04-* → 580.159.04-*"]),
        (
            PLAN.model_copy(update={"kernel_cmdline": PLAN.kernel_cmdline[:-1]}),
            ["kernel command line changed"],
        ),
        (PLAN.model_copy(update={"blacklist_modules": []}), ["module blacklist changed (initramfs)"]),
        (PLAN.model_copy(update={"sysctl": {}}), []),
        (None, []),
    ],
)
def test_what_needs_a_reboot(old: NodePlan | None, reasons: list[str]) -> None:
    assert reboot_reasons(old, PLAN) == reasons


def test_the_reboot_deploy_boots_for_the_plan_or_the_marker() -> None:
    assert reboot_why([], None) is None
    assert reboot_why(["kernel command line changed"], None) == "kernel command line changed"
    assert reboot_why([], "marked") == "/run/reboot-required: marked"


def test_the_core_is_control_planes_and_ceph_mons_and_mgrs_and_the_rest_join() -> None:
    plan = plan_site(INV)
    roles = membership(plan, [n.hostname for n in INV.nodes])
    assert set(roles.core) == set(plan.kubernetes.control_planes) | set(plan.ceph.mons) | set(plan.ceph.mgrs)  # type: ignore[union-attr]
    gpu = [n.hostname for n in INV.nodes if n.gpu is not None]
    assert gpu and all(roles.joins[h] == ("kubernetes",) for h in gpu)
    osd_only = [h for h in plan.ceph.osds if h not in roles.core]  # type: ignore[union-attr]
    assert all("ceph" in roles.joins[h] for h in osd_only)
    assert not set(roles.joins) & set(roles.core)


def test_the_provider_hands_the_host_suite_its_own_expectations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPUFLEET_EXPECT (written by verify_site(given=...)) replaces the inventory's expectations."""
    from tests.host.conftest import _given

    monkeypatch.delenv("GPUFLEET_EXPECT", raising=False)
    assert _given() is None
    expect = host_expectations(INV, INV.node("gpu01"), PLAN)
    changed = expect.model_copy(update={"hostname": "gpu77"})
    (tmp_path / "expect.json").write_text(changed.model_dump_json())
    monkeypatch.setenv("GPUFLEET_EXPECT", str(tmp_path / "expect.json"))
    assert _given() == changed


def test_every_deploy_the_provider_runs_resolves() -> None:
    import importlib

    for target in DEPLOYS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target

"""Admission thresholds from the serving plan, and the rendered haproxy.cfg through `haproxy -c`."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.inventory.stacks import load_stack
from gpufleet.plan.admission import (
    FALLBACK,
    PRIMARY,
    SHED,
    Backend,
    GatewayPlan,
    Tenant,
    plan_admission,
    plan_gateway,
)
from gpufleet.plan.aws import plan_burst
from gpufleet.plan.k8s import burst_workload, onprem_workload
from gpufleet.plan.site import plan_site
from gpufleet.serving.gateway import check_config, write_config


def _backend(name: str, rate: float) -> Backend:
    return Backend(name=name, model=name, servers=["127.0.0.1:1"], slots=4, rate_rps=rate)


@pytest.mark.parametrize(
    ("slo", "primary", "fallback", "p2", "p1", "shed"),
    [
        (2.0, 100.0, 10.0, 50, 100, 10),  # Little's law: 100 req/s x 2 s = a 200-request queue
        (0.5, 8.0, 2.0, 1, 2, 1),
        (2.0, 0.1, 0.1, 1, 1, 1),  # never below one request
    ],
)
def test_thresholds_follow_rate_and_slo(
    slo: float, primary: float, fallback: float, p2: int, p1: int, shed: int
) -> None:
    plan = plan_admission(slo, _backend(PRIMARY, primary), _backend(FALLBACK, fallback))
    assert plan.degrade_queue == {"P1": p1, "P2": p2}  # P0 has none: it is never degraded
    assert plan.shed_queue == shed
    assert plan.retry_after_s >= 1 and plan.p0_queue_timeout_s >= 10 * slo


def _site_gateway() -> GatewayPlan:
    stack = load_stack("burst-prod")
    inv = stack.inventory
    plan = plan_site(inv)
    fleet = plan_burst(inv, stack.config, "stacks/Pulumi.burst-prod.yaml").fleet
    onprem = onprem_workload(inv, plan)
    assert onprem is not None and plan.serving is not None and plan.serving.shape is not None
    return plan_gateway(
        plan.serving.slo_queue_wait_p99_s,
        onprem,
        plan.serving.shape.gpu,
        burst_workload(inv, plan, fleet, 1),
        fleet.instances[0].gpu,
    )


def test_dc1_gateway_is_sized_from_its_replicas() -> None:
    g = _site_gateway()
    # 4 replicas x 215 sequences of DeepSeek-R1 on 2 x 8 H100; the distilled model on burst nodes.
    assert g.primary.slots == 4 * 215 and g.primary.servers == ["deepseek-r1.serving.svc:8000"]
    assert g.fallback.model == "deepseek-r1-distill-llama-70b"
    assert g.admission.degrade_queue["P2"] < g.admission.degrade_queue["P1"] <= g.primary.rate_rps * 2.0


def test_the_rendered_config_is_valid_haproxy_and_p0_never_leaves_the_primary(tmp_path: Path) -> None:
    g = _site_gateway()
    keys = {"k0": Tenant(name="bank", priority="P0", requests_per_s=5)}
    config = write_config(tmp_path, g.admission, g.primary, g.fallback, keys, 8080, 8404)
    checked = check_config(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = [
        line.strip() for line in config.read_text().splitlines() if line.strip().startswith("use_backend")
    ]
    assert all(" p0" not in r for r in rules if FALLBACK in r or SHED in r)
    assert "k0" not in config.read_text()  # API keys only in the map files
    assert (tmp_path / "tenants.map").stat().st_mode & 0o077 == 0


def test_haproxy_rejects_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "bad.cfg").write_text("frontend api\n  bind 127.0.0.1:1\n  use_backend nowhere\n")
    assert check_config(tmp_path / "bad.cfg").returncode != 0

"""The degradation plan (gpufleet.plan.degrade): what moves for each site, and the order of the
writes, with the GPU bound checked over every state the writes can pass through."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.inventory.load import load_inventory
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.degrade import (
    Autoscaler,
    Current,
    DegradePlan,
    ScaleTarget,
    Step,
    degraded_workload,
    plan_degrade,
    scale_steps,
)
from gpufleet.plan.k8s import burst_workloads, onprem_workload
from gpufleet.plan.site import plan_site


def test_dc1_and_dc1_dr_plans_from_their_inventories() -> None:
    for site, kind, per in (("dc1", "LeaderWorkerSet", 4), ("dc1-dr", "Deployment", 2)):
        inv = load_inventory(site)
        plan = plan_site(inv)
        fleet = plan_fleet(inv, site)
        p = plan_degrade(inv, plan, fleet)
        assert p is not None and plan.serving is not None and plan.serving.shape is not None
        primary = onprem_workload(inv, plan)
        assert primary is not None
        assert p.primary == ScaleTarget(kind=kind, name=primary.name)  # type: ignore[arg-type]
        # A replica's GPUs over the fleet's tensor parallelism: 16 H100 / TP 4, 8 H200 / TP 4.
        assert p.per_onprem == per == plan.serving.shape.tensor_parallel // fleet.tensor_parallel
        assert p.autoscaler == Autoscaler(
            name=primary.name, min_replicas=primary.autoscale_min, max_replicas=primary.autoscale_max
        )
        assert p.max_degraded == p.primary_ceiling - 1


def test_the_distilled_pods_are_the_fallbacks_and_sit_on_the_sites_gpus() -> None:
    inv = load_inventory("dc1")
    plan = plan_site(inv)
    fleet = plan_fleet(inv, "dc1")
    w = degraded_workload(inv, plan, fleet)
    primary = onprem_workload(inv, plan)
    burst = burst_workloads(inv, plan, fleet, 0)[0]
    assert w is not None and primary is not None
    assert w.replicas == 0 and w.autoscale_max is None
    # The burst model, its revision and its tensor parallelism, served under the burst pods'
    # model name (the gateway's fallback rewrites paths to it; every class serves it).
    assert (w.model, w.revision, w.gpus_per_pod) == (fleet.model, fleet.revision, fleet.tensor_parallel)
    assert w.engine["served_model_name"] == burst.engine["served_model_name"]
    assert w.engine["tensor_parallel_size"] == fleet.tensor_parallel
    # On-prem GPUs of the site's type, from the site's model cache.
    assert w.node_selector == primary.node_selector and w.tolerations == primary.tolerations
    assert w.cache_storage_class == primary.cache_storage_class is not None
    assert w.labels["gpufleet.io/capacity"] == burst.labels["gpufleet.io/capacity"] == "spot"
    assert w.labels["app.kubernetes.io/component"] == "degraded"


def test_no_plan_where_the_burst_fleet_serves_the_sites_own_model() -> None:
    inv = load_inventory("dc1")
    plan = plan_site(inv)
    fleet = plan_fleet(inv, "dc1").model_copy(update={"fallback": False})
    assert plan_degrade(inv, plan, fleet) is None and degraded_workload(inv, plan, fleet) is None
    odd = plan_fleet(inv, "dc1").model_copy(update={"tensor_parallel": 3})  # does not divide 16
    assert plan_degrade(inv, plan, odd) is None


DC1 = DegradePlan(
    namespace="serving",
    primary=ScaleTarget(kind="LeaderWorkerSet", name="p"),
    primary_replicas=4,
    autoscaler=Autoscaler(name="p", min_replicas=2, max_replicas=4),
    distilled=ScaleTarget(kind="Deployment", name="d"),
    per_onprem=4,
    max_degraded=3,
)
FIXED = DC1.model_copy(update={"autoscaler": None})


def _lines(steps: list[Step]) -> list[str]:
    return [s.line for s in steps]


def test_order_tables() -> None:
    rows = [
        # plan, degraded, now (primary, distilled, hpa min, hpa max), the writes in order
        (DC1, 1, Current(primary=4, distilled=0, autoscaler_min=2, autoscaler_max=4),
         ["autoscaler 2..3", "primary 3", "distilled 4"]),
        (DC1, 3, Current(primary=4, distilled=0, autoscaler_min=2, autoscaler_max=4),
         ["autoscaler 1..1", "primary 1", "distilled 12"]),
        (DC1, 0, Current(primary=2, distilled=8, autoscaler_min=2, autoscaler_max=2),
         ["distilled 0", "autoscaler 2..4"]),
        (DC1, 1, Current(primary=2, distilled=8, autoscaler_min=2, autoscaler_max=2),
         ["distilled 4", "autoscaler 2..3"]),
        (DC1, 2, Current(primary=2, distilled=4, autoscaler_min=2, autoscaler_max=3),
         ["autoscaler 2..2", "distilled 8"]),
        (DC1, 0, Current(primary=4, distilled=0, autoscaler_min=2, autoscaler_max=4), []),
        (FIXED, 2, Current(primary=4, distilled=0), ["primary 2", "distilled 8"]),
        (FIXED, 0, Current(primary=2, distilled=8), ["distilled 0", "primary 4"]),
        (FIXED, 9, Current(primary=4, distilled=0), ["primary 1", "distilled 12"]),
    ]  # fmt: skip
    for plan, k, now, want in rows:
        assert _lines(scale_steps(plan, k, now)) == want, (k, now)


def _demand(p: DegradePlan, now: Current) -> int:
    """GPUs the workloads may ask for, in distilled replicas: the primary at the most its HPA may
    scale it to (it acts between any two writes), the distilled model at its count."""
    primary = now.primary if now.autoscaler_max is None else max(now.primary, now.autoscaler_max)
    return primary * p.per_onprem + now.distilled


def _apply(now: Current, step: Step) -> Current:
    if step.target == "autoscaler":
        return now.model_copy(update={"autoscaler_min": step.min_replicas, "autoscaler_max": step.replicas})
    if step.target == "primary":
        return now.model_copy(update={"primary": step.replicas})
    return now.model_copy(update={"distilled": step.replicas})


@settings(max_examples=400, deadline=None)
@given(
    hpa=st.booleans(),
    k_from=st.integers(0, 3),
    k_to=st.integers(-2, 6),
    hpa_low=st.integers(1, 4),
)
def test_no_write_ever_asks_for_more_gpus_than_the_site_holds(
    hpa: bool, k_from: int, k_to: int, hpa_low: int
) -> None:
    p = DC1 if hpa else FIXED
    total = p.primary_ceiling * p.per_onprem
    # Any state a previous call could leave: degraded by k_from, the HPA anywhere under its ceiling.
    ceiling = p.primary_ceiling - k_from
    now = Current(
        primary=min(hpa_low, ceiling) if hpa else ceiling,
        distilled=k_from * p.per_onprem,
        autoscaler_min=min(2, ceiling) if hpa else None,
        autoscaler_max=ceiling if hpa else None,
    )
    assert _demand(p, now) <= total
    for step in scale_steps(p, k_to, now):
        now = _apply(now, step)
        assert _demand(p, now) <= total, (step, now)
    want = max(0, min(k_to, p.max_degraded))
    assert now.distilled == want * p.per_onprem
    assert scale_steps(p, k_to, now) == [], "a second call finds nothing to do"

"""The production Degrader (gpufleet.burst.degrade) against the scale-subresource API double
(tests/k8sscale.py: answers shaped from the kubernetes client's own models and the recorded
Status body; what it cannot see is in its docstring), with dc1's and dc1-dr's plans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gpufleet.burst.degrade import KubernetesDegrader
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.degrade import DegradePlan, plan_degrade
from gpufleet.plan.site import plan_site
from tests.k8sscale import LWS_CRD, ScaleApiFake, crd_scale

LWS = ("leaderworkerset.x-k8s.io", "leaderworkersets")
DEPLOYMENTS = ("apps", "deployments")
PRIMARY, DISTILLED = "deepseek-r1", "deepseek-r1-distill-llama-70b-degraded"


def _plan(site: str) -> DegradePlan:
    inv = load_inventory(site)
    p = plan_degrade(inv, plan_site(inv), plan_fleet(inv, site))
    assert p is not None
    return p


@pytest.fixture
def dc1() -> Iterator[tuple[ScaleApiFake, KubernetesDegrader]]:
    """dc1 as `pulumi up` leaves it: R1 in a LeaderWorkerSet at 4 under its HPA (2..4), the
    distilled Deployment at 0."""
    fake = ScaleApiFake()
    fake.add(*LWS, PRIMARY, 4)
    fake.add(*DEPLOYMENTS, DISTILLED, 0)
    fake.add_hpa(PRIMARY, 2, 4)
    with fake.serve() as api:
        yield fake, KubernetesDegrader(_plan("dc1"), api, timeout_s=1.0, backoff_s=0.01)
    assert not fake.unrecorded, fake.unrecorded


def test_the_lws_crd_declares_the_scale_subresource_the_degrader_uses() -> None:
    scale = crd_scale(LWS_CRD)
    assert scale["specReplicasPath"] == ".spec.replicas"
    assert scale["statusReplicasPath"] == ".status.replicas"
    p = _plan("dc1")
    assert (p.primary.group, p.primary.plural) == LWS and p.primary.kind == "LeaderWorkerSet"


def test_degrading_shrinks_the_primary_before_the_distilled_model_grows(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    assert degrader.set_degraded(1) == []
    # The HPA's ceiling first (it would scale R1 straight back), then R1, then the 70B: 4 TP-4
    # replicas on the 16 H100s one R1 replica held.
    assert fake.writes == [(f"hpa/{PRIMARY}", (2, 3)), (PRIMARY, 3), (DISTILLED, 4)]
    assert degrader.set_degraded(2) == []
    assert fake.writes[3:] == [(f"hpa/{PRIMARY}", (2, 2)), (PRIMARY, 2), (DISTILLED, 8)]
    patches = [c for c in fake.calls if c[0] == "PATCH"]
    assert {c[2] for c in patches} == {"application/merge-patch+json"}


def test_restoring_shrinks_the_distilled_model_before_the_primary_may_grow(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    assert degrader.set_degraded(2) == []
    del fake.writes[:]
    assert degrader.set_degraded(0) == []
    # The 70B gives its GPUs back first; then the HPA gets its planned bounds and owns R1's count
    # again (the Degrader never scales R1 up under an HPA).
    assert fake.writes == [(DISTILLED, 0), (f"hpa/{PRIMARY}", (2, 4))]
    assert fake.replicas(PRIMARY) == 2


def test_the_same_count_again_writes_nothing(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    assert degrader.set_degraded(1) == [] and degrader.set_degraded(1) == []
    assert len(fake.writes) == 3
    assert degrader.set_degraded(0) == [] and degrader.set_degraded(0) == []
    assert len(fake.writes) == 5


def test_what_the_hpa_scaled_down_meanwhile_stays_down(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    fake.workloads[(*LWS, PRIMARY)]["replicas"] = 2  # quiet hours: the HPA is at its floor
    assert degrader.set_degraded(1) == []
    assert fake.writes == [(f"hpa/{PRIMARY}", (2, 3)), (DISTILLED, 4)], "R1 is not scaled up to 3"


def test_a_conflict_is_read_again_and_the_write_recomputed(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    # Between the Degrader's read and its write the HPA takes R1 from 4 to 2: the server refuses
    # the stale write with 409, the Degrader reads 2, and 2 is under the new ceiling: no write.
    fake.race[PRIMARY] = 2
    assert degrader.set_degraded(1) == []
    assert fake.writes == [(f"hpa/{PRIMARY}", (2, 3)), (DISTILLED, 4)]
    assert fake.replicas(PRIMARY) == 2
    conflicts = [c for c in fake.calls if c[0] == "PATCH" and c[1].endswith(f"/{PRIMARY}/scale")]
    assert len(conflicts) == 1, "the refused write, then nothing left to write"


def test_a_conflict_on_the_distilled_model_is_retried_with_its_count(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    fake.race[DISTILLED] = 1  # someone scaled it by hand
    assert degrader.set_degraded(1) == []
    assert fake.replicas(DISTILLED) == 4 and fake.writes[-1] == (DISTILLED, 4)


def test_server_errors_are_retried_a_bounded_number_of_times(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    path = f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/serving/leaderworkersets/{PRIMARY}/scale"
    fake.faults[("PATCH", path)] = [503, 500]
    assert degrader.set_degraded(1) == []
    assert fake.replicas(PRIMARY) == 3
    fake.faults[("PATCH", path)] = [503, 503, 503, 503]
    failures = degrader.set_degraded(2)
    assert failures == [
        f"degrade to 2: LeaderWorkerSet serving/{PRIMARY} -> primary 2 failed: 503 the server answered 503"
    ]
    # Nothing grows after a shrink that failed: the 70B stays at what R1 had freed.
    assert fake.replicas(DISTILLED) == 4 and fake.replicas(PRIMARY) == 3
    assert fake.faults[("PATCH", path)] == [503], "three attempts, no more"


def test_a_refusal_is_not_retried(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    path = f"/apis/autoscaling/v2/namespaces/serving/horizontalpodautoscalers/{PRIMARY}"
    fake.faults[("PATCH", path)] = [403, 403]
    failures = degrader.set_degraded(1)
    assert failures == [
        f"degrade to 1: HorizontalPodAutoscaler serving/{PRIMARY} -> autoscaler 2..3 failed: "
        "403 the server answered 403"
    ]
    assert fake.faults[("PATCH", path)] == [403] and fake.writes == []


def test_a_missing_workload_is_one_line_and_nothing_moves() -> None:
    fake = ScaleApiFake()
    fake.add(*LWS, PRIMARY, 4)
    fake.add_hpa(PRIMARY, 2, 4)  # the distilled Deployment was never applied (no on-prem up since)
    with fake.serve() as api:
        failures = KubernetesDegrader(_plan("dc1"), api, backoff_s=0.01).set_degraded(1)
    assert failures == [
        f'degrade to 1: cannot read the workloads: 404 deployments.apps "{DISTILLED}" not found'
    ]
    assert fake.writes == [] and not fake.unrecorded


def test_a_hung_api_server_is_a_timeout_line_within_the_bound() -> None:
    fake = ScaleApiFake()
    fake.add(*LWS, PRIMARY, 4)
    fake.add(*DEPLOYMENTS, DISTILLED, 0)
    fake.add_hpa(PRIMARY, 2, 4)
    fake.delays[f"{DISTILLED}/scale$"] = 1.5
    with fake.serve() as api:
        degrader = KubernetesDegrader(_plan("dc1"), api, timeout_s=0.3, backoff_s=0.01)
        import time

        start = time.monotonic()
        failures = degrader.set_degraded(1)
        took = time.monotonic() - start
    assert len(failures) == 1 and failures[0].startswith("degrade to 1: cannot read the workloads: ")
    assert "timed out" in failures[0].lower() or "timeout" in failures[0].lower(), failures[0]
    assert took < 3 * 0.3 + 1.0, "one attempt, bounded by the request timeout (timeouts are not retried)"
    assert fake.writes == []


def test_more_than_the_plan_allows_is_clamped_and_said(dc1) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    failures = degrader.set_degraded(9)
    assert failures == [
        f"degraded 9 asked, 3 applied: serving/{PRIMARY} keeps at least one of its 4 replicas"
    ]
    assert fake.replicas(PRIMARY) == 1 and fake.replicas(DISTILLED) == 12
    assert fake.hpas[PRIMARY]["min"] == 1 and fake.hpas[PRIMARY]["max"] == 1
    assert degrader.set_degraded(-1)[0].startswith("degraded -1 asked, 0 applied")
    assert fake.replicas(DISTILLED) == 0 and (fake.hpas[PRIMARY]["min"], fake.hpas[PRIMARY]["max"]) == (2, 4)


def test_a_primary_without_an_hpa_is_scaled_down_and_back_up() -> None:
    p = _plan("dc1").model_copy(update={"autoscaler": None})
    fake = ScaleApiFake()
    fake.add(*LWS, PRIMARY, 4)
    fake.add(*DEPLOYMENTS, DISTILLED, 0)
    with fake.serve() as api:
        degrader = KubernetesDegrader(p, api, backoff_s=0.01)
        assert degrader.set_degraded(2) == [] and degrader.set_degraded(0) == []
    assert fake.writes == [(PRIMARY, 2), (DISTILLED, 8), (DISTILLED, 0), (PRIMARY, 4)]
    assert not [c for c in fake.calls if "horizontalpodautoscalers" in c[1]]
    assert not fake.unrecorded


def test_dc1_dr_moves_its_deployment_through_the_same_calls() -> None:
    fake = ScaleApiFake()
    fake.add(*DEPLOYMENTS, PRIMARY, 4)
    fake.add(*DEPLOYMENTS, DISTILLED, 0)
    fake.add_hpa(PRIMARY, 2, 4)
    with fake.serve() as api:
        assert KubernetesDegrader(_plan("dc1-dr"), api, backoff_s=0.01).set_degraded(1) == []
    # 8 H200 per R1 replica: two TP-4 replicas of the 70B.
    assert fake.writes == [(f"hpa/{PRIMARY}", (2, 3)), (PRIMARY, 3), (DISTILLED, 2)]
    assert not fake.unrecorded


def test_degrade_on_a_site_with_nothing_to_degrade_to_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import gpufleet.plan.degrade
    from gpufleet.cli import app

    # As for a site whose Spot fleet serves the site's own model (no distilled model to move to).
    monkeypatch.setattr(gpufleet.plan.degrade, "plan_degrade", lambda *a: None)
    result = CliRunner().invoke(app, ["burst", "run", "burst-prod", "--degrade", "--asg", "g"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "--degrade: site dc1 has nothing to degrade to: its burst fleet serves the site's own model, or a "
        "model whose tensor parallelism does not divide a replica's GPUs"
    ]


GARBAGE: list[object] = [
    {},
    {"spec": {"replicas": "abc"}, "metadata": {"resourceVersion": "1"}},
    {"spec": {"replicas": -1}, "metadata": {"resourceVersion": "1"}},
    {"spec": {"replicas": True}, "metadata": {"resourceVersion": "1"}},
    {"spec": None, "metadata": None},
    {"spec": {"replicas": 2}},  # no resourceVersion: nothing to write against
    [],
    "x",
]


@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
def test_an_answer_of_any_shape_is_a_line_never_an_exception(dc1, body: object) -> None:  # type: ignore[no-untyped-def]
    fake, degrader = dc1
    answers = {"n": 0}
    real = fake._scale_body

    def garbage(group: str, plural: str, name: str) -> object:
        answers["n"] += 1
        return body if name == PRIMARY else real(group, plural, name)

    fake._scale_body = garbage  # type: ignore[method-assign,assignment]
    failures = degrader.set_degraded(1)
    assert answers["n"] >= 1
    assert len(failures) == 1 and failures[0].startswith("degrade to 1: "), failures
    assert fake.replicas(DISTILLED) == 0, "nothing grows on an answer it cannot read"
    assert fake.replicas(PRIMARY) == 4


def test_a_scale_at_zero_may_leave_its_count_out() -> None:
    """autoscaling/v1 ScaleSpec.replicas is `omitempty`: the server sends `spec: {}` at 0."""
    from gpufleet.burst.degrade import _replicas

    assert _replicas({"spec": {}, "metadata": {"resourceVersion": "7"}}) == 0


def test_the_controllers_step_moves_the_cluster_and_counts_what_failed(dc1) -> None:  # type: ignore[no-untyped-def]
    """The production Controller (gpufleet.burst.controller) with this Degrader: the decision's
    count reaches the cluster on the step; a failed write is counted, logged, and the step goes on."""
    from dataclasses import dataclass

    from gpufleet.burst.actuate import AsgActuator
    from gpufleet.burst.controller import Controller
    from gpufleet.burst.policy import CapacityModel, Decision
    from gpufleet.burst.signal import Reading

    fake, degrader = dc1
    inv = load_inventory("dc1")
    model = CapacityModel.from_plan(plan_site(inv), plan_fleet(inv, "dc1"), 50.0)

    @dataclass
    class Asks:  # the policy's decision, as the test sets it
        model: CapacityModel
        degraded: int = 0
        name: str = "asks"
        tick_s: float = 15.0
        cap_aware: bool = True

        def decide(self, t: float, window: object, nodes: object, prices: object) -> Decision:
            return Decision(desired=0, reason="test", degraded=self.degraded)

    class Group:
        def describe_auto_scaling_groups(self, **_: object) -> dict[str, object]:
            return {"AutoScalingGroups": [{"Instances": [], "DesiredCapacity": 0}]}

    class Source:
        def read(self, t: float) -> Reading:
            return Reading(interval_s=15, request_rps=1.0, queue_wait_s=0.1, pending=0)

    class Prices:
        instance_types = ("p5.48xlarge",)

        def current(self) -> dict[object, float]:
            return {}

    policy = Asks(model)
    controller = Controller(
        policy=policy,  # type: ignore[arg-type]
        source=Source(),
        prices=Prices(),  # type: ignore[arg-type]
        asg=AsgActuator("g", 8, Group()),
        pulumi=None,  # type: ignore[arg-type]
        replica_rps=2.0,
        degrade=degrader,
    )
    policy.degraded = 2
    assert controller.step(0.0) is not None
    assert fake.replicas(PRIMARY) == 2 and fake.replicas(DISTILLED) == 8
    errors = controller.registry.get_sample_value("gpufleet_burst_degrade_errors_total")
    assert errors == 0
    path = f"/apis/apps/v1/namespaces/serving/deployments/{DISTILLED}/scale"
    fake.faults[("PATCH", path)] = [503, 503, 503]
    policy.degraded = 0
    assert controller.step(15.0) is not None, "the step carries on past a failed degradation"
    assert controller.registry.get_sample_value("gpufleet_burst_degrade_errors_total") == 1
    assert fake.replicas(DISTILLED) == 8 and fake.hpas[PRIMARY]["max"] == 2, "nothing grows back over it"
    assert controller.step(30.0) is not None
    assert fake.replicas(DISTILLED) == 0 and fake.hpas[PRIMARY]["max"] == 4, "the next step finishes it"

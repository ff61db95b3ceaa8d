"""The pure burst decisions: placement under the cap, scale-in choice, fallback, and each policy."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.burst.hardware import (
    NOMINAL_ANSWER,
    NOMINAL_PROMPT,
    ReplicaHardware,
    request_seconds,
    weight_load_bytes_s,
)
from gpufleet.burst.policy import (
    CapacityModel,
    Decision,
    Gpufleet,
    KnownPeak,
    Node,
    Pool,
    Signals,
    committed_usd,
    fewest_inflight,
    place,
)
from gpufleet.inventory.load import load_inventory
from gpufleet.model.catalog import AWS_GPU_INSTANCES, GPUModel
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.site import plan_site
from gpufleet.sim.baselines import HpaGpu, KedaQueue, StaticPeak

MODEL = CapacityModel(
    onprem_replicas=4,
    replicas_per_node=1,
    max_nodes=8,
    max_hourly_usd=400.0,
    boot_to_serve_s=900,
    slo_queue_wait_s=2.0,
    target_utilisation=0.8,
)
POOLS = [Pool(t, f"us-east-1{z}") for t in ("p5e.48xlarge", "p5en.48xlarge") for z in "abc"]
PRICES = {p: 30.0 + i for i, p in enumerate(POOLS)}


def node(
    i: int, pool: Pool = POOLS[0], *, ready: bool = True, inflight: int = 0, max_price: float = 40.0
) -> Node:
    return Node(
        f"n{i}",
        pool,
        ready=ready,
        draining=False,
        launched_at=float(i),
        inflight=inflight,
        max_price=max_price,
    )


def sig(
    t: float, load: float, *, wait: float = 0.0, pending: int = 0, util: float = 0.5, ready: int = 4
) -> Signals:
    return Signals(
        t=t, load_replicas=load, queue_wait_s=wait, pending=pending, gpu_util=util, ready_replicas=ready
    )


def nodes_for(load: float) -> int:
    """Burst nodes of MODEL (each adds one on-prem replica) for the load, within its bound."""
    return min(MODEL.max_nodes, math.ceil(MODEL.missing(load) - 1e-9))


def test_missing_counts_what_on_prem_lacks_at_the_target_utilisation() -> None:
    assert MODEL.missing(3.2) == 0  # 4 on-prem replicas at 80% carry 3.2
    assert MODEL.missing(3.3) == pytest.approx(0.125)
    assert MODEL.missing(8.0) == pytest.approx(6.0)
    assert MODEL.missing(8.0, utilisation=0.5) == pytest.approx(12.0)


def test_place_spreads_over_pools_priced_alike() -> None:
    launches, capped = place(4, [], PRICES, cap_usd=1000.0)
    assert capped == ""
    pools = Counter(launch.pool for launch in launches)
    # Pools within 25% of the cheapest (30..36) all take nodes before any takes a second.
    assert len(pools) == 4
    assert launches[0].pool == POOLS[0]


def test_place_stops_at_the_cap_and_says_so() -> None:
    launches, capped = place(8, [node(1, max_price=100.0)], PRICES, cap_usd=200.0)
    assert committed_usd([node(1, max_price=100.0)]) + sum(launch.max_price for launch in launches) <= 200.0
    assert len(launches) == 2  # 39 each with headroom: 100 + 2 x 39 = 178; a third would cross 200
    assert "cap" in capped


def test_a_fleet_wide_max_price_is_what_each_node_reserves() -> None:
    # dc1's shape: a $400/h cap over 8 nodes allows $50/h each; pools above that are not offered.
    prices = {**PRICES, POOLS[0]: 55.0}
    launches, capped = place(8, [], prices, cap_usd=400.0, fleet_max_price=50.0)
    assert len(launches) == 8 and capped == ""
    assert all(launch.max_price == 50.0 for launch in launches)
    assert POOLS[0] not in {launch.pool for launch in launches}
    launches, capped = place(9, [node(1, max_price=50.0)], prices, cap_usd=400.0, fleet_max_price=50.0)
    assert len(launches) == 7 and "cap" in capped


def test_baselines_ignore_the_cap_and_take_the_cheapest_pool() -> None:
    launches, _ = place(3, [], PRICES, cap_usd=None)
    assert {launch.pool for launch in launches} == {POOLS[0]}
    assert launches[0].max_price == AWS_GPU_INSTANCES["p5e.48xlarge"].on_demand_usd_hour


@settings(max_examples=200, deadline=None)
@given(
    prices=st.lists(st.floats(5.0, 84.0), min_size=len(POOLS), max_size=len(POOLS)),
    existing=st.lists(st.tuples(st.integers(0, len(POOLS) - 1), st.floats(5.0, 84.8)), max_size=8),
    cap=st.floats(0.0, 800.0),
    count=st.integers(0, 12),
)
def test_place_never_commits_beyond_the_cap(
    prices: list[float], existing: list[tuple[int, float]], cap: float, count: int
) -> None:
    offered = dict(zip(POOLS, prices, strict=True))
    nodes = [node(i, POOLS[p], max_price=m) for i, (p, m) in enumerate(existing)]
    launches, _ = place(count, nodes, offered, cap_usd=cap)
    before = committed_usd(nodes)
    after = before + sum(launch.max_price for launch in launches)
    # Never crosses the cap by launching; an over-committed fleet launches nothing.
    assert after <= max(cap, before) + 1e-6
    for launch in launches:
        assert launch.max_price >= offered[launch.pool]
        assert launch.max_price <= max(
            offered[launch.pool], AWS_GPU_INSTANCES[launch.pool.instance_type].on_demand_usd_hour
        )


def test_scale_in_takes_booting_nodes_then_fewest_in_flight() -> None:
    nodes = [node(1, inflight=9), node(2, inflight=2), node(3, ready=False), node(4, inflight=5)]
    assert fewest_inflight(nodes, 2) == ("n3", "n2")


def test_gpufleet_scales_up_at_once_for_the_held_peak() -> None:
    policy = Gpufleet(MODEL)
    window = [sig(float(t), 6.0) for t in range(5, 65, 5)]
    decision = policy.decide(60.0, window, [], PRICES)
    assert decision.desired == nodes_for(6.0) == 4
    assert len(decision.launch) == 4
    assert "load 6.00" in decision.reason


def test_gpufleet_scale_in_waits_for_the_quiet_period_and_keeps_hysteresis() -> None:
    policy = Gpufleet(MODEL, quiet_s=300.0, cooldown_s=60.0)
    nodes = [node(i, POOLS[i % 3], inflight=i) for i in range(4)]
    high = [sig(float(t), 6.0) for t in range(5, 305, 5)]
    assert policy.decide(300.0, high, nodes, PRICES).desired == 4
    # Load drops: nothing goes before the peak has left the quiet window.
    window = high + [sig(float(t), 1.0) for t in range(305, 600, 5)]
    for t in range(315, 600, 15):
        assert policy.decide(float(t), [s for s in window if s.t <= t], nodes, PRICES).desired == 4
    late = window + [sig(float(t), 1.0) for t in range(600, 725, 5)]
    # The held peak is the highest one-minute mean of the quiet window: by now all of them are low.
    decision = policy.decide(720.0, late, nodes, PRICES)
    assert decision.desired == 0
    assert decision.drain == ("n0", "n1", "n2", "n3")  # fewest in flight first


def test_gpufleet_does_not_flap_on_a_load_at_the_threshold() -> None:
    policy = Gpufleet(MODEL, quiet_s=120.0, cooldown_s=30.0)
    nodes: list[Node] = []
    window: list[Signals] = []
    actions = 0
    for step in range(1, 400):
        t = step * 5.0
        # Load wobbling around what on-prem alone carries at the target utilisation (4 x 0.8).
        window.append(sig(t, 3.2 + (0.1 if step % 2 else -0.1)))
        if step % 3 == 0:
            decision = policy.decide(t, window[-240:], nodes, PRICES)
            if decision.launch:
                nodes += [node(100 + len(nodes), launch.pool) for launch in decision.launch]
            nodes = [n for n in nodes if n.id not in decision.drain]
            actions += decision.acts
    assert actions == 1
    assert len(nodes) == 1


def test_gpufleet_prewarms_before_an_announced_peak() -> None:
    peak = KnownPeak(start_s=2000.0, end_s=3200.0, factor=3.0)
    policy = Gpufleet(MODEL, peaks=(peak,))
    window = [sig(float(t), 2.0) for t in range(900, 1000, 5)]
    assert policy.decide(995.0, window, [], PRICES).desired == 0  # 2000 - 900 boot - lead: not yet
    decision = policy.decide(1075.0, [*window, sig(1075.0, 2.0)], [], PRICES)
    assert decision.desired == nodes_for(6.0)
    assert "announced peak x3" in decision.reason


def test_gpufleet_replaces_an_interrupted_node_in_another_pool_first() -> None:
    policy = Gpufleet(MODEL)
    warned = node(1, POOLS[0])
    decision = policy.on_notice(10.0, warned, [warned, node(2, POOLS[1])], PRICES)
    assert decision.drain == ("n1",)
    assert len(decision.launch) == 1 and decision.launch[0].pool != POOLS[0]


def test_hpa_scales_on_utilisation_with_tolerance_and_stabilisation() -> None:
    policy = HpaGpu(MODEL)
    busy = [sig(float(t), 0.0, util=1.0, ready=4) for t in range(5, 65, 5)]
    # 4 replicas at 100% -> ceil(4 / 0.7) = 6 replicas -> 2 burst nodes.
    assert policy.decide(60.0, busy, [], PRICES).desired == 2
    nodes = [node(1), node(2)]
    idle = [sig(float(t), 0.0, util=0.1, ready=6) for t in range(65, 125, 5)]
    # Scale-down waits for the 300 s stabilisation window.
    assert policy.decide(120.0, busy + idle, nodes, PRICES).desired == 2
    later = [sig(float(t), 0.0, util=0.1, ready=6) for t in range(125, 425, 5)]
    assert policy.decide(425.0, later, nodes, PRICES).desired == 0


def test_keda_scales_on_the_gateway_queue_not_tritons_pending() -> None:
    policy = KedaQueue(MODEL, threshold=10.0)
    # Triton's pending count is what HAProxy lets past maxconn: a full queue at the gateway.
    queued = replace(sig(30.0, 0.0, pending=0), gateway_queue=75.0)
    assert policy.decide(30.0, [queued], [], PRICES).desired == 4  # ceil(75/10) = 8 - 4 on-prem
    pending_only = sig(60.0, 0.0, pending=75)
    assert KedaQueue(MODEL, threshold=10.0).decide(60.0, [pending_only], [], PRICES).desired == 0


def test_keda_holds_within_hpa_tolerance() -> None:
    policy = KedaQueue(MODEL, threshold=10.0)
    nodes = [node(i) for i in range(4)]  # 8 replicas
    # 84 queued over 8 replicas x 10: ratio 1.05, within the 10% tolerance: no change.
    held = replace(sig(30.0, 0.0), gateway_queue=84.0)
    assert policy.decide(30.0, [held], nodes, PRICES).desired == 4
    # 95: ratio 1.19, out of tolerance: ceil(9.5) = 10 replicas.
    grown = replace(sig(60.0, 0.0), gateway_queue=95.0)
    assert policy.decide(60.0, [grown], nodes, PRICES).desired == 6


def test_group_max_price_is_the_groups_or_aws_default_on_demand() -> None:
    from gpufleet.burst.controller import group_max_price

    with_max = {"MixedInstancesPolicy": {"InstancesDistribution": {"SpotMaxPrice": "50"}}}
    assert group_max_price(with_max, ["p5e.48xlarge"]) == 50.0
    without = {
        "MixedInstancesPolicy": {
            "InstancesDistribution": {"SpotAllocationStrategy": "price-capacity-optimized"}
        }
    }
    assert group_max_price(without, ["p5e.48xlarge", "p5en.48xlarge"]) == 84.80


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3@2026-11-27T18:00+20m", (1795802400.0, 1795803600.0, 3.0)),
        ("1.5@2026-11-27T18:00:00+01:00+1h", (1795798800.0, 1795802400.0, 1.5)),
    ],
)
def test_announced_peaks_on_the_command_line(text: str, expected: tuple[float, float, float]) -> None:
    from gpufleet.burst.cli import parse_peak

    peak = parse_peak(text)
    assert (peak.start_s, peak.end_s, peak.factor) == expected


@pytest.mark.parametrize(
    "text", ["3@tomorrow+20m", "3@2026-11-27T18:00", "x@2026-11-27T18:00+1h", "0@2026-11-27T18:00+1h"]
)
def test_bad_announced_peak_exits_2_naming_the_option(text: str) -> None:
    from typer.testing import CliRunner

    from gpufleet.cli import app

    result = CliRunner().invoke(app, ["burst", "run", "burst-prod", "--peak", text])
    assert result.exit_code == 2
    assert result.stderr.startswith("--peak: ") and len(result.stderr.strip().splitlines()) == 1


def test_the_groups_instances_as_the_policy_sees_them() -> None:
    from gpufleet.burst.controller import fleet_view

    group: dict[str, Any] = {
        "Instances": [
            {
                "InstanceId": "i-1",
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "p5e.48xlarge",
                "LifecycleState": "InService",
            },
            {
                "InstanceId": "i-2",
                "AvailabilityZone": "us-east-1b",
                "InstanceType": "p5e.48xlarge",
                "LifecycleState": "Pending",
            },
            {
                "InstanceId": "i-3",
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "p5e.48xlarge",
                "LifecycleState": "Terminating:Wait",
            },
            {
                "InstanceId": "i-4",
                "AvailabilityZone": "us-east-1c",
                "InstanceType": "p5en.48xlarge",
                "LifecycleState": "InService",
            },
            {
                "InstanceId": "i-5",
                "AvailabilityZone": "us-east-1c",
                "InstanceType": "p5en.48xlarge",
                "LifecycleState": "Terminated",
            },
        ]
    }
    nodes = fleet_view(group, PRICES, {"i-1": 7, "i-4": 2}, max_price=50.0)
    assert [(n.id, n.ready, n.draining, n.inflight) for n in nodes] == [
        ("i-1", True, False, 7),
        ("i-2", False, False, 0),
        ("i-3", False, True, 0),
        ("i-4", True, False, 2),
    ]
    # Terminating nodes still bill: they count against the cap until gone.
    assert committed_usd(nodes) == 200.0
    assert fewest_inflight(nodes, 2) == ("i-2", "i-4")

    # Right after an up the group owes two more than it lists: they boot, as its first-priority
    # type, and reserve their share of the cap.
    group |= {
        "DesiredCapacity": 5,
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "Overrides": [{"InstanceType": "p5en.48xlarge"}, {"InstanceType": "p5e.48xlarge"}]
            }
        },
    }
    owed = fleet_view(group, PRICES, {}, max_price=50.0)
    assert [(n.id, n.pool.instance_type, n.ready, n.draining) for n in owed[4:]] == [
        ("launching-0", "p5en.48xlarge", False, False),
        ("launching-1", "p5en.48xlarge", False, False),
    ]
    assert committed_usd(owed) == 300.0


def test_scale_in_of_a_node_not_launched_yet_only_lowers_the_count() -> None:
    from gpufleet.burst.controller import Controller

    retired: list[str] = []
    declared: list[int] = []

    class Asg:
        def retire(self, instance_id: str) -> None:
            retired.append(instance_id)

    class Stack:
        def set_burst_nodes(self, count: int) -> object:
            declared.append(count)
            return type("Applied", (), {"stack": "burst", "burst_nodes": count, "summary": "update"})()

    # Only what scale-in touches: the group's retire and the stack's declared count.
    fakes: dict[str, Any] = {"source": None, "prices": None, "asg": Asg(), "pulumi": Stack()}
    controller = Controller(policy=Gpufleet(MODEL), replica_rps=1.0, **fakes)
    # Three live nodes; one retired and one not launched yet go: one stays.
    controller._carry_out(Decision(1, "quiet", drain=("i-1", "launching-0")), live=3)
    assert retired == ["i-1"] and declared == [1]


def test_a_node_that_could_not_be_retired_stays_counted() -> None:
    """Declaring the lower count anyway would let the group pick a node nobody drained."""
    from botocore.exceptions import ClientError

    from gpufleet.burst.controller import Controller

    declared: list[int] = []

    class Asg:
        def retire(self, instance_id: str) -> None:
            error = {
                "Error": {"Code": "ValidationError", "Message": f"Instance Id not found - {instance_id}"}
            }
            raise ClientError(error, "TerminateInstanceInAutoScalingGroup")

    class Stack:
        def set_burst_nodes(self, count: int) -> object:
            declared.append(count)
            return type("Applied", (), {"stack": "burst", "burst_nodes": count, "summary": "update"})()

    fakes: dict[str, Any] = {"source": None, "prices": None, "asg": Asg(), "pulumi": Stack()}
    controller = Controller(policy=Gpufleet(MODEL), replica_rps=1.0, **fakes)
    controller._carry_out(Decision(1, "quiet", drain=("i-1", "launching-0")), live=3)
    assert declared == [2]


def test_gpufleet_does_not_count_an_announced_rise_twice() -> None:
    # Base load 2 replicas; a x3 peak from t=2000: inside it, 6 replicas are what the calendar said.
    peak = KnownPeak(start_s=2000.0, end_s=3200.0, factor=3.0)
    policy = Gpufleet(MODEL, peaks=(peak,))
    window = [sig(float(t), 2.0 if t < 2000 else 6.0) for t in range(1400, 2295, 5)]
    decision = policy.decide(2290.0, window, [], PRICES)
    assert decision.desired == nodes_for(6.0)
    # The same measured rise, unannounced, is a trend: the held peak is raised for it.
    assert Gpufleet(MODEL).decide(2290.0, window, [], PRICES).desired > nodes_for(6.0)


def test_gpufleet_releases_capacity_when_an_announced_peak_ends() -> None:
    peak = KnownPeak(start_s=2000.0, end_s=3200.0, factor=3.0)
    nodes = [node(i, POOLS[i % 3]) for i in range(nodes_for(6.0))]
    window = [sig(float(t), 6.0 if t < 3200 else 2.0) for t in range(2600, 3265, 5)]

    def at_3260(policy: Gpufleet) -> int:
        for t in range(2900, 3275, 15):
            decision = policy.decide(float(t), [s for s in window if s.t <= t], nodes, PRICES)
        return decision.desired

    # One minute after the end: the surge's samples count as a third of their load, so the held
    # base (2) needs no burst node, although the quiet window still holds loads of 6.
    assert at_3260(Gpufleet(MODEL, peaks=(peak,), cooldown_s=0.0)) == 0
    # Unannounced, the same drop waits for the quiet period.
    assert at_3260(Gpufleet(MODEL, cooldown_s=0.0)) == len(nodes)


TTFT_MODEL = replace(MODEL, slo_ttft_s=5.0)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"ttft_s": 3.0}, "TTFT p99 3.00s"),
        ({"kv_cache_used": 0.93}, "KV cache 93% used"),
    ],
)
def test_scale_in_waits_while_ttft_or_the_kv_cache_is_under_pressure(
    extra: dict[str, float], why: str
) -> None:
    nodes = [node(i, POOLS[i % 3]) for i in range(3)]
    window = [sig(float(t), 1.0) for t in range(5, 900, 5)]
    calm = Gpufleet(TTFT_MODEL, cooldown_s=0.0)
    for t in range(600, 900, 15):
        calm.decide(float(t), [s for s in window if s.t <= t], nodes, PRICES)
    assert calm.decide(900.0, window, nodes, PRICES).desired == 0
    pressed = Gpufleet(TTFT_MODEL, cooldown_s=0.0)
    window[-1] = replace(window[-1], **extra)
    for t in range(600, 900, 15):
        pressed.decide(float(t), [s for s in window if s.t < t], nodes, PRICES)
    decision = pressed.decide(900.0, window, nodes, PRICES)
    assert decision.desired == 3 and not decision.drain
    assert why in decision.reason


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"ttft_s": 6.0}, "TTFT p99 over its 5s SLO"),
        ({"queue_wait_s": 2.5}, "queue wait over its 2s SLO"),
        ({"kv_cache_used": 0.97, "pending": 12}, "requests waiting on a full KV cache"),
    ],
)
def test_a_missed_slo_adds_a_node_the_load_model_did_not_ask_for(extra: dict[str, float], why: str) -> None:
    # 2 replicas of load: on-prem alone carries it by the load model; the servers disagree.
    window = [replace(sig(float(t), 2.0), **extra) for t in range(5, 400, 5)]
    nodes = [node(1)]
    decision = Gpufleet(TTFT_MODEL).decide(395.0, window, nodes, PRICES)
    assert decision.desired == 2 and len(decision.launch) == 1
    assert why in decision.reason
    # One at a time: while that node boots, no other.
    booting = [node(1), node(2, POOLS[1], ready=False)]
    assert Gpufleet(TTFT_MODEL).decide(395.0, window, booting, PRICES).launch == ()
    # One sample under the SLO in the window: not a breach.
    window[-3] = sig(window[-3].t, 2.0)
    assert Gpufleet(TTFT_MODEL).decide(395.0, window, nodes, PRICES).launch == ()


# --- burst nodes of unequal capacity ------------------------------------------------------------

BIG, SMALL = Pool("p5e.48xlarge", "us-east-1a"), Pool("g6e.12xlarge", "us-east-1a")
MIXED = replace(MODEL, replicas_per_node=0.3, node_capacity={"p5e.48xlarge": 3.4, "g6e.12xlarge": 0.3})


def test_dc1_burst_capacity_follows_the_roofline() -> None:
    fleet = plan_fleet(load_inventory("dc1"), "inventories/dc1/nodes.yaml")
    cap = fleet.capacity
    # The distilled 70B at TP 4: an H200 replica is 4.8/3.35 of an H100 one, an L40S one 0.864/3.35.
    assert cap["p5e.48xlarge"] / cap["p5.48xlarge"] == pytest.approx(4.8 / 3.35, rel=1e-2)
    assert cap["g6e.12xlarge"] / (cap["p5.48xlarge"] / 2) == pytest.approx(0.864 / 3.35, rel=1e-2)
    # Against dc1's own replica (DeepSeek-R1 on 2 x 8 H100): an L40S node adds a third of one.
    assert cap["g6e.12xlarge"] == pytest.approx(4 * 0.864 / 141.2 / (16 * 3.35 / 671), rel=1e-2)


def test_the_controllers_capacity_model_comes_from_the_hardware() -> None:
    inv = load_inventory("dc1")
    fleet = plan_fleet(inv, "inventories/dc1/nodes.yaml")
    model = CapacityModel.from_plan(plan_site(inv), fleet, None)
    site = ReplicaHardware("deepseek-r1", GPUModel.H100_SXM, 16)
    h200 = ReplicaHardware("deepseek-r1-distill-llama-70b", GPUModel.H200, 4)
    seconds = request_seconds(site, NOMINAL_PROMPT, NOMINAL_ANSWER)
    assert model.capacity_of("p5en.48xlarge") == pytest.approx(
        2 * seconds / request_seconds(h200, NOMINAL_PROMPT, NOMINAL_ANSWER)
    )
    assert model.replicas_per_node == min(model.node_capacity.values())
    # A dense 70B prefills at 2 x 70.6B FLOPs a token, DeepSeek-R1 at 2 x 37B: for a chat turn an
    # H200 node adds well under one of dc1's replicas, not the 3.4 the decode roofline says.
    assert model.capacity_of("p5en.48xlarge") < 1 < fleet.capacity["p5en.48xlarge"]


def test_place_buys_capacity_cheapest_per_replica() -> None:
    prices = {BIG: 34.0, SMALL: 5.0}  # 10 $/replica against 16.7
    launches, _ = place(3.0, [], prices, cap_usd=400.0, capacity=MIXED.capacity_of)
    assert [launch.pool for launch in launches] == [BIG]


def test_under_a_node_bound_small_nodes_give_way_to_big_enough_ones() -> None:
    prices = {BIG: 60.0, SMALL: 3.0}  # small nodes are cheaper per replica (10 against 17.6)
    free, _ = place(1.2, [], prices, cap_usd=400.0, capacity=MIXED.capacity_of, room=8)
    assert {launch.pool for launch in free} == {SMALL} and len(free) == 4
    # Two slots left for 1.2 replicas: each must bring 0.6, which only the big type does.
    tight, note = place(1.2, [], prices, cap_usd=400.0, capacity=MIXED.capacity_of, room=2)
    assert [launch.pool for launch in tight] == [BIG] and note == ""


def test_scale_in_drains_only_what_the_rest_can_spare() -> None:
    policy = StaticPeak(MIXED, peak_need=3.5)
    nodes = [node(1, BIG), node(2, SMALL), node(3, SMALL)]
    decision = policy.decide(0.0, [sig(0.0, 1.0)], nodes, {BIG: 34.0, SMALL: 5.0})
    # 3.5 replicas needed of 4.0 held: one small node can go (the newest), the big one cannot.
    assert decision.drain == ("n3",) and decision.desired == 2


def test_the_trend_extends_the_recent_peak_not_the_lead_long_one() -> None:
    # Before a x3 peak at t=2000: a one-minute spike of 2 replicas at 1090-1150, then the base
    # climbs from 1 to 1.8 from t=1200 on. At t=1500 the lead-long peak is the spike (2 x 3 = 6);
    # the trend adds the last five minutes' rise (1.8 - 1.2) to the recent peak (1.8), times 3.
    peak = KnownPeak(start_s=2000.0, end_s=3200.0, factor=3.0)
    policy = Gpufleet(MODEL, peaks=(peak,))

    def base(t: int) -> float:
        return 1.8 if t >= 1200 else 2.0 if 1090 <= t < 1150 else 1.0

    window = [sig(float(t), base(t)) for t in range(600, 1505, 5)]
    for t in range(1005, 1500, 15):
        policy.decide(float(t), [s for s in window if s.t <= t], [], PRICES)
    decision = policy.decide(1500.0, window, [], PRICES)
    assert decision.desired == nodes_for(3 * (1.8 + (1.8 - 1.2))) == 5
    # Adding the rise to the spike instead would have asked for 6.
    assert nodes_for(3 * (2.0 + (1.8 - 1.2))) == 6


def test_booting_nodes_count_at_the_type_the_group_reports() -> None:
    """A launching instance counts as the type the group launched as soon as it lists it; only
    capacity the group owes and has not launched yet counts as its first-priority type."""
    from gpufleet.burst.controller import LAUNCHING, fleet_view

    capacity = CapacityModel(
        onprem_replicas=1,
        replicas_per_node=1.0,
        node_capacity={"p5en.48xlarge": 4.0, "g6e.12xlarge": 1.0},
        max_nodes=6,
        max_hourly_usd=1000.0,
        boot_to_serve_s=900.0,
        slo_queue_wait_s=2.0,
    )
    group = {
        "DesiredCapacity": 3,
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "Overrides": [{"InstanceType": "p5en.48xlarge"}, {"InstanceType": "g6e.12xlarge"}]
            }
        },
        "Instances": [
            {
                "InstanceId": "i-1",
                "InstanceType": "p5en.48xlarge",
                "AvailabilityZone": "us-east-1a",
                "LifecycleState": "InService",
            },
            # No p5en capacity left: the group fell back to its second type, and says so at once.
            {
                "InstanceId": "i-2",
                "InstanceType": "g6e.12xlarge",
                "AvailabilityZone": "us-east-1b",
                "LifecycleState": "Pending",
            },
        ],
    }
    nodes = fleet_view(group, {}, {}, 90.0)
    assert [(n.id, n.pool.instance_type, n.ready) for n in nodes] == [
        ("i-1", "p5en.48xlarge", True),
        ("i-2", "g6e.12xlarge", False),
        (f"{LAUNCHING}0", "p5en.48xlarge", False),
    ]
    assert capacity.burst_capacity(nodes) == 4.0 + 1.0 + 4.0
    assert capacity.burst_capacity(nodes, ready_only=True) == 4.0
    # Once the owed node shows as a fallback type too, it counts as that, and the total drops.
    group["Instances"].append(
        {
            "InstanceId": "i-3",
            "InstanceType": "g6e.12xlarge",
            "AvailabilityZone": "us-east-1c",
            "LifecycleState": "Pending",
        }
    )
    assert capacity.burst_capacity(fleet_view(group, {}, {}, 90.0)) == 6.0


def test_degradation_moves_replicas_one_step_at_a_time_and_back() -> None:
    model = replace(MODEL, distilled_per_replica=4.75)
    policy = Gpufleet(model)
    missed = [sig(t, 3.0, wait=3.0, pending=40) for t in (0.0, 15.0, 30.0, 45.0, 60.0)]
    booting = [node(1, ready=False)]
    steps = [policy.decide(60.0 + 15 * k, missed, booting, PRICES).degraded for k in range(4)]
    # One more each step the SLO stays missed, never more than half: P0 keeps the site's model.
    assert steps == [1, 2, 2, 2]
    calm = [sig(t, 1.0) for t in (200.0, 215.0)]
    assert policy.decide(215.0, calm, [node(1)], PRICES).degraded == 0
    # A distilled model that serves less on the same GPUs is never switched to, nor one whose
    # gain repays its swap only after burst capacity would have arrived.
    assert Gpufleet(MODEL).decide(60.0, missed, booting, PRICES).degraded == 0
    slow = replace(MODEL, distilled_per_replica=1.17, distilled_swap_s=155.0)
    assert Gpufleet(slow).decide(60.0, missed, booting, PRICES).degraded == 0


def test_dc1_knows_what_the_distilled_model_serves_on_its_gpus() -> None:
    inv = load_inventory("dc1")
    fleet = plan_fleet(inv, "inventories/dc1/nodes.yaml")
    model = CapacityModel.from_plan(plan_site(inv), fleet, None)
    # dc1's replica is 16 H100; the p5.48xlarge (8 H100) serves the distilled 70B at 2 replicas.
    assert model.distilled_per_replica == pytest.approx(model.capacity_of("p5.48xlarge") * 2)
    # Four TP-4 replicas of the 70B over 2 nodes: each node loads two at the measured cold rate.
    assert model.distilled_swap_s == pytest.approx(2 * 70.6e9 * 2 / weight_load_bytes_s())
    # 17% more for a chat turn over the 745 s after the swap does not repay its 155 s of nothing.
    assert not model.degrading_pays()


def test_a_node_ordered_for_a_breach_is_not_drained_while_it_boots() -> None:
    policy = Gpufleet(MODEL)
    missed = [sig(t, 1.0, wait=3.0) for t in range(0, 61, 15)]
    up = policy.decide(60.0, missed, [], PRICES)
    assert len(up.launch) == 1
    booting = [node(1, ready=False)]
    # Quiet for well over the quiet period, yet the node still boots: it stays.
    calm = [sig(float(t), 1.0) for t in range(60, 721, 15)]
    assert policy.decide(720.0, calm, booting, PRICES).drain == ()
    # Once it has served a quiet period after its boot, it may go.
    later = [sig(float(t), 1.0) for t in range(1000, 1321, 15)]
    assert policy.decide(1320.0, later, [node(1)], PRICES).drain == ("n1",)

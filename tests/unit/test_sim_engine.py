"""The discrete-event simulator: queueing, billing, interruptions, and the $/hour cap as a property."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpufleet.burst.policy import CapacityModel, Gpufleet, Oracle, Pool, StaticPeak
from gpufleet.cli import app
from gpufleet.inventory.load import load_inventory
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.sim.engine import ServiceModel, Simulation
from gpufleet.sim.prices import PriceSeries, pools_for
from gpufleet.sim.scenario import build_scenario
from gpufleet.sim.trace import Request, Surge, load_trace, repeat

POOLS = pools_for("us-east-1", ["p5e.48xlarge", "p5en.48xlarge"])
RPN = {"p5e.48xlarge": 1, "p5en.48xlarge": 1}


def flat(price: float) -> PriceSeries:
    return PriceSeries((0.0,), ({p: price for p in POOLS},))


def model(onprem: int = 1, **kw: float) -> CapacityModel:
    base = {"max_nodes": 4, "max_hourly_usd": 400.0, "boot_to_serve_s": 60.0, "slo_queue_wait_s": 2.0}
    base.update(kw)
    return CapacityModel(onprem_replicas=onprem, replicas_per_node=1, **base)  # type: ignore[arg-type]


def sim(requests: list[Request], policy: object, capacity: CapacityModel, **kw: object) -> Simulation:
    args: dict[str, object] = {
        "requests": requests,
        "policy": policy,
        "capacity": capacity,
        "service": ServiceModel(tokens_per_s=100.0, slots=1, saturation=1),
        "prices": flat(30.0),
        "replicas_per_node": RPN,
        "horizon_s": 600.0,
    }
    args.update(kw)
    return Simulation(**args)  # type: ignore[arg-type]


def test_one_slot_replica_is_a_fifo_queue() -> None:
    capacity = model()
    requests = [Request(0.0, 100, 0), Request(0.0, 100, 0), Request(0.0, 100, 0), Request(10.0, 50, 0)]
    result = sim(requests, StaticPeak(capacity, peak_need=0), capacity).run()
    # One second of work each: they wait 0, 1 and 2 s; the late one finds the replica free.
    assert result.timeline[0].p99_queue_wait_s == pytest.approx(2.0)
    assert result.slo_violation_minutes == 0
    assert result.cost_usd == 0.0


def test_batch_slots_share_the_replica_and_the_rest_queue() -> None:
    capacity = model()
    requests = [Request(0.0, 100, 0), Request(0.0, 100, 0), Request(0.0, 100, 0)]
    service = ServiceModel(100.0, slots=2, saturation=1)
    result = sim(requests, StaticPeak(capacity, peak_need=0), capacity, service=service).run()
    # Two share the replica and both finish at 2 s; the third starts then.
    assert result.timeline[0].p99_queue_wait_s == pytest.approx(2.0)


def test_a_small_batch_leaves_throughput_unused_but_the_gpu_busy() -> None:
    capacity = model()
    requests = [Request(0.0, 100, 0), Request(0.0, 100, 0), Request(0.5, 100, 0)]
    service = ServiceModel(100.0, slots=2, saturation=4)
    result = sim(requests, StaticPeak(capacity, peak_need=0), capacity, service=service).run()
    # Below saturation each request runs at a quarter of the replica: both finish at 4 s, so the
    # third (arriving at 0.5 s) waits 3.5 s although the replica is only half used.
    assert result.timeline[0].p99_queue_wait_s == pytest.approx(3.5)


def test_decode_tokens_cost_more_than_prompt_tokens() -> None:
    service = ServiceModel(tokens_per_s=1000.0, decode_weight=8.0)
    assert service.work_s(Request(0.0, 800, 25)) == pytest.approx(1.0)


def test_static_nodes_are_billed_per_second_at_the_pool_price() -> None:
    capacity = model()
    result = sim([Request(1.0, 10, 1)], StaticPeak(capacity, peak_need=2), capacity, horizon_s=1800.0).run()
    assert result.cost_usd == pytest.approx(2 * 30.0 * 0.5)
    assert result.gpu_hours == pytest.approx(2 * 8 * 0.5)
    assert result.cap_violations == 0


def test_spend_above_the_cap_is_counted_per_minute() -> None:
    capacity = model(max_hourly_usd=50.0)
    result = sim([Request(1.0, 10, 1)], StaticPeak(capacity, peak_need=2), capacity, horizon_s=600.0).run()
    assert result.cap_violations == 10


def test_interrupted_nodes_lose_no_request_and_gpufleet_replaces_them() -> None:
    # Room under the node bound: a warned node keeps its slot until reclaimed.
    capacity = model(onprem=1, max_nodes=6)
    # Steady overload of the single on-prem replica: burst nodes are needed all along.
    requests = [Request(i * 0.25, 100, 0) for i in range(2400)]
    result = sim(
        requests,
        Gpufleet(capacity, quiet_s=120.0),
        capacity,
        service=ServiceModel(tokens_per_s=100.0, slots=4, saturation=1),
        interruptions_per_node_hour=20.0,
        seed=3,
    ).run()
    replaced = [reason for _, reason in result.decisions if "interruption warning" in reason]
    assert replaced, "interruptions at 20 per node-hour must reach the policy"
    assert any("replace in" in reason for reason in replaced)
    # A warned node holds its slot until it goes: where the bound is reached, no replacement.
    assert all("replace in" in reason or "room left under the bound" in reason for reason in replaced)
    assert all(m.p99_queue_wait_s < 3600 for m in result.timeline)


def _random_prices(draw: st.DrawFn) -> PriceSeries:
    steps = draw(st.integers(1, 12))
    times = tuple(float(i * draw(st.integers(30, 300))) for i in range(steps))
    rows = tuple(
        {p: AWS_GPU_INSTANCES[p.instance_type].on_demand_usd_hour * draw(st.floats(0.1, 1.0)) for p in POOLS}
        for _ in times
    )
    return PriceSeries(tuple(sorted(set(times))), rows[: len(set(times))])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Request], PriceSeries, CapacityModel, float]:
    n = draw(st.integers(1, 300))
    arrivals = sorted(draw(st.lists(st.floats(0, 1500), min_size=n, max_size=n)))
    tokens = draw(st.lists(st.integers(1, 20000), min_size=n, max_size=n))
    requests = [Request(a, t, t % 97) for a, t in zip(arrivals, tokens, strict=True)]
    capacity = CapacityModel(
        onprem_replicas=draw(st.integers(0, 3)),
        replicas_per_node=1,
        max_nodes=draw(st.integers(0, 10)),
        max_hourly_usd=draw(st.floats(0.0, 500.0)),
        boot_to_serve_s=draw(st.floats(0.0, 900.0)),
        slo_queue_wait_s=2.0,
        # The controller's case: one max price for the whole group (SpotMaxPrice).
        fleet_max_price=draw(st.none() | st.floats(5.0, 90.0)),
        target_utilisation=draw(st.floats(0.3, 0.9)),
    )
    return requests, _random_prices(draw), capacity, draw(st.floats(0.0, 30.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), policy_name=st.sampled_from(["gpufleet", "oracle"]))
def test_the_hourly_cap_is_never_crossed(
    scenario: tuple[list[Request], PriceSeries, CapacityModel, float], policy_name: str
) -> None:
    requests, prices, capacity, interruptions = scenario
    horizon = 1800.0
    policy = (
        Gpufleet(capacity, quiet_s=120.0)
        if policy_name == "gpufleet"
        else Oracle(capacity, future_load=tuple(float(len(requests)) / 30 for _ in range(30)))
    )
    result = Simulation(
        requests=requests,
        policy=policy,
        capacity=capacity,
        service=ServiceModel(tokens_per_s=2000.0),
        prices=prices,
        replicas_per_node=RPN,
        horizon_s=horizon,
        interruptions_per_node_hour=interruptions,
    ).run()
    assert result.cap_violations == 0
    assert result.max_spend_usd_hour <= capacity.max_hourly_usd + 1e-6


def test_simulate_json_has_one_object_per_policy_with_the_fields_scripts_compare() -> None:
    result = CliRunner().invoke(
        app,
        [
            "burst",
            "simulate",
            "--trace",
            "bench/burst/data/mooncake_synthetic.jsonl",
            "--surge",
            "3@4m:8m",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["policy"] for r in rows] == [
        "static-peak",
        "hpa-gpu70",
        "keda-queue",
        "reactive-pending",
        "gpufleet",
        "oracle",
        "bound-clairvoyant",
        "bound-calendar",
    ]
    bounds, rows = rows[-2:], rows[:-2]
    for bound in bounds:
        # A bound is a plan, not a replay: its cost, GPU-hours and what the cap left unmet, and
        # whether HiGHS proved it the optimum (its status and MIP gap).
        assert set(bound) == {
            "policy",
            "status",
            "mip_gap",
            "gpu_hours",
            "cost_usd",
            "cap_violations",
            "unmet_minutes",
        }
        assert bound["status"] == "optimal"
    for row in rows:
        assert set(row) == {
            "policy",
            "slo_ok_minutes_pct",
            "slo_violation_minutes",
            "p99_queue_wait_s",
            "gpu_hours",
            "cost_usd",
            "cap_violations",
            "scale_actions",
        }
        assert 0 <= row["slo_ok_minutes_pct"] <= 100
        assert row["cap_violations"] == 0
    by = {r["policy"]: r for r in rows}
    # Provisioning for the peak all along misses nothing, at more than the clairvoyant's cost (an
    # autoscaler chasing a queue that capacity 15 minutes away cannot drain may cost more still).
    assert by["static-peak"]["slo_violation_minutes"] == 0
    assert by["static-peak"]["cost_usd"] > by["oracle"]["cost_usd"]


def test_unused_pool_prices_do_not_matter() -> None:
    capacity = model()
    prices = PriceSeries((0.0,), ({**{p: 30.0 for p in POOLS}, Pool("g6e.xlarge", "us-east-1a"): 0.01},))
    result = sim([Request(0.0, 100, 0)], StaticPeak(capacity, peak_need=1), capacity, prices=prices).run()
    assert result.cost_usd == pytest.approx(30.0 * 600 / 3600)


def test_simulate_a_site_without_burst_exits_2_naming_the_key() -> None:
    result = CliRunner().invoke(app, ["burst", "simulate", "--site", "lab", "--policy", "oracle"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "inventories/lab/nodes.yaml: site.burst: the site has no burst section to simulate"
    )


def test_a_slower_burst_replica_serves_at_its_speed() -> None:
    # No on-prem replica; one burst node whose replica runs at half an on-prem replica's speed.
    half = {"p5e.48xlarge": 0.5, "p5en.48xlarge": 0.5}
    capacity = replace(model(onprem=0), node_capacity=half)
    requests = [Request(0.0, 100, 0), Request(0.0, 100, 0)]
    result = sim(requests, StaticPeak(capacity, peak_need=0.5), capacity, replica_speed=half).run()
    # One second of on-prem work each takes two here: the second request waits two seconds.
    assert result.timeline[0].p99_queue_wait_s == pytest.approx(2.0)
    assert result.timeline[0].ready_replicas == pytest.approx(0.5)
    full = sim(requests, StaticPeak(capacity, peak_need=0.5), capacity).run()
    assert full.timeline[0].p99_queue_wait_s == pytest.approx(1.0)


def test_the_calendar_bound_lies_between_the_oracle_and_static_peak() -> None:
    # Three plays of the 17-minute trace; the surge starts after one boot time.
    trace = repeat(load_trace(Path("bench/burst/data/mooncake_synthetic.jsonl")), 3)
    surge = Surge(factor=3.0, start_s=1200.0, duration_s=600.0)
    sc = build_scenario(load_inventory("dc1"), "inventories/dc1/nodes.yaml", trace, [surge], announce=False)
    # Unannounced: gpufleet's calendar is empty, the bound still knows the surge.
    assert sc.peaks == () and [(p.start_s, p.end_s) for p in sc.surges] == [(1200.0, 1800.0)]
    by = {name: sc.run(name) for name in ("oracle", "peak-hold", "static-peak")}
    assert by["peak-hold"].slo_violation_minutes == 0
    assert by["oracle"].cost_usd < by["peak-hold"].cost_usd < by["static-peak"].cost_usd

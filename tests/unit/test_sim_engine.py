"""The simulator: it drives the production controller's step through the fleet interface, reads
production's signal from Prometheus-shaped answers, serves at the hardware's speed, and keeps the cap."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpufleet.burst.controller import Controller
from gpufleet.burst.hardware import MAX_NUM_SEQS, ReplicaHardware
from gpufleet.burst.policy import CapacityModel, Gpufleet, Pool
from gpufleet.cli import app
from gpufleet.inventory.load import load_inventory
from gpufleet.model.catalog import AWS_GPU_INSTANCES, GPUModel
from gpufleet.plan.admission import AdmissionPlan, Backend, GatewayPlan, ServerTemplate
from gpufleet.plan.burst import boot_to_serve_s
from gpufleet.sim.baselines import KedaQueue, StaticPeak
from gpufleet.sim.engine import Arrival, Simulation
from gpufleet.sim.prices import PriceSeries, pools_for
from gpufleet.sim.trace import Request

TYPES = ["p5e.48xlarge", "p5en.48xlarge"]
POOLS = pools_for("us-east-1", TYPES)
SMALL = ReplicaHardware("deepseek-r1-distill-qwen-7b", GPUModel.H200, 1)
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TRACES = SHARED / "traces" if (SHARED / "traces").is_dir() else Path("/work/shared/traces")


def flat(price: float) -> PriceSeries:
    return PriceSeries((0.0,), ({p: price for p in POOLS},))


def model(**kw: Any) -> CapacityModel:
    base: dict[str, Any] = {
        "onprem_replicas": 1,
        "replicas_per_node": 1.0,
        "max_nodes": 4,
        "max_hourly_usd": 400.0,
        "boot_to_serve_s": 60.0,
        "slo_queue_wait_s": 2.0,
    }
    base.update(kw)
    return CapacityModel(**base)


def gateway(onprem_replicas: int, **kw: Any) -> GatewayPlan:
    """A gateway as plan_gateway shapes it: one primary server of every on-prem slot, fallback
    servers (a burst and a degraded template) of one replica's slots; thresholds given (the
    site's own are tested in test_sim_gateway)."""
    admission: dict[str, Any] = {
        "slo_queue_wait_s": 2.0,
        "degrade_queue": {"P1": 40, "P2": 20},
        "shed_queue": 4,
        "retry_after_s": 2,
        "p0_queue_timeout_s": 20,
    }
    admission.update(kw)
    return GatewayPlan(
        admission=AdmissionPlan(**admission),
        primary=Backend(
            name="primary",
            model="m",
            servers=["p:8000"],
            slots=max(1, onprem_replicas) * MAX_NUM_SEQS,
            rate_rps=20.0,
        ),
        fallback=Backend(
            name="fallback",
            model="d",
            templates=[
                ServerTemplate(
                    prefix=f"f{int(degraded)}-",
                    srv_name=f"_http._tcp.f{int(degraded)}.serving.svc.cluster.local",
                    max_servers=4,
                    slots=MAX_NUM_SEQS,
                    rate_rps=20.0,
                    gpu=SMALL.gpu,
                    degraded=degraded,
                )
                for degraded in (False, True)
            ],
        ),
    )


# Limits that never bind (the tenant-limit rule has its own test).
NO_LIMITS = {"P0": 1e6, "P1": 1e6, "P2": 1e6}


def sim(requests: list[Request], policy: Any, capacity: CapacityModel, **kw: Any) -> Simulation:
    args: dict[str, Any] = {
        "arrivals": [Arrival(r, "P0" if i % 5 == 0 else "P2") for i, r in enumerate(requests)],
        "policy": policy,
        "capacity": capacity,
        "onprem": SMALL,
        "onprem_replicas": capacity.onprem_replicas,
        "burst": {t: (SMALL, 1) for t in TYPES},
        "prices": flat(30.0),
        "horizon_s": 900.0,
        "replica_rps": 20.0,
        "minute_load": [],
        "gateway": gateway(capacity.onprem_replicas),
        "tenant_limit_rps": NO_LIMITS,
    }
    args.update(kw)
    return Simulation(**args)


def overload(n: int = 3000, every: float = 0.2) -> list[Request]:
    """Far more than one small replica's prefill keeps up with: 20k-token prompts every 0.2 s."""
    return [Request(i * every, 20000, 50) for i in range(n)]


def test_a_fault_in_the_controllers_step_shows_in_the_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    capacity = model()
    healthy = sim(overload(), Gpufleet(capacity), capacity).run()
    assert healthy.scale_actions > 0 and healthy.step_errors == 0

    def broken(self: Controller, t: float) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(Controller, "_step", broken)
    faulty = sim(overload(), Gpufleet(capacity), capacity).run()
    # Every tick went through the production step, which logged and counted the fault and held.
    assert faulty.step_errors == 900 // 15
    assert faulty.scale_actions == 0 and faulty.cost_usd == 0


def test_the_policy_sees_production_signals_not_the_simulators_state() -> None:
    capacity = model()
    simulation = sim(overload(), Gpufleet(capacity), capacity)
    simulation.run()
    window = list(simulation.controller.window)
    assert window, "the controller decided from Prometheus answers"
    # Offered: 5 requests/s against a replica_rps of 20 = 0.25 replicas of arrivals. Production's
    # estimate counts what was served plus how fast the queue grew, so it sees arrivals even
    # while completions are capped by the replica.
    peak = max(s.load_replicas for s in window)
    assert 0.15 < peak < 0.5
    assert any(s.pending > 0 for s in window) and any(s.queue_wait_s > 0 for s in window)


def test_the_simulated_prometheus_answers_what_production_parses() -> None:
    capacity = model()
    simulation = sim(overload(200), Gpufleet(capacity), capacity, horizon_s=120.0)
    simulation.run()
    prom = simulation.controller.source.query  # type: ignore[attr-defined]
    for name, query in prom.queries().items():
        body = json.loads(prom.body(query))
        assert body["status"] == "success" and body["data"]["resultType"] == "vector", name
    # TensorRT-LLM's series are not exported by a vLLM backend: an empty vector, read as absent.
    assert json.loads(prom.body(prom.queries()["trt_waiting"]))["data"]["result"] == []


def test_warm_start_serves_the_initial_nodes_from_minute_zero() -> None:
    capacity = model()
    result = sim(
        [Request(1.0, 100, 10)], StaticPeak(capacity, peak_need=2.0), capacity, initial_nodes=2
    ).run()
    assert result.timeline[0].ready_replicas == pytest.approx(3.0)
    # Two nodes billed at the flat price over the whole horizon.
    assert result.cost_usd == pytest.approx(2 * 30.0 * 900 / 3600)


def test_launches_fail_while_no_pool_has_capacity_and_go_through_after() -> None:
    capacity = model(boot_to_serve_s=0.0)
    out = tuple((p, 0.0, 300.0) for p in POOLS)
    result = sim(overload(), StaticPeak(capacity, peak_need=2.0), capacity, outages=out).run()
    ready = [m.ready_replicas for m in result.timeline]
    assert ready[0] == pytest.approx(1.0) and ready[3] == pytest.approx(1.0)
    assert ready[6] == pytest.approx(3.0)


def test_a_launch_falls_to_the_next_type_when_the_first_has_no_capacity() -> None:
    capacity = model(boot_to_serve_s=0.0)
    out = tuple((p, 0.0, 900.0) for p in POOLS if p.instance_type == TYPES[0])
    simulation = sim(overload(), StaticPeak(capacity, peak_need=1.0), capacity, outages=out)
    simulation.run()
    assert simulation.nodes and {n.pool.instance_type for n in simulation.nodes.values()} == {TYPES[1]}


def test_spot_warnings_go_through_the_controllers_replacement() -> None:
    capacity = model(max_nodes=6)
    result = sim(
        overload(4000, 0.2),
        Gpufleet(capacity, quiet_s=120.0),
        capacity,
        interruptions_per_node_hour=30.0,
        seed=3,
    ).run()
    warned = [why for _, why in result.decisions if why.startswith("interruption warning")]
    assert warned, "interruptions at 30 per node-hour must reach the controller"
    assert any("desired capacity raised" in why for why in warned)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Request], PriceSeries, CapacityModel, float]:
    n = draw(st.integers(1, 200))
    arrivals = sorted(draw(st.lists(st.floats(0, 1500), min_size=n, max_size=n)))
    tokens = draw(st.lists(st.integers(1, 20000), min_size=n, max_size=n))
    requests = [Request(a, t, t % 97) for a, t in zip(arrivals, tokens, strict=True)]
    steps = draw(st.integers(1, 8))
    times = sorted({float(i * draw(st.integers(30, 300))) for i in range(steps)})
    rows = tuple(
        {p: AWS_GPU_INSTANCES[p.instance_type].on_demand_usd_hour * draw(st.floats(0.1, 1.0)) for p in POOLS}
        for _ in times
    )
    capacity = model(
        onprem_replicas=draw(st.integers(0, 3)),
        max_nodes=draw(st.integers(0, 10)),
        max_hourly_usd=draw(st.floats(0.0, 500.0)),
        boot_to_serve_s=draw(st.floats(0.0, 900.0)),
        target_utilisation=draw(st.floats(0.3, 0.9)),
    )
    return requests, PriceSeries(tuple(times), rows), capacity, draw(st.floats(0.0, 30.0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), max_price=st.none() | st.floats(5.0, 90.0))
def test_the_hourly_cap_is_never_crossed(
    scenario: tuple[list[Request], PriceSeries, CapacityModel, float], max_price: float | None
) -> None:
    """Through the controller, the replacement path included (interruptions up to 30/node-hour)."""
    requests, prices, capacity, interruptions = scenario
    result = sim(
        requests,
        Gpufleet(capacity, quiet_s=120.0),
        capacity,
        prices=prices,
        horizon_s=1800.0,
        spot_max_price=max_price,
        interruptions_per_node_hour=interruptions,
    ).run()
    assert result.cap_violations == 0
    assert result.max_spend_usd_hour <= capacity.max_hourly_usd + 1e-6


def test_unused_pool_prices_do_not_matter() -> None:
    capacity = model()
    other = Pool("g6e.12xlarge", "us-east-1a")
    prices = PriceSeries((0.0,), ({**{p: 30.0 for p in POOLS}, other: 1.0},))
    a = sim(overload(500), Gpufleet(capacity), capacity).run()
    b = sim(overload(500), Gpufleet(capacity), capacity, prices=prices).run()
    assert replace(a, timeline=(), decisions=()) == replace(b, timeline=(), decisions=())


def test_simulate_json_has_one_object_per_policy_and_bound_with_the_issues_fields() -> None:
    result = CliRunner().invoke(
        app,
        [
            "burst",
            "simulate",
            "--trace",
            str(TRACES / "mooncake_synthetic.jsonl"),
            "--hours",
            "0.5",
            "--boot-budget",
            "300",
            "--policy",
            "static-peak",
            "--announce",
            "none",
            "--surge",
            "2@10m:10m",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["policy"] for r in rows] == ["static-peak", "bound-clairvoyant", "bound-calendar"]
    fields = {
        "policy",
        "slo_ok_minutes_pct",
        "p0_violation_minutes",
        "slo_violation_minutes",
        "p99_queue_wait_s",
        "p99_ttft_s",
        "gpu_hours",
        "cost_usd",
        "cap_violations",
        "scale_actions",
        "degraded_requests_pct",
        "shed_requests_pct",
    }
    assert all(fields <= set(r) for r in rows)
    _, clairvoyant, calendar = rows
    # Knowing less never costs less.
    assert 0 < clairvoyant["cost_usd"] <= calendar["cost_usd"]
    assert clairvoyant["cap_violations"] == 0 and calendar["unmet_minutes"] >= clairvoyant["unmet_minutes"]
    # Whether HiGHS proved each bound the optimum, and by what gap.
    assert clairvoyant["status"] == calendar["status"] == "optimal"
    assert {"mip_gap", "unmet_minutes"} <= set(clairvoyant)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--announce", "maybe"],
            "--announce: unknown mode 'maybe'; one of exact, factor-wrong, start-wrong, none",
        ),
        (["--hours", "0"], "--hours: must be in (0, 24] (got 0)"),
        (["--boot-budget", "-5"], "--boot-budget: must be in [0, 7200] seconds (got -5)"),
        (
            ["--policy", "oracle"],
            "--policy: unknown policy 'oracle'; one of all, static-peak, hpa-gpu70, keda-queue, reactive-pending, gpufleet",
        ),
        (
            ["--surge", "3@5m:10m"],
            "--surge: x3 at 300s for 600s must start after the first boot-to-serve time "
            f"({boot_to_serve_s(load_inventory('dc1'))}s, the warm start) and end within the 3600s horizon",
        ),
    ],
)
def test_bad_simulate_input_is_one_line_and_exit_2(args: list[str], line: str) -> None:
    result = CliRunner().invoke(
        app, ["burst", "simulate", "--trace", str(TRACES / "azure_llm_2023_code.csv"), "--hours", "1", *args]
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.strip() == line


def test_simulate_a_site_without_burst_exits_2_naming_the_key() -> None:
    result = CliRunner().invoke(
        app, ["burst", "simulate", "--trace", str(TRACES / "azure_llm_2023_code.csv"), "--site", "lab"]
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "inventories/lab/nodes.yaml: site.burst: the site has no burst section to simulate"
    )


class Degrading(StaticPeak):
    """A policy asking for `degraded` on-prem replicas on the distilled model (and static-peak's fleet)."""

    def __init__(self, capacity: CapacityModel, degraded: int) -> None:
        super().__init__(capacity, peak_need=0.0)
        self.degraded = degraded

    def decide(self, *args: Any) -> Any:
        return replace(super().decide(*args), degraded=self.degraded)


def test_degraded_replicas_join_the_fallback_after_their_weights_load() -> None:
    capacity = model(onprem_replicas=2)
    requests = overload(2000)
    distilled = (SMALL, 2, 120.0, 60.0)
    arrivals = [Arrival(r, ("P0", "P1", "P2")[i % 3]) for i, r in enumerate(requests)]
    simulation = sim(requests, Degrading(capacity, 1), capacity, arrivals=arrivals, distilled=distilled)
    result = simulation.run()
    assert 0 < result.degraded_requests_pct < 67
    unit = simulation._onprem[-1]
    assert unit.mode == "distilled" and all(r.backend == "fallback" for r in unit.distilled)
    # While the weights load the replica serves nothing: with no burst node, the fallback has no
    # server and the degraded classes are shed instead.
    never = sim(
        requests, Degrading(capacity, 1), capacity, arrivals=arrivals, distilled=(SMALL, 2, 1e6, 60.0)
    ).run()
    assert never.degraded_requests_pct == 0 and never.shed_requests_pct > 0
    # A controller without a degrader only logs the count.
    unswitched = replace(simulation, levers=False).run()
    assert unswitched.degraded_requests_pct == 0
    # A degrader that cannot do it: the controller logs and counts each failure, and goes on.
    unable = replace(simulation, distilled=None)
    result = unable.run()
    errors = unable.controller.registry.get_sample_value("gpufleet_burst_degrade_errors_total")
    # Every tick decided (Prometheus had scraped before the first: the warm start) and asked for one.
    assert errors == 900 // 15
    assert result.step_errors == 0


def test_weighted_requests_never_make_a_signal_production_would_refuse() -> None:
    """Sums of fractional weights must not leave a queue at -1e-14: the controller refuses a
    negative pending count as garbage and holds the fleet (a bench run once did, for minutes)."""
    capacity = model()
    requests = overload(1500)
    arrivals = [Arrival(r, ("P0", "P1", "P2")[i % 3], 5.74) for i, r in enumerate(requests)]
    result = sim(requests, Gpufleet(capacity), capacity, arrivals=arrivals).run()
    assert result.step_errors == 0


def test_keda_reads_the_gateways_queue_where_tritons_pending_misses_it() -> None:
    """The queue is in HAProxy, past the primary's maxconn: the simulated exporter answers
    keda-queue's query with it, Triton's pending count holds only what is inside maxconn."""
    capacity = model()
    simulation = sim(overload(), KedaQueue(capacity, threshold=10.0), capacity)
    result = simulation.run()
    window = list(simulation.controller.window)
    slots = simulation.gateway.primary.slots
    # Requests past maxconn (P2 leaves for the fallback at a queue of 20; KEDA asks for a replica
    # per 10 queued): Triton never counts them.
    assert any(s.gateway_queue > 0 for s in window)
    assert max(s.pending for s in window) <= slots
    assert result.scale_actions > 0
    prom = simulation.controller.source.query  # type: ignore[attr-defined]
    answer = json.loads(prom.body(prom.queries()["gateway_queue"]))["data"]["result"]
    assert float(answer[0]["value"][1]) == simulation.scrapes[-1][8]


def test_the_on_prem_models_series_count_its_own_replicas_only() -> None:
    """Production asks for `model="<on-prem model>"`: the burst and degraded replicas serve the
    distilled model under another label, and the gateway's fallback rate counts them instead.
    The simulated series must not hand the controller the fallback's requests twice."""
    capacity = model(onprem_replicas=2)
    requests = overload(2000)
    arrivals = [Arrival(r, ("P0", "P1", "P2")[i % 3]) for i, r in enumerate(requests)]
    simulation = sim(
        requests, Degrading(capacity, 1), capacity, arrivals=arrivals, distilled=(SMALL, 2, 120.0, 60.0)
    )
    result = simulation.run()
    assert result.degraded_requests_pct > 0
    first_token = [
        (simulation.started_on[i], a.weight)
        for i, a in enumerate(simulation.arrivals)
        if not math.isnan(simulation._ttft[i])
    ]
    on_prem = sum(w for backend, w in first_token if backend == "primary")
    assert on_prem < sum(w for _, w in first_token), "the fallback served first tokens too"
    # The TTFT histogram's +Inf bucket: every first token of the on-prem model, no other.
    assert simulation._ttft_counts[-1] == pytest.approx(on_prem)

"""The simulator's gateway is production's: the site's own GatewayPlan, haproxy.cfg's rules in its
order, checked per arrival from the gateway's log (`Simulation.routes`: the fetches each rule read)
and against the rendered haproxy.cfg of dc1, so the simulator and the gateway cannot drift."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from gpufleet.burst.hardware import ReplicaHardware
from gpufleet.burst.policy import Decision
from gpufleet.inventory.load import load_inventory
from gpufleet.model.catalog import GPUModel
from gpufleet.plan.admission import (
    BOOT_P1_SHARE,
    FALLBACK,
    OVER_LIMIT,
    PRIMARY,
    SHED,
    GatewayPlan,
    Tenant,
    boot_limit,
    gateway_cfg,
    limit_per_window,
    limits_map,
    site_gateway,
)
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.site import plan_site
from gpufleet.sim.baselines import StaticPeak
from gpufleet.sim.engine import Arrival, Routed, Simulation
from gpufleet.sim.scenario import build_scenario
from gpufleet.sim.trace import Request, load_trace
from tests.unit.test_sim_engine import NO_LIMITS, SMALL, TRACES, TYPES, gateway, model, overload, sim

CLASSES = ("P0", "P1", "P2")
DISTILL_70B = ReplicaHardware("deepseek-r1-distill-llama-70b", GPUModel.H200, 4)


def mixed(requests: list[Request]) -> list[Arrival]:
    return [Arrival(r, CLASSES[i % 3]) for i, r in enumerate(requests)]


def with_slots(g: GatewayPlan, primary: int | None = None, fallback: int | None = None) -> GatewayPlan:
    """The gateway with other `maxconn`s per server: the primary's, every fallback template's."""
    p, f = g.primary, g.fallback
    if primary is not None:
        p = p.model_copy(update={"slots": primary})
    if fallback is not None:
        f = f.model_copy(
            update={"templates": [t.model_copy(update={"slots": fallback}) for t in f.templates]}
        )
    return g.model_copy(update={"primary": p, "fallback": f})


def degrades(simulation: Simulation) -> None:
    """Every arrival went where haproxy.cfg's rules, in order, send it given what they read."""
    plan = simulation.gateway.admission
    for r in simulation.routes:
        threshold = plan.degrade_queue.get(r.klass)  # type: ignore[call-overload]
        if r.rate > r.limit:
            assert r.backend == OVER_LIMIT, r
        elif r.booting and (r.klass == "P2" or (r.klass == "P1" and r.rate > boot_limit(r.limit))):
            assert r.backend == SHED, r
        elif threshold is not None and r.queue_primary >= threshold:
            full = r.fallback_servers == 0 or r.avg_queue_fallback >= plan.shed_queue
            assert r.backend == (SHED if full else FALLBACK), r
        else:
            assert r.backend == PRIMARY, r


class Degrading(StaticPeak):
    """Static-peak's fleet, and `degraded` on-prem replicas on the distilled model."""

    def __init__(self, capacity: Any, degraded: int, peak_need: float) -> None:
        super().__init__(capacity, peak_need=peak_need)
        self.degraded = degraded

    def decide(self, *args: Any) -> Decision:
        return replace(super().decide(*args), degraded=self.degraded)


def test_p0_is_never_served_by_the_fallback_nor_a_distilled_replica() -> None:
    capacity = model(onprem_replicas=2)
    requests = overload(2000)
    simulation = sim(
        requests,
        Degrading(capacity, 1, peak_need=2.0),
        capacity,
        arrivals=mixed(requests),
        initial_nodes=2,
        distilled=(SMALL, 2, 30.0, 30.0),
    )
    simulation.run()
    p0 = [i for i, a in enumerate(simulation.arrivals) if a.klass == "P0"]
    assert {simulation.routes[i].backend for i in p0} == {PRIMARY}
    assert {simulation.started_on[i] for i in p0} <= {PRIMARY, None}
    # The lower classes did go to the fallback, and it served them on burst and degraded replicas.
    assert any(s == FALLBACK for s in simulation.started_on)
    degrades(simulation)


def test_lower_classes_go_to_the_fallback_only_past_their_thresholds() -> None:
    capacity = model()
    requests = overload(1500)
    simulation = sim(
        requests, StaticPeak(capacity, peak_need=2.0), capacity, arrivals=mixed(requests), initial_nodes=2
    )
    simulation.run()
    degrades(simulation)
    plan = simulation.gateway.admission
    fallback = [r for r in simulation.routes if r.backend == FALLBACK]
    assert fallback, "the overload must reach the fallback"
    assert all(r.queue_primary >= plan.degrade_queue[r.klass] for r in fallback)  # type: ignore[index]
    # P2 leaves first: it degrades from a shorter queue than P1.
    assert {r.klass for r in fallback} == {"P1", "P2"}
    primary_p2 = [r.queue_primary for r in simulation.routes if r.klass == "P2" and r.backend == PRIMARY]
    assert max(primary_p2) < plan.degrade_queue["P2"]


def test_degraded_classes_are_shed_when_the_fallback_is_full_or_has_no_server() -> None:
    capacity = model()
    requests = overload(1500)
    # No burst node: no fallback server, everything past the thresholds is shed.
    empty = sim(requests, StaticPeak(capacity, peak_need=0.0), capacity, arrivals=mixed(requests))
    result = empty.run()
    degrades(empty)
    shed = [r for r in empty.routes if r.backend == SHED]
    assert shed and all(r.fallback_servers == 0 for r in shed)
    assert not any(r.backend == FALLBACK for r in empty.routes)
    assert result.shed_requests_pct == pytest.approx(100 * len(shed) / len(requests))
    # One burst node of one 70B replica taking two requests at a time: its queue per server fills.
    small = sim(
        requests,
        StaticPeak(capacity, peak_need=1.0),
        capacity,
        arrivals=mixed(requests),
        initial_nodes=1,
        gateway=with_slots(gateway(1, shed_queue=3), fallback=2),
        burst={t: (DISTILL_70B, 1) for t in TYPES},
    )
    small.run()
    degrades(small)
    full = [r for r in small.routes if r.backend == SHED]
    assert full and all(r.fallback_servers > 0 and r.avg_queue_fallback >= 3 for r in full)
    # The queue per server never passes the bound by more than the one arrival that reached it.
    assert max(r.avg_queue_fallback for r in small.routes) < 3 + 1


def test_while_capacity_boots_p2_is_shed_and_p1_held_to_its_boot_share() -> None:
    """The controller's own admission rule (tighten_admission) switches the simulated gateway. The
    TTFT SLO is set so any first token is overload: the rule fires on what the simulated Prometheus reads."""
    capacity = model(boot_to_serve_s=300.0, slo_ttft_s=1e-6)
    requests = [Request(i * 0.1, 200, 20) for i in range(6000)]

    def booting_routes(p1_limit_rps: float) -> list[Routed]:
        simulation = sim(
            requests,
            StaticPeak(capacity, peak_need=2.0),
            capacity,
            arrivals=mixed(requests),
            tenant_limit_rps={**NO_LIMITS, "P1": p1_limit_rps},
        )
        simulation.run()
        degrades(simulation)
        booting = [r for r in simulation.routes if r.booting]
        assert booting and not all(r.booting for r in simulation.routes), "tightened, then normal once served"
        assert {r.backend for r in booting if r.klass == "P2"} == {SHED}
        assert {r.backend for r in booting if r.klass == "P0"} == {PRIMARY}
        # Normal: nothing shed, no tenant over its limit.
        assert all(r.backend == PRIMARY for r in simulation.routes if not r.booting)
        return [r for r in booting if r.klass == "P1"]

    # P1 sends 3.33 requests/s, 33 per window. Against a limit of 4/s (40 per window) it keeps 20
    # while capacity boots; HAProxy counts the refused requests too, so it stays over: all refused.
    held = booting_routes(4.0)
    assert all(r.limit == 40 and r.rate > 20 and r.backend == SHED for r in held)
    # Against 8/s its boot share is 40 per window: it passes.
    passed = booting_routes(8.0)
    assert all(r.limit == 80 and r.rate <= 40 and r.backend == PRIMARY for r in passed)


def test_a_tenant_over_its_limit_gets_429_counted_as_shed_but_not_as_the_shed_backend() -> None:
    capacity = model()
    requests = [Request(i * 0.1, 200, 20) for i in range(3000)]
    simulation = sim(
        requests,
        StaticPeak(capacity, peak_need=0.0),
        capacity,
        arrivals=mixed(requests),
        tenant_limit_rps={**NO_LIMITS, "P2": 1.0},
    )
    result = simulation.run()
    degrades(simulation)
    limited = [r for r in simulation.routes if r.backend == OVER_LIMIT]
    assert limited and {r.klass for r in limited} == {"P2"}
    # HAProxy counts the refused requests too: a tenant sending 3.3/s against 1/s stays over it.
    assert len(limited) > 0.6 * sum(1 for a in simulation.arrivals if a.klass == "P2")
    assert result.shed_requests_pct == pytest.approx(100 * len(limited) / len(requests))
    # The controller's shed signal is the shed backend's rate, which a tenant limit never feeds.
    assert simulation.scrapes[-1][6] == 0


def test_a_request_left_in_haproxys_queue_past_its_timeout_fails() -> None:
    capacity = model()
    requests = overload(600)
    simulation = sim(
        requests,
        StaticPeak(capacity, peak_need=0.0),
        capacity,
        arrivals=[Arrival(r, "P0") for r in requests],
        # Two slots behind the primary's one server: the rest waits in HAProxy's queue, 5 s at most.
        gateway=with_slots(gateway(1, p0_queue_timeout_s=5), primary=2),
        horizon_s=300.0,
    )
    result = simulation.run()
    failed = [i for i, f in enumerate(simulation._failed) if f]
    assert failed and result.failed_requests_pct == pytest.approx(100 * len(failed) / len(requests))
    # Its wait is the timeout, it never started, and its minutes are violations.
    assert all(simulation._wait[i] == pytest.approx(5.0) for i in failed)
    assert all(simulation.started_on[i] is None for i in failed)
    minutes = {int(simulation.arrivals[i].request.arrival_s // 60) for i in failed}
    assert minutes == {0, 1} and result.p0_violation_minutes == len(minutes)
    # Without the timeout's cut the same requests wait on and are served late, never failed.
    patient = replace(simulation, gateway=with_slots(gateway(1, p0_queue_timeout_s=100_000), primary=2))
    assert patient.run().failed_requests_pct == 0


def _rendered(cfg: str) -> dict[str, Any]:
    """The numbers the simulator must share with the gateway, read from haproxy.cfg's text."""
    sections: dict[str, list[str]] = {}
    name = ""
    for line in cfg.splitlines():
        if line and not line.startswith(" "):
            name = line.strip()
            sections[name] = []
        elif line.strip():
            sections[name].append(line.strip())

    def one(section: str, pattern: str) -> re.Match[str]:
        found = [m for line in sections[section] if (m := re.search(pattern, line))]
        assert len(found) == 1, (section, pattern, found)
        return found[0]

    # Full at shed_queue queued per serving fallback server: queue - nbsrv x shed_queue >= 0.
    shed = one("frontend api", r"set-var\(txn\.fallback_room\) nbsrv\(fallback\),mul\((\d+)\)$")
    one("frontend api", r"^acl fallback_full queue\(fallback\),sub\(txn\.fallback_room\) ge 0$")
    return {
        "P1": int(one("frontend api", r"acl p1_degrade queue\(primary\) ge (\d+)")[1]),
        "P2": int(one("frontend api", r"acl p2_degrade queue\(primary\) ge (\d+)")[1]),
        "shed_queue": int(shed[1]),
        "boot_share": int(one("frontend api", r"var\(txn\.limit\),mul\((\d+)\),add\(99\),div\(100\)")[1]),
        "primary_timeout": int(one("defaults", r"^timeout queue (\d+)s$")[1]),
        "fallback_timeout": int(one(f"backend {FALLBACK}", r"^timeout queue (\d+)s$")[1]),
        "primary_maxconn": int(one(f"backend {PRIMARY}", r"^server\S* .* maxconn (\d+)")[1]),
        # prefix -> (max servers, maxconn, weight) of every fallback server-template.
        "templates": {
            m[1]: (int(m[2]), int(m[3]), int(m[4]))
            for line in sections[f"backend {FALLBACK}"]
            if (
                m := re.fullmatch(
                    r"server-template (\S+) (\d+) \S+ maxconn (\d+) weight (\d+) check .*", line
                )
            )
        },
        "fallback_servers": [line for line in sections[f"backend {FALLBACK}"] if line.startswith("server ")],
    }


def test_the_simulators_thresholds_are_the_ones_dc1s_haproxy_cfg_holds() -> None:
    inv = load_inventory("dc1")
    plan = plan_site(inv)
    site = "inventories/dc1/nodes.yaml"
    rendered = _rendered(gateway_cfg(site_gateway(inv, plan, plan_fleet(inv, site))))  # type: ignore[arg-type]
    trace = load_trace(TRACES / "mooncake_synthetic.jsonl")
    scenario = build_scenario(inv, site, trace, [], horizon_s=600.0)
    need = scenario.capacity.missing(max(scenario.minute_load))
    simulation = scenario.simulation(StaticPeak(scenario.capacity, peak_need=need))
    simulation.run()
    g = simulation.gateway.admission
    assert (g.degrade_queue["P1"], g.degrade_queue["P2"]) == (rendered["P1"], rendered["P2"])
    assert g.shed_queue == rendered["shed_queue"]
    assert round(BOOT_P1_SHARE * 100) == rendered["boot_share"]
    assert simulation.queue_timeout_s(PRIMARY) == rendered["primary_timeout"]
    assert simulation.queue_timeout_s(FALLBACK) == rendered["fallback_timeout"]
    assert simulation.slots(PRIMARY) == rendered["primary_maxconn"]
    # Each fallback server (a distilled replica) takes its class's template's maxconn: the
    # rendered templates are the plan's, and every serving replica has its template's slots.
    templates = {t.prefix: t for t in simulation.gateway.fallback.templates}
    assert rendered["fallback_servers"] == [] and len(templates) > 2
    assert rendered["templates"] == {p: (t.max_servers, t.slots, t.weight) for p, t in templates.items()}
    by_class = {(t.gpu, t.degraded): rendered["templates"][p][1] for p, t in templates.items()}
    weights = {(t.gpu, t.degraded): rendered["templates"][p][2] for p, t in templates.items()}
    burst = [r for node in simulation.nodes.values() if node.state == "InService" for r in node.replicas]
    degraded = [r for unit in simulation._onprem for r in unit.distilled]
    serving = burst + degraded
    assert burst and len(serving) == simulation.fallback_servers()
    # Every class the fleet may bring up (static-peak holds the cheapest type's alone), and the
    # Degrader's replicas on the on-prem GPUs, start with their template's slots.
    assert scenario.distilled is not None and len({hw.gpu for hw, _ in scenario.burst.values()}) > 2
    for hw, _ in scenario.burst.values():
        assert simulation.template_slots(hw, degraded=False) == by_class[hw.gpu, False]
    hw = scenario.distilled[0]
    assert simulation.template_slots(hw, degraded=True) == by_class[hw.gpu, True]
    assert all(r.max_seqs == by_class[r.hw.gpu, False] for r in burst)
    assert all(r.max_seqs == by_class[r.hw.gpu, True] for r in degraded)
    assert simulation.slots(FALLBACK) == sum(by_class[r.hw.gpu, r in degraded] for r in serving)
    # Weighted as HAProxy spreads them: in proportion to the slots, the roomiest at 256.
    assert max(weights.values()) == 256
    assert all(abs(weights[k] - 256 * n / max(by_class.values())) <= 0.5 for k, n in by_class.items())
    # The simulated tenants' limits are read as the limits map writes them.
    for klass, rps in scenario.tenant_limit_rps.items():
        tenant = Tenant(name=klass.lower(), priority=klass, requests_per_s=rps)  # type: ignore[arg-type]
        assert limits_map({"key": tenant}) == f"key {limit_per_window(rps)}\n"
        assert simulation.routes and {r.limit for r in simulation.routes if r.klass == klass} == {
            limit_per_window(rps)
        }


def test_a_minute_that_sheds_more_than_one_percent_is_not_served_even_if_its_admitted_p99_holds() -> None:
    """slo_ok_minutes_pct scores only the admitted; served_minutes_pct counts 429s and failures against the minute."""
    # The controller reads any first token as overload (its TTFT SLO), so it tightens while it boots.
    capacity = model(boot_to_serve_s=300.0, slo_ttft_s=1e-6)
    requests = [Request(i * 0.1, 200, 20) for i in range(6000)]
    simulation = sim(requests, StaticPeak(capacity, peak_need=2.0), capacity, arrivals=mixed(requests))
    result = simulation.run()
    minutes = {int(r.arrival_s // 60) for r in requests}
    offered = dict.fromkeys(minutes, 0)
    refused = dict.fromkeys(minutes, 0)
    for r, route in zip(requests, simulation.routes, strict=True):
        offered[int(r.arrival_s // 60)] += 1
        refused[int(r.arrival_s // 60)] += route.backend in (SHED, OVER_LIMIT)
    shedding = [m for m in minutes if refused[m] > 0.01 * offered[m]]
    assert shedding, "P2 is shed while capacity boots"
    assert result.failed_requests_pct == 0
    # Every minute's admitted p99 holds, yet the minutes that shed P2 are not served.
    assert result.slo_ok_minutes_pct == 100.0
    assert result.served_minutes_pct == pytest.approx(100.0 * (len(minutes) - len(shedding)) / len(minutes))
    assert result.summary()["served_minutes_pct"] == round(result.served_minutes_pct, 2)

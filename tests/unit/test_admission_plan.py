"""Admission thresholds from the serving plan, and the rendered haproxy.cfg through `haproxy -c`
(Debian's 2.6, the gateway image's major version)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dnslib import DNSRecord
from pydantic import ValidationError

from gpufleet.inventory.stacks import load_stack
from gpufleet.model.catalog import GPUModel
from gpufleet.plan.admission import (
    ADMISSION_MAP,
    DNS_PAYLOAD_BYTES,
    FALLBACK,
    GATEWAY_DIR,
    GATEWAY_MAPS,
    MAX_FALLBACK_SERVERS,
    PRIMARY,
    RUNTIME_API_PORT,
    SHED,
    SRV_RECORD_BYTES,
    Backend,
    GatewayPlan,
    Tenant,
    admission_map_text,
    gateway_cfg,
    plan_admission,
    plan_gateway,
    site_gateway,
)
from gpufleet.plan.aws import plan_burst, plan_fleet
from gpufleet.plan.degrade import degraded_workload, plan_degrade
from gpufleet.plan.k8s import burst_workloads, onprem_workload
from gpufleet.plan.site import plan_site
from gpufleet.serving.gateway import check_config, write_config
from gpufleet.serving.tenants import write_maps
from tests.srvdns import Records


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
    onprem = onprem_workload(inv, plan)
    assert onprem is not None and plan.serving is not None and plan.serving.shape is not None
    return plan_gateway(
        plan.serving.slo_queue_wait_p99_s,
        onprem,
        plan.serving.shape.gpu,
        burst_workloads(inv, plan, _fleet(), inv.site.burst.max_nodes if inv.site.burst else 0),
    )


def test_dc1_gateway_is_sized_from_its_replicas() -> None:
    g = _site_gateway()
    # 4 replicas x 215 sequences of DeepSeek-R1 on 2 x 8 H100, one Service, fully qualified
    # (HAProxy's resolvers apply no search list).
    assert g.primary.slots == 4 * 215 and g.primary.servers == ["deepseek-r1.serving.svc.cluster.local:8000"]
    assert g.admission.degrade_queue["P2"] < g.admission.degrade_queue["P1"] <= g.primary.rate_rps * 2.0
    # The distilled model on burst nodes: a template per GPU class, a server per ready replica of
    # it, room for the class at the largest fleet (8 nodes x 2 replicas of TP 4 on an 8-GPU type),
    # each one replica of its class's sequences, weighted by them.
    f = g.fallback
    stack = load_stack("burst-prod")
    classes = burst_workloads(stack.inventory, plan_site(stack.inventory), _fleet(), 8)
    assert (
        f.model == "deepseek-r1-distill-llama-70b"
        and f.servers == []
        and len(f.templates) == len(classes) > 1
    )
    for t, w in zip(f.templates, classes, strict=True):
        assert (
            t.srv_name == f"_http._tcp.{w.name}-pods.serving.svc.cluster.local" and t.prefix == f"{w.name}-"
        )
        assert t.max_servers == w.replicas == 8 * 2 and t.slots == w.engine["max_num_seqs"] and not t.degraded
        assert t.gpu.value == w.node_selector["gpufleet.io/gpu-model"]
    by_gpu = {t.gpu: t for t in f.templates}
    h200, h100, l40s = by_gpu[GPUModel.H200], by_gpu[GPUModel.H100_SXM], by_gpu[GPUModel.L40S]
    assert h200.slots > h100.slots > l40s.slots and h200.rate_rps > h100.rate_rps > l40s.rate_rps
    # Weights within HAProxy's 1..256, the roomiest class at 256, the others in proportion.
    assert h200.weight == 256 and all(abs(t.weight - 256 * t.slots / h200.slots) <= 0.5 for t in f.templates)
    # The shed bound is per server: half an SLO of the slowest class's replica rate.
    assert g.admission.shed_queue == max(1, int(l40s.rate_rps * 2.0 * 0.5))


def _fleet():  # type: ignore[no-untyped-def]
    stack = load_stack("burst-prod")
    return plan_burst(stack.inventory, stack.config, "stacks/Pulumi.burst-prod.yaml").fleet


def test_dc1_gateway_has_a_template_for_the_degraders_replicas() -> None:
    """dc1-prod's own gateway: the Degrader's distilled replicas on the on-prem H100s have their
    headless Service and template, sized for the on-prem GPU, as many as it may start."""
    inv = load_stack("dc1-prod").inventory
    plan = plan_site(inv)
    fleet = plan_fleet(inv, "stacks/Pulumi.dc1-prod.yaml")
    g = site_gateway(inv, plan, fleet)
    degrade, distilled = plan_degrade(inv, plan, fleet), degraded_workload(inv, plan, fleet)
    assert g is not None and degrade is not None and distilled is not None
    (t,) = [t for t in g.fallback.templates if t.degraded]
    assert t.srv_name == f"_http._tcp.{distilled.name}-pods.serving.svc.cluster.local"
    assert t.max_servers == degrade.max_degraded * degrade.per_onprem > 0
    assert t.gpu == plan.serving.shape.gpu and t.slots == distilled.engine["max_num_seqs"]  # type: ignore[union-attr]
    assert len({t.prefix for t in g.fallback.templates}) == len(g.fallback.templates)


TEMPLATE = {
    "prefix": "f-",
    "srv_name": "_http._tcp.x.serving.svc.cluster.local",
    "max_servers": 2,
    "slots": 4,
    "rate_rps": 1.0,
    "weight": 256,
    "gpu": "H200-SXM-141GB",
}


@pytest.mark.parametrize(
    "field",
    [
        {"model": "m/,/x/)] if TRUE"},  # would leave the fallback's set-path regsub
        {"model": "m maxconn 1"},
        {"name": "primary\n  server x 10.0.0.1:1"},  # a line of its own
        {"servers": ["10.0.0.1:1 backup"]},
        {"templates": [{**TEMPLATE, "srv_name": "_http._tcp.x.svc resolvers other"}]},
        {"templates": [{**TEMPLATE, "prefix": "f- 1 x"}]},
        {"templates": [{**TEMPLATE, "weight": 257}]},  # past HAProxy's range
        {"templates": [{**TEMPLATE, "weight": 0}]},  # would take the servers out
        {"templates": [{**TEMPLATE, "max_servers": MAX_FALLBACK_SERVERS + 1}]},  # past one DNS answer
    ],
)
def test_a_backend_string_that_would_reach_haproxy_cfg_unsafely_is_refused(field: dict[str, object]) -> None:
    good = {"name": "fallback", "model": "m", "servers": ["127.0.0.1:1"], "slots": 1, "rate_rps": 1}
    Backend.model_validate({**good, "templates": [TEMPLATE]})
    with pytest.raises(ValidationError):
        Backend.model_validate({**good, **field})


def test_a_fallback_without_replicas_is_refused() -> None:
    stack = load_stack("burst-prod")
    inv = stack.inventory
    plan = plan_site(inv)
    onprem = onprem_workload(inv, plan)
    assert onprem is not None and plan.serving is not None and plan.serving.shape is not None
    fleet = _fleet()
    with pytest.raises(ValueError, match=r"burst\.max_nodes"):
        plan_gateway(2.0, onprem, plan.serving.shape.gpu, burst_workloads(inv, plan, fleet, 0))


def test_dc1_in_cluster_config_is_valid_haproxy(tmp_path: Path) -> None:
    """The in-cluster text (gateway_cfg), its mount paths moved under tmp_path so that `haproxy -c`
    finds the maps: fallback servers discovered from SRV records, shed per server, the runtime API
    on its own port at operator level. dc1-prod's own text (site_gateway: the servers the
    Degrader's replicas add too), as its ConfigMap carries it, passes the same check."""
    g = _site_gateway()
    text = gateway_cfg(g)
    lines = [line.strip() for line in text.splitlines()]
    for t in g.fallback.templates:
        template = f"server-template {t.prefix} 16 {t.srv_name} maxconn {t.slots} weight {t.weight} check"
        assert any(line.startswith(template) for line in lines), text
    assert not any(line.startswith("server ") and "primary" not in line for line in lines)
    room = f"http-request set-var(txn.fallback_room) nbsrv({FALLBACK}),mul({g.admission.shed_queue})"
    assert room in lines and f"acl fallback_full queue({FALLBACK}),sub(txn.fallback_room) ge 0" in lines
    assert f"acl fallback_full nbsrv({FALLBACK}) eq 0" in lines
    assert f"stats socket ipv4@:{RUNTIME_API_PORT} level operator" in lines and "level admin" not in text
    assert "parse-resolv-conf" in lines and "accepted_payload_size 8192" in lines
    maps, conf = tmp_path / "maps", tmp_path / "conf"
    conf.mkdir()
    write_maps({"k0": Tenant(name="bank", priority="P0", requests_per_s=5)}, maps)
    (conf / ADMISSION_MAP).write_text(admission_map_text())
    inv = load_stack("dc1-prod").inventory
    deployed = site_gateway(inv, plan_site(inv), plan_fleet(inv, "stacks/Pulumi.dc1-prod.yaml"))
    assert deployed is not None
    for name, cfg in (("deployed.cfg", gateway_cfg(deployed)), ("haproxy.cfg", text)):
        (conf / name).write_text(cfg.replace(GATEWAY_MAPS, str(maps)).replace(GATEWAY_DIR, str(conf)))
        checked = check_config(conf / name)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # HAProxy refuses what it does not know: the check can fail.
    (conf / "bad.cfg").write_text((conf / "haproxy.cfg").read_text().replace("nbsrv(", "nbsrvs("))
    assert check_config(conf / "bad.cfg").returncode != 0


def test_the_largest_fleets_srv_answer_fits_one_udp_answer() -> None:
    """CoreDNS truncates an answer past the size HAProxy announces, and HAProxy (UDP only with
    parse-resolv-conf) would then see no server. The answer for every server dc1's fleet can
    hold, named as Kubernetes names pods (dashed IPv4 under the Service), with each address in
    the additional section, fits, and so does the most the plan allows."""
    # One answer per template: the longest name's records are the largest.
    t = max(_site_gateway().fallback.templates, key=lambda t: len(t.srv_name))
    service = t.srv_name.split(".", 2)[2] + "."
    pods = [
        (f"10-233-{i // 250}-{i % 250 + 1}.{service}", f"10.233.{i // 250}.{i % 250 + 1}", 8000)
        for i in range(t.max_servers)
    ]

    def size(n: int) -> int:
        records = Records()
        records.set(t.srv_name + ".", pods[:n])
        answer = records.answer(DNSRecord.question(t.srv_name, "SRV"))
        assert len(answer.rr) == len(answer.ar) == n
        return len(answer.pack())

    assert t.max_servers == 16 and size(16) < DNS_PAYLOAD_BYTES
    # Per record (SRV and its address) within the plan's bound, header and question within 512.
    assert (size(16) - size(1)) / 15 <= SRV_RECORD_BYTES and size(1) <= 512
    assert 512 + MAX_FALLBACK_SERVERS * SRV_RECORD_BYTES <= DNS_PAYLOAD_BYTES


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

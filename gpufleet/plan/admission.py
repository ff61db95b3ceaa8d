"""Admission in front of Triton: priority classes, per-tenant rate limits, fallback, shedding. Pure.

The gateway is HAProxy (Debian's 2.6): no proxy of our own. This module decides its thresholds
from the serving plan and renders `haproxy.cfg`; `haproxy -c` checks the rendering in tests.

- Class: each API key maps to a tenant and its class (P0 > P1 > P2). An `X-Priority` header may
  lower a request's class, never raise it. Unknown keys get 401.
- Rate limit: per tenant and class, a stick-table counter of requests over `RATE_WINDOW_S`
  (HAProxy's sliding-window rate, a token bucket of rate r and burst r x window); over it, 429.
- Priority queueing: `set-priority-class` orders HAProxy's queue for the primary backend: a P0
  request waits only behind other P0 requests.
- Fallback, then shed: with the primary's queue past a class's degrade threshold, P1/P2 go to
  the distilled fallback model; with the fallback's queue also past its bound, they are shed
  with 429 and `Retry-After`. P0 always goes to the primary and is never shed while capacity
  exists: it waits in the queue up to `timeout queue`.

Queue thresholds come from Little's law: a queue of `rate x SLO` requests in front of a backend
serving `rate` requests/s waits `SLO` on average. P2 leaves at a quarter of that, P1 at a half,
so the queue P0 sees stays well under its SLO.

While burst capacity boots, admission tightens for the lower classes: P2 is shed, and P1 keeps
`BOOT_P1_SHARE` of its rate (what is over it is shed too, so the controller counts it as demand).
The burst controller switches this through HAProxy's runtime API (`set map` on the admission
map's `booting` entry, operator level) and back when the capacity serves or its boot fails; the
map file holds the normal mode, so a restarted gateway starts normal and the controller's next
step sets it again.

The burst controller reads what admission did from HAProxy's own Prometheus exporter:
`SHED_RATE_QUERY` and `DEGRADED_RATE_QUERY` (requests/s shed and sent to the fallback). The
exporter listens on its own port (`METRICS_PORT`, named `metrics` like Triton's, so the one
PodMonitor scrapes both), never on the API port where anyone could read it without a key.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from gpufleet.model.catalog import GPUModel, decode_rate
from gpufleet.model.site import Inventory
from gpufleet.plan.aws import BurstFleet
from gpufleet.plan.k8s import TRITON_HTTP, Workload, burst_workload, onprem_workload
from gpufleet.plan.node import Frozen
from gpufleet.plan.site import SitePlan

Priority = Literal["P0", "P1", "P2"]
PRIORITIES: tuple[Priority, ...] = ("P0", "P1", "P2")
# HAProxy dequeues lower priority classes first.
PRIORITY_CLASS = {"P0": -1, "P1": 0, "P2": 1}
DEGRADE_FRACTION: dict[Priority, float | None] = {"P0": None, "P1": 0.5, "P2": 0.25}
# The fallback sheds once its own queue would wait this share of the SLO.
SHED_FRACTION = 0.5
RATE_WINDOW_S = 10
# How long a shed client should wait before retrying: the time the queue needs to drain to the
# degrade threshold, at least one second.
PRIMARY, FALLBACK, SHED, OVER_LIMIT = "primary", "fallback", "shed", "over_limit"


def backend_rate_query(backend: str, window: str = "1m") -> str:
    """PromQL: requests/s into one of the gateway's backends, over all gateway replicas."""
    return f'sum(rate(haproxy_backend_http_requests_total{{proxy="{backend}"}}[{window}]))'


SHED_RATE_QUERY = backend_rate_query(SHED)
DEGRADED_RATE_QUERY = backend_rate_query(FALLBACK)
# The admission map beside haproxy.cfg: `booting 0|1`, switched at run time by the burst controller.
ADMISSION_MAP = "admission.map"
BOOTING_KEY = "booting"
# While burst capacity boots, P1 keeps this share of its rate limit (rounded up).
BOOT_P1_SHARE = 0.5
METRICS_PATH = "/metrics"
GATEWAY = "gateway"
GATEWAY_PORT = 8080
METRICS_PORT = 8404
GATEWAY_DIR = "/usr/local/etc/haproxy"
GATEWAY_MAPS = "/etc/gateway-tenants"
TENANTS_SECRET = "gateway-tenants"
GATEWAY_REPLICAS = 2
# The burst controller's pods (gpufleet.plan.controller): the one client of the gateways' runtime API.
CONTROLLER_LABELS = {"app.kubernetes.io/name": "gpufleet-burst-controller"}


# Tenants and their API keys reach HAProxy as map files (`key value...` per line, whitespace
# between fields, `#` a comment) and keys arrive in a header that `req.hdr` splits at commas. So a
# key is token characters only, and a tenant name is a DNS label: neither can split a line, add
# a field (a name with a space would be read as the class: `word(2,' ')`), start a comment or
# reach the stick table (`tenant:class`, 96 bytes) longer than it holds.
API_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")
TenantName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
# Requests per second one tenant class may send: far above any replica set, finite for the window.
MAX_TENANT_RPS = 100_000
# Keys the gateway's stick table holds (`size 100k`).
MAX_TENANTS = 100_000


class Tenant(Frozen):
    name: TenantName
    priority: Priority
    requests_per_s: float = Field(gt=0, le=MAX_TENANT_RPS, allow_inf_nan=False)


class Backend(Frozen):
    name: str
    model: str
    servers: list[str]  # host:port
    slots: int  # concurrent requests each server takes (the engine's max_num_seqs)
    rate_rps: float  # requests/s the whole backend serves at its SLO


class AdmissionPlan(Frozen):
    slo_queue_wait_s: float
    degrade_queue: dict[Priority, int]  # primary queue length past which the class goes to fallback
    shed_queue: int  # fallback queue length past which degraded requests are shed
    retry_after_s: int
    p0_queue_timeout_s: int


def plan_admission(slo_queue_wait_s: float, primary: Backend, fallback: Backend) -> AdmissionPlan:
    """Queue thresholds from each backend's service rate and the queue-wait SLO."""
    slo_queue = primary.rate_rps * slo_queue_wait_s
    degrade = {p: max(1, math.floor(slo_queue * f)) for p, f in DEGRADE_FRACTION.items() if f is not None}
    return AdmissionPlan(
        slo_queue_wait_s=slo_queue_wait_s,
        degrade_queue=degrade,
        shed_queue=max(1, math.floor(fallback.rate_rps * slo_queue_wait_s * SHED_FRACTION)),
        retry_after_s=max(1, math.ceil(slo_queue_wait_s)),
        # P0 waits for capacity: several SLOs' worth before HAProxy gives up (503).
        p0_queue_timeout_s=max(10, math.ceil(10 * slo_queue_wait_s)),
    )


def haproxy_cfg(
    plan: AdmissionPlan,
    primary: Backend,
    fallback: Backend,
    *,
    bind: str,
    tenants_map: str,
    limits_map: str,
    metrics_bind: str,
    admission_map: str,
    runtime_api: str | None = None,
) -> str:
    """The gateway's configuration. Maps (API key -> `tenant class`, API key -> limit) are
    separate files: the keys are secrets and never sit in this text. `admission_map` is the
    file of `admission_map_text()`; `runtime_api` binds HAProxy's runtime API at operator level
    (it can rewrite maps: only the burst controller may reach it)."""

    def servers(b: Backend) -> list[str]:
        return [f"  server {b.name}-{i} {addr} maxconn {b.slots}" for i, addr in enumerate(b.servers)]

    window = RATE_WINDOW_S
    lines = [
        "global",
        "  maxconn 4096",
        *([f"  stats socket {runtime_api} level operator"] if runtime_api else []),
        "",
        "resolvers cluster",
        "  parse-resolv-conf",
        "  hold valid 10s",
        "",
        "defaults",
        "  mode http",
        # Service names resolve at start when they can, later through the cluster's DNS.
        "  default-server init-addr last,libc,none resolvers cluster",
        "  option http-buffer-request",
        "  timeout connect 5s",
        "  timeout client 600s",
        "  timeout server 600s",
        f"  timeout queue {plan.p0_queue_timeout_s}s",
        "",
        f"backend {OVER_LIMIT}",
        '  http-request return status 429 content-type text/plain string "rate limit" '
        f'hdr Retry-After "{window}"',
        "",
        f"backend {SHED}",
        '  http-request return status 429 content-type text/plain string "overloaded" '
        f'hdr Retry-After "{plan.retry_after_s}"',
        "",
        "backend rate",
        f"  stick-table type string len 96 size 100k expire {window * 3}s store http_req_rate({window}s)",
        "",
        "frontend metrics",
        f"  bind {metrics_bind}",
        f"  http-request use-service prometheus-exporter if {{ path {METRICS_PATH} }}",
        "",
        "frontend api",
        f"  bind {bind}",
        # Tenant and class from the API key; unknown keys stop here.
        f"  http-request set-var(txn.who) req.hdr(x-api-key),map({tenants_map})",
        "  http-request deny deny_status 401 unless { var(txn.who) -m found }",
        "  http-request set-var(txn.tenant) var(txn.who),word(1,' ')",
        "  http-request set-var(txn.class) var(txn.who),word(2,' ')",
        # A header may lower the class, never raise it.
        "  http-request set-var(txn.class) str(P2) if { req.hdr(x-priority) -m str P2 }",
        "  http-request set-var(txn.class) str(P1) if { req.hdr(x-priority) -m str P1 } { var(txn.class) -m str P0 }",
        "  http-request set-var(txn.limit) req.hdr(x-api-key),map_str_int(" + limits_map + ",0)",
        "  http-request set-var(txn.bucket) var(txn.tenant),concat(:,txn.class)",
        "  http-request track-sc0 var(txn.bucket) table rate",
        "  acl p0 var(txn.class) -m str P0",
        "  acl p1 var(txn.class) -m str P1",
        "  acl p2 var(txn.class) -m str P2",
        "  acl over_limit sc_http_req_rate(0),sub(txn.limit) gt 0",
        # Burst capacity booting (the controller's `booting` entry): P1 held to its share.
        f"  acl booting str({BOOTING_KEY}),map({admission_map},0) -m int gt 0",
        f"  http-request set-var(txn.boot_limit) var(txn.limit),mul({round(BOOT_P1_SHARE * 100)}),add(99),div(100)",
        "  acl over_boot_limit sc_http_req_rate(0),sub(txn.boot_limit) gt 0",
        *(f"  http-request set-priority-class int({PRIORITY_CLASS[p]}) if {p.lower()}" for p in PRIORITIES),
        f"  acl p1_degrade queue({PRIMARY}) ge {plan.degrade_queue['P1']}",
        f"  acl p2_degrade queue({PRIMARY}) ge {plan.degrade_queue['P2']}",
        f"  acl fallback_full queue({FALLBACK}) ge {plan.shed_queue}",
        # No burst node serving the fallback yet: the degraded classes are shed at once.
        f"  acl fallback_full nbsrv({FALLBACK}) eq 0",
        f"  use_backend {OVER_LIMIT} if over_limit",
        f"  use_backend {SHED} if p2 booting",
        f"  use_backend {SHED} if p1 booting over_boot_limit",
        f"  use_backend {SHED} if p2 p2_degrade fallback_full",
        f"  use_backend {SHED} if p1 p1_degrade fallback_full",
        f"  use_backend {FALLBACK} if p2 p2_degrade",
        f"  use_backend {FALLBACK} if p1 p1_degrade",
        f"  default_backend {PRIMARY}",
        "",
        f"backend {PRIMARY}",
        "  balance leastconn",
        "  http-response set-header X-Served-By primary",
        *servers(primary),
        "",
        f"backend {FALLBACK}",
        "  balance leastconn",
        f"  timeout queue {max(1, math.ceil(plan.slo_queue_wait_s))}s",
        # Same API, the distilled model's name in the path.
        f"  http-request set-path %[path,regsub(^/v2/models/[^/]+/,/v2/models/{fallback.model}/)]",
        "  http-response set-header X-Served-By fallback",
        *servers(fallback),
    ]
    return "\n".join(lines) + "\n"


# Mean generated tokens per request: turns the replica's decode rate into requests/s.
MEAN_OUTPUT_TOKENS = 512


def backend_for(
    name: str, host: str, port: int, engine: dict[str, Any], replicas: int, steps_per_s: float
) -> Backend:
    """A Service of `replicas` engine replicas: slots are their sequences in flight, the rate what
    their decode steps produce at `MEAN_OUTPUT_TOKENS` per request."""
    seqs = int(engine["max_num_seqs"])
    return Backend(
        name=name,
        model=str(engine["served_model_name"]),
        servers=[f"{host}:{port}"],
        slots=max(1, replicas * seqs),
        rate_rps=max(0.001, replicas * seqs * steps_per_s / MEAN_OUTPUT_TOKENS),
    )


def _keys(keys: dict[str, Tenant]) -> list[tuple[str, Tenant]]:
    if not all(API_KEY.fullmatch(k) for k in keys):
        raise ValueError(
            "an API key of other than A-Za-z0-9._~+/=- (1 to 128): it would not be one map entry"
        )
    return sorted(keys.items())


def admission_map_text(booting: bool = False) -> str:
    """The admission map's file: normal admission unless the controller says capacity boots."""
    return f"{BOOTING_KEY} {int(booting)}\n"


def tenants_map(keys: dict[str, Tenant]) -> str:
    """API key -> `tenant class`, as HAProxy's map file."""
    return "".join(f"{key} {t.name} {t.priority}\n" for key, t in _keys(keys))


def limit_per_window(requests_per_s: float) -> int:
    """A tenant's limits-map entry: requests allowed per rate window."""
    return max(1, math.floor(requests_per_s * RATE_WINDOW_S))


def boot_limit(limit: int) -> int:
    """What P1 keeps of its limit while capacity boots: BOOT_P1_SHARE of it, rounded up, as the
    rendered `mul,add(99),div(100)` computes it (gpufleet.sim's gateway applies this)."""
    return (limit * round(BOOT_P1_SHARE * 100) + 99) // 100


def limits_map(keys: dict[str, Tenant]) -> str:
    """API key -> requests allowed per rate window."""
    return "".join(f"{key} {limit_per_window(t.requests_per_s)}\n" for key, t in _keys(keys))


class GatewayPlan(Frozen):
    admission: AdmissionPlan
    primary: Backend
    fallback: Backend


def plan_gateway(
    slo_queue_wait_s: float,
    primary: Workload,
    primary_gpu: GPUModel,
    fallback: Workload,
    fallback_gpu: GPUModel,
) -> GatewayPlan:
    """The site's gateway: the on-prem model as primary, the burst nodes' distilled model as
    fallback. The fallback is sized as one replica: burst capacity comes and goes, and a queue
    sized for more than is there would wait past the SLO."""
    p = backend_for(
        PRIMARY,
        f"{primary.name}.{primary.namespace}.svc",
        TRITON_HTTP,
        primary.engine,
        primary.replicas,
        decode_rate(primary.model, primary_gpu, primary.tensor_parallel),
    )
    f = backend_for(
        FALLBACK,
        f"{fallback.name}.{fallback.namespace}.svc",
        TRITON_HTTP,
        fallback.engine,
        1,
        decode_rate(fallback.model, fallback_gpu, fallback.tensor_parallel),
    )
    return GatewayPlan(
        admission=plan_admission(slo_queue_wait_s, p, f),
        primary=p,
        fallback=f,
    )


def site_gateway(inv: Inventory, plan: SitePlan, fleet: BurstFleet) -> GatewayPlan | None:
    """The gateway a site with burst capacity runs in front of its on-prem model, as the on-prem
    stack renders it and the burst simulator routes by it; None: the site has none."""
    primary = onprem_workload(inv, plan)
    if inv.site.burst is None or plan.serving is None or plan.serving.shape is None or primary is None:
        return None
    return plan_gateway(
        plan.serving.slo_queue_wait_p99_s,
        primary,
        plan.serving.shape.gpu,
        burst_workload(inv, plan, fleet, 0),
        fleet.instances[0].gpu,
    )


def gateway_cfg(g: GatewayPlan) -> str:
    """The in-cluster gateway's haproxy.cfg: maps from the mounted Secret."""
    return haproxy_cfg(
        g.admission,
        g.primary,
        g.fallback,
        bind=f":{GATEWAY_PORT}",
        metrics_bind=f":{METRICS_PORT}",
        tenants_map=f"{GATEWAY_MAPS}/tenants.map",
        limits_map=f"{GATEWAY_MAPS}/limits.map",
        admission_map=f"{GATEWAY_DIR}/{ADMISSION_MAP}",
    )

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
  the distilled fallback model; with the fallback's queue per serving replica also past its
  bound (or no replica serving), they are shed with 429 and `Retry-After`. P0 always goes to the
  primary and is never shed while capacity exists: it waits in the queue up to `timeout queue`.
- The primary is one server, the on-prem model's Service (its replicas are fixed by the plan).
  The fallback is one server per ready distilled replica: HAProxy reads them from the DNS SRV
  records of each burst GPU class's headless Service, and the Degrader's (a `server-template`
  each, up to the most replicas of that class), each taking one replica of its class's sequences
  and weighted by them, so every Spot node the controller pays for takes its share as soon as
  its pod is ready.

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
from gpufleet.plan.degrade import degraded_workload, plan_degrade
from gpufleet.plan.k8s import (
    GPU_MODEL_LABEL,
    SERVING_NAMESPACE,
    TRITON_HTTP,
    Workload,
    burst_workloads,
    onprem_workload,
)
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
# HAProxy's runtime API in the cluster (operator level: it can rewrite every map, the tenants' API
# keys and classes too). In no Service a client reaches: a headless Service of its own names each
# gateway replica for the burst controller, and a NetworkPolicy admits only pods with
# CONTROLLER_LABELS (in the gateway's namespace) to this port.
RUNTIME_API_PORT = 9999
GATEWAY_ADMIN = "gateway-admin"
# The burst controller's pod labels, as its Deployment sets them.
CONTROLLER_LABELS = {"app.kubernetes.io/name": "gpufleet-burst-controller"}
# kubeadm's default DNS domain (the sites' kubeadm-init sets none). HAProxy's resolvers do not
# apply resolv.conf's search list, so every name it resolves at run time is fully qualified.
CLUSTER_DOMAIN = "cluster.local"
# The burst pods' headless Service: only ready pods are published, one SRV record each.
FALLBACK_PORT_NAME = "http"
# DNS answers of up to this many bytes over UDP (HAProxy announces it through EDNS0; CoreDNS
# truncates past it, and HAProxy takes no TCP retry). One SRV record and its pod's address take
# at most SRV_RECORD_BYTES (measured in tests), so a fleet of up to MAX_FALLBACK_SERVERS fits.
DNS_PAYLOAD_BYTES = 8192
SRV_RECORD_BYTES = 140
MAX_FALLBACK_SERVERS = (DNS_PAYLOAD_BYTES - 512) // SRV_RECORD_BYTES


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


# What a backend puts into haproxy.cfg: its name (`backend`, `server`), a served model's name (the
# fallback's `set-path` regsub replacement) and DNS names with ports. None can end a directive,
# add an argument or leave the regsub.
BackendName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]+$")]
HostPort = Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]+:[0-9]{1,5}$")]
SrvName = Annotated[str, StringConstraints(pattern=r"^_[a-z0-9-]+\._tcp\.[a-z0-9.-]+$")]


# HAProxy's server weights: 1..256 (0 would take a server out).
MAX_WEIGHT = 256


class ServerTemplate(Frozen):
    """One `server-template`: a server per SRV record of `srv_name` (`_http._tcp.<headless
    Service>`), up to `max_servers`; HAProxy adds and removes them as the records come and go.
    Each is one replica of one class: `slots` its engine's max_num_seqs (`maxconn`), `rate_rps`
    what it serves, `weight` its share under leastconn (proportional to slots)."""

    prefix: BackendName  # server names `<prefix>1..<prefix>N`
    srv_name: SrvName
    max_servers: int = Field(ge=1, le=MAX_FALLBACK_SERVERS)
    slots: int = Field(ge=1)
    rate_rps: float = Field(gt=0)
    weight: int = Field(default=1, ge=1, le=MAX_WEIGHT)
    gpu: GPUModel  # the class's GPU (the simulator gives its replicas these slots)
    degraded: bool = False  # the Degrader's replicas on on-prem GPUs


class Backend(Frozen):
    name: BackendName
    model: ModelName
    servers: list[HostPort] = Field(default_factory=list)  # one `server` line each
    slots: int = 1  # concurrent requests each of `servers` takes (its replicas' max_num_seqs)
    rate_rps: float = 0.001  # requests/s each of `servers` serves at its SLO
    templates: list[ServerTemplate] = Field(default_factory=list)

    @property
    def server_rate_rps(self) -> float:
        """The slowest server's rate, static or discovered: the conservative per-server figure."""
        rates = ([self.rate_rps] if self.servers else []) + [t.rate_rps for t in self.templates]
        return min(rates, default=self.rate_rps)


class AdmissionPlan(Frozen):
    slo_queue_wait_s: float
    degrade_queue: dict[Priority, int]  # primary queue length past which the class goes to fallback
    # Fallback queue per serving server at which degraded requests are shed.
    shed_queue: int
    retry_after_s: int
    p0_queue_timeout_s: int


def plan_admission(slo_queue_wait_s: float, primary: Backend, fallback: Backend) -> AdmissionPlan:
    """Queue thresholds from each backend's service rate and the queue-wait SLO. The primary is
    one server (its rate the whole Service's); the fallback's threshold is per server: the
    fallback is full at `shed_queue` requests queued per server that serves, however many do.
    With servers of several classes it is the slowest class's figure (`server_rate_rps`):
    HAProxy counts one queue for the backend and cannot tell which class serves it next, so the
    bound holds the SLO's share even where only the slowest class serves."""
    slo_queue = primary.rate_rps * slo_queue_wait_s
    degrade = {p: max(1, math.floor(slo_queue * f)) for p, f in DEGRADE_FRACTION.items() if f is not None}
    return AdmissionPlan(
        slo_queue_wait_s=slo_queue_wait_s,
        degrade_queue=degrade,
        shed_queue=max(1, math.floor(fallback.server_rate_rps * slo_queue_wait_s * SHED_FRACTION)),
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
    nameservers: list[str] | None = None,
) -> str:
    """The gateway's configuration. Maps (API key -> `tenant class`, API key -> limit) are
    separate files: the keys are secrets and never sit in this text. `admission_map` is the
    file of `admission_map_text()`; `runtime_api` binds HAProxy's runtime API at operator level
    (it can rewrite maps: only the burst controller may reach it). Names resolve through
    resolv.conf's nameservers (the cluster's DNS), or `nameservers` (address:port) where given."""

    def servers(b: Backend) -> list[str]:
        lines = [f"  server {b.name}-{i} {addr} maxconn {b.slots}" for i, addr in enumerate(b.servers)]
        # Servers <prefix>1..N per template, in maintenance until a record names them (init-addr
        # none). Health checks take a replica out within seconds of failing its readiness, before
        # its record goes (a Spot node lost without a drain).
        lines += [
            f"  server-template {t.prefix} {t.max_servers} {t.srv_name} maxconn {t.slots} "
            f"weight {t.weight} check inter 2s fall 2 rise 1"
            for t in b.templates
        ]
        return lines

    window = RATE_WINDOW_S
    lines = [
        "global",
        "  maxconn 4096",
        *([f"  stats socket {runtime_api} level operator"] if runtime_api else []),
        "",
        "resolvers cluster",
        *(
            ["  parse-resolv-conf"]
            if nameservers is None
            else [f"  nameserver ns{i} {addr}" for i, addr in enumerate(nameservers)]
        ),
        f"  accepted_payload_size {DNS_PAYLOAD_BYTES}",
        # CoreDNS answers Services with a 5 s TTL: ask again as often, also while a headless
        # Service has no ready pod (NXDOMAIN), so the first burst replica serves within 5 s.
        "  hold valid 5s",
        "  hold nx 5s",
        # A record gone (its pod no longer ready) takes its server out at once.
        "  hold obsolete 0s",
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
        # Full once its queue holds `shed_queue` per serving replica: queue - n x shed_queue >= 0
        # (avg_queue rounds up: with a bound of 1, one request queued before 16 replicas would shed).
        f"  http-request set-var(txn.fallback_room) nbsrv({FALLBACK}),mul({plan.shed_queue})",
        f"  acl fallback_full queue({FALLBACK}),sub(txn.fallback_room) ge 0",
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
        *(["  option httpchk GET /v2/health/ready"] if fallback.templates else []),
        # Same API, the distilled model's name in the path.
        f"  http-request set-path %[path,regsub(^/v2/models/[^/]+/,/v2/models/{fallback.model}/)]",
        "  http-response set-header X-Served-By fallback",
        *servers(fallback),
    ]
    return "\n".join(lines) + "\n"


# Mean generated tokens per request: turns the replica's decode rate into requests/s.
MEAN_OUTPUT_TOKENS = 512


def backend_for(
    name: str, engine: dict[str, Any], replicas: int, steps_per_s: float, servers: list[str]
) -> Backend:
    """`servers` each of `replicas` engine replicas (a Service): slots are a server's sequences
    in flight, its rate what their decode steps produce at `MEAN_OUTPUT_TOKENS` per request."""
    return Backend(
        name=name,
        model=str(engine["served_model_name"]),
        servers=servers,
        slots=max(1, replicas * int(engine["max_num_seqs"])),
        rate_rps=replicas * replica_rate(engine, steps_per_s),
    )


def replica_rate(engine: dict[str, Any], steps_per_s: float) -> float:
    """Requests/s one engine replica serves: its sequences' decode steps at MEAN_OUTPUT_TOKENS."""
    return max(0.001, int(engine["max_num_seqs"]) * steps_per_s / MEAN_OUTPUT_TOKENS)


def pods_service(w: Workload) -> str:
    """The headless Service of a workload's ready pods: the gateway's fallback discovers them."""
    return f"{w.name}-pods"


def srv_name(service: str, namespace: str, port_name: str = FALLBACK_PORT_NAME) -> str:
    """The SRV name Kubernetes DNS gives a headless Service's named TCP port."""
    return f"_{port_name}._tcp.{service}.{namespace}.svc.{CLUSTER_DOMAIN}"


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
    burst: list[Workload],
    degraded: Workload | None = None,
) -> GatewayPlan:
    """The site's gateway: the on-prem model's Service as primary, the distilled model's replicas
    as fallback, one server each. `burst` is the burst fleet's Workload per GPU class at the
    site's `burst.max_nodes` (each pinned by its `gpufleet.io/gpu-model` node selector): a
    `server-template` each, its servers the most replicas of that class the fleet can hold, its
    maxconn one replica's sequences, its weight proportional to them. `degraded` (the Degrader's
    replicas on `primary_gpu`, at the most it degrades) gets one more. Each fallback server is shed
    past `shed_queue`: capacity comes and goes, and a queue sized for more than serves would wait
    past the SLO."""
    classes = [(w, GPUModel(w.node_selector[GPU_MODEL_LABEL]), False) for w in burst]
    classes += [(degraded, primary_gpu, True)] if degraded is not None and degraded.replicas > 0 else []
    if not burst or any(w.replicas < 1 for w in burst):
        raise ValueError(
            "fallback: a burst class without replicas; pass the burst workloads at the site's burst.max_nodes"
        )
    for w, _, _ in classes:
        if w.replicas > MAX_FALLBACK_SERVERS:
            raise ValueError(
                f"fallback {w.name}: {w.replicas} replicas, more than the "
                f"{MAX_FALLBACK_SERVERS} whose DNS records fit one answer; lower site.burst.max_nodes"
            )
    models = {str(w.engine["served_model_name"]) for w, _, _ in classes}
    if len(models) != 1:
        raise ValueError(f"fallback: its classes serve {sorted(models)}; the gateway rewrites to one model")
    p = backend_for(
        PRIMARY,
        primary.engine,
        primary.replicas,
        decode_rate(primary.model, primary_gpu, primary.tensor_parallel),
        servers=[f"{primary.name}.{primary.namespace}.svc.{CLUSTER_DOMAIN}:{TRITON_HTTP}"],
    )
    most = max(int(w.engine["max_num_seqs"]) for w, _, _ in classes)
    f = Backend(
        name=FALLBACK,
        model=models.pop(),
        templates=[
            ServerTemplate(
                prefix=f"{w.name}-",
                srv_name=srv_name(pods_service(w), w.namespace),
                max_servers=w.replicas,
                slots=int(w.engine["max_num_seqs"]),
                rate_rps=replica_rate(w.engine, decode_rate(w.model, gpu, w.tensor_parallel)),
                weight=max(1, round(MAX_WEIGHT * int(w.engine["max_num_seqs"]) / most)),
                gpu=gpu,
                degraded=is_degraded,
            )
            for w, gpu, is_degraded in classes
        ],
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
    # A fallback server for every replica of each class at the largest burst fleet, and for every
    # distilled replica the Degrader may start on on-prem GPUs (their own headless Service).
    degrade = plan_degrade(inv, plan, fleet)
    distilled = degraded_workload(inv, plan, fleet)
    return plan_gateway(
        plan.serving.slo_queue_wait_p99_s,
        primary,
        plan.serving.shape.gpu,
        burst_workloads(inv, plan, fleet, inv.site.burst.max_nodes),
        distilled.model_copy(update={"replicas": degrade.max_degraded * degrade.per_onprem})
        if degrade is not None and distilled is not None
        else None,
    )


def gateway_admin_address(namespace: str = SERVING_NAMESPACE) -> str:
    """HOST:PORT of every gateway replica's runtime API for `gpufleet burst run --gateway-admin`:
    the headless Service resolves to each replica."""
    return f"{GATEWAY_ADMIN}.{namespace}.svc.{CLUSTER_DOMAIN}:{RUNTIME_API_PORT}"


def gateway_cfg(g: GatewayPlan) -> str:
    """The in-cluster gateway's haproxy.cfg: maps from the mounted Secret, the runtime API on
    `RUNTIME_API_PORT` (reachable by the burst controller only: a NetworkPolicy)."""
    return haproxy_cfg(
        g.admission,
        g.primary,
        g.fallback,
        bind=f":{GATEWAY_PORT}",
        metrics_bind=f":{METRICS_PORT}",
        tenants_map=f"{GATEWAY_MAPS}/tenants.map",
        limits_map=f"{GATEWAY_MAPS}/limits.map",
        admission_map=f"{GATEWAY_DIR}/{ADMISSION_MAP}",
        runtime_api=f"ipv4@:{RUNTIME_API_PORT}",
    )

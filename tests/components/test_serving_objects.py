"""The serving objects as rendered: launch commands for dc1 (2x8 H100) and dc1-dr (8 H200),
the LeaderWorkerSet against LWS's own CRD schema, the group-wide disruption budget, the model
cache, and Triton's flags against the real tritonserver binary's --help.

What these cannot see: Ray actually forming across pods, or the API server's defaulting; the
scripts are checked as data and by bash's own parser (`bash -n`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gpufleet.inventory.load import REPO_ROOT
from gpufleet.inventory.stacks import Stack
from gpufleet.plan.degrade import DEGRADED_COMPONENT
from gpufleet.plan.k8s import onprem_workload
from gpufleet.plan.launch import (
    RAY_PORT,
    leader_command,
    leader_ready_command,
    tritonserver_args,
    worker_command,
)
from gpufleet.plan.site import plan_site
from gpufleet.preview.program import Graph, reveal
from gpufleet.serving.tritonserver import _pytriton_root

SHARED = next(p for p in (REPO_ROOT.parent / "shared", Path("/work/shared")) if p.is_dir())
LWS_CRD = SHARED / "k8s" / "crds" / "leaderworkerset.x-k8s.io_leaderworkersets.yaml"


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's schema with unknown fields as errors (the API server would prune them silently)."""
    out = dict(schema)
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["properties"] = {k: _closed(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("items"), dict):
        out["items"] = _closed(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _closed(out["additionalProperties"])
    return out


def _lws_schema() -> dict[str, Any]:
    crd = yaml.safe_load(LWS_CRD.read_text())
    return _closed(next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"])


def _objects(graph: Graph, type_: str, app: str = "triton") -> list[dict[str, Any]]:
    """Objects of one type that belong to `app` (Triton's, or the gateway's: haproxy); not the
    distilled model's standby objects (lever 1: tests/components/test_degraded_serving.py)."""
    return [
        reveal(r.inputs)
        for r in graph.by_type(type_)
        if r.inputs["metadata"].get("labels", {}).get("app.kubernetes.io/name") == app
        and r.inputs["metadata"]["labels"].get("app.kubernetes.io/component") != DEGRADED_COMPONENT
    ]


def test_dc1_replica_is_one_lws_group_forming_one_ray_cluster(graphs: dict[str, Graph]) -> None:
    (lws,) = _objects(graphs["dc1-prod"], "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    jsonschema.validate(lws, _lws_schema())
    lwt = lws["spec"]["leaderWorkerTemplate"]
    assert lwt["size"] == 2 and lwt["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = lwt["leaderTemplate"]["spec"]["containers"][0]
    worker = lwt["workerTemplate"]["spec"]["containers"][0]
    head, join = leader["command"][-1], worker["command"][-1]
    # The scripts as rendered for dc1's pods (their behaviour: tests/unit/test_launch.py).
    assert leader["command"] == leader_command(8) and worker["command"] == worker_command(8)
    assert f"ray start --head --port={RAY_PORT} --num-gpus=8" in head
    assert head.splitlines()[-1] == "exec " + " ".join(tritonserver_args())
    assert head.index("ray start --head") < head.index("LWS_GROUP_SIZE") < head.index("exec tritonserver")
    assert "set -e" not in head and "set -e" not in join
    assert f'ray start --address="$LWS_LEADER_ADDRESS:{RAY_PORT}" --num-gpus=8' in join and "--block" in join
    assert "tritonserver" not in join and "ports" in worker and "readinessProbe" not in worker
    # Ready only with every rank in the cluster, and with the model loaded; no interpreter per probe.
    probe = leader["readinessProbe"]
    assert probe["exec"]["command"] == leader_ready_command() and probe["timeoutSeconds"] <= 10
    ready = probe["exec"]["command"][-1]
    assert "/v2/health/ready" in ready and '"$LWS_GROUP_SIZE"' in ready and "python" not in ready
    for script in (head, join, ready):
        subprocess.run(["bash", "-n", "-c", script], check=True, timeout=10)
    # The model repository (config.pbtxt + 1/model.json) only where Triton runs.
    assert any(m["mountPath"] == "/models/deepseek-r1" for m in leader["volumeMounts"])
    assert not any(m["mountPath"].startswith("/models") for m in worker["volumeMounts"])


def test_dc1_dr_replica_is_one_pod_running_triton(graphs: dict[str, Graph]) -> None:
    graph = graphs["dc1-dr"]
    assert not graph.by_type("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    (deployment,) = _objects(graph, "kubernetes:apps/v1:Deployment")
    triton = deployment["spec"]["template"]["spec"]["containers"][0]
    assert triton["command"] == tritonserver_args()
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize("name", ["dc1-prod", "dc1-dr"])
def test_the_disruption_budget_covers_whole_groups(name: str, graphs: dict[str, Graph]) -> None:
    (pdb,) = _objects(graphs[name], "kubernetes:policy/v1:PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert "leaderworkerset.sigs.k8s.io/worker-index" not in selector
    workloads = _objects(graphs[name], "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    workloads += _objects(graphs[name], "kubernetes:apps/v1:Deployment")
    (w,) = workloads
    templates = (
        [w["spec"]["template"]]
        if "template" in w["spec"]
        else [w["spec"]["leaderWorkerTemplate"][t] for t in ("leaderTemplate", "workerTemplate")]
    )
    for t in templates:
        assert selector.items() <= t["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", ["dc1-prod", "dc1-dr"])
def test_one_cache_download_per_site_and_read_only_replicas(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    inv = stacks[name].inventory
    w = onprem_workload(inv, plan_site(inv))
    assert w is not None
    graph = graphs[name]
    (claim,) = _objects(graph, "kubernetes:core/v1:PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "cephfs"
    (job,) = _objects(graph, "kubernetes:batch/v1:Job")
    fetch = job["spec"]["template"]["spec"]["containers"][0]
    assert fetch["command"][-2:] == [w.hf_repo, inv.bom.model_revision]
    assert job["metadata"]["name"].endswith(str(inv.bom.model_revision)[:12])
    pods = [
        r.inputs["spec"]
        for r in graph.resources
        if r.type.endswith(("LeaderWorkerSet", "apps/v1:Deployment"))
        and r.inputs["metadata"]["labels"]["app.kubernetes.io/name"] == "triton"
        and r.inputs["metadata"]["labels"].get("app.kubernetes.io/component") != DEGRADED_COMPONENT
    ]
    specs = []
    for spec in pods:
        lwt = spec.get("leaderWorkerTemplate")
        specs += (
            [lwt["leaderTemplate"]["spec"], lwt["workerTemplate"]["spec"]]
            if lwt
            else [spec["template"]["spec"]]
        )
    for spec in specs:
        weights = next(v for v in spec["volumes"] if v["name"] == "weights")
        assert weights["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
        for c in spec["initContainers"] + spec["containers"]:
            assert all(m["readOnly"] for m in c["volumeMounts"] if m["name"] == "weights")
            assert "huggingface" not in str(c["command"]), "a serving pod downloads weights"
        # The engine and its Ray workers resolve the local path only: a file missing from the
        # cache fails the pod instead of fetching from the Hub (vLLM passes HF_HUB_OFFLINE on as
        # local_files_only to its config and tokenizer loads).
        for c in spec["containers"]:
            assert {"name": "HF_HUB_OFFLINE", "value": "1"} in c["env"], c["name"]
        assert f"{inv.bom.model_revision}/.verified" in spec["initContainers"][0]["command"][-1]


def test_tritonserver_knows_every_flag_the_pods_pass() -> None:
    binary = _pytriton_root() / "bin" / "tritonserver"
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    for arg in tritonserver_args()[1:]:
        assert (
            f"{arg.split('=')[0]} " in text
            or f"{arg.split('=')[0]}=" in text
            or f"{arg.split('=')[0]} <" in text
        ), arg


def test_the_lws_schema_rejects_an_unknown_field(graphs: dict[str, Graph]) -> None:
    (lws,) = _objects(graphs["dc1-prod"], "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["restartPolicyy"] = "None"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(lws, _lws_schema())


@pytest.mark.parametrize("name", ["dc1-prod", "dc1-dr"])
def test_the_gateway_runs_the_planned_config_with_keys_from_a_secret(
    name: str, graphs: dict[str, Graph]
) -> None:
    from gpufleet.inventory.stacks import load_stack
    from gpufleet.plan.admission import ADMISSION_MAP, GATEWAY, GATEWAY_DIR, METRICS_PATH, TENANTS_SECRET
    from gpufleet.plan.aws import plan_fleet
    from gpufleet.plan.degrade import degraded_workload, plan_degrade
    from gpufleet.plan.k8s import burst_workloads
    from gpufleet.plan.site import plan_site

    graph = graphs[name]
    (config,) = _objects(graph, "kubernetes:core/v1:ConfigMap", "haproxy")
    (deployment,) = _objects(graph, "kubernetes:apps/v1:Deployment", "haproxy")
    (service,) = [
        s
        for s in _objects(graph, "kubernetes:core/v1:Service", "haproxy")
        if s["metadata"]["name"] == GATEWAY
    ]
    text = config["data"]["haproxy.cfg"]
    assert "server primary-0 deepseek-r1.serving.svc.cluster.local:8000" in text
    # One server per ready distilled replica, a template per class: room for each burst class at
    # the largest fleet (8 nodes x 2 on dc1), each replica's own sequences, and every replica the
    # Degrader may start on on-prem GPUs (the SRV records: test below).
    inv = load_stack(name).inventory
    site = plan_site(inv)
    fleet = plan_fleet(inv, f"stacks/Pulumi.{name}.yaml")
    degrade, distilled = plan_degrade(inv, site, fleet), degraded_workload(inv, site, fleet)
    assert inv.site.burst is not None and degrade is not None and distilled is not None
    classes = burst_workloads(inv, site, fleet, inv.site.burst.max_nodes)
    templates = [line.split() for line in text.splitlines() if line.startswith("  server-template ")]
    expected = [(w, w.replicas) for w in classes] + [(distilled, degrade.max_degraded * degrade.per_onprem)]
    assert len(templates) == len(expected) == len(classes) + 1
    for words, (w, servers) in zip(templates, expected, strict=True):
        assert words[1:4] == [
            f"{w.name}-",
            str(servers),
            f"_http._tcp.{w.name}-pods.serving.svc.cluster.local",
        ]
        assert words[4:6] == ["maxconn", str(w.engine["max_num_seqs"])] and words[6] == "weight"
    assert classes[0].replicas == 2 * inv.site.burst.max_nodes and expected[-1][1] > 0
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == load_stack(name).inventory.bom.gateway_image
    # Prometheus scrapes the gateway (the shed and degraded rates the burst controller reads) on
    # the exporter's own port, which the API frontend does not serve.
    (monitor,) = [reveal(r.inputs) for r in graph.by_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")]
    (expr,) = monitor["spec"]["selector"]["matchExpressions"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert expr["operator"] == "In" and labels[expr["key"]] in expr["values"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (port,) = [p for p in pod["containers"][0]["ports"] if p["name"] == endpoint["port"]]
    assert f"bind :{port['containerPort']}" in text and endpoint["path"] == METRICS_PATH
    api = text.split("frontend api", 1)[1].split("\nbackend", 1)[0]
    assert "prometheus-exporter" not in api
    assert {"name": "tenants", "secret": {"secretName": TENANTS_SECRET, "defaultMode": 0o400}} in pod[
        "volumes"
    ]
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]  # clients: the API port alone
    # The admission map the config reads sits beside it and starts normal; the runtime API that
    # switches it while burst capacity boots: the next test.
    assert f"map({GATEWAY_DIR}/{ADMISSION_MAP},0)" in text
    assert config["data"][ADMISSION_MAP] == "booting 0\n"


def _admits(policy: dict[str, Any], port: int, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy's ingress rules may let a pod with `labels` in the policy's
    namespace reach `port` (a rule without `from` admits every source; without `ports`, every
    port). Where it cannot tell, it says yes, so that a policy opened that way fails: a source
    other than a bare pod selector (a namespace selector, an IP block) may take in such a pod from
    elsewhere, and a port named rather than numbered may be this one."""

    def covers(p: dict[str, Any]) -> bool:
        first = p.get("port", port)
        return isinstance(first, str) or first <= port <= p.get("endPort", first)

    for rule in policy["spec"].get("ingress", []):
        if rule.get("ports") and not any(covers(p) for p in rule["ports"]):
            continue
        sources = rule.get("from")
        if sources is None or any(
            set(s) != {"podSelector"} or _selects(s["podSelector"], labels) for s in sources
        ):
            return True
    return False


@pytest.mark.parametrize("name", ["dc1-prod", "dc1-dr"])
def test_only_the_burst_controller_reaches_the_gateways_runtime_api(
    name: str, graphs: dict[str, Graph]
) -> None:
    """The runtime API (operator level: it rewrites maps, the tenants' keys too) listens on its
    own port, which the clients' Service does not carry; a headless Service names each replica
    for the controller, and the NetworkPolicy over the gateway pods admits the controller's
    labels there and no one else, while clients and Prometheus still reach theirs. The objects
    pass the official schema in test_stack_graphs; here what they mean."""
    from gpufleet.plan.admission import (
        CONTROLLER_LABELS,
        GATEWAY,
        GATEWAY_ADMIN,
        GATEWAY_PORT,
        METRICS_PORT,
        RUNTIME_API_PORT,
    )

    graph = graphs[name]
    (config,) = _objects(graph, "kubernetes:core/v1:ConfigMap", "haproxy")
    (deployment,) = _objects(graph, "kubernetes:apps/v1:Deployment", "haproxy")
    services = {s["metadata"]["name"]: s for s in _objects(graph, "kubernetes:core/v1:Service", "haproxy")}
    (policy,) = _objects(graph, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "haproxy")
    text = config["data"]["haproxy.cfg"]
    assert f"  stats socket ipv4@:{RUNTIME_API_PORT} level operator" in text.splitlines()
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert {"name": "runtime", "containerPort": RUNTIME_API_PORT} in container["ports"]
    assert sorted(services) == [GATEWAY, GATEWAY_ADMIN]
    assert all(p["port"] != RUNTIME_API_PORT for p in services[GATEWAY]["spec"]["ports"])
    admin = services[GATEWAY_ADMIN]["spec"]
    assert admin["clusterIP"] == "None" and [p["port"] for p in admin["ports"]] == [RUNTIME_API_PORT]
    assert _selects({"matchLabels": admin["selector"]}, template["metadata"]["labels"])
    # The policy covers the gateway pods, ingress only, in their namespace.
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert _selects(policy["spec"]["podSelector"], template["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    anyone = {"app.kubernetes.io/name": "some-client"}
    assert _admits(policy, RUNTIME_API_PORT, CONTROLLER_LABELS)
    for intruder in (anyone, template["metadata"]["labels"], {"app.kubernetes.io/name": "triton"}):
        assert not _admits(policy, RUNTIME_API_PORT, intruder)
    assert _admits(policy, GATEWAY_PORT, anyone) and _admits(policy, METRICS_PORT, anyone)
    assert not _admits(policy, 22, anyone)


def test_the_burst_replicas_records_are_the_gateways_fallback(graphs: dict[str, Graph]) -> None:
    """Each burst class's headless Service publishes each ready pod of that class alone (not the
    not-ready: a record is a replica that serves) under the SRV name of one of dc1-prod's gateway
    templates, as does the Degrader's Deployment's; each pod under one disruption budget at most."""
    from gpufleet.plan.admission import CLUSTER_DOMAIN

    (config,) = _objects(graphs["dc1-prod"], "kubernetes:core/v1:ConfigMap", "haproxy")
    text = config["data"]["haproxy.cfg"]
    found = 0
    for graph in (graphs["burst-prod"], graphs["dc1-prod"]):
        # The degraded Deployment's objects too (what _objects leaves out).
        deployments = [
            d
            for d in (reveal(r.inputs) for r in graph.by_type("kubernetes:apps/v1:Deployment"))
            if d["metadata"]["labels"].get("gpufleet.io/capacity") == "spot"
        ]
        headless = [
            s
            for s in (reveal(r.inputs) for r in graph.by_type("kubernetes:core/v1:Service"))
            if s["spec"].get("clusterIP") == "None" and s["metadata"]["name"].endswith("-pods")
        ]
        assert len(headless) == len(deployments) > 0
        budgets = [
            reveal(p.inputs)["spec"]["selector"]
            for p in graph.by_type("kubernetes:policy/v1:PodDisruptionBudget")
        ]
        for deployment in deployments:
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            (pods,) = [s for s in headless if _selects({"matchLabels": s["spec"]["selector"]}, labels)]
            assert pods["metadata"]["name"] == f"{deployment['metadata']['name']}-pods"
            spec = pods["spec"]
            assert spec["publishNotReadyAddresses"] is False
            (port,) = spec["ports"]
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            named = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert port["protocol"] == "TCP" and named[port["targetPort"]] == port["port"] == 8000
            srv = f"_{port['name']}._tcp.{pods['metadata']['name']}.{pods['metadata']['namespace']}.svc.{CLUSTER_DOMAIN}"
            # The count of servers: test_the_gateway_runs_the_planned_config_with_keys_from_a_secret.
            assert re.search(
                rf"^  server-template \S+ \d+ {re.escape(srv)} maxconn \d+ weight \d+ ", text, re.M
            )
            # A pod under two budgets cannot be evicted at all (the eviction API refuses it).
            assert sum(_selects(b, labels) for b in budgets) <= 1
            found += 1
    assert found == len(re.findall(r"^  server-template ", text, re.M))


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions, all four operators)."""
    ops = {
        "In": lambda k, v: k in labels and labels[k] in v,
        "NotIn": lambda k, v: k not in labels or labels[k] not in v,
        "Exists": lambda k, v: k in labels,
        "DoesNotExist": lambda k, v: k not in labels,
    }
    return selector.get("matchLabels", {}).items() <= labels.items() and all(
        ops[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", [])
    )


@pytest.mark.parametrize("name", ["dc1-prod", "dc1-dr"])
def test_prometheus_scrapes_the_gateway_exporter_on_its_own_port(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    """The PodMonitor is what the Prometheus operator's CRD accepts; it selects exactly the Triton
    and gateway pods of its namespace; each of them names the endpoint's port; the gateway's is
    the exporter's own bind, which the API frontend never serves; the Service's and probes' port
    names are the container's."""
    from gpufleet.plan.admission import GATEWAY, GATEWAY_PORT, METRICS_PATH
    from tests.crds import validate_custom

    graph = graphs[name]
    (monitor,) = [reveal(r.inputs) for r in graph.by_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")]
    validate_custom(monitor, stacks[name].inventory.bom.kubernetes)
    for bad in ({"port": 8404}, {"port": "metrics", "portname": "metrics"}):
        wrong = {**monitor, "spec": {**monitor["spec"], "podMetricsEndpoints": [bad]}}
        with pytest.raises(jsonschema.ValidationError):
            validate_custom(wrong, stacks[name].inventory.bom.kubernetes)
    templates = []
    for r in graph.resources:
        obj = reveal(r.inputs) if r.type.startswith("kubernetes:") else {}
        spec = obj.get("spec", {}) if isinstance(obj.get("spec"), dict) else {}
        if obj.get("metadata", {}).get("namespace") != monitor["metadata"]["namespace"]:
            continue
        if "template" in spec:
            templates.append(spec["template"])
        elif "leaderWorkerTemplate" in spec:
            templates += [spec["leaderWorkerTemplate"][t] for t in ("leaderTemplate", "workerTemplate")]
    selected = [t for t in templates if _selects(monitor["spec"]["selector"], t["metadata"]["labels"])]
    apps = sorted({t["metadata"]["labels"]["app.kubernetes.io/name"] for t in selected})
    assert apps == ["haproxy", "triton"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == METRICS_PATH
    for t in selected:
        ports = {p["name"]: p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
        # What serves (an `http` port) exports on the endpoint's port; an LWS worker (Ray only)
        # and the model-cache Job have no such port, so Prometheus makes no target of them.
        assert (endpoint["port"] in ports) == ("http" in ports), t["metadata"]["labels"]
    (config,) = _objects(graph, "kubernetes:core/v1:ConfigMap", "haproxy")
    (deployment,) = _objects(graph, "kubernetes:apps/v1:Deployment", "haproxy")
    (service,) = [
        s
        for s in _objects(graph, "kubernetes:core/v1:Service", "haproxy")
        if s["metadata"]["name"] == GATEWAY
    ]
    text = config["data"]["haproxy.cfg"]
    frontends = {block.split("\n", 1)[0].strip(): block for block in text.split("\nfrontend ")[1:]}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"bind :{ports[endpoint['port']]}" in frontends["metrics"]
    assert "prometheus-exporter" in frontends["metrics"] and "prometheus-exporter" not in frontends["api"]
    assert f"bind :{ports['http']}" in frontends["api"] and ports["http"] == GATEWAY_PORT
    assert ports[endpoint["port"]] != ports["http"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [
        "http"
    ]  # the exporter stays in the cluster's pods
    assert container["readinessProbe"]["httpGet"]["port"] in ports


OLD = "0123456789abcdef0123456789abcdef01234567"


def test_a_canary_is_one_replica_of_the_new_revision_beside_the_stable_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from gpufleet.inventory.load import inventories_dir
    from gpufleet.preview.program import evaluate_stack

    shutil.copytree(inventories_dir(), tmp_path / "inventories")
    nodes = tmp_path / "inventories" / "dc1" / "nodes.yaml"
    doc = yaml.safe_load(nodes.read_text())
    doc["site"]["serving"]["canary_from"] = OLD
    nodes.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("GPUFLEET_INVENTORIES", str(tmp_path / "inventories"))
    graph = evaluate_stack("dc1-prod")
    new = doc["bom"]["model_revision"]
    sets = {
        o["metadata"]["name"]: o
        for o in _objects(graph, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    }
    assert sorted(sets) == ["deepseek-r1", "deepseek-r1-canary"]
    # The stable set's count is the HPA's (Pulumi leaves `replicas` out); the canary's is one.
    assert "replicas" not in sets["deepseek-r1"]["spec"]
    assert sets["deepseek-r1-canary"]["spec"]["replicas"] == 1
    repos = {
        o["metadata"]["name"]: o["data"]["1_model.json"]
        for o in _objects(graph, "kubernetes:core/v1:ConfigMap")
        if "1_model.json" in o["data"]
    }
    assert (
        f"/{OLD}" in repos["deepseek-r1-model-repository"]
        and f"/{new}" not in repos["deepseek-r1-model-repository"]
    )
    assert f"/{new}" in repos["deepseek-r1-canary-model-repository"]
    # Both revisions are in the one cache volume, each fetched once; one Service serves both.
    assert len(_objects(graph, "kubernetes:core/v1:PersistentVolumeClaim")) == 1
    jobs = sorted(o["metadata"]["name"] for o in _objects(graph, "kubernetes:batch/v1:Job"))
    assert jobs == [f"deepseek-r1-canary-fetch-{new[:12]}", f"deepseek-r1-fetch-{OLD[:12]}"]
    (service,) = _objects(graph, "kubernetes:core/v1:Service")
    for lws in sets.values():
        labels = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"]
        assert {
            k: v for k, v in service["spec"]["selector"].items() if "worker-index" not in k
        }.items() <= labels.items()
    (hpa,) = _objects(graph, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "deepseek-r1"
    # One disruption budget over the stable groups and the canary's: with one each, a drain could
    # take a stable replica and the canary at once (and the eviction API refuses a pod two select).
    (pdb,) = _objects(graph, "kubernetes:policy/v1:PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    for lws in sets.values():
        for t in ("leaderTemplate", "workerTemplate"):
            labels = lws["spec"]["leaderWorkerTemplate"][t]["metadata"]["labels"]
            assert _selects(pdb["spec"]["selector"], labels)
    for job in _objects(graph, "kubernetes:batch/v1:Job"):
        assert not _selects(pdb["spec"]["selector"], job["spec"]["template"]["metadata"]["labels"])

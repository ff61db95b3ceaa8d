"""The Kubernetes platform as the cluster would take it: pod network first, operators after the
releases they need, custom resources against their CRDs, Helm values against each chart version."""

from __future__ import annotations

import copy
import json
from ipaddress import ip_network
from typing import Any

import jsonschema
import pytest

from gpufleet.inventory.stacks import Stack, stack_names
from gpufleet.plan.k8s import (
    CNI_CHART,
    RDMA_RESOURCE,
    VPN_MTU,
    VXLAN_OVERHEAD,
    onprem_workload,
    platform_charts,
)
from gpufleet.plan.node import plan_node
from gpufleet.plan.site import plan_site
from gpufleet.preview.program import Graph, Registration, reveal
from tests.components.chart_values import CHARTS, unknown_keys
from tests.crds import CRDS, validate_custom

STACKS = stack_names()
ONPREM = [s for s in STACKS if s != "burst-prod"]
RELEASE = "kubernetes:helm.sh/v3:Release"


def releases(graph: Graph) -> dict[str, Registration]:
    return {r.inputs["name"]: r for r in graph.by_type(RELEASE)}


def of_kind(graph: Graph, kind: str) -> list[Registration]:
    return [r for r in graph.resources if r.type.endswith(f":{kind}")]


def test_the_upstream_crds_are_there() -> None:
    """Read from ../shared in place; CI has them beside the clone. No skip if they are missing."""
    assert len(list(CRDS.glob("*.yaml"))) >= 13, CRDS


@pytest.mark.parametrize("name", ONPREM)
def test_every_release_sets_only_keys_its_chart_version_declares(name: str, graphs: dict[str, Graph]) -> None:
    found = releases(graphs[name])
    assert found
    for chart, r in found.items():
        version = r.inputs["version"]
        assert (chart, version) in CHARTS, f"{chart} {version}: re-read its values at the new tag"
        assert unknown_keys(chart, version, reveal(r.inputs["values"])) == [], (chart, version)


@pytest.mark.parametrize(
    ("chart", "version", "values", "flagged"),
    [
        ("network-operator", "25.4.0", {"deployCR": True}, "deployCR (removed in 24.10"),
        (
            "network-operator",
            "25.4.0",
            {"rdmaSharedDevicePlugin": {"deploy": True}},
            "rdmaSharedDevicePlugin.deploy",
        ),
        (
            "gpu-operator",
            "v25.3.4",
            {"operator": {"defaultRuntime": "containerd"}},
            "operator.defaultRuntime",
        ),
        ("dcgm-exporter", "4.1.3", {"runtimeClass": "nvidia"}, "runtimeClass"),
    ],
)
def test_a_key_the_chart_version_does_not_have_fails(
    chart: str, version: str, values: dict[str, Any], flagged: str
) -> None:
    (bad,) = unknown_keys(chart, version, values)
    assert bad.startswith(flagged)


@pytest.mark.parametrize("name", ONPREM)
def test_the_pod_network_comes_first_and_everything_waits_for_it(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    inv = stacks[name].inventory
    assert platform_charts(inv, plan_site(inv))[0].name == CNI_CHART
    found = releases(graphs[name])
    cni = found[CNI_CHART]
    assert not [d for d in cni.dependencies if d in {r.urn for r in found.values()}]
    for chart, r in found.items():
        if chart != CNI_CHART:
            assert cni.urn in r.dependencies, chart
    values = cni.inputs["values"]["installation"]
    pools = values["calicoNetwork"]["ipPools"]
    pod_cidr = inv.site.kubernetes.pod_cidr
    assert all(ip_network(p["cidr"]).subnet_of(pod_cidr) for p in pools)
    assert values["calicoNetwork"]["bgp"] == "Enabled"
    mtu = inv.site.networks.management.mtu
    if inv.site.burst is None:
        assert [p["nodeSelector"] for p in pools] == ["all()"] and pools[0]["cidr"] == str(pod_cidr)
        assert values["calicoNetwork"]["mtu"] == mtu - VXLAN_OVERHEAD
    else:
        # Burst nodes: their own pool, VXLAN node to node across the VPN, packets that fit the tunnel.
        onprem, burst = pools
        assert burst["encapsulation"] == "VXLAN" and burst["nodeSelector"] == "gpufleet.io/capacity == 'spot'"
        assert onprem["nodeSelector"] == "gpufleet.io/capacity != 'spot'"
        assert not ip_network(onprem["cidr"]).overlaps(ip_network(burst["cidr"]))
        assert values["calicoNetwork"]["mtu"] == min(mtu, VPN_MTU) - VXLAN_OVERHEAD


@pytest.mark.parametrize("name", ONPREM)
def test_releases_and_custom_resources_wait_for_what_they_need(name: str, graphs: dict[str, Graph]) -> None:
    graph = graphs[name]
    found = releases(graph)
    urn = {chart: r.urn for chart, r in found.items()}
    needs = {"prometheus-adapter": ["kube-prometheus-stack"]}
    if "gpu-operator" in found:
        # dcgm-exporter: its ServiceMonitor's CRD, and the nvidia RuntimeClass the GPU operator creates.
        needs |= {
            "gpu-operator": ["node-feature-discovery"],
            "dcgm-exporter": ["kube-prometheus-stack", "gpu-operator"],
        }
        assert found["dcgm-exporter"].inputs["values"]["serviceMonitor"]["enabled"] is True
    if "network-operator" in found:
        needs["network-operator"] = ["node-feature-discovery"]  # its NodeFeatureRules
    for chart, wanted in needs.items():
        for w in wanted:
            assert urn[w] in found[chart].dependencies, (chart, w)
    (monitor,) = of_kind(graph, "PodMonitor")
    (rules,) = of_kind(graph, "PrometheusRule")
    for r in (monitor, rules):
        assert urn["kube-prometheus-stack"] in r.dependencies
    policies = of_kind(graph, "NicClusterPolicy")
    assert len(policies) == int("network-operator" in found)
    for p in policies:
        assert urn["network-operator"] in p.dependencies


@pytest.mark.parametrize("name", ONPREM)
def test_the_nic_cluster_policy_serves_the_resource_serving_pods_request(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    inv = stacks[name].inventory
    nics = [nic for n in inv.nodes if n.gpu for nic in n.nics.rdma]
    policies = of_kind(graphs[name], "NicClusterPolicy")
    if not nics:
        assert not policies
        return
    (policy,) = policies
    spec = policy.inputs["spec"]
    assert set(spec) == {"rdmaSharedDevicePlugin"}  # no ofedDriver: rdma-core and drivers are pyinfra's
    (entry,) = json.loads(spec["rdmaSharedDevicePlugin"]["config"])["configList"]
    assert entry["resourceName"] == RDMA_RESOURCE
    layers = {nic.link_layer.value for nic in nics}
    if layers == {"infiniband"}:  # dc1: NDR InfiniBand
        assert entry["selectors"]["linkTypes"] == ["infiniband"] and "ifNames" not in entry["selectors"]
    else:  # dc1-dr: RoCE, only the planned netdevs
        assert layers == {"roce"} and entry["selectors"]["linkTypes"] == ["ether"]
        assert entry["selectors"]["ifNames"] == sorted({nic.netdev for nic in nics if nic.netdev})
    requested = {
        key
        for r in graphs[name].resources
        for key in json.dumps(r.inputs.get("spec", {}), default=repr).split('"')
        if key.startswith("rdma/")
    }
    assert requested <= {f"rdma/{RDMA_RESOURCE}"}


@pytest.mark.parametrize("name", STACKS)
def test_triton_pods_are_scraped(name: str, graphs: dict[str, Graph]) -> None:
    """The HPA's metric, the queue-wait alert and the burst signal all need Triton scraped."""
    onprem = "dc1-prod" if name == "burst-prod" else name
    (monitor,) = of_kind(graphs[onprem], "PodMonitor")
    spec = monitor.inputs["spec"]
    workloads = [
        r
        for r in graphs[name].resources
        if r.type
        in ("kubernetes:apps/v1:Deployment", "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
        and r.inputs["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "triton"
    ]
    if onprem == "lab":
        assert not workloads  # the lab serves nothing: the monitor waits for pods
        return
    assert workloads
    for r in workloads:
        spec_ = r.inputs["spec"]
        pod = spec_["template"] if "template" in spec_ else spec_["leaderWorkerTemplate"]["leaderTemplate"]
        assert monitor.inputs["metadata"]["namespace"] == r.inputs["metadata"]["namespace"]
        (expr,) = spec["selector"]["matchExpressions"]
        assert expr["operator"] == "In" and pod["metadata"]["labels"][expr["key"]] in expr["values"]
        ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
        assert [e["port"] for e in spec["podMetricsEndpoints"]] == ["metrics"] and "metrics" in ports


def test_the_interruption_queue_has_one_consumer(graphs: dict[str, Graph]) -> None:
    """The burst controller reads the interruption queue; no termination handler competes for its
    messages (a message it took would never reach the controller's replacement path)."""
    assert "aws-node-termination-handler" not in releases(graphs["burst-prod"])
    for name in ONPREM:
        for chart, r in releases(graphs[name]).items():
            assert r.inputs["atomic"] is True and not r.inputs.get("skipAwait"), (name, chart)


def one_object(graph: Graph, kind: str) -> dict[str, Any]:
    (r,) = of_kind(graph, kind)
    return copy.deepcopy(reveal(r.inputs))


@pytest.mark.parametrize(
    ("kind", "stack", "break_it"),
    [
        ("NicClusterPolicy", "dc1-prod", lambda o: o["spec"].update(deployCR=True)),
        ("NicClusterPolicy", "dc1-prod", lambda o: o["spec"]["rdmaSharedDevicePlugin"].pop("image")),
        ("NicClusterPolicy", "dc1-prod", lambda o: o["spec"]["rdmaSharedDevicePlugin"].update(version=5)),
        ("PodMonitor", "dc1-prod", lambda o: o["spec"]["podMetricsEndpoints"][0].update(portt="metrics")),
        ("PodMonitor", "dc1-prod", lambda o: o["spec"]["podMetricsEndpoints"][0].update(scheme="gopher")),
        ("PrometheusRule", "dc1-prod", lambda o: o["spec"]["groups"][0]["rules"][0].pop("expr")),
        (
            "LeaderWorkerSet",
            "dc1-prod",
            lambda o: o["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0].update(
                imagePullPolicyy="Always"
            ),
        ),
    ],
    ids=["unknown-field", "missing-required", "wrong-type", "typo", "enum", "required-expr", "pod-template"],
)
def test_the_crd_check_refuses_what_the_api_server_would(
    kind: str, stack: str, break_it: Any, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    version = stacks[stack].inventory.bom.kubernetes
    obj = one_object(graphs[stack], kind)
    validate_custom(obj, version)  # as rendered: accepted
    break_it(obj)
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(obj, version)


def test_burst_nodes_reach_the_pod_network_and_resolve_the_control_plane(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack = stacks["burst-prod"]
    site = stack.inventory.site
    graph = graphs["burst-prod"]
    groups = {r.name: r.inputs for r in graph.by_type("aws:ec2/securityGroup:SecurityGroup")}
    ingress = groups["burst-nodes"]["ingress"]
    nodes = str(site.networks.management.cidr)
    opened = {(i["protocol"], i["fromPort"]) for i in ingress if i.get("cidrBlocks") == [nodes]}
    assert {("udp", 4789), ("tcp", 179), ("tcp", 5473)} <= opened  # VXLAN, BGP, Typha
    # Pod CIDRs both ways: on-prem pods through the VPN's static routes; burst pods ride VXLAN
    # between node addresses the VPN already carries (the VPC range, the management network).
    routes = {
        r.inputs["destinationCidrBlock"]
        for r in graph.by_type("aws:ec2/vpnConnectionRoute:VpnConnectionRoute")
    }
    assert {str(site.kubernetes.pod_cidr), nodes} <= routes
    cni = releases(graphs["dc1-prod"])[CNI_CHART].inputs["values"]["installation"]["calicoNetwork"]["ipPools"]
    assert [
        p["encapsulation"] for p in cni if "spot" in p["nodeSelector"] and "!=" not in p["nodeSelector"]
    ] == ["VXLAN"]
    # The control-plane name, resolved from the VPC by the site's DNS.
    host = site.kubernetes.control_plane_endpoint.rsplit(":", 1)[0]
    (rule,) = graph.by_type("aws:route53/resolverRule:ResolverRule")
    assert rule.inputs["domainName"] == host and rule.inputs["ruleType"] == "FORWARD"
    assert [t["ip"] for t in rule.inputs["targetIps"]] == [str(ip) for ip in site.networks.dns]
    (endpoint,) = graph.by_type("aws:route53/resolverEndpoint:ResolverEndpoint")
    assert endpoint.inputs["direction"] == "OUTBOUND" and len(endpoint.inputs["ipAddresses"]) == 2
    egress = groups["burst-resolver"]["egress"]
    assert {e["protocol"] for e in egress} == {"udp", "tcp"} and all(e["fromPort"] == 53 for e in egress)
    assert sorted({c for e in egress for c in e["cidrBlocks"]}) == sorted(
        f"{ip}/32" for ip in site.networks.dns
    )
    assert groups["burst-resolver"]["ingress"] == []
    (association,) = graph.by_type("aws:route53/resolverRuleAssociation:ResolverRuleAssociation")
    assert association.inputs["resolverRuleId"] and association.inputs["vpcId"]


def test_a_burst_site_without_dns_servers_is_bad_input(stacks: dict[str, Stack]) -> None:
    from gpufleet.model.errors import InputError
    from gpufleet.plan.aws import plan_burst

    stack = stacks["burst-prod"]
    inv = stack.inventory.model_copy(
        update={
            "site": stack.inventory.site.model_copy(
                update={"networks": stack.inventory.site.networks.model_copy(update={"dns": []})}
            )
        }
    )
    with pytest.raises(InputError) as failure:
        plan_burst(inv, stack.config, "stacks/Pulumi.burst-prod.yaml")
    assert [p.path for p in failure.value.problems] == [("site", "networks", "dns")]


@pytest.mark.parametrize("name", STACKS)
def test_serving_workloads_are_awaited_as_long_as_they_take(name: str, graphs: dict[str, Graph]) -> None:
    """Pulumi's default 10-minute await would fail the first up: weights take longer to load, and
    burst pods wait for Spot nodes to boot."""
    workloads = [
        r
        for r in graphs[name].resources
        if r.type
        in ("kubernetes:apps/v1:Deployment", "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
        and r.inputs["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "triton"
    ]
    if name == "lab":
        assert not workloads
        return
    assert workloads
    for r in workloads:
        annotations = r.inputs["metadata"].get("annotations", {})
        if name == "burst-prod":
            assert annotations == {"pulumi.com/skipAwait": "true"}
        else:
            assert int(annotations["pulumi.com/timeoutSeconds"]) >= 1800  # the startup probe's budget


def _waits_for(graph: Graph, r: Registration) -> set[str]:
    """Every URN `r` waits for: its dependencies and its parents' (a child registers once its
    parent has, and a component registers once what it depends on exists), what they wait for,
    and a component's children."""
    urns = {x.urn for x in graph.resources}
    children: dict[str, list[str]] = {}
    for x in graph.resources:
        children.setdefault(x.parent, []).append(x.urn)
    seen: set[str] = set()
    todo = list(r.dependencies)
    parent = r.parent
    while parent in urns:
        todo += graph.get(parent).dependencies
        parent = graph.get(parent).parent
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        todo += graph.get(urn).dependencies + children.get(urn, [])
    return seen


@pytest.mark.parametrize("name", STACKS)
def test_every_namespaced_object_waits_for_its_namespace(name: str, graphs: dict[str, Graph]) -> None:
    """The API server refuses an object whose namespace does not exist yet: each one the stacks
    declare (in a namespace they create) waits for that Namespace, however long its release takes."""
    graph = graphs[name]
    namespaces = {
        reveal(r.inputs)["metadata"]["name"]: r.urn for r in graph.by_type("kubernetes:core/v1:Namespace")
    }
    checked = 0
    for r in graph.resources:
        if not r.type.startswith("kubernetes:") or not r.custom or r.type.endswith(":Namespace"):
            continue
        ns = reveal(r.inputs).get("namespace") or (reveal(r.inputs).get("metadata") or {}).get("namespace")
        if ns in namespaces:
            assert namespaces[ns] in _waits_for(graph, r), (r.name, ns)
            checked += 1
    if name != "burst-prod":
        assert checked > 0


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Kubernetes' rule: an empty key with Exists matches every taint; else key, then value
    (unless Exists), then effect (unless empty)."""
    for t in tolerations:
        exists = t.get("operator") == "Exists"
        if t.get("key") not in (None, "", taint["key"]) or (not t.get("key") and not exists):
            continue
        if not exists and t.get("value", "") != taint.get("value", ""):
            continue
        if t.get("effect") in (None, "", taint["effect"]):
            return True
    return False


@pytest.mark.parametrize("name", ONPREM)
def test_the_rbd_node_plugin_runs_where_serving_mounts_rbd(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    """A pod's RBD volume is mounted by the ceph-csi node plugin on the pod's node: it must tolerate
    every taint of the nodes serving runs on (GPU nodes), or the weights volume never mounts."""
    found = releases(graphs[name])
    inv = stacks[name].inventory
    plan = plan_site(inv)
    workload = onprem_workload(inv, plan)
    if workload is None or workload.cache_storage_class is None:
        assert "ceph-csi-rbd" in found or plan.ceph is None
        return
    tolerations = found["ceph-csi-rbd"].inputs["values"]["nodeplugin"]["tolerations"]
    gpu_nodes = [n for n in inv.nodes if n.gpu]
    assert gpu_nodes
    for node in gpu_nodes:
        for taint in plan_node(inv, node).registration_taints:
            assert _tolerates(tolerations, taint.model_dump(mode="json")), (node.hostname, taint)
    assert not _tolerates([], {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    assert not _tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "x"}],
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
    )

"""Each stack's real program under mocks: the whole recorded graph against what the plan says.

Every expected number comes from gpufleet.plan for that stack, never from a literal. Every test
also checks how many resources it looked at, so a graph that silently lost resources (built
before the mocks, or inside an `apply` that never ran) cannot pass.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest

from deploys.node import containerd_config
from gpufleet.inventory.stacks import Stack, stack_names
from gpufleet.model.catalog import AWS_GPU_INSTANCES
from gpufleet.plan.aws import ADMIN_PORTS, MIN_SPOT_TYPES, plan_burst, plan_fleet
from gpufleet.plan.degrade import degraded_workload
from gpufleet.plan.k8s import (
    QUEUE_METRIC,
    burst_workloads,
    onprem_workload,
    platform_charts,
    rbd_pool,
)
from gpufleet.plan.membership import membership
from gpufleet.plan.node import NVIDIA_RUNTIME, plan_node
from gpufleet.plan.site import plan_site
from gpufleet.preview.program import UNKNOWN, Graph, Registration, Secret, reveal
from tests.crds import known_kinds, validate_custom

STACKS = stack_names()
ONPREM = [s for s in STACKS if s != "burst-prod"]
NOT_K8S_OBJECTS = ("kubernetes:helm.sh/v3:Release",)
# Custom resources: validated against their upstream CRDs (tests/crds.py).
CUSTOM_KINDS = {"LeaderWorkerSet", "PrometheusRule", "PodMonitor", "NicClusterPolicy"}


def source(stack: Stack) -> str:
    return f"stacks/Pulumi.{stack.name}.yaml"


def expected_onprem(stack: Stack) -> Counter[str]:
    inv = stack.inventory
    plan = plan_site(inv)
    charts = platform_charts(inv, plan)
    storage = plan.ceph is not None and rbd_pool(plan.ceph) is not None
    expected: Counter[str] = Counter(
        {
            # The site's core, and the members that join it (when there are any).
            "gpufleet:onprem:OnPremNodes": 1
            + int(bool(membership(plan, [n.hostname for n in inv.nodes]).joins)),
            "pulumi-python:dynamic/gpufleet:Node": len(inv.nodes),
            "gpufleet:cluster:ClusterRoles": 1,
            "pulumi-python:dynamic/gpufleet:CephCluster": int(plan.ceph is not None),
            "pulumi-python:dynamic/gpufleet:KubernetesCluster": 1,
            "gpufleet:platform:KubernetesPlatform": 1,
            "pulumi:providers:kubernetes": 1,
            "kubernetes:core/v1:Namespace": len(
                {c.namespace for c in charts if c.namespace != "kube-system"} | {"serving"}
            ),
            "kubernetes:helm.sh/v3:Release": len(charts),
            "kubernetes:scheduling.k8s.io/v1:PriorityClass": 1,
            "kubernetes:monitoring.coreos.com/v1:PrometheusRule": 1,
            "kubernetes:monitoring.coreos.com/v1:PodMonitor": 1,
            "kubernetes:mellanox.com/v1alpha1:NicClusterPolicy": int(
                any(n.nics.rdma for n in inv.nodes if n.gpu)
            ),
            "kubernetes:core/v1:ConfigMap": 1,
            # One Secret and one StorageClass per CSI driver (RBD, CephFS).
            "kubernetes:core/v1:Secret": 2 * int(storage),
            "kubernetes:storage.k8s.io/v1:StorageClass": 2 * int(storage),
        }
    )
    workload = onprem_workload(inv, plan)
    if workload is not None:
        kind = (
            "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
            if workload.multi_node
            else "kubernetes:apps/v1:Deployment"
        )
        cache = int(workload.cache_storage_class is not None)
        expected += Counter(
            {
                "gpufleet:serving:DeepSeekServing": 1,
                "kubernetes:core/v1:ConfigMap": 1 + cache,
                "kubernetes:core/v1:PersistentVolumeClaim": cache,
                "kubernetes:batch/v1:Job": cache,
                kind: 1,
                "kubernetes:core/v1:Service": 1,
                "kubernetes:policy/v1:PodDisruptionBudget": 1,
                "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": int(workload.autoscale_max is not None),
            }
        )
        if inv.site.burst is not None:  # admission in front, the burst model as fallback
            expected += Counter(
                {
                    "gpufleet:serving:AdmissionGateway": 1,
                    "kubernetes:core/v1:ConfigMap": 1,
                    "kubernetes:apps/v1:Deployment": 1,
                    # Clients' Service, and the runtime API's headless one for the controller.
                    "kubernetes:core/v1:Service": 2,
                    "kubernetes:networking.k8s.io/v1:NetworkPolicy": 1,
                }
            )
            degraded = degraded_workload(inv, plan, plan_fleet(inv, source(stack)))
            if degraded is not None:  # lever 1: the distilled model on on-prem GPUs, replicas 0
                cache = int(degraded.cache_storage_class is not None)
                expected += Counter(
                    {
                        "gpufleet:serving:DeepSeekServing": 1,
                        "kubernetes:core/v1:ConfigMap": 1 + cache,
                        "kubernetes:core/v1:PersistentVolumeClaim": cache,
                        "kubernetes:batch/v1:Job": cache,
                        "kubernetes:apps/v1:Deployment": 1,
                        # Its headless one: the records of its gateway's fallback template.
                        "kubernetes:core/v1:Service": 1,
                    }
                )
    return +expected


def expected_burst(stack: Stack) -> Counter[str]:
    p = plan_burst(stack.inventory, stack.config, source(stack))
    private = len(p.network.private)
    classes = len({i.gpu for i in p.fleet.instances})  # a burst workload per GPU class
    return +Counter(
        {
            "pulumi:pulumi:StackReference": 1,
            "gpufleet:burst:SpotBurst": 1,
            "pulumi:providers:aws": 1,
            "aws:ec2/vpc:Vpc": 1,
            "aws:ec2/internetGateway:InternetGateway": 1,
            "aws:ec2/subnet:Subnet": 1 + private,
            "aws:ec2/routeTable:RouteTable": 2,
            "aws:ec2/routeTableAssociation:RouteTableAssociation": 1 + private,
            "aws:ec2/eip:Eip": 1,
            "aws:ec2/natGateway:NatGateway": 1,
            "aws:ec2/vpnGateway:VpnGateway": 1,
            "aws:ec2/customerGateway:CustomerGateway": 1,
            "aws:ec2/vpnConnection:VpnConnection": 1,
            "aws:ec2/vpnConnectionRoute:VpnConnectionRoute": len(p.network.onprem_cidrs),
            "aws:ec2/vpnGatewayRoutePropagation:VpnGatewayRoutePropagation": 1,
            "aws:ec2/securityGroup:SecurityGroup": 2 + int(p.resolver is not None),
            "aws:route53/resolverEndpoint:ResolverEndpoint": int(p.resolver is not None),
            "aws:route53/resolverRule:ResolverRule": int(p.resolver is not None),
            "aws:route53/resolverRuleAssociation:ResolverRuleAssociation": int(p.resolver is not None),
            "aws:ssm/parameter:Parameter": 3,
            "aws:s3/bucket:Bucket": 1,
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": 1,
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": 1,
            "aws:imagebuilder/component:Component": 1,
            "aws:imagebuilder/imageRecipe:ImageRecipe": 1,
            "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": 1,
            "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": 1,
            "aws:imagebuilder/image:Image": 1,
            "aws:sqs/queue:Queue": 1,
            "aws:sqs/queuePolicy:QueuePolicy": 1,
            "aws:kms/key:Key": 1,
            "aws:iam/role:Role": 2,
            "aws:iam/rolePolicy:RolePolicy": 2,
            "aws:iam/policy:Policy": 2,
            "aws:iam/instanceProfile:InstanceProfile": 2,
            "aws:ec2/launchTemplate:LaunchTemplate": 1,
            "aws:autoscaling/group:Group": 1,
            "aws:autoscaling/lifecycleHook:LifecycleHook": 1,
            "aws:cloudwatch/eventRule:EventRule": 3,
            "aws:cloudwatch/eventTarget:EventTarget": 3,
            "pulumi:providers:kubernetes": 1,
            "gpufleet:serving:DeepSeekServing": classes,
            "kubernetes:core/v1:ConfigMap": classes,
            "kubernetes:apps/v1:Deployment": classes,
            # Each class's Service, and its headless one whose records are its fallback template.
            "kubernetes:core/v1:Service": 2 * classes,
            "kubernetes:policy/v1:PodDisruptionBudget": classes,
        }
    )


def expected(stack: Stack) -> Counter[str]:
    return expected_burst(stack) if stack.config.layer == "burst" else expected_onprem(stack)


def one(graph: Graph, type_: str) -> Registration:
    found = graph.by_type(type_)
    assert len(found) == 1, f"{type_}: {len(found)} registered"
    return found[0]


def k8s_objects(graph: Graph) -> list[Registration]:
    return [
        r
        for r in graph.resources
        if r.type.startswith("kubernetes:") and r.custom and r.type not in NOT_K8S_OBJECTS
    ]


@pytest.mark.parametrize("name", STACKS)
def test_resource_counts_by_type(name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]) -> None:
    graph, want = graphs[name], expected(stacks[name])
    assert Counter(r.type for r in graph.resources) == want
    assert len(graph.resources) == sum(want.values())


@pytest.mark.parametrize("name", STACKS)
def test_every_resource_belongs_to_this_stack_and_is_resolved(name: str, graphs: dict[str, Graph]) -> None:
    graph = graphs[name]
    assert graph.resources
    for r in graph.resources:
        assert r.urn.startswith(f"urn:pulumi:{name}::gpufleet::"), r.urn
        assert UNKNOWN not in json.dumps(r.inputs, default=repr), f"{r.urn} has inputs never resolved"
    assert len({r.urn for r in graph.resources}) == len(graph.resources)


@pytest.mark.parametrize("name", STACKS)
def test_components_parent_their_children(name: str, graphs: dict[str, Graph]) -> None:
    graph = graphs[name]
    components = {r.urn: r for r in graph.resources if not r.custom}
    assert components
    for c in components.values():
        assert re.fullmatch(r"gpufleet:[a-z]+:[A-Z][A-Za-z]+", c.type), c.type
        assert c.parent.endswith(f"::gpufleet-{name}"), "components sit at the top of the stack"
    top_level = sorted(
        (r.type, r.name) for r in graph.resources if r.custom and r.parent.endswith(f"::gpufleet-{name}")
    )
    if name == "burst-prod":
        # The program's own wiring: the on-prem stack's outputs and the cluster they open.
        assert top_level == [
            ("pulumi:providers:kubernetes", "onprem-cluster"),
            ("pulumi:pulumi:StackReference", "organization/gpufleet/dc1-prod"),
        ]
    else:
        assert top_level == []
    children = [r for r in graph.resources if r.parent in components]
    assert len(children) == len(graph.resources) - len(components) - len(top_level)
    for r in children:
        assert r.name.startswith(components[r.parent].name + "-"), (r.name, components[r.parent].name)


@pytest.mark.parametrize("name", ONPREM)
def test_one_node_resource_per_node_with_its_plan_and_digest(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    inv = stacks[name].inventory
    nodes = {r.inputs["hostname"]: r for r in graphs[name].by_type("pulumi-python:dynamic/gpufleet:Node")}
    assert sorted(nodes) == sorted(n.hostname for n in inv.nodes)
    for node in inv.nodes:
        plan = plan_node(inv, node)
        r = nodes[node.hostname]
        assert r.inputs["digest"] == plan.digest
        assert json.loads(r.inputs["plan"]) == plan.model_dump(mode="json")
        assert r.inputs["pinned"] == {p.name: p.version for p in plan.packages if p.hold}
        assert r.inputs["address"] == str(node.management_ip)
        # The pickled provider travels as a secret in the state.
        assert isinstance(r.inputs["__provider"], Secret)
    assert graphs[name].outputs["nodeDigests"] == plan_site(inv).node_digests


@pytest.mark.parametrize("name", STACKS)
def test_secrets_stay_secret(name: str, graphs: dict[str, Graph]) -> None:
    onprem = graphs["dc1-prod"].outputs if name == "burst-prod" else graphs[name].outputs
    secrets = [reveal(onprem["kubeconfig"]), reveal(onprem["joinToken"])]
    assert all(isinstance(onprem[k], Secret) for k in ("kubeconfig", "joinToken"))
    assert all(isinstance(s, str) and len(s) > 10 for s in secrets)
    graph = graphs[name]
    # Rendered without opening secrets, nothing of the graph or the exports holds one in clear.
    text = json.dumps([r.inputs for r in graph.resources] + [graph.outputs], default=repr)
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[-1] not in text
    if name == "burst-prod":
        token = next(
            r for r in graph.by_type("aws:ssm/parameter:Parameter") if r.inputs["type"] == "SecureString"
        )
        assert isinstance(token.inputs["value"], Secret) and reveal(token.inputs["value"]) == secrets[1]
    else:
        cluster = one(graph, "pulumi-python:dynamic/gpufleet:KubernetesCluster")
        assert sorted(cluster.additional_secret_outputs) == ["join_token", "kubeconfig"]
        csi_secrets = graph.by_type("kubernetes:core/v1:Secret")
        assert len(csi_secrets) == 2 and all(isinstance(s.inputs["stringData"], Secret) for s in csi_secrets)
        ceph = one(graph, "pulumi-python:dynamic/gpufleet:CephCluster")
        assert sorted(ceph.additional_secret_outputs) == ["cephfs_client_key", "client_key"]
        keys = [reveal(s.inputs["stringData"]).get(k) for s in csi_secrets for k in ("userKey", "adminKey")]
        assert len({k for k in keys if k}) == 2  # each driver its own client's key, neither in clear
        provider = one(graph, "pulumi:providers:kubernetes")
        assert isinstance(provider.inputs["kubeconfig"], Secret)


def validate_official(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", STACKS)
def test_every_kubernetes_object_validates_for_the_boms_version(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    """Built-in kinds against the official schema of the BOM's version, custom resources against
    their upstream CRDs; unknown fields, wrong types and missing required fields fail both."""
    version = stacks[name].inventory.bom.kubernetes
    objects = k8s_objects(graphs[name])
    want = expected(stacks[name])
    assert len(objects) == sum(
        n for t, n in want.items() if t.startswith("kubernetes:") and t not in NOT_K8S_OBJECTS
    )
    custom = 0
    for r in objects:
        obj = reveal(r.inputs)
        if (obj["apiVersion"], obj["kind"]) in known_kinds():
            validate_custom(obj, version)
            custom += 1
        else:
            validate_official(obj, version)
    assert custom == sum(n for t, n in want.items() if t.split(":")[-1] in CUSTOM_KINDS)


def test_the_validator_rejects_what_the_api_server_would() -> None:
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containerz": []}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_official(bad, "1.31.4")


@pytest.mark.parametrize("name", ONPREM)
def test_platform_releases_are_pinned_and_leave_the_host_driver_to_pyinfra(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    inv = stacks[name].inventory
    charts = {c.name: c for c in platform_charts(inv, plan_site(inv))}
    releases = {r.inputs["name"]: r for r in graphs[name].by_type("kubernetes:helm.sh/v3:Release")}
    assert sorted(releases) == sorted(charts)
    for chart_name, chart in charts.items():
        assert releases[chart_name].inputs["version"] == chart.version
        assert re.fullmatch(r"v?[0-9]+\.[0-9]+\.[0-9]+", chart.version)
    if any(n.gpu for n in inv.nodes):
        values = releases["gpu-operator"].inputs["values"]
        assert values["driver"]["enabled"] is False
        assert values["toolkit"]["enabled"] is (inv.bom.nvidia_container_toolkit is None)
        # The operator creates the RuntimeClass whatever its toolkit setting and rewrites it on
        # reconcile: its name and handler are the containerd runtime pyinfra writes on GPU nodes.
        runtime = values["operator"]["runtimeClass"]
        assert runtime == NVIDIA_RUNTIME
        for node in (n for n in inv.nodes if n.gpu):
            assert f"containerd.runtimes.{runtime}]" in containerd_config(plan_node(inv, node))
    else:
        assert "gpu-operator" not in releases
    assert not graphs[name].by_type("kubernetes:node.k8s.io/v1:RuntimeClass")  # one owner
    if "ceph-csi-rbd" in releases:
        csi = releases["ceph-csi-rbd"].inputs["values"]["csiConfig"][0]
        assert csi["clusterID"] == graphs[name].outputs["cephFsid"]
        for storage in graphs[name].by_type("kubernetes:storage.k8s.io/v1:StorageClass"):
            assert storage.inputs["parameters"]["clusterID"] == graphs[name].outputs["cephFsid"]


@pytest.mark.parametrize("name", ONPREM)
def test_serving_runs_the_generated_triton_config(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    inv = stacks[name].inventory
    plan = plan_site(inv)
    workload = onprem_workload(inv, plan)
    graph = graphs[name]
    if workload is None:
        assert not graph.by_type("gpufleet:serving:DeepSeekServing")
        return
    assert plan.serving is not None and plan.serving.shape is not None
    config = next(
        r for r in graph.by_type("kubernetes:core/v1:ConfigMap") if "config.pbtxt" in r.inputs["data"]
    )
    assert config.inputs["data"] == {
        "config.pbtxt": workload.model_files["config.pbtxt"],
        "1_model.json": workload.model_files["1/model.json"],
    }
    if plan.serving.shape.nodes > 1:
        lws = one(graph, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
        assert lws.inputs["spec"]["leaderWorkerTemplate"]["size"] == plan.serving.shape.nodes
        pod = lws.inputs["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
        worker = lws.inputs["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
        assert worker["runtimeClassName"] == NVIDIA_RUNTIME
        target_kind = "LeaderWorkerSet"
    else:
        (deployment,) = [
            r
            for r in graph.by_type("kubernetes:apps/v1:Deployment")
            if r.inputs["metadata"]["name"] == workload.name
        ]
        pod = deployment.inputs["spec"]["template"]["spec"]
        target_kind = "Deployment"
    assert pod["runtimeClassName"] == NVIDIA_RUNTIME  # the GPUs come through the NVIDIA runtime
    triton = pod["containers"][0]
    assert triton["image"] == inv.bom.triton_image
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == str(plan.serving.shape.gpus_per_node)
    assert inv.bom.model_revision in pod["initContainers"][0]["command"][-1]
    hpa = one(graph, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert hpa.inputs["spec"]["scaleTargetRef"]["kind"] == target_kind
    assert [m["pods"]["metric"]["name"] for m in hpa.inputs["spec"]["metrics"]] == [QUEUE_METRIC]
    spec = hpa.inputs["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (workload.autoscale_min, workload.autoscale_max)
    assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
    assert spec["minReplicas"] <= plan.serving.replicas <= spec["maxReplicas"]
    # The HPA owns the replica count: the workload Pulumi applies leaves it out.
    target = lws if target_kind == "LeaderWorkerSet" else deployment
    assert "replicas" not in target.inputs["spec"]


def test_burst_fleet_is_spot_only_over_enough_types_and_bounded(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack = stacks["burst-prod"]
    p = plan_burst(stack.inventory, stack.config, source(stack))
    graph = graphs["burst-prod"]
    asg = one(graph, "aws:autoscaling/group:Group").inputs
    assert asg["desiredCapacity"] == stack.config.burst_nodes
    assert asg["maxSize"] == stack.inventory.site.burst.max_nodes  # type: ignore[union-attr]
    assert asg["minSize"] == 0 and asg["capacityRebalance"] is True
    dist = asg["mixedInstancesPolicy"]["instancesDistribution"]
    assert dist["onDemandBaseCapacity"] == 0 and dist["onDemandPercentageAboveBaseCapacity"] == 0
    # Capacity first, then the plan's order: the most replicas per dollar (by on-demand price).
    assert dist["spotAllocationStrategy"] == "capacity-optimized-prioritized"
    # $400/h cap over 8 nodes: no Spot price movement can take the full group over the cap.
    assert dist["spotMaxPrice"] == "50.0000"
    types = [o["instanceType"] for o in asg["mixedInstancesPolicy"]["launchTemplate"]["overrides"]]
    assert types == p.fleet.instance_types and len(types) >= MIN_SPOT_TYPES
    per_replica = [AWS_GPU_INSTANCES[t].on_demand_usd_hour / p.fleet.capacity[t] for t in types]
    assert per_replica == sorted(per_replica) and types[0].startswith("p5")
    subnets = {r.name: r.inputs for r in graph.by_type("aws:ec2/subnet:Subnet")}
    private = [s for n, s in subnets.items() if "private" in n]
    assert len(asg["vpcZoneIdentifiers"]) == len(private)
    assert len({s["availabilityZone"] for s in private}) >= 2
    assert one(graph, "pulumi:providers:aws").inputs["region"] == stack.inventory.site.burst.region  # type: ignore[union-attr]


def test_burst_nodes_boot_hardened_and_join_without_the_token_in_user_data(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack = stacks["burst-prod"]
    p = plan_burst(stack.inventory, stack.config, source(stack))
    graph = graphs["burst-prod"]
    lt = one(graph, "aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert all(b["ebs"]["encrypted"] == "true" for b in lt["blockDeviceMappings"])
    # The baked image's AMI, as the Image Builder build reports it (not the BOM's parent AMI).
    image = one(graph, "aws:imagebuilder/image:Image")
    assert re.fullmatch(r"ami-[0-9a-f]{17}", lt["imageId"])
    assert image.urn in one(graph, "aws:ec2/launchTemplate:LaunchTemplate").dependencies
    recipe = one(graph, "aws:imagebuilder/imageRecipe:ImageRecipe").inputs
    assert recipe["parentImage"] == f"ssm:{stack.inventory.bom.burst_ami}"
    script = base64.b64decode(lt["userData"]).decode()
    assert script == p.user_data
    assert p.join_token_parameter in script and "--with-decryption" in script
    assert reveal(graphs["dc1-prod"].outputs["joinToken"]) not in script
    sg = next(
        r for r in graph.by_type("aws:ec2/securityGroup:SecurityGroup") if r.name == "burst-nodes"
    ).inputs
    admin = [i for i in sg["ingress"] if i["fromPort"] in ADMIN_PORTS]
    assert len(admin) == len(ADMIN_PORTS)
    for rule in sg["ingress"]:
        assert "0.0.0.0/0" not in rule.get("cidrBlocks", [])
    hook = one(graph, "aws:autoscaling/lifecycleHook:LifecycleHook").inputs
    assert hook["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    patterns = [
        json.loads(r.inputs["eventPattern"])["detail-type"][0]
        for r in graph.by_type("aws:cloudwatch/eventRule:EventRule")
    ]
    assert "EC2 Spot Instance Interruption Warning" in patterns
    assert "EC2 Instance Rebalance Recommendation" in patterns


def test_burst_serves_the_fallback_model_on_spot_nodes(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack = stacks["burst-prod"]
    inv = stack.inventory
    p = plan_burst(inv, stack.config, source(stack))
    workloads = burst_workloads(inv, plan_site(inv), p.fleet, stack.config.burst_nodes)
    graph = graphs["burst-prod"]
    assert graph.outputs["burstModel"] == p.fleet.model
    configs = {
        c.inputs["metadata"]["name"]: c.inputs["data"] for c in graph.by_type("kubernetes:core/v1:ConfigMap")
    }
    deployments = {
        d.inputs["metadata"]["name"]: d.inputs for d in graph.by_type("kubernetes:apps/v1:Deployment")
    }
    assert set(deployments) == {w.name for w in workloads} and len(workloads) > 1
    for w in workloads:
        # Each class's engine, its own max_num_seqs, in its own model repository.
        assert configs[f"{w.name}-model-repository"] == {
            "config.pbtxt": w.model_files["config.pbtxt"],
            "1_model.json": w.model_files["1/model.json"],
        }
        assert f'name: "{p.fleet.model}"' in w.model_files["config.pbtxt"]
        deployment = deployments[w.name]
        assert deployment["spec"]["replicas"] == w.replicas
        # Pinned to its class by the label the burst nodes' user data sets.
        pod = deployment["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {
            "gpufleet.io/capacity": "spot",
            "gpufleet.io/gpu-model": w.node_selector["gpufleet.io/gpu-model"],
        }
        # The burst AMI's toolkit registers its containerd runtime under nvidia-ctk's default name.
        assert pod["runtimeClassName"] == NVIDIA_RUNTIME
        assert {t["key"] for t in pod["tolerations"]} == {"gpufleet.io/capacity", "nvidia.com/gpu"}
        assert p.fleet.revision in pod["initContainers"][0]["command"][-1]
    # Three nodes of whatever types the group picks: a pod of each class for each replica its
    # roomiest type could hold (dc1's fleet: two TP-4 replicas on each class's 8-GPU type, one on
    # a 4-GPU g6e.12xlarge); pods of a class no node carries wait Pending.
    replicas = {
        w.node_selector["gpufleet.io/gpu-model"]: w.replicas
        for w in burst_workloads(inv, plan_site(inv), p.fleet, 3)
    }
    assert replicas == {"H100-SXM-80GB": 6, "H200-SXM-141GB": 6, "A100-SXM4-80GB": 6, "L40S-48GB": 6}
    component = one(graph, "aws:imagebuilder/component:Component").inputs["data"]
    assert "nvidia-ctk runtime configure --runtime=containerd --set-as-default\n" in component


@pytest.mark.parametrize("name", STACKS)
def test_required_tags_on_every_taggable_cloud_resource(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    tagged = [r for r in graphs[name].resources if r.type.startswith("aws:") and "tags" in r.inputs]
    if name != "burst-prod":
        assert not [r for r in graphs[name].resources if r.type.startswith("aws:")]
        return
    assert len(tagged) >= 15
    for r in tagged:
        tags = r.inputs["tags"]
        tags = {t["key"]: t["value"] for t in tags} if isinstance(tags, list) else tags
        for key in ("site", "env", "owner", "cost-center"):
            assert tags.get(key), f"{r.urn} lacks tag {key}"


def test_evaluation_is_repeatable() -> None:
    from gpufleet.preview.program import evaluate_stack

    first, second = evaluate_stack("lab"), evaluate_stack("lab")
    assert len(first.resources) == len(second.resources) > 0

    def rendered(graph: Graph) -> list[tuple[str, str]]:
        # Registration order follows the engine's asynchrony; the graph itself must not change.
        return sorted((r.urn, json.dumps(r.inputs, default=repr, sort_keys=True)) for r in graph.resources)

    assert rendered(first) == rendered(second)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            {"gpufleet:burstNodes": "99"},
            "stacks/Pulumi.burst-prod.yaml: config.gpufleet:burstNodes: 99 is above the site's burst.max_nodes 8",
        ),
        ({"gpufleet:layer": "edge"}, "stacks/Pulumi.burst-prod.yaml: config.gpufleet:layer: Input should be"),
    ],
)
def test_bad_stack_config_stops_the_program_with_one_line(change: dict[str, str], line: str) -> None:
    import pulumi

    from gpufleet.preview.program import PROGRAM, evaluate, stack_config

    config = {**stack_config("burst-prod", PROGRAM.parent), **change}
    with pytest.raises(pulumi.RunError) as failure:
        evaluate("burst-prod", config=config)
    message = str(failure.value)
    assert message.startswith(line) and "\n" not in message


@pytest.mark.parametrize("name", STACKS)
def test_cloud_and_cluster_resources_use_the_explicit_providers(name: str, graphs: dict[str, Graph]) -> None:
    """A default provider would act on whatever kubeconfig or AWS region the operator's shell has."""
    graph = graphs[name]
    explicit = {r.urn for r in graph.resources if r.type.startswith("pulumi:providers:")}
    managed = [r for r in graph.resources if r.custom and r.type.split(":")[0] in ("aws", "kubernetes")]
    assert managed and explicit
    for r in managed:
        assert r.provider.rsplit("::", 1)[0] in explicit, (r.urn, r.provider)

"""Compose the components for one stack: on-prem layers, or the AWS Spot burst layer.

Everything here is wiring: every number comes from gpufleet.plan, every resource from a component.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.burst import SpotBurst, SpotBurstArgs
from components.cluster import ClusterRoles, ClusterRolesArgs
from components.controller import BurstController, BurstControllerArgs
from components.onprem import NodeSpec, OnPremNodes, OnPremNodesArgs
from components.platform import (
    CephStorage,
    KubernetesPlatform,
    KubernetesPlatformArgs,
)
from components.serving import AdmissionGateway, AdmissionGatewayArgs, DeepSeekServing, DeepSeekServingArgs
from gpufleet.inventory.stacks import Stack, qualified_stack
from gpufleet.model.site import Node
from gpufleet.plan.admission import (
    GATEWAY_REPLICAS,
    gateway_admin_address,
    gateway_cfg,
    pods_service,
    site_gateway,
)
from gpufleet.plan.aws import plan_burst, plan_fleet
from gpufleet.plan.controller import plan_controller
from gpufleet.plan.degrade import degraded_workload, plan_degrade
from gpufleet.plan.expect import host_expectations
from gpufleet.plan.k8s import (
    BURST_SERVING_AWAIT,
    ONPREM_SERVING_AWAIT,
    alert_rules,
    burst_workloads,
    canary_workload,
    ceph_monitors,
    grafana_dashboard,
    nic_cluster_policy,
    onprem_workload,
    platform_charts,
    rbd_pool,
    triton_pod_monitor,
)
from gpufleet.plan.membership import membership
from gpufleet.plan.node import plan_node
from gpufleet.plan.site import plan_site

SERVING_WORKLOADS = (
    "kubernetes:apps/v1:Deployment",
    "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet",
)


def awaited(annotations: dict[str, str]) -> pulumi.ResourceTransformation:
    """How Pulumi awaits the serving workload, as its annotations (gpufleet.plan.k8s)."""

    def transform(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
        if args.type_ not in SERVING_WORKLOADS:
            return None
        meta = dict(args.props.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        return pulumi.ResourceTransformationResult({**args.props, "metadata": meta}, args.opts)

    return transform


def onprem(stack: Stack) -> None:
    inv = stack.inventory
    plan = plan_site(inv)
    site = inv.site.name
    roles = membership(plan, [n.hostname for n in inv.nodes])
    core_of = {"ceph": roles.ceph_hosts, "kubernetes": roles.kubernetes_hosts}

    def spec(n: Node) -> NodeSpec:
        joins = {c: core_of[c] for c in roles.joins.get(n.hostname, ())}
        plan_n = plan_node(inv, n)
        return NodeSpec(n.hostname, str(n.management_ip), plan_n, host_expectations(inv, n, plan_n), joins)

    # The core first; each cluster waits for its own core hosts only; members join after, each alone.
    core = [spec(n) for n in inv.nodes if n.hostname in roles.core]
    nodes = OnPremNodes("nodes", OnPremNodesArgs(site=site, nodes=core))
    monitors = ceph_monitors(inv, plan)
    cluster = ClusterRoles(
        "cluster",
        ClusterRolesArgs(
            site=site,
            kubernetes=plan.kubernetes,
            ceph=plan.ceph,
            ceph_monitors=monitors,
            ceph_hosts=roles.ceph_hosts,
            kubernetes_hosts=roles.kubernetes_hosts,
            nodes=dict(nodes.nodes),
            control_plane_labels={
                s.hostname: s.plan.labels for s in core if s.hostname in roles.kubernetes_hosts
            },
        ),
    )
    members = [spec(n) for n in inv.nodes if n.hostname in roles.joins]
    if members:
        joined = sorted({c for m in members for c in m.join})
        OnPremNodes(
            "members",
            OnPremNodesArgs(
                site=site,
                nodes=members,
                after=[cluster.clusters[c] for c in joined],
                kubeconfig=cluster.kubeconfig,
            ),
        )
    ceph = None
    pool = rbd_pool(plan.ceph) if plan.ceph is not None else None
    if (
        plan.ceph is not None
        and pool is not None
        and cluster.ceph_fsid is not None
        and cluster.ceph_client_key is not None
        and cluster.ceph_cephfs_client_key is not None
    ):
        ceph = CephStorage(
            fsid=cluster.ceph_fsid,
            client_key=cluster.ceph_client_key,
            cephfs_client_key=cluster.ceph_cephfs_client_key,
            monitors=monitors,
            pool=pool,
            fs_name=plan.ceph.filesystem.name,
        )
    platform = KubernetesPlatform(
        "platform",
        KubernetesPlatformArgs(
            kubeconfig=cluster.kubeconfig,
            charts=platform_charts(inv, plan),
            custom_resources=[cr for cr in (nic_cluster_policy(inv), triton_pod_monitor()) if cr is not None],
            ceph=ceph,
            alert_rules=alert_rules(plan),
            dashboard_json=grafana_dashboard(plan),
            site=site,
        ),
    )
    workload = onprem_workload(inv, plan)
    if workload is not None:
        serving = DeepSeekServing(
            "serving",
            DeepSeekServingArgs(workload=workload),
            pulumi.ResourceOptions(
                providers=[platform.provider],
                depends_on=[platform],
                transformations=[awaited(ONPREM_SERVING_AWAIT)],
            ),
        )
        pulumi.export("servingService", f"{serving.service_name}.{workload.namespace}.svc")
        canary = canary_workload(inv, plan)
        if canary is not None:
            DeepSeekServing(
                "serving-canary",
                DeepSeekServingArgs(workload=canary, canary=True),
                pulumi.ResourceOptions(
                    providers=[platform.provider],
                    depends_on=[serving],
                    transformations=[awaited(ONPREM_SERVING_AWAIT)],
                ),
            )
        if inv.site.burst is not None and plan.serving is not None and plan.serving.shape is not None:
            assert inv.bom.gateway_image is not None  # check_serving requires it with a burst
            # Admission in front of the on-prem model, with the burst nodes' model as fallback:
            # room for a server per replica of the largest burst fleet.
            fleet = plan_fleet(inv, f"stacks/Pulumi.{stack.name}.yaml")
            gateway = site_gateway(inv, plan, fleet)
            assert gateway is not None  # a site with burst and a serving shape has one
            AdmissionGateway(
                "gateway",
                AdmissionGatewayArgs(
                    namespace=workload.namespace,
                    image=inv.bom.gateway_image,
                    config=gateway_cfg(gateway),
                    replicas=GATEWAY_REPLICAS,
                ),
                pulumi.ResourceOptions(providers=[platform.provider], depends_on=[platform, serving]),
            )
            degraded = degraded_workload(inv, plan, fleet)
            if degraded is not None:  # lever 1: scaled from 0 by the burst controller
                DeepSeekServing(
                    "serving-degraded",
                    # Its ready pods, one DNS record each: the gateway's fallback servers too.
                    DeepSeekServingArgs(workload=degraded, standby=True, pods_service=pods_service(degraded)),
                    pulumi.ResourceOptions(
                        providers=[platform.provider],
                        depends_on=[platform, serving],
                        transformations=[awaited(ONPREM_SERVING_AWAIT)],
                    ),
                )
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("joinToken", cluster.join_token)
    pulumi.export("caCertHash", cluster.ca_cert_hash)
    pulumi.export("apiEndpoint", plan.kubernetes.control_plane_endpoint)
    pulumi.export("nodeDigests", plan.node_digests)
    if cluster.ceph_fsid is not None:
        pulumi.export("cephFsid", cluster.ceph_fsid)


def burst(stack: Stack, source: str) -> None:
    inv = stack.inventory
    assert stack.config.onprem_stack is not None  # load_stack requires it for a burst stack
    aws_plan = plan_burst(inv, stack.config, source)
    onprem_outputs = pulumi.StackReference(
        qualified_stack(stack.config.onprem_stack, pulumi.get_organization(), pulumi.get_project())
    )
    spot = SpotBurst(
        "burst",
        SpotBurstArgs(
            plan=aws_plan,
            join_token=pulumi.Output.secret(onprem_outputs.require_output("joinToken")),
            ca_cert_hash=onprem_outputs.require_output("caCertHash"),
        ),
    )
    # Burst nodes join the on-prem cluster: their workloads are applied there.
    cluster = k8s.Provider(
        "onprem-cluster", kubeconfig=pulumi.Output.secret(onprem_outputs.require_output("kubeconfig"))
    )
    in_cluster = pulumi.ResourceOptions(providers=[cluster])
    plan = plan_site(inv)
    # One workload per GPU class of the fleet; each class's ready pods, one DNS record each, are
    # the servers of its own template in the gateway's fallback.
    for workload in burst_workloads(inv, plan, aws_plan.fleet, aws_plan.desired_nodes):
        DeepSeekServing(
            workload.name,
            DeepSeekServingArgs(workload=workload, pods_service=pods_service(workload)),
            pulumi.ResourceOptions.merge(
                in_cluster, pulumi.ResourceOptions(transformations=[awaited(BURST_SERVING_AWAIT)])
            ),
        )
    # The controller itself, where the site names its image, switching every gateway replica's
    # admission through their runtime API (the headless `gateway-admin` Service names each).
    degrade = plan_degrade(inv, plan, aws_plan.fleet)
    controller = plan_controller(inv, stack.name, degrade, gateway_admin=[gateway_admin_address()])
    if controller is not None:
        BurstController("controller", BurstControllerArgs(plan=controller), in_cluster)
    pulumi.export("asgName", spot.asg_name)
    pulumi.export("queueUrl", spot.queue_url)
    pulumi.export("controllerPolicyArn", spot.controller_policy_arn)
    pulumi.export("weightsUrl", spot.weights_url)
    pulumi.export("burstImageId", spot.image_id)
    pulumi.export("weightsPublisherPolicyArn", spot.publisher_policy_arn)
    pulumi.export("bootToServeS", plan.burst.boot_to_serve_s)  # type: ignore[union-attr]
    pulumi.export("burstModel", aws_plan.fleet.model)
    pulumi.export("instanceTypes", aws_plan.fleet.instance_types)
    pulumi.export("desiredNodes", aws_plan.desired_nodes)

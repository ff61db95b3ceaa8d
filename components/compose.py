"""Compose the components for one stack: on-prem layers, or the AWS Spot burst layer.

Everything here is wiring: every number comes from gpufleet.plan, every resource from a component.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.burst import SpotBurst, SpotBurstArgs
from components.cluster import ClusterRoles, ClusterRolesArgs
from components.onprem import NodeSpec, OnPremNodes, OnPremNodesArgs
from components.platform import (
    CephStorage,
    KubernetesPlatform,
    KubernetesPlatformArgs,
    TerminationHandler,
    TerminationHandlerArgs,
)
from components.serving import DeepSeekServing, DeepSeekServingArgs
from gpufleet.inventory.stacks import Stack
from gpufleet.plan.aws import plan_burst
from gpufleet.plan.k8s import (
    alert_rules,
    burst_workload,
    ceph_monitors,
    grafana_dashboard,
    onprem_workload,
    platform_charts,
    rbd_pool,
    termination_handler_chart,
)
from gpufleet.plan.node import plan_node
from gpufleet.plan.site import plan_site


def onprem(stack: Stack) -> None:
    inv = stack.inventory
    plan = plan_site(inv)
    site = inv.site.name
    nodes = OnPremNodes(
        "nodes",
        OnPremNodesArgs(
            site=site,
            nodes=[NodeSpec(n.hostname, str(n.management_ip), plan_node(inv, n)) for n in inv.nodes],
        ),
    )
    monitors = ceph_monitors(inv, plan)
    cluster = ClusterRoles(
        "cluster",
        ClusterRolesArgs(site=site, kubernetes=plan.kubernetes, ceph=plan.ceph, ceph_monitors=monitors),
        pulumi.ResourceOptions(depends_on=[nodes]),
    )
    ceph = None
    pool = rbd_pool(plan.ceph) if plan.ceph is not None else None
    if pool is not None and cluster.ceph_fsid is not None and cluster.ceph_client_key is not None:
        ceph = CephStorage(
            fsid=cluster.ceph_fsid, client_key=cluster.ceph_client_key, monitors=monitors, pool=pool
        )
    platform = KubernetesPlatform(
        "platform",
        KubernetesPlatformArgs(
            kubeconfig=cluster.kubeconfig,
            charts=platform_charts(inv, plan),
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
            pulumi.ResourceOptions(providers=[platform.provider], depends_on=[platform]),
        )
        pulumi.export("servingService", f"{serving.service_name}.{workload.namespace}.svc")
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
    onprem_outputs = pulumi.StackReference(stack.config.onprem_stack)
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
    TerminationHandler(
        "termination-handler",
        TerminationHandlerArgs(chart=termination_handler_chart(aws_plan.region)),
        in_cluster,
    )
    workload = burst_workload(inv, plan_site(inv), aws_plan.fleet, aws_plan.desired_nodes)
    DeepSeekServing("burst-serving", DeepSeekServingArgs(workload=workload), in_cluster)
    pulumi.export("asgName", spot.asg_name)
    pulumi.export("queueUrl", spot.queue_url)
    pulumi.export("burstModel", aws_plan.fleet.model)
    pulumi.export("instanceTypes", aws_plan.fleet.instance_types)
    pulumi.export("desiredNodes", aws_plan.desired_nodes)

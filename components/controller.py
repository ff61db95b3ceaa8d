"""BurstController: `gpufleet burst run` as a Deployment in the on-prem cluster, with its access."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from gpufleet.plan.controller import ControllerPlan, controller_deployment, controller_pod_monitor


@dataclass(frozen=True)
class BurstControllerArgs:
    plan: ControllerPlan


class BurstController(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: BurstControllerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpufleet:controller:BurstController", name, None, opts)
        p = args.plan
        child = pulumi.ResourceOptions(parent=self)
        meta = {"name": p.name, "labels": p.labels}
        namespaced = {**meta, "namespace": p.namespace}
        account = k8s.core.v1.ServiceAccount(f"{name}-account", metadata=namespaced, opts=child)
        subject = [{"kind": "ServiceAccount", "name": p.name, "namespace": p.namespace}]
        grants: list[pulumi.Resource] = [account]
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-cluster-role", metadata=meta, rules=[r.k8s() for r in p.cluster_rules], opts=child
        )
        grants.append(
            k8s.rbac.v1.ClusterRoleBinding(
                f"{name}-cluster-binding",
                metadata=meta,
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": p.name},
                subjects=subject,
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[cluster_role])),
            )
        )
        if p.rules:
            role = k8s.rbac.v1.Role(
                f"{name}-role", metadata=namespaced, rules=[r.k8s() for r in p.rules], opts=child
            )
            grants.append(
                k8s.rbac.v1.RoleBinding(
                    f"{name}-binding",
                    metadata=namespaced,
                    role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": p.name},
                    subjects=subject,
                    opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[role])),
                )
            )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=namespaced,
            spec=controller_deployment(p),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=grants)),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="PodMonitor",
            metadata=namespaced,
            spec=controller_pod_monitor(p),
            opts=child,
        )
        self.register_outputs({"deployment": f"{p.namespace}/{p.name}"})

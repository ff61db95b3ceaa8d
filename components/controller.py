"""BurstController: `gpufleet burst run` as a Deployment in the on-prem cluster, with its access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from gpufleet.plan.controller import ControllerPlan, Rule, controller_deployment, controller_pod_monitor


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
        grants.append(self._grant(f"{name}-cluster-", "ClusterRole", meta, p.cluster_rules, subject, child))
        if p.rules:
            grants.append(self._grant(f"{name}-", "Role", namespaced, p.rules, subject, child))
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

    @staticmethod
    def _grant(
        prefix: str,
        kind: Literal["ClusterRole", "Role"],
        metadata: dict[str, Any],
        rules: list[Rule],
        subjects: list[dict[str, str]],
        child: pulumi.ResourceOptions,
    ) -> pulumi.Resource:
        """A role (`{prefix}role`) and its binding (`{prefix}binding`) to the service account."""
        role_type, binding_type = (
            (k8s.rbac.v1.ClusterRole, k8s.rbac.v1.ClusterRoleBinding)
            if kind == "ClusterRole"
            else (k8s.rbac.v1.Role, k8s.rbac.v1.RoleBinding)
        )
        role = role_type(f"{prefix}role", metadata=metadata, rules=[r.k8s() for r in rules], opts=child)
        binding: pulumi.Resource = binding_type(
            f"{prefix}binding",
            metadata=metadata,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": metadata["name"]},
            subjects=subjects,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[role])),
        )
        return binding

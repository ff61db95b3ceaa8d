"""OnPremNodes: one resource per bare-metal node, converged by its pyinfra deploy.

The site's core (control planes, Ceph monitors and managers) comes first and the cluster resources
wait for it alone; every other node is a member that joins those clusters at the end of its own
converge. One member that fails (a bad GPU, a host that does not come back from its reboot) fails
alone: Ceph, Kubernetes, the platform and serving go on without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from components.providers import NodeProvider, undo_pickler_wrapping
from gpufleet.plan.expect import HostExpect
from gpufleet.plan.node import NodePlan


class Node(Resource, module="gpufleet", name="Node"):
    """A node's plan and digest in; what the last converge changed, and any drift since, out."""

    changed: pulumi.Output[list[str]]
    drift: pulumi.Output[list[str]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(NodeProvider(), name, {**props, "changed": None, "drift": None}, opts)
        undo_pickler_wrapping()


@dataclass(frozen=True)
class NodeSpec:
    hostname: str
    address: str
    plan: NodePlan
    # What the admission gate checks, from the same plan (gpufleet.plan.expect).
    expect: HostExpect
    # Clusters this node joins at the end of its own create/update ("ceph", "kubernetes"), each with
    # the core hosts its playbook runs beside it: a member joins by itself and fails by itself.
    join: dict[str, list[str]] = field(default_factory=dict)


def node_inputs(site: str, spec: NodeSpec, kubeconfig: pulumi.Input[str] | None = None) -> dict[str, Any]:
    """The plan travels as one canonical JSON document (a thousand nodes' plans as nested
    properties would dominate the program's run time); the pinned packages stay structured so
    `pulumi preview --diff` reads a driver change as `nvidia-driver-580-open: 535.* => 580.*`."""
    plan = spec.plan
    return {
        "site": site,
        "hostname": spec.hostname,
        "address": spec.address,
        "pinned": {p.name: p.version for p in plan.packages if p.hold and p.version},
        "plan": json.dumps(plan.model_dump(mode="json"), sort_keys=True, indent=1),
        "digest": plan.digest,
        "expect": spec.expect.model_dump_json(),
        "join": spec.join,
        # A Kubernetes member is admitted through the cluster's kubeconfig (a secret) once joined.
        **({"kubeconfig": kubeconfig} if "kubernetes" in spec.join else {}),
    }


@dataclass(frozen=True)
class OnPremNodesArgs:
    site: str
    nodes: list[NodeSpec]
    # Each node waits for these (the clusters its members join), and for nothing else.
    after: list[pulumi.Resource] = field(default_factory=list)
    # The cluster's admin kubeconfig (a Pulumi secret), for members that join Kubernetes.
    kubeconfig: pulumi.Input[str] | None = None


class OnPremNodes(pulumi.ComponentResource):
    nodes: dict[str, Node]

    def __init__(self, name: str, args: OnPremNodesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpufleet:onprem:OnPremNodes", name, None, opts)
        self.nodes = {
            spec.hostname: Node(
                f"{name}-{spec.hostname}",
                node_inputs(args.site, spec, args.kubeconfig),
                pulumi.ResourceOptions(
                    parent=self, depends_on=args.after, additional_secret_outputs=["kubeconfig"]
                ),
            )
            for spec in args.nodes
        }
        self.register_outputs({"digests": {s.hostname: s.plan.digest for s in args.nodes}})

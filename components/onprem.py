"""OnPremNodes: one resource per bare-metal node, converged by its pyinfra deploy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from components.providers import NodeProvider, undo_pickler_wrapping
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


def node_inputs(site: str, spec: NodeSpec) -> dict[str, Any]:
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
    }


@dataclass(frozen=True)
class OnPremNodesArgs:
    site: str
    nodes: list[NodeSpec]


class OnPremNodes(pulumi.ComponentResource):
    nodes: dict[str, Node]

    def __init__(self, name: str, args: OnPremNodesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpufleet:onprem:OnPremNodes", name, None, opts)
        self.nodes = {
            spec.hostname: Node(
                f"{name}-{spec.hostname}",
                node_inputs(args.site, spec),
                pulumi.ResourceOptions(parent=self),
            )
            for spec in args.nodes
        }
        self.register_outputs({"digests": {s.hostname: s.plan.digest for s in args.nodes}})

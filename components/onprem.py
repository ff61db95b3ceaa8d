"""OnPremNodes: one resource per bare-metal node, converged by its pyinfra deploy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from components.providers import NodeProvider
from gpufleet.plan.node import NodePlan


class Node(Resource, module="gpufleet", name="Node"):
    """A node's plan and digest in; what the last converge changed, and any drift since, out."""

    changed: pulumi.Output[list[str]]
    drift: pulumi.Output[list[str]]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(NodeProvider(), name, {**props, "changed": None, "drift": None}, opts)


@dataclass(frozen=True)
class NodeSpec:
    hostname: str
    address: str
    plan: NodePlan


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
                {
                    "site": args.site,
                    "hostname": spec.hostname,
                    "address": spec.address,
                    "plan": spec.plan.model_dump(mode="json"),
                    "digest": spec.plan.digest,
                },
                pulumi.ResourceOptions(parent=self),
            )
            for spec in args.nodes
        }
        self.register_outputs({"digests": {s.hostname: s.plan.digest for s in args.nodes}})

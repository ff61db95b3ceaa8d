"""pyinfra: one node's own state, carried out from its plan (gpufleet.plan.node.NodePlan)."""

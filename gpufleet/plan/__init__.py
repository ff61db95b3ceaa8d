"""Pure decisions: from a validated Inventory to what every node and the site must become."""

from gpufleet.plan.node import NodePlan, plan_node
from gpufleet.plan.site import SitePlan, plan_site

__all__ = ["NodePlan", "SitePlan", "plan_node", "plan_site"]

"""Pulumi components: one concern each; the numbers come from gpufleet.plan."""

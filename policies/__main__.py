"""`pulumi preview --policy-pack policies`: serves the rules to the engine (this call blocks)."""

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.rules import resource_policies

PolicyPack(name="gpufleet", enforcement_level=EnforcementLevel.MANDATORY, policies=resource_policies())

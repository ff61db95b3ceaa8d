"""The gpufleet Pulumi program: `pulumi up -s <stack>` from the repository root.

Reads the stack's `gpufleet:*` config as the engine gives it, validates it and the site inventory
through gpufleet.model, and composes the layer the stack owns.
"""

import pulumi

from components import compose
from gpufleet.inventory.stacks import stack_from_config
from gpufleet.model.errors import InputError

KEYS = ("site", "layer", "owner", "costCenter", "burstNodes", "onpremStack")

name = pulumi.get_stack()
source = f"stacks/Pulumi.{name}.yaml"
config = pulumi.Config("gpufleet")
raw = {f"gpufleet:{key}": value for key in KEYS if (value := config.get(key)) is not None}
try:
    stack = stack_from_config(name, raw, source)
    if stack.config.layer == "burst":
        compose.burst(stack, source)
    else:
        compose.onprem(stack)
except InputError as exc:
    # One line per problem, naming the file and key, and no traceback: nothing is deployed.
    raise pulumi.RunError("\n".join(exc.lines())) from None

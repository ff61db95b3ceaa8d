"""Load `stacks/Pulumi.<stack>.yaml` and the site inventory it names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gpufleet.inventory.load import REPO_ROOT, display, load_inventory, read_yaml, site_file, validate
from gpufleet.inventory.project import check_stack_config
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.errors import Path as KeyPath
from gpufleet.model.site import Inventory
from gpufleet.model.stack import GpufleetConfig, StackFile


@dataclass(frozen=True)
class Stack:
    name: str
    config: GpufleetConfig
    inventory: Inventory


def qualified_stack(name: str, organization: str, project: str) -> str:
    """A StackReference name: `org/project/stack` as given, or a bare stack in this org and project."""
    return name if name.count("/") == 2 else f"{organization}/{project}/{name}"


def stacks_dir() -> Path:
    local = Path("stacks")
    return local if local.is_dir() else REPO_ROOT / "stacks"


def stack_names() -> list[str]:
    return sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir().glob("Pulumi.*.yaml")
    )


# Pulumi's own rule for a stack name (alphanumerics, `-`, `_`, `.`; at most 100): the name goes
# into resource names, stack references and the commands that select the stack.
STACK_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def read_stack_file(path: Path, name: str) -> StackFile:
    """`Pulumi.<name>.yaml`, checked against the project's `Pulumi.yaml` as the engine checks it."""
    if not STACK_NAME.fullmatch(name):
        # The name is not echoed as it is: it may hold a newline or markup.
        source = f"{display(path.parent)}/Pulumi.{ascii(name)[1:-1][:80]}.yaml"
        raise InputError(source, [Problem((), "not a Pulumi stack name (<= 100 of A-Za-z0-9._-)")])
    source = display(path)
    stack_file = validate(StackFile, read_yaml(path), source)
    check_stack_config(path.parent.parent / "Pulumi.yaml", name, stack_file.config, source)
    return stack_file


def load_stack(name: str, folder: Path | None = None) -> Stack:
    """The stack `name` from `folder` (default: the project's stacks/)."""
    path = (folder or stacks_dir()) / f"Pulumi.{name}.yaml"
    stack_file = read_stack_file(path, name)
    return stack_from_config(name, stack_file.gpufleet(), display(path))


def stack_from_config(name: str, gpufleet_config: Mapping[str, object], source: str) -> Stack:
    """`gpufleet:*` config as the stack file or the Pulumi engine gives it; `source` names it in errors."""
    config = validate(GpufleetConfig, gpufleet_config, source, prefix=("config",))
    problems = []
    site_key: KeyPath = ("config", "gpufleet:site")
    if not site_file(config.site).is_file():
        problems.append(Problem(site_key, f"no inventory {display(site_file(config.site))}"))
    if config.layer == "burst" and config.onprem_stack is None:
        problems.append(
            Problem(("config", "gpufleet:onpremStack"), "a burst stack must name its on-prem stack")
        )
    if problems:
        raise InputError(source, problems)
    inventory = load_inventory(config.site)
    burst = inventory.site.burst
    if config.layer == "burst" and burst is None:
        raise InputError(source, [Problem(site_key, f"site {config.site} has no burst section")])
    if burst is not None and config.burst_nodes > burst.max_nodes:
        raise InputError(
            source,
            [
                Problem(
                    ("config", "gpufleet:burstNodes"),
                    f"{config.burst_nodes} is above the site's burst.max_nodes {burst.max_nodes}",
                )
            ],
        )
    return Stack(name=name, config=config, inventory=inventory)

"""Render a site for the tools that act on it: Ansible's JSON inventory and pyinfra's groups."""

from __future__ import annotations

from typing import Any

from gpufleet.model.site import Inventory, Node, Role
from gpufleet.plan.node import plan_node

GROUP_OF_ROLE = {
    Role.CONTROL_PLANE: "control_plane",
    Role.WORKER: "worker",
    Role.GPU: "gpu",
    Role.STORAGE: "storage",
}


def groups(inv: Inventory) -> dict[str, list[str]]:
    """Hosts per role group, in inventory order; the same names for Ansible and pyinfra."""
    out: dict[str, list[str]] = {name: [] for name in GROUP_OF_ROLE.values()}
    for node in inv.nodes:
        for role in node.roles:
            out[GROUP_OF_ROLE[role]].append(node.hostname)
    return out


def host_vars(inv: Inventory, node: Node) -> dict[str, Any]:
    return {
        "ansible_host": str(node.management_ip),
        "gpufleet_site": inv.site.name,
        "gpufleet_roles": [r.value for r in node.roles],
        "gpufleet_plan_digest": plan_node(inv, node).digest,
    }


def ansible_inventory(inv: Inventory) -> dict[str, Any]:
    """The JSON an Ansible inventory script prints for `--list`."""
    site_group = inv.site.name.replace("-", "_")
    out: dict[str, Any] = {
        "all": {"children": [site_group]},
        site_group: {
            "children": [g for g, hosts in groups(inv).items() if hosts],
            "vars": {
                "ansible_user": "root",
                "gpufleet_site": inv.site.name,
            },
        },
        "_meta": {"hostvars": {n.hostname: host_vars(inv, n) for n in inv.nodes}},
    }
    for group, hosts in groups(inv).items():
        if hosts:
            out[group] = {"hosts": hosts}
    return out


def pyinfra_inventory(inv: Inventory) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """pyinfra groups: name -> [(host, data)], with SSH addresses from the model."""
    data = {
        n.hostname: {"ssh_hostname": str(n.management_ip), "ssh_user": "root", "gpufleet_site": inv.site.name}
        for n in inv.nodes
    }
    return {group: [(h, data[h]) for h in hosts] for group, hosts in groups(inv).items() if hosts}


def pyinfra_inventory_source(inv: Inventory) -> str:
    """A static pyinfra inventory module, for sites that pin one to a file."""
    lines = [
        f"# pyinfra inventory of site {inv.site.name}, rendered by `gpufleet inventory --format pyinfra`"
    ]
    for group, hosts in pyinfra_inventory(inv).items():
        lines.append(f"{group} = [")
        lines += [f"    ({host!r}, {data!r})," for host, data in hosts]
        lines.append("]")
    return "\n".join(lines) + "\n"

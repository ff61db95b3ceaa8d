#!/usr/bin/env python3
"""Ansible dynamic inventory for a gpufleet site: `GPUFLEET_SITE=dc1 ansible-inventory -i <this> --list`.

The site comes from $GPUFLEET_SITE (default: lab); everything else from inventories/<site>/nodes.yaml.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpufleet.inventory.load import inventories_dir, load_inventory
from gpufleet.inventory.render import ansible_inventory
from gpufleet.model.errors import InputError
from gpufleet.provision.connection import ansible_ssh_vars


def main(argv: list[str]) -> int:
    os.environ.setdefault("GPUFLEET_INVENTORIES", str(Path(__file__).resolve().parent))
    site = os.environ.get("GPUFLEET_SITE", "lab")
    try:
        inv = load_inventory(site)
    except InputError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 2
    rendered = ansible_inventory(inv)
    # Known hosts from the inventory, checked strictly (the lab brings its own SSH config).
    ssh = ansible_ssh_vars(inv)
    for hostvars in rendered["_meta"]["hostvars"].values():
        hostvars.update(ssh)
    if len(argv) >= 2 and argv[0] == "--host":
        print(json.dumps(rendered["_meta"]["hostvars"].get(argv[1], {})))
    elif argv == ["--list"]:
        print(json.dumps(rendered, indent=2))
    else:
        print(
            f"usage: {Path(__file__).name} --list | --host HOST (site from GPUFLEET_SITE, "
            f"inventories in {inventories_dir()})",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

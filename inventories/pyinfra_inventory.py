"""pyinfra inventory for a gpufleet site: `GPUFLEET_SITE=dc1 pyinfra inventories/pyinfra_inventory.py ...`."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpufleet.inventory.load import load_inventory
from gpufleet.inventory.render import pyinfra_inventory
from gpufleet.provision.connection import pyinfra_ssh_data

_inv = load_inventory(os.environ.get("GPUFLEET_SITE", "lab"))
# Known hosts from the inventory (the lab's own file on the lab), checked strictly.
_ssh = pyinfra_ssh_data(_inv)
globals().update(
    {
        group: [(host, {**data, **_ssh}) for host, data in hosts]
        for group, hosts in pyinfra_inventory(_inv).items()
    }
)

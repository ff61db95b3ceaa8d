"""pyinfra inventory for a gpufleet site: `GPUFLEET_SITE=dc1 pyinfra inventories/pyinfra_inventory.py ...`."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpufleet.inventory.load import load_inventory
from gpufleet.inventory.render import pyinfra_inventory

globals().update(pyinfra_inventory(load_inventory(os.environ.get("GPUFLEET_SITE", "lab"))))

"""Load site inventories and render them for Ansible and pyinfra."""

from gpufleet.inventory.load import load_inventory, site_file

__all__ = ["load_inventory", "site_file"]

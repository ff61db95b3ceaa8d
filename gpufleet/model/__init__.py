"""Typed, strict models of a site, its nodes and its software bill of materials."""

from gpufleet.model.catalog import GPU_CATALOG, GPUModel
from gpufleet.model.checks import check_inventory
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Bom, Inventory, Node, Role, Site

__all__ = [
    "GPU_CATALOG",
    "Bom",
    "GPUModel",
    "InputError",
    "Inventory",
    "Node",
    "Problem",
    "Role",
    "Site",
    "check_inventory",
]

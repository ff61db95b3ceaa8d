"""The host suite: is each node what its plan says? Expected values come from gpufleet.plan.expect.

Run against a site's hosts through Ansible's inventory:
    GPUFLEET_SITE=dc1 pytest tests/host --hosts=ansible://gpu --ansible-inventory inventories/ansible_inventory.py
or on the machine itself (GPUFLEET_HOST names its node in the inventory):
    GPUFLEET_SITE=h100 GPUFLEET_HOST=h100-1 pytest tests/host --hosts=local:// -m "gpu or network"
`gpufleet verify` wraps both and is the admission gate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpufleet.inventory.load import load_inventory
from gpufleet.plan.expect import HostExpect, host_expectations

Run = Callable[[str], str]


def pytest_configure(config: pytest.Config) -> None:
    for part in ("gpu", "network", "storage", "kubernetes", "perf"):
        config.addinivalue_line("markers", f"{part}: host checks of the {part} part")
    config.addinivalue_line(
        "markers", "cluster: checks that need the node's clusters (Kubernetes membership, Ceph health)"
    )


def _given() -> HostExpect | None:
    """Expectations handed over whole (GPUFLEET_EXPECT: the Node provider's own plan), if any."""
    path = os.environ.get("GPUFLEET_EXPECT")
    return HostExpect.model_validate_json(Path(path).read_text()) if path else None


@pytest.fixture(scope="module")
def node_name(host: Any) -> str:
    given = _given()
    if given is not None:
        return given.hostname
    if host.backend.NAME == "local":
        name = os.environ.get("GPUFLEET_HOST")
        if not name:
            raise pytest.UsageError("with --hosts=local:// set GPUFLEET_HOST to this machine's node name")
        return name
    return str(host.backend.get_hostname())


@pytest.fixture(scope="module")
def expect(node_name: str) -> HostExpect:
    given = _given()
    if given is not None:
        return given
    inv = load_inventory(os.environ.get("GPUFLEET_SITE", "lab"))
    try:
        return host_expectations(inv, inv.node(node_name))
    except KeyError:
        raise pytest.UsageError(f"{node_name} is not a node of site {inv.site.name}") from None


@pytest.fixture(scope="module")
def run(host: Any) -> Run:
    """Run a command on the host; a failure says which command, its exit code and its output."""

    def _run(command: str) -> str:
        result = host.run(command)
        assert result.rc == 0, (
            f"`{command}` exited {result.rc}: {(result.stderr or result.stdout).strip()[:500]}"
        )
        return str(result.stdout)

    return _run


def not_planned(what: str) -> None:
    """Only for what the plan leaves out of this host: never for what it requires."""
    pytest.skip(f"not in this host's plan: {what}")

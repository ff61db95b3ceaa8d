"""The Node provider's read path against real lab hosts: a pyinfra dry run, nothing changed.

create/update converge a host and would race other suites using the lab; read is what
`pulumi refresh` runs, and it reports drift from the same deploy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.onprem import NodeSpec, node_inputs
from components.providers import NodeProvider
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.node import plan_node

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab_up() -> None:
    status = subprocess.run(
        [str(Path(sys.executable).parent / "gpufleet"), "lab", "status"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if status.returncode != 0:
        pytest.skip("the lab is not running (`gpufleet lab up` builds it)")


def test_read_reports_what_the_deploy_would_change(lab_up: None) -> None:
    inv = load_inventory("lab")
    node = inv.nodes[1]
    props = node_inputs("lab", NodeSpec(node.hostname, str(node.management_ip), plan_node(inv, node)))
    result = NodeProvider().read(f"lab/{node.hostname}", props)
    assert result.id == f"lab/{node.hostname}"
    drift = result.outs["drift"]
    assert isinstance(drift, list) and all(isinstance(op, str) and op for op in drift)
    assert {k: v for k, v in result.outs.items() if k != "drift"} == props
    diff = NodeProvider().diff(result.id, result.outs, props)
    assert diff.changes is bool(drift) and diff.replaces == []

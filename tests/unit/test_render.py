"""Ansible and pyinfra inventories and the JSON Schema, checked by the real tools that consume them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.aws import plan_fleet
from tests.conftest import INVENTORIES, REPO, SITES, site_data

ANSIBLE_INVENTORY = str(REPO / ".venv" / "bin" / "ansible-inventory")


def _ansible_inventory(site: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", str(INVENTORIES / "ansible_inventory.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "GPUFLEET_SITE": site, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"},
        cwd="/",
    )
    return json.loads(proc.stdout)


@pytest.mark.parametrize("site", ["lab", "dc1"])
def test_ansible_inventory_through_ansible(site: str) -> None:
    data = _ansible_inventory(site, "--list")
    inv = load_inventory(site)
    hostvars = data["_meta"]["hostvars"]
    assert set(hostvars) == {n.hostname for n in inv.nodes}
    for node in inv.nodes:
        assert hostvars[node.hostname]["ansible_host"] == str(node.management_ip)
        assert len(hostvars[node.hostname]["gpufleet_plan_digest"]) == 16
        for role in node.roles:
            group = role.value.replace("-", "_")
            assert node.hostname in data[group]["hosts"]


def test_ansible_inventory_host_vars() -> None:
    data = _ansible_inventory("dc1", "--host", "gpu03")
    assert data["ansible_host"] == "10.40.1.23"
    assert data["gpufleet_roles"] == ["gpu", "worker"]


def test_ansible_inventory_bad_site_fails() -> None:
    proc = subprocess.run(
        [str(INVENTORIES / "ansible_inventory.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GPUFLEET_SITE": "nowhere"},
    )
    assert proc.returncode == 2
    assert "no site 'nowhere' in " in proc.stderr and f"sites: {', '.join(SITES)}" in proc.stderr


def test_pyinfra_inventory_loads_in_pyinfra() -> None:
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "pyinfra"),
            str(INVENTORIES / "pyinfra_inventory.py"),
            "debug-inventory",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd="/",
        env={**os.environ, "GPUFLEET_SITE": "dc1"},
    )
    hosts = re.findall(r"^\[(\S+)\]\s*\n--> Groups: (.*)$", proc.stderr, flags=re.M)
    # pyinfra logs to stderr
    inv = load_inventory("dc1")
    assert [h for h, _ in hosts] == [n.hostname for n in inv.nodes]
    groups = dict(hosts)
    assert set(groups["gpu03"].split(", ")) >= {"gpu", "worker"}
    assert "storage" in groups["st02"]
    assert '"ssh_hostname": "10.40.2.32"' in proc.stderr


def test_rendered_pyinfra_module_matches_the_dynamic_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["inventory", "lab", "--format", "pyinfra"])
    assert result.exit_code == 0
    namespace: dict[str, Any] = {}
    exec(compile(result.stdout, "rendered.py", "exec"), namespace)
    assert [h for h, _ in namespace["storage"]] == ["lab-st1", "lab-st2", "lab-st3"]
    assert dict(namespace["control_plane"])["lab-cp1"]["ssh_hostname"] == "198.18.0.10"


def test_schema_accepts_every_site_and_rejects_typos(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path / "schema.json")])
    assert result.exit_code == 0
    schema = json.loads((tmp_path / "schema.json").read_text())
    for site in SITES:
        jsonschema.validate(site_data(site), schema)
    broken = site_data("dc1")
    broken["nodes"][0]["hostnme"] = broken["nodes"][0].pop("hostname")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_json_inventory_round_trips() -> None:
    result = CliRunner().invoke(app, ["inventory", "dc1", "--format", "json"])
    assert result.exit_code == 0
    gpu = {"model": "H100-SXM-80GB", "count": 8, "interconnect": None}
    assert yaml.safe_load(result.stdout)["nodes"][3]["gpu"] == gpu


def test_plan_node_json_has_the_digest() -> None:
    result = CliRunner().invoke(app, ["plan-node", "dc1", "gpu01", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    site = CliRunner().invoke(app, ["plan-site", "dc1", "--json"])
    assert data["digest"] == json.loads(site.stdout)["node_digests"]["gpu01"]
    # The node joins with one taint more than it keeps: the one its admission removes.
    unverified = {"key": "gpufleet.io/unverified", "value": "true", "effect": "NoSchedule"}
    assert data["registration_taints"] == [*data["taints"], unverified]


def test_plan_site_shows_what_each_burst_type_adds() -> None:
    result = CliRunner().invoke(app, ["plan-site", "dc1"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    line = next(x for x in result.stdout.splitlines() if x.startswith("burst "))
    fleet = plan_fleet(load_inventory("dc1"), "inventories/dc1/nodes.yaml")
    for choice in fleet.instances:
        assert f"{choice.name} ({choice.capacity:.2f})" in line
    assert "p5e.48xlarge (3.40)" in line and "g6e.12xlarge (0.31)" in line

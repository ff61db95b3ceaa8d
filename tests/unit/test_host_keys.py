"""Host keys in the inventory: typed in the model, and what Ansible and pyinfra are told to check."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpufleet.inventory.load import inventory_from_data
from gpufleet.model.errors import InputError
from gpufleet.provision import connection
from tests.conftest import INVENTORIES, REPO

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFFJF0j+tyyHT1+Ce4TTMR9AFYbj0Cz/QKNbpr3p8yBF"
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBGPXDZn/7KA6r4Z5NYlhhgO1G1Xd5lAhr"
    "RJtt6KbeRb+yVgW47ltsaT6DcVmX35XttooKEVHQaISTtMiaUwu1EM="
)


def test_a_host_key_as_ssh_keygen_writes_it_is_accepted(dc1: dict[str, Any]) -> None:
    dc1["nodes"][0]["ssh_host_key"] = ED25519
    dc1["nodes"][1]["ssh_host_key"] = ECDSA
    inv = inventory_from_data(dc1, "nodes.yaml")
    assert [n.ssh_host_key for n in inv.nodes[:3]] == [ED25519, ECDSA, None]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (ED25519 + " root@vm", "String should match pattern"),  # a comment: one key, nothing after it
        (ED25519 + "\n@cert-authority * " + ED25519, "String should match pattern"),  # a second line
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "String should match pattern"),
        ("ssh-rsa " + ED25519.split()[1], "the key says ssh-rsa but holds 'ssh-ed25519'"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFFJF0j+tyyHT1+Ce4TTMR9AFYbj0Cz/QKNbpr3p8yB", "not base64"),
        ("ssh-ed25519 " + base64.b64encode(b"x" * 40).decode(), "holds"),
    ],
)
def test_a_key_that_is_not_one_public_host_key_is_bad_input(
    dc1: dict[str, Any], value: str, why: str
) -> None:
    dc1["nodes"][2]["ssh_host_key"] = value
    with pytest.raises(InputError) as exc:
        inventory_from_data(dc1, "inventories/dc1/nodes.yaml")
    (line,) = exc.value.lines()
    assert line.startswith("inventories/dc1/nodes.yaml: nodes[2].ssh_host_key: ") and why in line


def test_known_hosts_name_each_node_by_hostname_and_address(dc1: dict[str, Any], tmp_path: Path) -> None:
    dc1["nodes"][0]["ssh_host_key"] = ED25519
    inv = inventory_from_data(dc1, "nodes.yaml")
    node = inv.nodes[0]
    assert connection.known_hosts(inv) == f"{node.hostname},{node.management_ip} {ED25519}\n"
    assert connection.known_hosts(inv, 2222) == (
        f"[{node.hostname}]:2222,[{node.management_ip}]:2222 {ED25519}\n"
    )


def test_pyinfra_and_ansible_check_strictly_against_the_inventory(
    dc1: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "REPO_ROOT", tmp_path)
    dc1["nodes"][0]["ssh_host_key"] = ED25519
    inv = inventory_from_data(dc1, "nodes.yaml")
    known = tmp_path / "out" / "dc1" / "known_hosts"
    assert connection.pyinfra_ssh_data(inv) == {
        "ssh_known_hosts_file": str(known),
        "ssh_strict_host_key_checking": "yes",
    }
    assert known.read_text() == connection.known_hosts(inv)
    assert connection.ansible_ssh_vars(inv) == {
        "ansible_host_key_checking": True,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes",
    }
    # A key removed from the inventory is gone from the file too: nothing stays trusted by default.
    dc1["nodes"][0].pop("ssh_host_key")
    connection.pyinfra_ssh_data(inventory_from_data(dc1, "nodes.yaml"))
    assert known.read_text() == ""


def test_the_ansible_inventory_carries_strict_checking_to_every_real_host() -> None:
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-inventory"),
            "-i",
            str(INVENTORIES / "ansible_inventory.py"),
            "--list",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "GPUFLEET_SITE": "dc1", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"},
        cwd="/",
    )
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    for host in hostvars.values():
        assert host["ansible_host_key_checking"] is True
        assert "-o StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
        assert "UserKnownHostsFile=" in host["ansible_ssh_common_args"]


def test_the_lab_keeps_its_own_known_hosts() -> None:
    from gpufleet.inventory.load import load_inventory

    lab = load_inventory("lab")
    assert connection.ansible_ssh_vars(lab) == {}
    data = connection.pyinfra_ssh_data(lab)
    assert data["ssh_known_hosts_file"].endswith("/ssh/known_hosts")
    assert data["ssh_strict_host_key_checking"] == "yes"

"""How the tools reach a site's hosts, and which host keys they accept.

The lab keeps its own key and known hosts (written by `gpufleet lab up`). On every other site the
known hosts come from the inventory (`nodes[].ssh_host_key`), written to `out/<site>/known_hosts`,
and pyinfra, Ansible and testinfra check strictly against that file: a node without a key in the
inventory, or with another key, is refused on the first connection instead of trusted.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from gpufleet.inventory.load import REPO_ROOT
from gpufleet.lab.paths import LabPaths
from gpufleet.model.site import Inventory, Node

# sshd listens here on every real site; only a test's own server listens elsewhere.
SSH_PORT = 22


def known_hosts(inv: Inventory, port: int = SSH_PORT) -> str:
    """known_hosts lines, by hostname and address, for the nodes whose inventory holds a host key."""

    def names(node: Node) -> str:
        both = [node.hostname, str(node.management_ip)]
        return ",".join(both if port == SSH_PORT else [f"[{n}]:{port}" for n in both])

    return "".join(f"{names(n)} {n.ssh_host_key}\n" for n in inv.nodes if n.ssh_host_key)


def site_known_hosts(inv: Inventory, port: int = SSH_PORT) -> Path:
    """Write the site's known hosts from its inventory (replacing whatever was there) and return the file."""
    out = REPO_ROOT / "out" / inv.site.name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "known_hosts"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".known_hosts.")
    with os.fdopen(fd, "w") as f:
        f.write(known_hosts(inv, port))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def pyinfra_ssh_data(inv: Inventory, port: int = SSH_PORT) -> dict[str, Any]:
    """Host data for pyinfra's SSH connector: a known hosts file and strict checking, always."""
    if inv.site.name == "lab":
        paths = LabPaths.default()
        return {
            "ssh_key": str(paths.ssh_key),
            "ssh_known_hosts_file": str(paths.known_hosts),
            "ssh_strict_host_key_checking": "yes",
        }
    return {"ssh_known_hosts_file": str(site_known_hosts(inv, port)), "ssh_strict_host_key_checking": "yes"}


def ansible_ssh_vars(inv: Inventory, port: int = SSH_PORT) -> dict[str, Any]:
    """Host variables for Ansible (and testinfra, which reads them) on a site other than the lab.

    Ansible puts its own `StrictHostKeyChecking=no` first when host key checking is off, and ssh
    takes the first value it is given, so checking is switched on here too.
    """
    if inv.site.name == "lab":
        return {}
    path = shlex.quote(str(site_known_hosts(inv, port)))
    return {
        "ansible_host_key_checking": True,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={path} -o StrictHostKeyChecking=yes",
    }


def ansible_ssh_env(site: str) -> dict[str, str]:
    """Environment for ansible-runner: the lab's SSH config (key, known hosts, connection reuse)."""
    if site != "lab":
        return {}
    paths = LabPaths.default()
    return {"ANSIBLE_SSH_ARGS": f"-F {paths.ssh_config}"}


def testinfra_ssh_args(site: str) -> list[str]:
    """pytest arguments for testinfra's SSH: the lab's own config (`-F`, so nothing else applies)."""
    if site != "lab":
        return []
    return [f"--ssh-config={LabPaths.default().ssh_config}"]

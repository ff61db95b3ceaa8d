"""How the tools reach a site's hosts: the lab's own key and known hosts, or the operator's SSH setup."""

from __future__ import annotations

from typing import Any

from gpufleet.lab.paths import LabPaths


def pyinfra_ssh_data(site: str) -> dict[str, Any]:
    """Host data for pyinfra's SSH connector. Real sites use the operator's agent and known hosts."""
    if site != "lab":
        return {}
    paths = LabPaths.default()
    return {
        "ssh_key": str(paths.ssh_key),
        "ssh_known_hosts_file": str(paths.known_hosts),
        "ssh_strict_host_key_checking": "yes",
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

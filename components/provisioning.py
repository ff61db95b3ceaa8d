"""The one seam between the dynamic providers and gpufleet.provision (pyinfra) / ansible-runner.

Imports happen at call time: the Pulumi program itself never loads pyinfra or Ansible, and a
preview never runs them. Only the providers' create, update and read come here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from gpufleet.inventory.load import REPO_ROOT


def _quiet(_host: str, _event: str) -> None:
    """Progress goes to the provider's result, not to the engine's log."""


def converge_node(site: str, hostname: str) -> list[str]:
    """Run the node's pyinfra deploy, then the gate on the node's own state; returns the operations
    that changed. Kubernetes membership and Ceph health are left to `gpufleet verify` once the
    cluster playbooks (which run after every node) have joined it: a new node cannot pass them yet."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.nodes import provision
    from gpufleet.verify import verify_site

    result = provision(load_inventory(site), [hostname], dry_run=False, on_event=_quiet)[0]
    if not result.ok:
        raise RuntimeError(f"{hostname}: node deploy failed: {result.error}")
    report = verify_site(site, [hostname], node_only=True)
    if not report.ok:
        failed = (
            "; ".join(f"{r.check}: {r.message}" for r in report.failed[:5]) or f"exit {report.returncode}"
        )
        raise RuntimeError(f"{hostname}: admission gate failed: {failed}")
    return result.changed


def pending_changes(site: str, hostname: str) -> list[str]:
    """What the deploy would change now (a pyinfra dry run): the node's drift from its plan."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.nodes import provision

    result = provision(load_inventory(site), [hostname], dry_run=True, on_event=_quiet)[0]
    if not result.ok:
        raise RuntimeError(f"{hostname}: cannot read facts: {result.error}")
    return result.changed


OUTPUT_PLAYBOOKS = Path(__file__).with_name("playbooks")
CEPH_CLIENT = "kubernetes"  # the ceph role's ceph_client_name: the key the CSI driver uses


def converge_cluster(site: str, component: str) -> dict[str, Any]:
    """Run `playbooks/<component>.yml` (gpufleet.provision.cluster, plan as extra vars); return its outputs."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.cluster import ceph_fsid, out_dir, run_playbook

    inv = load_inventory(site)
    result = run_playbook(inv, f"{component}.yml", _quiet)
    if not result.ok:
        raise RuntimeError(f"playbook {component}.yml on {site}: {'; '.join(result.failures[:5])}")
    if component == "ceph":
        # The role writes the client keyring on this controller; the fsid is derived from the site.
        return {
            "fsid": ceph_fsid(site),
            "client_key": keyring_key(out_dir(site) / f"ceph.client.{CEPH_CLIENT}.keyring"),
        }
    return run_cluster_playbook(site, f"{component}_outputs", OUTPUT_PLAYBOOKS)


def keyring_key(path: Path) -> str:
    """The `key = ...` of a Ceph keyring file."""
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "key":
            return value.strip()
    raise RuntimeError(f"{path}: no key")


def run_cluster_playbook(site: str, playbook: str, playbooks: Path) -> dict[str, Any]:
    """Run `<playbooks>/<playbook>.yml` through ansible-runner; returns what it exported with `set_stats`."""
    import ansible_runner

    from gpufleet.provision.connection import ansible_ssh_env

    with tempfile.TemporaryDirectory() as private:
        run = ansible_runner.run(
            private_data_dir=private,
            playbook=str(playbooks / f"{playbook}.yml"),
            inventory=str(REPO_ROOT / "inventories" / "ansible_inventory.py"),
            # This interpreter's bin first: ansible-playbook, and the inventory script's python3, are
            # the ones installed beside gpufleet.
            envvars={
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "GPUFLEET_SITE": site,
                **ansible_ssh_env(site),
            },
            quiet=True,
        )
        stats = [e for e in run.events if e.get("event") == "playbook_on_stats"]
        if run.status != "successful" or not stats:
            raise RuntimeError(f"playbook {playbook} on {site}: {run.status} (rc {run.rc})")
        exported: dict[str, Any] = stats[-1]["event_data"].get("artifact_data", {})
        return exported

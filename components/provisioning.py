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
    """Run the node's pyinfra deploy, then the admission gate; returns the operations that changed."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.nodes import provision
    from gpufleet.verify.runner import verify_site

    result = provision(load_inventory(site), [hostname], dry_run=False, on_event=_quiet)[0]
    if not result.ok:
        raise RuntimeError(f"{hostname}: node deploy failed: {result.error}")
    report = verify_site(site, [hostname])
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


def run_cluster_playbook(
    site: str, playbook: str, playbooks: Path = REPO_ROOT / "playbooks"
) -> dict[str, Any]:
    """Run `playbooks/<playbook>.yml` through ansible-runner; returns what it exported with `set_stats`."""
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

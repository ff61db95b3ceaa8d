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
from gpufleet.plan.expect import HostExpect
from gpufleet.plan.node import NodePlan


def _quiet(_host: str, _event: str) -> None:
    """Progress goes to the provider's result, not to the engine's log."""


def converge_node(site: str, hostname: str, address: str, plan: NodePlan, expect: HostExpect,
                  reboot_for: list[str], join: dict[str, list[str]],
                  kubeconfig: str | None = None) -> list[str]:  # fmt: skip
    """Carry out the node's own plan at its address: the pyinfra deploy, a reboot when the plan
    change or the deploy asks for one (and the wait until the node is back), the gate on the node's
    own state against the given expectations, then (a member) joining its clusters; returns what
    changed. A member of Kubernetes registers with the `gpufleet.io/unverified` taint and, its gate
    passed, is admitted through `kubeconfig` (`admit_nodes`)."""
    from gpufleet.provision.nodes import Target, provision_hosts
    from gpufleet.verify import verify_site

    target = {hostname: Target(address, plan, tuple(reboot_for))}
    result = provision_hosts(site, target, dry_run=False, on_event=_quiet)[0]
    if not result.ok:
        raise RuntimeError(f"{hostname}: node deploy failed: {result.error}")
    booted = provision_hosts(site, target, dry_run=False, on_event=_quiet, deploy="reboot")[0]
    if not booted.ok:
        raise RuntimeError(f"{hostname}: reboot failed or the node did not come back: {booted.error}")
    report = verify_site(site, [hostname], node_only=True, given=(address, expect))
    if not report.ok:
        failed = (
            "; ".join(f"{r.check}: {r.message}" for r in report.failed[:5]) or f"exit {report.returncode}"
        )
        raise RuntimeError(f"{hostname}: admission gate failed: {failed}")
    for component, core in join.items():
        join_cluster(site, component, hostname, core)
    admitted = admit_nodes(kubeconfig, {hostname: plan.labels}) if "kubernetes" in join and kubeconfig else []
    return result.changed + booted.changed + admitted


def admit_nodes(kubeconfig: str, labels: dict[str, dict[str, str]]) -> list[str]:
    """Admit each node (hostname → its planned labels) whose node-level gate has passed and that
    still carries the unverified taint, through `gpufleet admit`'s adapter: labels by strict
    server-side apply, the taint off, uncordon. The kubeconfig (a secret) is only ever in a 0600
    temporary file, never in a message."""
    from gpufleet.provision.membership import admit_registered, node_api

    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as f:
        f.write(kubeconfig)
        f.flush()
        api = node_api(Path(f.name))
        done = [(host, admit_registered(api, host, planned)) for host, planned in labels.items()]
    return [f"{host}: admitted ({'; '.join(steps)})" for host, steps in done if steps]


def pending_changes(site: str, hostname: str, address: str, plan: NodePlan) -> list[str]:
    """What the deploy would change now (a pyinfra dry run): the node's drift from its plan."""
    from gpufleet.provision.nodes import Target, provision_hosts

    result = provision_hosts(site, {hostname: Target(address, plan)}, dry_run=True, on_event=_quiet)[0]
    if not result.ok:
        raise RuntimeError(f"{hostname}: cannot read facts: {result.error}")
    return result.changed


def remove_node(site: str, plan: NodePlan, drain_timeout_s: float) -> list[str]:
    """Take a node out of its clusters before Pulumi forgets it: drain it (as far as disruption
    budgets allow, else fail and keep it) and delete it from Kubernetes, then take its OSDs out of
    Ceph and purge them once Ceph says they are safe to destroy. The machine itself is left as is."""
    from gpufleet.provision.membership import node_api, remove

    done = []
    if "kubelet" in plan.services:
        kubeconfig = run_cluster_playbook(site, "kubernetes_outputs", OUTPUT_PLAYBOOKS)["kubeconfig"]
        with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as f:
            f.write(kubeconfig)
            f.flush()
            report, deleted = remove(node_api(Path(f.name)), plan.hostname, drain_timeout_s)
        if not report.finished_in_time:
            why = "; ".join(report.blocked or report.left)
            raise RuntimeError(f"{plan.hostname}: drain did not finish, node kept: {why}")
        done.append(
            f"drained ({len(report.evicted)} pods) and {'deleted from' if deleted else 'not in'} Kubernetes"
        )
    if plan.ceph_osd_devices:
        facts = run_cluster_playbook(
            site, "ceph_remove_host", OUTPUT_PLAYBOOKS, {"ceph_remove_host": plan.hostname}
        )
        done.append(f"OSDs {', '.join(map(str, facts.get('purged_osds', []))) or 'none'} purged from Ceph")
    return done


OUTPUT_PLAYBOOKS = Path(__file__).with_name("playbooks")
CEPH_CLIENT = "kubernetes"  # the ceph role's ceph_client_name: the key the CSI driver uses


def converge_cluster(site: str, component: str, hosts: list[str]) -> dict[str, Any]:
    """Run `playbooks/<component>.yml` (gpufleet.provision.cluster, plan as extra vars) on the
    cluster's core `hosts` only; return its outputs. Members join by themselves (`join_cluster`)."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.cluster import ceph_fsid, run_playbook
    from gpufleet.provision.logs import out_dir

    inv = load_inventory(site)
    result = run_playbook(inv, f"{component}.yml", _quiet, limit=hosts)
    if not result.ok:
        raise RuntimeError(f"playbook {component}.yml on {site}: {'; '.join(result.failures[:5])}")
    if component == "ceph":
        # The role writes the client keyring on this controller; the fsid is derived from the site.
        facts = {
            "fsid": ceph_fsid(site),
            "client_key": keyring_key(out_dir(site) / f"ceph.client.{CEPH_CLIENT}.keyring"),
        }
    else:
        facts = run_cluster_playbook(site, f"{component}_outputs", OUTPUT_PLAYBOOKS)
    return facts


def join_cluster(site: str, component: str, hostname: str, core: list[str]) -> None:
    """A member joins: the cluster's playbook on the core and this one host (OSDs, kubeadm join)."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.cluster import run_playbook

    result = run_playbook(load_inventory(site), f"{component}.yml", _quiet, limit=[*core, hostname])
    if not result.ok:
        raise RuntimeError(f"{hostname}: joining {component} failed: {'; '.join(result.failures[:5])}")


def cluster_drift(site: str, component: str, hosts: list[str]) -> list[str]:
    """What the playbook would change now (Ansible check mode): the cluster's drift from its plan."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.provision.cluster import run_playbook

    result = run_playbook(load_inventory(site), f"{component}.yml", _quiet, check=True, limit=hosts)
    if result.failed_hosts and not result.changes:
        raise RuntimeError(f"playbook {component}.yml (check) on {site}: {'; '.join(result.failures[:5])}")
    return result.changes + [f"{h}: unreachable or failing" for h in result.failed_hosts]


def keyring_key(path: Path) -> str:
    """The `key = ...` of a Ceph keyring file."""
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "key":
            return value.strip()
    raise RuntimeError(f"{path}: no key")


def run_cluster_playbook(
    site: str, playbook: str, playbooks: Path, extravars: dict[str, Any] | None = None
) -> dict[str, Any]:
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
            extravars=extravars or {},
            quiet=True,
        )
        stats = [e for e in run.events if e.get("event") == "playbook_on_stats"]
        if run.status != "successful" or not stats:
            raise RuntimeError(f"playbook {playbook} on {site}: {run.status} (rc {run.rc})")
        exported: dict[str, Any] = stats[-1]["event_data"].get("artifact_data", {})
        return exported

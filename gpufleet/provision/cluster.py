"""Run the cross-node roles (playbooks/) through ansible-runner, with the site plan as variables.

Ansible owns what needs order across hosts (Ceph mons -> mgrs -> OSDs -> pools, kubeadm init ->
joins); the numbers come from gpufleet.plan, passed as extra variables, never restated in YAML.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from gpufleet.inventory.load import REPO_ROOT, display, inventories_dir, read_yaml
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory
from gpufleet.plan.node import kubeadm_registration, kubectl_label_args, kubectl_taint_arg, plan_node
from gpufleet.plan.site import plan_site
from gpufleet.provision.connection import ansible_ssh_env
from gpufleet.provision.logs import log_file, out_dir

PLAYBOOKS = REPO_ROOT / "playbooks"
COMPONENTS = ("ceph", "kubernetes")
# (host, task) as each host finishes a task ("failed: <task>" when it failed); ("", task) when
# the play starts a task.
Event = Callable[[str, str], None]


@dataclass
class PlayResult:
    playbook: str
    ok: bool
    seconds: float
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)  # host -> ok/changed/failed/...
    failures: list[str] = field(default_factory=list)
    # `host: task` for each task that changed (in check mode: would change).
    changes: list[str] = field(default_factory=list)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, c in self.hosts.items() if c.get("failures") or c.get("dark"))


def ceph_fsid(site: str) -> str:
    """Stable per site: a re-run finds the cluster it built, a rebuild of the site gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"gpufleet:{site}:ceph"))


def site_knobs(site: str) -> dict[str, Any]:
    """inventories/<site>/group_vars/all.yml: Ansible-only knobs, never plan values."""
    path = inventories_dir() / site / "group_vars" / "all.yml"
    if not path.exists():
        return {}
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(str(path), [Problem((), "a mapping of Ansible variables")])
    return dict(data)


def extravars(inv: Inventory) -> dict[str, Any]:
    plan = plan_site(inv)
    out: dict[str, Any] = {
        "gpufleet_site": inv.site.name,
        "kubernetes_plan": plan.kubernetes.model_dump(mode="json"),
        "kubernetes_nodes": {
            n.hostname: {
                "labels": (p := plan_node(inv, n)).labels,
                "taints": [t.model_dump(mode="json") for t in p.taints],
                "label_args": kubectl_label_args(p),
                "taint_args": [kubectl_taint_arg(t) for t in p.taints],
                "registration": kubeadm_registration(p),
            }
            for n in inv.nodes
        },
    }
    if plan.ceph is not None:
        out |= {
            "ceph_plan": plan.ceph.model_dump(mode="json"),
            "ceph_fsid": ceph_fsid(inv.site.name),
            "ceph_public_network": str(inv.site.networks.management.cidr),
            "ceph_client_keyring_dir": str(out_dir(inv.site.name)),
        }
    return out | site_knobs(inv.site.name)


class _UnsafeDumper(yaml.SafeDumper):
    """Strings that could hold Jinja (any `{`) tagged `!unsafe`: Ansible uses them as values and
    never evaluates them. Only those: ansible-core 2.19 resolves an `!unsafe 'true'` to a boolean
    (and `!unsafe '10'` to an integer), so a tag on every string would change plain values; a
    string without `{` has no Jinja delimiter and is a value either way."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    if "{" in text:
        return dumper.represent_scalar("!unsafe", text, style="'")
    return dumper.represent_str(text)


_UnsafeDumper.add_representer(str, _represent_str)


def unsafe_extravars(data: dict[str, Any]) -> str:
    """Extra variables as YAML in which no string (all come from inventories or knobs a
    contributor writes) can be evaluated by Jinja on the controller."""
    return yaml.dump(data, Dumper=_UnsafeDumper, sort_keys=True)


def run_playbook(
    inv: Inventory,
    playbook: str,
    on_event: Event,
    check: bool = False,
    extra: dict[str, Any] | None = None,
    limit: list[str] | None = None,
) -> PlayResult:
    site = inv.site.name
    env = {
        "GPUFLEET_SITE": site,
        "GPUFLEET_INVENTORIES": str(inventories_dir().resolve()),
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        # ansible-runner starts ansible-playbook by name: the one next to this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **ansible_ssh_env(site),
    }
    failures: list[str] = []
    changes: list[str] = []
    log = log_file(site, "cluster", Path(playbook).stem)
    transcript: list[str] = []

    def handle(event: dict[str, Any]) -> bool:
        if event.get("stdout"):
            transcript.append(event["stdout"])
        data = event.get("event_data", {})
        host, task = data.get("host"), data.get("task", "")
        kind = event.get("event", "")
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            on_event("", task)
        elif host and kind in ("runner_on_ok", "runner_on_skipped"):
            if kind == "runner_on_ok" and isinstance(data.get("res"), dict) and data["res"].get("changed"):
                changes.append(f"{host}: {task}")
            on_event(host, task)
        elif host and kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            # no_log tasks come back censored by Ansible itself, so no secret reaches this line.
            res = data.get("res") if isinstance(data.get("res"), dict) else {}
            detail = " ".join(str(res.get(k) or "") for k in ("msg", "stderr")).strip()
            first = detail.splitlines()[-1][-300:] if detail else ""
            failures.append(f"{host}: {task}: {first} (full text: {display(log)})")
            on_event(host, f"failed: {task}")
        return True

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpufleet-ansible-") as tmp:
        # ansible-runner passes env/extravars as `-e @file`; a dict would go as JSON on the
        # command line, where Ansible evaluates any `{{ }}` in it.
        (Path(tmp) / "env").mkdir()
        (Path(tmp) / "env" / "extravars").write_text(unsafe_extravars(extravars(inv) | (extra or {})))
        runner = ansible_runner.run(
            private_data_dir=tmp,
            playbook=str(PLAYBOOKS / playbook),
            inventory=str(REPO_ROOT / "inventories" / "ansible_inventory.py"),
            envvars=env,
            cmdline="--check" if check else None,
            limit=",".join(limit) if limit else None,
            event_handler=handle,
            quiet=True,
        )
        stats: dict[str, dict[str, int]] = runner.stats or {}
    # Ansible's own output, as ansible-playbook prints it (no_log tasks come censored).
    log.write_text("\n".join(transcript) + "\n")
    hosts: dict[str, dict[str, int]] = {}
    for key, per_host in stats.items():
        if isinstance(per_host, dict):
            for host, count in per_host.items():
                hosts.setdefault(host, {})[key] = int(count)
    ok = runner.rc == 0 and runner.status == "successful"
    if not ok and not failures:
        failures.append(
            f"ansible-playbook {playbook}: {runner.status} (rc {runner.rc}; full text: {display(log)})"
        )
    return PlayResult(playbook, ok, time.monotonic() - started, hosts, failures, changes)

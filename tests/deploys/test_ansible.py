"""Ansible: syntax of every playbook, ansible-lint (production profile), and the variables from the plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.inventory.load import load_inventory
from gpufleet.plan.site import CEPHFS_CLIENT, CEPHFS_GROUP, RBD_CLIENT, plan_site
from gpufleet.provision.cli import Component, plays
from gpufleet.provision.cluster import ceph_fsid, extravars

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_syntax(playbook: Path) -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", str(playbook)],
        cwd=ROOT,
        env={**os.environ, "GPUFLEET_SITE": "dc1", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_ansible_lint_production_profile() -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "roles", "playbooks"],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_role_declares_the_variables_it_defaults(role: Path) -> None:
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"][
        "options"
    ]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    assert set(defaults) <= set(specs), set(defaults) - set(specs)
    assert all(name.startswith(f"{role.name}_") for name in specs)


def test_ceph_variables_are_the_site_plan() -> None:
    inv = load_inventory("dc1")
    ceph = plan_site(inv).ceph
    assert ceph is not None
    xv = extravars(inv)
    assert xv["ceph_plan"]["pools"] == [p.model_dump(mode="json") for p in ceph.pools]
    assert xv["ceph_plan"]["mons"] == ceph.mons
    assert xv["ceph_fsid"] == ceph_fsid("dc1") != ceph_fsid("dc1-dr")
    gpu01 = xv["kubernetes_nodes"]["gpu01"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu01["taints"]
    unverified = {"key": "gpufleet.io/unverified", "value": "true", "effect": "NoSchedule"}
    # Registration carries the readiness taint; the taints every run re-applies do not.
    assert gpu01["registration"]["taints"] == [*gpu01["taints"], unverified]
    assert gpu01["taint_args"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert "gpufleet.io/gpu-model=H100-SXM-80GB" in gpu01["label_args"]


def test_lab_knobs_reach_the_roles_but_plan_values_stay_the_plans() -> None:
    xv = extravars(load_inventory("lab"))
    assert xv["ceph_osd_on_files"] is True
    assert xv["ceph_plan"]["pools"][0] == {
        "name": "rbd",
        "size": 3,
        "min_size": 2,
        "pg_num": 32,
        "crush_rule": "replicated-host",
        "application": "rbd",
    }


def test_plays_order_and_check_mode() -> None:
    assert plays(Component.all, lab=False) == [("ceph.yml", False), ("kubernetes.yml", False)]
    assert plays(Component.all, lab=True) == [("ceph.yml", False), ("kubernetes.yml", True)]
    assert plays(Component.ceph, lab=True) == [("ceph.yml", False)]


def _tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for task in tasks:
        out.append(task)
        out += _tasks(task.get("block", []) + task.get("rescue", []) + task.get("always", []))
    return out


def test_join_tokens_live_for_one_batch_and_secrets_stay_out_of_logs() -> None:
    role = ROOT / "roles/kubernetes"
    (joins,) = yaml.safe_load((role / "tasks/join.yml").read_text())
    create = next(t for t in joins["block"] if "create" in t["ansible.builtin.command"].get("argv", []))
    delete = next(
        t for t in joins["always"] if "delete" in t.get("ansible.builtin.command", {}).get("argv", [])
    )
    assert create["ansible.builtin.command"]["argv"][3:5] == ["--ttl", "{{ kubernetes_token_ttl }}"]
    assert "_kubernetes_token_out" in delete["ansible.builtin.command"]["argv"][-1]
    assert "_kubernetes_joins" in joins["when"], "a token is made only when a node of the batch joins"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    assert defaults["kubernetes_token_ttl"] in ("15m", "30m", "1h")
    secret = {"Run kubeadm init", "Create a bootstrap token for these joins", "Delete this run's bootstrap token",
              "Upload control-plane certificates under a new key", "Write the kubeadm join configuration"}  # fmt: skip
    tasks = _tasks([*yaml.safe_load((role / "tasks/init.yml").read_text()), joins])
    assert {t["name"] for t in tasks if t.get("no_log")} >= secret
    outputs = yaml.safe_load((ROOT / "components/playbooks/kubernetes_outputs.yml").read_text())[0]["tasks"]
    assert all(
        t.get("no_log")
        for t in outputs
        if "ansible.builtin.set_stats" in t or ("register" in t and "token" in t["register"])
    )
    # Commands with inventory values (labels, taints, disks, pools) are argument lists: nothing an
    # inventory says is split by a shell lexer. (Host names in the Ceph bootstrap still are; their
    # grammar has no separator.)
    ceph = ROOT / "roles/ceph/tasks"
    for path in [*role.glob("tasks/*.yml"), ceph / "osds.yml", ceph / "pools.yml", ceph / "client.yml"]:
        for task in _tasks(yaml.safe_load(path.read_text())):
            cmd = task.get("ansible.builtin.command", {})
            text = cmd.get("cmd", "") if isinstance(cmd, dict) else ""
            assert not any(v in text for v in ("kubernetes_nodes", "item", "ceph_plan")), (
                path.name,
                task["name"],
            )


def test_each_csi_client_gets_exactly_its_planned_caps(tmp_path: Path) -> None:
    """The role creates each planned client with `ceph auth get-or-create client.NAME TYPE CAPS ...`:
    render its argument list with Ansible itself from the plan, and check the CephFS driver's
    client is scoped to the model cache's file system (ceph-csi docs/capabilities.md) and the RBD
    driver's to the RBD pools, neither with a wildcard."""
    inv = load_inventory("dc1")
    ceph = plan_site(inv).ceph
    assert ceph is not None
    (task,) = yaml.safe_load((ROOT / "roles/ceph/tasks/client_one.yml").read_text())[:1]
    argv_expr = task["vars"]["_caps_argv"]
    rendered = {}
    for client in ceph.clients:
        out = tmp_path / f"{client.name}.json"
        proc = subprocess.run(
            [str(BIN / "ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.copy",
             "-a", f"content={{{{ ({argv_expr.strip().removeprefix('{{').removesuffix('}}')}) | to_json }}}} dest={out}",
             "-e", json.dumps({"_ceph_client": client.model_dump(mode="json"),
                               "ansible_python_interpreter": sys.executable})],
            cwd=ROOT, env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        argv = json.loads(out.read_text())
        assert dict(zip(argv[::2], argv[1::2], strict=True)) == client.caps
        rendered[client.name] = client.caps
    fs = ceph.filesystem.name
    assert rendered[CEPHFS_CLIENT] == {
        "mon": f"allow r fsname={fs}",
        "mgr": "allow rw",
        "osd": f"allow rw tag cephfs metadata={fs}, allow rw tag cephfs data={fs}",
        "mds": f"allow r fsname={fs} path=/volumes, allow rws fsname={fs} path=/volumes/{CEPHFS_GROUP}",
    }
    rbd_pools = [p.name for p in ceph.pools if p.application == "rbd"]
    assert rendered[RBD_CLIENT]["osd"] == ", ".join(f"profile rbd pool={p}" for p in rbd_pools)
    for name, caps in rendered.items():
        text = " ".join(caps.values())
        assert "*" not in text and "allow rwx" not in text, name
    assert "cephfs" not in " ".join(rendered[RBD_CLIENT].values())
    assert "rbd" not in " ".join(rendered[CEPHFS_CLIENT].values())

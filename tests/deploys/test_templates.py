"""Every template of every role, rendered by Ansible itself for every host of every site, parsed,
and checked against what reads it: kubeadm's v1beta4 configuration types and Ceph's INI syntax.

The kubeadm field sets below are kubeadm's own, from kubernetes/kubernetes
cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go (commit 1329935739c3aa007d23cb9a4dadfee9d59ff79b;
corev1.Taint from staging/src/k8s.io/api/core/v1/types.go; KubeletConfiguration.cgroupDriver from
staging/src/k8s.io/kubelet/config/v1beta1/types.go). kubeadm decodes its config strictly: an
unknown field is an error. What this cannot see: kubeadm's defaulting and its semantic
validation (e.g. a token's format is checked here by its regex, not by kubeadm).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.inventory.load import load_inventory
from gpufleet.plan.node import plan_node
from gpufleet.plan.site import plan_site
from gpufleet.provision.cluster import extravars, unsafe_extravars
from tests.conftest import SITES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOK = ROOT / "tests/deploys/playbooks/render_templates.yml"
TEMPLATES = sorted(ROOT.glob("roles/*/templates/*.j2"))

# type name -> {field: type name, or None for a scalar/list of scalars}; `[T]` is a list of T.
_ARG = {"name": None, "value": None}
_TAINT = {"key": None, "value": None, "effect": None, "timeAdded": None}
_ENDPOINT = {"advertiseAddress": None, "bindPort": None}
_TYPES: dict[str, dict[str, Any]] = {
    "InitConfiguration": {
        "apiVersion": None, "kind": None, "bootstrapTokens": None, "dryRun": None,
        "nodeRegistration": "NodeRegistrationOptions", "localAPIEndpoint": "APIEndpoint",
        "certificateKey": None, "skipPhases": None, "patches": None, "timeouts": None,
    },
    "ClusterConfiguration": {
        "apiVersion": None, "kind": None, "etcd": None, "networking": "Networking", "kubernetesVersion": None,
        "controlPlaneEndpoint": None, "apiServer": None, "controllerManager": None, "scheduler": None,
        "dns": None, "proxy": None, "certificatesDir": None, "imageRepository": None, "featureGates": None,
        "clusterName": None, "encryptionAlgorithm": None, "certificateValidityPeriod": None,
        "caCertificateValidityPeriod": None,
    },
    "JoinConfiguration": {
        "apiVersion": None, "kind": None, "dryRun": None, "nodeRegistration": "NodeRegistrationOptions",
        "caCertPath": None, "discovery": "Discovery", "controlPlane": "JoinControlPlane", "skipPhases": None,
        "patches": None, "timeouts": None,
    },
    "NodeRegistrationOptions": {
        "name": None, "criSocket": None, "taints": "[Taint]", "kubeletExtraArgs": "[Arg]",
        "ignorePreflightErrors": None, "imagePullPolicy": None, "imagePullSerial": None,
    },
    "Networking": {"serviceSubnet": None, "podSubnet": None, "dnsDomain": None},
    "APIEndpoint": _ENDPOINT,
    "JoinControlPlane": {"localAPIEndpoint": "APIEndpoint", "certificateKey": None},
    "Discovery": {"bootstrapToken": "BootstrapTokenDiscovery", "file": None, "tlsBootstrapToken": None},
    "BootstrapTokenDiscovery": {
        "token": None, "apiServerEndpoint": None, "caCertHashes": None, "unsafeSkipCAVerification": None,
    },
    "Taint": _TAINT,
    "Arg": _ARG,
    "KubeletConfiguration": {"apiVersion": None, "kind": None, "cgroupDriver": None},
}  # fmt: skip
# Fields without `omitempty` in the Go types: kubeadm needs them (taints: nil means "default taints").
_REQUIRED = {
    "JoinConfiguration": {"discovery"},
    "NodeRegistrationOptions": {"taints"},
    "BootstrapTokenDiscovery": {"token"},
    "Arg": {"name", "value"},
    "Taint": {"key", "effect"},
}
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")  # kubeadm's BootstrapTokenPattern


def _check(value: Any, type_name: str, where: str) -> list[str]:
    if type_name.startswith("["):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, v in enumerate(value) for e in _check(v, type_name[1:-1], f"{where}[{i}]")]
    fields = _TYPES[type_name]
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({type_name})"]
    errors = [f"{where}.{k}: unknown field of {type_name}" for k in value if k not in fields]
    errors += [
        f"{where}.{k}: required by {type_name}" for k in _REQUIRED.get(type_name, ()) if k not in value
    ]
    for key, sub in fields.items():
        if sub is not None and key in value and value[key] is not None:
            errors += _check(value[key], sub, f"{where}.{key}")
    return errors


def _templates(site: str) -> list[Path]:
    """Every role's templates, where the role runs: a site without Ceph runs no ceph role."""
    ceph = plan_site(load_inventory(site)).ceph is not None
    return [t for t in TEMPLATES if ceph or t.parent.parent.name != "ceph"]


def _render(site: str, out: Path, data: str, limit: str | None = None) -> subprocess.CompletedProcess[str]:
    xv = out / "extravars.yml"
    xv.write_text(data)
    return subprocess.run(
        [str(BIN / "ansible-playbook"), str(PLAYBOOK), "-i", str(ROOT / "inventories/ansible_inventory.py"),
         "-c", "local", "-e", f"@{xv}",
         "-e", json.dumps({"render_out": str(out), "render_templates": [str(t) for t in _templates(site)],
                           "render_defaults": [str(p) for p in ROOT.glob("roles/*/defaults/main.yml")],
                           "ansible_python_interpreter": sys.executable}),
         *(["--limit", limit] if limit else [])],
        cwd=ROOT,
        env={**os.environ, "GPUFLEET_SITE": site, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _rendered(out: Path) -> dict[str, dict[str, str]]:
    """host -> `role/file` -> rendered text."""
    data = json.loads((out / "rendered.json").read_text())
    return {
        host: {
            f"{Path(t).parent.parent.name}/{Path(t).name.removesuffix('.j2')}": text for t, text in by.items()
        }
        for host, by in data.items()
    }


@pytest.mark.parametrize("site", SITES)
def test_every_template_renders_and_parses_for_every_host(site: str, tmp_path: Path) -> None:
    inv = load_inventory(site)
    proc = _render(site, tmp_path, unsafe_extravars(extravars(inv)))
    assert proc.returncode == 0, proc.stdout[-3000:]
    k8s = plan_site(inv).kubernetes
    rendered = _rendered(tmp_path)
    assert set(rendered) == {n.hostname for n in inv.nodes}
    for node in inv.nodes:
        host = rendered[node.hostname]
        assert set(host) == {f"{t.parent.parent.name}/{t.name.removesuffix('.j2')}" for t in _templates(site)}
        if "ceph/ceph.conf" in host:
            conf = configparser.ConfigParser()
            conf.read_string(host["ceph/ceph.conf"])
            assert conf["global"]["auth_cluster_required"] == "cephx"
            assert conf["global"]["mon_initial_members"].split(",") == plan_site(inv).ceph.mons  # type: ignore[union-attr]
        plan = plan_node(inv, node)
        for name in ("kubernetes/kubeadm-init.yaml", "kubernetes/kubeadm-join.yaml"):
            docs = list(yaml.safe_load_all(host[name]))
            errors = [e for d in docs for e in _check(d, d["kind"], f"{name}:{d['kind']}")]
            assert errors == [], errors
            assert all(
                d["apiVersion"].endswith(("kubeadm.k8s.io/v1beta4", "kubelet.config.k8s.io/v1beta1"))
                for d in docs
            )
            registration = docs[0]["nodeRegistration"]
            assert registration["name"] == node.hostname
            assert registration["taints"] == [t.model_dump(mode="json") for t in plan.registration_taints]
            (labels,) = [a["value"] for a in registration["kubeletExtraArgs"] if a["name"] == "node-labels"]
            assert dict(kv.split("=", 1) for kv in labels.split(",")) == plan.labels
        init_docs = list(yaml.safe_load_all(host["kubernetes/kubeadm-init.yaml"]))
        assert init_docs[1]["networking"] == {"podSubnet": k8s.pod_cidr, "serviceSubnet": k8s.service_cidr}
        join = yaml.safe_load(host["kubernetes/kubeadm-join.yaml"])
        assert TOKEN.fullmatch(join["discovery"]["bootstrapToken"]["token"])
        assert ("controlPlane" in join) == (node.hostname in k8s.control_planes)


def _hostile(site: str) -> dict[str, Any]:
    """The plan's variables with what the model refuses slipped in, as if a check were missing."""
    xv = extravars(load_inventory(site))
    node = xv["kubernetes_nodes"]["cp01"]
    node["registration"]["taints"][0]["value"] = "{{ lookup('pipe', 'touch ' ~ render_out ~ '/pwned') }}"
    node["registration"]["kubeletExtraArgs"][0]["value"] = 'x"\nignorePreflightErrors: [all]\n#'
    return xv


def test_no_plan_value_is_evaluated_or_breaks_the_yaml(tmp_path: Path) -> None:
    proc = _render("dc1", tmp_path, unsafe_extravars(_hostile("dc1")), limit="cp01")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not (tmp_path / "pwned").exists(), "a variable was evaluated as a template on the controller"
    join = yaml.safe_load(_rendered(tmp_path)["cp01"]["kubernetes/kubeadm-join.yaml"])
    assert "ignorePreflightErrors" not in join["nodeRegistration"]
    assert join["nodeRegistration"]["taints"][0]["value"].startswith("{{ lookup(")
    assert join["nodeRegistration"]["kubeletExtraArgs"][0]["value"].startswith('x"\nignore')


def test_the_same_variables_without_unsafe_are_evaluated(tmp_path: Path) -> None:
    """The control: passed as plain YAML (as ansible-runner passes a dict), Ansible runs the lookup.
    This is the fault the !unsafe tagging closes, seen by the same test."""
    proc = _render("dc1", tmp_path, yaml.safe_dump(_hostile("dc1")), limit="cp01")
    assert (tmp_path / "pwned").exists(), proc.stdout[-2000:]

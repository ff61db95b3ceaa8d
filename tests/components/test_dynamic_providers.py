"""The dynamic providers' own logic (check, diff), their pickling, and the ansible-runner seam.

create/update/read converge real hosts through gpufleet.provision; they run against lab hosts.
"""

from __future__ import annotations

import base64
from pathlib import Path

import dill
import pytest

from components.onprem import NodeSpec, node_inputs
from components.providers import ClusterProvider, NodeProvider
from components.provisioning import OUTPUT_PLAYBOOKS, keyring_key, run_cluster_playbook
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.node import plan_node
from gpufleet.preview.program import Graph, reveal

INV = load_inventory("dc1")
NODE = INV.nodes[3]
PLAN = plan_node(INV, NODE)
PROPS = node_inputs("dc1", NodeSpec(NODE.hostname, str(NODE.management_ip), PLAN))


def test_check_accepts_a_plan_with_its_own_digest() -> None:
    result = NodeProvider().check({}, PROPS)
    assert result.failures == [] and result.inputs == PROPS


@pytest.mark.parametrize(
    ("change", "property_"),
    [
        ({"digest": "0" * 16}, "digest"),
        ({"hostname": "gpu99"}, "hostname"),
        ({"plan": '{"hostname": "gpu01"}'}, "plan"),
        ({"pinned": {"nvidia-driver-580-open": "535.183.01-*"}}, "pinned"),
    ],
)
def test_check_rejects_inputs_that_are_not_the_plan(change: dict[str, object], property_: str) -> None:
    failures = NodeProvider().check({}, {**PROPS, **change}).failures
    assert [f.property for f in failures] == [property_]


def test_a_new_plan_updates_in_place() -> None:
    news = {
        **PROPS,
        "pinned": {**PROPS["pinned"], "libnccl2": "2.29.1-*+cuda13.0"},
        "digest": "feedfeedfeedfeed",
    }
    diff = NodeProvider().diff("id", {**PROPS, "drift": []}, news)
    assert diff.changes is True and diff.replaces == []


def test_an_unchanged_converged_node_has_no_diff() -> None:
    diff = NodeProvider().diff("id", {**PROPS, "changed": ["x"], "drift": []}, PROPS)
    assert diff.changes is False and diff.replaces == []


def test_drift_found_by_refresh_is_a_change_even_with_the_same_plan() -> None:
    olds = {**PROPS, "drift": ["apt.packages nvidia-driver-580-open 535.183.01-0ubuntu1 -> 580.159.04-*"]}
    diff = NodeProvider().diff("id", olds, PROPS)
    assert diff.changes is True and diff.replaces == []


def test_another_hostname_is_another_machine() -> None:
    diff = NodeProvider().diff("id", PROPS, {**PROPS, "hostname": "gpu99"})
    assert diff.changes is True and diff.replaces == ["hostname"] and diff.delete_before_replace


def test_cluster_provider_requires_its_spec_and_diffs_on_it() -> None:
    provider = ClusterProvider("ceph", ("fsid", "client_key"))
    assert [f.property for f in provider.check({}, {"site": "dc1"}).failures] == ["spec", "digest"]
    olds = {"site": "dc1", "spec": {"pools": 2}, "digest": "a", "fsid": "f"}
    assert provider.diff("id", olds, {**olds}).changes is False
    moved = provider.diff("id", olds, {**olds, "spec": {"pools": 3}, "digest": "b"})
    assert moved.changes is True and moved.replaces == []


def test_the_pickled_providers_load_back(graphs: dict[str, Graph]) -> None:
    """What the engine stores is what the provider process will run: it must unpickle."""
    graph = graphs["dc1-prod"]
    dynamic = [r for r in graph.resources if r.type.startswith("pulumi-python:dynamic/")]
    assert len(dynamic) == len(INV.nodes) + 2
    for r in dynamic:
        provider = dill.loads(base64.b64decode(reveal(r.inputs["__provider"])))
        expected = NodeProvider if r.type.endswith(":Node") else ClusterProvider
        assert type(provider) is expected
    kube = next(r for r in dynamic if r.type.endswith(":KubernetesCluster"))
    provider = dill.loads(base64.b64decode(reveal(kube.inputs["__provider"])))
    assert provider.playbook == "kubernetes"
    assert provider.check({}, reveal(kube.inputs)).failures == []


def test_cluster_playbook_exports_come_back_through_ansible_runner(tmp_path: Path) -> None:
    """A real ansible-runner run of a local playbook: what it set_stats-exports is the output."""
    (tmp_path / "probe.yml").write_text(
        "- hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.set_stats:\n"
        "        data: {fsid: 0b5c9f6e-1111-4a4a-9c9c-2f2f2f2f2f2f, client_key: AQkey==}\n"
        "        per_host: false\n"
    )
    facts = run_cluster_playbook("lab", "probe", playbooks=tmp_path)
    assert facts == {"fsid": "0b5c9f6e-1111-4a4a-9c9c-2f2f2f2f2f2f", "client_key": "AQkey=="}


def test_a_failing_playbook_raises(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        "  tasks:\n    - ansible.builtin.fail: {msg: no}\n"
    )
    with pytest.raises(RuntimeError, match="playbook broken on lab: failed"):
        run_cluster_playbook("lab", "broken", playbooks=tmp_path)


def test_serializing_providers_leaves_the_pickler_unwrapped(graphs: dict[str, Graph]) -> None:
    """pulumi.dynamic wraps the pickler per provider it serializes; unwrapped, 1,000 nodes overflow."""
    import pickle

    from components import providers

    assert graphs["dc1-prod"].by_type("pulumi-python:dynamic/gpufleet:Node")
    assert pickle._Pickler._batch_setitems is providers._BATCH_SETITEMS  # type: ignore[attr-defined]


def test_the_client_key_is_read_from_the_keyring_the_role_writes(tmp_path: Path) -> None:
    keyring = tmp_path / "ceph.client.kubernetes.keyring"
    keyring.write_text("[client.kubernetes]\n\tkey = AQBsb2NhbGtleWZvcnRlc3Rpbmc9PQ==\n")
    assert keyring_key(keyring) == "AQBsb2NhbGtleWZvcnRlc3Rpbmc9PQ=="
    keyring.write_text("[client.kubernetes]\n")
    with pytest.raises(RuntimeError, match="no key"):
        keyring_key(keyring)


def test_the_outputs_playbook_passes_ansible_lint_production() -> None:
    import subprocess
    import sys

    playbook = OUTPUT_PLAYBOOKS / "kubernetes_outputs.yml"
    check = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-lint"), "--profile", "production", str(playbook)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr

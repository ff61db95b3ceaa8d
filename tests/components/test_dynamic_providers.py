"""The dynamic providers' own logic (check, diff), their pickling, and the ansible-runner seam.

create/update/read converge real hosts through gpufleet.provision; they run against lab hosts.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dill
import pytest
import yaml

from components.cluster import KUBERNETES_OUTPUTS
from components.onprem import NodeSpec, node_inputs
from components.providers import ClusterProvider, NodeProvider
from components.provisioning import OUTPUT_PLAYBOOKS, keyring_key, run_cluster_playbook
from gpufleet.inventory.load import load_inventory
from gpufleet.kubeapi import NodeApi
from gpufleet.plan.expect import host_expectations
from gpufleet.plan.node import READINESS_TAINT, NodePlan, plan_node
from gpufleet.preview.program import Graph, Secret, reveal
from tests.k8sapi import KubeApiFake, kube_fake  # noqa: F401

INV = load_inventory("dc1")
NODE = INV.nodes[3]
PLAN = plan_node(INV, NODE)
CORE = ["cp01", "cp02", "cp03"]
PROPS = node_inputs(
    "dc1",
    NodeSpec(
        NODE.hostname, str(NODE.management_ip), PLAN, host_expectations(INV, NODE), {"kubernetes": CORE}
    ),
    "apiVersion: v1\nkind: Config\n",
)


def test_check_accepts_a_plan_with_its_own_digest() -> None:
    result = NodeProvider().check({}, PROPS)
    assert result.failures == [] and result.inputs == PROPS


@pytest.mark.parametrize(
    ("change", "property_"),
    [
        ({"digest": "0" * 16}, "digest"),
        ({"hostname": "gpu99"}, "hostname expect"),
        ({"plan": '{"hostname": "gpu01"}'}, "plan"),
        ({"pinned": {"nvidia-driver-580-open": "535.183.01-*"}}, "pinned"),
        ({"expect": '{"hostname": "gpu01"}'}, "expect"),
        ({"join": {"slurm": CORE}}, "join"),
        ({"join": {"kubernetes": []}}, "join"),
        ({"kubeconfig": None}, "kubeconfig"),
    ],
)
def test_check_rejects_inputs_that_are_not_the_plan(change: dict[str, object], property_: str) -> None:
    failures = NodeProvider().check({}, {**PROPS, **change}).failures
    assert [f.property for f in failures] == property_.split()


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
    assert [f.property for f in provider.check({}, {"site": "dc1"}).failures] == ["spec", "digest", "hosts"]
    olds = {"site": "dc1", "spec": {"pools": 2}, "digest": "a", "hosts": ["st01"], "fsid": "f"}
    assert provider.diff("id", olds, {**olds}).changes is False
    moved = provider.diff("id", olds, {**olds, "spec": {"pools": 3}, "digest": "b"})
    assert moved.changes is True and moved.replaces == []
    drifted = provider.diff("id", {**olds, "drift": ["st01: Pools"]}, olds)
    assert drifted.changes is True and drifted.replaces == []


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


# --- what create, update, read and delete carry out (the seam to pyinfra/Ansible recorded) ------


@pytest.fixture
def seam(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """components.provisioning's entry points, recorded instead of reaching hosts."""
    from components import provisioning

    calls: list[tuple[str, tuple[Any, ...]]] = []

    def record(name: str, answer: Any) -> Any:
        def fn(*args: Any) -> Any:
            calls.append((name, args))
            return answer

        return fn

    monkeypatch.setattr(provisioning, "converge_node", record("converge_node", ["ops"]))
    monkeypatch.setattr(provisioning, "pending_changes", record("pending_changes", ["drift"]))
    monkeypatch.setattr(provisioning, "remove_node", record("remove_node", ["removed"]))
    monkeypatch.setattr(provisioning, "cluster_drift", record("cluster_drift", ["st01: Pools"]))
    return calls


def _props_for(plan: NodePlan, address: str = "10.9.9.9") -> dict[str, Any]:
    spec = NodeSpec(plan.hostname, address, plan, host_expectations(INV, NODE), {"kubernetes": CORE})
    return node_inputs("dc1", spec, "apiVersion: v1\nkind: Config\n")


def test_create_carries_out_its_own_plan_not_the_inventorys(seam: list[Any]) -> None:
    # A plan the inventory on disk does not hold, at an address it does not list.
    own = PLAN.model_copy(update={"sysctl": {**PLAN.sysctl, "vm.max_map_count": "2097152"}})
    props = _props_for(own)
    assert NodeProvider().check({}, props).failures == []
    result = NodeProvider().create(props)
    (name, (site, host, address, plan, expect, reboot_for, join, kubeconfig)) = seam[0]
    assert (name, site, host, address) == ("converge_node", "dc1", NODE.hostname, "10.9.9.9")
    assert plan == own and plan.sysctl["vm.max_map_count"] == "2097152"
    assert expect == host_expectations(INV, NODE)
    assert reboot_for == [], "a new node: the deploy's own marker decides"
    assert join == {"kubernetes": CORE} and kubeconfig == props["kubeconfig"]
    assert result.outs["changed"] == ["ops"] and result.outs["drift"] == []


def test_a_driver_change_reboots_before_the_gate(seam: list[Any]) -> None:
    old = PLAN.model_copy(
        update={
            "packages": [
                p.model_copy(update={"name": "nvidia-driver-570-open", "version": "570.195.03-*"})
                if p.name.startswith("nvidia-driver-")
                else p
                for p in PLAN.packages
            ]
        }
    )
    NodeProvider().update("id", _props_for(old), PROPS)
    reboot_for = seam[0][1][5]
    assert reboot_for == ["NVIDIA driver 570.195.03-* → 580.159.04-*"]
    sysctl_only = PLAN.model_copy(update={"sysctl": {**PLAN.sysctl, "vm.swappiness": "1"}})
    NodeProvider().update("id", PROPS, _props_for(sysctl_only))
    assert seam[1][1][5] == [], "a sysctl takes effect without a boot"


def test_refresh_reads_drift_against_its_own_plan_and_address(seam: list[Any]) -> None:
    own = PLAN.model_copy(update={"kernel_cmdline": [*PLAN.kernel_cmdline, "pci=realloc"]})
    read = NodeProvider().read("dc1/gpu01", _props_for(own, "10.1.2.3"))
    assert seam == [("pending_changes", ("dc1", NODE.hostname, "10.1.2.3", own))]
    assert read.outs["drift"] == ["drift"]


def test_delete_takes_the_node_out_of_its_clusters(seam: list[Any]) -> None:
    NodeProvider().delete("dc1/gpu01", PROPS)
    assert seam == [("remove_node", ("dc1", PLAN, 1800.0))]


def test_deleting_a_control_plane_is_refused_and_changes_nothing(seam: list[Any]) -> None:
    """A drain and a deleted Node object leave a control plane's etcd member and static pods behind
    (its kubelet still runs): the etcd cluster would count a member that is gone for good."""
    cp = INV.node("cp03")
    props = node_inputs("dc1", NodeSpec(cp.hostname, str(cp.management_ip), plan_node(INV, cp),
                                        host_expectations(INV, cp), {}))  # fmt: skip
    with pytest.raises(RuntimeError, match=r"cp03: a control plane .*etcd member"):
        NodeProvider().delete("dc1/cp03", props)
    assert seam == []


def test_cluster_refresh_reads_drift_in_check_mode_on_its_core_hosts(seam: list[Any]) -> None:
    provider = ClusterProvider("ceph", ("fsid", "client_key"))
    props = {"site": "dc1", "spec": {"pools": 2}, "digest": "a", "hosts": ["st01", "st02", "st03"]}
    read = provider.read("dc1/ceph", props)
    assert seam == [("cluster_drift", ("dc1", "ceph", ["st01", "st02", "st03"]))]
    assert read.outs["drift"] == ["st01: Pools"]
    assert provider.diff("dc1/ceph", read.outs, props).changes is True


def _dependents(graph: Graph, urn: str) -> set[str]:
    """Every resource that waits for `urn`, directly or through others (dependencies and parents)."""
    waits: dict[str, set[str]] = {}
    for r in graph.resources:
        for d in [*r.dependencies, r.parent]:
            waits.setdefault(d, set()).add(r.urn)
    out: set[str] = set()
    todo = [urn]
    while todo:
        for nxt in waits.get(todo.pop(), set()) - out:
            out.add(nxt)
            todo.append(nxt)
    return out


@pytest.mark.parametrize("stack", ["dc1-prod", "dc1-dr"])
def test_a_member_node_holds_back_nothing_but_itself(graphs: dict[str, Graph], stack: str) -> None:
    graph = graphs[stack]
    nodes = {r.inputs["hostname"]: r for r in graph.by_type("pulumi-python:dynamic/gpufleet:Node")}
    ceph = graph.by_type("pulumi-python:dynamic/gpufleet:CephCluster")
    kube = graph.by_type("pulumi-python:dynamic/gpufleet:KubernetesCluster")[0]
    gpu = [h for h in nodes if h.startswith("gpu")]
    assert gpu and all(_dependents(graph, nodes[h].urn) == set() for h in gpu)
    # Each cluster waits for its own core nodes, and the GPU nodes wait for the cluster they join.
    assert {d for d in kube.dependencies if d in {n.urn for n in nodes.values()}} == {
        nodes[h].urn for h in kube.inputs["hosts"]
    }
    assert kube.inputs["hosts"] == ["cp01", "cp02", "cp03"]
    if ceph:
        assert set(ceph[0].inputs["hosts"]) <= {n.hostname for n in INV.nodes if n.hostname.startswith("st")}
    for h in gpu:
        assert kube.urn in nodes[h].dependencies
        assert nodes[h].inputs["join"] == {"kubernetes": ["cp01", "cp02", "cp03"]}


def test_the_burst_join_token_has_a_bounded_ttl_and_is_reminted_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14 item 4: no `--ttl 0`. The outputs playbook mints the token with the provider's
    TTL; the provider stamps its expiry, and any `up` in the last REMINT_BEFORE_S of its life mints
    a new one (the burst stack then writes it to the SSM SecureString)."""
    from components import providers
    from components.cluster import BURST_TOKEN_TTL_S, KUBERNETES_OUTPUTS

    task = next(
        t for t in yaml.safe_load((OUTPUT_PLAYBOOKS / "kubernetes_outputs.yml").read_text())[0]["tasks"]
        if "token" in t.get("register", "")
    )  # fmt: skip
    argv = task["ansible.builtin.command"]["argv"]
    assert argv[:3] == ["kubeadm", "token", "create"] and "--ttl" in argv
    assert argv[argv.index("--ttl") + 1] == f"{BURST_TOKEN_TTL_S}s" and BURST_TOKEN_TTL_S <= 2 * 86400
    assert task.get("no_log") is True

    from components import provisioning

    facts = {"kubeconfig": "k", "join_token": "abcdef.0123456789abcdef", "ca_cert_hash": "sha256:00"}
    monkeypatch.setattr(provisioning, "converge_cluster", lambda *_: dict(facts))
    now = [1_000_000.0]
    monkeypatch.setattr(providers.time, "time", lambda: now[0])
    provider = ClusterProvider("kubernetes", KUBERNETES_OUTPUTS, token_ttl_s=BURST_TOKEN_TTL_S)
    props = {"site": "dc1", "spec": {"v": 1}, "digest": "a", "hosts": ["cp01"]}
    made = provider.create(props).outs
    assert made["join_token_expires"] == now[0] + BURST_TOKEN_TTL_S
    assert provider.diff("id", made, props).changes is False
    now[0] += BURST_TOKEN_TTL_S - providers.REMINT_BEFORE_S - 1
    assert provider.diff("id", made, props).changes is False
    now[0] += 2
    remint = provider.diff("id", made, props)
    assert remint.changes is True and remint.replaces == []
    # A provider without a token (Ceph) stamps nothing and never re-runs for it.
    assert "join_token_expires" not in ClusterProvider("ceph", ()).create(props).outs


# --- admission: what `gpufleet admit` does, done by the stack (against the recorded API) ---------


def _kubeconfig(fake: KubeApiFake) -> str:
    server = fake.core.api_client.configuration.host
    return (
        f"apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{server}'}}\n"
        "users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n"
        "current-context: c\n"
    )


def _register(fake: KubeApiFake, plan: NodePlan) -> None:
    """The node as kubeadm registers it: cordoned by the rolling play, with its registration taints."""
    fake.add_node(plan.hostname)
    api = NodeApi(fake.core)
    api.cordon(plan.hostname)
    for taint in plan.registration_taints:
        api.add_taint(plan.hostname, taint)


def _taint_keys(fake: KubeApiFake, host: str) -> list[str]:
    return [t["key"] for t in fake.nodes[host]["spec"].get("taints") or []]


def test_the_kubernetes_cluster_admits_its_control_planes_after_its_playbook(
    kube_fake: KubeApiFake,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from components import provisioning

    plans = {h: plan_node(INV, INV.node(h)) for h in CORE}
    for plan in plans.values():
        _register(kube_fake, plan)
    # cp03 was admitted in an earlier up and an operator has cordoned it since: left as it is.
    NodeApi(kube_fake.core).remove_taint("cp03", READINESS_TAINT.key)
    ran: list[str] = []

    def playbook(site: str, component: str, hosts: list[str]) -> dict[str, str]:
        ran.append(component)
        assert all(READINESS_TAINT.key in _taint_keys(kube_fake, h) for h in ("cp01", "cp02"))
        return {
            "kubeconfig": _kubeconfig(kube_fake),
            "join_token": "abcdef.0123456789abcdef",
            "ca_cert_hash": "x",
        }

    monkeypatch.setattr(provisioning, "converge_cluster", playbook)
    props = {"site": "dc1", "spec": {"x": 1}, "digest": "a", "hosts": CORE,
             "admit": {h: p.labels for h, p in plans.items()}}  # fmt: skip
    provider = ClusterProvider("kubernetes", KUBERNETES_OUTPUTS)
    assert provider.check({}, props).failures == []
    outs = provider.create(props).outs
    assert ran == ["kubernetes"]
    for host in ("cp01", "cp02"):
        node = kube_fake.nodes[host]
        assert _taint_keys(kube_fake, host) == [], "no taint left: the platform's pods schedule here"
        assert "unschedulable" not in node["spec"]
        assert plans[host].labels.items() <= node["metadata"]["labels"].items()
    assert kube_fake.nodes["cp03"]["spec"].get("unschedulable") is True
    assert [line.split(":")[0] for line in outs["admitted"]] == ["cp01", "cp02"]
    assert "token: t" not in " ".join(outs["admitted"]), "the kubeconfig stays out of what is shown"


def test_the_cluster_refuses_to_admit_a_host_it_does_not_build() -> None:
    provider = ClusterProvider("kubernetes", KUBERNETES_OUTPUTS)
    props = {"site": "dc1", "spec": {"x": 1}, "digest": "a", "hosts": CORE, "admit": {"gpu01": {}}}
    assert [f.property for f in provider.check({}, props).failures] == ["admit"]


@pytest.mark.parametrize("gate_passes", [True, False])
def test_a_member_is_admitted_once_its_gate_passed_and_it_joined(
    kube_fake: KubeApiFake,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    gate_passes: bool,
) -> None:
    """converge_node with only the host-facing calls replaced: the deploy and reboot (pyinfra), the
    host suite, and kubeadm join (which registers the node in the recorded API, tainted)."""
    from components import provisioning
    from gpufleet import verify
    from gpufleet.provision import nodes as provision_nodes
    from gpufleet.verify import CheckResult, VerifyReport

    plan = plan_node(INV, NODE)
    monkeypatch.setattr(
        provision_nodes, "provision_hosts", lambda *a, **k: [provision_nodes.HostResult(NODE.hostname)]
    )
    outcome = "passed" if gate_passes else "failed"
    report = VerifyReport(site="dc1", hosts=[NODE.hostname], returncode=0 if gate_passes else 1,
                          results=[CheckResult(host=NODE.hostname, check="gpu", part="node",
                                               outcome=outcome, message="8 GPUs")])  # fmt: skip
    monkeypatch.setattr(verify, "verify_site", lambda *a, **k: report)
    joined: list[str] = []

    def join(site: str, component: str, hostname: str, core: list[str]) -> None:
        joined.append(component)
        _register(kube_fake, plan)

    monkeypatch.setattr(provisioning, "join_cluster", join)
    props = node_inputs(
        "dc1",
        NodeSpec(NODE.hostname, "10.9.9.9", plan, host_expectations(INV, NODE), {"kubernetes": CORE}),
        _kubeconfig(kube_fake),
    )
    if not gate_passes:
        with pytest.raises(RuntimeError, match="admission gate failed: gpu: 8 GPUs"):
            NodeProvider().create(props)
        assert joined == [] and [c for c in kube_fake.calls if c[0] != "GET"] == [], "no join, no write"
        return
    outs = NodeProvider().create(props).outs
    assert joined == ["kubernetes"]
    assert _taint_keys(kube_fake, NODE.hostname) == [t.key for t in plan.taints] == ["nvidia.com/gpu"]
    assert "unschedulable" not in kube_fake.nodes[NODE.hostname]["spec"]
    assert outs["changed"][-1].startswith(f"{NODE.hostname}: admitted (labels ")
    # A later update (the node admitted, then cordoned by an operator) leaves it cordoned.
    NodeApi(kube_fake.core).cordon(NODE.hostname)
    monkeypatch.setattr(provisioning, "join_cluster", lambda *a: None)
    NodeProvider().update("id", props, props)
    assert kube_fake.nodes[NODE.hostname]["spec"].get("unschedulable") is True


def _upstream(graph: Graph, urn: str) -> set[str]:
    """Everything `urn` waits for: its dependencies (a component: all its descendants) and its
    provider's, transitively. A child does not wait for its parent's dependencies."""
    by_urn = {r.urn: r for r in graph.resources}
    children: dict[str, list[str]] = {}
    for r in graph.resources:
        children.setdefault(r.parent, []).append(r.urn)
    out: set[str] = set()
    todo = [urn]
    while todo:
        r = by_urn.get(todo.pop())
        if r is None:
            continue
        waits = [*r.dependencies, *([r.provider.rsplit("::", 1)[0]] if r.provider else [])]
        while waits:
            dep = waits.pop()
            if dep in out:
                continue
            out.add(dep)
            todo.append(dep)
            waits.extend(children.get(dep, []))
    return out


def _admitted_by(r: Any) -> set[str]:
    """The hosts a resource admits when it completes (what the provider tests above show it does)."""
    inputs = reveal(r.inputs)
    if r.type.endswith(":KubernetesCluster"):
        return set(inputs.get("admit") or {})
    if r.type.endswith(":Node") and "kubernetes" in inputs["join"] and inputs.get("kubeconfig"):
        return {inputs["hostname"]}
    return set()


def _tolerations(value: Any) -> list[dict[str, Any]]:
    """Every toleration a release's values or an object's pod template gives, wherever it sits."""
    if isinstance(value, dict):
        found = [t for t in value.get("tolerations") or [] if isinstance(t, dict)]
        return found + [t for k, v in value.items() if k != "tolerations" for t in _tolerations(v)]
    if isinstance(value, list):
        return [t for v in value for t in _tolerations(v)]
    return []


def _tolerates(tolerations: list[dict[str, Any]], taint: Any) -> bool:
    return any(
        (t.get("key") in (None, "", taint.key) if t.get("operator") == "Exists" else t.get("key") == taint.key
         and t.get("value", "") in ("", taint.value))
        and t.get("effect") in (None, "", taint.effect)
        for t in tolerations
    )  # fmt: skip


@pytest.mark.parametrize("stack", ["dc1-prod", "dc1-dr"])
def test_every_awaited_pod_finds_a_node_it_tolerates_when_it_is_created(
    graphs: dict[str, Graph], stack: str
) -> None:
    """The fault a first `pulumi up` hit: every node registers tainted `gpufleet.io/unverified`, and
    nothing admitted them before the platform, so its `atomic` releases waited on Pending pods and
    rolled back. For each awaited release and each non-GPU Deployment: some Kubernetes node must carry
    only taints its pods tolerate, counting as admitted only the nodes whose admitting resource it
    waits for. Cannot see: a chart's default tolerations, node selectors and affinity, resources."""
    from gpufleet.plan.site import plan_site

    graph = graphs[stack]
    inv = load_inventory(graph.get(graph.by_type("pulumi-python:dynamic/gpufleet:KubernetesCluster")[0].urn)
                         .inputs["site"])  # fmt: skip
    k8s_hosts = {*plan_site(inv).kubernetes.control_planes, *plan_site(inv).kubernetes.workers}
    plans = {h: plan_node(inv, inv.node(h)) for h in k8s_hosts}
    awaited = [r for r in graph.by_type("kubernetes:helm.sh/v3:Release") if reveal(r.inputs).get("atomic")]
    awaited += [
        r for r in graph.by_type("kubernetes:apps/v1:Deployment")
        if "nvidia.com/gpu" not in json.dumps(reveal(r.inputs)["spec"]["template"]["spec"].get("containers"))
    ]  # fmt: skip
    assert len(awaited) >= 8
    unschedulable = []
    for r in awaited:
        admitted = {h for u in _upstream(graph, r.urn) for h in _admitted_by(graph.get(u))}
        tolerations = _tolerations(reveal(r.inputs).get("values") or reveal(r.inputs).get("spec"))
        fits = [
            h for h, plan in plans.items()
            if all(_tolerates(tolerations, t) for t in (plan.taints if h in admitted else plan.registration_taints))
        ]  # fmt: skip
        if not fits:
            unschedulable.append(r.name)
    assert unschedulable == []


@pytest.mark.parametrize("stack", ["dc1-prod", "dc1-dr"])
def test_the_platform_waits_for_the_control_planes_admission_and_for_no_member(
    graphs: dict[str, Graph], stack: str
) -> None:
    graph = graphs[stack]
    kube = graph.by_type("pulumi-python:dynamic/gpufleet:KubernetesCluster")[0]
    assert set(reveal(kube.inputs)["admit"]) == set(kube.inputs["hosts"]) == {"cp01", "cp02", "cp03"}
    members = [r for r in graph.by_type("pulumi-python:dynamic/gpufleet:Node") if r.inputs["join"]]
    assert members and all(_admitted_by(m) == {m.inputs["hostname"]} for m in members
                           if "kubernetes" in m.inputs["join"])  # fmt: skip
    assert all(
        isinstance(m.inputs["kubeconfig"], Secret) for m in members if "kubernetes" in m.inputs["join"]
    )
    for release in graph.by_type("kubernetes:helm.sh/v3:Release"):
        upstream = _upstream(graph, release.urn)
        assert kube.urn in upstream
        assert not upstream & {m.urn for m in members}, "a member's failure would hold the platform back"

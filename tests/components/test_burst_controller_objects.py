"""The burst controller as rendered (components/controller.py) for dc1 with a controller image:
every object against the official schema, its arguments through the CLI's own parser, and its
RBAC against the calls the drainer and the Degrader make to the API doubles (tests/k8sapi.py,
tests/k8sscale.py): each call is granted, and each grant is used by a call.

What this cannot see: an API server's authorizer (the rules are matched here as RBAC documents
them: verb, API group, resource/subresource, resourceNames), and the pod's AWS and Pulumi access
(the two Secrets are the site's: docs/security.md)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

import kubernetes_validate
import pytest
import typer

from gpufleet.burst.degrade import KubernetesDegrader
from gpufleet.burst.interrupt import Drainer
from gpufleet.cli import app
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.admission import CONTROLLER_LABELS
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.controller import AWS_SECRET, PULUMI_SECRET, ControllerPlan, plan_controller
from gpufleet.plan.degrade import plan_degrade
from gpufleet.plan.site import plan_site
from gpufleet.preview.program import Graph, evaluate, reveal
from tests.crds import known_kinds, validate_custom
from tests.k8sapi import KubeApiFake
from tests.k8sscale import ScaleApiFake

IMAGE = "registry.invalid/gpufleet/controller:test"
PROGRAM = """
from components.controller import BurstController, BurstControllerArgs
from gpufleet.inventory.load import load_inventory
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.controller import plan_controller
from gpufleet.plan.degrade import plan_degrade
from gpufleet.plan.site import plan_site

inv = load_inventory("dc1")
inv = inv.model_copy(update={"bom": inv.bom.model_copy(update={"controller_image": IMAGE})})
degrade = plan_degrade(inv, plan_site(inv), plan_fleet(inv, "dc1"))
BurstController("controller", BurstControllerArgs(plan=plan_controller(inv, "burst-prod", degrade, GATEWAYS)))
"""


def _plan(gateways: list[str]) -> ControllerPlan:
    inv = load_inventory("dc1")
    inv = inv.model_copy(update={"bom": inv.bom.model_copy(update={"controller_image": IMAGE})})
    p = plan_controller(
        inv, "burst-prod", plan_degrade(inv, plan_site(inv), plan_fleet(inv, "dc1")), gateways
    )
    assert p is not None
    return p


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    program = tmp_path_factory.mktemp("program") / "__main__.py"
    program.write_text(f"IMAGE = {IMAGE!r}\nGATEWAYS = ['gateway-0:9999']\n{PROGRAM}")
    return evaluate("burst-prod", config={}, program=program)


def _objects(graph: Graph) -> dict[str, dict[str, Any]]:
    return {r.type.split(":")[-1]: reveal(r.inputs) for r in graph.resources if r.custom}


def test_every_object_is_valid_for_dc1s_kubernetes(graph: Graph) -> None:
    objects = _objects(graph)
    assert sorted(objects) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "PodMonitor", "Role", "RoleBinding",
        "ServiceAccount",
    ]  # fmt: skip
    version = load_inventory("dc1").bom.kubernetes
    for obj in objects.values():
        if (obj["apiVersion"], obj["kind"]) in known_kinds():
            validate_custom(obj, version)
        else:
            kubernetes_validate.validate(obj, version, strict=True)
    # Prometheus scrapes its metrics port.
    monitor, pod = objects["PodMonitor"], objects["Deployment"]["spec"]["template"]
    assert (
        monitor["kind"] == "PodMonitor"
        and monitor["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in [p["name"] for p in pod["spec"]["containers"][0]["ports"]]


def test_one_replica_replaced_never_doubled_with_the_controllers_labels(graph: Graph) -> None:
    objects = _objects(graph)
    d = objects["Deployment"]
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    pod = d["spec"]["template"]
    assert pod["metadata"]["labels"] == CONTROLLER_LABELS == d["spec"]["selector"]["matchLabels"]
    assert pod["spec"]["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    assert objects["ServiceAccount"]["metadata"]["namespace"] == d["metadata"]["namespace"] == "serving"
    c = pod["spec"]["containers"][0]
    assert c["image"] == IMAGE and c["securityContext"]["allowPrivilegeEscalation"] is False
    # What it needs from the site, named: the pod does not start without them.
    assert c["envFrom"] == [{"secretRef": {"name": PULUMI_SECRET}}]
    assert {"name": "aws", "secret": {"secretName": AWS_SECRET, "defaultMode": 0o400}} in pod["spec"][
        "volumes"
    ]
    for binding in ("RoleBinding", "ClusterRoleBinding"):
        (subject,) = objects[binding]["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "gpufleet-burst-controller",
            "namespace": "serving",
        }


def test_its_arguments_are_ones_the_cli_parses(graph: Graph) -> None:
    args = _objects(graph)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["burst", "run", "burst-prod"]
    assert args[args.index("--gateway-admin") + 1] == "gateway-0:9999" and "--degrade" in args
    # The CLI's own parser (Typer's click command), as the container's `gpufleet` reads them.
    burst: Any = typer.main.get_command(app).commands["burst"]  # type: ignore[attr-defined]
    ctx = burst.commands["run"].make_context("run", list(args[2:]))
    assert ctx.params["degrade"] is True and ctx.params["stack"] == "burst-prod"
    assert ctx.params["metrics_address"] == "0.0.0.0" and ctx.params["gateway_admin"] == ["gateway-0:9999"]


def _request(method: str, raw: str) -> tuple[str, str, str, str]:
    """(verb, API group, resource[/subresource], name) as the API server's authorizer sees it."""
    path = urllib.parse.urlparse(raw).path
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest[:1] == ["namespaces"]:
        rest = rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    verb = {"GET": "get" if name else "list", "PATCH": "patch", "POST": "create", "DELETE": "delete"}[method]
    if resource == "pods/eviction":
        name = ""  # create on a subresource: the pod's name is not a resourceName the rule needs
    return verb, group, resource, name


def _allowed(rules: list[dict[str, Any]], request: tuple[str, str, str, str]) -> list[int]:
    verb, group, resource, name = request
    return [
        i
        for i, r in enumerate(rules)
        if verb in r["verbs"]
        and group in r["apiGroups"]
        and resource in r["resources"]
        and (not r.get("resourceNames") or name in r["resourceNames"])
    ]


def _used(rules: list[dict[str, Any]], calls: Iterable[tuple[str, str, Any]]) -> set[int]:
    """The rules the calls need; every call must be granted by one."""
    used: set[int] = set()
    for method, raw, _ in calls:
        granted = _allowed(rules, _request(method, raw))
        assert granted, (method, raw)
        used.update(granted)
    return used


def test_rbac_grants_exactly_the_calls_the_drainer_and_the_degrader_make(graph: Graph) -> None:
    objects = _objects(graph)
    role, cluster = objects["Role"]["rules"], objects["ClusterRole"]["rules"]
    # The Degrader, through a degrade and a restore on dc1.
    p = _plan([])
    scale = ScaleApiFake()
    scale.add("leaderworkerset.x-k8s.io", "leaderworkersets", "deepseek-r1", 4)
    scale.add("apps", "deployments", "deepseek-r1-distill-llama-70b-degraded", 0)
    scale.add_hpa("deepseek-r1", 2, 4)
    with scale.serve() as api:
        degrader = KubernetesDegrader(plan_degrade(*_dc1()), api)  # type: ignore[arg-type]
        assert degrader.set_degraded(2) == [] and degrader.set_degraded(0) == []
    assert _used(role, scale.calls) == set(range(len(role))), "a Role rule no call needs"
    assert all(r.get("resourceNames") for r in role), "every namespaced grant names its object"
    assert p.rules and [r.k8s() for r in p.rules] == role
    # The drainer: a node found by its instance id, cordoned and drained through evictions.
    fake = KubeApiFake()
    with fake.serve() as core:
        fake.add_node("gpu02", provider_id="aws:///us-east-1a/i-0abc")
        fake.add_pod("default", "burst-0", "gpu02", labels={"app": "other"})
        drainer = Drainer(core, poll_s=0)
        node = drainer.node_for_instance("i-0abc")
        assert node == "gpu02"
        assert drainer.drain(node, deadline=10**12).finished_in_time
    assert _used(cluster, fake.calls) == set(range(len(cluster))), "a ClusterRole rule no call needs"
    assert not fake.unrecorded
    assert not any(re.search(r"\*", str(r)) for r in role + cluster), "no wildcard"


def _dc1() -> tuple[Any, Any, Any]:
    inv = load_inventory("dc1")
    return inv, plan_site(inv), plan_fleet(inv, "dc1")


def test_no_controller_until_the_site_names_its_image() -> None:
    inv, plan, fleet = _dc1()
    assert inv.bom.controller_image is None
    assert plan_controller(inv, "burst-prod", plan_degrade(inv, plan, fleet), []) is None

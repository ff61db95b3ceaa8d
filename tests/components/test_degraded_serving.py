"""Lever 1 as rendered: the distilled model's on-prem Deployment in the on-prem stacks, matched
against the Services and budgets the stacks render (the gateway's fallback: a headless Service
per burst class in the burst stack, and the distilled Deployment's own), with the official schema check of every object done by
test_stack_graphs. What this cannot see: the scheduler placing the pods on the GPUs the primary
freed, and Pulumi's server-side apply leaving the controller's count (pulumi-kubernetes drops an
ignored field another manager owns; recorded here as the option the program sends)."""

from __future__ import annotations

from typing import Any

import pytest

from components.serving import LWS_LEADER_LABEL
from gpufleet.plan.aws import plan_fleet
from gpufleet.plan.degrade import degraded_workload
from gpufleet.plan.site import plan_site
from gpufleet.preview.program import Graph, Registration, reveal

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) as the API server reads it; a Service's
    plain map is matchLabels."""
    plain = selector if "matchLabels" not in selector and "matchExpressions" not in selector else None
    if plain is not None:
        return all(labels.get(k) == v for k, v in plain.items())
    ok = all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok &= {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
    return ok


def _named(graph: Graph, type_: str, name: str) -> list[Registration]:
    return [r for r in graph.by_type(type_) if r.inputs["metadata"]["name"] == name]


@pytest.mark.parametrize("name", ["dc1-prod", "dc1-dr"])
def test_the_distilled_deployment_starts_at_zero_and_is_left_to_the_controller(
    name: str, graphs: dict[str, Graph], stacks: dict[str, Any]
) -> None:
    inv = stacks[name].inventory
    w = degraded_workload(inv, plan_site(inv), plan_fleet(inv, name))
    assert w is not None
    (reg,) = _named(graphs[name], DEPLOYMENT, w.name)
    d = reveal(reg.inputs)
    assert d["spec"]["replicas"] == 0
    assert reg.ignore_changes == ["spec.replicas"]
    pod = d["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(w.tensor_parallel)
    assert pod["spec"]["nodeSelector"]["gpufleet.io/capacity"] == "on-prem"
    # Its own model cache on the site's CephFS, filled by its own Job.
    claim = next(v for v in pod["spec"]["volumes"] if v["name"] == "weights")["persistentVolumeClaim"]
    assert _named(graphs[name], "kubernetes:core/v1:PersistentVolumeClaim", claim["claimName"])
    assert [
        j
        for j in graphs[name].by_type("kubernetes:batch/v1:Job")
        if w.revision[:12] in j.inputs["metadata"]["name"]
    ]
    # No Service, budget or HPA of its own but the headless one whose records are its fallback
    # template's servers.
    (pods,) = _named(graphs[name], "kubernetes:core/v1:Service", f"{w.name}-pods")
    assert reveal(pods.inputs)["spec"]["clusterIP"] == "None"
    assert selects(reveal(pods.inputs)["spec"]["selector"], pod["metadata"]["labels"])
    for type_ in (
        "core/v1:Service",
        "policy/v1:PodDisruptionBudget",
        "autoscaling/v2:HorizontalPodAutoscaler",
    ):
        assert not _named(graphs[name], f"kubernetes:{type_}", w.name), type_


def test_dc1s_distilled_pods_serve_in_the_fallback_alone_and_never_in_the_primary(
    graphs: dict[str, Graph],
) -> None:
    onprem, burst = graphs["dc1-prod"], graphs["burst-prod"]

    def pod_labels(g: Graph, component: str | None) -> dict[str, str]:
        reg = next(
            r
            for r in g.by_type(DEPLOYMENT)
            if r.inputs["metadata"]["labels"].get("app.kubernetes.io/name") == "triton"
            and r.inputs["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )  # the burst stack's first class: every class's pods are labelled alike but for instance
        return dict(reveal(reg.inputs)["spec"]["template"]["metadata"]["labels"])

    labels, spot = pod_labels(onprem, "degraded"), pod_labels(burst, None)
    (lws,) = onprem.by_type("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    primary = reveal(lws.inputs)["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"]
    primary = {**primary, LWS_LEADER_LABEL: "0"}  # the LWS controller labels each group's leader so
    services = {
        s.inputs["metadata"]["name"]: reveal(s.inputs)["spec"]["selector"]
        for g in (onprem, burst)
        for s in g.by_type("kubernetes:core/v1:Service")
    }

    def served_by(pod: dict[str, str]) -> set[str]:
        return {n for n, sel in services.items() if sel and selects(sel, pod)}

    # Its own headless Service (one template of the gateway's fallback), as a burst class's pods
    # serve in their class's two; never the primary's, which P0 reaches.
    assert served_by(labels) == {f"{labels['app.kubernetes.io/instance']}-pods"}
    assert served_by(spot) == {
        spot["app.kubernetes.io/instance"],
        f"{spot['app.kubernetes.io/instance']}-pods",
    }
    assert not (served_by(labels) | served_by(spot)) & served_by(primary) and served_by(primary)
    # Outside every disruption budget: a distilled pod loading its weights must not hold back the
    # drain of a Spot node (two minutes) or of an on-prem node.
    for g in (onprem, burst):
        for pdb in g.by_type("kubernetes:policy/v1:PodDisruptionBudget"):
            assert not selects(reveal(pdb.inputs)["spec"]["selector"], labels), pdb.name
    # And neither the primary's workload (the HPA's target) nor the burst one owns them.
    assert labels["app.kubernetes.io/instance"] not in {
        primary["app.kubernetes.io/instance"],
        spot["app.kubernetes.io/instance"],
    }

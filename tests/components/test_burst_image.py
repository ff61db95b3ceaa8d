"""The baked burst image: Image Builder's component, recipe, build and distribution, read from the
burst stack's recorded graph under mocks, and the launch template on the AMI it builds.

What the mocks cannot see: whether Image Builder accepts the document and the build succeeds (no
EC2 here). The document is rendered by a serialiser and read back; its actions are AWSTOE's own
module names; the node scripts it writes are the files tests/integration/test_burst_weights.py
runs against moto; property names are pulumi_aws's own (the SDK rejects unknown keyword
arguments at construction).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.inventory.load import inventory_from_data
from gpufleet.inventory.stacks import Stack
from gpufleet.plan.aws import (
    COMPONENT_DATA_MAX,
    IMAGE_ROOT_GIB,
    NODE_SCRIPT_FILES,
    NODE_SCRIPTS,
    image_component,
    image_name,
    plan_burst,
)
from gpufleet.preview.program import Graph, Registration
from gpufleet.serving import burst_weights
from tests.policies.test_policy_pack import analyze

STACK = "burst-prod"
SCRIPTS = {f: (Path(burst_weights.__file__).parent / f).read_text() for f in NODE_SCRIPT_FILES}
# AWSTOE's action modules this document may use, and its phases (Image Builder's user guide).
AWSTOE_ACTIONS = {"ExecuteBash", "CreateFile"}
AWSTOE_PHASES = {"build", "validate", "test"}


def one(graph: Graph, type_: str) -> Registration:
    (found,) = graph.by_type(type_)
    return found


def document(graph: Graph) -> dict[str, Any]:
    data: str = one(graph, "aws:imagebuilder/component:Component").inputs["data"]
    loaded: dict[str, Any] = yaml.safe_load(data)
    return loaded


def commands(doc: dict[str, Any], phase: str) -> list[str]:
    (found,) = [p for p in doc["phases"] if p["name"] == phase]
    return [c for s in found["steps"] if s["action"] == "ExecuteBash" for c in s["inputs"]["commands"]]


def test_the_component_is_the_plans_document_with_the_node_scripts(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack, graph = stacks[STACK], graphs[STACK]
    plan = plan_burst(stack.inventory, stack.config, "t")
    component = one(graph, "aws:imagebuilder/component:Component").inputs
    assert component["data"] == image_component(plan, SCRIPTS)
    assert len(component["data"]) <= COMPONENT_DATA_MAX
    assert component["platform"] == "Linux" and component["version"] == "1.0.0"
    doc = document(graph)
    assert {p["name"] for p in doc["phases"]} <= AWSTOE_PHASES
    assert {s["action"] for p in doc["phases"] for s in p["steps"]} <= AWSTOE_ACTIONS
    (scripts,) = [s for p in doc["phases"] for s in p["steps"] if s["action"] == "CreateFile"]
    assert {i["path"]: i["content"] for i in scripts["inputs"]} == {
        f"{NODE_SCRIPTS}/{name}": text for name, text in SCRIPTS.items()
    }


def test_the_image_carries_the_boms_serving_image_and_kubernetes(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack, graph = stacks[STACK], graphs[STACK]
    bom = stack.inventory.bom
    doc = document(graph)
    build, validate = commands(doc, "build"), commands(doc, "validate")
    # One pin: the image pulled at build time is the BOM's, character for character, and the
    # serving pods name the same reference (pulled only if absent: the default for a tag).
    (pull,) = [c for c in build if " pull " in c]
    assert pull.split()[-1] == bom.triton_image
    deployments = graph.by_type("kubernetes:apps/v1:Deployment")
    assert len(deployments) > 1  # a workload per GPU class
    for deployment in deployments:
        pod = deployment.inputs["spec"]["template"]["spec"]
        assert {c["image"] for c in pod["containers"] + pod["initContainers"]} == {bom.triton_image}
        assert all(c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent" for c in pod["containers"])
    assert f"kubeadm={bom.kubernetes}-\\*" in " ".join(build) and "apt-mark hold kubeadm kubelet" in build
    assert "nvidia-ctk runtime configure --runtime=containerd --set-as-default" in build
    # Validation fails the build (and no AMI is distributed) if any of it is missing.
    assert any(c.endswith(f"inspecti {bom.triton_image} > /dev/null") for c in validate)
    assert f"kubeadm version -o short | grep -Fx 'v{bom.kubernetes}'" in validate
    assert f"python3 -I {NODE_SCRIPTS}/burst_weights.py --help" in validate


def test_the_launch_template_boots_the_image_the_build_distributes(
    graphs: dict[str, Graph], stacks: dict[str, Stack]
) -> None:
    stack, graph = stacks[STACK], graphs[STACK]
    plan = plan_burst(stack.inventory, stack.config, "t")
    name = image_name(image_component(plan, SCRIPTS), plan)
    component = one(graph, "aws:imagebuilder/component:Component")
    recipe = one(graph, "aws:imagebuilder/imageRecipe:ImageRecipe")
    infra = one(graph, "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration")
    distribution = one(graph, "aws:imagebuilder/distributionConfiguration:DistributionConfiguration")
    image = one(graph, "aws:imagebuilder/image:Image")
    template = one(graph, "aws:ec2/launchTemplate:LaunchTemplate")
    assert component.inputs["name"] == recipe.inputs["name"] == name
    assert recipe.inputs["parentImage"] == f"ssm:{plan.ami_parameter}"
    assert [c["componentArn"] for c in recipe.inputs["components"]] == [
        f"arn:aws:imagebuilder:us-east-1:123456789012:{component.name}"
    ]
    (root,) = recipe.inputs["blockDeviceMappings"]
    assert root["ebs"] == {
        "volumeSize": IMAGE_ROOT_GIB,
        "volumeType": "gp3",
        "encrypted": "true",
        "deleteOnTermination": "true",
    }
    assert plan.root_volume_gib >= IMAGE_ROOT_GIB  # a node's root volume holds the image's snapshot
    for r in (recipe, infra, distribution):
        assert r.urn in image.dependencies
    assert image.inputs["imageTestsConfiguration"]["imageTestsEnabled"] is True
    (dist,) = distribution.inputs["distributions"]
    assert dist["region"] == plan.region
    assert {"site", "env", "owner", "cost-center"} <= set(dist["amiDistributionConfiguration"]["amiTags"])
    assert image.urn in template.dependencies
    assert not str(template.inputs["imageId"]).startswith("resolve:ssm:")


@pytest.mark.parametrize(
    ("key", "value", "rebuilds"),
    [
        (("bom", "triton_image"), "registry.dc1.internal/nvidia/tritonserver:26.08-vllm-python-py3", True),
        (("bom", "kubernetes"), "1.31.5", True),
        (
            ("bom", "burst_ami"),
            "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id:58",
            True,
        ),
        (("site", "burst", "max_nodes"), 6, False),
        (("bom", "burst_model_revision"), "1" * 40, False),  # weights come from S3, not the image
    ],
)
def test_a_bom_change_names_a_new_image_and_nothing_else_does(
    key: tuple[str, ...], value: Any, rebuilds: bool, dc1: dict[str, Any], stacks: dict[str, Stack]
) -> None:
    stack = stacks[STACK]
    before = plan_burst(stack.inventory, stack.config, "t")
    target = dc1
    for k in key[:-1]:
        target = target[k]
    target[key[-1]] = value
    after = plan_burst(inventory_from_data(dc1, "t"), stack.config, "t")
    names = [image_name(image_component(p, SCRIPTS), p) for p in (before, after)]
    assert (names[0] != names[1]) is rebuilds


def test_the_builders_policy_passes_the_pack_and_a_widened_one_fails(graphs: dict[str, Graph]) -> None:
    (builder,) = [
        r
        for r in graphs[STACK].by_type("aws:iam/rolePolicy:RolePolicy")
        if r.name.endswith("-builder-policy")
    ]
    props = {"role": "r", "policy": builder.inputs["policy"]}
    assert analyze("aws:iam/rolePolicy:RolePolicy", props) == {}
    doc = json.loads(builder.inputs["policy"])
    for i, statement in enumerate(doc["Statement"]):
        if statement["Resource"] == "*":
            continue
        wide = json.loads(builder.inputs["policy"])
        wide["Statement"][i]["Resource"] = "*"
        found = analyze("aws:iam/rolePolicy:RolePolicy", {"role": "r", "policy": json.dumps(wide)})
        assert set(found) == {"iam-least-privilege"}, statement["Sid"]


def test_a_component_over_image_builders_limit_is_refused_at_plan_time(stacks: dict[str, Stack]) -> None:
    stack = stacks[STACK]
    plan = plan_burst(stack.inventory, stack.config, "t")
    grown = {**SCRIPTS, "burst_weights.py": SCRIPTS["burst_weights.py"] + "#" * COMPONENT_DATA_MAX}
    with pytest.raises(ValueError, match=f"Image Builder takes {COMPONENT_DATA_MAX}"):
        image_component(plan, grown)

"""Every policy over the recorded graph of every stack (must pass) and over broken resources (must fail).

Resources reach the policies through the pack's own gRPC analyzer (`Analyze`), in the engine's
wire form (secrets and references signed), exactly as `pulumi preview --policy-pack` sends them.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from gpufleet.inventory.stacks import stack_names
from gpufleet.preview.program import (
    RESOURCE_SIG,
    SECRET_SIG,
    SIG_KEY,
    Graph,
    Registration,
    ResourceRef,
    Secret,
    reveal,
)
from policies.rules import RULES, resource_policies

POLICIES = {p.name: p for p in resource_policies()}


def wire(value: Any) -> Any:
    """Back to the engine's wire form: secrets and references carry their signatures again."""
    if isinstance(value, Secret):
        return {SIG_KEY: SECRET_SIG, "value": wire(value.value)}
    if isinstance(value, ResourceRef):
        return {SIG_KEY: RESOURCE_SIG, "urn": value.urn}
    if isinstance(value, dict):
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    return value


ANALYZER = _PolicyAnalyzerServicer("gpufleet", "0.1.0", resource_policies(), EnforcementLevel.MANDATORY)


def analyze(
    type_: str, props: dict[str, Any], urn: str = "urn:pulumi:s::gpufleet::t::x"
) -> dict[str, list[str]]:
    """The pack's gRPC Analyze, as the engine calls it for one resource: {policy: [messages]}."""
    request = proto.AnalyzeRequest(
        type=type_, properties=json_format.ParseDict(wire(props), struct_pb2.Struct()), urn=urn, name="x"
    )
    response = ANALYZER.Analyze(request, None)
    found: dict[str, list[str]] = {}
    for d in response.diagnostics:
        found.setdefault(d.policyName, []).append(d.message)
    return found


def all_violations(r: Registration) -> dict[str, list[str]]:
    return analyze(r.type, r.inputs, r.urn)


def test_the_pack_has_every_rule_the_issue_names() -> None:
    assert sorted(POLICIES) == sorted(
        [
            "imdsv2-required",
            "ebs-encrypted",
            "no-public-admin-ingress",
            "burst-asg-spot-only",
            "required-tags",
            "gpu-pods-have-limits",
            "no-latest-image-tags",
            "secrets-not-in-plain-config",
        ]
    )


@pytest.mark.parametrize("name", stack_names())
def test_every_stack_passes_every_policy(name: str, recorded: dict[str, Graph]) -> None:
    graph = recorded[name]
    assert graph.resources
    failures = {r.urn: v for r in graph.resources if (v := all_violations(r))}
    assert failures == {}


def test_every_policy_examined_something(recorded: dict[str, Graph]) -> None:
    """A rule that never applies passes silently: each must see resources of the real graphs."""
    examined = {rule.name: 0 for rule in RULES}
    for graph in recorded.values():
        for r in graph.resources:
            for rule in RULES:
                examined[rule.name] += rule.applies(r.type)
    assert all(n > 0 for n in examined.values()), examined


def recorded_one(recorded: dict[str, Graph], stack: str, type_: str) -> dict[str, Any]:
    found = recorded[stack].by_type(type_)
    assert found, type_
    return copy.deepcopy(reveal(found[0].inputs))


LT = "aws:ec2/launchTemplate:LaunchTemplate"
SG = "aws:ec2/securityGroup:SecurityGroup"
ASG = "aws:autoscaling/group:Group"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    keys = path.split(".")
    target: Any = obj
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    if isinstance(target, list):
        target[int(keys[-1])] = value
    else:
        target[keys[-1]] = value
    return obj


TOKEN = "abcdef.0123456789abcdef"
BROKEN = [
    ("imdsv2-required", "burst-prod", LT, "metadataOptions.httpTokens", "optional"),
    ("ebs-encrypted", "burst-prod", LT, "blockDeviceMappings.0.ebs.encrypted", "false"),
    (
        "no-public-admin-ingress",
        "burst-prod",
        SG,
        "ingress.0",
        {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]},
    ),
    (
        "no-public-admin-ingress",
        "burst-prod",
        SG,
        "ingress.1",
        {"protocol": "-1", "fromPort": 0, "toPort": 0, "ipv6CidrBlocks": ["::/0"]},
    ),
    (
        "burst-asg-spot-only",
        "burst-prod",
        ASG,
        "mixedInstancesPolicy.instancesDistribution.onDemandPercentageAboveBaseCapacity",
        20,
    ),
    ("burst-asg-spot-only", "burst-prod", ASG, "maxSize", 0),
    ("required-tags", "burst-prod", "aws:sqs/queue:Queue", "tags", {"site": "dc1", "env": "prod"}),
    (
        "required-tags",
        "burst-prod",
        ASG,
        "tags",
        [{"key": "site", "value": "dc1", "propagateAtLaunch": True}],
    ),
    (
        "gpu-pods-have-limits",
        "burst-prod",
        DEPLOYMENT,
        "spec.template.spec.containers.0.resources.limits",
        {},
    ),
    (
        "gpu-pods-have-limits",
        "dc1-prod",
        LWS,
        "spec.leaderWorkerTemplate.workerTemplate.spec.containers.0.resources.limits",
        {"nvidia.com/gpu": "4"},
    ),
    (
        "no-latest-image-tags",
        "burst-prod",
        DEPLOYMENT,
        "spec.template.spec.containers.0.image",
        "nvcr.io/nvidia/tritonserver:latest",
    ),
    ("no-latest-image-tags", "dc1-dr", DEPLOYMENT, "spec.template.spec.initContainers.0.image", "busybox"),
    ("secrets-not-in-plain-config", "burst-prod", "aws:ssm/parameter:Parameter", "type", "String"),
    (
        "secrets-not-in-plain-config",
        "burst-prod",
        DEPLOYMENT,
        "spec.template.spec.containers.0.env.0",
        {"name": "HF_TOKEN", "value": "hf_abcdefghijkl"},
    ),
    (
        "secrets-not-in-plain-config",
        "burst-prod",
        LT,
        "userData",
        base64.b64encode(f"kubeadm join --token {TOKEN}".encode()).decode(),
    ),
    (
        "secrets-not-in-plain-config",
        "dc1-prod",
        "kubernetes:core/v1:ConfigMap",
        "data",
        {"kubeconfig": f"token: {TOKEN}"},
    ),
]


@pytest.mark.parametrize(
    ("policy", "stack", "type_", "path", "value"), BROKEN, ids=[f"{b[0]}:{b[3]}" for b in BROKEN]
)
def test_a_broken_resource_fails_its_policy_and_only_that_one(
    policy: str, stack: str, type_: str, path: str, value: Any, recorded: dict[str, Graph]
) -> None:
    props = recorded_one(recorded, stack, type_)
    if type_ == "aws:ssm/parameter:Parameter":
        props = copy.deepcopy(
            reveal(
                next(r for r in recorded[stack].by_type(type_) if r.inputs["type"] == "SecureString").inputs
            )
        )
    assert analyze(type_, props) == {}, "the recorded resource passes first"
    broken = _set(props, path, value)
    assert set(analyze(type_, broken)) == {policy}


def test_every_policy_has_a_broken_case() -> None:
    assert {b[0] for b in BROKEN} == set(POLICIES)


@pytest.mark.parametrize("name", stack_names())
def test_stack_files_hold_no_secret_in_clear(name: str) -> None:
    from gpufleet.preview.program import PROGRAM, stack_file_config
    from policies.rules import plain_config_secrets

    config = stack_file_config(name, PROGRAM.parent)
    assert config and plain_config_secrets(config) == []


@pytest.mark.parametrize(
    ("key", "value", "flagged"),
    [
        ("gpufleet:owner", "platform", False),
        ("aws:secretKey", "wJalrXUtnFEMI/K7MDENG", True),
        ("aws:secretKey", {"secure": "v1:abc:def"}, False),
        ("gpufleet:note", "join with abcdef.0123456789abcdef", True),
        ("grafana:adminPassword", "", False),
    ],
)
def test_secret_config_must_be_encrypted(key: str, value: object, flagged: bool) -> None:
    from policies.rules import plain_config_secrets

    assert bool(plain_config_secrets({key: value})) is flagged

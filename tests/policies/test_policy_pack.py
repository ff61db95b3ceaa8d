"""Every policy over the recorded graph of every stack (must pass) and over broken resources (must fail).

Resources reach the policies through the pack's own gRPC analyzer (`Analyze`), in the engine's
wire form (secrets and references signed), exactly as `pulumi preview --policy-pack` sends them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from gpufleet.inventory.stacks import load_stack, stack_names
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
from policies.rules import RULES, _production, resource_policies

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
            "imds-hop-limit-1",
            "ebs-encrypted",
            "no-wide-ingress",
            "iam-least-privilege",
            "no-admin-policies",
            "no-public-principals",
            "securestring-customer-key",
            "burst-asg-spot-only",
            "required-tags",
            "gpu-pods-have-limits",
            "no-latest-image-tags",
            "images-by-digest-in-production",
            "secrets-not-in-plain-config",
        ]
    )


# The BOM names the Triton image by tag: its digest is read from the registry when someone pins it,
# never invented. Until then production stacks fail exactly one rule, on exactly that image.
UNPINNED = "images-by-digest-in-production"
# Stands in for a digest in probes only (sha256 of b"gpufleet-test"), so each probe breaks one rule.
TEST_DIGEST = "@sha256:" + hashlib.sha256(b"gpufleet-test").hexdigest()


def _pinned(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {
            k: (
                v + TEST_DIGEST if k == "image" and isinstance(v, str) and "@sha256:" not in v else _pinned(v)
            )
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_pinned(v) for v in doc]
    return doc


@pytest.mark.parametrize("name", stack_names())
def test_every_stack_passes_every_policy_but_the_unread_digest(name: str, recorded: dict[str, Graph]) -> None:
    graph = recorded[name]
    assert graph.resources
    failures = {r.urn: v for r in graph.resources if (v := all_violations(r))}
    unpinned = {urn: v.pop(UNPINNED) for urn, v in failures.items() if UNPINNED in v}
    assert {urn: v for urn, v in failures.items() if v} == {}
    bom = load_stack(name).inventory.bom
    image = bom.triton_image
    if _production(f"urn:pulumi:{name}::gpufleet::t::x") and image and "@sha256:" not in image:
        assert unpinned, "a production stack with a tag-only image must fail the digest rule"
        # Each message names the BOM entry that pins its image.
        keys = {image: "bom.triton_image", bom.gateway_image: "bom.gateway_image"}
        assert all(
            any(f"{i!r}" in m and f"to {k} in" in m for i, k in keys.items())
            for ms in unpinned.values()
            for m in ms
        ), unpinned
        for ms in unpinned.values():
            # Once per container and image (an LWS's leader and worker templates name the same
            # ones), saying how to read the digest.
            assert len(ms) == len(set(ms)), ms
            assert all("crane digest" in m for m in ms), ms
    else:
        assert unpinned == {}


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
    if type_ == "aws:ssm/parameter:Parameter":
        found = [r for r in found if r.inputs["type"] == "SecureString"]
    if type_ == ROLE_POLICY:
        # The node's policy (the image builder's registers first: it waits on fewer outputs).
        found = [r for r in found if r.name.endswith("-node-policy")]
    if type_ == SG:
        # The nodes' group (the resolver's and the image builder's register in no fixed order).
        found = [r for r in found if r.name.endswith("-nodes")]
    if not found:
        # A type the stacks do not use: the probe starts from the smallest valid resource of it.
        return copy.deepcopy(ABSENT[type_])
    return copy.deepcopy(_pinned(reveal(found[0].inputs)))


LT = "aws:ec2/launchTemplate:LaunchTemplate"
SG = "aws:ec2/securityGroup:SecurityGroup"
ASG = "aws:autoscaling/group:Group"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
PARAMETER = "aws:ssm/parameter:Parameter"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
LAB = "urn:pulumi:lab::gpufleet::t::x"
ACCOUNT = "123456789012"
# Resources of types no stack uses, as a stack would write them (each passes every policy).
ABSENT: dict[str, dict[str, Any]] = {
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": {
        "securityGroupId": "sg-0123",
        "ipProtocol": "tcp",
        "fromPort": 8000,
        "toPort": 8002,
        "cidrIpv4": "10.40.0.0/22",
    },
    ATTACHMENT: {"role": "burst-node-role", "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/burst-controller"},
    BUCKET_POLICY: {
        "bucket": "models",
        "policy": json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/burst-node-role"},
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::models/*",
                    }
                ],
            }
        ),
    },
    TOPIC_POLICY: {
        "arn": f"arn:aws:sns:us-east-1:{ACCOUNT}:alerts",
        "policy": json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sns:Publish",
                        "Resource": f"arn:aws:sns:us-east-1:{ACCOUNT}:alerts",
                        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
                    }
                ],
            }
        ),
    },
}


def statement(**changes: Any) -> Callable[[str], str]:
    """An edit of a recorded policy document (a JSON string): its first statement changed."""

    def edit(document: str) -> str:
        doc = json.loads(document)
        doc["Statement"][0].update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del doc["Statement"][0][key]
        return json.dumps(doc)

    return edit


def _tcp(port: int, *cidrs: str, to: int | None = None) -> dict[str, Any]:
    return {"protocol": "tcp", "fromPort": port, "toPort": to or port, "cidrBlocks": list(cidrs)}


# An admin kubeconfig as kubeadm writes /etc/kubernetes/admin.conf (key shortened, still PEM).
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\n-----END RSA PRIVATE KEY-----\n"
ADMIN_KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://10.40.0.10:6443
  name: kubernetes
users:
- name: kubernetes-admin
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    client-key-data: {base64.b64encode(PEM.encode()).decode()}
"""


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
    ("imds-hop-limit-1", "burst-prod", LT, "metadataOptions.httpPutResponseHopLimit", 64),
    ("imds-hop-limit-1", "burst-prod", LT, "metadataOptions.httpPutResponseHopLimit", 2),
    ("no-wide-ingress", "burst-prod", SG, "ingress.0", _tcp(22, "0.0.0.0/0")),
    ("no-wide-ingress", "burst-prod", SG, "ingress.0", _tcp(22, "0.0.0.0/1", "128.0.0.0/1")),
    ("no-wide-ingress", "burst-prod", SG, "ingress.0", _tcp(22, "203.0.113.7/32")),
    ("no-wide-ingress", "burst-prod", SG, "ingress.2", _tcp(8000, "0.0.0.0/0", to=8002)),
    ("no-wide-ingress", "burst-prod", SG, "ingress.2", _tcp(8000, "0.0.0.0/1", "128.0.0.0/1", to=8002)),
    ("no-wide-ingress", "burst-prod", SG, "ingress.2", _tcp(8000, "198.51.100.0/22", to=8002)),
    (
        "no-wide-ingress",
        "burst-prod",
        SG,
        "ingress.1",
        {"protocol": "-1", "fromPort": 0, "toPort": 0, "ipv6CidrBlocks": ["::/0"]},
    ),
    (
        "no-wide-ingress",
        "burst-prod",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "cidrIpv4",
        "0.0.0.0/0",
    ),
    ("iam-least-privilege", "burst-prod", ROLE_POLICY, "policy", statement(Action="*", Resource="*")),
    ("iam-least-privilege", "burst-prod", ROLE_POLICY, "policy", statement(Resource="*")),
    ("iam-least-privilege", "burst-prod", ROLE_POLICY, "policy", statement(Action=["ssm:*"])),
    (
        "iam-least-privilege",
        "burst-prod",
        ROLE_POLICY,
        "policy",
        statement(Resource=["arn:aws:ssm:*:*:parameter/gpufleet/dc1/kubeadm/join-token"]),
    ),
    (
        "iam-least-privilege",
        "burst-prod",
        ROLE_POLICY,
        "policy",
        statement(Resource=["arn:aws:ssm:us-east-1:1:*"]),
    ),
    ("iam-least-privilege", "burst-prod", ROLE_POLICY, "policy", statement(Action=None, NotAction="iam:*")),
    (
        "iam-least-privilege",
        "burst-prod",
        "aws:iam/policy:Policy",
        "policy",
        statement(Action=["autoscaling:CompleteLifecycleAction"], Resource="*"),
    ),
    (
        "no-admin-policies",
        "burst-prod",
        ATTACHMENT,
        "policyArn",
        "arn:aws:iam::aws:policy/AdministratorAccess",
    ),
    (
        "no-admin-policies",
        "burst-prod",
        ATTACHMENT,
        "policyArn",
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    ),
    (
        "no-admin-policies",
        "burst-prod",
        ROLE,
        "managedPolicyArns",
        ["arn:aws:iam::aws:policy/PowerUserAccess"],
    ),
    ("no-public-principals", "burst-prod", QUEUE_POLICY, "policy", statement(Principal="*")),
    ("no-public-principals", "burst-prod", QUEUE_POLICY, "policy", statement(Principal={"AWS": "*"})),
    ("no-public-principals", "burst-prod", QUEUE_POLICY, "policy", statement(Condition=None)),
    ("no-public-principals", "burst-prod", BUCKET_POLICY, "policy", statement(Principal={"AWS": ["*"]})),
    ("no-public-principals", "burst-prod", TOPIC_POLICY, "policy", statement(Principal="*")),
    ("no-public-principals", "burst-prod", ROLE, "assumeRolePolicy", statement(Principal={"AWS": "*"})),
    ("securestring-customer-key", "burst-prod", PARAMETER, "keyId", None),
    ("securestring-customer-key", "burst-prod", PARAMETER, "keyId", "alias/aws/ssm"),
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
    (
        "images-by-digest-in-production",
        "dc1-prod",
        LWS,
        "spec.leaderWorkerTemplate.workerTemplate.spec.containers.0.image",
        "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3",
    ),
    (
        "images-by-digest-in-production",
        "burst-prod",
        DEPLOYMENT,
        "spec.template.spec.initContainers.0.image",
        "nvcr.io/nvidia/tritonserver@sha256:4f2a",
    ),
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
    ("secrets-not-in-plain-config", "dc1-prod", CONFIGMAP, "data", {"config": ADMIN_KUBECONFIG}),
    (
        "secrets-not-in-plain-config",
        "dc1-prod",
        CONFIGMAP,
        "data",
        {"config": ADMIN_KUBECONFIG.replace("client-key-data: ", "token: ", 1).replace("LS0t", "eyJh", 1)},
    ),
    ("secrets-not-in-plain-config", "dc1-prod", CONFIGMAP, "data", {"admin.conf": "see the runbook"}),
    (
        "secrets-not-in-plain-config",
        "dc1-prod",
        CONFIGMAP,
        "binaryData",
        {"key.pem": base64.b64encode(PEM.encode()).decode()},
    ),
]


@pytest.mark.parametrize(
    ("policy", "stack", "type_", "path", "value"), BROKEN, ids=[f"{b[0]}:{b[3]}" for b in BROKEN]
)
def test_a_broken_resource_fails_its_policy_and_only_that_one(
    policy: str, stack: str, type_: str, path: str, value: Any, recorded: dict[str, Graph]
) -> None:
    props = recorded_one(recorded, stack, type_)
    # Tags are judged outside production only; everywhere else the probe runs as production does.
    urn = LAB if policy == "no-latest-image-tags" else f"urn:pulumi:{stack}::gpufleet::{type_}::x"
    assert analyze(type_, props, urn) == {}, "the recorded resource passes first"
    keys = path.split(".")
    target: Any = props
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    old = target[int(keys[-1])] if isinstance(target, list) else target.get(keys[-1])
    broken = _set(props, path, value(old) if callable(value) else value)
    if value is None:
        del target[keys[-1]]
    assert set(analyze(type_, broken, urn)) == {policy}


# Sources that are not wide: the on-prem ranges, all of 10/8, a partner's /24, a host.
@pytest.mark.parametrize(
    "rule",
    [
        _tcp(8000, "10.0.0.0/8", to=8002),
        _tcp(8000, "10.0.0.0/9", "10.128.0.0/9", to=8002),
        _tcp(8000, "203.0.113.0/24", to=8002),
        _tcp(22, "10.40.0.0/22"),
        _tcp(443, "192.0.2.10/32"),
    ],
)
def test_narrow_ingress_passes(rule: dict[str, Any], recorded: dict[str, Graph]) -> None:
    props = recorded_one(recorded, "burst-prod", SG)
    props["ingress"].append(rule)
    assert analyze(SG, props) == {}


def test_a_path_wildcard_under_one_named_prefix_is_scoped(recorded: dict[str, Graph]) -> None:
    props = recorded_one(recorded, "burst-prod", ROLE_POLICY)
    props["policy"] = statement(Resource=[f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/gpufleet/dc1/*"])(
        props["policy"]
    )
    assert analyze(ROLE_POLICY, props) == {}


def test_an_unknown_stack_counts_as_production(recorded: dict[str, Graph]) -> None:
    props = recorded_one(recorded, "burst-prod", DEPLOYMENT)
    props["spec"]["template"]["spec"]["containers"][0]["image"] = "nvcr.io/nvidia/tritonserver:25.01"
    assert set(analyze(DEPLOYMENT, props, "urn:pulumi:no-such-stack::gpufleet::t::x")) == {
        "images-by-digest-in-production"
    }
    assert analyze(DEPLOYMENT, props, LAB) == {}


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

"""Policy rules as pure checks over (resource type, inputs), wrapped as pulumi_policy policies.

The analyzer hands a rule the resource's inputs with secrets already opened, so "secrets not in
plain config" looks for secret-shaped values in places that are never encrypted or hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from gpufleet.plan.aws import ADMIN_PORTS

REQUIRED_TAGS = ("site", "env", "owner", "cost-center")
# Ports that administer a machine or a cluster: SSH, RDP, the API server, etcd, the kubelet.
ADMIN_PORT_RANGES = [(p, p) for p in (*ADMIN_PORTS, 3389, 6443)] + [(2379, 2380)]
TAGGABLE = {
    f"aws:{t}"
    for t in (
        "ec2/vpc:Vpc",
        "ec2/subnet:Subnet",
        "ec2/internetGateway:InternetGateway",
        "ec2/routeTable:RouteTable",
        "ec2/eip:Eip",
        "ec2/natGateway:NatGateway",
        "ec2/vpnGateway:VpnGateway",
        "ec2/customerGateway:CustomerGateway",
        "ec2/vpnConnection:VpnConnection",
        "ec2/securityGroup:SecurityGroup",
        "ec2/launchTemplate:LaunchTemplate",
        "ec2/instance:Instance",
        "ebs/volume:Volume",
        "ssm/parameter:Parameter",
        "sqs/queue:Queue",
        "iam/role:Role",
        "iam/instanceProfile:InstanceProfile",
        "autoscaling/group:Group",
        "cloudwatch/eventRule:EventRule",
        "s3/bucket:Bucket",
    )
}
POD_PATHS: dict[str, list[tuple[str, ...]]] = {
    "Pod": [("spec",)],
    "Deployment": [("spec", "template", "spec")],
    "StatefulSet": [("spec", "template", "spec")],
    "DaemonSet": [("spec", "template", "spec")],
    "ReplicaSet": [("spec", "template", "spec")],
    "Job": [("spec", "template", "spec")],
    "CronJob": [("spec", "jobTemplate", "spec", "template", "spec")],
    "LeaderWorkerSet": [
        ("spec", "leaderWorkerTemplate", "leaderTemplate", "spec"),
        ("spec", "leaderWorkerTemplate", "workerTemplate", "spec"),
    ],
}
GPU = "nvidia.com/gpu"
SECRET_NAME = re.compile(r"(token|password|passwd|secret|private[_-]?key|api[_-]?key|credential)", re.I)
# Values that are secrets whatever key holds them: kubeadm bootstrap tokens, Ceph keys, PEM keys, AWS keys.
SECRET_VALUE = re.compile(
    r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b|\bAQ[A-Za-z0-9+/]{36,}={0,2}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b"
)

Check = Callable[[str, Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    applies: Callable[[str], bool]
    check: Check


def _is_list(value: Any) -> bool:
    # The analyzer hands lists as read-only Sequence proxies.
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def imdsv2_required(type_: str, props: Mapping[str, Any]) -> list[str]:
    if _get(props, "metadataOptions", "httpTokens") != "required":
        return ["instance metadata must require IMDSv2 tokens (metadataOptions.httpTokens = required)"]
    return []


def ebs_encrypted(type_: str, props: Mapping[str, Any]) -> list[str]:
    if type_ == "aws:ebs/volume:Volume":
        return [] if props.get("encrypted") is True else ["EBS volume must be encrypted"]
    if type_ == "aws:ec2/instance:Instance":
        root = props.get("rootBlockDevice") or {}
        return [] if root.get("encrypted") is True else ["root block device must be encrypted"]
    out = []
    for i, mapping in enumerate(props.get("blockDeviceMappings") or []):
        ebs = mapping.get("ebs")
        if ebs is not None and str(ebs.get("encrypted")).lower() != "true":
            out.append(f"blockDeviceMappings[{i}] EBS volume must be encrypted")
    return out


def _public(cidrs: list[str]) -> bool:
    return any(ip_network(c, strict=False).prefixlen == 0 for c in cidrs)


def _ingress_rules(type_: str, props: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if type_ == "aws:ec2/securityGroup:SecurityGroup":
        yield from props.get("ingress") or []
    elif type_ == "aws:ec2/securityGroupRule:SecurityGroupRule":
        if props.get("type") == "ingress":
            yield props
    elif type_ == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        yield {
            "protocol": props.get("ipProtocol"),
            "fromPort": props.get("fromPort"),
            "toPort": props.get("toPort"),
            "cidrBlocks": [props["cidrIpv4"]] if props.get("cidrIpv4") else [],
            "ipv6CidrBlocks": [props["cidrIpv6"]] if props.get("cidrIpv6") else [],
        }


def no_public_admin_ingress(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    for rule in _ingress_rules(type_, props):
        if not _public([*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])]):
            continue
        every_port = str(rule.get("protocol")) in ("-1", "all")
        low, high = int(rule.get("fromPort") or 0), int(rule.get("toPort") or 65535)
        for a, b in ADMIN_PORT_RANGES:
            if every_port or (low <= b and a <= high):
                out.append(f"ingress from the internet reaches admin port {a}" + (f"-{b}" if b != a else ""))
    return out


def burst_asg_spot_only_and_bounded(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    dist = _get(props, "mixedInstancesPolicy", "instancesDistribution")
    if dist is None:
        out.append("burst capacity must use a MixedInstancesPolicy (Spot only)")
    else:
        if (dist.get("onDemandBaseCapacity") or 0) != 0 or dist.get(
            "onDemandPercentageAboveBaseCapacity"
        ) != 0:
            out.append("burst capacity must be 100% Spot (on-demand base 0, on-demand above base 0%)")
    max_size = props.get("maxSize")
    if not isinstance(max_size, int | float) or max_size <= 0:
        out.append("the Auto Scaling group needs a positive maxSize")
    elif (props.get("desiredCapacity") or 0) > max_size:
        out.append(f"desiredCapacity {props.get('desiredCapacity')} is above maxSize {max_size}")
    return out


def required_tags(type_: str, props: Mapping[str, Any]) -> list[str]:
    tags = props.get("tags") or {}
    if _is_list(tags):  # autoscaling groups: [{key, value, propagateAtLaunch}]
        tags = {t.get("key"): t.get("value") for t in tags}
    missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
    return [f"missing required tags: {', '.join(missing)}"] if missing else []


def _pod_specs(props: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for path in POD_PATHS.get(str(props.get("kind")), []):
        spec = _get(props, *path)
        if isinstance(spec, Mapping):
            yield spec


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _is_workload(type_: str) -> bool:
    return type_.startswith("kubernetes:") and type_.rsplit(":", 1)[-1] in POD_PATHS


def gpu_pods_have_limits(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    for spec in _pod_specs(props):
        containers = _containers(spec)
        gpu_pod = any(
            GPU in (_get(c, "resources", "requests") or {}) or GPU in (_get(c, "resources", "limits") or {})
            for c in containers
        )
        if not gpu_pod:
            continue
        for c in containers:
            requests = _get(c, "resources", "requests") or {}
            limits = _get(c, "resources", "limits") or {}
            if GPU in requests and limits.get(GPU) != requests[GPU]:
                out.append(f"container {c.get('name')}: {GPU} limit must equal its request")
            if "memory" not in limits:
                out.append(f"container {c.get('name')}: a GPU pod's containers need a memory limit")
    return out


def no_latest_image_tags(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    for spec in _pod_specs(props):
        for c in _containers(spec):
            image = str(c.get("image") or "")
            name = image.split("@", 1)[0].rsplit("/", 1)[-1]
            if "@sha256:" in image:
                continue
            if ":" not in name or name.endswith(":latest"):
                out.append(
                    f"container {c.get('name')}: image {image!r} must be pinned by tag or digest, never latest"
                )
    return out


def _plain_places(type_: str, props: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(where, key, value) for places whose values are stored and shown in clear."""
    if type_ == "kubernetes:core/v1:ConfigMap":
        for key, value in (props.get("data") or {}).items():
            yield f"data.{key}", key, value
    if type_ == "aws:ssm/parameter:Parameter" and props.get("type") != "SecureString":
        yield "value", str(props.get("name") or ""), props.get("value")
    if type_ == "aws:ec2/launchTemplate:LaunchTemplate":
        import base64

        raw = props.get("userData") or ""
        try:
            text = base64.b64decode(raw).decode()
        except ValueError:
            text = str(raw)
        yield "userData", "", text
    if type_ == "kubernetes:helm.sh/v3:Release":
        yield from _walk("values", props.get("values") or {})
    for spec in _pod_specs(props):
        for c in _containers(spec):
            for env in c.get("env") or []:
                if "value" in env:
                    yield (
                        f"container {c.get('name')} env {env.get('name')}",
                        str(env.get("name")),
                        env["value"],
                    )


def _walk(where: str, value: Any) -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, Mapping) or _is_list(v):
                yield from _walk(f"{where}.{k}", v)
            else:
                yield f"{where}.{k}", str(k), v
    elif _is_list(value):
        for i, v in enumerate(value):
            yield from _walk(f"{where}[{i}]", v)


def secrets_not_in_plain_config(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    for where, key, value in _plain_places(type_, props):
        if not isinstance(value, str) or not value:
            continue
        if SECRET_VALUE.search(value):
            out.append(
                f"{where} holds a secret in clear: use a Kubernetes Secret, a SecureString or a Pulumi secret"
            )
        elif SECRET_NAME.search(key) and not value.startswith("/"):
            # A key named like a secret holding a literal (a path to one, like an SSM name, is fine).
            out.append(f"{where} looks like a secret set in clear")
    return out


def plain_config_secrets(config: Mapping[str, Any]) -> list[str]:
    """Stack config keys holding a secret in clear; `pulumi config set --secret` stores `{secure: ...}`.

    The analyzer never sees stack config, so `gpufleet plan` and the tests run this on the files.
    """
    out = []
    for key, value in config.items():
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            continue
        text = value if isinstance(value, str) else ""
        if SECRET_VALUE.search(text) or (SECRET_NAME.search(key.split(":")[-1]) and value not in (None, "")):
            out.append(f"config {key} is a secret in clear: set it with `pulumi config set --secret`")
    return out


RULES = [
    Rule(
        "imdsv2-required",
        "EC2 instances and launch templates require IMDSv2 tokens",
        lambda t: t in ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance"),
        imdsv2_required,
    ),
    Rule(
        "ebs-encrypted",
        "EBS volumes are encrypted",
        lambda t: (
            t
            in ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance", "aws:ebs/volume:Volume")
        ),
        ebs_encrypted,
    ),
    Rule(
        "no-public-admin-ingress",
        "No ingress from 0.0.0.0/0 or ::/0 to SSH, RDP, the API server, etcd or the kubelet",
        lambda t: (
            t
            in (
                "aws:ec2/securityGroup:SecurityGroup",
                "aws:ec2/securityGroupRule:SecurityGroupRule",
                "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            )
        ),
        no_public_admin_ingress,
    ),
    Rule(
        "burst-asg-spot-only",
        "Auto Scaling groups are 100% Spot with a bounded size",
        lambda t: t == "aws:autoscaling/group:Group",
        burst_asg_spot_only_and_bounded,
    ),
    Rule(
        "required-tags",
        "Cloud resources carry site, env, owner and cost-center tags",
        TAGGABLE.__contains__,
        required_tags,
    ),
    Rule(
        "gpu-pods-have-limits",
        "Pods that use GPUs set GPU and memory limits on every container",
        _is_workload,
        gpu_pods_have_limits,
    ),
    Rule(
        "no-latest-image-tags",
        "Container images are pinned, never latest or untagged",
        _is_workload,
        no_latest_image_tags,
    ),
    Rule(
        "secrets-not-in-plain-config",
        "Secrets are not set in ConfigMaps, plain SSM parameters, user data, Helm values or env literals",
        lambda t: (
            t
            in (
                "kubernetes:core/v1:ConfigMap",
                "aws:ssm/parameter:Parameter",
                "aws:ec2/launchTemplate:LaunchTemplate",
                "kubernetes:helm.sh/v3:Release",
            )
            or _is_workload(t)
        ),
        secrets_not_in_plain_config,
    ),
]


def violations(rule: Rule, type_: str, props: Mapping[str, Any]) -> list[str]:
    return rule.check(type_, props) if rule.applies(type_) else []


def _validate(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        for message in violations(rule, args.resource_type, args.props):
            report(message, args.urn)

    return validate


def resource_policies() -> list[Policy]:
    return [
        ResourceValidationPolicy(
            name=r.name,
            description=r.description,
            validate=_validate(r),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for r in RULES
    ]

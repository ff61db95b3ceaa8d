"""Policy rules as pure checks over (resource type, inputs), wrapped as pulumi_policy policies.

The analyzer hands a rule the resource's inputs with secrets already opened, so "secrets not in
plain config" looks for secret-shaped values in places that are never encrypted or hidden.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_network
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from gpufleet.model.errors import InputError
from gpufleet.plan.aws import ADMIN_PORTS, STAR_RESOURCE_ACTIONS, TRITON_PORTS

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
SECRET_NAME = re.compile(
    r"(token|password|passwd|secret|private[_-]?key|api[_-]?key|credential|kubeconfig|admin\.conf)", re.I
)
# Values that are secrets whatever key holds them: kubeadm bootstrap tokens, Ceph keys, PEM keys, AWS keys.
SECRET_VALUE = re.compile(
    r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b|\bAQ[A-Za-z0-9+/]{36,}={0,2}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b"
)

# A kubeconfig's credentials: a client key, a bearer token, a password (YAML or JSON form).
KUBECONFIG_CREDENTIAL = re.compile(
    r"[\"']?\b(client-key-data|client-key|token|id-token|refresh-token|password)[\"']?\s*:\s*[\"']?[A-Za-z0-9+/=._~-]{8,}"
)
# Base64 of "-----BEGIN": how a PEM key sits in a kubeconfig's client-key-data or a binaryData value.
BASE64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/]+={0,2}")
# Environments whose workloads must name their images by digest; a stack that cannot be
# resolved to one of the others counts as production.
PRODUCTION_ENVIRONMENTS = ("prod", "dr")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Widest a source may be: a /8 of IPv4 (or /32 of IPv6) in all; public sources at most a /24, and
# none at all to an admin port.
WIDEST_SOURCE = {4: 2**24, 6: 2**96}
WIDEST_PUBLIC = {4: 2**8, 6: 2**72}
IAM_IDENTITY_POLICIES = {
    f"aws:iam/{t}"
    for t in ("rolePolicy:RolePolicy", "policy:Policy", "userPolicy:UserPolicy", "groupPolicy:GroupPolicy")
}
IAM_ATTACHMENTS = {
    f"aws:iam/{t}"
    for t in (
        "rolePolicyAttachment:RolePolicyAttachment",
        "userPolicyAttachment:UserPolicyAttachment",
        "groupPolicyAttachment:GroupPolicyAttachment",
        "policyAttachment:PolicyAttachment",
    )
}
AWS_MANAGED_POLICY = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(.+)$")
ADMIN_MANAGED_POLICIES = {"AdministratorAccess", "PowerUserAccess", "IAMFullAccess"}
# Resource policies: where a principal is named.
RESOURCE_POLICIES = {
    "aws:sqs/queuePolicy:QueuePolicy": "policy",
    "aws:sqs/queue:Queue": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
    "aws:sns/topic:Topic": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:kms/key:Key": "policy",
    "aws:iam/role:Role": "assumeRolePolicy",
}
# A service principal acts for anyone's resources unless a condition names the source.
SOURCE_CONDITION_KEYS = {"aws:sourcearn", "aws:sourceaccount", "aws:sourceowner", "aws:sourceorgid"}

Check = Callable[[str, Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    applies: Callable[[str], bool]
    check: Check
    # Which stacks the rule judges, by their site's environment: all, production only, or the others.
    stacks: str = "all"


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


def imds_hop_limit_1(type_: str, props: Mapping[str, Any]) -> list[str]:
    hops = _get(props, "metadataOptions", "httpPutResponseHopLimit")
    if hops != 1:
        return [
            f"instance metadata hop limit is {hops if hops is not None else 'the AMI default'}: "
            "set metadataOptions.httpPutResponseHopLimit = 1 so pods behind the CNI get no instance credentials"
        ]
    return []


def _document(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = document.get("Statement") or []
    return [found] if isinstance(found, Mapping) else [s for s in found if isinstance(s, Mapping)]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if _is_list(value) else []


def _identity_documents(type_: str, props: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if type_ in IAM_IDENTITY_POLICIES:
        yield "policy", _document(props.get("policy"))
    if type_ == "aws:iam/role:Role":
        for i, inline in enumerate(props.get("inlinePolicies") or []):
            yield f"inlinePolicies[{i}]", _document(inline.get("policy"))


# An ARN scoped to one account, region and service whose resource part ends in a path wildcard
# (`arn:aws:s3:::models/*`, `...:parameter/gpufleet/dc1/*`) names one prefix, not everything.
SCOPED_PREFIX = re.compile(r"^arn:[a-z-]+:[a-z0-9-]+:[a-z0-9-]*:[0-9]*:[^*]+/\*$")


def _wild_resource(resource: str) -> bool:
    return "*" in resource and not SCOPED_PREFIX.match(resource)


def iam_least_privilege(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    for where, document in _identity_documents(type_, props):
        for i, st in enumerate(_statements(document)):
            if st.get("Effect") != "Allow":
                continue
            at = f"{where} Statement[{i}]"
            if "NotAction" in st or "NotResource" in st:
                out.append(f"{at}: Allow with NotAction/NotResource grants everything else")
            actions = _strings(st.get("Action"))
            wild = [a for a in actions if "*" in a]
            if wild:
                out.append(f"{at}: wildcard actions {wild}: name each action")
            resources = _strings(st.get("Resource"))
            broad = [a for a in actions if a not in STAR_RESOURCE_ACTIONS]
            if [r for r in resources if _wild_resource(r)] and broad:
                out.append(
                    f"{at}: {sorted(broad)} on a wildcard resource: name the resource's ARN "
                    "(only actions AWS authorises on no narrower resource may use *)"
                )
    return out


def no_admin_policies(type_: str, props: Mapping[str, Any]) -> list[str]:
    arns = [str(props.get("policyArn") or "")] if type_ in IAM_ATTACHMENTS else []
    if type_ == "aws:iam/role:Role":
        arns += _strings(props.get("managedPolicyArns"))
    out = []
    for arn in arns:
        managed = AWS_MANAGED_POLICY.match(arn)
        if managed is None:
            continue
        name = managed.group(1).rsplit("/", 1)[-1]
        kind = "an admin policy" if name in ADMIN_MANAGED_POLICIES else "an AWS managed policy"
        out.append(f"{name} is {kind}, broader than one resource: grant a scoped inline policy instead")
    return out


def _principals(principal: Any) -> tuple[bool, list[str]]:
    """(public, service principals) of a statement's Principal."""
    if principal == "*":
        return True, []
    if not isinstance(principal, Mapping):
        return False, []
    public = "*" in _strings(principal.get("AWS")) or "*" in _strings(principal.get("CanonicalUser"))
    return public, _strings(principal.get("Service"))


def no_public_principals(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    document = _document(props.get(RESOURCE_POLICIES[type_]))
    for i, st in enumerate(_statements(document)):
        if st.get("Effect") != "Allow":
            continue
        public, services = _principals(st.get("Principal"))
        if public or "NotPrincipal" in st:
            out.append(f"Statement[{i}]: a public principal (*) may act on this resource")
        keys = {k.lower() for cond in (st.get("Condition") or {}).values() for k in (cond or {})}
        if services and type_ != "aws:iam/role:Role" and not keys & SOURCE_CONDITION_KEYS:
            out.append(
                f"Statement[{i}]: service principals {services} without an aws:SourceArn or "
                "aws:SourceAccount condition act for any account's resources"
            )
    return out


def _networks(cidrs: list[str]) -> list[IPv4Network | IPv6Network]:
    out = []
    for c in cidrs:
        try:
            out.append(ip_network(c, strict=False))
        except ValueError:
            continue
    return out


def _size(nets: list[IPv4Network | IPv6Network], version: int, public_only: bool = False) -> int:
    merged = list(collapse_addresses([n for n in nets if n.version == version]))  # type: ignore[type-var]
    if public_only:
        merged = [part for n in merged for part in _public_parts(n)]
    return sum(n.num_addresses for n in merged)


PRIVATE = [
    ip_network(c)
    for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fc00::/7")
]


def _public_parts(net: IPv4Network | IPv6Network) -> list[IPv4Network | IPv6Network]:
    parts = [net]
    for private in PRIVATE:
        if private.version != net.version:
            continue
        next_parts: list[IPv4Network | IPv6Network] = []
        for part in parts:
            if part.subnet_of(private):  # type: ignore[arg-type]
                continue
            if private.subnet_of(part):  # type: ignore[arg-type]
                next_parts += part.address_exclude(private)  # type: ignore[arg-type]
            else:
                next_parts.append(part)
        parts = next_parts
    return parts


def _covers(rule: Mapping[str, Any], port: int) -> bool:
    if str(rule.get("protocol")) in ("-1", "all"):
        return True
    return int(rule.get("fromPort") or 0) <= port <= int(rule.get("toPort") or 65535)


def no_wide_ingress(type_: str, props: Mapping[str, Any]) -> list[str]:
    """No port open to a wide source, whole or split into pieces (0.0.0.0/1 + 128.0.0.0/1)."""
    rules = [r for r in _ingress_rules(type_, props) if r.get("cidrBlocks") or r.get("ipv6CidrBlocks")]
    ports = sorted(
        {int(r.get("fromPort") or 0) for r in rules}
        | {p for a, b in ADMIN_PORT_RANGES for p in (a, b)}
        | set(TRITON_PORTS)
    )
    admin = {p for p in ports if any(a <= p <= b for a, b in ADMIN_PORT_RANGES)}
    out = []
    for port in ports:
        nets = _networks(
            [
                c
                for r in rules
                if _covers(r, port)
                for c in (*(r.get("cidrBlocks") or []), *(r.get("ipv6CidrBlocks") or []))
            ]
        )
        for version in (4, 6):
            total, public = _size(nets, version), _size(nets, version, public_only=True)
            what = "admin " if port in admin else ""
            if total > WIDEST_SOURCE[version]:
                out.append(f"{what}port {port} is open to {total} IPv{version} addresses: wider than a /8")
            elif public > (0 if port in admin else WIDEST_PUBLIC[version]):
                out.append(f"{what}port {port} is open to {public} public IPv{version} addresses")
    return out


def securestring_customer_key(type_: str, props: Mapping[str, Any]) -> list[str]:
    if props.get("type") != "SecureString":
        return []
    key = str(props.get("keyId") or "")
    if not key or key.endswith("alias/aws/ssm"):
        return [
            "SecureString uses the account's default key: set keyId to the stack's customer-managed KMS key"
        ]
    return []


def _environment(stack: str) -> str | None:
    # Keyed by where inventories and stacks are read from, so a run that moved them (a test's
    # GPUFLEET_INVENTORIES or working directory) never answers from another place's cache.
    return _environment_at(stack, os.environ.get("GPUFLEET_INVENTORIES", ""), os.getcwd())


@cache
def _environment_at(stack: str, _inventories: str, _cwd: str) -> str | None:
    from gpufleet.inventory.stacks import load_stack

    try:
        return load_stack(stack).inventory.site.environment
    except (InputError, OSError):
        return None


def _production(urn: str) -> bool:
    """A stack that does not resolve to a non-production site counts as production."""
    stack = urn.removeprefix("urn:pulumi:").split("::", 1)[0]
    return _environment(stack) not in ("lab", "dev", "staging")


def images_by_digest(type_: str, props: Mapping[str, Any]) -> list[str]:
    """Each unpinned container image once (an LWS's leader and worker templates repeat them), with
    the way to pin it: every workload image comes from the site's BOM."""
    unpinned = {
        (str(c.get("name")), str(c.get("image") or "")): None
        for spec in _pod_specs(props)
        for c in _containers(spec)
        if not DIGEST.search(str(c.get("image") or ""))
    }
    return [
        f"container {name}: image {image!r} has no digest: append the @sha256:<digest> its registry "
        f"reports (`crane digest {image}`) to {_bom_key(image)} in the site's nodes.yaml"
        for name, image in unpinned
    ]


BOM_IMAGES = ("triton_image", "gateway_image")


@cache
def _bom_key(image: str) -> str:
    """The BOM entry a site names this image in (`bom.<key>`), or a plain pointer to the BOM."""
    from gpufleet.inventory.load import load_inventory, site_names

    for site in site_names():
        try:
            bom = load_inventory(site).bom
        except (InputError, OSError):
            continue
        for key in BOM_IMAGES:
            if getattr(bom, key) == image:
                return f"bom.{key}"
    return "the bom entry that names it"


def _plain_places(type_: str, props: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(where, key, value) for places whose values are stored and shown in clear."""
    if type_ == "kubernetes:core/v1:ConfigMap":
        for key, value in (props.get("data") or {}).items():
            yield f"data.{key}", key, value
        for key, value in (props.get("binaryData") or {}).items():
            yield f"binaryData.{key}", key, _unbase64(str(value)) or value
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


def _unbase64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError):
        return ""


def _holds_secret(text: str) -> bool:
    if SECRET_VALUE.search(text):
        return True
    # A kubeconfig (clusters and users) that carries a credential rather than an exec plugin.
    if "clusters" in text and "users" in text and KUBECONFIG_CREDENTIAL.search(text):
        return True
    return any(SECRET_VALUE.search(_unbase64(m.group(0))) for m in BASE64_PEM.finditer(text))


def secrets_not_in_plain_config(type_: str, props: Mapping[str, Any]) -> list[str]:
    out = []
    for where, key, value in _plain_places(type_, props):
        if not isinstance(value, str) or not value:
            continue
        if _holds_secret(value):
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
        "imds-hop-limit-1",
        "Instance metadata answers the host only (hop limit 1), never a pod behind the CNI",
        lambda t: t in ("aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance"),
        imds_hop_limit_1,
    ),
    Rule(
        "no-wide-ingress",
        "No port open to more than a /8, or to public addresses wider than a /24, whole or split; "
        "admin ports (SSH, RDP, API server, etcd, kubelet) to no public address at all",
        lambda t: (
            t
            in (
                "aws:ec2/securityGroup:SecurityGroup",
                "aws:ec2/securityGroupRule:SecurityGroupRule",
                "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            )
        ),
        no_wide_ingress,
    ),
    Rule(
        "iam-least-privilege",
        "IAM policies name their actions, and their resources unless AWS authorises the action on * only",
        lambda t: t in IAM_IDENTITY_POLICIES or t == "aws:iam/role:Role",
        iam_least_privilege,
    ),
    Rule(
        "no-admin-policies",
        "No AWS managed policies (AdministratorAccess and the like): scoped inline policies only",
        lambda t: t in IAM_ATTACHMENTS or t == "aws:iam/role:Role",
        no_admin_policies,
    ),
    Rule(
        "no-public-principals",
        "Resource and trust policies name no public principal, and service principals carry a source condition",
        RESOURCE_POLICIES.__contains__,
        no_public_principals,
    ),
    Rule(
        "securestring-customer-key",
        "SSM SecureStrings are encrypted with a customer-managed KMS key",
        lambda t: t == "aws:ssm/parameter:Parameter",
        securestring_customer_key,
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
        stacks="other",
    ),
    Rule(
        "images-by-digest-in-production",
        "Production (prod, dr) and unresolvable stacks name every container image by digest",
        _is_workload,
        images_by_digest,
        stacks="production",
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


def violations(rule: Rule, type_: str, props: Mapping[str, Any], urn: str) -> list[str]:
    if not rule.applies(type_):
        return []
    if rule.stacks != "all" and (rule.stacks == "production") != _production(urn):
        return []
    return rule.check(type_, props)


def _validate(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        for message in violations(rule, args.resource_type, args.props, args.urn):
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

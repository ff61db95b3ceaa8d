"""Which input changes make a provider replace a resource rather than update it in place.

A structural plan has no provider to ask: these are the providers' own rules, written down from
their sources for the resource types the stacks declare. pulumi-aws bridges terraform-provider-aws,
whose schema marks such arguments `ForceNew: true`; pulumi-kubernetes replaces an object whose
name or namespace changes; the gpufleet dynamic providers say it in their own `diff` (`replaces`).
A type or field not listed here is shown as an update: `pulumi preview` remains the authority
(other ForceNew arguments, Kubernetes fields the API server keeps immutable).
"""

from __future__ import annotations

from components.providers import CLUSTER_IDENTITY, NODE_IDENTITY

# Input paths (Pulumi's camelCase) that force a new resource, per type token, read from
# terraform-provider-aws's schemas (`ForceNew: true`) for the types the burst stack declares:
FORCE_NEW: dict[str, tuple[str, ...]] = {
    # internal/service/ec2/customer_gateway.go: bgp_asn, device_name, ip_address, type
    "aws:ec2/customerGateway:CustomerGateway": ("bgpAsn", "deviceName", "ipAddress", "type"),
    # internal/service/ec2/vpc_subnet.go: availability_zone(_id), cidr_block, vpc_id, outpost_arn,
    # the IPAM pools and netmask lengths, ipv6_native
    "aws:ec2/subnet:Subnet": (
        "availabilityZone",
        "availabilityZoneId",
        "cidrBlock",
        "vpcId",
        "outpostArn",
        "ipv4IpamPoolId",
        "ipv4NetmaskLength",
        "ipv6IpamPoolId",
        "ipv6NetmaskLength",
        "ipv6Native",
    ),
    # internal/service/ec2/vpc_security_group.go: description, name, name_prefix, vpc_id (the rules
    # themselves update in place)
    "aws:ec2/securityGroup:SecurityGroup": ("description", "name", "namePrefix", "vpcId"),
    # The dynamic providers' own diff (`replaces`): another machine, another cluster.
    "pulumi-python:dynamic/gpufleet:Node": NODE_IDENTITY,
    "pulumi-python:dynamic/gpufleet:CephCluster": CLUSTER_IDENTITY,
    "pulumi-python:dynamic/gpufleet:KubernetesCluster": CLUSTER_IDENTITY,
}

# pulumi-kubernetes replaces an object whose name or namespace changes (it is another object).
K8S_IDENTITY: tuple[str, ...] = ("metadata.name", "metadata.namespace")


def forces_replacement(type_: str, path: str) -> bool:
    """Whether changing the input at `path` (dotted, `[i]` for list items) replaces the resource."""
    if type_.startswith("kubernetes:") and type_ != "kubernetes:helm.sh/v3:Release":
        keys = K8S_IDENTITY
    else:
        keys = FORCE_NEW.get(type_, ())
    return any(path == k or path.startswith(f"{k}.") or path.startswith(f"{k}[") for k in keys)

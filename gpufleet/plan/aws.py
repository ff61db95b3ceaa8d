"""What the AWS Spot burst layer must become: network, fleet, AMI, join, tags. Pure.

The burst nodes join the on-prem Kubernetes cluster over a site-to-site VPN and serve the
site's model, or, where that model does not fit enough Spot instance types, the largest smaller
model that does: a Spot fleet drawn from few pools is reclaimed all at once.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from ipaddress import IPv4Network, ip_address
from typing import Any

import yaml

from gpufleet.model.catalog import (
    AWS_GPU_INSTANCES,
    GPU_CATALOG,
    SERVING_MODELS,
    GPUModel,
    decode_rate,
    replica_shape,
)
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Inventory, Taint
from gpufleet.model.stack import GpufleetConfig
from gpufleet.plan.node import GPU_TAINT, Frozen
from gpufleet.plan.site import plan_serving, spot_max_price

# Spot capacity is drawn from pools of (instance type, AZ); fewer than six types leaves the
# group's allocation too little room when a pool is reclaimed.
MIN_SPOT_TYPES = 6
AZ_SUFFIXES = ("a", "b", "c")
# Ports only the on-prem network may reach: SSH, the kubelet API.
ADMIN_PORTS = (22, 10250)
TRITON_PORTS = (8000, 8002)
# What Calico needs between on-prem and burst nodes (docs/pod-network.md): VXLAN, BGP, Typha.
CNI_PORTS = (("udp", 4789, "Calico VXLAN"), ("tcp", 179, "Calico BGP"), ("tcp", 5473, "Calico Typha"))
DNS_PORT = 53
VPC_CANDIDATES = [IPv4Network(f"172.{n}.0.0/16") for n in range(16, 32)]
SPOT_TAINT = Taint(key="gpufleet.io/capacity", value="spot", effect="NoSchedule")
JOIN_TOKEN_PARAMETER = "/gpufleet/{site}/kubeadm/join-token"
CA_HASH_PARAMETER = "/gpufleet/{site}/kubeadm/ca-cert-hash"
ROOT_VOLUME_GIB = 500
# Burst nodes' local NVMe on the DLAMI, where their user data copies the model from S3.
BURST_NVME = "/opt/dlami/nvme"
WEIGHTS_PARAMETER = "/gpufleet/{site}/burst/weights"
# The baked image (docs/burst-boot.md): where the node scripts sit, the build instance (no GPU
# needed to install packages and pull an image) and the image's root volume (DLAMI plus the
# serving image's layers; a node's launch template gives it ROOT_VOLUME_GIB).
NODE_SCRIPTS = "/opt/gpufleet"
NODE_SCRIPT_FILES = ("model_cache.py", "burst_weights.py")
BUILDER_INSTANCE_TYPE = "m6i.2xlarge"
IMAGE_ROOT_GIB = 200
IMAGE_BUILDER_LOGS = "imagebuilder-logs"
# Image Builder's limit on a component document given inline.
COMPONENT_DATA_MAX = 16_000
# Time the termination lifecycle hook holds an instance while its node drains.
DRAIN_HEARTBEAT_S = 300


class InstanceChoice(Frozen):
    name: str
    gpu: GPUModel
    gpus: int
    gpu_memory_gib: int
    replicas: int  # serving replicas one instance holds
    # What one instance serves, in replicas of the site's own (on-prem) model and shape, by the
    # memory-bandwidth roofline (catalog.decode_rate): a distilled model on L40S is not an H100's.
    capacity: float


class BurstFleet(Frozen):
    model: str
    hf_repo: str
    revision: str
    fallback: bool  # True when burst nodes serve a smaller model than the site
    tensor_parallel: int
    instances: list[InstanceChoice]

    @property
    def instance_types(self) -> list[str]:
        return [i.name for i in self.instances]

    @property
    def capacity(self) -> dict[str, float]:
        """On-prem replica equivalents per instance, by type."""
        return {i.name: i.capacity for i in self.instances}


class Subnet(Frozen):
    az: str
    cidr: str


class BurstNetwork(Frozen):
    vpc_cidr: str
    public: Subnet
    private: list[Subnet]
    onprem_cidrs: list[str]  # routed through the VPN: nodes, pods, services, storage
    admin_cidr: str  # the only source of SSH and kubelet traffic
    node_cidr: str  # on-prem node addresses: the CNI's peers
    pod_cidr: str


class Resolver(Frozen):
    """Route 53 Resolver forwarding of the control-plane name to the site's DNS servers."""

    domain: str
    target_ips: list[str]


class AwsBurstPlan(Frozen):
    site: str
    region: str
    tags: dict[str, str]
    network: BurstNetwork
    vpn_gateway: str
    vpn_asn: int
    fleet: BurstFleet
    ami_parameter: str  # name:version: the baked image's parent
    triton_image: str  # pre-pulled into the baked image's containerd, as the BOM pins it
    weights_parameter: str  # SSM parameter: s3://bucket/prefix of the burst model's revision
    weights_prefix: str  # <org>/<name>/<revision> in the weights bucket
    weights_dest: str  # where the node copies it: the hostPath the serving pods mount
    resolver: Resolver | None  # None: the control-plane endpoint is an address
    desired_nodes: int
    max_nodes: int
    # The group's SpotMaxPrice: with it max_nodes nodes can never cost more than the cap.
    spot_max_price_usd: float | None
    join_token_parameter: str
    ca_hash_parameter: str
    api_endpoint: str
    kubernetes_version: str
    node_labels: dict[str, str]
    node_taints: list[Taint]
    root_volume_gib: int
    drain_heartbeat_s: int
    user_data: str


def cloud_tags(inv: Inventory, config: GpufleetConfig) -> dict[str, str]:
    """The tags every cloud resource carries (the policy pack requires them)."""
    return {
        "site": inv.site.name,
        "env": inv.site.environment,
        "owner": config.owner,
        "cost-center": config.cost_center,
        "managed-by": "gpufleet",
    }


def plan_fleet(inv: Inventory, source: str) -> BurstFleet:
    """The site's model on ≥ MIN_SPOT_TYPES instance types, else the largest smaller model that is."""
    burst, serving = inv.site.burst, inv.site.serving
    if burst is None or serving is None:
        raise InputError(source, [Problem(("site", "burst"), "burst needs both site.burst and site.serving")])
    candidates = burst.instance_types or list(AWS_GPU_INSTANCES)
    unknown = [t for t in candidates if t not in AWS_GPU_INSTANCES]
    if unknown:
        raise InputError(
            source, [Problem(("site", "burst", "instance_types"), f"unknown instance types {unknown}")]
        )
    ladder = sorted(SERVING_MODELS, key=lambda m: -SERVING_MODELS[m].memory_gib)
    onprem = plan_serving(inv)
    shape = onprem.shape if onprem is not None else None
    # Without GPU nodes on-prem there is nothing to compare with: an H100 replica stands in.
    unit = (
        decode_rate(serving.model, shape.gpu, shape.tensor_parallel)
        if shape is not None
        else decode_rate(
            serving.model, GPUModel.H100_SXM, replica_shape(serving.model, GPUModel.H100_SXM).tensor_parallel
        )
    )
    for model in ladder[ladder.index(serving.model) :]:
        need = SERVING_MODELS[model].memory_gib
        tp = 1
        while tp <= max(AWS_GPU_INSTANCES[t].gpus for t in candidates):
            per_gpu = math.ceil(need / tp)
            fits = [
                InstanceChoice(
                    name=t,
                    gpu=AWS_GPU_INSTANCES[t].gpu,
                    gpus=AWS_GPU_INSTANCES[t].gpus,
                    gpu_memory_gib=GPU_CATALOG[AWS_GPU_INSTANCES[t].gpu].memory_gib,
                    replicas=AWS_GPU_INSTANCES[t].gpus // tp,
                    capacity=round(
                        AWS_GPU_INSTANCES[t].gpus
                        // tp
                        * decode_rate(model, AWS_GPU_INSTANCES[t].gpu, tp)
                        / unit,
                        3,
                    ),
                )
                for t in candidates
                if AWS_GPU_INSTANCES[t].gpus >= tp
                and GPU_CATALOG[AWS_GPU_INSTANCES[t].gpu].memory_gib >= per_gpu
            ]
            if len(fits) >= MIN_SPOT_TYPES:
                return _fleet(inv, source, model, tp, fits)
            tp *= 2
    raise InputError(
        source,
        [
            Problem(
                ("site", "burst", "instance_types"),
                f"no catalogued model fits {MIN_SPOT_TYPES} or more of these instance types",
            )
        ],
    )


def _fleet(inv: Inventory, source: str, model: str, tp: int, fits: list[InstanceChoice]) -> BurstFleet:
    fallback = model != (inv.site.serving.model if inv.site.serving else model)
    revision = inv.bom.burst_model_revision if fallback else inv.bom.model_revision
    if revision is None:
        key = "burst_model_revision" if fallback else "model_revision"
        raise InputError(source, [Problem(("bom", key), f"burst nodes serve {model}: pin its revision")])
    # Cheapest per replica of capacity first: the group's priority order. `burstNodes` counts nodes,
    # so the group must prefer the types that bring the most per dollar (capacity-optimized-
    # prioritized); priced per instance, Spot allocation would start with the smallest GPUs.
    fits = sorted(fits, key=lambda i: (AWS_GPU_INSTANCES[i.name].on_demand_usd_hour / i.capacity, i.name))
    return BurstFleet(
        model=model,
        hf_repo=SERVING_MODELS[model].hf_repo,
        revision=revision,
        fallback=fallback,
        tensor_parallel=tp,
        instances=fits,
    )


def plan_network(inv: Inventory) -> BurstNetwork:
    site = inv.site
    onprem = [site.networks.management.cidr, site.kubernetes.pod_cidr, site.kubernetes.service_cidr]
    if site.networks.storage is not None:
        onprem.append(site.networks.storage.cidr)
    vpc = next(c for c in VPC_CANDIDATES if not any(c.overlaps(o) for o in onprem))
    subnets = list(vpc.subnets(new_prefix=20))
    region = site.burst.region if site.burst else ""
    return BurstNetwork(
        vpc_cidr=str(vpc),
        public=Subnet(az=f"{region}{AZ_SUFFIXES[0]}", cidr=str(subnets[0])),
        private=[Subnet(az=f"{region}{s}", cidr=str(subnets[i + 1])) for i, s in enumerate(AZ_SUFFIXES)],
        onprem_cidrs=[str(c) for c in onprem],
        admin_cidr=str(site.networks.management.cidr),
        node_cidr=str(site.networks.management.cidr),
        pod_cidr=str(site.kubernetes.pod_cidr),
    )


def plan_resolver(inv: Inventory) -> Resolver | None:
    """Burst nodes join `host:port`: a name only the site's DNS knows is forwarded there."""
    host = inv.site.kubernetes.control_plane_endpoint.rsplit(":", 1)[0]
    try:
        ip_address(host)
        return None
    except ValueError:
        return Resolver(domain=host, target_ips=[str(ip) for ip in inv.site.networks.dns])


def plan_burst(inv: Inventory, config: GpufleetConfig, source: str) -> AwsBurstPlan:
    """`source` is the stack file: bad input names it and the key path."""
    burst = inv.site.burst
    if burst is None:
        raise InputError(source, [Problem(("config", "gpufleet:site"), f"site {inv.site.name} has no burst")])
    problems = []
    if burst.vpn_gateway is None:
        problems.append(
            Problem(("site", "burst", "vpn_gateway"), "a burst stack needs the on-prem VPN endpoint")
        )
    if inv.bom.burst_ami is None:
        problems.append(Problem(("bom", "burst_ami"), "a burst stack needs the pinned GPU AMI parameter"))
    if inv.bom.triton_image is None:
        problems.append(
            Problem(("bom", "triton_image"), "the burst image pre-pulls the serving image: pin it")
        )
    resolver = plan_resolver(inv)
    if resolver is not None and not resolver.target_ips:
        problems.append(
            Problem(
                ("site", "networks", "dns"),
                f"burst nodes resolve {resolver.domain} through the site's DNS: list its servers",
            )
        )
    if problems:
        raise InputError(source, problems)
    fleet = plan_fleet(inv, source)
    site = inv.site.name
    labels = {
        "gpufleet.io/site": site,
        "gpufleet.io/environment": inv.site.environment,
        "gpufleet.io/capacity": "spot",
    }
    plan = AwsBurstPlan(
        site=site,
        region=burst.region,
        tags=cloud_tags(inv, config),
        network=plan_network(inv),
        vpn_gateway=str(burst.vpn_gateway),
        vpn_asn=burst.vpn_asn,
        fleet=fleet,
        ami_parameter=str(inv.bom.burst_ami),
        triton_image=str(inv.bom.triton_image),
        weights_parameter=WEIGHTS_PARAMETER.format(site=site),
        weights_prefix=f"{fleet.hf_repo}/{fleet.revision}",
        weights_dest=f"{BURST_NVME}/weights/{fleet.hf_repo}/{fleet.revision}",
        resolver=resolver,
        desired_nodes=config.burst_nodes,
        max_nodes=burst.max_nodes,
        spot_max_price_usd=spot_max_price(burst),
        join_token_parameter=JOIN_TOKEN_PARAMETER.format(site=site),
        ca_hash_parameter=CA_HASH_PARAMETER.format(site=site),
        api_endpoint=inv.site.kubernetes.control_plane_endpoint,
        kubernetes_version=inv.bom.kubernetes,
        node_labels=labels,
        node_taints=[SPOT_TAINT, GPU_TAINT],
        root_volume_gib=ROOT_VOLUME_GIB,
        drain_heartbeat_s=DRAIN_HEARTBEAT_S,
        user_data="",
    )
    return plan.model_copy(update={"user_data": user_data(plan)})


def user_data(plan: AwsBurstPlan) -> str:
    """Boot script: copy and check the burst model's weights, read the join token from SSM
    (SecureString) and join with burst labels and taints.

    The token never appears in user data, launch template or logs; the instance role may read
    only the join and weights parameters and the weights' prefix.
    """
    gpu_cases = "\n".join(
        f"  {i.name}) GPU_MODEL={i.gpu.value}; GPU_MEM={i.gpu_memory_gib}; GPUS={i.gpus} ;;"
        for i in plan.fleet.instances
    )
    labels = ",".join(f"{k}={v}" for k, v in sorted(plan.node_labels.items()))
    taints = "\n".join(
        f'    - {{key: {t.key}, value: "{t.value}", effect: {t.effect}}}' for t in plan.node_taints
    )
    return f"""#!/bin/bash
set -euo pipefail
IMDS=http://169.254.169.254/latest
TOKEN=$(curl -sX PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
TYPE=$(curl -sH "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/meta-data/instance-type")
case "$TYPE" in
{gpu_cases}
  *) echo "instance type $TYPE is not in the burst fleet" >&2; exit 1 ;;
esac
# The baked image carries kubeadm and kubelet at the BOM's version, containerd with the nvidia
# runtime, the serving image and the node scripts: nothing is installed or pulled here.
# The burst model's pinned revision from S3 onto local NVMe, checked against its manifest and
# safetensors index; a copy that does not check out stops here, so the node never joins.
for _ in $(seq 60); do mountpoint -q {BURST_NVME} && break; sleep 1; done
mountpoint -q {BURST_NVME} || {{ echo "$TYPE: no instance store at {BURST_NVME}" >&2; exit 1; }}
python3 {NODE_SCRIPTS}/burst_weights.py fetch --region {plan.region} \\
  --parameter {plan.weights_parameter} --dest {plan.weights_dest}
JOIN_TOKEN=$(aws ssm get-parameter --region {plan.region} --with-decryption \\
  --name {plan.join_token_parameter} --query Parameter.Value --output text)
CA_HASH=$(aws ssm get-parameter --region {plan.region} \\
  --name {plan.ca_hash_parameter} --query Parameter.Value --output text)
install -d -m 0755 /etc/kubernetes
umask 077
cat > /etc/kubernetes/kubeadm-join.yaml <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: {plan.api_endpoint}
    token: $JOIN_TOKEN
    caCertHashes: [$CA_HASH]
nodeRegistration:
  kubeletExtraArgs:
    - name: node-labels
      value: {labels},gpufleet.io/gpu-model=$GPU_MODEL,gpufleet.io/gpu-memory-gib=$GPU_MEM,gpufleet.io/gpu-count=$GPUS
  taints:
{taints}
EOF
kubeadm join --config /etc/kubernetes/kubeadm-join.yaml
rm -f /etc/kubernetes/kubeadm-join.yaml
"""


def image_component(plan: AwsBurstPlan, scripts: Mapping[str, str]) -> str:
    """The baked burst image's Image Builder component (an AWSTOE document), rendered by a serialiser.

    Build: kubeadm and kubelet at the BOM's version (held), containerd with the nvidia runtime as
    its default, boto3 for the weights script, the serving image pulled into containerd's k8s.io
    namespace (the kubelet's) exactly as the BOM pins it, and the node scripts. Validate: each of
    them is there, so an image that lacks one is never distributed.
    """
    version = plan.kubernetes_version
    minor = ".".join(version.split(".")[:2])
    apt = f"https://pkgs.k8s.io/core:/stable:/v{minor}/deb/"
    keyring = "/etc/apt/keyrings/kubernetes.gpg"
    image = plan.triton_image
    crictl = "crictl --runtime-endpoint unix:///run/containerd/containerd.sock"
    document = {
        "name": f"gpufleet-{plan.site}-burst-node",
        "description": f"gpufleet {plan.site}: burst node packages, serving image and node scripts",
        "schemaVersion": 1.0,
        "phases": [
            {
                "name": "build",
                "steps": [
                    {
                        "name": "NodePackages",
                        "action": "ExecuteBash",
                        "inputs": {
                            "commands": [
                                "set -euo pipefail",
                                f"install -d -m 0755 /etc/apt/keyrings /etc/kubernetes {NODE_SCRIPTS}",
                                f"curl -fsSL {apt}Release.key | gpg --dearmor -o {keyring}",
                                f'echo "deb [signed-by={keyring}] {apt} /" > /etc/apt/sources.list.d/kubernetes.list',
                                "apt-get update -q",
                                "DEBIAN_FRONTEND=noninteractive apt-get install -qy containerd python3-boto3 "
                                f"kubeadm={version}-\\* kubelet={version}-\\*",
                                "apt-mark hold kubeadm kubelet",
                                "nvidia-ctk runtime configure --runtime=containerd --set-as-default",
                                "systemctl enable containerd kubelet",
                                "systemctl restart containerd",
                            ]
                        },
                    },
                    {
                        "name": "ServingImage",
                        "action": "ExecuteBash",
                        # Through the CRI, so the image is stored under the names the kubelet asks for.
                        "inputs": {"commands": [f"{crictl} pull {image}"]},
                    },
                    {
                        "name": "NodeScripts",
                        "action": "CreateFile",
                        "inputs": [
                            {"path": f"{NODE_SCRIPTS}/{name}", "content": scripts[name]}
                            for name in NODE_SCRIPT_FILES
                        ],
                    },
                ],
            },
            {
                "name": "validate",
                "steps": [
                    {
                        "name": "Baked",
                        "action": "ExecuteBash",
                        "inputs": {
                            "commands": [
                                "set -euo pipefail",
                                f"{crictl} inspecti {image} > /dev/null",
                                f"kubeadm version -o short | grep -Fx 'v{version}'",
                                "containerd config dump | grep -F 'default_runtime_name = \"nvidia\"'",
                                f"python3 -I {NODE_SCRIPTS}/burst_weights.py --help",
                            ]
                        },
                    }
                ],
            },
        ],
    }
    text = yaml.safe_dump(document, sort_keys=False, width=1000)
    if len(text) > COMPONENT_DATA_MAX:
        raise ValueError(
            f"the burst image component is {len(text)} characters; Image Builder takes {COMPONENT_DATA_MAX}"
        )
    return text


def image_name(document: str, plan: AwsBurstPlan) -> str:
    """Image Builder names are immutable per version: a new document or parent is a new name."""
    digest = hashlib.sha256(f"{plan.ami_parameter}\n{IMAGE_ROOT_GIB}\n{document}".encode()).hexdigest()
    return f"gpufleet-{plan.site}-burst-{digest[:12]}"


# --- Access: every AWS policy document of the burst stack, built from ARNs the stack knows -------

POLICY_VERSION = "2012-10-17"
# Session Manager only (AWS's own minimal instance profile for it, AWSCloud9SSMInstanceProfile):
# a shell on a burst node without SSH, instead of AmazonSSMManagedInstanceCore, whose
# ssm:GetParameter* on * would let a node read every parameter in the account.
SESSION_MANAGER_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
# What the SSM agent of an Image Builder build instance needs for the Run Command that drives
# the build (the ec2messages half of AmazonSSMManagedInstanceCore, without its ssm:Get*).
RUN_COMMAND_ACTIONS = (
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
)
# Actions that AWS authorises on no resource narrower than "*": the only ones an identity policy
# of this repository may grant on "*" (the policy pack's allow-list).
STAR_RESOURCE_ACTIONS = frozenset(
    {
        *SESSION_MANAGER_ACTIONS,
        *RUN_COMMAND_ACTIONS,
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:DescribeSpotPriceHistory",
    }
)
# Key administration without kms:* and without any use of the key: use goes through SSM only.
KMS_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:DescribeKey",
    "kms:DisableKeyRotation",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateKeyDescription",
)
KMS_SSM_USE_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")


def account_of(arn: str) -> str:
    """The account field of an ARN (`arn:partition:service:region:account:resource`)."""
    return arn.split(":")[4]


def ssm_service(region: str) -> str:
    return f"ssm.{region}.amazonaws.com"


def kms_key_policy(account: str, region: str) -> dict[str, Any]:
    """The join token's key: the account administers it; anyone in it uses it only through SSM.

    Without the account's administration statement no IAM policy could ever manage the key again.
    """
    root = f"arn:aws:iam::{account}:root"
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "Administer",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": list(KMS_ADMIN_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "UseThroughSsmOnly",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": list(KMS_SSM_USE_ACTIONS),
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": ssm_service(region), "kms:CallerAccount": account}
                },
            },
        ],
    }


def weights_objects_arn(bucket: str, prefix: str) -> str:
    """The one prefix of the weights bucket that holds the burst model's pinned revision."""
    return f"arn:aws:s3:::{bucket}/{prefix}/*"


def node_role_policy(
    parameter_arns: list[str], key_arn: str, region: str, weights_arn: str
) -> dict[str, Any]:
    """What a burst node may do: read its join and weights parameters, decrypt the token through
    SSM, read the burst model's revision (one prefix; no listing: the manifest names every file),
    Session Manager."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "JoinParameters",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": parameter_arns,
            },
            {
                "Sid": "BurstModelRevision",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [weights_arn],
            },
            {
                "Sid": "DecryptJoinTokenThroughSsm",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": [key_arn],
                "Condition": {"StringEquals": {"kms:ViaService": ssm_service(region)}},
            },
            {
                "Sid": "SessionManager",
                "Effect": "Allow",
                "Action": list(SESSION_MANAGER_ACTIONS),
                "Resource": "*",
            },
        ],
    }


def builder_role_policy(component_arn: str, logs_arn: str, region: str) -> dict[str, Any]:
    """What the image build instance may do: be driven by Image Builder over SSM Run Command, read
    its one component and AWSTOE (AWS's public bucket for the region), write its logs under one
    prefix. The serving image comes from its public registry and the packages from apt: no IAM."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "RunCommand",
                "Effect": "Allow",
                "Action": ["ssm:UpdateInstanceInformation", *RUN_COMMAND_ACTIONS],
                "Resource": "*",
            },
            {
                "Sid": "Component",
                "Effect": "Allow",
                "Action": ["imagebuilder:GetComponent"],
                "Resource": [component_arn],
            },
            {
                "Sid": "Awstoe",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::awstoe-{region}/*"],
            },
            {
                "Sid": "BuildLogs",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [logs_arn],
            },
        ],
    }


def publisher_policy(weights_arn: str) -> dict[str, Any]:
    """For whoever runs the one-time copy of a revision into the weights bucket (burst_weights.py
    publish): write that prefix, nothing else."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "PublishBurstModelRevision",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [weights_arn],
            }
        ],
    }


# The one write of the burst stack's `pulumi up` when only `burstNodes` changed (the group's
# DesiredCapacity); its reads are DescribeAutoScalingGroups, granted on "*" beside it.
CONTROLLER_UP_ACTION = "autoscaling:UpdateAutoScalingGroup"


def controller_policy(queue_arn: str, asg_arn: str, max_nodes: int) -> dict[str, Any]:
    """What `gpufleet burst run` calls (gpufleet.burst), on this queue and this group only.

    Its default path is `pulumi up` of the burst stack with only `burstNodes` changed: the group's
    desired capacity, which the AWS provider writes with `UpdateAutoScalingGroup` and reads back
    (and waits on) with `DescribeAutoScalingGroups`. That update is granted on this group only and
    never past the stack's own maximum (`autoscaling:MaxSize`, where the request carries one).
    Any other change of the stack still needs the deployer's rights.
    """
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "InterruptionQueue",
                "Effect": "Allow",
                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                "Resource": [queue_arn],
            },
            {
                "Sid": "BurstGroup",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:CompleteLifecycleAction",
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": [asg_arn],
            },
            {
                "Sid": "BurstNodesUp",
                "Effect": "Allow",
                "Action": [CONTROLLER_UP_ACTION],
                "Resource": [asg_arn],
                "Condition": {"NumericLessThanEqualsIfExists": {"autoscaling:MaxSize": str(max_nodes)}},
            },
            {
                "Sid": "DescribeOnly",
                "Effect": "Allow",
                "Action": ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeSpotPriceHistory"],
                "Resource": "*",
            },
        ],
    }


def queue_policy(queue_arn: str, rule_arns: list[str]) -> dict[str, Any]:
    """Only EventBridge may send, only for these rules, only from this queue's account."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "InterruptionRulesOnly",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": rule_arns},
                    "StringEquals": {"aws:SourceAccount": account_of(queue_arn)},
                },
            }
        ],
    }

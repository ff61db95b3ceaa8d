"""The burst controller as a workload in the on-prem cluster: its arguments and its access. Pure.

One replica, replaced with `Recreate`: two controllers would both consume the interruption
queue (a message one takes the other never sees) and both declare `burstNodes`.

Kubernetes access is what its two Kubernetes users call, and nothing else:
- the drainer (gpufleet.burst.interrupt): list nodes (instance ids from providerIDs), patch
  nodes (cordon), list pods (on a node, all namespaces), create evictions;
- the Degrader (gpufleet.burst.degrade): get and patch the scale subresource of the primary
  serving workload and of the distilled one, and the primary's HPA, each by name.
The service account's token is the kubelet's projected one (an hour, rotated).

AWS and Pulumi access come from two Secrets the site provides (`AWS_SECRET`, `PULUMI_SECRET`):
an AWS config whose profile gets short-lived credentials (IAM Roles Anywhere's
`credential_process` with a certificate from the site's PKI, the role holding the burst stack's
`controllerPolicyArn`), and the Pulumi backend's settings. This repository does not build the
Roles Anywhere trust anchor, profile and role yet (docs/security.md); without the Secrets the pod
does not start.
"""

from __future__ import annotations

from typing import Any

from gpufleet.model.site import Inventory
from gpufleet.plan.admission import CONTROLLER_LABELS
from gpufleet.plan.degrade import DegradePlan
from gpufleet.plan.k8s import PRIORITY_CLASS, PROMETHEUS_URL, SERVING_NAMESPACE
from gpufleet.plan.node import Frozen

CONTROLLER = "gpufleet-burst-controller"
METRICS_PORT = 9108
WORK_DIR = "/opt/gpufleet"  # the repository at the deployed commit, inside the image
AWS_SECRET = f"{CONTROLLER}-aws"  # `config` (the profile below), and what its credential_process reads
AWS_DIR = "/etc/gpufleet/aws"
AWS_PROFILE = CONTROLLER
PULUMI_SECRET = f"{CONTROLLER}-pulumi"  # PULUMI_BACKEND_URL and the backend's or secrets provider's keys


class Rule(Frozen):
    api_groups: list[str]
    resources: list[str]
    verbs: list[str]
    resource_names: tuple[str, ...] = ()

    def k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": self.api_groups, "resources": self.resources, "verbs": self.verbs}
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out


# The drainer's calls, cluster-wide (nodes are cluster objects; pods may be in any namespace).
DRAIN_RULES = (
    Rule(api_groups=[""], resources=["nodes"], verbs=["list", "patch"]),
    Rule(api_groups=[""], resources=["pods"], verbs=["list"]),
    Rule(api_groups=[""], resources=["pods/eviction"], verbs=["create"]),
)


class ControllerPlan(Frozen):
    name: str
    namespace: str
    image: str
    labels: dict[str, str]
    args: list[str]
    cluster_rules: list[Rule]
    rules: list[Rule]  # in `namespace`


def degrade_rules(p: DegradePlan) -> list[Rule]:
    """The Degrader's calls: get and patch of each workload's scale and the HPA, by name."""
    rules = [
        Rule(
            api_groups=[t.group],
            resources=[f"{t.plural}/scale"],
            verbs=["get", "patch"],
            resource_names=(t.name,),
        )
        for t in (p.primary, p.distilled)
    ]
    if p.autoscaler is not None:
        rules.append(
            Rule(
                api_groups=["autoscaling"],
                resources=["horizontalpodautoscalers"],
                verbs=["get", "patch"],
                resource_names=(p.autoscaler.name,),
            )
        )
    return rules


def plan_controller(
    inv: Inventory, stack: str, degrade: DegradePlan | None, gateway_admin: list[str]
) -> ControllerPlan | None:
    """`gpufleet burst run STACK` in the cluster; None until the site names its controller image
    (`bom.controller_image`: this repository, its virtualenv and the Pulumi CLI with its plugins)."""
    image = inv.bom.controller_image
    if image is None:
        return None
    args = [
        "burst", "run", stack,
        "--prometheus", PROMETHEUS_URL,
        "--work-dir", WORK_DIR,
        "--metrics-address", "0.0.0.0",
        "--metrics-port", str(METRICS_PORT),
    ]  # fmt: skip
    for address in gateway_admin:
        args += ["--gateway-admin", address]
    if degrade is not None:
        args.append("--degrade")
    return ControllerPlan(
        name=CONTROLLER,
        namespace=degrade.namespace if degrade is not None else SERVING_NAMESPACE,
        image=image,
        labels=dict(CONTROLLER_LABELS),
        args=args,
        cluster_rules=list(DRAIN_RULES),
        rules=degrade_rules(degrade) if degrade is not None else [],
    )


def controller_deployment(p: ControllerPlan) -> dict[str, Any]:
    """The Deployment's spec."""
    return {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": p.labels},
        "template": {
            "metadata": {"labels": p.labels},
            "spec": {
                "serviceAccountName": p.name,
                "priorityClassName": PRIORITY_CLASS,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": "controller",
                        "image": p.image,
                        "command": ["gpufleet"],
                        "args": p.args,
                        "workingDir": WORK_DIR,
                        "env": [
                            {"name": "AWS_CONFIG_FILE", "value": f"{AWS_DIR}/config"},
                            {"name": "AWS_PROFILE", "value": AWS_PROFILE},
                            {"name": "PULUMI_SKIP_UPDATE_CHECK", "value": "true"},
                        ],
                        "envFrom": [{"secretRef": {"name": PULUMI_SECRET}}],
                        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                        # A `pulumi up` of the burst stack runs in here: the CLI, its plugins
                        # and the program.
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "2Gi"},
                            "limits": {"memory": "2Gi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "aws", "mountPath": AWS_DIR, "readOnly": True}],
                    }
                ],
                "volumes": [{"name": "aws", "secret": {"secretName": AWS_SECRET, "defaultMode": 0o400}}],
            },
        },
    }


def controller_pod_monitor(p: ControllerPlan) -> dict[str, Any]:
    """Prometheus (kube-prometheus-stack) scrapes the controller's own metrics: its decisions,
    actuation, gateway and degradation errors."""
    return {
        "selector": {"matchLabels": p.labels},
        "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
    }

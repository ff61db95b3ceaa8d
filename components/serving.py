"""DeepSeekServing: Triton serving one model, its configuration generated from the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from gpufleet.plan.k8s import PRIORITY_CLASS, QUEUE_METRIC, TRITON_GRPC, TRITON_HTTP, TRITON_METRICS, Workload

MODEL_REPOSITORY = "/models"
WEIGHTS = "/weights"
LWS_API = "leaderworkerset.x-k8s.io/v1"
LWS_LEADER_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
# A Spot interruption warning gives two minutes: finish in-flight requests inside that.
GRACE_S = 90


def quantity(seconds: float) -> str:
    """A Kubernetes quantity in milli-units, exact for the HPA's target."""
    return f"{round(seconds * 1000)}m"


def pod_template(w: Workload, role: str) -> dict[str, Any]:
    """The pod of one replica (role `leader`) or of a further node of it (role `worker`)."""
    gpu_limits = {"nvidia.com/gpu": str(w.gpus_per_pod)}
    if w.rdma:
        gpu_limits["rdma/rdma_shared_device_a"] = "1"
    # Host RAM to stage weights on their way to the GPUs: a share of the weights per pod.
    memory = f"{max(32, w.weights_gib // w.nodes_per_replica)}Gi"
    cpu = str(8 * w.gpus_per_pod)
    resources = {
        "requests": {"cpu": cpu, "memory": memory, **gpu_limits},
        "limits": {"memory": memory, **gpu_limits},
    }
    args = [
        "tritonserver",
        f"--model-repository={MODEL_REPOSITORY}",
        f"--http-port={TRITON_HTTP}",
        f"--grpc-port={TRITON_GRPC}",
        f"--metrics-port={TRITON_METRICS}",
    ]
    probe = {"port": "http"}
    triton: dict[str, Any] = {
        "name": "triton",
        "image": w.image,
        "args": args,
        "env": [
            {"name": "MODEL_WEIGHTS", "value": f"{WEIGHTS}/{w.model}"},
            {"name": "TENSOR_PARALLEL", "value": str(w.tensor_parallel)},
            {"name": "GPUFLEET_ROLE", "value": role},
        ],
        "ports": [
            {"name": "http", "containerPort": TRITON_HTTP},
            {"name": "grpc", "containerPort": TRITON_GRPC},
            {"name": "metrics", "containerPort": TRITON_METRICS},
        ],
        "resources": resources,
        # Loading hundreds of GiB of weights takes minutes: the startup probe covers it, then
        # readiness and liveness take over on Triton's own health endpoints.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", **probe},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", **probe}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", **probe},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {
                "name": "model-config",
                "mountPath": f"{MODEL_REPOSITORY}/{w.model}/config.pbtxt",
                "subPath": "config.pbtxt",
            },
            {"name": "weights", "mountPath": WEIGHTS, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    fetch = {
        "name": "fetch-weights",
        "image": w.image,
        # A pinned revision: a moved branch never changes what a replica serves.
        "command": [
            "huggingface-cli",
            "download",
            w.hf_repo,
            "--revision",
            w.revision,
            "--local-dir",
            f"{WEIGHTS}/{w.model}",
        ],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "weights", "mountPath": WEIGHTS}],
    }
    if w.weights_storage_class is not None:
        weights: dict[str, Any] = {
            "name": "weights",
            "ephemeral": {
                "volumeClaimTemplate": {
                    "metadata": {"labels": w.labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": w.weights_storage_class,
                        "resources": {"requests": {"storage": f"{w.weights_gib}Gi"}},
                    },
                }
            },
        }
    else:
        weights = {"name": "weights", "emptyDir": {"sizeLimit": f"{w.weights_gib}Gi"}}
    spec: dict[str, Any] = {
        "runtimeClassName": w.runtime_class,
        "priorityClassName": PRIORITY_CLASS,
        "terminationGracePeriodSeconds": GRACE_S,
        "nodeSelector": w.node_selector,
        "tolerations": [
            {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} for t in w.tolerations
        ],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": w.labels},
            }
        ],
        "initContainers": [fetch],
        "containers": [triton],
        "volumes": [
            {"name": "model-config", "configMap": {"name": f"{w.name}-model-config"}},
            weights,
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
        ],
    }
    if w.min_gpu_memory_gib is not None:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "gpufleet.io/gpu-memory-gib",
                                    "operator": "Gt",
                                    "values": [str(w.min_gpu_memory_gib - 1)],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    return {"metadata": {"labels": w.labels}, "spec": spec}


@dataclass(frozen=True)
class DeepSeekServingArgs:
    workload: Workload


class DeepSeekServing(pulumi.ComponentResource):
    service_name: str

    def __init__(
        self, name: str, args: DeepSeekServingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpufleet:serving:DeepSeekServing", name, None, opts)
        w = args.workload
        child = pulumi.ResourceOptions(parent=self)
        meta = {"namespace": w.namespace, "labels": w.labels}
        config = k8s.core.v1.ConfigMap(
            f"{name}-model-config",
            metadata={"name": f"{w.name}-model-config", **meta},
            data={"config.pbtxt": w.triton_config},
            opts=child,
        )
        after_config = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[config]))
        selector = dict(w.labels)
        # Where an HPA owns the replica count, Pulumi leaves the field alone (server-side apply
        # would otherwise own it and reset the HPA's count on every up).
        replicas = {"replicas": w.replicas} if w.autoscale_max is None else {}
        if w.multi_node:
            selector[LWS_LEADER_LABEL] = "0"
            workload: pulumi.CustomResource = k8s.apiextensions.CustomResource(
                f"{name}-lws",
                api_version=LWS_API,
                kind="LeaderWorkerSet",
                metadata={"name": w.name, **meta},
                spec={
                    **replicas,
                    "startupPolicy": "LeaderCreated",
                    "rolloutStrategy": {
                        "type": "RollingUpdate",
                        "rollingUpdateConfiguration": {"maxUnavailable": 1},
                    },
                    "leaderWorkerTemplate": {
                        "size": w.nodes_per_replica,
                        "restartPolicy": "RecreateGroupOnPodRestart",
                        "leaderTemplate": pod_template(w, "leader"),
                        "workerTemplate": pod_template(w, "worker"),
                    },
                },
                opts=after_config,
            )
            target = {"apiVersion": LWS_API, "kind": "LeaderWorkerSet", "name": w.name}
        else:
            workload = k8s.apps.v1.Deployment(
                f"{name}-deployment",
                metadata={"name": w.name, **meta},
                spec={
                    **replicas,
                    "selector": {"matchLabels": w.labels},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
                    },
                    "template": pod_template(w, "leader"),
                },
                opts=after_config,
            )
            target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name}
        k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": w.name, **meta},
            spec={
                "selector": selector,
                "ports": [
                    {"name": "http", "port": TRITON_HTTP, "targetPort": "http"},
                    {"name": "grpc", "port": TRITON_GRPC, "targetPort": "grpc"},
                    {"name": "metrics", "port": TRITON_METRICS, "targetPort": "metrics"},
                ],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": w.name, **meta},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=child,
        )
        if w.autoscale_max is not None:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa",
                metadata={"name": w.name, **meta},
                spec={
                    "scaleTargetRef": target,
                    "minReplicas": w.autoscale_min,
                    "maxReplicas": w.autoscale_max,
                    # Queue wait, not GPU utilisation: a busy GPU may still meet the SLO.
                    "metrics": [
                        {
                            "type": "Pods",
                            "pods": {
                                "metric": {"name": QUEUE_METRIC},
                                "target": {
                                    "type": "AverageValue",
                                    "averageValue": quantity(w.queue_target_seconds),
                                },
                            },
                        }
                    ],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
                },
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[workload])),
            )
        self.service_name = w.name
        self.register_outputs({"service": f"{w.name}.{w.namespace}.svc", "replicas": w.replicas})

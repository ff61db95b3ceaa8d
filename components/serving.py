"""DeepSeekServing: Triton serving one model, its configuration generated from the plan."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from gpufleet.plan.admission import (
    ADMISSION_MAP,
    CONTROLLER_LABELS,
    FALLBACK_PORT_NAME,
    GATEWAY,
    GATEWAY_ADMIN,
    GATEWAY_DIR,
    GATEWAY_MAPS,
    GATEWAY_PORT,
    METRICS_PATH,
    METRICS_PORT,
    RUNTIME_API_PORT,
    TENANTS_SECRET,
    admission_map_text,
)
from gpufleet.plan.engine import WEIGHTS_ROOT, weights_path
from gpufleet.plan.k8s import BURST_NVME, PRIORITY_CLASS, QUEUE_METRIC, Workload
from gpufleet.plan.launch import (
    MODEL_REPOSITORY,
    RAY_PORT,
    TRITON_GRPC,
    TRITON_HTTP,
    TRITON_METRICS,
    leader_command,
    leader_ready_command,
    single_node_command,
    worker_command,
)
from gpufleet.serving import model_cache
from gpufleet.serving.model_cache import MARKER

CACHE_SCRIPT = "model_cache.py"
CACHE_SOURCE = Path(model_cache.__file__)
# A fresh site downloads 640 GiB first: replicas wait for the cache up to this long.
WEIGHTS_WAIT_S = 6 * 3600
LWS_API = "leaderworkerset.x-k8s.io/v1"
LWS_LEADER_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
# A Spot interruption warning gives two minutes: finish in-flight requests inside that.
GRACE_S = 90
COMPONENT = "app.kubernetes.io/component"
INSTANCE = "app.kubernetes.io/instance"


def quantity(seconds: float) -> str:
    """A Kubernetes quantity in milli-units, exact for the HPA's target."""
    return f"{round(seconds * 1000)}m"


def _weights_path(w: Workload) -> str:
    return weights_path(w.hf_repo, w.revision)


def _wait_for_weights(w: Workload) -> dict[str, Any]:
    """The cache Job (on-prem) or the node's S3 copy (burst) writes the marker once verified."""
    marker = f"{_weights_path(w)}/{MARKER}"
    script = (
        f"for i in $(seq 1 {WEIGHTS_WAIT_S // 10}); do [ -f {marker} ] && exit 0; sleep 10; done; "
        f'echo "{marker} not there after {WEIGHTS_WAIT_S}s" >&2; exit 1'
    )
    return {
        "name": "wait-for-weights",
        "image": w.image,
        "command": ["bash", "-c", script],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "weights", "mountPath": WEIGHTS_ROOT, "readOnly": True}],
    }


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
    serves = role == "leader"
    if not w.multi_node:
        command = single_node_command()
    elif serves:
        command = leader_command(w.gpus_per_pod)
    else:
        command = worker_command(w.gpus_per_pod)
    mounts: list[dict[str, Any]] = [
        {"name": "weights", "mountPath": WEIGHTS_ROOT, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    engine: dict[str, Any] = {
        "name": "triton" if serves else "ray-worker",
        "image": w.image,
        "command": command,
        # Weights come from the model cache only: a file missing there fails the pod, never a
        # download from the Hub (vLLM loads config and tokenizer with local_files_only).
        "env": [{"name": "GPUFLEET_ROLE", "value": role}, {"name": "HF_HUB_OFFLINE", "value": "1"}],
        "resources": resources,
        "volumeMounts": mounts,
    }
    if w.multi_node:
        engine["ports"] = [{"name": "ray", "containerPort": RAY_PORT}]
    if serves:
        mounts.append(
            {"name": "model-repository", "mountPath": f"{MODEL_REPOSITORY}/{w.model}", "readOnly": True}
        )
        engine["ports"] = [
            {"name": "http", "containerPort": TRITON_HTTP},
            {"name": "grpc", "containerPort": TRITON_GRPC},
            {"name": "metrics", "containerPort": TRITON_METRICS},
            *engine.get("ports", []),
        ]
        # A multi-node leader is Ready only while every rank of its group is in the Ray cluster.
        ready: dict[str, Any] = (
            {"exec": {"command": leader_ready_command()}, "timeoutSeconds": 10}
            if w.multi_node
            else {"httpGet": {"path": "/v2/health/ready", "port": "http"}}
        )
        # Loading hundreds of GiB of weights takes minutes: the startup probe covers it, then
        # readiness and liveness take over.
        engine["startupProbe"] = {**ready, "periodSeconds": 10, "failureThreshold": 180}
        engine["readinessProbe"] = {**ready, "periodSeconds": 10}
        engine["livenessProbe"] = {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        }
    if w.cache_storage_class is not None:
        weights: dict[str, Any] = {
            "name": "weights",
            "persistentVolumeClaim": {"claimName": cache_claim(w), "readOnly": True},
        }
    else:
        weights = {"name": "weights", "hostPath": {"path": f"{BURST_NVME}/weights", "type": "Directory"}}
    volumes: list[dict[str, Any]] = [
        weights,
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
    ]
    if serves:
        volumes.append(
            {
                "name": "model-repository",
                "configMap": {
                    "name": f"{w.name}-model-repository",
                    "items": [{"key": _key(path), "path": path} for path in sorted(w.model_files)],
                },
            }
        )
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
        "initContainers": [_wait_for_weights(w)],
        "containers": [engine],
        "volumes": volumes,
    }
    return {"metadata": {"labels": w.labels}, "spec": spec}


def _key(path: str) -> str:
    """A ConfigMap key for a repository path (keys cannot hold '/')."""
    return path.replace("/", "_")


def cache_claim(w: Workload) -> str:
    return f"model-cache-{w.model}"


def fetch_job(w: Workload) -> dict[str, Any]:
    """The site's one download of the pinned revision into the shared cache, verified."""
    return {
        "backoffLimit": 3,
        "activeDeadlineSeconds": 6 * 3600,
        "template": {
            "metadata": {"labels": {**w.labels, COMPONENT: "model-cache"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "fetch",
                        "image": w.image,
                        "command": [
                            "python3",
                            f"/opt/gpufleet/{CACHE_SCRIPT}",
                            WEIGHTS_ROOT,
                            w.hf_repo,
                            w.revision,
                        ],
                        "env": [
                            {
                                "name": "HF_TOKEN",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}
                                },
                            }
                        ],
                        "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
                        "volumeMounts": [
                            {"name": "weights", "mountPath": WEIGHTS_ROOT},
                            {"name": "script", "mountPath": "/opt/gpufleet", "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "weights", "persistentVolumeClaim": {"claimName": cache_claim(w)}},
                    {"name": "script", "configMap": {"name": f"{w.name}-model-cache"}},
                ],
            },
        },
    }


@dataclass(frozen=True)
class DeepSeekServingArgs:
    workload: Workload
    # A canary replica: the stable workload's Service and cache volume serve it too; it adds only
    # its own revision's cache Job.
    canary: bool = False
    # Replicas the burst controller sets (its Degrader, through the scale subresource): created
    # at the workload's count (0), never reset by an up; no Service or budget of its own but its
    # `pods_service`.
    standby: bool = False
    # A headless Service of this name publishes each ready serving pod of this workload alone (one
    # DNS SRV record each): a burst class's or the degraded replicas', where one `server-template`
    # of the gateway's fallback finds its servers. Its Service and budget select this workload
    # alone too: several burst classes share the other labels, and a pod under two budgets
    # cannot be evicted.
    pods_service: str | None = None


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
            f"{name}-model-repository",
            metadata={"name": f"{w.name}-model-repository", **meta},
            data={_key(path): text for path, text in w.model_files.items()},
            opts=child,
        )
        if w.cache_storage_class is not None:
            self._model_cache(name, w, meta, child, owns=not args.canary)
        after_config = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[config]))
        # The Service takes every serving pod of this capacity: a canary's replica gets its share.
        selector = {k: w.labels[k] for k in ("app.kubernetes.io/name", "gpufleet.io/capacity")}
        if args.pods_service is not None:
            selector[INSTANCE] = w.labels[INSTANCE]
        every_pod = dict(selector)
        # Where an HPA owns the replica count, Pulumi leaves the field alone (server-side apply
        # would otherwise own it and reset the HPA's count on every up).
        replicas = {"replicas": w.replicas} if w.autoscale_max is None else {}
        if args.standby:
            # Pulumi's server-side apply leaves out an ignored field another manager owns: the
            # controller's count stays (pulumi-kubernetes >= 4.9, which pyproject requires).
            after_config = pulumi.ResourceOptions.merge(
                after_config, pulumi.ResourceOptions(ignore_changes=["spec.replicas"])
            )
        own_objects = not (args.canary or args.standby)
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
        if own_objects:
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
        if args.pods_service is not None:
            k8s.core.v1.Service(
                f"{name}-pods",
                metadata={"name": args.pods_service, **meta},
                spec={
                    "clusterIP": "None",
                    # Only ready pods: a record is a replica that serves.
                    "publishNotReadyAddresses": False,
                    "selector": selector,
                    "ports": [
                        {
                            "name": FALLBACK_PORT_NAME,
                            "port": TRITON_HTTP,
                            "targetPort": "http",
                            "protocol": "TCP",
                        }
                    ],
                },
                opts=child,
            )
        # Every pod of every group, the canary's included (one budget: two would let a drain take
        # a stable replica and the canary at once): evicting any pod of a group takes the whole
        # group down (RecreateGroupOnPodRestart), so one eviction at a time is one replica at a time.
        if own_objects:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata={"name": w.name, **meta},
                spec={
                    "maxUnavailable": 1,
                    # Not the model-cache Job's pods: a Job has no scale, and a budget over it
                    # with maxUnavailable allows no eviction at all while its pod exists.
                    "selector": {
                        "matchLabels": every_pod,
                        "matchExpressions": [{"key": COMPONENT, "operator": "DoesNotExist"}],
                    },
                },
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

    def _model_cache(
        self, name: str, w: Workload, meta: dict[str, Any], child: pulumi.ResourceOptions, owns: bool
    ) -> None:
        """One ReadWriteMany volume per site and model; one Job per pinned revision fills it."""
        needs: list[pulumi.Resource] = []
        if owns:
            needs.append(
                k8s.core.v1.PersistentVolumeClaim(
                    f"{name}-model-cache",
                    metadata={"name": cache_claim(w), **meta},
                    spec={
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": w.cache_storage_class,
                        "resources": {"requests": {"storage": f"{w.weights_gib}Gi"}},
                    },
                    opts=child,
                )
            )
        needs.append(
            k8s.core.v1.ConfigMap(
                f"{name}-model-cache-script",
                metadata={"name": f"{w.name}-model-cache", **meta},
                data={CACHE_SCRIPT: CACHE_SOURCE.read_text()},
                opts=child,
            )
        )
        k8s.batch.v1.Job(
            f"{name}-fetch",
            # Named by revision: a new pin is a new Job, the old one stays as the record.
            metadata={"name": f"{w.name}-fetch-{w.revision[:12]}", **meta},
            spec=fetch_job(w),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=needs)),
        )


@dataclass(frozen=True)
class AdmissionGatewayArgs:
    namespace: str
    image: str
    config: str  # haproxy.cfg, rendered by gpufleet.plan.admission
    replicas: int


class AdmissionGateway(pulumi.ComponentResource):
    """HAProxy in front of Triton: the configuration from the plan, the API-key maps from the
    `gateway-tenants` Secret (managed by the key issuer; never in Pulumi config or state)."""

    def __init__(
        self, name: str, args: AdmissionGatewayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpufleet:serving:AdmissionGateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/name": "haproxy", "app.kubernetes.io/instance": GATEWAY}
        meta = {"namespace": args.namespace, "labels": labels}
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": GATEWAY, **meta},
            # The admission map starts normal; the burst controller switches it at run time.
            data={"haproxy.cfg": args.config, ADMISSION_MAP: admission_map_text()},
            opts=child,
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={"name": GATEWAY, **meta},
            spec={
                "replicas": args.replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        # A new configuration rolls the gateway (HAProxy reads it at start).
                        "annotations": {
                            "gpufleet.io/config-sha256": hashlib.sha256(args.config.encode()).hexdigest()
                        },
                    },
                    "spec": {
                        "priorityClassName": PRIORITY_CLASS,
                        "containers": [
                            {
                                "name": "haproxy",
                                "image": args.image,
                                "args": ["-db", "-f", f"{GATEWAY_DIR}/haproxy.cfg"],
                                "ports": [
                                    {"name": "http", "containerPort": GATEWAY_PORT},
                                    {"name": "metrics", "containerPort": METRICS_PORT},
                                    {"name": "runtime", "containerPort": RUNTIME_API_PORT},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": METRICS_PATH, "port": "metrics"},
                                    "periodSeconds": 5,
                                },
                                "resources": {
                                    "requests": {"cpu": "2", "memory": "1Gi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
                                "volumeMounts": [
                                    {"name": "config", "mountPath": GATEWAY_DIR, "readOnly": True},
                                    {"name": "tenants", "mountPath": GATEWAY_MAPS, "readOnly": True},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": GATEWAY}},
                            {
                                "name": "tenants",
                                "secret": {"secretName": TENANTS_SECRET, "defaultMode": 0o400},
                            },
                        ],
                    },
                },
            },
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[config])),
        )
        k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": GATEWAY, **meta},
            spec={
                "selector": labels,
                "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}],
            },
            opts=child,
        )
        # The runtime API (operator level: it can rewrite every map, the tenants' keys too) is in
        # no Service a client uses: this headless one names each replica for the burst controller
        # (`--gateway-admin gateway-admin.<namespace>.svc.cluster.local:9999`), and the policy
        # below admits only the controller's pods to the port.
        k8s.core.v1.Service(
            f"{name}-admin",
            metadata={"name": GATEWAY_ADMIN, **meta},
            spec={
                "clusterIP": "None",
                "selector": labels,
                "ports": [
                    {"name": "runtime", "port": RUNTIME_API_PORT, "targetPort": "runtime", "protocol": "TCP"}
                ],
            },
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata={"name": GATEWAY, **meta},
            spec={
                "podSelector": {"matchLabels": labels},
                "policyTypes": ["Ingress"],
                "ingress": [
                    # Clients and Prometheus, from anywhere as before.
                    {
                        "ports": [
                            {"protocol": "TCP", "port": GATEWAY_PORT},
                            {"protocol": "TCP", "port": METRICS_PORT},
                        ]
                    },
                    # The runtime API: the burst controller's pods in this namespace only.
                    {
                        "from": [{"podSelector": {"matchLabels": CONTROLLER_LABELS}}],
                        "ports": [{"protocol": "TCP", "port": RUNTIME_API_PORT}],
                    },
                ],
            },
            opts=child,
        )
        self.register_outputs(
            {
                "service": f"{GATEWAY}.{args.namespace}.svc:{GATEWAY_PORT}",
                "admin": f"{GATEWAY_ADMIN}.{args.namespace}.svc:{RUNTIME_API_PORT}",
            }
        )

"""What the Kubernetes layer must hold: platform charts (pinned), storage, monitoring, serving. Pure.

Host-level software (driver, container toolkit, RDMA stack) is pyinfra's: the operators'
charts are told not to install it, so two owners never manage the same thing. The `nvidia`
RuntimeClass is the GPU operator's: it creates it whatever its toolkit setting (its
pre-requisites state) and rewrites it on every reconcile, so nothing else declares it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from gpufleet.model.catalog import SERVING_MODELS
from gpufleet.model.site import Inventory, Taint
from gpufleet.plan.aws import SPOT_TAINT, BurstFleet
from gpufleet.plan.node import GPU_TAINT, NVIDIA_RUNTIME, Frozen
from gpufleet.plan.site import CephPlan, ServingPlan, SitePlan
from gpufleet.plan.triton import model_config

SERVING_NAMESPACE = "serving"
MONITORING_NAMESPACE = "monitoring"
CEPH_CSI_NAMESPACE = "ceph-csi-rbd"
STORAGE_CLASS = "ceph-rbd"
PRIORITY_CLASS = "gpufleet-serving"
PRIORITY_VALUE = 1_000_000
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002
# The per-pod queue-wait metric prometheus-adapter serves to the HPA: Triton's cumulative
# queue time over its successful requests, in seconds.
QUEUE_METRIC = "triton_queue_wait_seconds"
# The HPA holds the mean queue wait at a quarter of the p99 SLO: p99 sits well above the mean.
QUEUE_TARGET_SLO_FRACTION = 0.25
# Weights on disk plus room for a second revision during a rolling update.
WEIGHTS_DISK_FACTOR = 2.2


class Chart(Frozen):
    name: str
    namespace: str
    repo: str
    chart: str
    version: str
    values: dict[str, Any]


class Workload(Frozen):
    """One Triton-served model: a Deployment, or a LeaderWorkerSet when a replica spans nodes."""

    name: str
    namespace: str
    model: str
    hf_repo: str
    revision: str
    image: str
    capacity: Literal["on-prem", "spot"]
    replicas: int
    tensor_parallel: int
    nodes_per_replica: int
    gpus_per_pod: int
    node_selector: dict[str, str]
    min_gpu_memory_gib: int | None  # node affinity on the GPU-memory label (burst: mixed types)
    tolerations: list[Taint]
    runtime_class: str  # the containerd handler that gives containers their GPUs
    rdma: bool
    weights_gib: int
    weights_storage_class: str | None  # None: node-local emptyDir (burst nodes' NVMe)
    autoscale_max: int | None  # None: replicas follow stack config (burst)
    queue_target_seconds: float
    triton_config: str  # config.pbtxt

    @property
    def multi_node(self) -> bool:
        return self.nodes_per_replica > 1

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "triton",
            "app.kubernetes.io/instance": self.name,
            "gpufleet.io/capacity": self.capacity,
        }


CEPH_MON_PORT = 6789


def ceph_monitors(inv: Inventory, plan: SitePlan) -> list[str]:
    """`address:port` of every planned monitor, on the storage network where the node has one."""
    if plan.ceph is None:
        return []
    out = []
    for host in plan.ceph.mons:
        node = inv.node(host)
        rdma_ips = [n.ip for n in node.nics.rdma if n.ip is not None]
        out.append(f"{rdma_ips[0] if rdma_ips else node.management_ip}:{CEPH_MON_PORT}")
    return out


def rbd_pool(ceph: CephPlan) -> str | None:
    """The pool the StorageClass provisions from: the first RBD pool."""
    return next((p.name for p in ceph.pools if p.application == "rbd"), None)


def platform_charts(inv: Inventory, plan: SitePlan) -> list[Chart]:
    """Charts with pinned versions and values decided here.

    The Ceph CSI chart's `csiConfig` needs the cluster's fsid, known once the cluster exists:
    KubernetesPlatform adds it to these values.
    """
    gpus = any(n.gpu for n in inv.nodes)
    rdma = any(n.nics.rdma for n in inv.nodes)
    charts = [
        Chart(
            name="node-feature-discovery",
            namespace="node-feature-discovery",
            repo="https://kubernetes-sigs.github.io/node-feature-discovery/charts",
            chart="node-feature-discovery",
            version="0.17.3",
            values={"master": {"replicaCount": 1}, "worker": {"tolerations": _tolerate_all()}},
        ),
        Chart(
            name="kube-prometheus-stack",
            namespace=MONITORING_NAMESPACE,
            repo="https://prometheus-community.github.io/helm-charts",
            chart="kube-prometheus-stack",
            version="70.4.2",
            values={
                # Rules and dashboards come from this repository, labelled for discovery.
                "prometheus": {
                    "prometheusSpec": {
                        "ruleSelectorNilUsesHelmValues": False,
                        "serviceMonitorSelectorNilUsesHelmValues": False,
                        "podMonitorSelectorNilUsesHelmValues": False,
                    }
                },
                "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard"}}},
            },
        ),
        Chart(
            name="prometheus-adapter",
            namespace=MONITORING_NAMESPACE,
            repo="https://prometheus-community.github.io/helm-charts",
            chart="prometheus-adapter",
            version="4.14.1",
            values={
                "prometheus": {"url": "http://kube-prometheus-stack-prometheus.monitoring.svc", "port": 9090},
                "rules": {"default": False, "custom": [_queue_metric_rule()]},
            },
        ),
    ]
    if plan.ceph is not None:
        charts.append(
            Chart(
                name="ceph-csi-rbd",
                namespace=CEPH_CSI_NAMESPACE,
                repo="https://ceph.github.io/csi-charts",
                chart="ceph-csi-rbd",
                version="3.13.1",
                values={
                    "storageClass": {"create": False},
                    "secret": {"create": False},
                },
            )
        )
    if gpus:
        bom = inv.bom
        charts += [
            Chart(
                name="gpu-operator",
                namespace="gpu-operator",
                repo="https://helm.ngc.nvidia.com/nvidia",
                chart="gpu-operator",
                version="v25.3.4",
                values={
                    # pyinfra owns the host driver and container toolkit (BOM-pinned, held).
                    "driver": {"enabled": False},
                    "toolkit": {"enabled": bom.nvidia_container_toolkit is None},
                    "nfd": {"enabled": False},
                    "dcgmExporter": {"enabled": False},
                    # The RuntimeClass it creates: named after the handler pyinfra configures.
                    "operator": {"defaultRuntime": "containerd", "runtimeClass": NVIDIA_RUNTIME},
                    "devicePlugin": {"enabled": True},
                    "daemonsets": {"tolerations": _tolerate_all()},
                },
            ),
            Chart(
                name="dcgm-exporter",
                namespace="gpu-operator",
                repo="https://nvidia.github.io/dcgm-exporter/helm-charts",
                chart="dcgm-exporter",
                version="4.1.3",
                values={
                    "serviceMonitor": {"enabled": True, "interval": "15s"},
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": _tolerate_all(),
                },
            ),
        ]
    if rdma:
        charts.append(
            Chart(
                name="network-operator",
                namespace="network-operator",
                repo="https://helm.ngc.nvidia.com/nvidia",
                chart="network-operator",
                version="25.4.0",
                values={
                    "nfd": {"enabled": False},
                    "deployCR": True,
                    # rdma-core and the HCA firmware tools are pyinfra's.
                    "ofedDriver": {"deploy": False},
                    "rdmaSharedDevicePlugin": {
                        "deploy": True,
                        "resources": [{"name": "rdma_shared_device_a", "vendors": ["15b3"]}],
                    },
                },
            )
        )
    if plan.serving is not None and plan.serving.shape is not None and plan.serving.shape.nodes > 1:
        charts.append(
            Chart(
                name="lws",
                namespace="lws-system",
                repo="oci://registry.k8s.io/lws/charts",
                chart="lws",
                version="0.7.0",
                values={},
            )
        )
    return charts


def termination_handler_chart(region: str) -> Chart:
    """aws-node-termination-handler in IMDS mode (a DaemonSet), on the burst nodes only.

    The interruption queue has one consumer, the burst controller (`gpufleet burst run`): it
    replaces within the cap, then drains. Two consumers would each see part of the warnings. On
    the node, the handler reads the instance metadata: the drain's backstop while the controller
    is down.
    """
    return Chart(
        name="aws-node-termination-handler",
        namespace="kube-system",
        repo="oci://public.ecr.aws/aws-ec2/helm",
        chart="aws-node-termination-handler",
        version="0.27.2",
        values={
            "enableSqsTerminationDraining": False,
            "enableSpotInterruptionDraining": True,
            "awsRegion": region,
            "checkTagBeforeDraining": False,
            "nodeSelector": {"gpufleet.io/capacity": "spot"},
            "tolerations": [t.model_dump() for t in (SPOT_TAINT, GPU_TAINT)],
        },
    )


def _tolerate_all() -> list[dict[str, str]]:
    return [{"operator": "Exists"}]


def _queue_metric_rule() -> dict[str, Any]:
    return {
        "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"as": QUEUE_METRIC},
        "metricsQuery": (
            "sum(rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>) / 1e6 / "
            "clamp_min(sum(rate(nv_inference_request_success{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>), 1e-3)"
        ),
    }


def alert_rules(plan: SitePlan) -> list[dict[str, Any]]:
    """PrometheusRule groups for GPUs, Triton and burst; thresholds from the SLOs."""
    slo = plan.serving
    queue_p99 = slo.slo_queue_wait_p99_s if slo else 2.0
    return [
        {
            "name": "gpufleet-gpu",
            "rules": [
                {
                    "alert": "GpuXidErrors",
                    "expr": "increase(DCGM_FI_DEV_XID_ERRORS[10m]) > 0",
                    "labels": {"severity": "critical"},
                    "annotations": {
                        "summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID errors"
                    },
                },
                {
                    "alert": "GpuHot",
                    "expr": "DCGM_FI_DEV_GPU_TEMP > 85",
                    "for": "10m",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} above 85C"},
                },
            ],
        },
        {
            "name": "gpufleet-triton",
            "rules": [
                {
                    "alert": "TritonQueueWaitAboveSlo",
                    "expr": f"max({QUEUE_METRIC}) > {queue_p99}",
                    "for": "5m",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": f"Triton queue wait above the {queue_p99}s SLO"},
                },
                {
                    "alert": "TritonFailures",
                    "expr": "sum(rate(nv_inference_request_failure[5m])) > 0",
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "Triton requests are failing"},
                },
            ],
        },
        {
            "name": "gpufleet-burst",
            "rules": [
                {
                    "alert": "BurstNodesNotReady",
                    "expr": 'count(kube_node_labels{label_gpufleet_io_capacity="spot"}) > '
                    'count(kube_node_status_condition{condition="Ready",status="true"} '
                    '* on(node) kube_node_labels{label_gpufleet_io_capacity="spot"})',
                    "for": "15m",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "Spot burst nodes joined but are not Ready"},
                }
            ],
        },
    ]


def grafana_dashboard(plan: SitePlan) -> str:
    """One dashboard: GPU utilisation and memory, Triton queue and latency, burst node count."""
    panels = [
        ("GPU utilisation", "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)"),
        ("GPU memory used (GiB)", "sum by (Hostname) (DCGM_FI_DEV_FB_USED) / 1024"),
        ("Triton queue wait (s)", f"max by (pod) ({QUEUE_METRIC})"),
        ("Triton requests/s", "sum(rate(nv_inference_request_success[2m]))"),
        ("Burst nodes", 'count(kube_node_labels{label_gpufleet_io_capacity="spot"})'),
    ]
    return json.dumps(
        {
            "title": f"gpufleet {plan.site}",
            "uid": f"gpufleet-{plan.site}",
            "schemaVersion": 39,
            "panels": [
                {
                    "id": i + 1,
                    "type": "timeseries",
                    "title": title,
                    "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
                    "targets": [{"expr": expr, "refId": "A"}],
                }
                for i, (title, expr) in enumerate(panels)
            ],
        },
        sort_keys=True,
    )


def _weights_gib(model: str) -> int:
    m = SERVING_MODELS[model]
    return math.ceil(m.params_b * m.bytes_per_param * 1e9 / 2**30 * WEIGHTS_DISK_FACTOR)


def onprem_workload(inv: Inventory, plan: SitePlan) -> Workload | None:
    serving = plan.serving
    if serving is None or serving.shape is None or inv.bom.triton_image is None:
        return None
    shape = serving.shape
    revision = serving.revision or ""
    capacity = (
        sum((n.gpu.count // shape.gpus_per_node) for n in inv.nodes if n.gpu and n.gpu.model is shape.gpu)
        // shape.nodes
    )
    return Workload(
        name=serving.model,
        namespace=SERVING_NAMESPACE,
        model=serving.model,
        hf_repo=serving.hf_repo,
        revision=revision,
        image=inv.bom.triton_image,
        capacity="on-prem",
        replicas=serving.replicas,
        tensor_parallel=shape.tensor_parallel,
        nodes_per_replica=shape.nodes,
        gpus_per_pod=shape.gpus_per_node,
        node_selector={"gpufleet.io/gpu-model": shape.gpu.value, "gpufleet.io/capacity": "on-prem"},
        min_gpu_memory_gib=None,
        tolerations=[GPU_TAINT],
        runtime_class=NVIDIA_RUNTIME,
        rdma=shape.nodes > 1 and any(n.nics.rdma for n in inv.nodes if n.gpu),
        weights_gib=_weights_gib(serving.model),
        weights_storage_class=STORAGE_CLASS if plan.ceph is not None else None,
        autoscale_max=max(serving.replicas, capacity),
        queue_target_seconds=serving.slo_queue_wait_p99_s * QUEUE_TARGET_SLO_FRACTION,
        triton_config=model_config(serving).pbtxt(),
    )


def burst_workload(inv: Inventory, plan: SitePlan, fleet: BurstFleet, burst_nodes: int) -> Workload:
    """The model the Spot fleet serves; one replica per `tensor_parallel` GPUs of any fleet type."""
    assert plan.serving is not None and inv.bom.triton_image is not None  # plan_fleet checked both
    serving: ServingPlan = plan.serving.model_copy(
        update={"model": fleet.model, "hf_repo": fleet.hf_repo, "revision": fleet.revision, "shape": None}
    )
    params = model_config(serving)
    params = params.model_copy(
        update={"parameters": {**params.parameters, "tensor_parallel": str(fleet.tensor_parallel)}}
    )
    name = f"{fleet.model}-burst"
    return Workload(
        name=name,
        namespace=SERVING_NAMESPACE,
        model=fleet.model,
        hf_repo=fleet.hf_repo,
        revision=fleet.revision,
        image=inv.bom.triton_image,
        capacity="spot",
        # As many pods as the roomiest type holds: the group picks the types, and pods that a
        # smaller node cannot place wait Pending at no cost rather than leave a big node half idle.
        replicas=burst_nodes * fleet.max_replicas_per_node,
        tensor_parallel=fleet.tensor_parallel,
        nodes_per_replica=1,
        gpus_per_pod=fleet.tensor_parallel,
        node_selector={"gpufleet.io/capacity": "spot"},
        min_gpu_memory_gib=fleet.min_gpu_memory_gib,
        tolerations=[SPOT_TAINT, GPU_TAINT],
        # `nvidia-ctk runtime configure` in the burst nodes' user data names its runtime so too.
        runtime_class=NVIDIA_RUNTIME,
        rdma=False,
        weights_gib=_weights_gib(fleet.model),
        weights_storage_class=None,
        autoscale_max=None,
        queue_target_seconds=serving.slo_queue_wait_p99_s * QUEUE_TARGET_SLO_FRACTION,
        triton_config=params.pbtxt(),
    )

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

from gpufleet.model.catalog import SERVING_MODELS, GPUModel
from gpufleet.model.site import Inventory, Taint
from gpufleet.plan.aws import BURST_NVME as BURST_NVME  # where burst pods mount the weights
from gpufleet.plan.aws import SPOT_TAINT, BurstFleet
from gpufleet.plan.engine import KV_LAYOUTS, engine_args, weights_path
from gpufleet.plan.node import GPU_TAINT, NVIDIA_RUNTIME, Frozen
from gpufleet.plan.site import CephPlan, ServingPlan, SitePlan
from gpufleet.plan.triton import vllm_repository

SERVING_NAMESPACE = "serving"
MONITORING_NAMESPACE = "monitoring"
CEPH_CSI_NAMESPACE = "ceph-csi-rbd"
CEPHFS_CSI_NAMESPACE = "ceph-csi-cephfs"
STORAGE_CLASS = "ceph-rbd"
PRIORITY_CLASS = "gpufleet-serving"
PRIORITY_VALUE = 1_000_000
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002
# The per-pod queue-wait metric prometheus-adapter serves to the HPA: Triton's cumulative
# queue time over its successful requests, in seconds.
QUEUE_METRIC = "triton_queue_wait_seconds"
# kube-prometheus-stack's Prometheus Service (release `kube-prometheus-stack` below).
PROMETHEUS_SERVICE, PROMETHEUS_PORT = "http://kube-prometheus-stack-prometheus.monitoring.svc", 9090
PROMETHEUS_URL = f"{PROMETHEUS_SERVICE}:{PROMETHEUS_PORT}"
# The HPA holds the mean queue wait at a quarter of the p99 SLO: p99 sits well above the mean.
QUEUE_TARGET_SLO_FRACTION = 0.25
# How Pulumi awaits serving workloads (its default for a Deployment is 10 minutes). On-prem: a
# replica downloads and loads hundreds of GiB of weights before it is Ready (the startup probe
# alone allows 30 minutes), so the await is one hour. Burst: pods wait Pending for Spot nodes
# that boot for up to `boot_to_serve_s`, and the controller's up must not hold the stack that
# long; readiness is the controller's to watch, through Prometheus.
ONPREM_SERVING_AWAIT = {"pulumi.com/timeoutSeconds": "3600"}
BURST_SERVING_AWAIT = {"pulumi.com/skipAwait": "true"}
# In quiet hours the HPA keeps at least this share of the planned replicas serving.
HPA_FLOOR_FRACTION = 0.5
# The model cache holds the last three revisions (canary and rollback), with 10% to spare.
WEIGHTS_DISK_FACTOR = 3.3
# ceph-csi's CephFS class: one ReadWriteMany volume that every node mounts.
CACHE_STORAGE_CLASS = "cephfs"

# The pod network (docs/pod-network.md): Calico through the Tigera operator.
CNI_CHART = "tigera-operator"
# VXLAN's own headers (outer IPv4 + UDP + VXLAN + inner Ethernet).
VXLAN_OVERHEAD = 50
# AWS Site-to-Site VPN: largest packet a tunnel carries (AWS "Site-to-Site VPN quotas", MTU 1446).
VPN_MTU = 1446
GPU_MODEL_LABEL = "gpufleet.io/gpu-model"  # set on every GPU node: on-prem by the plan, burst by user data
SPOT_SELECTOR = "gpufleet.io/capacity == 'spot'"
# The RDMA shared device plugin (Network Operator v25.4.0 hack/release.yaml) and the resource
# serving pods request as `rdma/<name>`.
RDMA_PLUGIN = {"image": "k8s-rdma-shared-dev-plugin", "repository": "ghcr.io/mellanox", "version": "v1.5.3"}
RDMA_RESOURCE = "rdma_shared_device_a"
MELLANOX_VENDOR = "15b3"


class Chart(Frozen):
    name: str
    namespace: str
    repo: str
    chart: str
    version: str
    values: dict[str, Any]
    # Releases this one waits for: whose CRDs its resources use, or whose objects it needs
    # (the RuntimeClass, a Prometheus). Every release also waits for the pod network.
    needs: tuple[str, ...] = ()
    # A release whose pods may rightly stay Pending (pinned to nodes that may not exist yet):
    # Pulumi records it once Helm has applied it instead of waiting for its pods.
    wait: bool = True


class CustomResource(Frozen):
    """A custom resource the platform declares, applied once the release that owns its CRD is up."""

    name: str
    api_version: str
    kind: str
    namespace: str | None
    spec: dict[str, Any]
    needs: str


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
    tolerations: list[Taint]
    runtime_class: str  # the containerd handler that gives containers their GPUs
    rdma: bool
    weights_gib: int
    cache_storage_class: str | None  # the site's shared model cache; None: the burst node's NVMe
    autoscale_min: int | None  # the HPA's floor
    autoscale_max: int | None  # None: no HPA; replicas follow the plan or stack config (burst)
    queue_target_seconds: float
    engine: dict[str, Any]  # vLLM engine arguments (model.json)
    # `app.kubernetes.io/component` of its pods: set, they are outside the serving disruption
    # budgets (gpufleet.plan.degrade's distilled replicas on on-prem GPUs).
    component: str | None = None

    @property
    def model_files(self) -> dict[str, str]:
        """The model's folder in Triton's repository, by relative path."""
        return vllm_repository(self.model, self.engine)

    @property
    def multi_node(self) -> bool:
        return self.nodes_per_replica > 1

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "triton",
            "app.kubernetes.io/instance": self.name,
            "gpufleet.io/capacity": self.capacity,
            **({"app.kubernetes.io/component": self.component} if self.component else {}),
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


def pod_network(inv: Inventory) -> dict[str, Any]:
    """Calico's Installation (the tigera-operator chart's `installation` values) from the site.

    On-prem nodes route pods natively on their own subnet and VXLAN across subnets; burst nodes
    (their own pool, a slice of the pod CIDR) always VXLAN, node to node, so pod packets cross the
    VPN between node addresses the VPC and the site already route. The MTU leaves room for VXLAN
    inside the VPN tunnel where the site bursts; RDMA never rides the pod network.
    """
    site = inv.site
    pod_cidr = site.kubernetes.pod_cidr
    onprem_pool, burst_pool = pod_cidr.subnets(prefixlen_diff=1)
    link = site.networks.management.mtu if site.burst is None else min(site.networks.management.mtu, VPN_MTU)
    pools: list[dict[str, Any]] = [
        {
            "name": "onprem",
            "cidr": str(onprem_pool if site.burst else pod_cidr),
            "blockSize": 26,
            "encapsulation": "VXLANCrossSubnet",
            "natOutgoing": "Enabled",
            "nodeSelector": "all()" if site.burst is None else "gpufleet.io/capacity != 'spot'",
        }
    ]
    if site.burst is not None:
        pools.append(
            {
                "name": "burst",
                "cidr": str(burst_pool),
                "blockSize": 26,
                "encapsulation": "VXLAN",
                "natOutgoing": "Enabled",
                "nodeSelector": SPOT_SELECTOR,
            }
        )
    return {
        "enabled": True,
        "cni": {"type": "Calico"},
        "calicoNetwork": {"bgp": "Enabled", "mtu": link - VXLAN_OVERHEAD, "ipPools": pools},
    }


def platform_charts(inv: Inventory, plan: SitePlan) -> list[Chart]:
    """Charts with pinned versions and values decided here; the pod network first.

    The Ceph CSI chart's `csiConfig` needs the cluster's fsid, known once the cluster exists:
    KubernetesPlatform adds it to these values.
    """
    gpus = any(n.gpu for n in inv.nodes)
    # The Network Operator's one job here is the RDMA resource GPU pods request.
    rdma = nic_cluster_policy(inv) is not None
    charts = [
        Chart(
            name=CNI_CHART,
            namespace="tigera-operator",
            repo="https://docs.tigera.io/calico/charts",
            chart="tigera-operator",
            version="v3.29.2",
            values={"installation": pod_network(inv)},
        ),
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
                # Rules, monitors and dashboards come from this repository, labelled for discovery.
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
                "prometheus": {"url": PROMETHEUS_SERVICE, "port": PROMETHEUS_PORT},
                "rules": {"default": False, "custom": [_queue_metric_rule()]},
            },
            needs=("kube-prometheus-stack",),
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
                    # The node plugin mounts RBD volumes wherever a pod uses one: GPU nodes too
                    # (serving's weights), whose taints its default (none) does not tolerate.
                    "nodeplugin": {"tolerations": _tolerate_all()},
                },
            )
        )
        charts.append(
            Chart(
                name="ceph-csi-cephfs",
                namespace=CEPHFS_CSI_NAMESPACE,
                repo="https://ceph.github.io/csi-charts",
                chart="ceph-csi-cephfs",
                version="3.13.1",
                values={
                    "storageClass": {"create": False},
                    "secret": {"create": False},
                    # It mounts the model cache on the GPU nodes serving runs on.
                    "nodeplugin": {"tolerations": _tolerate_all()},
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
                    "operator": {"runtimeClass": NVIDIA_RUNTIME},
                    "devicePlugin": {"enabled": True},
                    "daemonsets": {"tolerations": _tolerate_all()},
                },
                # Its operands schedule on the labels NFD puts on GPU nodes.
                needs=("node-feature-discovery",),
            ),
            Chart(
                name="dcgm-exporter",
                namespace="gpu-operator",
                repo="https://nvidia.github.io/dcgm-exporter/helm-charts",
                chart="dcgm-exporter",
                version="4.1.3",
                values={
                    # Without the NVIDIA runtime the container sees no GPU and exports nothing.
                    "runtimeClassName": NVIDIA_RUNTIME,
                    "serviceMonitor": {"enabled": True, "interval": "15s"},
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": _tolerate_all(),
                },
                # Its ServiceMonitor's CRD, and the RuntimeClass the GPU operator creates.
                needs=("kube-prometheus-stack", "gpu-operator"),
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
                # Since 24.10 the chart deploys only the operator: what it runs on nodes is the
                # NicClusterPolicy below. Its NodeFeatureRules need NFD's CRDs.
                values={"nfd": {"enabled": False, "deployNodeFeatureRules": True}},
                needs=("node-feature-discovery",),
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


def nic_cluster_policy(inv: Inventory) -> CustomResource | None:
    """What the Network Operator runs on nodes: only the RDMA shared device plugin.

    rdma-core, the HCA drivers and firmware are pyinfra's (no `ofedDriver`). One shared resource
    over the GPU nodes' HCAs (InfiniBand on dc1, RoCE on dc1-dr; storage nodes' NICs carry Ceph,
    not pods); on RoCE, only the planned netdevs.
    """
    nics = [nic for n in inv.nodes if n.gpu for nic in n.nics.rdma]
    if not nics:
        return None
    selectors: dict[str, Any] = {
        "vendors": [MELLANOX_VENDOR],
        "linkTypes": sorted(
            {"infiniband" if nic.link_layer.value == "infiniband" else "ether" for nic in nics}
        ),
    }
    netdevs = sorted({nic.netdev for nic in nics if nic.netdev is not None})
    if netdevs and all(nic.link_layer.value == "roce" for nic in nics):
        selectors["ifNames"] = netdevs
    config = {"configList": [{"resourceName": RDMA_RESOURCE, "rdmaHcaMax": 63, "selectors": selectors}]}
    return CustomResource(
        name="nic-cluster-policy",
        api_version="mellanox.com/v1alpha1",
        kind="NicClusterPolicy",
        namespace=None,
        spec={"rdmaSharedDevicePlugin": {**RDMA_PLUGIN, "config": json.dumps(config, sort_keys=True)}},
        needs="network-operator",
    )


def triton_pod_monitor() -> CustomResource:
    """Prometheus scrapes every Triton pod (on-prem and burst) and the admission gateway's on
    their `metrics` port: the HPA's metric, the queue-wait alert and the burst controller's
    signal (the gateway's shed and degraded rates among it) all come from here."""
    return CustomResource(
        name="triton",
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        namespace=SERVING_NAMESPACE,
        spec={
            "selector": {
                "matchExpressions": [
                    {"key": "app.kubernetes.io/name", "operator": "In", "values": ["triton", "haproxy"]}
                ]
            },
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
        needs="kube-prometheus-stack",
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


def weights_gib(model: str) -> int:
    """GiB the model's weights take on disk (the cache volumes' and NVMe copies' size)."""
    m = SERVING_MODELS[model]
    return math.ceil(m.params_b * m.bytes_per_param * 1e9 / 2**30 * WEIGHTS_DISK_FACTOR)


def onprem_workload(inv: Inventory, plan: SitePlan) -> Workload | None:
    serving = plan.serving
    if serving is None or serving.shape is None or inv.bom.triton_image is None:
        return None
    shape = serving.shape
    # During a canary the stable replicas keep the revision they had.
    revision = serving.canary_from or serving.revision or ""
    capacity = (
        sum((n.gpu.count // shape.gpus_per_node) for n in inv.nodes if n.gpu and n.gpu.model is shape.gpu)
        // shape.nodes
    )
    # The HPA scales between a floor under the planned count and every replica the GPUs hold;
    # where the two meet there is nothing to scale and no HPA.
    ceiling = max(serving.replicas, capacity)
    floor = max(1, math.ceil(serving.replicas * HPA_FLOOR_FRACTION))
    return Workload(
        name=serving.model,
        namespace=SERVING_NAMESPACE,
        model=serving.model,
        hf_repo=serving.hf_repo,
        revision=revision,
        image=inv.bom.triton_image,
        capacity="on-prem",
        replicas=serving.replicas - (serving.canary_from is not None),
        tensor_parallel=shape.tensor_parallel,
        nodes_per_replica=shape.nodes,
        gpus_per_pod=shape.gpus_per_node,
        node_selector={GPU_MODEL_LABEL: shape.gpu.value, "gpufleet.io/capacity": "on-prem"},
        tolerations=[GPU_TAINT],
        runtime_class=NVIDIA_RUNTIME,
        rdma=shape.nodes > 1 and any(n.nics.rdma for n in inv.nodes if n.gpu),
        weights_gib=weights_gib(serving.model),
        cache_storage_class=CACHE_STORAGE_CLASS if plan.ceph is not None else None,
        autoscale_min=floor if floor < ceiling else None,
        autoscale_max=ceiling if floor < ceiling else None,
        queue_target_seconds=serving.slo_queue_wait_p99_s * QUEUE_TARGET_SLO_FRACTION,
        engine=engine_args(
            model=serving.model,
            hf_repo=serving.hf_repo,
            revision=revision,
            gpus=[shape.gpu],
            tensor_parallel=shape.tensor_parallel,
            nodes=shape.nodes,
            max_model_len=serving.max_model_len,
            overrides=serving.engine_args,
        ),
    )


def canary_workload(inv: Inventory, plan: SitePlan) -> Workload | None:
    """While `site.serving.canary_from` is set: one replica of the pinned revision beside the
    stable ones, its own objects (the stable ones are untouched), no autoscaling."""
    stable = onprem_workload(inv, plan)
    if stable is None or plan.serving is None or plan.serving.canary_from is None:
        return None
    revision = plan.serving.revision or ""
    return stable.model_copy(
        update={
            "name": f"{stable.model}-canary",
            "revision": revision,
            "replicas": 1,
            "autoscale_min": None,
            "autoscale_max": None,
            "engine": {
                **stable.engine,
                "model": weights_path(stable.hf_repo, revision),
                "tokenizer": weights_path(stable.hf_repo, revision),
            },
        }
    )


def burst_workloads(inv: Inventory, plan: SitePlan, fleet: BurstFleet, burst_nodes: int) -> list[Workload]:
    """The burst fleet's model, one Workload per GPU class the fleet's types carry: each pinned
    to its class by the `gpufleet.io/gpu-model` label the burst nodes' user data sets, its engine
    sized for that GPU alone (its own max_num_seqs, FP8 KV cache where that GPU has FP8), and
    `burst_nodes` x the class's roomiest type's replicas: the group picks the types, and pods a
    node cannot place wait Pending at no cost rather than leave a big node half idle."""
    assert plan.serving is not None and inv.bom.triton_image is not None  # plan_fleet checked both
    serving: ServingPlan = plan.serving
    classes: dict[GPUModel, int] = {}
    for i in fleet.instances:
        classes[i.gpu] = max(classes.get(i.gpu, 0), i.replicas)
    max_model_len = min(serving.max_model_len, KV_LAYOUTS[fleet.model].max_context)
    return [
        Workload(
            name=f"{fleet.model}-burst-{gpu_slug(gpu)}",
            namespace=SERVING_NAMESPACE,
            model=fleet.model,
            hf_repo=fleet.hf_repo,
            revision=fleet.revision,
            image=inv.bom.triton_image,
            capacity="spot",
            replicas=burst_nodes * per_node,
            tensor_parallel=fleet.tensor_parallel,
            nodes_per_replica=1,
            gpus_per_pod=fleet.tensor_parallel,
            node_selector={"gpufleet.io/capacity": "spot", GPU_MODEL_LABEL: gpu.value},
            tolerations=[SPOT_TAINT, GPU_TAINT],
            # `nvidia-ctk runtime configure` in the burst nodes' user data names its runtime so too.
            runtime_class=NVIDIA_RUNTIME,
            rdma=False,
            weights_gib=weights_gib(fleet.model),
            cache_storage_class=None,
            autoscale_min=None,
            autoscale_max=None,
            queue_target_seconds=serving.slo_queue_wait_p99_s * QUEUE_TARGET_SLO_FRACTION,
            # No site overrides: they were checked against the site's own model.
            engine=engine_args(
                model=fleet.model,
                hf_repo=fleet.hf_repo,
                revision=fleet.revision,
                gpus=[gpu],
                tensor_parallel=fleet.tensor_parallel,
                nodes=1,
                max_model_len=max_model_len,
                overrides={},
            ),
        )
        for gpu, per_node in classes.items()
    ]


def gpu_slug(gpu: GPUModel) -> str:
    """A GPU model as a short DNS label part, from its catalog name: H100_SXM -> `h100-sxm`."""
    return gpu.name.lower().replace("_", "-")

"""The Helm values keys gpufleet relies on, per chart version, from each chart's own values.yaml.

None of these charts ships a values.schema.json at the pinned version, and Helm accepts any key:
a key a chart version dropped is silently ignored (Network Operator 24.10 dropped `deployCR`,
`ofedDriver` and `rdmaSharedDevicePlugin`; gpu-operator has no `operator.defaultRuntime`). So the
keys used are recorded here with where upstream declares them, and tests fail on any other key.
Only facts are kept, never the upstream files. `list[]` means "each item of the list".

A version bump needs its facts re-read from the new tag: a chart version not listed here fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChartFacts:
    source: str  # repository, tag, path (and lines where read from the tag's file)
    keys: frozenset[str]  # leaf paths gpufleet sets
    opaque: frozenset[str] = frozenset()  # values passed whole: a list or map of the component's own type
    gone: dict[str, str] = field(default_factory=dict)  # keys not in this version, and why


def _k(*keys: str) -> frozenset[str]:
    return frozenset(keys)


CHARTS: dict[tuple[str, str], ChartFacts] = {
    ("tigera-operator", "v3.29.2"): ChartFacts(
        source=(
            "projectcalico/calico v3.29.2 charts/tigera-operator (read at the tag): values.yaml installation l.8, "
            ".enabled l.9; templates/crs/custom-resources.yaml makes the Installation's spec of `installation` "
            "less `enabled`; crds/operator.tigera.io_installations_crd.yaml: spec.cni l.4498 (type enum Calico), "
            "spec.calicoNetwork l.1061: bgp l.1065 (Enabled|Disabled), mtu l.1183, ipPools l.1088 (maxItems 25, "
            "so an on-prem and a burst pool): blockSize l.1103, cidr l.1110, encapsulation l.1126 (VXLAN, "
            "VXLANCrossSubnet, ...), name l.1138, natOutgoing l.1142, nodeSelector l.1150. The Installation CRD "
            "is not among ../shared/k8s/crds, so the rendered spec is checked by these keys only"
        ),
        keys=_k(
            "installation.enabled",
            "installation.cni.type",
            "installation.calicoNetwork.bgp",
            "installation.calicoNetwork.mtu",
            "installation.calicoNetwork.ipPools[].name",
            "installation.calicoNetwork.ipPools[].cidr",
            "installation.calicoNetwork.ipPools[].blockSize",
            "installation.calicoNetwork.ipPools[].encapsulation",
            "installation.calicoNetwork.ipPools[].natOutgoing",
            "installation.calicoNetwork.ipPools[].nodeSelector",
        ),
    ),
    ("node-feature-discovery", "0.17.3"): ChartFacts(
        source=(
            "kubernetes-sigs/node-feature-discovery v0.17.3 deployment/helm/node-feature-discovery/values.yaml "
            "(read at the tag): master l.18, master.replicaCount l.80, worker l.171, worker.tolerations l.478"
        ),
        keys=_k("master.replicaCount"),
        opaque=_k("worker.tolerations"),
    ),
    ("kube-prometheus-stack", "70.4.2"): ChartFacts(
        source=(
            "prometheus-community/helm-charts kube-prometheus-stack-70.4.2 charts/kube-prometheus-stack/values.yaml "
            "(read at the tag): grafana.sidecar.dashboards.enabled l.1307, .label l.1308; "
            "prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues l.4030, serviceMonitor... l.4055, "
            "podMonitor... l.4078"
        ),
        keys=_k(
            "prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues",
            "prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues",
            "prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues",
            "grafana.sidecar.dashboards.enabled",
            "grafana.sidecar.dashboards.label",
        ),
    ),
    ("prometheus-adapter", "4.14.1"): ChartFacts(
        source=(
            "prometheus-community/helm-charts prometheus-adapter-4.14.1 charts/prometheus-adapter/values.yaml "
            "(read at the tag): prometheus.url l.37, prometheus.port l.38, rules.default l.139, rules.custom l.141"
        ),
        keys=_k("prometheus.url", "prometheus.port", "rules.default"),
        opaque=_k("rules.custom"),
    ),
    ("ceph-csi-rbd", "3.13.1"): ChartFacts(
        source=(
            "ceph/ceph-csi charts/ceph-csi-rbd/values.yaml: the snapshot read has no v3.13.1 tag; its default "
            "branch (2024-10-22, after 3.12) declares csiConfig l.36 (items: clusterID, monitors), "
            "nodeplugin.tolerations l.158, storageClass.create l.353, secret.create l.535"
        ),
        keys=_k("storageClass.create", "secret.create", "csiConfig[].clusterID"),
        opaque=_k("csiConfig[].monitors", "nodeplugin.tolerations"),
    ),
    ("ceph-csi-cephfs", "3.13.1"): ChartFacts(
        source=(
            "ceph/ceph-csi charts/ceph-csi-cephfs/values.yaml at commit 004f647 (its nodeplugin.plugin.image.tag "
            "is v3.13.1): csiConfig l.35 (items: clusterID, monitors, cephFS), nodeplugin.tolerations, "
            "storageClass.create, secret.create"
        ),
        keys=_k("storageClass.create", "secret.create", "csiConfig[].clusterID"),
        opaque=_k("csiConfig[].monitors", "nodeplugin.tolerations"),
    ),
    ("gpu-operator", "v25.3.4"): ChartFacts(
        source=(
            "NVIDIA/gpu-operator v25.3.4 deployments/gpu-operator/values.yaml (read at the tag): "
            "nfd.enabled l.9, daemonsets.tolerations l.39, operator.runtimeClass l.73, driver.enabled l.131, "
            "toolkit.enabled l.220, devicePlugin.enabled l.231, dcgmExporter.enabled l.287"
        ),
        keys=_k(
            "driver.enabled",
            "toolkit.enabled",
            "nfd.enabled",
            "dcgmExporter.enabled",
            "operator.runtimeClass",
            "devicePlugin.enabled",
        ),
        opaque=_k("daemonsets.tolerations"),
        gone={"operator.defaultRuntime": "not in the chart's values since the operator detects the runtime"},
    ),
    ("dcgm-exporter", "4.1.3"): ChartFacts(
        source=(
            "NVIDIA/dcgm-exporter 4.2.3-4.1.3 (chart 4.1.3) deployment/values.yaml (read at the tag): "
            "runtimeClassName l.53 (templates/daemonset.yaml sets the pod's runtimeClassName), "
            "serviceMonitor.enabled l.114, serviceMonitor.interval l.115, nodeSelector l.127, tolerations l.130"
        ),
        keys=_k("runtimeClassName", "serviceMonitor.enabled", "serviceMonitor.interval"),
        opaque=_k("nodeSelector", "tolerations"),
    ),
    ("network-operator", "25.4.0"): ChartFacts(
        source=(
            "Mellanox/network-operator v25.4.0 deployment/network-operator/values.yaml (read at the tag): "
            "nfd.enabled l.21, nfd.deployNodeFeatureRules l.23; release notes 24.10.0: the chart does not "
            "create the NicClusterPolicy CR anymore "
            "(https://docs.nvidia.com/networking/display/kubernetes2570/release-notes.html)"
        ),
        keys=_k("nfd.enabled", "nfd.deployNodeFeatureRules"),
        gone={
            "deployCR": "removed in 24.10: create the NicClusterPolicy instead",
            "ofedDriver.deploy": "removed in 24.10: a NicClusterPolicy field",
            "rdmaSharedDevicePlugin.deploy": "removed in 24.10: a NicClusterPolicy field",
        },
    ),
    ("lws", "0.7.0"): ChartFacts(
        source="kubernetes-sigs/lws v0.7.0 charts/lws: no values set, so no key to check",
        keys=_k(),
    ),
}


def leaf_paths(values: object, prefix: str = "") -> list[str]:
    """Every key path a values document sets; `[]` for each item of a list of maps."""
    if isinstance(values, dict) and values:
        out = []
        for key, value in values.items():
            out += leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
        return sorted({p for v in values for p in leaf_paths(v, f"{prefix}[]")})
    return [prefix] if prefix else []


def unknown_keys(chart: str, version: str, values: dict[str, object]) -> list[str]:
    """Keys of `values` the chart version does not declare (opaque subtrees are passed whole)."""
    facts = CHARTS[(chart, version)]
    bad = []
    for path in leaf_paths(values):
        if path in facts.keys or any(
            path == o or path.startswith(f"{o}.") or path.startswith(f"{o}[]") for o in facts.opaque
        ):
            continue
        bad.append(path + (f" ({facts.gone[path]})" if path in facts.gone else ""))
    return bad

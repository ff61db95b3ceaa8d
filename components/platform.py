"""KubernetesPlatform: operators, storage, monitoring."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.provisioning import CEPH_CLIENT
from gpufleet.plan.k8s import (
    CACHE_STORAGE_CLASS,
    CEPH_CSI_NAMESPACE,
    CEPHFS_CSI_NAMESPACE,
    MONITORING_NAMESPACE,
    PRIORITY_CLASS,
    PRIORITY_VALUE,
    SERVING_NAMESPACE,
    STORAGE_CLASS,
    Chart,
    CustomResource,
)

CSI_SECRET = "csi-rbd-secret"
CEPHFS_SECRET = "csi-cephfs-secret"


def helm_release(name: str, chart: Chart, opts: pulumi.ResourceOptions) -> k8s.helm.v3.Release:
    """A pinned release. `atomic` waits for its pods and rolls back a failed upgrade; a release
    whose pods may rightly stay Pending skips the wait (no `atomic`, which implies waiting)."""
    oci = chart.repo.startswith("oci://")
    return k8s.helm.v3.Release(
        name,
        k8s.helm.v3.ReleaseArgs(
            name=chart.name,
            chart=f"{chart.repo}/{chart.chart}" if oci else chart.chart,
            repository_opts=None if oci else k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            version=chart.version,
            namespace=chart.namespace,
            values=chart.values,
            atomic=chart.wait,
            skip_await=not chart.wait,
            cleanup_on_fail=True,
        ),
        opts,
    )


@dataclass(frozen=True)
class CephStorage:
    fsid: pulumi.Input[str]
    client_key: pulumi.Input[str]  # a Pulumi secret
    monitors: list[str]
    pool: str
    fs_name: str  # the CephFS file system the model cache provisions from
    fs_pool: str


@dataclass(frozen=True)
class KubernetesPlatformArgs:
    kubeconfig: pulumi.Input[str]  # a Pulumi secret
    charts: list[Chart]  # the pod network first
    custom_resources: list[CustomResource]
    ceph: CephStorage | None
    alert_rules: list[dict[str, object]]
    dashboard_json: str
    site: str


class KubernetesPlatform(pulumi.ComponentResource):
    provider: k8s.Provider
    releases: dict[str, k8s.helm.v3.Release]

    def __init__(
        self, name: str, args: KubernetesPlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gpufleet:platform:KubernetesPlatform", name, None, opts)
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=args.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        names = sorted(
            {c.namespace for c in args.charts if c.namespace != "kube-system"} | {SERVING_NAMESPACE}
        )
        namespaces = {
            ns: k8s.core.v1.Namespace(
                f"{name}-ns-{ns}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=ns, labels={"gpufleet.io/site": args.site}),
                opts=child,
            )
            for ns in names
        }
        if args.ceph is not None:
            # The one value the plan cannot know: the fsid Ceph generated when the cluster was built.
            csi = {"csiConfig": [{"clusterID": args.ceph.fsid, "monitors": args.ceph.monitors}]}
            charts = [
                c.model_copy(update={"values": {**c.values, **csi}})
                if c.name in ("ceph-csi-rbd", "ceph-csi-cephfs")
                else c
                for c in args.charts
            ]
        else:
            charts = list(args.charts)
        # Nothing schedules before the pod network: every other release waits for it, and for
        # the releases whose CRDs or objects it needs.
        self.releases = {}
        cni = charts[0]
        for c in charts:
            needs = [self.releases[n] for n in c.needs]
            if c is not cni:
                needs.append(self.releases[cni.name])
            self.releases[c.name] = helm_release(
                f"{name}-{c.name}",
                c,
                pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=[namespaces[c.namespace], *needs])
                ),
            )
        for cr in args.custom_resources:
            k8s.apiextensions.CustomResource(
                f"{name}-{cr.kind.lower()}-{cr.name}",
                api_version=cr.api_version,
                kind=cr.kind,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=cr.name, namespace=cr.namespace),
                spec=cr.spec,
                # Its CRD's release, and its namespace (the API server refuses it before either).
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(
                        depends_on=[
                            self.releases[cr.needs],
                            *([namespaces[cr.namespace]] if cr.namespace in namespaces else []),
                        ]
                    ),
                ),
            )
        k8s.scheduling.v1.PriorityClass(
            f"{name}-priority-serving",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=PRIORITY_CLASS),
            value=PRIORITY_VALUE,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="Triton serving pods: ahead of batch work, never of the platform's daemons",
            opts=child,
        )
        if args.ceph is not None:
            self._ceph(name, args.ceph, namespaces[CEPH_CSI_NAMESPACE], child)
            self._cephfs(name, args.ceph, namespaces[CEPHFS_CSI_NAMESPACE], child)
        monitoring = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[self.releases["kube-prometheus-stack"]])
        )
        k8s.apiextensions.CustomResource(
            f"{name}-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="gpufleet", namespace=MONITORING_NAMESPACE),
            spec={"groups": args.alert_rules},
            opts=monitoring,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="gpufleet-dashboard", namespace=MONITORING_NAMESPACE, labels={"grafana_dashboard": "1"}
            ),
            data={"gpufleet.json": args.dashboard_json},
            opts=monitoring,
        )
        self.register_outputs({"releases": {n: r.status for n, r in self.releases.items()}})

    def _ceph(
        self, name: str, ceph: CephStorage, namespace: k8s.core.v1.Namespace, child: pulumi.ResourceOptions
    ) -> None:
        secret = k8s.core.v1.Secret(
            f"{name}-ceph-secret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CSI_SECRET, namespace=CEPH_CSI_NAMESPACE),
            string_data={"userID": CEPH_CLIENT, "userKey": ceph.client_key},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        k8s.storage.v1.StorageClass(
            f"{name}-storageclass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
            provisioner="rbd.csi.ceph.com",
            parameters={
                "clusterID": ceph.fsid,
                "pool": ceph.pool,
                "imageFeatures": "layering",
                "csi.storage.k8s.io/provisioner-secret-name": CSI_SECRET,
                "csi.storage.k8s.io/provisioner-secret-namespace": CEPH_CSI_NAMESPACE,
                "csi.storage.k8s.io/controller-expand-secret-name": CSI_SECRET,
                "csi.storage.k8s.io/controller-expand-secret-namespace": CEPH_CSI_NAMESPACE,
                "csi.storage.k8s.io/node-stage-secret-name": CSI_SECRET,
                "csi.storage.k8s.io/node-stage-secret-namespace": CEPH_CSI_NAMESPACE,
                "csi.storage.k8s.io/fstype": "xfs",
            },
            reclaim_policy="Delete",
            allow_volume_expansion=True,
            volume_binding_mode="WaitForFirstConsumer",
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[secret, self.releases["ceph-csi-rbd"]])
            ),
        )

    def _cephfs(
        self, name: str, ceph: CephStorage, namespace: k8s.core.v1.Namespace, child: pulumi.ResourceOptions
    ) -> None:
        """The model cache's class: ReadWriteMany subvolumes of the plan's file system."""
        secret = k8s.core.v1.Secret(
            f"{name}-cephfs-secret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CEPHFS_SECRET, namespace=CEPHFS_CSI_NAMESPACE),
            string_data={"userID": CEPH_CLIENT, "userKey": ceph.client_key},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        k8s.storage.v1.StorageClass(
            f"{name}-cephfs-storageclass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=CACHE_STORAGE_CLASS),
            provisioner="cephfs.csi.ceph.com",
            parameters={
                "clusterID": ceph.fsid,
                "fsName": ceph.fs_name,
                "pool": ceph.fs_pool,
                **{
                    f"csi.storage.k8s.io/{use}-secret-{key}": value
                    for use in ("provisioner", "controller-expand", "node-stage")
                    for key, value in (("name", CEPHFS_SECRET), ("namespace", CEPHFS_CSI_NAMESPACE))
                },
            },
            reclaim_policy="Delete",
            allow_volume_expansion=True,
            # Every replica on any node mounts the one claim; it binds at once.
            volume_binding_mode="Immediate",
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[secret, self.releases["ceph-csi-cephfs"]])
            ),
        )

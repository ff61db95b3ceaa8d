"""ClusterRoles: the Ceph cluster and the Kubernetes control plane, each a site playbook run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from components.providers import ClusterProvider, undo_pickler_wrapping
from gpufleet.plan.site import CephPlan, KubernetesPlan

CEPH_OUTPUTS = ("fsid", "client_key")
KUBERNETES_OUTPUTS = ("kubeconfig", "join_token", "ca_cert_hash")
# Life of the burst nodes' join token (the `--ttl` in playbooks/kubernetes_outputs.yml): minted
# again by any `up` in its last REMINT_BEFORE_S, and the burst stack writes it to SSM.
BURST_TOKEN_TTL_S = 24 * 3600


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class CephCluster(Resource, module="gpufleet", name="CephCluster"):
    fsid: pulumi.Output[str]
    client_key: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(
            ClusterProvider("ceph", CEPH_OUTPUTS), name, {**props, **dict.fromkeys(CEPH_OUTPUTS)}, opts
        )
        undo_pickler_wrapping()


class KubernetesCluster(Resource, module="gpufleet", name="KubernetesCluster"):
    kubeconfig: pulumi.Output[str]
    join_token: pulumi.Output[str]
    ca_cert_hash: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(
            ClusterProvider("kubernetes", KUBERNETES_OUTPUTS, token_ttl_s=BURST_TOKEN_TTL_S),
            name,
            {**props, **dict.fromkeys(KUBERNETES_OUTPUTS)},
            opts,
        )
        undo_pickler_wrapping()


@dataclass(frozen=True)
class ClusterRolesArgs:
    site: str
    kubernetes: KubernetesPlan
    ceph: CephPlan | None
    # Monitor addresses (`ip:port`) from the inventory: the CSI driver and clients need them.
    ceph_monitors: list[str]
    # The core hosts each playbook runs on (gpufleet.plan.membership), and their Node resources:
    # each cluster waits for those nodes only.
    ceph_hosts: list[str]
    kubernetes_hosts: list[str]
    nodes: dict[str, pulumi.Resource]
    # The control planes' planned labels: the cluster admits them after its playbook.
    control_plane_labels: dict[str, dict[str, str]]


class ClusterRoles(pulumi.ComponentResource):
    kubeconfig: pulumi.Output[str]
    join_token: pulumi.Output[str]
    ca_cert_hash: pulumi.Output[str]
    ceph_fsid: pulumi.Output[str] | None
    ceph_client_key: pulumi.Output[str] | None

    def __init__(self, name: str, args: ClusterRolesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpufleet:cluster:ClusterRoles", name, None, opts)
        self.ceph_fsid = self.ceph_client_key = None
        ceph: CephCluster | None = None
        if args.ceph is not None:
            spec = {**args.ceph.model_dump(mode="json"), "monitors": args.ceph_monitors}
            ceph = CephCluster(
                f"{name}-ceph",
                {"site": args.site, "spec": spec, "digest": _digest(spec), "hosts": args.ceph_hosts},
                pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[args.nodes[h] for h in args.ceph_hosts],
                    additional_secret_outputs=["client_key"],
                ),
            )
            self.ceph_fsid = ceph.fsid
            self.ceph_client_key = pulumi.Output.secret(ceph.client_key)
        spec = args.kubernetes.model_dump(mode="json")
        # Persistent volumes come from Ceph: the control plane is brought up after it. It admits its
        # control planes (their Nodes' gates have passed): the platform, which waits for it, runs there.
        k8s = KubernetesCluster(
            f"{name}-kubernetes",
            {
                "site": args.site,
                "spec": spec,
                "digest": _digest(spec),
                "hosts": args.kubernetes_hosts,
                "admit": args.control_plane_labels,
            },
            pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.nodes[h] for h in args.kubernetes_hosts]
                + ([ceph] if ceph is not None else []),
                additional_secret_outputs=["kubeconfig", "join_token"],
            ),
        )
        # What members join: a member Node waits for the clusters it joins.
        self.clusters: dict[str, pulumi.Resource] = {"kubernetes": k8s, **({"ceph": ceph} if ceph else {})}
        self.kubeconfig = pulumi.Output.secret(k8s.kubeconfig)
        self.join_token = pulumi.Output.secret(k8s.join_token)
        self.ca_cert_hash = k8s.ca_cert_hash
        self.register_outputs(
            {"kubeconfig": self.kubeconfig, "joinToken": self.join_token, "caCertHash": self.ca_cert_hash}
        )

"""Which nodes a cluster cannot be built without, and which join it afterwards by themselves.

The core of a site is its Kubernetes control planes and its Ceph monitors and managers: the cluster
resources run their playbooks on those hosts only (with whatever else those hosts serve: a control
plane's OSDs, a monitor's kubelet). Every other node is a member: it joins the clusters it belongs
to at the end of its own converge, so a member that fails holds back only itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.plan.site import SitePlan

CEPH = "ceph"
KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class Membership:
    core: list[str]
    ceph_hosts: list[str]  # the Ceph playbook's hosts (all core)
    kubernetes_hosts: list[str]  # the Kubernetes playbook's hosts (all core)
    joins: dict[str, tuple[str, ...]]  # member -> the clusters it joins, in order


def membership(plan: SitePlan, hostnames: list[str]) -> Membership:
    ceph_core = set(plan.ceph.mons) | set(plan.ceph.mgrs) if plan.ceph is not None else set()
    ceph_all = ceph_core | (set(plan.ceph.osds) if plan.ceph is not None else set())
    k8s_all = set(plan.kubernetes.control_planes) | set(plan.kubernetes.workers)
    core = ceph_core | set(plan.kubernetes.control_planes)
    joins = {}
    for host in hostnames:
        if host not in core:
            # Ceph first: a worker's pods may mount volumes from it.
            clusters = tuple(c for c, members in ((CEPH, ceph_all), (KUBERNETES, k8s_all)) if host in members)
            joins[host] = clusters
    return Membership(
        core=[h for h in hostnames if h in core],
        ceph_hosts=[h for h in hostnames if h in core and h in ceph_all],
        kubernetes_hosts=[h for h in hostnames if h in core and h in k8s_all],
        joins=joins,
    )

"""What the site as a whole must become: Ceph, Kubernetes, serving and burst bounds. Pure."""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

from gpufleet.model.catalog import GPUS_PER_NODE_MAX, SERVING_MODELS, ReplicaShape, replica_shape
from gpufleet.model.checks import dominant_gpu
from gpufleet.model.site import Burst, Inventory, Role
from gpufleet.plan.burst import BootPlan, plan_boot
from gpufleet.plan.node import Frozen, plan_node

PGS_PER_OSD = 100
MAX_MONS = 5
# The CephFS file system the model cache (the `cephfs` StorageClass) provisions from; its pools
# are named as `ceph fs volume create` names them.
CEPHFS_NAME = "models"
# Metadata is small: a quarter of the data pool's PGs, at least this many.
CEPHFS_META_MIN_PGS = 8
# The Ceph clients the CSI drivers use, one per driver, each scoped to what its driver provisions.
RBD_CLIENT = "kubernetes"
CEPHFS_CLIENT = "kubernetes-cephfs"
# The subvolume group ceph-csi's CephFS driver provisions in (its default, csiConfig[].cephFS).
CEPHFS_GROUP = "csi"


class CrushRule(Frozen):
    name: str
    failure_domain: str


class PoolPlan(Frozen):
    name: str
    size: int
    min_size: int
    pg_num: int
    crush_rule: str
    application: str


class FilesystemPlan(Frozen):
    name: str
    metadata_pool: str
    data_pool: str


class CephClientPlan(Frozen):
    """A cephx client: `ceph auth get-or-create client.<name>` with these capabilities."""

    name: str
    caps: dict[str, str]  # daemon type (mon, mgr, osd, mds) -> its capability string


class CephPlan(Frozen):
    release: str
    mons: list[str]
    mgrs: list[str]
    mdss: list[str]  # one active, the other standby
    osds: dict[str, list[str]]
    crush_rules: list[CrushRule]
    pools: list[PoolPlan]
    filesystem: FilesystemPlan
    clients: list[CephClientPlan]


class KubernetesPlan(Frozen):
    version: str
    control_plane_endpoint: str
    pod_cidr: str
    service_cidr: str
    control_planes: list[str]
    workers: list[str]


class ServingPlan(Frozen):
    model: str
    hf_repo: str
    revision: str | None
    replicas: int
    shape: ReplicaShape | None
    slo_queue_wait_p99_s: float
    slo_ttft_p99_s: float
    max_model_len: int
    engine_args: dict[str, bool | int | float | str]
    canary_from: str | None  # the revision every replica but the canary keeps


class BurstPlan(Frozen):
    region: str
    min_nodes: int
    max_nodes: int
    max_hourly_usd: float
    spot_max_price_usd: float | None
    boot: BootPlan  # the parts (docs/burst-boot.md)
    boot_to_serve_s: int  # their sum: what the controller and the simulator plan with


class SitePlan(Frozen):
    site: str
    environment: str
    node_digests: dict[str, str]
    ceph: CephPlan | None
    kubernetes: KubernetesPlan
    serving: ServingPlan | None
    burst: BurstPlan | None


def plan_site(inv: Inventory) -> SitePlan:
    return SitePlan(
        site=inv.site.name,
        environment=inv.site.environment,
        node_digests={n.hostname: plan_node(inv, n).digest for n in inv.nodes},
        ceph=_ceph(inv),
        kubernetes=_kubernetes(inv),
        serving=plan_serving(inv),
        burst=_burst(inv),
    )


def _ceph(inv: Inventory) -> CephPlan | None:
    ceph = inv.site.ceph
    if ceph is None:
        return None
    storage = [n for n in inv.nodes if Role.STORAGE in n.roles]
    # An odd monitor count keeps a quorum through the loss of a minority.
    mon_count = min(MAX_MONS, len(storage) if len(storage) % 2 else len(storage) - 1)
    mons = [n.hostname for n in storage[:mon_count]]
    osds = {n.hostname: list(n.disks.ceph_osd) for n in storage}
    osd_count = sum(len(d) for d in osds.values())
    rules = sorted({p.failure_domain.value for p in ceph.pools})
    pools = [
        PoolPlan(
            name=p.name,
            size=p.size,
            min_size=p.min_size,
            pg_num=p.pg_num or _pg_num(osd_count, p.size, len(ceph.pools)),
            crush_rule=f"replicated-{p.failure_domain.value}",
            application=p.application,
        )
        for p in ceph.pools
    ]
    # The file system's pools keep the first pool's copies and failure domain; their PGs count
    # both among the site's pools.
    first = pools[0]
    data_pgs = _pg_num(osd_count, first.size, len(ceph.pools) + 2)
    fs = FilesystemPlan(
        name=CEPHFS_NAME, metadata_pool=f"cephfs.{CEPHFS_NAME}.meta", data_pool=f"cephfs.{CEPHFS_NAME}.data"
    )
    pools += [
        first.model_copy(update={"name": name, "pg_num": pgs, "application": "cephfs"})
        for name, pgs in (
            (fs.metadata_pool, max(CEPHFS_META_MIN_PGS, data_pgs // 4)),
            (fs.data_pool, data_pgs),
        )
    ]
    return CephPlan(
        release=inv.bom.ceph,
        mons=mons,
        mgrs=mons[:2],
        mdss=mons[:2],
        osds=osds,
        crush_rules=[CrushRule(name=f"replicated-{d}", failure_domain=d) for d in rules],
        pools=pools,
        filesystem=fs,
        clients=_csi_clients(pools, fs),
    )


def _csi_clients(pools: list[PoolPlan], fs: FilesystemPlan) -> list[CephClientPlan]:
    """ceph-csi's capabilities (docs/capabilities.md at v3.12.2), each client on its own resource:
    the RBD driver's on the site's RBD pools; the CephFS driver's on the one file system only: its
    pools by their `cephfs` tags, its map, its metadata under /volumes (read) and /volumes/csi (the
    subvolume group it writes), and the mgr's volumes module (`allow rw`, which the subvolume
    commands need)."""
    rbd = [p.name for p in pools if p.application == "rbd"]
    cephfs = CephClientPlan(
        name=CEPHFS_CLIENT,
        caps={
            "mon": f"allow r fsname={fs.name}",
            "mgr": "allow rw",
            "osd": f"allow rw tag cephfs metadata={fs.name}, allow rw tag cephfs data={fs.name}",
            "mds": f"allow r fsname={fs.name} path=/volumes, allow rws fsname={fs.name} path=/volumes/{CEPHFS_GROUP}",
        },
    )
    if not rbd:
        return [cephfs]
    caps = {
        "mon": "profile rbd",
        "mgr": "profile rbd",
        "osd": ", ".join(f"profile rbd pool={p}" for p in rbd),
    }
    return [CephClientPlan(name=RBD_CLIENT, caps=caps), cephfs]


def _pg_num(osds: int, size: int, pools: int) -> int:
    """Ceph's rule of thumb: ~100 PGs per OSD over all pools, rounded to a power of two."""
    target = max(1, osds * PGS_PER_OSD // (size * pools))
    return 1 << max(3, round(math.log2(target)))


def _kubernetes(inv: Inventory) -> KubernetesPlan:
    k8s = inv.site.kubernetes
    return KubernetesPlan(
        version=inv.bom.kubernetes,
        control_plane_endpoint=k8s.control_plane_endpoint,
        pod_cidr=str(k8s.pod_cidr),
        service_cidr=str(k8s.service_cidr),
        control_planes=[n.hostname for n in inv.nodes if Role.CONTROL_PLANE in n.roles],
        workers=[
            n.hostname
            for n in inv.nodes
            if Role.CONTROL_PLANE not in n.roles and ({Role.WORKER, Role.GPU} & set(n.roles))
        ],
    )


def plan_serving(inv: Inventory) -> ServingPlan | None:
    serving = inv.site.serving
    if serving is None:
        return None
    gpu = dominant_gpu(inv)
    shape = replica_shape(serving.model, gpu) if gpu else None
    if shape is not None and serving.tensor_parallel is not None:
        tp = serving.tensor_parallel
        shape = ReplicaShape(gpu=shape.gpu, tensor_parallel=tp, nodes=max(1, tp // GPUS_PER_NODE_MAX))
    return ServingPlan(
        model=serving.model,
        hf_repo=SERVING_MODELS[serving.model].hf_repo,
        revision=inv.bom.model_revision,
        replicas=serving.replicas,
        shape=shape,
        slo_queue_wait_p99_s=serving.slo.queue_wait_p99_s,
        slo_ttft_p99_s=serving.slo.ttft_p99_s,
        max_model_len=serving.max_model_len,
        engine_args=serving.engine_args,
        canary_from=serving.canary_from,
    )


def spot_max_price(burst: Burst) -> float | None:
    """Per-node Spot max price that keeps a full fleet under the cap whatever Spot prices do.

    Without one AWS may bill up to on-demand, and a fleet sized under today's prices could
    cross the cap tomorrow; with one, `max_nodes` nodes never cost more than `max_hourly_usd`.
    The group is given it to 4 decimals (components/burst.py): rounded down here, not up there.
    """
    if not burst.max_nodes:
        return None
    share = Decimal(repr(burst.max_hourly_usd)) / burst.max_nodes
    return float(share.quantize(Decimal("0.0001"), rounding=ROUND_FLOOR))


def _burst(inv: Inventory) -> BurstPlan | None:
    burst = inv.site.burst
    if burst is None:
        return None
    boot = plan_boot(inv)
    return BurstPlan(
        region=burst.region,
        min_nodes=0,
        max_nodes=burst.max_nodes,
        max_hourly_usd=burst.max_hourly_usd,
        spot_max_price_usd=spot_max_price(burst),
        boot=boot,
        boot_to_serve_s=boot.total_s,
    )

"""On-prem degradation (burst lever 1): which workloads move, by how much, in which order. Pure.

Degrading k on-prem replicas frees the GPUs of k replicas of the site's model (the primary
workload, a LeaderWorkerSet or a Deployment) and runs the burst fleet's distilled model there:
`per_onprem` replicas at the fleet's tensor parallelism on each freed replica's GPUs. Their own
headless Service publishes those pods to one template of the gateway's fallback, so they serve
P1 and P2 only, like the burst nodes' own replicas; P0 stays on what is left of the primary.

Both move through their `scale` subresource. Where an HPA owns the primary's count, its
`maxReplicas` is lowered first (it would scale the primary straight back), its `minReplicas`
with it where the floor would pass the ceiling; restoring gives both back and leaves the count
to the HPA. Every step that takes GPUs back comes before every step that asks for them, so the
workloads never ask for more GPUs than the site holds: the scheduler keeps the new pods Pending
until the old ones have left their GPUs.
"""

from __future__ import annotations

from typing import Literal

from gpufleet.model.site import Inventory
from gpufleet.plan.aws import BurstFleet
from gpufleet.plan.engine import KV_LAYOUTS, engine_args
from gpufleet.plan.k8s import Workload, onprem_workload, weights_gib
from gpufleet.plan.node import Frozen
from gpufleet.plan.site import SitePlan

# The distilled pods' component label: it keeps them out of both serving disruption budgets
# (they select `app.kubernetes.io/component` DoesNotExist), which would otherwise count a pod
# loading its weights against the Spot nodes' two-minute drains.
DEGRADED_COMPONENT = "degraded"
LWS_GROUP, LWS_VERSION, LWS_PLURAL = "leaderworkerset.x-k8s.io", "v1", "leaderworkersets"


class ScaleTarget(Frozen):
    """A workload reached through its scale subresource."""

    kind: Literal["LeaderWorkerSet", "Deployment"]
    name: str

    @property
    def group(self) -> str:
        return LWS_GROUP if self.kind == "LeaderWorkerSet" else "apps"

    @property
    def plural(self) -> str:
        return LWS_PLURAL if self.kind == "LeaderWorkerSet" else "deployments"


class Autoscaler(Frozen):
    name: str
    min_replicas: int  # as planned (restored when no replica is degraded)
    max_replicas: int


class DegradePlan(Frozen):
    namespace: str
    primary: ScaleTarget
    primary_replicas: int  # the planned count where no HPA owns it
    autoscaler: Autoscaler | None
    distilled: ScaleTarget
    per_onprem: int  # distilled replicas on one primary replica's GPUs
    max_degraded: int  # P0 keeps at least one primary replica

    @property
    def primary_ceiling(self) -> int:
        return self.autoscaler.max_replicas if self.autoscaler else self.primary_replicas


class Step(Frozen):
    """One write: a workload's scale, or the HPA's bounds."""

    target: Literal["primary", "distilled", "autoscaler"]
    replicas: int  # scale; for the autoscaler its maxReplicas
    min_replicas: int | None = None  # the autoscaler's

    @property
    def line(self) -> str:
        if self.target == "autoscaler":
            return f"autoscaler {self.min_replicas}..{self.replicas}"
        return f"{self.target} {self.replicas}"


def degraded_workload(inv: Inventory, plan: SitePlan, fleet: BurstFleet) -> Workload | None:
    """The burst fleet's distilled model on the site's own GPUs, replicas 0 until the controller
    degrades: the on-prem workload's placement (GPU model, taint, model cache), the fleet's
    tensor parallelism and model, `capacity: spot` (the primary's Service selects `on-prem`);
    its headless `-pods` Service publishes them to the gateway's fallback."""
    primary = onprem_workload(inv, plan)
    per = _per_onprem(plan, fleet)
    if primary is None or per is None or plan.serving is None or plan.serving.shape is None:
        return None
    shape = plan.serving.shape
    return primary.model_copy(
        update={
            "name": f"{fleet.model}-degraded",
            "model": fleet.model,
            "hf_repo": fleet.hf_repo,
            "revision": fleet.revision,
            "capacity": "spot",
            "component": DEGRADED_COMPONENT,
            "replicas": 0,
            "tensor_parallel": fleet.tensor_parallel,
            "nodes_per_replica": 1,
            "gpus_per_pod": fleet.tensor_parallel,
            "rdma": False,
            "weights_gib": weights_gib(fleet.model),
            "autoscale_min": None,
            "autoscale_max": None,
            "engine": engine_args(
                model=fleet.model,
                hf_repo=fleet.hf_repo,
                revision=fleet.revision,
                gpus=[shape.gpu],
                tensor_parallel=fleet.tensor_parallel,
                nodes=1,
                max_model_len=min(plan.serving.max_model_len, KV_LAYOUTS[fleet.model].max_context),
                overrides={},
            ),
        }
    )


def plan_degrade(inv: Inventory, plan: SitePlan, fleet: BurstFleet) -> DegradePlan | None:
    """What the Degrader scales for this site; None where degradation has nothing to move (no
    burst model smaller than the site's, or one that does not divide a replica's GPUs)."""
    primary = onprem_workload(inv, plan)
    distilled = degraded_workload(inv, plan, fleet)
    per = _per_onprem(plan, fleet)
    if primary is None or distilled is None or per is None:
        return None
    autoscaler = (
        Autoscaler(name=primary.name, min_replicas=primary.autoscale_min, max_replicas=primary.autoscale_max)
        if primary.autoscale_min is not None and primary.autoscale_max is not None
        else None
    )
    ceiling = autoscaler.max_replicas if autoscaler else primary.replicas
    return DegradePlan(
        namespace=primary.namespace,
        primary=ScaleTarget(
            kind="LeaderWorkerSet" if primary.multi_node else "Deployment", name=primary.name
        ),
        primary_replicas=primary.replicas,
        autoscaler=autoscaler,
        distilled=ScaleTarget(kind="Deployment", name=distilled.name),
        per_onprem=per,
        max_degraded=max(0, ceiling - 1),
    )


class Current(Frozen):
    """What the cluster holds now: the two workloads' scale and the HPA's bounds (None: no HPA)."""

    primary: int
    distilled: int
    autoscaler_min: int | None = None
    autoscaler_max: int | None = None


def scale_steps(p: DegradePlan, degraded: int, now: Current) -> list[Step]:
    """The writes that take the site to `degraded` replicas degraded (clamped to what the plan
    allows) from what the cluster holds now: every step that frees GPUs before any that asks for
    them. Empty when the cluster already holds it."""
    k = max(0, min(degraded, p.max_degraded))
    ceiling = p.primary_ceiling - k
    shrink: list[Step] = []
    grow: list[Step] = []
    distilled = k * p.per_onprem
    if distilled < now.distilled:
        shrink.append(Step(target="distilled", replicas=distilled))
    if p.autoscaler is not None:
        floor = min(p.autoscaler.min_replicas, ceiling)
        if (now.autoscaler_min, now.autoscaler_max) != (floor, ceiling):
            # Lowered before the primary shrinks (or the HPA scales it straight back); raised
            # after the distilled pods left, and the HPA owns the count again.
            lower = now.autoscaler_max is None or ceiling < now.autoscaler_max
            (shrink if lower else grow).append(
                Step(target="autoscaler", replicas=ceiling, min_replicas=floor)
            )
        primary = min(now.primary, ceiling)
    else:
        primary = ceiling
    if primary < now.primary:
        shrink.append(Step(target="primary", replicas=primary))
    elif primary > now.primary:
        grow.append(Step(target="primary", replicas=primary))
    if distilled > now.distilled:
        grow.append(Step(target="distilled", replicas=distilled))
    return shrink + grow


def _per_onprem(plan: SitePlan, fleet: BurstFleet) -> int | None:
    serving = plan.serving
    if serving is None or serving.shape is None or not fleet.fallback:
        return None
    gpus = serving.shape.tensor_parallel
    if fleet.tensor_parallel > gpus // serving.shape.nodes or gpus % fleet.tensor_parallel:
        return None  # a distilled replica must sit on one node, and fill the freed GPUs exactly
    return gpus // fleet.tensor_parallel

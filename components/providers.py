"""Dynamic providers: a node's pyinfra deploy, the Ceph and Kubernetes playbooks.

Pulumi pickles each provider (dill) into the state; these classes hold no clients, locks or
secrets, and open every connection inside their methods, so what is pickled is only a reference
to this importable module. The work itself goes through `components.provisioning`.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from components import provisioning
from gpufleet.plan.expect import HostExpect
from gpufleet.plan.node import NodePlan
from gpufleet.plan.nodediff import reboot_reasons

# pulumi.dynamic wraps pickle._Pickler._batch_setitems each time it serializes a provider (to sort
# dict items) and never unwraps it: the wrappers nest, and past ~900 dynamic resources in one
# program the nesting overflows the stack. Kept here, from before any serialization, to undo that.
_BATCH_SETITEMS = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]


def undo_pickler_wrapping() -> None:
    """Call after constructing a dynamic resource: its provider is serialized by then."""
    pickle._Pickler._batch_setitems = _BATCH_SETITEMS  # type: ignore[attr-defined]


# Inputs whose change makes a different machine or cluster: replace, never update in place.
NODE_IDENTITY = ("site", "hostname")
CLUSTER_IDENTITY = ("site",)
JOINABLE = ("ceph", "kubernetes")
# A cluster output that is a bootstrap token with a TTL is minted again by any `up` within this
# long of its expiry (docs/security.md: run `up` more often than TTL minus this).
REMINT_BEFORE_S = 12 * 3600
# How long a deleted node's drain may wait on disruption budgets before the delete fails.
DRAIN_TIMEOUT_S = 1800.0


def _changed(olds: dict[str, Any], news: dict[str, Any], keys: list[str]) -> list[str]:
    return sorted(k for k in keys if olds.get(k) != news.get(k))


def _plan(props: dict[str, Any]) -> NodePlan:
    return NodePlan.model_validate_json(str(props["plan"]))


def _expect(props: dict[str, Any]) -> HostExpect:
    return HostExpect.model_validate_json(str(props["expect"]))


class NodeProvider(ResourceProvider):
    """One bare-metal node converged to its own `plan` input at its `address`, rebooted when the
    plan change needs it, gated against its own `expect` input, and (a Kubernetes member) admitted
    through its `kubeconfig` input once joined; `read` reports drift for `pulumi refresh`; `delete`
    takes it out of Kubernetes and Ceph. No inventory is read."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        try:
            plan = _plan(news)
        except (ValueError, KeyError) as exc:
            failures.append(CheckFailure("plan", f"not a node plan: {exc}".splitlines()[0]))
        else:
            if plan.digest != news.get("digest"):
                failures.append(
                    CheckFailure("digest", f"{news.get('digest')} is not the plan's {plan.digest}")
                )
            if plan.hostname != news.get("hostname"):
                failures.append(CheckFailure("hostname", f"the plan is for {plan.hostname}"))
            pinned = {p.name: p.version for p in plan.packages if p.hold and p.version}
            if pinned != news.get("pinned"):
                failures.append(CheckFailure("pinned", "not the plan's held packages"))
        try:
            expect = _expect(news)
        except (ValueError, KeyError) as exc:
            failures.append(CheckFailure("expect", f"not host expectations: {exc}".splitlines()[0]))
        else:
            if expect.hostname != news.get("hostname"):
                failures.append(CheckFailure("expect", f"the expectations are for {expect.hostname}"))
        join = news.get("join")
        if not isinstance(join, dict) or any(
            c not in JOINABLE or not isinstance(h, list) or not h for c, h in join.items()
        ):
            failures.append(
                CheckFailure("join", f"clusters to join ({', '.join(JOINABLE)}) with their core hosts")
            )
        elif "kubernetes" in join and not isinstance(news.get("kubeconfig"), str):
            failures.append(
                CheckFailure("kubeconfig", "a Kubernetes member is admitted through the cluster's")
            )
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, list(NODE_IDENTITY))
        changed = _changed(olds, news, ["address", "digest", "pinned", "expect", "join"])
        # After `pulumi refresh`, `drift` lists what the deploy would change on the host now.
        if olds.get("drift"):
            changed.append("drift")
        return DiffResult(
            changes=bool(replaces or changed),
            replaces=replaces,
            stables=[k for k in NODE_IDENTITY if k not in replaces],
            delete_before_replace=True,
        )

    def _converge(self, props: dict[str, Any], old_plan: NodePlan | None) -> dict[str, Any]:
        plan = _plan(props)
        reasons = reboot_reasons(old_plan, plan)
        changed = provisioning.converge_node(
            props["site"], props["hostname"], props["address"], plan, _expect(props), reasons, props["join"],
            props.get("kubeconfig"),
        )  # fmt: skip
        return {**props, "changed": changed, "drift": []}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"{props['site']}/{props['hostname']}", self._converge(props, None))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        try:
            old_plan: NodePlan | None = _plan(olds)
        except (ValueError, KeyError):
            old_plan = None  # state from before plans travelled whole: the deploy's marker decides
        return UpdateResult(self._converge(news, old_plan))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # A pyinfra dry run reads the host's facts and lists the operations that would change it
        # (e.g. "nvidia-driver-580-open 535.x -> 580.159.04-*"): refresh records them, preview shows them.
        drift = provisioning.pending_changes(props["site"], props["hostname"], props["address"], _plan(props))
        return ReadResult(id_, {**props, "drift": drift})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Out of the clusters first: drained (never past a disruption budget: a drain that cannot
        # finish fails the delete and keeps the node), deleted from Kubernetes, its OSDs purged once
        # Ceph can spare them. Wiping the bare metal is a human's call.
        plan = _plan(props)
        if "control-plane" in plan.roles:
            # Nothing here removes an etcd member or a control plane's static pods.
            raise RuntimeError(
                f"{plan.hostname}: a control plane is not deleted by Pulumi: its etcd member and static "
                "pods would stay; take it out of the control plane first (etcdctl member remove, kubeadm "
                "reset on it), then `pulumi state delete` its Node"
            )
        provisioning.remove_node(props["site"], plan, DRAIN_TIMEOUT_S)


class ClusterProvider(ResourceProvider):
    """A site-wide playbook (Ceph or Kubernetes) run through ansible-runner; its facts are outputs.

    It runs on the site's core `hosts` only (members join from their own Node), then admits the core
    hosts in `admit` (Kubernetes: the control planes); `read` runs the playbook in check mode and
    reports what it would change as `drift`.

    With `token_ttl_s`, the playbook mints a join token of that TTL on every run: the provider
    stamps its expiry (`join_token_expires`, epoch seconds) and reports a change once it is
    within REMINT_BEFORE_S of it, so the token is replaced before it lapses."""

    def __init__(self, playbook: str, outputs: tuple[str, ...], token_ttl_s: int | None = None) -> None:
        self.playbook = playbook
        self.outputs = outputs
        self.token_ttl_s = token_ttl_s

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(key, "required") for key in ("site", "spec", "digest") if not news.get(key)]
        if not isinstance(news.get("hosts"), list) or not news["hosts"]:
            failures.append(CheckFailure("hosts", "the core hosts the playbook runs on"))
        admit = news.get("admit", {})
        if not isinstance(admit, dict) or not set(admit) <= set(news.get("hosts") or []):
            failures.append(CheckFailure("admit", "core hosts to admit, each with its planned labels"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, list(CLUSTER_IDENTITY))
        changed = _changed(olds, news, ["spec", "digest", "hosts", "admit"])
        # Drift found by `pulumi refresh`: run the playbook again.
        if olds.get("drift"):
            changed.append("drift")
        expires = olds.get("join_token_expires")
        if self.token_ttl_s is not None and (expires is None or time.time() >= expires - REMINT_BEFORE_S):
            changed.append("join_token_expires")
        return DiffResult(
            changes=bool(replaces or changed),
            replaces=replaces,
            stables=[k for k in CLUSTER_IDENTITY if k not in replaces],
            delete_before_replace=False,
        )

    def _run(self, props: dict[str, Any]) -> dict[str, Any]:
        facts = provisioning.converge_cluster(props["site"], self.playbook, list(props["hosts"]))
        missing = [k for k in self.outputs if k not in facts]
        if missing:
            raise RuntimeError(f"playbook {self.playbook} exported no {', '.join(missing)}")
        if self.token_ttl_s is not None:
            facts["join_token_expires"] = time.time() + self.token_ttl_s
        # The control planes' own Nodes passed their gates before the playbook ran: admit them now,
        # so that the platform, which waits for this resource, finds schedulable nodes.
        admitted = provisioning.admit_nodes(facts["kubeconfig"], props["admit"]) if props.get("admit") else []
        return {**props, **facts, "admitted": admitted, "drift": []}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"{props['site']}/{self.playbook}", self._run(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._run(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        drift = provisioning.cluster_drift(props["site"], self.playbook, list(props["hosts"]))
        return ReadResult(id_, {**props, "drift": drift})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Tearing down a Ceph cluster or a control plane destroys data: never on `pulumi destroy`.
        return None

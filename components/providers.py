"""Dynamic providers: a node's pyinfra deploy, the Ceph and Kubernetes playbooks.

Pulumi pickles each provider (dill) into the state; these classes hold no clients, locks or
secrets, and open every connection inside their methods, so what is pickled is only a reference
to this importable module. The work itself goes through `components.provisioning`.
"""

from __future__ import annotations

import pickle
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
from gpufleet.plan.node import NodePlan

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


def _changed(olds: dict[str, Any], news: dict[str, Any], keys: list[str]) -> list[str]:
    return sorted(k for k in keys if olds.get(k) != news.get(k))


class NodeProvider(ResourceProvider):
    """One bare-metal node converged to its plan; `read` reports drift for `pulumi refresh`."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        try:
            plan = NodePlan.model_validate_json(str(news.get("plan")))
        except ValueError as exc:
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
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, list(NODE_IDENTITY))
        changed = _changed(olds, news, ["address", "digest", "pinned"])
        # After `pulumi refresh`, `drift` lists what the deploy would change on the host now.
        if olds.get("drift"):
            changed.append("drift")
        return DiffResult(
            changes=bool(replaces or changed),
            replaces=replaces,
            stables=[k for k in NODE_IDENTITY if k not in replaces],
            delete_before_replace=True,
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        changed = provisioning.converge_node(props["site"], props["hostname"])
        return CreateResult(
            f"{props['site']}/{props['hostname']}", {**props, "changed": changed, "drift": []}
        )

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        changed = provisioning.converge_node(news["site"], news["hostname"])
        return UpdateResult({**news, "changed": changed, "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # A pyinfra dry run reads the host's facts and lists the operations that would change it
        # (e.g. "nvidia-driver-580-open 535.x -> 580.159.04-*"): refresh records them, preview shows them.
        drift = provisioning.pending_changes(props["site"], props["hostname"])
        return ReadResult(id_, {**props, "drift": drift})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Removing a node from the inventory stops managing it; wiping bare metal is a human's call.
        return None


class ClusterProvider(ResourceProvider):
    """A site-wide playbook (Ceph or Kubernetes) run through ansible-runner; its facts are outputs."""

    def __init__(self, playbook: str, outputs: tuple[str, ...]) -> None:
        self.playbook = playbook
        self.outputs = outputs

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(key, "required") for key in ("site", "spec", "digest") if not news.get(key)]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, list(CLUSTER_IDENTITY))
        changed = _changed(olds, news, ["spec", "digest"])
        return DiffResult(
            changes=bool(replaces or changed),
            replaces=replaces,
            stables=[k for k in CLUSTER_IDENTITY if k not in replaces],
            delete_before_replace=False,
        )

    def _run(self, props: dict[str, Any]) -> dict[str, Any]:
        facts = provisioning.converge_cluster(props["site"], self.playbook)
        missing = [k for k in self.outputs if k not in facts]
        if missing:
            raise RuntimeError(f"playbook {self.playbook} exported no {', '.join(missing)}")
        return {**props, **facts}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"{props['site']}/{self.playbook}", self._run(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._run(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Tearing down a Ceph cluster or a control plane destroys data: never on `pulumi destroy`.
        return None

"""The burst controller's lever 1 in the cluster: on-prem replicas moved to the distilled model.

`KubernetesDegrader.set_degraded(k)` takes the site to k on-prem replicas degraded, as
`gpufleet.plan.degrade` plans it: the primary workload (and its HPA's bounds) down, then the
distilled workload up to `k * per_onprem`; back in the other order. It reads what the cluster
holds and writes only what differs, so the controller may call it on every step.

Every write is a merge patch (content type named, never the client's guess) carrying the
`resourceVersion` it was computed from: a workload the HPA or a person rescaled in between is
refused with 409, read again and recomputed. Each call has a timeout; 409 and 5xx answers are
asked again a bounded number of times (tenacity), any other answer is final. Nothing raises into
the controller's loop: each failure is one line, and a failed write stops the writes after it (a
later one would ask for GPUs the failed one did not free).

The two workloads go through their `scale` subresource (`/apis/<group>/<version>/namespaces/
<ns>/<plural>/<name>/scale`, autoscaling/v1 `Scale`): the LeaderWorkerSet CRD declares it
(`specReplicasPath: .spec.replicas`), and a Deployment's is the same path under `apps/v1`, so one
client call (CustomObjectsApi) serves both. RBAC grants exactly these: `get`/`patch` on
`<plural>/scale` and on the HPA, each by `resourceNames` (components/controller.py).
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from gpufleet.kubeapi import MERGE_PATCH, status_message
from gpufleet.plan.degrade import Current, DegradePlan, ScaleTarget, Step, scale_steps

log = logging.getLogger("gpufleet.burst")

HPA_GROUP, HPA_VERSION, HPA_PLURAL = "autoscaling", "v2", "horizontalpodautoscalers"


class _Moved(Exception):
    """The object changed between the read and the write (the server's 409): read it again."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Moved) or (
        isinstance(exc, ApiException) and (exc.status == 409 or (exc.status or 0) >= 500)
    )


class KubernetesDegrader:
    """`set_degraded(count) -> failures` through the Kubernetes API (a CustomObjectsApi)."""

    def __init__(
        self,
        plan: DegradePlan,
        api: Any,
        timeout_s: float = 5.0,
        attempts: int = 3,
        deadline_s: float = 30.0,
        backoff_s: float = 0.5,
    ) -> None:
        self.plan = plan
        self.api = api
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.deadline_s = deadline_s
        self.backoff_s = backoff_s

    def set_degraded(self, count: int) -> list[str]:
        p = self.plan
        failures: list[str] = []
        want = max(0, min(count, p.max_degraded))
        if want != count:
            failures.append(
                f"degraded {count} asked, {want} applied: {p.namespace}/{p.primary.name} keeps at least one "
                f"of its {p.primary_ceiling} replicas"
            )
        try:
            steps = self._retrying(lambda: scale_steps(p, want, self._current()))
        except Exception as exc:  # every failure is a line, never a crash of the loop
            return [*failures, f"degrade to {want}: cannot read the workloads: {_say(exc)}"]
        for step in steps:
            try:
                self._retrying(lambda s=step: self._write(s))
            except Exception as exc:
                failures.append(f"degrade to {want}: {self._where(step)} -> {step.line} failed: {_say(exc)}")
                break
            log.info("degrade to %d: %s", want, step.line)
        return failures

    # --- reads and writes ------------------------------------------------------------------------

    def _retrying(self, call: Any) -> Any:
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.deadline_s),
            wait=wait_exponential(multiplier=self.backoff_s, max=4 * self.backoff_s),
            reraise=True,
        )
        return retrying(call)

    def _scale(self, target: ScaleTarget) -> dict[str, Any]:
        scale: dict[str, Any] = self.api.get_namespaced_custom_object_scale(
            target.group, "v1", self.plan.namespace, target.plural, target.name,
            _request_timeout=self.timeout_s,
        )  # fmt: skip
        return scale

    def _hpa(self) -> dict[str, Any] | None:
        if self.plan.autoscaler is None:
            return None
        hpa: dict[str, Any] = self.api.get_namespaced_custom_object(
            HPA_GROUP, HPA_VERSION, self.plan.namespace, HPA_PLURAL, self.plan.autoscaler.name,
            _request_timeout=self.timeout_s,
        )  # fmt: skip
        return hpa

    def _current(self) -> Current:
        hpa = self._hpa()
        spec = (hpa or {}).get("spec") or {}
        return Current(
            primary=_replicas(self._scale(self.plan.primary)),
            distilled=_replicas(self._scale(self.plan.distilled)),
            autoscaler_min=spec.get("minReplicas", 1) if hpa is not None else None,
            autoscaler_max=spec.get("maxReplicas") if hpa is not None else None,
        )

    def _write(self, step: Step) -> None:
        p = self.plan
        if step.target == "autoscaler":
            hpa = self._hpa()
            assert p.autoscaler is not None and hpa is not None  # scale_steps plans no bounds without one
            name = p.autoscaler.name
            body = {
                "metadata": {"resourceVersion": hpa["metadata"]["resourceVersion"]},
                "spec": {"minReplicas": step.min_replicas, "maxReplicas": step.replicas},
            }
            self._patch(lambda: self.api.patch_namespaced_custom_object(
                HPA_GROUP, HPA_VERSION, p.namespace, HPA_PLURAL, name, body,
                _content_type=MERGE_PATCH, _request_timeout=self.timeout_s,
            ))  # fmt: skip
            return
        target = p.primary if step.target == "primary" else p.distilled
        scale = self._scale(target)
        replicas = step.replicas
        if step.target == "primary" and p.autoscaler is not None:
            # Under an HPA the step is a ceiling: what it scaled down to since stays.
            replicas = min(replicas, _replicas(scale))
        if replicas == _replicas(scale):
            return
        body = {
            "metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]},
            "spec": {"replicas": replicas},
        }
        self._patch(lambda: self.api.patch_namespaced_custom_object_scale(
            target.group, "v1", p.namespace, target.plural, target.name, body,
            _content_type=MERGE_PATCH, _request_timeout=self.timeout_s,
        ))  # fmt: skip

    @staticmethod
    def _patch(call: Any) -> None:
        try:
            call()
        except ApiException as exc:
            if exc.status == 409:
                raise _Moved(status_message(exc)[0]) from None
            raise

    def _where(self, step: Step) -> str:
        p = self.plan
        if step.target == "autoscaler":
            assert p.autoscaler is not None
            return f"HorizontalPodAutoscaler {p.namespace}/{p.autoscaler.name}"
        target = p.primary if step.target == "primary" else p.distilled
        return f"{target.kind} {p.namespace}/{target.name}"


def _replicas(scale: Any) -> int:
    """`spec.replicas` of a Scale the server sent (absent: 0, the field's omitempty), which must
    carry the resourceVersion a write is checked against; any other shape is refused."""
    spec = scale.get("spec") if isinstance(scale, dict) else None
    meta = scale.get("metadata") if isinstance(scale, dict) else None
    value = spec.get("replicas", 0) if isinstance(spec, dict) else None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 0
        or not isinstance(meta, dict)
        or not isinstance(meta.get("resourceVersion"), str)
    ):
        raise ValueError(f"not a Scale the API server sends: {str(scale)[:80]}")
    return value


def _say(exc: BaseException) -> str:
    """The server's own message where it sent one; the client's error otherwise; one line."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {status_message(exc)[0]}"
    if isinstance(exc, _Moved):
        return f"409 {exc} (still changing after the retries)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")

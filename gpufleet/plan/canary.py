"""Whether a canary replica holds the serving SLO, from two scrapes of its Triton counters. Pure.

The gate is the one the autoscaler holds the fleet to: mean queue wait per request at most
`QUEUE_TARGET_SLO_FRACTION` of the queue-wait SLO, no failed request, and enough requests in
the window for the mean to say something.
"""

from __future__ import annotations

from gpufleet.plan.k8s import QUEUE_TARGET_SLO_FRACTION
from gpufleet.plan.node import Frozen

MIN_REQUESTS = 20


class CanaryVerdict(Frozen):
    holds: bool
    requests: int
    failures: int
    queue_wait_s: float
    bound_s: float
    reason: str


def judge_canary(
    before: dict[str, float],
    after: dict[str, float],
    slo_queue_wait_s: float,
    min_requests: int = MIN_REQUESTS,
) -> CanaryVerdict:
    """`before`/`after`: the model's Triton counters (gpufleet.serving.loadgen.scrape)."""

    def delta(name: str) -> float:
        # A restarted server counts from zero: the window then shows only what came after.
        a, b = after.get(name, 0.0), before.get(name, 0.0)
        return a - b if a >= b else a

    requests = int(delta("nv_inference_request_success"))
    failures = int(delta("nv_inference_request_failure"))
    wait = delta("nv_inference_queue_duration_us") / 1e6 / requests if requests else 0.0
    bound = slo_queue_wait_s * QUEUE_TARGET_SLO_FRACTION
    if failures:
        reason = f"{failures} failed requests"
    elif requests < min_requests:
        reason = f"{requests} requests in the window, fewer than {min_requests}"
    elif wait > bound:
        reason = f"mean queue wait {wait:.3f}s above {bound:.3f}s"
    else:
        reason = f"{requests} requests, mean queue wait {wait:.3f}s within {bound:.3f}s, no failures"
    return CanaryVerdict(
        holds=reason.endswith("no failures"),
        requests=requests,
        failures=failures,
        queue_wait_s=wait,
        bound_s=bound,
        reason=reason,
    )

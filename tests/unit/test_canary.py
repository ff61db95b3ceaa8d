"""The canary gate from two scrapes of Triton's counters."""

from __future__ import annotations

import pytest

from gpufleet.plan.canary import judge_canary

BEFORE = {
    "nv_inference_request_success": 100,
    "nv_inference_request_failure": 0,
    "nv_inference_queue_duration_us": 1e6,
}


def _after(requests: int, failures: int, queue_s_total: float) -> dict[str, float]:
    return {
        "nv_inference_request_success": 100 + requests,
        "nv_inference_request_failure": failures,
        "nv_inference_queue_duration_us": 1e6 + queue_s_total * 1e6,
    }


@pytest.mark.parametrize(
    ("after", "holds", "reason"),
    [
        (_after(100, 0, 10.0), True, "mean queue wait 0.100s within 0.500s"),  # SLO 2 s: bound 0.5 s
        (_after(100, 0, 60.0), False, "mean queue wait 0.600s above 0.500s"),
        (_after(100, 1, 1.0), False, "1 failed requests"),
        (_after(5, 0, 0.1), False, "5 requests in the window, fewer than 20"),
        # Restarted (counters below the first scrape): only what came after counts.
        ({"nv_inference_request_success": 40, "nv_inference_queue_duration_us": 4e6}, True, "40 requests"),
    ],
)
def test_the_gate(after: dict[str, float], holds: bool, reason: str) -> None:
    verdict = judge_canary(BEFORE, after, slo_queue_wait_s=2.0)
    assert verdict.holds is holds and reason in verdict.reason

"""The controller's admission rule: tighten lower classes only while capacity boots AND the site is
overloaded (queue wait or TTFT p99 past a share of its SLO), relax with hysteresis, never on a
missing or impossible reading, and never past twice the boot time (the boot failed)."""

from __future__ import annotations

import math

import pytest

from gpufleet.burst.controller import (
    RELAX_SLO_SHARE,
    TIGHTEN_SLO_SHARE,
    slo_pressure,
    tighten_admission,
)
from gpufleet.burst.policy import Signals


def signals(queue_wait_s: float, ttft_s: float | None = None) -> Signals:
    return Signals(
        t=0.0,
        load_replicas=1.0,
        queue_wait_s=queue_wait_s,
        pending=0,
        gpu_util=0.5,
        ready_replicas=1.0,
        ttft_s=ttft_s,
    )


def test_pressure_is_the_worse_of_queue_wait_and_ttft_over_their_slos() -> None:
    assert slo_pressure(signals(1.0), 2.0, None) == 0.5
    assert slo_pressure(signals(1.0, ttft_s=9.0), 2.0, 10.0) == 0.9
    # TTFT reported but no TTFT SLO held: queue wait only.
    assert slo_pressure(signals(1.0, ttft_s=9.0), 2.0, None) == 0.5
    assert slo_pressure(signals(0.2, ttft_s=1.0), 2.0, 10.0) == pytest.approx(0.1)


def test_booting_alone_does_not_tighten_an_unloaded_site() -> None:
    assert tighten_admission(100.0, True, None, 60.0, 0.0, False) == (False, 100.0)
    assert tighten_admission(100.0, True, None, 60.0, TIGHTEN_SLO_SHARE, False) == (False, 100.0)


@pytest.mark.parametrize("trigger", ["queue_wait", "ttft"])
def test_each_trigger_tightens_while_booting(trigger: str) -> None:
    s = signals(1.5) if trigger == "queue_wait" else signals(0.0, ttft_s=6.0)
    pressure = slo_pressure(s, 2.0, 10.0)
    assert pressure > TIGHTEN_SLO_SHARE
    assert tighten_admission(100.0, True, None, 60.0, pressure, False) == (True, 100.0)
    # Overloaded but nothing boots: no capacity is on its way, shedding buys nothing.
    assert tighten_admission(100.0, False, None, 60.0, pressure, False) == (False, None)


def test_relaxes_with_hysteresis() -> None:
    between = (TIGHTEN_SLO_SHARE + RELAX_SLO_SHARE) / 2
    # Not tightened: between the shares stays normal; tightened: between the shares stays tight.
    assert tighten_admission(110.0, True, 100.0, 60.0, between, False) == (False, 100.0)
    assert tighten_admission(110.0, True, 100.0, 60.0, between, True) == (True, 100.0)
    # At or below the relax share, normal again though capacity still boots.
    assert tighten_admission(120.0, True, 100.0, 60.0, RELAX_SLO_SHARE, True) == (False, 100.0)


@pytest.mark.parametrize("pressure", [None, math.nan, math.inf, -1.0])
def test_never_tightens_on_a_missing_or_impossible_reading(pressure: float | None) -> None:
    assert tighten_admission(100.0, True, None, 60.0, pressure, False) == (False, 100.0)
    assert tighten_admission(100.0, True, 90.0, 60.0, pressure, True) == (False, 90.0)


def test_a_failed_boot_relaxes_past_twice_its_boot_time_however_loaded() -> None:
    assert tighten_admission(220.0, True, 100.0, 60.0, 5.0, True) == (True, 100.0)
    assert tighten_admission(221.0, True, 100.0, 60.0, 5.0, True) == (False, 100.0)
    # Once it serves, the clock starts again with the next boot.
    assert tighten_admission(230.0, False, 100.0, 60.0, 5.0, False) == (False, None)
    assert tighten_admission(240.0, True, None, 60.0, 5.0, False) == (True, 240.0)

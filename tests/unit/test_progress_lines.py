"""Progress lines: every event is a line, and an ongoing step is repeated while the output is quiet,
so a log never goes silent for longer than the heartbeat. Real threads and a real Rich console
writing to a buffer, with a short heartbeat."""

from __future__ import annotations

import io
import time

from rich.console import Console

from gpufleet.progress import Lines


def _lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_a_quiet_step_is_repeated_with_its_age_until_it_is_done() -> None:
    buffer = io.StringIO()
    with Lines(Console(file=buffer, width=10_000), every_s=0.2) as lines:
        lines.say("lab-st1", "operation 5: apt install ceph-osd")
        time.sleep(0.9)
        lines.done("lab-st1", "finished")
        seen = len(_lines(buffer))
        time.sleep(0.6)
    out = _lines(buffer)
    assert out[0] == "lab-st1: operation 5: apt install ceph-osd"
    repeats = out[1:-1]
    assert 2 <= len(repeats) <= 5, out
    assert all(r.startswith("lab-st1: operation 5: apt install ceph-osd (still going, ") for r in repeats)
    assert out[-1] == "lab-st1: finished"
    assert len(out) == seen, "nothing is repeated once done"


def test_lines_that_keep_coming_need_no_repeat() -> None:
    buffer = io.StringIO()
    with Lines(Console(file=buffer, width=10_000), every_s=0.3) as lines:
        for i in range(8):
            lines.say("ceph.yml", f"task {i}")
            time.sleep(0.1)
    assert _lines(buffer) == [f"ceph.yml: task {i}" for i in range(8)]


def test_every_ongoing_key_is_repeated_and_one_off_lines_are_not() -> None:
    buffer = io.StringIO()
    with Lines(Console(file=buffer, width=10_000), every_s=0.2) as lines:
        lines.say("lab-cp1", "booting")
        lines.say("lab-st1", "booting")
        lines.say("lab", "mirror signed", ongoing=False)
        time.sleep(0.35)
    out = _lines(buffer)
    assert out[:3] == ["lab-cp1: booting", "lab-st1: booting", "lab: mirror signed"]
    assert {line.split(" (still going")[0] for line in out[3:]} == {"lab-cp1: booting", "lab-st1: booting"}

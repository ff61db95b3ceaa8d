"""The provision summary's detail cell: whole operation names up to MAX_DETAIL, then a count.

A cut mid-name (`pinn…`) says nothing a reader can act on; the count says how many more there are
and where to read them. The names below are those the lab's storage hosts reported in a rehearsal
(pyinfra needs a host to produce them). Not checked: what `--json` prints.
"""

from __future__ import annotations

from gpufleet.provision.cli import MAX_DETAIL, change_detail, summary_table
from gpufleet.provision.nodes import HostResult

OPS = [
    "file /etc/apt/sources.list.d/gpufleet-mirror.sources",
    "file /etc/apt/preferences.d/gpufleet-pins",
    "apt update (sources or pins changed)",
    "apt update (daily)",
    "pinned packages ceph-common chrony",
    "hold packages",
    "service chrony",
]


def test_every_shown_operation_is_whole_and_the_rest_is_counted() -> None:
    detail = change_detail(OPS)
    assert len(detail) <= MAX_DETAIL
    *shown, tail = detail.split("; ")
    assert shown == OPS[: len(shown)]
    assert tail == f"+{len(OPS) - len(shown)} more (--json)"


def test_a_short_list_is_shown_as_it_is() -> None:
    assert change_detail(OPS[:2]) == "; ".join(OPS[:2])
    assert change_detail([]) == ""


def test_one_long_operation_is_shown_whole() -> None:
    assert change_detail(["x" * (MAX_DETAIL + 40)]) == "x" * (MAX_DETAIL + 40)


def test_an_error_replaces_the_detail_uncut() -> None:
    error = "failed: " + "e" * 300 + " (log out/lab/logs/lab-st1.log)"
    table = summary_table([HostResult("lab-st1", ok=False, changed=OPS, error=error)], dry_run=False)
    assert list(table.columns[-1].cells) == [error]

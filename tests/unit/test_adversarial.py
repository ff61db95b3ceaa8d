"""The adversarial suite: 2,000 seeded mutations of the shipped inventories and stack files through
the CLI (bench/adversarial.py holds the generator and the destination oracles; its benchmark runs
10,000). Every case exits 0 or 2 without a traceback, costs < 2 s of CPU, the run grows the process
by < 200 MB, and nothing accepted reaches a template, a command or a path unsafely.

The seed is fixed so that a failure reproduces; GPUFLEET_FUZZ_SEED runs another sample.
"""

from __future__ import annotations

import os

from bench.adversarial import MAX_CPU_S, MAX_GROWTH_MB, _check_inventory, run
from gpufleet.inventory.load import load_inventory
from gpufleet.model.site import PackageSources, Taint

CASES = 2_000


def test_adversarial_inputs_are_refused_or_safe() -> None:
    outcomes, growth = run(int(os.environ.get("GPUFLEET_FUZZ_SEED", "14")), CASES)
    assert len(outcomes) == CASES
    assert [(o.case.base, o.case.mutation, o.crash) for o in outcomes if o.crash] == []
    assert [(o.case.base, o.case.mutation, o.codes) for o in outcomes if set(o.codes) - {0, 2}] == []
    assert [(o.case.base, o.case.mutation, o.unsafe) for o in outcomes if o.unsafe] == []
    slow = [(o.case.base, o.case.mutation, round(o.cpu_s, 2)) for o in outcomes if o.cpu_s >= MAX_CPU_S]
    assert slow == []
    assert growth < MAX_GROWTH_MB
    # Both sides are exercised: most mutations are refused, and some are accepted and checked
    # (seed 14 after the serving and perf pins: 1,916 refused, 84 accepted).
    refused = sum(o.codes[:1] == [2] for o in outcomes)
    accepted = sum(o.accepted for o in outcomes)
    assert refused > CASES // 2 and accepted > CASES // 40, (refused, accepted)


def test_the_oracles_see_what_the_review_found() -> None:
    """Values the old model accepted, slipped past the model: each oracle names what they reach."""
    inv = load_inventory("dc1")
    st01, gpu01 = inv.node("st01"), inv.node("gpu01")
    assert st01.disks.raid6 is not None
    raid = st01.disks.raid6.model_construct(
        members=["/etc/passwd", *st01.disks.raid6.members[1:]], mountpoint="/etc", chunk_kib=512
    )
    disks = st01.disks.model_construct(**{**dict(st01.disks), "raid6": raid})
    taint = Taint.model_construct(key="a", value="x --kubeconfig=/tmp/k", effect="NoSchedule")
    sources = PackageSources.model_construct(
        mirror="https://m/debian", mirror_suite="noble\nTrusted: yes", nvidia_cuda=None, kubernetes=None
    )
    evil = inv.model_construct(
        site=inv.site.model_construct(**{**dict(inv.site), "package_sources": sources}),
        bom=inv.bom,
        nodes=[
            st01.model_construct(**{**dict(st01), "disks": disks}),
            gpu01.model_construct(**{**dict(gpu01), "taints": [taint]}),
            *(n for n in inv.nodes if n.hostname not in ("st01", "gpu01")),
        ],
    )
    found = "\n".join(_check_inventory(evil))
    assert "apt source fields" in found
    assert "device '/etc/passwd'" in found
    assert "mount on '/etc'" in found
    assert "kubectl arguments" in found
    assert "taint 'a'='x --kubeconfig=/tmp/k'" in found
    assert _check_inventory(inv) == []

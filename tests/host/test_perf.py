"""Perf part: the node performs as its plan expects (gpufleet.plan.perf), not only exists.

One probe run per node (gpufleet/verify/probe.py, on the node's own torch, bounded by the plan's
deadline) measures everything; each check judges one figure and fails with measured, minimum
and expected in one line.
"""

from __future__ import annotations

from typing import Any

import pytest
import testinfra

from gpufleet.plan.expect import HostExpect
from gpufleet.plan.perf import PerfPlan
from gpufleet.verify.perf import (
    ProbeRun,
    ib_write_bw_commands,
    judge_allreduce,
    judge_clocks,
    judge_host_device,
    judge_matmul,
    judge_memory_copy,
    judge_rdma,
    judge_topology,
    parse_ib_write_bw,
    parse_probe,
    parse_topo_links,
    probe_command,
)
from tests.host.conftest import Run, not_planned

pytestmark = pytest.mark.perf


@pytest.fixture(scope="module")
def want(expect: HostExpect) -> PerfPlan:
    if expect.perf is None:
        not_planned("GPUs")
    assert expect.perf is not None
    return expect.perf


@pytest.fixture(scope="module")
def probe(host: Any, want: PerfPlan) -> ProbeRun:
    if want.python is None:
        raise AssertionError(want.python_missing)
    result = host.run(probe_command(want))
    try:
        return parse_probe(result.stdout)
    except ValueError:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise AssertionError(f"the probe exited {result.rc}: {' | '.join(detail)}") from None


def _passes(failures: list[str]) -> None:
    assert not failures, " | ".join(failures)


def test_gpus_linked_as_planned(run: Run, want: PerfPlan) -> None:
    if want.gpus < 2 or not want.nvlink_links:
        not_planned("NVLink between GPUs")
    _passes(judge_topology(parse_topo_links(run("nvidia-smi topo -m")), want))


def test_probe_ran_within_its_deadline(probe: ProbeRun, want: PerfPlan) -> None:
    _passes(probe.errors)


def test_nccl_allreduce_bus_bandwidth(probe: ProbeRun, want: PerfPlan) -> None:
    if want.gpus < 2:
        not_planned("an all-reduce between GPUs (one GPU)")
    _passes(judge_allreduce(probe, want))


def test_gpu_memory_copy_bandwidth(probe: ProbeRun, want: PerfPlan) -> None:
    _passes(judge_memory_copy(probe, want))


def test_host_device_bandwidth(probe: ProbeRun, want: PerfPlan) -> None:
    _passes(judge_host_device(probe, want))


def test_matmul_throughput(probe: ProbeRun, want: PerfPlan) -> None:
    _passes(judge_matmul(probe, want))


def test_clocks_under_load(probe: ProbeRun, want: PerfPlan) -> None:
    _passes(judge_clocks(probe, want))


def test_rdma_write_bandwidth_to_the_peer_node(
    run: Run, want: PerfPlan, request: pytest.FixtureRequest
) -> None:
    """Inter-node: ib_write_bw from each HCA to the same-numbered HCA of the plan's peer node."""
    peer = want.rdma_peer
    if peer is None:
        not_planned("RDMA to another GPU node")
    assert peer is not None
    other = testinfra.get_host(
        f"ansible://{peer.host}", ansible_inventory=request.config.option.ansible_inventory
    )
    failures = []
    for link in peer.links:
        server, client = ib_write_bw_commands(link, peer)
        other.run(server)
        failures += judge_rdma(link, peer, parse_ib_write_bw(run(client)))
    _passes(failures)

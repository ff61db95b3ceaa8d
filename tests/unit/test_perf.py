"""Expected performance (gpufleet.plan.perf) and the perf part's verdicts (gpufleet.verify.perf),
from probe outputs recorded on the two-GPU H200 machine (tests/fixtures/h200x2)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpufleet.model.catalog import GPU_CATALOG, GPUModel, Interconnect
from gpufleet.model.site import Inventory
from gpufleet.plan.node import plan_node
from gpufleet.plan.perf import MIB, PerfPlan, plan_perf, ring_busbw_gb_s
from gpufleet.verify.perf import (
    allreduce_busbw,
    clocks_under_load,
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
from tests.conftest import site_data

H200X2 = Path(__file__).resolve().parents[1] / "fixtures" / "h200x2"


def recorded(name: str) -> str:
    return (H200X2 / name).read_text()


def _plan(doc: dict[str, Any], node: int = 0) -> PerfPlan:
    inv = Inventory.model_validate(doc)
    plan = plan_perf(inv, inv.nodes[node])
    assert plan is not None
    return plan


@pytest.fixture
def h200x2() -> PerfPlan:
    return _plan(site_data("h200x2"))


def test_h200x2_expects_what_the_machine_measured(h200x2: PerfPlan) -> None:
    # Measured there (bench/results/gate_h200x2.md): 269/330/348 GB/s, 4.27 TB/s, 55.4 GB/s, 662-670 TFLOP/s.
    assert h200x2.interconnect == "nvswitch: 18x NVLink 4 (450 GB/s each way)"
    assert [f.bytes for f in h200x2.allreduce_gb_s] == [64 * MIB, 1024 * MIB, 4096 * MIB]
    for figure, measured in zip(h200x2.allreduce_gb_s, (269.4, 330.0, 348.2), strict=True):
        assert 0.9 < measured / figure.expected < 1.1
        assert figure.minimum == pytest.approx(0.8 * figure.expected, rel=1e-3)
    assert 0.95 < 4.265 / h200x2.memory_copy_tb_s.expected < 1.05
    assert 0.95 < 55.4 / h200x2.host_device_gb_s.expected < 1.05
    assert 0.95 < 666 / h200x2.matmul_tflops.expected < 1.05
    assert h200x2.nvlink_links == 18 and h200x2.matmul_dtype == "bfloat16"


def test_expected_allreduce_follows_the_interconnect() -> None:
    nvlink4 = 18 * 25.0
    # Larger messages approach the ring's share of the links; PCIe Gen4 is an order below NVLink.
    small, large = (ring_busbw_gb_s(nvlink4, Interconnect.NVSWITCH, s) for s in (64 * MIB, 4096 * MIB))
    assert small < large < nvlink4
    assert ring_busbw_gb_s(31.5, Interconnect.PCIE, 4096 * MIB) < large / 10


def test_plan_by_topology(dc1: dict[str, Any]) -> None:
    h100 = _plan(dc1, 3)
    assert dc1["nodes"][3]["gpu"] == {"model": "H100-SXM-80GB", "count": 8}
    assert h100.interconnect.startswith("nvswitch: 18x NVLink 4")
    # Same NVLink 4 width as the H200: the same bus bandwidth; HBM3 copies slower than HBM3e.
    assert h100.allreduce_gb_s == _plan(site_data("h200x2")).allreduce_gb_s
    assert h100.memory_copy_tb_s.expected < 3.35

    l40s = copy.deepcopy(dc1)
    l40s["nodes"][3]["gpu"] = {"model": "L40S-48GB", "count": 4}
    pcie = _plan(l40s, 3)
    assert pcie.interconnect == "pcie: Gen4 x16 (31.5 GB/s each way)" and pcie.nvlink_links == 0
    assert pcie.allreduce_gb_s[-1].expected < 31.5

    pair = copy.deepcopy(dc1)
    pair["nodes"][3]["gpu"] = {"model": "A100-SXM4-80GB", "count": 2, "interconnect": "nvlink"}
    assert _plan(pair, 3).interconnect == "nvlink: 12x NVLink 3 (300 GB/s each way)"

    single = copy.deepcopy(dc1)
    single["nodes"][3]["gpu"] = {"model": "T4-16GB", "count": 1}
    one = _plan(single, 3)
    assert one.allreduce_gb_s == [] and one.matmul_dtype == "float16"


def test_site_sets_the_shares(dc1: dict[str, Any]) -> None:
    dc1["site"]["performance"] = {"threshold": 0.5, "host_device": 0.9}
    plan = _plan(dc1, 3)
    assert plan.memory_copy_tb_s.minimum == pytest.approx(0.5 * plan.memory_copy_tb_s.expected, rel=1e-3)
    assert plan.host_device_gb_s.share == 0.9
    assert {f.share for f in plan.allreduce_gb_s} == {0.5}


def test_plan_node_holds_the_perf_plan(dc1: dict[str, Any]) -> None:
    inv = Inventory.model_validate(dc1)
    assert plan_node(inv, inv.nodes[3]).perf == plan_perf(inv, inv.nodes[3])
    storage = next(n for n in inv.nodes if n.gpu is None)
    assert plan_node(inv, storage).perf is None


def test_every_catalog_gpu_has_a_host_link() -> None:
    for model in GPUModel:
        spec = GPU_CATALOG[model]
        assert spec.pcie_gen in (3, 4, 5) and spec.tensor_tflops > 0
        assert bool(spec.nvlink_links) == spec.nvlink


def test_healthy_run_passes(h200x2: PerfPlan) -> None:
    run = parse_probe(recorded("probe.json"))
    busbw = allreduce_busbw(run)
    assert [round(busbw[f.bytes]) for f in h200x2.allreduce_gb_s] == [269, 330, 348]
    for judge in (judge_allreduce, judge_memory_copy, judge_host_device, judge_matmul, judge_clocks):
        assert judge(run, h200x2) == [], judge.__name__
    load = clocks_under_load(run)
    # At the 700 W limit: SW power cap (0x4) and clocks down to 1425 MHz, which is no fault.
    assert set(load) == {0, 1} and all(c.reasons == 0x4 and c.min_sm_mhz == 1425 for c in load.values())


def test_p2p_disabled_fails_the_allreduce_in_one_line_per_size(h200x2: PerfPlan) -> None:
    run = parse_probe(recorded("probe-p2p-disabled.json"))
    failures = judge_allreduce(run, h200x2)
    assert len(failures) == 3
    assert failures[0] == (
        "NCCL all-reduce 64 MiB bus bandwidth: 28.9 GB/s, expected >= 217 "
        "(0.8 x 271 for 2 GPUs, nvswitch: 18x NVLink 4 (450 GB/s each way)); "
        "NCCL_NVLS_ENABLE=0, NCCL_P2P_DISABLE=1"
    )
    # The rest of the node is healthy and says so.
    assert judge_memory_copy(run, h200x2) == judge_matmul(run, h200x2) == []


def test_a_slow_gpu_and_a_throttled_gpu_fail_with_their_figures(h200x2: PerfPlan) -> None:
    doc = json.loads(recorded("probe.json"))
    doc["results"][1]["copy"]["seconds"] *= 2
    doc["results"][1]["host_device"]["h2d"]["seconds"] *= 4
    start, end = doc["results"][0]["matmul"]["window"]
    doc["clocks"] = [
        {"t": (start + end) / 2, "line": "0, 1425, 1980, 0x0000000000000004, 690.0, 55"},
        {"t": (start + end) / 2, "line": "1, 705, 1980, 0x0000000000000044, 700.1, 91"},
    ]
    run = parse_probe(json.dumps(doc))
    assert judge_memory_copy(run, h200x2) == ["GPU 1 memory copy: 2.13 TB/s, expected >= 3.38 (0.8 x 4.22)"]
    assert judge_host_device(run, h200x2) == [
        "GPU 1 host-to-device copy: 13.8 GB/s, expected >= 43.8 (0.8 x 54.8)"
    ]
    assert judge_clocks(run, h200x2) == [
        "GPU 1 under load: SM clock down to 705 MHz of 1980 (expected >= 990), clock-event reasons 0x44 "
        "(HW thermal slowdown) over 1 samples"
    ]


def test_a_failed_probe_fails_every_check_with_its_reason(h200x2: PerfPlan) -> None:
    run = parse_probe(
        '{"device": "cuda", "ranks": 2, "torch": "2.11.0", "nccl": "2.28.9", "env": {}, "visible": 1,'
        ' "results": [], "clocks": [], "errors": ["1 GPUs visible to CUDA, 2 to measure"]}'
    )
    assert judge_allreduce(run, h200x2) == [
        "NCCL all-reduce: not measured (1 GPUs visible to CUDA, 2 to measure)"
    ]
    assert judge_memory_copy(run, h200x2)[1] == (
        "GPU 1 memory copy: not measured (1 GPUs visible to CUDA, 2 to measure)"
    )
    with pytest.raises(ValueError, match="printed no result"):
        parse_probe("Traceback (most recent call last):\n  ImportError: torch")


def test_topology_from_the_recorded_matrix(h200x2: PerfPlan) -> None:
    links = parse_topo_links(recorded("nvidia-smi-topo.txt"))
    assert links == {(0, 1): "NV18", (1, 0): "NV18"}
    assert judge_topology(links, h200x2) == []
    assert judge_topology({(0, 1): "NV12"}, h200x2) == [
        "GPU 0 <-> GPU 1: expected NV18 (nvswitch: 18x NVLink 4 (450 GB/s each way)), found NV12"
    ]


def test_probe_command_carries_the_probe_and_its_bounds(h200x2: PerfPlan) -> None:
    command = probe_command(h200x2)
    assert (
        "--gpus 2 --dtype bfloat16 --device cuda --deadline-s 45 --sizes 67108864,1073741824,4294967296"
        in command
    )
    assert "timeout 65 python3" in command and command.endswith('rm -f "$f"; exit $rc')


def test_a_gpu_stuck_at_low_clocks_fails_without_any_slowdown_reason(h200x2: PerfPlan) -> None:
    doc = json.loads(recorded("probe.json"))
    start, end = doc["results"][0]["matmul"]["window"]
    doc["clocks"] = [
        {"t": start + 1, "line": "0, 1425, 1980, 0x0000000000000004, 690.0, 55"},
        {"t": start + 1, "line": "1, 345, 1980, 0x0000000000000002, 120.0, 40"},
        # Outside the load window: idle clocks there are no fault.
        {"t": end + 5, "line": "0, 345, 1980, 0x0000000000000001, 78.0, 34"},
    ]
    assert judge_clocks(parse_probe(json.dumps(doc)), h200x2) == [
        "GPU 1 under load: SM clock down to 345 MHz of 1980 (expected >= 990), clock-event reasons 0x2 over 1 samples"
    ]


def test_plan_node_shows_the_thresholds() -> None:
    from typer.testing import CliRunner

    from gpufleet.cli import app

    result = CliRunner().invoke(app, ["plan-node", "h200x2", "h200x2-1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for line in (
        "2 GPUs, nvswitch: 18x NVLink 4 (450 GB/s each way)",
        "all-reduce 64 MiB busbw: >= 216.5 GB/s (0.8 x 270.7)",
        "memory copy per GPU: >= 3.379 TB/s (0.8 x 4.224)",
        "host<->device per GPU: >= 43.85 GB/s (0.8 x 54.81)",
        "bfloat16 matmul per GPU: >= 538 TFLOP/s (0.8 x 672.5)",
    ):
        assert line in result.stdout
    assert "RDMA write" not in result.stdout


def test_plan_node_shows_the_rdma_thresholds(dc1: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from gpufleet.cli import app

    inv = Inventory.model_validate(dc1)
    peer = plan_perf(inv, inv.nodes[3]).rdma_peer  # type: ignore[union-attr]
    assert peer is not None
    result = CliRunner().invoke(app, ["plan-node", "dc1", inv.nodes[3].hostname], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for link in peer.links:
        want = f"RDMA write {link.device} -> {peer.host}:{link.peer_device}: >= {link.minimum:.4g} Gb/s"
        assert f"{want} ({link.share:g} x {link.expected:.4g})" in result.stdout


RDMA = Path(__file__).resolve().parents[1] / "fixtures" / "rdma"


def test_rdma_peers_form_a_ring_over_the_gpu_nodes(dc1: dict[str, Any]) -> None:
    inv = Inventory.model_validate(dc1)
    gpu_nodes = sorted(n.hostname for n in inv.nodes if n.gpu is not None)
    peers = {}
    for name in gpu_nodes:
        plan = plan_perf(inv, inv.node(name))
        assert plan is not None and plan.rdma_peer is not None
        peers[name] = plan.rdma_peer.host
    # Every GPU node measures one link set and is measured by one: a single cycle.
    assert sorted(peers.values()) == gpu_nodes and peers[gpu_nodes[-1]] == gpu_nodes[0]
    link = plan_perf(inv, inv.node(gpu_nodes[0])).rdma_peer.links[0]  # type: ignore[union-attr]
    # NDR 400 Gb/s (the default rate): 0.95 expected, 0.8 of that required.
    assert (link.expected, link.minimum, link.port) == (380.0, 304.0, 18515)


def test_no_rdma_peer_without_rdma_or_a_second_node(dc1: dict[str, Any]) -> None:
    assert _plan(site_data("h200x2")).rdma_peer is None
    inv = Inventory.model_validate(dc1)
    storage = next(n for n in inv.nodes if n.gpu is None)
    assert plan_perf(inv, storage) is None


def test_rdma_rate_and_commands(dc1: dict[str, Any]) -> None:
    for nic in dc1["nodes"][4]["nics"]["rdma"]:
        nic["rate_gbps"] = 200
    inv = Inventory.model_validate(dc1)
    peer = plan_perf(inv, inv.nodes[3]).rdma_peer  # type: ignore[union-attr]
    assert peer is not None and peer.host == dc1["nodes"][4]["hostname"]
    # The slower end of the link sets the figure.
    assert peer.links[0].expected == 190.0
    server, client = ib_write_bw_commands(peer.links[0], peer)
    assert server == (
        "nohup timeout 20 ib_write_bw -d mlx5_0 -x 0 -p 18515 -F --report_gbits -s 1048576 -q 4 -D 3 >/dev/null 2>&1 &"
    )
    assert client == (
        f"sleep 1; timeout 20 ib_write_bw -d mlx5_0 -x 0 -p 18515 -F --report_gbits -s 1048576 -q 4 -D 3 {peer.address}"
    )


def test_ib_write_bw_from_recorded_outputs(dc1: dict[str, Any]) -> None:
    assert parse_ib_write_bw((RDMA / "ib_write_bw-ndr.txt").read_text()) == 394.40
    assert parse_ib_write_bw((RDMA / "ib_write_bw-roce-100g.txt").read_text()) == 98.03
    with pytest.raises(ValueError, match="no ib_write_bw result"):
        parse_ib_write_bw(" Couldn't connect to 10.40.1.22:18515\nUnable to init the socket connection\n")
    inv = Inventory.model_validate(dc1)
    peer = plan_perf(inv, inv.nodes[3]).rdma_peer  # type: ignore[union-attr]
    assert peer is not None
    assert judge_rdma(peer.links[0], peer, 394.40) == []
    # A 400 Gb/s link that trained at 100 (HDR cable, a bad port) writes at the 100 GbE figure.
    assert judge_rdma(peer.links[0], peer, 98.03) == [
        f"RDMA write mlx5_0 -> {peer.host}:mlx5_0: 98 Gb/s, expected >= 304 (0.8 x 380)"
    ]


def test_a_hung_nvidia_smi_stops_the_clock_sampling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-smi blocks when a GPU falls off the bus; the probe must not wait on it past its
    deadline. The stand-in only sleeps: a real hung nvidia-smi may also ignore the kill."""
    from gpufleet.verify.probe import sample_clocks

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexec sleep 30\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(TimeoutError, match="nvidia-smi did not answer within 1 s"):
        sample_clocks(1.0)

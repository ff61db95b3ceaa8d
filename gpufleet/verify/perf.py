"""The perf part's pure side: the command that runs the probe on a node, its output parsed, and
each figure judged against the plan. Every failure is one line: measured, minimum, expected.

The probe itself (gpufleet/verify/probe.py) runs on the node; this module never imports torch.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.plan.perf import Figure, PerfPlan, RdmaLink, RdmaPeer

PROBE = Path(__file__).with_name("probe.py")
# The probe's own deadline stops its ranks; this outer one stops a probe that hangs before it.
OUTER_DEADLINE_S = 20


class _Loose(BaseModel):
    model_config = ConfigDict(frozen=True)


class Timed(_Loose):
    bytes: int = 0
    flop: int = 0
    iters: int
    seconds: float

    def per_second(self) -> float:
        return (self.bytes or self.flop) * self.iters / self.seconds


class AllReduce(Timed):
    pass


class Matmul(Timed):
    window: tuple[float, float]


class RankResult(_Loose):
    rank: int
    allreduce: list[AllReduce] = []
    copy_: Timed | None = Field(None, alias="copy")
    host_device: dict[str, Timed] = {}
    matmul: Matmul | None = None


class ClockSample(_Loose):
    t: float
    line: str  # index, clocks.sm, clocks.max.sm, clocks_event_reasons.active, power.draw, temperature


class ProbeRun(_Loose):
    device: str
    ranks: int
    torch: str | None  # None: the interpreter has no torch
    nccl: str | None
    env: dict[str, str]
    visible: int | None
    results: list[RankResult]
    clocks: list[ClockSample]
    errors: list[str]

    def rank(self, rank: int) -> RankResult | None:
        return next((r for r in self.results if r.rank == rank), None)


def probe_command(plan: PerfPlan, device: str = "cuda") -> str:
    """Ship the probe as base64 (nothing in it is shell-interpreted), run it bounded, remove it."""
    if plan.python is None:
        raise ValueError(plan.python_missing)
    payload = base64.b64encode(PROBE.read_bytes()).decode()
    sizes = ",".join(str(f.bytes) for f in plan.allreduce_gb_s)
    run = (
        f'{shlex.quote(plan.python)} "$f" --gpus {plan.gpus} --dtype {plan.matmul_dtype} --device {device} '
        f"--deadline-s {plan.deadline_s}" + (f" --sizes {sizes}" if sizes else "")
    )
    return (
        f'f=$(mktemp) && echo {payload} | base64 -d > "$f" && '
        f'timeout {plan.deadline_s + OUTER_DEADLINE_S} {run}; rc=$?; rm -f "$f"; exit $rc'
    )


def parse_probe(stdout: str) -> ProbeRun:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError(f"the probe printed no result: {stdout.strip()[-300:]!r}")
    return ProbeRun.model_validate(json.loads(lines[-1]))


def _below(what: str, measured: float, want: Figure, unit: str, why: str = "") -> str:
    suffix = f" for {why}" if why else ""
    return (
        f"{what}: {measured:.3g} {unit}, expected >= {want.minimum:.3g} "
        f"({want.share:g} x {want.expected:.3g}{suffix})"
    )


def _missing(run: ProbeRun, what: str) -> str:
    why = "; ".join(run.errors) or "the probe reported nothing"
    return f"{what}: not measured ({why})"


def allreduce_busbw(run: ProbeRun) -> dict[int, float]:
    """Bus bandwidth (GB/s) per message size: algbw x 2(n-1)/n, from the slowest rank."""
    n = run.ranks
    out: dict[int, float] = {}
    for result in run.results:
        for a in result.allreduce:
            busbw = a.per_second() * 2 * (n - 1) / n / 1e9
            out[a.bytes] = min(out.get(a.bytes, busbw), busbw)
    return out


def judge_allreduce(run: ProbeRun, plan: PerfPlan) -> list[str]:
    measured = allreduce_busbw(run)
    if len(run.results) < plan.gpus:
        return [_missing(run, "NCCL all-reduce")]
    env = ", ".join(f"{k}={v}" for k, v in sorted(run.env.items()) if k != "NCCL_VERSION")
    out = []
    for want in plan.allreduce_gb_s:
        got = measured.get(want.bytes)
        what = f"NCCL all-reduce {want.bytes >> 20} MiB bus bandwidth"
        if got is None:
            out.append(_missing(run, what))
        elif got < want.minimum:
            line = _below(what, got, want, "GB/s", f"{plan.gpus} GPUs, {plan.interconnect}")
            out.append(f"{line}; {env}" if env else line)
    return out


def _per_gpu(
    run: ProbeRun, plan: PerfPlan, what: str, unit: str, want: Figure, value: dict[int, float | None]
) -> list[str]:
    out = []
    for gpu in range(plan.gpus):
        got = value.get(gpu)
        if got is None:
            out.append(_missing(run, f"GPU {gpu} {what}"))
        elif got < want.minimum:
            out.append(_below(f"GPU {gpu} {what}", got, want, unit))
    return out


def judge_memory_copy(run: ProbeRun, plan: PerfPlan) -> list[str]:
    value = {r.rank: r.copy_.per_second() / 1e12 if r.copy_ else None for r in run.results}
    return _per_gpu(run, plan, "memory copy", "TB/s", plan.memory_copy_tb_s, value)


def judge_host_device(run: ProbeRun, plan: PerfPlan) -> list[str]:
    out = []
    for direction, name in (("h2d", "host-to-device"), ("d2h", "device-to-host")):
        value = {
            r.rank: r.host_device[direction].per_second() / 1e9 if direction in r.host_device else None
            for r in run.results
        }
        out += _per_gpu(run, plan, f"{name} copy", "GB/s", plan.host_device_gb_s, value)
    return out


def judge_matmul(run: ProbeRun, plan: PerfPlan) -> list[str]:
    value = {r.rank: r.matmul.per_second() / 1e12 if r.matmul else None for r in run.results}
    return _per_gpu(run, plan, f"{plan.matmul_dtype} matmul", "TFLOP/s", plan.matmul_tflops, value)


class LoadClocks(_Loose):
    samples: int
    min_sm_mhz: int
    max_sm_mhz: int
    reasons: int  # every clock-event reason seen under load, or-ed


def clocks_under_load(run: ProbeRun) -> dict[int, LoadClocks]:
    """Per GPU, the clock samples taken while every rank ran its matmul."""
    windows = [r.matmul.window for r in run.results if r.matmul]
    if not windows:
        return {}
    start, end = max(w[0] for w in windows), min(w[1] for w in windows)
    seen: dict[int, list[tuple[int, int, int]]] = {}
    for sample in run.clocks:
        if not start <= sample.t <= end:
            continue
        cells = [c.strip() for c in sample.line.split(",")]
        if len(cells) < 4 or not re.fullmatch(r"0x[0-9a-fA-F]+", cells[3]):
            continue
        seen.setdefault(int(cells[0]), []).append((int(cells[1]), int(cells[2]), int(cells[3], 16)))
    out = {}
    for gpu, rows in seen.items():
        reasons = 0
        for _, _, bits in rows:
            reasons |= bits
        out[gpu] = LoadClocks(
            samples=len(rows),
            min_sm_mhz=min(r[0] for r in rows),
            max_sm_mhz=max(r[1] for r in rows),
            reasons=reasons,
        )
    return out


def judge_clocks(run: ProbeRun, plan: PerfPlan) -> list[str]:
    load = clocks_under_load(run)
    out = []
    for gpu in range(plan.gpus):
        clocks = load.get(gpu)
        if clocks is None:
            out.append(_missing(run, f"GPU {gpu} clocks under load"))
            continue
        events = [name for bit, name in sorted(plan.failing_clock_events.items()) if clocks.reasons & bit]
        floor = plan.min_load_clock_share * clocks.max_sm_mhz
        if events or clocks.min_sm_mhz < floor:
            out.append(
                f"GPU {gpu} under load: SM clock down to {clocks.min_sm_mhz} MHz of {clocks.max_sm_mhz} "
                f"(expected >= {floor:.0f}), clock-event reasons {clocks.reasons:#x}"
                + (f" ({', '.join(events)})" if events else "")
                + f" over {clocks.samples} samples"
            )
    return out


NV_LINK = re.compile(r"^NV(\d+)$")


def parse_topo_links(text: str) -> dict[tuple[int, int], str]:
    """`nvidia-smi topo -m`: the connection between each ordered pair of GPUs (NV18, SYS, PIX, ...)."""
    out: dict[tuple[int, int], str] = {}
    header: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw)
        cells = [c.strip() for c in line.split("\t")]
        if not header and "GPU0" in cells:
            header = cells
            continue
        if header and cells and re.fullmatch(r"GPU\d+", cells[0]):
            row = int(cells[0][3:])
            for col, cell in zip(header, cells, strict=False):
                if re.fullmatch(r"GPU\d+", col) and int(col[3:]) != row:
                    out[(row, int(col[3:]))] = cell
    return out


def judge_topology(links: dict[tuple[int, int], str], plan: PerfPlan) -> list[str]:
    want = f"NV{plan.nvlink_links}"
    out = []
    for a in range(plan.gpus):
        for b in range(a + 1, plan.gpus):
            found = links.get((a, b), "nothing")
            if found != want:
                out.append(f"GPU {a} <-> GPU {b}: expected {want} ({plan.interconnect}), found {found}")
    return out


# Large writes on several queue pairs for a few seconds: the link's rate, not one QP's.
IB_WRITE_BW = "ib_write_bw -d {device} -x {gid} -p {port} -F --report_gbits -s 1048576 -q 4 -D 3"
IB_WRITE_BW_DEADLINE_S = 20


def ib_write_bw_commands(link: RdmaLink, peer: RdmaPeer) -> tuple[str, str]:
    """(server, run on the peer in the background; client, run on the node under test)."""
    server = IB_WRITE_BW.format(device=link.peer_device, gid=link.peer_gid_index, port=link.port)
    client = IB_WRITE_BW.format(device=link.device, gid=link.gid_index, port=link.port)
    return (
        f"nohup timeout {IB_WRITE_BW_DEADLINE_S} {server} >/dev/null 2>&1 &",
        f"sleep 1; timeout {IB_WRITE_BW_DEADLINE_S} {client} {shlex.quote(peer.address)}",
    )


def parse_ib_write_bw(text: str) -> float:
    """BW average (Gb/s) of the last result row under perftest's `#bytes ... BW average[Gb/sec]` header."""
    header: list[str] | None = None
    average: float | None = None
    for line in text.splitlines():
        if "BW average[Gb/sec]" in line:
            header = re.split(r"\s{2,}", line.strip().lstrip("#").strip())
            header = ["bytes", *header[1:]]
            continue
        cells = line.split()
        if header and cells and cells[0].isdigit() and len(cells) >= len(header):
            average = float(cells[header.index("BW average[Gb/sec]")])
    if average is None:
        raise ValueError(f"no ib_write_bw result (with --report_gbits) in {text.strip()[-300:]!r}")
    return average


def judge_rdma(link: RdmaLink, peer: RdmaPeer, gb_s: float) -> list[str]:
    if gb_s >= link.minimum:
        return []
    what = f"RDMA write {link.device} -> {peer.host}:{link.peer_device}"
    return [_below(what, gb_s, link, "Gb/s")]

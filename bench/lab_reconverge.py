"""No-op re-converge of the lab hosts: the pyinfra node deploy against the same tasks as an Ansible play.

Both run in the same session against the same converged lab hosts (`gpufleet lab up` and one
provision first, if the lab is not up), each RUNS times, alternating; the figure is the median
wall time of a whole run over all hosts, per host, and the ratio Ansible / pyinfra.
Targets (issue 3): <= 2 s per host for pyinfra and >= 3x faster than Ansible.
Needs root (the lab). Writes bench/results/lab_reconverge.md.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.report import met, write  # noqa: E402
from deploys.node import managed_files  # noqa: E402
from gpufleet.inventory.load import load_inventory  # noqa: E402
from gpufleet.lab import hosts  # noqa: E402
from gpufleet.lab.hosts import exclusive  # noqa: E402
from gpufleet.lab.paths import LabPaths  # noqa: E402
from gpufleet.plan.node import plan_node  # noqa: E402
from gpufleet.progress import Lines  # noqa: E402
from gpufleet.provision.cluster import run_playbook  # noqa: E402
from gpufleet.provision.nodes import provision  # noqa: E402

RUNS = 5


def quiet(host: str, what: str) -> None:
    if what.startswith("failed"):
        print(f"  {host}: {what}", flush=True)


def main() -> None:
    inv = load_inventory("lab")
    paths = LabPaths.default()
    if not all(s.systemd == "running" for s in hosts.status(inv, paths)):
        with Lines(Console()) as lines:
            hosts.down(inv, paths, lines)
            hosts.up(inv, paths, lines)
    first = provision(inv, None, False, quiet)
    assert all(r.ok for r in first), [r.error for r in first if not r.ok]
    bench_nodes = {}
    for node in inv.nodes:
        plan = plan_node(inv, node)
        bench_nodes[node.hostname] = {
            "files": managed_files(plan),
            "packages": [f"{p.name}={p.version}" if p.version else p.name for p in plan.packages],
            "holds": plan.held_packages,
            "sysctl": plan.sysctl,
            "services": plan.services,
        }
    play = str(HERE / "lab_node_play.yml")
    warm = run_playbook(inv, play, quiet, extra={"bench_nodes": bench_nodes})
    assert warm.ok, warm.failures
    times: dict[str, list[float]] = {"pyinfra": [], "ansible": []}
    changes: dict[str, int] = {"pyinfra": 0, "ansible": 0}
    for i in range(RUNS):
        t0 = time.perf_counter()
        results = provision(inv, None, False, quiet)
        times["pyinfra"].append(time.perf_counter() - t0)
        assert all(r.ok for r in results)
        changes["pyinfra"] += sum(len(r.changed) for r in results)
        t0 = time.perf_counter()
        play_result = run_playbook(inv, play, quiet, extra={"bench_nodes": bench_nodes})
        times["ansible"].append(time.perf_counter() - t0)
        assert play_result.ok, play_result.failures
        changes["ansible"] += sum(h.get("changed", 0) for h in play_result.hosts.values())
        print(
            f"run {i + 1}: pyinfra {times['pyinfra'][-1]:.2f}s, ansible {times['ansible'][-1]:.2f}s",
            flush=True,
        )
    n = len(inv.nodes)
    med = {tool: statistics.median(t) for tool, t in times.items()}
    ops = sum(r.ops for r in results)
    lines = [
        "# No-op re-converge of the lab hosts: pyinfra node deploy vs the same tasks as an Ansible play",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/lab_reconverge.py'])}` on {platform.node()} "
        f"({platform.machine()}, {len(inv.nodes)} lab hosts, {RUNS} runs each, alternating, same session). "
        f"Both converged first; pyinfra ran {ops} operations per run over all hosts. "
        "Ansible reuses SSH connections (ControlPersist) and pipelining; pyinfra keeps one connection per host.",
        "",
        "| tool | runs (s, whole lab) | median (s) | per host (s) | changes reported | vs pyinfra |",
        "|---|---|---|---|---|---|",
    ]
    for tool in ("pyinfra", "ansible"):
        runs = ", ".join(f"{t:.2f}" for t in times[tool])
        lines.append(
            f"| {tool} | {runs} | {med[tool]:.2f} | {med[tool] / n:.2f} | {changes[tool]} | "
            f"{med[tool] / med['pyinfra']:.1f}x |"
        )
    ratio = med["ansible"] / med["pyinfra"]
    lines += [
        "",
        f"Targets: <= 2 s per host for pyinfra: {met(med['pyinfra'] / n <= 2)} "
        f"({med['pyinfra'] / n:.2f} s); >= 3x faster than Ansible: {met(ratio >= 3)} "
        f"({ratio:.1f}x). Per host = a whole run's wall time / {n} hosts (the hosts converge in parallel).",
        "",
    ]
    write("lab_reconverge.md", lines)


if __name__ == "__main__":
    # The machine has one lab: wait for a test run using it (tests/integration/test_lab_site.py).
    with exclusive(Path("/run/gpufleet-test-lab-session.lock"), "test session", timeout_s=1800):
        main()

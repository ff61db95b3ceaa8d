"""Bad input: exit 2, one line naming the file and the key path, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from tests.conftest import REPO, SITES, site_data

Doc = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        *parents, last = _parse(path)
        target: Any = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return apply


def _parse(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in path.replace("]", "").split("."):
        name, *indexes = chunk.split("[")
        parts.append(name)
        parts += [int(i) for i in indexes]
    return parts


def _rename(path: str, new: str) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        *parents, last = _parse(path)
        target: Any = doc
        for key in parents:
            target = target[key]
        target[new] = target.pop(last)

    return apply


def _drop(path: str) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        *parents, last = _parse(path)
        target: Any = doc
        for key in parents:
            target = target[key]
        del target[last]

    return apply


# nodes[3] is gpu01, nodes[11] is st01 in dc1.
CASES: list[tuple[str, Callable[[Doc], None], str, str]] = [
    ("duplicate IP", _set("nodes[3].management_ip", "10.40.0.11"), "nodes[3].management_ip", "already used"),
    ("IP outside its CIDR", _set("nodes[3].management_ip", "10.99.0.5"), "nodes[3].management_ip", "outside"),
    ("unknown GPU model", _set("nodes[3].gpu.model", "H300-SXM"), "nodes[3].gpu.model", "H300-SXM"),
    (
        "RAID6 with 3 disks",
        _set("nodes[11].disks.raid6.members", ["/dev/sda", "/dev/sdb", "/dev/sdc"]),
        "nodes[11].disks.raid6.members",
        "at least 4",
    ),
    (
        "CUDA 13 with driver 535",
        _set("bom.nvidia_driver", {"branch": 535, "version": "535.183.01"}),
        "bom.nvidia_driver.version",
        "CUDA 13.0 needs driver >= 580",
    ),
    (
        "unknown key",
        _rename("nodes[3].nics.rdma[0].gid_index", "gid_idx"),
        "nodes[3].nics.rdma[0].gid_idx",
        "unknown key",
    ),
    (
        "wrong type",
        _set("nodes[3].nics.rdma[0].gid_index", "three"),
        "nodes[3].nics.rdma[0].gid_index",
        "valid integer",
    ),
    ("missing key", _drop("site.kubernetes"), "site.kubernetes", "required"),
    (
        "disk in RAID and Ceph",
        _set("nodes[11].disks.ceph_osd", ["/dev/sda"]),
        "nodes[11].disks.ceph_osd[0]",
        "in both raid6.members and ceph_osd",
    ),
    ("even control plane", _set("nodes[2].roles", ["worker"]), "nodes", "odd number of control-plane"),
    ("GPUs without the gpu role", _set("nodes[3].roles", ["worker"]), "nodes[3].roles", "not the gpu role"),
    ("Ceph size above hosts", _set("site.ceph.pools[0].size", 5), "site.ceph.pools[0].size", "found 4"),
    ("min_size above size", _set("site.ceph.pools[0].min_size", 4), "site.ceph.pools[0]", "larger than size"),
    ("NCCL for another CUDA", _set("bom.nccl.cuda", "12.8"), "bom.nccl.cuda", "built for CUDA 12.8"),
    (
        "driver branch below the GPU",
        _set(
            "bom",
            {
                **site_data("dc1")["bom"],
                "cuda": "11.8",
                "nccl": {"version": "2.16.5", "cuda": "11.8"},
                "nvidia_driver": {"branch": 470, "version": "470.256.02"},
                "perf_torch": {"version": "2.1.2", "cuda": "11.8"},
            },
        ),
        "bom.nvidia_driver.branch",
        "needs driver branch >= 525",
    ),
    (
        "driver not on its branch",
        _set("bom.nvidia_driver.version", "570.1.2"),
        "bom.nvidia_driver",
        "not on branch",
    ),
    ("replicas beyond the GPUs", _set("site.serving.replicas", 5), "site.serving.replicas", "room for 4"),
    ("mixed GID indexes", _set("nodes[3].nics.rdma[1].gid_index", 3), "nodes[3].nics.rdma", "same gid_index"),
    ("bad IB MTU", _set("nodes[3].nics.rdma[0].mtu", 9000), "nodes[3].nics.rdma[0].mtu", "must be one of"),
    (
        "unknown instance type",
        _set("site.burst.instance_types", ["p9.huge"]),
        "site.burst.instance_types[0]",
        "unknown GPU instance type",
    ),
    (
        "perf threshold 0",
        _set("site.performance", {"threshold": 0}),
        "site.performance.threshold",
        "greater than 0",
    ),
    (
        "perf threshold above 1",
        _set("site.performance", {"allreduce": 1.2}),
        "site.performance.allreduce",
        "less than or equal to 1",
    ),
    (
        "probe interpreter with a shell word",
        _set("site.performance", {"python": "python3; rm -rf /"}),
        "site.performance.python",
        "should match pattern",
    ),
    (
        "Python index over http",
        _set("site.package_sources.python_index", "http://pypi.dc1.example.internal/simple/"),
        "site.package_sources.python_index",
        "not a Python index URL",
    ),
    (
        "probe torch for another CUDA",
        _set("bom.perf_torch.cuda", "12.8"),
        "bom.perf_torch.cuda",
        "torch is built for CUDA 12.8 but the BOM's CUDA is 13.0",
    ),
    (
        "probe torch not a release",
        _set("bom.perf_torch.version", "2.9.1+cu130"),
        "bom.perf_torch.version",
        "should match pattern",
    ),
    (
        "production site without a Python index",
        _drop("site.package_sources"),
        "site.package_sources.python_index",
        "production site's GPU nodes need the perf probe's torch",
    ),
    (
        "production site without the probe's torch",
        _drop("bom.perf_torch"),
        "bom.perf_torch",
        "production site's GPU nodes need the perf probe's torch pinned",
    ),
    (
        "8 GPUs on direct NVLink",
        _set("nodes[3].gpu.interconnect", "nvlink"),
        "nodes[3].gpu.interconnect",
        "unknown topology nvlink: direct NVLink joins a pair of GPUs",
    ),
    (
        "unknown interconnect",
        _set("nodes[3].gpu.interconnect", "fabric"),
        "nodes[3].gpu.interconnect",
        "nvswitch",
    ),
]


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("name", "mutate", "key", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_inventory(
    name: str,
    mutate: Callable[[Doc], None],
    key: str,
    words: str,
    dc1: Doc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mutate(dc1)
    site = tmp_path / "inventories" / "broken"
    site.mkdir(parents=True)
    (site / "nodes.yaml").write_text(yaml.safe_dump(dc1, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    code, stdout, stderr = _run(["validate", "broken"])
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"inventories/broken/nodes.yaml: {key}: "), lines[0]
    assert words in lines[0]
    assert "Traceback" not in stderr + stdout
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "file not found"),
        ("", "file is empty"),
        ("# only a comment\n", "file is empty"),
        ("site: [unclosed\n", "YAML syntax error: line 2"),
        ("site:\n  name: x\n\tbad: tab\n", "YAML syntax error"),
        ("- just\n- a list\n", "valid dictionary"),
    ],
    ids=["missing file", "empty file", "comment only", "unclosed flow", "tab indent", "not a mapping"],
)
def test_bad_file(content: str | None, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "inventories" / "broken"
    site.mkdir(parents=True)
    if content is not None:
        (site / "nodes.yaml").write_text(content)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = _run(["validate", "broken"])
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith("inventories/broken/nodes.yaml: ")
    assert words in line


@pytest.mark.parametrize("command", [["validate"], ["provision", "--dry-run"], ["verify"], ["plan-site"]])
def test_misspelled_site_lists_the_sites(command: list[str]) -> None:
    code, stdout, stderr = _run([command[0], "lba", *command[1:]])
    assert code == 2 and not stdout
    assert stderr.strip() == f"argument SITE: no site 'lba' in inventories; sites: {', '.join(SITES)}"


def test_index_credentials_are_refused_and_never_echoed(
    dc1: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set("site.package_sources.python_index", "https://ci:s3cret-token@pypi.dc1.example.internal/simple/")(
        dc1
    )
    site = tmp_path / "inventories" / "broken"
    site.mkdir(parents=True)
    (site / "nodes.yaml").write_text(yaml.safe_dump(dc1, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = _run(["validate", "broken"])
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith("inventories/broken/nodes.yaml: site.package_sources.python_index: ")
    assert "s3cret-token" not in stdout + stderr and "//***@pypi.dc1" in line


@pytest.mark.parametrize(
    "command", [["plan-node"], ["drain"], ["admit"], ["remediate", "admit"]], ids=" ".join
)
def test_misspelled_host_lists_the_nodes(command: list[str]) -> None:
    """Every command that takes a HOST says the same line, listing the site's nodes, before it
    reads a kubeconfig or reaches a host."""
    code, stdout, stderr = _run([*command, "lab", "lab-w1"])
    assert code == 2 and not stdout
    nodes = "lab-cp1, lab-st1, lab-st2, lab-st3"
    assert stderr.strip() == f"argument HOST (lab): no node 'lab-w1'; nodes: {nodes}"


def test_bad_cli_argument_exits_2() -> None:
    code, _, stderr = _run(["inventory", "lab", "--format", "chef"])
    assert code == 2
    assert "chef" in stderr


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    """The installed console script, not only the in-process runner."""
    bad = tmp_path / "nodes.yaml"
    bad.write_text("site: {name: x}\nbom: {}\nnodes: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "validate", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(": site.environment: required key is missing" in line for line in lines)
    assert any(": nodes: List should have at least 1 item" in line for line in lines)
    assert all(line.startswith(str(bad)) for line in lines)


def test_long_lines_are_not_wrapped(dc1: Doc, tmp_path: Path) -> None:
    """A narrow terminal must not fold an error line: scripts grep these."""
    _set("nodes[3].nics.rdma[0].gid_index", "three")(dc1)
    bad = tmp_path / "nodes.yaml"
    bad.write_text(yaml.safe_dump(dc1))
    proc = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "validate", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "40"},
        timeout=60,
    )
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{bad}: nodes[3].nics.rdma[0].gid_index: ")

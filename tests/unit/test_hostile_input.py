"""Hostile inventories and stack files: every injection path and unchecked meaning the security
review found (issue 14) is refused with one line `file: key.path: message`, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.inventory.load import MAX_FILE_BYTES
from gpufleet.model.errors import MAX_LINES
from tests.conftest import REPO

Doc = dict[str, Any]
JINJA = "{{ lookup('pipe', 'id > /tmp/gpufleet-pwned') }}"


def _set(doc: Doc, path: str, value: Any) -> None:
    parts: list[str | int] = []
    for chunk in path.replace("]", "").split("."):
        name, *indexes = chunk.split("[")
        parts += [name, *(int(i) for i in indexes)]
    target: Any = doc
    for key in parts[:-1]:
        target = target[key]
    target[parts[-1]] = value


def _validate(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: str = "validate"
) -> list[str]:
    site = tmp_path / "inventories" / "evil"
    site.mkdir(parents=True, exist_ok=True)
    (site / "nodes.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, [verb, "evil"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("inventories/evil/nodes.yaml: ") for line in lines), lines
    return lines


# (what, key path set, value, key path the error names, words in the error)
INJECTIONS: list[tuple[str, str, Any, str, str]] = [
    ("Jinja in a taint value", "nodes[3].taints", [{"key": "a", "value": JINJA, "effect": "NoSchedule"}],
     "nodes[3].taints[0].value", "not a Kubernetes label or taint value"),
    ("YAML in a taint value", "nodes[3].taints",
     [{"key": "a", "value": 'x"\n  ignorePreflightErrors: [all]\n#', "effect": "NoSchedule"}],
     "nodes[3].taints[0].value", "not a Kubernetes label or taint value"),
    ("kubectl argument in a taint value", "nodes[3].taints",
     [{"key": "a", "value": "x --kubeconfig=/tmp/k", "effect": "NoSchedule"}], "nodes[3].taints[0].value", "taint value"),
    ("a taint value of 64 characters", "nodes[3].taints", [{"key": "a", "value": "v" * 64, "effect": "NoSchedule"}],
     "nodes[3].taints[0].value", "at most 63"),
    ("Jinja in a label value", "nodes[3].labels", {"team": JINJA}, "nodes[3].labels.team", "not a Kubernetes label or taint value"),
    ("a label key with a space", "nodes[3].labels", {"a b": "c"}, "nodes[3].labels['a b']", "not a Kubernetes key"),
    ("a label key prefix over 253", "nodes[3].labels", {("a" * 60 + ".") * 5 + "x/y": "c"}, "nodes[3].labels",
     "253"),
    ("apt options in the mirror suite", "site.package_sources",
     {"mirror": "https://mirror.example/debian", "mirror_suite": "noble\nTrusted: yes\nAllow-Insecure: yes"},
     "site.package_sources.mirror_suite", "not a Debian suite name"),
    ("Jinja in the mirror URL", "site.package_sources", {"mirror": "https://m/{{lookup('pipe','id')}}"},
     "site.package_sources.mirror", "not a package source URL"),
    ("a path climbing out of /dev", "nodes[11].disks.ceph_osd", ["/dev/../../etc/shadow"],
     "nodes[11].disks.ceph_osd[0]", "normalised"),
    ("a Ceph disk outside /dev", "nodes[11].disks.ceph_osd", ["/var/lib/gpufleet/osd0.img"],
     "nodes[11].disks.ceph_osd[0]", "block device under /dev"),
    ("/etc/passwd as a RAID6 member", "nodes[11].disks.raid6.members",
     ["/etc/passwd", "/dev/sdb", "/dev/sdc", "/dev/sdd"], "nodes[11].disks.raid6.members[0]", "under /dev"),
    ("/dev/mem as a RAID6 member", "nodes[11].disks.raid6.members",
     ["/dev/mem", "/dev/sdb", "/dev/sdc", "/dev/sdd"], "nodes[11].disks.raid6.members[0]", "not a disk"),
    ("a mountpoint of /etc", "nodes[11].disks.raid6.mountpoint", "/etc", "nodes[11].disks.raid6.mountpoint",
     "system directory"),
    ("a mountpoint inside /usr", "nodes[11].disks.raid6.mountpoint", "/usr/local", "nodes[11].disks.raid6.mountpoint",
     "system directory"),
    ("a mountpoint of /", "nodes[11].disks.raid6.mountpoint", "/", "nodes[11].disks.raid6.mountpoint", "absolute path"),
    ("a mountpoint of /srv", "nodes[11].disks.raid6.mountpoint", "/srv", "nodes[11].disks.raid6.mountpoint", "holds"),
    ("a shell command in an NTP server", "site.networks.ntp", ["ntp1;reboot"], "site.networks.ntp[0]", "not a DNS name"),
    ("an endpoint port above 65535", "site.kubernetes.control_plane_endpoint", "api.dc1:99999",
     "site.kubernetes.control_plane_endpoint", "1..65535"),
    ("a newline in a rack", "nodes[3].rack", "r1\nx", "nodes[3].rack", "not a host name"),
    ("a 1 MB value", "nodes[3].hostname", "a" * 1_000_000, "nodes[3].hostname", "at most 63"),
    # Rich markup, Jinja and a shell in the Python index: `[/x]` crashed `plan-node`'s table.
    ("markup and Jinja in the Python index", "site.package_sources.python_index",
     "https://pypi.example/[/x]{{7*7}}$(id)`id`'", "site.package_sources.python_index", "not a Python index URL"),
    ("credentials in the Python index", "site.package_sources.python_index", "https://u:p@pypi.example/simple/",
     "site.package_sources.python_index", "not a Python index URL"),
    # vLLM reads kv_cache_dtype from a fixed set: anything else crash-loops every replica.
    ("a shell and a newline in kv_cache_dtype", "site.serving.engine_args", {"kv_cache_dtype": 'fp8"\n$(id)[/x]'},
     "site.serving.engine_args.kv_cache_dtype", "one of"),
]  # fmt: skip

# The meaning gaps: types fit, the site does not make sense.
MEANING: list[tuple[str, str, Any, str, str]] = [
    ("gateway outside its network", "site.networks.management.gateway", "10.99.0.1",
     "site.networks.management.gateway", "outside the network"),
    ("gateway on the broadcast address", "site.networks.management.gateway", "10.40.3.255",
     "site.networks.management.gateway", "broadcast"),
    ("pod and service CIDRs overlap", "site.kubernetes.pod_cidr", "10.96.0.0/16",
     "site.kubernetes.service_cidr", "overlaps site.kubernetes.pod_cidr"),
    ("pod CIDR over the management network", "site.kubernetes.pod_cidr", "10.40.0.0/16",
     "site.networks.management.cidr", "overlaps site.kubernetes.pod_cidr"),
    ("node on the gateway", "nodes[3].management_ip", "10.40.0.1", "nodes[3].management_ip", "gateway"),
    ("node on the broadcast address", "nodes[3].management_ip", "10.40.3.255", "nodes[3].management_ip", "broadcast"),
    ("node on a DNS server", "nodes[3].management_ip", "10.40.0.2", "nodes[3].management_ip", "DNS server"),
    ("pool size 1", "site.ceph.pools[0]", {"name": "models", "size": 1, "min_size": 1},
     "site.ceph.pools[0].size", "greater than or equal to 2"),
    ("duplicate pool names", "site.ceph.pools[1].name", "models", "site.ceph.pools[1].name", "already pools[0]"),
    ("CUDA 13.99", "bom.cuda", "13.99", "bom.cuda", "not a released version"),
    ("an infinite dollar cap", "site.burst.max_hourly_usd", float("inf"), "site.burst.max_hourly_usd", "finite"),
    ("NaN seconds", "site.serving.slo.ttft_p99_s", float("nan"), "site.serving.slo.ttft_p99_s", "finite"),
    ("an address written as a number", "nodes[3].management_ip", 167772161, "nodes[3].management_ip", "as text"),
    ("a network written as true", "site.networks.bmc.cidr", True, "site.networks.bmc.cidr", "as text"),
    ("burst without serving", "site.serving", None, "site.burst", "needs site.serving"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "path", "value", "key", "words"), INJECTIONS + MEANING,
                         ids=[c[0] for c in INJECTIONS + MEANING])  # fmt: skip
def test_refused_with_its_key(
    what: str,
    path: str,
    value: Any,
    key: str,
    words: str,
    dc1: Doc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if value is None:
        del dc1["site"]["serving"]
    else:
        _set(dc1, path, value)
    lines = _validate(yaml.safe_dump(dc1, sort_keys=False), tmp_path, monkeypatch)
    line = next((x for x in lines if x.startswith(f"inventories/evil/nodes.yaml: {key}")), lines[0])
    assert line.startswith(f"inventories/evil/nodes.yaml: {key}"), lines
    assert words in line, line
    assert len(line) < 600, "a long value is cut, not echoed"


def test_lab_osd_files_stay_in_their_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's OSD files live in the host's overlay: a path that climbs out of it is refused."""
    lab = yaml.safe_load((REPO / "inventories/lab/nodes.yaml").read_text())
    lab["nodes"][1]["disks"]["ceph_osd"] = ["/var/lib/gpufleet/../../../../etc/passwd"]
    (line,) = _validate(yaml.safe_dump(lab), tmp_path, monkeypatch)
    assert "nodes[1].disks.ceph_osd[0]" in line and "normalised" in line


def test_validate_and_plan_agree(dc1: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What plan-site refuses, validate refuses first (here: burst types no model fits six of)."""
    dc1["site"]["burst"]["instance_types"] = ["g6e.xlarge", "g6e.2xlarge"]
    text = yaml.safe_dump(dc1)
    for verb in ("validate", "plan-site"):
        (line,) = _validate(text, tmp_path, monkeypatch, verb)
        assert "site.burst.instance_types" in line


# --- the YAML loader ----------------------------------------------------------------------

DC1_TEXT = (REPO / "inventories/dc1/nodes.yaml").read_text()
BOMB = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            DC1_TEXT.replace("  name: dc1\n", "  name: dc1\n  name: dc2\n", 1),
            "duplicate key 'name'",
        ),
        (DC1_TEXT.replace("gid_index: 3", "gid_index: 010", 1), "ambiguous number '010'"),
        (DC1_TEXT.replace("gid_index: 3", "gid_index: 1:20", 1), "ambiguous number '1:20'"),
        (DC1_TEXT.replace("gid_index: 3", "gid_index: 0x10", 1), "ambiguous number '0x10'"),
        (BOMB, "aliases expand to more than 100,000"),
        ("a: &a [*a]\n", "recursive alias"),
        ("x: " + "[" * 990 + "]" * 990 + "\n", "nesting deeper than 64"),
    ],
    ids=["duplicate key", "octal", "sexagesimal", "hex", "billion laughs", "recursive", "deep"],
)
def test_loader_refuses(text: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = _validate(text, tmp_path, monkeypatch)
    assert words in line, line


def test_too_large_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = _validate("# pad\n" * (MAX_FILE_BYTES // 6 + 1), tmp_path, monkeypatch)
    assert line == "inventories/evil/nodes.yaml: larger than 10 MB"


def test_a_device_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nodes.yaml committed as a link to /dev/zero: refused, not read until memory runs out."""
    site = tmp_path / "inventories" / "evil"
    site.mkdir(parents=True)
    (site / "nodes.yaml").symlink_to("/dev/zero")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate", "evil"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "inventories/evil/nodes.yaml: not a regular file"


def test_bomb_fails_fast_and_small(tmp_path: Path) -> None:
    """A billion-laughs file fails in < 2 s and < 200 MB, in a real process (RSS of the whole CLI)."""
    bomb = tmp_path / "nodes.yaml"
    bomb.write_text(BOMB.replace("i: &i", "site: &i"))
    code = (
        "import sys, time\n"
        "from gpufleet.cli import app\n"
        "t = time.perf_counter()\n"
        "try:\n    app(['validate', sys.argv[1]])\nexcept SystemExit as e:\n    code = e.code\n"
        # VmHWM is this process image's own peak (ru_maxrss carries a forking parent's across exec).
        "hwm = next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM:'))\n"
        "print(code, time.perf_counter() - t, hwm // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=60)
    exit_code, seconds, peak_mib = proc.stdout.split()
    assert exit_code == "2", proc.stderr
    assert float(seconds) < 2 and int(peak_mib) < 200, (seconds, peak_mib)
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


# --- stack files -----------------------------------------------------------------------------

GOOD_STACK = (REPO / "stacks" / "Pulumi.burst-prod.yaml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("gpufleet:owner: platform", 'gpufleet:owner: "plat\\0form"', "config.gpufleet:owner", "control characters"),
        ("gpufleet:owner: platform", 'gpufleet:owner: "plat\\u202eform"', "config.gpufleet:owner", "control characters"),
        ("gpufleet:owner: platform", 'gpufleet:owner: "a\\nb"', "config.gpufleet:owner", "control characters"),
        ("gpufleet:costCenter: gpu-serving", "gpufleet:costCenter: $(id)", "config.gpufleet:costCenter", "$("),
        ("gpufleet:owner: platform", "gpufleet:owner: platform\n  aws:defaultTags: {tags: {x: '$(id)'}}",
         "config.aws:defaultTags", "tags.x: control characters"),
        ("gpufleet:owner: platform", "gpufleet:owner: platform\n  aws:region: \"us-east-1\\u202e\"",
         "config.aws:region", "bidi"),
        ("gpufleet:owner: platform",
         "gpufleet:owner: platform\n  aws:defaultTags: &t {a: [x, x, x, x, x, x, x, x, x, x]}\n"
         + "".join(f"  aws:t{i}: &t{i} [*t{'' if i == 0 else i - 1}, *t{'' if i == 0 else i - 1}, "
                   f"*t{'' if i == 0 else i - 1}, *t{'' if i == 0 else i - 1}, *t{'' if i == 0 else i - 1}, "
                   f"*t{'' if i == 0 else i - 1}, *t{'' if i == 0 else i - 1}, *t{'' if i == 0 else i - 1}]\n"
                   for i in range(9)),
         "", "aliases expand"),
    ],
    ids=["NUL", "RTL", "newline", "$(", "provider tag", "provider bidi", "alias bomb under aws tags"],
)  # fmt: skip
def test_bad_stack_strings(
    old: str, new: str, key: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stacks").mkdir()
    text = GOOD_STACK.replace(old, new)
    assert text != GOOD_STACK
    (tmp_path / "stacks" / "Pulumi.evil.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUFLEET_INVENTORIES", str(REPO / "inventories"))
    started = time.monotonic()
    result = CliRunner().invoke(app, ["stacks"])
    assert time.monotonic() - started < 30
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"stacks/Pulumi.evil.yaml: {key}"), line
    assert words in line, line


def test_error_line_cuts_a_long_key(dc1: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dc1["site"]["x" * 100_000] = 1
    (line,) = _validate(yaml.safe_dump(dc1), tmp_path, monkeypatch)
    assert line.endswith("unknown key") and len(line) < 200, line[:300]


def test_many_problems_print_a_bounded_report(
    dc1: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50,000 aliased bad nodes: the first problems and a count, not 50,000 lines."""
    text = "site: {}\nbom: {}\nnodes:\n" + "".join(f"- &n{i} {{bad: 1}}\n- *n{i}\n" for i in range(25_000))
    lines = _validate(text, tmp_path, monkeypatch)
    assert len(lines) == MAX_LINES + 1
    assert lines[-1].endswith("more problems not shown")
    assert "inventories/evil/nodes.yaml: nodes[0].bad: unknown key" in lines


def test_plan_node_prints_inventory_text_as_text(
    dc1: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the table shows is never read as Rich markup: an accepted value with `[...]` prints as is."""
    _set(dc1, "nodes[3].labels", {"team": "a"})
    site = tmp_path / "inventories" / "evil"
    site.mkdir(parents=True)
    (site / "nodes.yaml").write_text(yaml.safe_dump(dc1, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    from gpufleet import cli

    shown: list[str] = []
    monkeypatch.setattr(cli, "_perf_rows", lambda _perf: shown.append("[/x][bold]x") or "[/x][bold]x")
    result = CliRunner().invoke(app, ["plan-node", "evil", dc1["nodes"][3]["hostname"]])
    assert result.exit_code == 0, result.output
    assert shown and "[/x][bold]x" in result.output


def test_verify_prints_what_a_host_said_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check's message is what a host printed: `[/x]` there neither crashes the gate's table nor
    styles itself as a pass."""
    import gpufleet.verify as verify
    from gpufleet.verify.runner import CheckResult, VerifyReport

    said = "nvidia-smi: [/x][green]passed[/green]"
    report = VerifyReport(
        site="lab",
        hosts=["gpu01"],
        results=[CheckResult(host="gpu01", check="test_gpu[x]", part="gpu", outcome="failed", message=said)],
        returncode=1,
    )
    monkeypatch.setattr(verify, "verify_site", lambda *_a, **_k: report)
    result = CliRunner().invoke(app, ["verify", "lab", "--local", "--limit", "gpu01"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert said in result.output and "test_gpu[x]" in result.output


@pytest.mark.parametrize("name", ["[bold]x", "x $(id)", "x'y", "x\nPulumi.ok.yaml: fine", "a" * 101])
def test_a_stack_name_has_pulumis_grammar(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack name is the file's name: Pulumi's grammar (A-Za-z0-9._-, <= 100), or exit 2 on one line."""
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / f"Pulumi.{name}.yaml").write_text(GOOD_STACK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUFLEET_INVENTORIES", str(REPO / "inventories"))
    result = CliRunner().invoke(app, ["stacks"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stacks/") and "not a Pulumi stack name" in line, line
    assert len(line) < 300

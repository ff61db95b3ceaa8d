"""Adversarial inputs: seeded mutations of the shipped inventories and stack files, run through the CLI.

Each case is one mutation (a hostile string in a field, a wrong type, a dropped or unknown key, or
a text-level change: duplicate keys, YAML 1.1 numbers, alias bombs, deep nesting, stray bytes) of
one shipped file. The CLI runs on it in this process, as a user would run it; then:
- the exit code is 0 or 2, never a traceback;
- the case costs < 2 s of CPU, and the whole run grows the process by < 200 MB;
- for every accepted case, everything the input reaches is rendered and checked by oracles written
  from the destination's grammar, independently of the model's own types: apt deb822 files, device
  and mount paths, RAID commands, kubectl argument lists, kubeadm nodeRegistration, Kubernetes label
  and taint syntax, Ansible extra variables (Jinja only behind !unsafe), AWS tags.

tests/unit/test_adversarial.py runs 2,000 cases in CI; `python bench/adversarial.py [N]` runs
10,000 (default) and writes bench/results/adversarial.md.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import random
import re
import resource
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from typer.testing import CliRunner  # noqa: E402

from gpufleet.cli import app  # noqa: E402

SITES = ("lab", "h100", "dc1-dr", "dc1")
STACKS = ("lab", "dc1-prod", "burst-prod")
MAX_CPU_S = 2.0
MAX_GROWTH_MB = 200
SHARDS = 4

# Strings an attacker with commit access would try, by the destination they aim at.
HOSTILE: list[str] = [
    "{{ lookup('pipe', 'id') }}", "{% for x in range(9) %}x{% endfor %}", "{#", "x{{7*7}}",
    'x"\nignorePreflightErrors: [all]\n#', "a: b", "- x", "x\n---\nkind: Secret",
    "x --kubeconfig=/tmp/k", "--overwrite", "-x", "a=b,c=d", "a b", "key=value:NoSchedule",
    "noble\nTrusted: yes", "noble [trusted=yes]", "stable/updates", "bookworm",
    "$(id)", "`id`", "; reboot", "| sh", "&& rm -rf /", "x' #",
    "/dev/../etc/passwd", "/dev/sda/../../etc", "/etc", "/etc/passwd", "/", "/usr/local", "/var",
    "/dev/mem", "/dev//sda", "/dev/./sda", "dev/sda", "/dev/sda ", "/srv/data\n/etc", "/var/lib/gpufleet/../x",
    "a\x00b", "a\u202eb", "a\u200bb", "a\r\nb", "\t", "", " ", "é", "ǝ", "true", "null", "010", "1e309",
    "http://x/{{y}}", "file:///etc/shadow", "https://m$(id)", "https://m/ x",
    "a" * 64, "a" * 256, "a" * 5000, "x." * 130 + "x/y",
    "[/x]", "[bold]x", "https://u:p@pypi.example/simple/", "https://pypi.example/[/x]{{7*7}}",
]  # fmt: skip
OTHER_VALUES: list[Any] = [
    0,
    -1,
    1,
    2**63,
    10**30,
    0.5,
    float("inf"),
    float("nan"),
    True,
    None,
    [],
    {},
    ["x"],
    {"x": 1},
]

# Oracles: destination grammars, written from the destinations' own definitions, not the model's.
K8S_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")  # apimachinery qualifiedNameFmt
K8S_PREFIX = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)  # DNS-1123 subdomain
SYSTEM = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
AWS_TAG = re.compile(r"[\w .:/=+\-@]{0,256}")  # AWS tag value characters (ASCII word chars here)
DEB822_FIELDS = {"Types", "URIs", "Suites", "Components", "Signed-By"}


@dataclass(frozen=True)
class Case:
    kind: str  # "inventory" or "stack"
    base: str
    mutation: str
    text: bytes


@dataclass
class Outcome:
    case: Case
    codes: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    crash: str | None = None
    unsafe: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return bool(self.codes) and self.codes[0] == 0


# --- the generator ----------------------------------------------------------------------------


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _mutate_doc(rng: random.Random, doc: Any) -> str:
    paths = list(_paths(doc))
    path = rng.choice(paths)
    parent, key = _parent(doc, path), path[-1]
    op = rng.choices(["hostile", "other", "drop", "unknown", "copy"], weights=[6, 2, 1, 1, 1])[0]
    where = ".".join(map(str, path))
    if op == "hostile":
        parent[key] = rng.choice(HOSTILE)
    elif op == "other":
        parent[key] = copy.deepcopy(rng.choice(OTHER_VALUES))
    elif op == "drop":
        del parent[key]
    elif op == "unknown" and isinstance(parent, dict):
        parent[rng.choice(HOSTILE[:12])] = "x"
    elif op == "copy" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    else:
        parent[key] = rng.choice(HOSTILE)
        op = "hostile"
    return f"{op} {where}"


def _mutate_text(rng: random.Random, text: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    op = rng.choice(["dup-line", "number", "bomb", "deep", "bytes", "huge"])
    i = rng.randrange(len(lines))
    if op == "dup-line":
        lines.insert(i, lines[i])
    elif op == "number":
        numbered = [j for j, line in enumerate(lines) if re.search(r": [0-9]+\s*$", line)] or [i]
        j = rng.choice(numbered)
        lines[j] = re.sub(
            r": [0-9]+(\s*)$", rf": {rng.choice(['010', '0x1f', '1:20', '1_000', '0o7'])}\1", lines[j]
        )
    elif op == "bomb":
        bomb = "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
            f"x{k}: &x{k} [{', '.join([f'*x{k - 1}'] * 10)}]\n" for k in range(1, 9)
        )
        return "bomb", text + bomb
    elif op == "deep":
        depth = rng.choice([65, 500, 990])
        return f"deep {depth}", text + f"deep: {'[' * depth}{']' * depth}\n"
    elif op == "bytes":
        lines[i] = lines[i][:-1] + rng.choice(["\x00", "\x1b[2J", "\ufeff", "\t", "\udcff"]) + "\n"
    elif op == "huge":
        return "huge", text.replace(": ", f": {'y' * rng.choice([1000, 100_000])}", 1)
    return op, "".join(lines)


def _with_optional_strings(doc: Any) -> Any:
    """Optional string fields no shipped file sets, set to a valid value so mutations reach them."""
    serving = doc.get("site", {}).get("serving") if isinstance(doc, dict) else None
    if isinstance(serving, dict):
        serving.setdefault("engine_args", {"kv_cache_dtype": "auto"})
    return doc


def cases(seed: int, count: int) -> Iterator[Case]:
    rng = random.Random(seed)
    sources = [("inventory", s, REPO / "inventories" / s / "nodes.yaml") for s in SITES]
    sources += [("stack", s, REPO / "stacks" / f"Pulumi.{s}.yaml") for s in STACKS]
    texts = {name: path.read_text() for _, name, path in sources}
    docs = {name: _with_optional_strings(yaml.safe_load(text)) for name, text in texts.items()}
    for _ in range(count):
        kind, name, _path = rng.choice(sources)
        if rng.random() < 0.75:
            doc = copy.deepcopy(docs[name])
            mutation = _mutate_doc(rng, doc)
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        else:
            mutation, text = _mutate_text(rng, texts[name])
        yield Case(kind, name, mutation, text.encode("utf-8", "surrogateescape"))


# --- running one case and checking what it reaches ----------------------------------------------


def _gpu_host(text: bytes) -> str | None:
    """The first node with GPUs (else the first node) of a case, if it parses at all."""
    try:
        nodes = [n for n in yaml.safe_load(text)["nodes"] if isinstance(n, dict) and "hostname" in n]
    except Exception:  # a case that does not parse has no node to plan; validate says why
        return None
    gpu = [n for n in nodes if n.get("gpu")] or nodes
    return str(gpu[0]["hostname"]) if gpu else None


def run_case(case: Case, work: Path) -> Outcome:
    out = Outcome(case)
    runner = CliRunner()
    if case.kind == "inventory":
        path = work / "inventories" / "fuzz" / "nodes.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.text)
        commands = [
            ["validate", str(path)],
            ["plan-site", "--json", str(path)],
            ["inventory", "--format", "ansible", str(path)],
        ]
        # A GPU node's plan as people read it: a Rich table, where `[/x]` once raised MarkupError.
        host = _gpu_host(case.text)
        if host:
            commands.append(["plan-node", str(path), host])
    else:
        stacks = work / "stacks"
        stacks.mkdir(parents=True, exist_ok=True)
        for old in stacks.glob("*.yaml"):
            old.unlink()
        (stacks / "Pulumi.fuzz.yaml").write_bytes(case.text)
        commands = [["stacks", "--json"]]
    cwd = os.getcwd()
    os.chdir(work)
    started = time.process_time()
    try:
        for args in commands:
            result = runner.invoke(app, args)
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                out.crash = f"{args[0]}: {type(result.exception).__name__}: {result.exception}"[:300]
                break
            out.codes.append(result.exit_code)
            if result.exit_code != 0:
                break
        if out.crash is None and out.accepted:
            out.unsafe = check_reach(case, work)
    finally:
        out.cpu_s = time.process_time() - started
        os.chdir(cwd)
    return out


def check_reach(case: Case, work: Path) -> list[str]:
    """Render every template, command and path an accepted input reaches; list what is unsafe."""
    from gpufleet.inventory.load import load_inventory
    from gpufleet.inventory.stacks import load_stack

    if case.kind == "stack":
        from gpufleet.plan.aws import cloud_tags

        stack = load_stack("fuzz")
        problems = [
            f"tag {k}={v!r}" for k, v in cloud_tags(stack.inventory, stack.config).items() if not _tag(v)
        ]
        return problems + _check_inventory(stack.inventory)
    return _check_inventory(load_inventory(str(work / "inventories" / "fuzz" / "nodes.yaml")))


def _check_user_data(stack: Any) -> list[str]:
    """The burst boot script writes kubeadm's JoinConfiguration through an unquoted heredoc: it must
    parse as YAML and carry exactly the plan's labels and taints (the shell's own $VARS aside)."""
    from gpufleet.plan.aws import plan_burst

    plan = plan_burst(stack.inventory, stack.config, "fuzz")
    body = plan.user_data.split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    doc = yaml.safe_load(re.sub(r"\$[A-Z_]+", "X", body))
    registration = doc["nodeRegistration"]
    labels = dict(kv.split("=", 1) for kv in registration["kubeletExtraArgs"][0]["value"].split(","))
    problems = []
    if any(labels.get(k) != v for k, v in plan.node_labels.items()):
        problems.append(f"burst node-labels {labels!r}")
    if registration["taints"] != [t.model_dump(mode="json") for t in plan.node_taints]:
        problems.append(f"burst taints {registration['taints']!r}")
    if re.search(r"[`\\]|\$\(", body):
        problems.append("shell syntax in the join configuration")
    return problems


def _tag(value: str) -> bool:
    return bool(AWS_TAG.fullmatch(value)) and value.isascii() and value == value.strip()


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    ok_prefix = not prefix or (len(prefix) <= 253 and bool(K8S_PREFIX.fullmatch(prefix)))
    return ok_prefix and len(name) <= 63 and bool(K8S_NAME.fullmatch(name))


def _label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(K8S_NAME.fullmatch(value)))


def _path_ok(path: str, under: tuple[str, ...]) -> bool:
    return posixpath.normpath(path) == path and path.startswith(under) and not re.search(r"\s|\.\.", path)


def _check_inventory(inv: Any) -> list[str]:
    from deploys.node import sources_text
    from deploys.operations.raid6 import raid6_commands
    from gpufleet.plan.node import kubeadm_registration, kubectl_label_args, kubectl_taint_arg, plan_node
    from gpufleet.provision.cluster import extravars, unsafe_extravars

    problems: list[str] = []
    lab = inv.site.environment == "lab"
    for node in inv.nodes:
        plan = plan_node(inv, node)
        for name, text in sources_text(plan).items():
            fields = [line.split(":", 1)[0] for line in text.splitlines()]
            if not set(fields) <= DEB822_FIELDS or len(fields) != len(set(fields)):
                problems.append(f"{name}: apt source fields {fields}")
        for dev in [*plan.ceph_osd_devices, *(m for a in plan.raid for m in a.members)]:
            if not _path_ok(dev, ("/dev/", "/var/lib/gpufleet/") if lab else ("/dev/",)):
                problems.append(f"{node.hostname}: device {dev!r}")
        for mount in plan.mounts:
            bad = mount.path == "/" or any(mount.path == d or mount.path.startswith(d + "/") for d in SYSTEM)
            if bad or not _path_ok(mount.path, ("/",)):
                problems.append(f"{node.hostname}: mount on {mount.path!r}")
        for array in plan.raid:
            blank = {"fstype": None, "pttype": None, "children": [], "mountpoint": None}
            create = raid6_commands(array, {}, {m: blank for m in array.members}, {}, {}, "")[0]  # type: ignore[misc]
            if shlex.split(create)[-len(array.members) :] != array.members:
                problems.append(f"{node.hostname}: mdadm command {create!r}")
        for key, value in plan.labels.items():
            if not (_label_key(key) and _label_value(value)):
                problems.append(f"{node.hostname}: label {key!r}={value!r}")
        for taint in plan.registration_taints:
            if not (_label_key(taint.key) and _label_value(taint.value)):
                problems.append(f"{node.hostname}: taint {taint.key!r}={taint.value!r}")
        argv = [*kubectl_label_args(plan), *(kubectl_taint_arg(t) for t in plan.taints)]
        if any(a.startswith("-") or re.search(r"\s", a) for a in argv):
            problems.append(f"{node.hostname}: kubectl arguments {argv!r}")
        registration = kubeadm_registration(plan)
        (labels,) = [a["value"] for a in registration["kubeletExtraArgs"]]  # type: ignore[attr-defined]
        if dict(kv.split("=", 1) for kv in labels.split(",") if kv) != plan.labels:
            problems.append(f"{node.hostname}: node-labels {labels!r} is not the plan's labels")
    # Ansible extra variables: a string that could hold Jinja reaches Ansible only behind !unsafe.
    for node_ in _scalars(yaml.compose(unsafe_extravars(extravars(inv)))):
        if "{" in node_.value and node_.tag != "!unsafe":
            problems.append(f"extra variable {node_.value!r} without !unsafe")
    return problems


def _scalars(node: Any) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            yield from _scalars(child)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key)
            yield from _scalars(value)


def run(seed: int, count: int, shard: tuple[int, int] = (0, 1)) -> tuple[list[Outcome], float]:
    """The cases of one shard (index i of n: every n-th case from the i-th) in this process;
    returns the outcomes and the run's RSS growth in MB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = os.environ.get("GPUFLEET_INVENTORIES")
    os.environ["GPUFLEET_INVENTORIES"] = str(REPO / "inventories")
    try:
        with tempfile.TemporaryDirectory(prefix="gpufleet-fuzz-") as tmp:
            outcomes = [
                run_case(case, Path(tmp))
                for i, case in enumerate(cases(seed, count))
                if i % shard[1] == shard[0]
            ]
    finally:
        if saved is None:
            del os.environ["GPUFLEET_INVENTORIES"]
        else:
            os.environ["GPUFLEET_INVENTORIES"] = saved
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return outcomes, growth


def main() -> None:
    from bench.report import met, write

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    seed = 14
    started = time.perf_counter()
    # Shards in separate processes: CPU per case is each process's own, growth the largest shard's.
    with ProcessPoolExecutor(SHARDS) as pool:
        shards = list(pool.map(run, [seed] * SHARDS, [count] * SHARDS, [(i, SHARDS) for i in range(SHARDS)]))
    outcomes = [o for outs, _ in shards for o in outs]
    growth = max(g for _, g in shards)
    wall = time.perf_counter() - started
    # Baseline in the same run: the CLI on each unmutated file, what a good input costs.
    base = [run_case(Case(c.kind, c.base, "none", c.text), Path(tempfile.mkdtemp())) for c in _originals()]
    base_cpu = sorted(o.cpu_s for o in base)[len(base) // 2]
    by_kind: dict[tuple[str, str], Counter[str]] = {}
    for o in outcomes:
        op = o.case.mutation.split()[0]
        verdict = (
            "crash"
            if o.crash
            else "exit 2"
            if o.codes and o.codes[0] == 2
            else "unsafe"
            if o.unsafe
            else ("accepted, safe" if o.accepted else f"exit {o.codes}")
        )
        by_kind.setdefault((o.case.kind, op), Counter())[verdict] += 1
    cpu = sorted(o.cpu_s for o in outcomes)
    bad = [
        o
        for o in outcomes
        if o.crash or o.unsafe or (o.codes and o.codes[-1] not in (0, 2)) or o.cpu_s > MAX_CPU_S
    ]
    lines = [
        "# Adversarial inputs",
        "",
        f"`python bench/adversarial.py {count}`: {count:,} seeded mutations (seed {seed}) of the shipped inventories "
        f"and stack files, each run through the CLI in-process ({SHARDS} processes of {count // SHARDS:,} cases, "
        f"{os.cpu_count()} cores); accepted cases "
        "rendered and checked by the destination oracles (see the module docstring). "
        f"Baseline in the same run: the CLI on the unmutated files, median {base_cpu * 1000:.0f} ms CPU.",
        "",
        "| input | mutation | exit 2 | accepted, safe | unsafe | crash |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (kind, op), counts in sorted(by_kind.items()):
        lines.append(
            f"| {kind} | {op} | {counts['exit 2']} | {counts['accepted, safe']} | {counts['unsafe']} | {counts['crash']} |"
        )
    lines += [
        "",
        f"CPU per case: median {cpu[len(cpu) // 2] * 1000:.0f} ms ({cpu[len(cpu) // 2] / base_cpu:.2f}x the baseline), "
        f"p99 {cpu[int(len(cpu) * 0.99)] * 1000:.0f} ms, max {cpu[-1] * 1000:.0f} ms "
        f"({cpu[-1] / base_cpu:.1f}x the baseline); target < {MAX_CPU_S:g} s: {met(cpu[-1] < MAX_CPU_S)}.",
        f"Process growth over a run of {count // SHARDS:,} cases (the largest of {SHARDS}): {growth:.0f} MB; target < {MAX_GROWTH_MB} MB: {met(growth < MAX_GROWTH_MB)}.",
        f"Crashed, unsafe or over time: {len(bad)}; target 0: {met(not bad)}. Wall time {wall:.0f} s.",
    ]
    lines += [
        f"- {o.case.kind} {o.case.base} `{o.case.mutation}`: {o.crash or o.unsafe or o.cpu_s}"
        for o in bad[:20]
    ]
    write("adversarial.md", [*lines, ""])
    print(json.dumps({"bad": len(bad)}))


def _originals() -> list[Case]:
    out = [
        Case("inventory", s, "none", (REPO / "inventories" / s / "nodes.yaml").read_bytes()) for s in SITES
    ]
    return out + [
        Case("stack", s, "none", (REPO / "stacks" / f"Pulumi.{s}.yaml").read_bytes()) for s in STACKS
    ]


if __name__ == "__main__":
    main()

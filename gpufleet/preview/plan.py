"""`gpufleet plan <stack>`: a structural plan for review, with no cloud access.

The stack's program runs under mocks; its graph is compared with the same stack's graph at a
base git ref (evaluated from that ref's own tree, in a subprocess) and written as:

- `preview.json`: steps shaped like `pulumi preview --json` (create/update/delete/same);
- `summary.md`: a readable summary fit for a pull-request comment;
- `manifests/`: every Kubernetes object (and Helm release) as YAML;
- `nodes/`: every node's plan and digest.

It is a structural plan — what the program declares — not a provider diff: defaults a provider
computes, and live drift, only `pulumi preview` shows. Secret values appear as `[secret]` only,
one per value, so a masked manifest keeps its shape. Updates list each changed leaf input with its
old and new value, marked where the provider would replace the resource (gpufleet.preview.replace),
and a node's plan change as lines (package pins, kernel arguments, sysctls) with the reboot it needs.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from gpufleet.inventory.load import REPO_ROOT
from gpufleet.inventory.stacks import load_stack, stack_names
from gpufleet.model.errors import InputError, Problem
from gpufleet.plan.node import NodePlan
from gpufleet.plan.nodediff import plan_changes, reboot_reasons
from gpufleet.preview.program import (
    PROGRAM,
    SECRET,
    Graph,
    evaluate_stack,
    graph_json,
    reveal,
    stack_file_config,
)
from gpufleet.preview.replace import forces_replacement

HARNESS = Path(__file__).with_name("program.py")
OPS = ("create", "update", "replace", "delete", "same")


@dataclass(frozen=True)
class Change:
    """One leaf input that differs: its path (`spec.template.spec.containers[0].image`)."""

    path: str
    old: Any
    new: Any
    replaces: bool


_ABSENT = object()
NODE_TYPE = "pulumi-python:dynamic/gpufleet:Node"


@dataclass(frozen=True)
class Step:
    op: str  # create, update, replace, delete, same
    urn: str
    type: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    diff: list[str]  # top-level inputs that differ
    changes: list[Change] = field(default_factory=list)
    # A node's plan change as readable lines, and why it will reboot.
    node_lines: list[str] = field(default_factory=list)

    @property
    def replaces(self) -> list[str]:
        return [c.path for c in self.changes if c.replaces]


def _key(path: str, key: str) -> str:
    # Keys with dots or slashes (labels, annotations) are quoted so that the path stays readable.
    part = f'["{key}"]' if any(ch in key for ch in "./ ") else key
    return f"{path}{part}" if part.startswith("[") else f"{path}.{part}" if path else part


def leaf_changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, old, new) for every leaf that differs; JSON documents held in strings are opened."""
    if isinstance(old, str) and isinstance(new, str) and old != new and old[:1] in "{[" and new[:1] in "{[":
        try:
            return leaf_changes(json.loads(old), json.loads(new), path)
        except ValueError:
            pass
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(old.keys() | new.keys()):
            out += leaf_changes(old.get(k, _ABSENT), new.get(k, _ABSENT), _key(path, str(k)))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) == len(new):
            return [
                c
                for i, (o, n) in enumerate(zip(old, new, strict=True))
                for c in leaf_changes(o, n, f"{path}[{i}]")
            ]
        # Items added or removed (a security group's rules, a container's args): each item gone
        # from the old list at its old index, each new one at its new index, a map's leaves one
        # by one; items both lists hold are unchanged, wherever they moved.
        kept = [json.dumps(v, sort_keys=True) for v in new]
        gone = [json.dumps(v, sort_keys=True) for v in old]
        out = []
        for i, o in enumerate(old):
            if json.dumps(o, sort_keys=True) in kept:
                kept.remove(json.dumps(o, sort_keys=True))
            else:
                out += leaf_changes(o, {} if isinstance(o, dict) else _ABSENT, f"{path}[{i}]")
        for j, n in enumerate(new):
            if json.dumps(n, sort_keys=True) in gone:
                gone.remove(json.dumps(n, sort_keys=True))
            else:
                out += leaf_changes({} if isinstance(n, dict) else _ABSENT, n, f"{path}[{j}]")
        return out
    return [] if old == new else [(path, old, new)]


def _step(urn: str, o: dict[str, Any], n: dict[str, Any]) -> Step:
    keys = sorted(
        k for k in o["inputs"].keys() | n["inputs"].keys() if o["inputs"].get(k) != n["inputs"].get(k)
    )
    if not keys:
        return Step("same", urn, n["type"], o, n, [])
    node_lines: list[str] = []
    changes = []
    for path, old, new in leaf_changes(o["inputs"], n["inputs"]):
        if n["type"] == NODE_TYPE and path.split(".")[0].split("[")[0] in ("plan", "pinned", "digest"):
            continue  # the plan reads as node-plan lines below
        changes.append(Change(path, old, new, forces_replacement(n["type"], path)))
    if n["type"] == NODE_TYPE:
        node_lines = _node_lines(o["inputs"].get("plan"), n["inputs"].get("plan"))
    op = "replace" if any(c.replaces for c in changes) else "update"
    return Step(op, urn, n["type"], o, n, keys, changes, node_lines)


def _node_lines(old: Any, new: Any) -> list[str]:
    try:
        before, after = NodePlan.model_validate_json(old), NodePlan.model_validate_json(new)
    except (ValueError, TypeError):
        return []
    reboots = reboot_reasons(before, after)
    return plan_changes(before, after) + ([f"reboot: {'; '.join(reboots)}"] if reboots else [])


def diff_graphs(base: dict[str, Any] | None, head: dict[str, Any]) -> list[Step]:
    old = {r["urn"]: r for r in (base or {"resources": []})["resources"]}
    new = {r["urn"]: r for r in head["resources"]}
    steps = []
    for urn in sorted(old.keys() | new.keys()):
        o, n = old.get(urn), new.get(urn)
        if o is None and n is not None:
            steps.append(Step("create", urn, n["type"], None, n, []))
        elif n is None and o is not None:
            steps.append(Step("delete", urn, o["type"], o, None, []))
        elif o is not None and n is not None:
            steps.append(_step(urn, o, n))
    return steps


def _shown(value: Any, width: int = 100) -> str:
    if value is _ABSENT:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def policy_violations(graph: Graph, config: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """The policy pack's rules over the graph, as `pulumi preview --policy-pack policies` would run them,
    and the stack config checked for secrets in clear.

    Messages say where, never a value: they are safe in a pull-request comment.
    """
    from policies.rules import RULES, plain_config_secrets, violations

    out = [
        {"policy": "secrets-not-in-plain-config", "urn": f"config:{graph.stack}", "message": m}
        for m in plain_config_secrets(config or {})
    ]
    for r in sorted(graph.resources, key=lambda r: r.urn):
        props = reveal(r.inputs)
        for rule in RULES:
            out += [
                {"policy": rule.name, "urn": r.urn, "message": m}
                for m in violations(rule, r.type, props, r.urn)
            ]
    return out


def preview_json(
    stack: str,
    base_ref: str | None,
    steps: list[Step],
    head: dict[str, Any],
    violations: list[dict[str, str]],
) -> dict[str, Any]:
    summary = {op: sum(s.op == op for s in steps) for op in OPS}
    return {
        "kind": "structural-plan",
        "note": "structural plan from the program under mocks, not a provider diff; secrets shown as [secret]",
        "stack": stack,
        "base": base_ref,
        "steps": [
            {
                "op": s.op,
                "urn": s.urn,
                "type": s.type,
                **({"oldState": {"type": s.type, "urn": s.urn, "inputs": s.old["inputs"]}} if s.old else {}),
                **(
                    {
                        "newState": {
                            "type": s.type,
                            "urn": s.urn,
                            "custom": s.new["custom"],
                            "parent": s.new["parent"],
                            "inputs": s.new["inputs"],
                        }
                    }
                    if s.new
                    else {}
                ),
                **({"diffReasons": s.diff} if s.diff else {}),
                **({"replaceReasons": s.replaces} if s.replaces else {}),
                **(
                    {
                        "detailedDiff": {
                            c.path: {
                                "kind": (
                                    "add" if c.old is _ABSENT else "delete" if c.new is _ABSENT else "update"
                                )
                                + ("-replace" if c.replaces else ""),
                                **({} if c.old is _ABSENT else {"old": c.old}),
                                **({} if c.new is _ABSENT else {"new": c.new}),
                            }
                            for c in s.changes
                        }
                    }
                    if s.changes
                    else {}
                ),
                **({"nodePlanChanges": s.node_lines} if s.node_lines else {}),
            }
            for s in steps
        ],
        "changeSummary": summary,
        "policyViolations": violations,
        "outputs": head["outputs"],
    }


def summary_md(
    stack: str, base_ref: str | None, steps: list[Step], violations: list[dict[str, str]], limit: int = 150
) -> str:
    counts = {op: sum(s.op == op for s in steps) for op in OPS}
    against = f"`{base_ref}`" if base_ref else "an empty stack"
    lines = [
        f"### gpufleet structural plan: `{stack}` vs {against}",
        "",
        "| create | update | replace | delete | unchanged |",
        "|---:|---:|---:|---:|---:|",
        f"| {counts['create']} | {counts['update']} | {counts['replace']} | {counts['delete']} | {counts['same']} |",
        "",
    ]
    changed = [s for s in steps if s.op != "same"]
    symbol = {"create": "+", "update": "~", "replace": "!", "delete": "-"}
    if changed:
        lines += ["```diff"]
        shown = 0
        for s in changed[:limit]:
            name = s.urn.rsplit("::", 1)[-1]
            why = (
                f"  (replace: {', '.join(s.replaces)})"
                if s.replaces
                else f"  ({', '.join(s.diff)})"
                if s.diff
                else ""
            )
            lines.append(f"{symbol[s.op]} {s.type} {name}{why}")
            for c in s.changes[: max(0, limit - shown)]:
                mark = "  [forces replacement]" if c.replaces else ""
                lines.append(f"    {c.path}: {_shown(c.old)} → {_shown(c.new)}{mark}")
            lines += [f"    {line}" for line in s.node_lines]
            shown += len(s.changes) + len(s.node_lines)
        if len(changed) > limit:
            lines.append(f"  … and {len(changed) - limit} more (see preview.json)")
        lines += ["```", ""]
    else:
        lines += ["No structural changes.", ""]
    if violations:
        lines += [f"**Policy pack: {len(violations)} violation(s)**", ""]
        lines += [
            f"- `{v['policy']}` {v['urn'].rsplit('::', 1)[-1]}: {v['message']}" for v in violations[:limit]
        ]
        lines.append("")
    else:
        lines += ["Policy pack: every policy passes.", ""]
    lines.append(
        "_Structural plan: what the program declares, evaluated offline under mocks. Provider-computed "
        "values and live drift appear only in `pulumi preview`. Secret values are never shown or compared._"
    )
    return "\n".join(lines) + "\n"


def write_manifests(graph: dict[str, Any], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for r in graph["resources"]:
        if not r["custom"] or not r["type"].startswith("kubernetes:") or r["type"].startswith("pulumi:"):
            continue
        inputs = r["inputs"]
        if r["type"] == "kubernetes:helm.sh/v3:Release":
            name = f"helmrelease-{inputs.get('namespace', 'default')}-{inputs.get('name')}"
        else:
            meta = inputs.get("metadata") or {}
            name = f"{inputs.get('kind', 'object')}-{meta.get('namespace', 'cluster')}-{meta.get('name')}".lower()
            if inputs.get("kind") == "Secret" and isinstance(inputs.get("data"), dict):
                # `data` holds base64: the mask is base64 too, as the API server demands.
                inputs = {**inputs, "data": {k: _b64_mask(v) for k, v in inputs["data"].items()}}
        (out / f"{name}.yaml").write_text(yaml.safe_dump(inputs, sort_keys=False))
        count += 1
    return count


def _b64_mask(value: Any) -> Any:
    return base64.b64encode(SECRET.encode()).decode() if value == SECRET else value


def write_nodes(graph: dict[str, Any], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for r in graph["resources"]:
        if r["type"].endswith("dynamic/gpufleet:Node"):
            inputs = r["inputs"]
            body = {
                "hostname": inputs["hostname"],
                "digest": inputs["digest"],
                "plan": json.loads(inputs["plan"]),
            }
            (out / f"{inputs['hostname']}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
            count += 1
    return count


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=False, timeout=120)


def base_graph(stack: str, ref: str) -> dict[str, Any] | None:
    """The stack's graph at `ref`, from that ref's own tree; None where the ref has no such stack."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode != 0:
        raise InputError("--base", [Problem((), f"{ref!r} is not a commit in {REPO_ROOT}")])
    archive = _git("archive", "--format=tar", commit.stdout.decode().strip())
    if archive.returncode != 0:
        raise InputError("--base", [Problem((), f"cannot read {ref}: {archive.stderr.decode().strip()}")])
    with tempfile.TemporaryDirectory(prefix="gpufleet-base-") as tmp:
        root = Path(tmp)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
        if (
            not (root / "stacks" / "__main__.py").is_file()
            or not (root / "stacks" / f"Pulumi.{stack}.yaml").is_file()
        ):
            return None
        # The base's own gpufleet, components and inventories; this module's harness drives them.
        env = {**os.environ, "PYTHONPATH": str(root), "GPUFLEET_INVENTORIES": str(root / "inventories")}
        run = subprocess.run(
            [sys.executable, "-c", _BASE_RUNNER, str(HARNESS), str(root), stack],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the program at {ref} did not evaluate: {tail}")
        result: dict[str, Any] = json.loads(run.stdout)
        return result


# Runs in the base tree: loads this checkout's harness by path, which drives the base's own code.
_BASE_RUNNER = """
import importlib.util, json, sys
from pathlib import Path
harness, root, stack = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("gpufleet_harness", harness)
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
print(json.dumps(mod.graph_json(mod.evaluate_stack(stack, program=root / "stacks" / "__main__.py"))))
"""


def structural_plan(stack: str, base_ref: str | None, out: Path) -> dict[str, Any]:
    """Write the plan under `out`; returns preview.json's content."""
    if stack not in stack_names():
        raise InputError(
            "argument STACK", [Problem((), f"no stack {stack!r}; stacks: {', '.join(stack_names())}")]
        )
    load_stack(stack)  # what the engine would refuse stops here, as in `gpufleet stacks`
    base = base_graph(stack, base_ref) if base_ref else None
    graph = evaluate_stack(stack)
    head = graph_json(graph)
    violations = policy_violations(graph, stack_file_config(stack, PROGRAM.parent))
    steps = diff_graphs(base, head)
    out.mkdir(parents=True, exist_ok=True)
    preview = preview_json(stack, base_ref, steps, head, violations)
    (out / "preview.json").write_text(json.dumps(preview, indent=2, sort_keys=True) + "\n")
    (out / "summary.md").write_text(summary_md(stack, base_ref, steps, violations))
    write_manifests(head, out / "manifests")
    write_nodes(head, out / "nodes")
    return preview

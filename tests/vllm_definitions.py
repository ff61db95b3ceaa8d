"""vLLM's engine-argument definitions, read from its wheel without importing it (import needs CUDA).

`AsyncEngineArgs` (and its base `EngineArgs`) in vllm/engine/arg_utils.py is the dataclass that
Triton's vLLM backend builds from model.json; `SpeculativeConfig` in vllm/config/speculative.py
takes `speculative_config`. Their annotated fields are parsed with `ast`; a `Literal` alias an
annotation names (CacheDType, SpeculativeMethod, ...) is resolved from whichever module of the
wheel defines it, nested aliases included.

Stricter than vLLM on one point: where an annotation allows both a Literal and any `str`
(`CacheDType | str`, kept open for plugins), a string must still be one of the Literal's values,
so a typo such as "fp9" fails here instead of in a pod.
"""

from __future__ import annotations

import ast
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpufleet.inventory.load import load_inventory

ENGINE_ARGS = "vllm/engine/arg_utils.py"
SPECULATIVE = "vllm/config/speculative.py"


# The vLLM the production site's Triton image carries (bom.vllm); scripts/setup.sh fetches its wheel.
VLLM_VERSION = load_inventory("dc1").bom.vllm


def wheel_path() -> Path:
    found = sorted((Path(sys.prefix) / "wheels").glob(f"vllm-{VLLM_VERSION}-*.whl"))
    if not found:
        raise FileNotFoundError(
            f"vllm {VLLM_VERSION} wheel not in {Path(sys.prefix) / 'wheels'}: run scripts/setup.sh"
        )
    return found[0]


@dataclass
class Definitions:
    engine: dict[str, ast.expr]
    speculative: dict[str, ast.expr]
    literals: dict[str, set[Any]] = field(default_factory=dict)


def _fields(tree: ast.Module, *classes: str) -> dict[str, ast.expr]:
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    out[stmt.target.id] = stmt.annotation
    return out


def load(wheel: Path) -> Definitions:
    with zipfile.ZipFile(wheel) as zf:
        sources = {
            n: zf.read(n).decode() for n in zf.namelist() if n.startswith("vllm/") and n.endswith(".py")
        }
    defs = Definitions(
        engine=_fields(ast.parse(sources[ENGINE_ARGS]), "EngineArgs", "AsyncEngineArgs"),
        speculative=_fields(ast.parse(sources[SPECULATIVE]), "SpeculativeConfig"),
    )
    # Every module-level `Name = Literal[...]` (or `Name: TypeAlias = Literal[...]`) in the wheel.
    raw: dict[str, ast.expr] = {}
    pattern = re.compile(r"^[A-Za-z_]+(: TypeAlias)? = Literal\[", re.M)
    for text in sources.values():
        if not pattern.search(text):
            continue
        for node in ast.parse(text).body:
            target, value = None, None
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                target, value = node.targets[0].id, node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                target, value = node.target.id, node.value
            if target and isinstance(value, ast.Subscript) and ast.unparse(value.value) == "Literal":
                raw.setdefault(target, value.slice)

    def resolve(name: str, seen: frozenset[str] = frozenset()) -> set[Any]:
        values: set[Any] = set()
        elts = raw[name].elts if isinstance(raw[name], ast.Tuple) else [raw[name]]  # type: ignore[attr-defined]
        for e in elts:
            if isinstance(e, ast.Constant):
                values.add(e.value)
            elif isinstance(e, ast.Name) and e.id in raw and e.id not in seen:
                values |= resolve(e.id, seen | {name})
        return values

    defs.literals = {name: resolve(name) for name in raw}
    return defs


def _union(annotation: ast.expr) -> list[ast.expr]:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _union(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _union(annotation.left) + _union(annotation.right)
    return [annotation]


_PLAIN = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "list": list}


def problems(args: dict[str, Any], fields: dict[str, ast.expr], defs: Definitions, where: str) -> list[str]:
    """What vLLM would not accept in `args`, one line each."""
    out = []
    for key, value in args.items():
        if key not in fields:
            out.append(f"{where}.{key}: not an argument of vLLM {VLLM_VERSION}")
            continue
        plain: set[type] = set()
        literal: set[Any] = set()
        for part in _union(fields[key]):
            base = part.value if isinstance(part, ast.Subscript) else part
            name = ast.unparse(base)
            if name == "None":
                plain.add(type(None))
            elif name in _PLAIN:
                plain.add(_PLAIN[name])
            elif name == "Literal" and isinstance(part, ast.Subscript):
                elts = part.slice.elts if isinstance(part.slice, ast.Tuple) else [part.slice]
                literal |= {e.value for e in elts if isinstance(e, ast.Constant)}
            elif name in defs.literals:
                literal |= defs.literals[name]
        if literal and isinstance(value, str):
            ok = value in literal
        else:
            # bool is an int to Python, not to vLLM's parser; an int is a fine float.
            ok = type(value) in plain or (type(value) is int and float in plain)
        if not ok:
            out.append(f"{where}.{key}: {value!r} is not {ast.unparse(fields[key])}")
    return out

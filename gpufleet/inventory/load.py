"""Read YAML input into strict models; every failure becomes an InputError naming file and key."""

from __future__ import annotations

import functools
import gc
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gpufleet.model.checks import check_inventory
from gpufleet.model.errors import InputError, Problem, cut
from gpufleet.model.errors import Path as KeyPath
from gpufleet.model.site import Inventory
from gpufleet.model.types import PATTERN_NAMES
from gpufleet.plan.burst import WEIGHT_LOAD_MEASURED, measured_weight_load_gib_s
from gpufleet.plan.engine import check_serving

M = TypeVar("M", bound=BaseModel)

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_BYTES = 10 * 1024 * 1024
WEIGHT_LOAD_TABLE = REPO_ROOT / WEIGHT_LOAD_MEASURED
# Aliases may add this many nodes to a document beyond those written out: enough for any anchor
# a person writes, far below what a billion-laughs file expands to.
MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 64
# YAML 1.1 reads 010 as 8, 0x10 as 16, 1:20 as 80 and 1_000 as 1000: a reader of the file sees
# another number than the one applied. Only plain decimals are numbers.
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML that refuses duplicate keys, ambiguous integers, deep nesting and alias bombs."""

    def get_single_node(self) -> yaml.Node | None:
        node: yaml.Node | None = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {cut(key_node.value)!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if not _PLAIN_INT.fullmatch(node.value):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"ambiguous number {cut(node.value)!r}: YAML 1.1 reads it in another base; "
                "write a plain decimal, or quote it for a string",
                node.start_mark,
            )
        return int(node.value)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes the document expands to and its depth without expanding it: each distinct
    node once (aliases are the same node object), iteratively, so neither a bomb nor a deep
    file costs more than the file's own size."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in size and not done:
            continue
        children = _children(node)
        if not done:
            distinct += 1
            size[key] = -1  # on the path: a recursive alias is met again before it is done
            stack.append((node, True))
            for child in children:
                if size.get(id(child)) == -1:
                    raise _composer_error("a recursive alias", node)
                if id(child) not in size:
                    stack.append((child, False))
            continue
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        if depth[key] > MAX_DEPTH:
            raise _composer_error(f"nesting deeper than {MAX_DEPTH} levels", node)
        if size[key] > distinct + MAX_ALIAS_NODES:
            raise _composer_error(f"aliases expand to more than {MAX_ALIAS_NODES:,} extra values", node)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _composer_error(what: str, node: yaml.Node) -> yaml.composer.ComposerError:
    return yaml.composer.ComposerError(None, None, f"{what} (refused)", node.start_mark)


def inventories_dir() -> Path:
    """`$GPUFLEET_INVENTORIES`, else `./inventories`, else the repository's own."""
    env = os.environ.get("GPUFLEET_INVENTORIES")
    if env:
        return Path(env)
    local = Path("inventories")
    return local if local.is_dir() else REPO_ROOT / "inventories"


def site_file(site: str) -> Path:
    """A site name (`lab`), a site folder, or a nodes.yaml path."""
    given = Path(site)
    if given.is_file() or given.suffix in (".yaml", ".yml"):
        return given
    if given.is_dir():
        return given / "nodes.yaml"
    return inventories_dir() / site / "nodes.yaml"


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_text(path: Path) -> str:
    """An input file's text; a missing or unreadable one is an InputError naming it."""
    try:
        if path.exists() and not path.is_file():
            # A device (/dev/zero), a FIFO or a folder: reading it would never end or mean nothing.
            raise InputError(display(path), [Problem((), "not a regular file")])
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise InputError(display(path), [Problem((), f"larger than {MAX_FILE_BYTES // 2**20} MB")])
        return data.decode("utf-8")
    except FileNotFoundError:
        raise InputError(display(path), [Problem((), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(display(path), [Problem((), f"cannot read: {exc}")]) from None


def read_yaml(path: Path) -> Any:
    return parse_yaml(read_text(path), display(path))


def parse_yaml(text: str, source: str) -> Any:
    if len(text) > MAX_FILE_BYTES:
        raise InputError(source, [Problem((), f"larger than {MAX_FILE_BYTES // 2**20} MB")])
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise InputError(source, [Problem((), f"YAML syntax error: {where}{reason}")]) from None
    if data is None:
        raise InputError(source, [Problem((), "file is empty")])
    return data


def validate(model: type[M], data: Any, source: str, prefix: KeyPath = ()) -> M:
    """Validate `data` (found at key path `prefix` of `source`) against a strict model."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [Problem((*prefix, *err["loc"]), _message(err)) for err in exc.errors()]
        raise InputError(source, problems) from None


_USERINFO = re.compile(r"//[^/@\s]*@")


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = msg.removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        msg = PATTERN_NAMES.get(err.get("ctx", {}).get("pattern"), msg)
    value = err.get("input")
    if err["type"] not in {"model_type", "dict_type", "list_type"} and isinstance(value, str | int | float):
        # A URL's user:password@ is a secret even when the rest of the value is wrong.
        shown = _USERINFO.sub("//***@", value) if isinstance(value, str) else value
        msg += f" (got {cut(repr(shown))})"
    return msg


def inventory_from_data(data: Any, source: str) -> Inventory:
    inv = validate(Inventory, data, source)
    problems = [*check_inventory(inv), *check_serving(inv)]
    if problems:
        raise InputError(source, problems)
    if inv.site.burst is not None and inv.site.burst.boot.weight_load_gib_s is None:
        inv = with_measured_weight_load(inv)
    if inv.site.burst is not None:
        # What only the burst planner can decide (a model that fits enough Spot types, its pinned
        # revision) is checked here too, so `validate` passes nothing that `plan-site` rejects.
        from gpufleet.plan.aws import plan_fleet

        plan_fleet(inv, source)
    return inv


def with_measured_weight_load(inv: Inventory) -> Inventory:
    """The site with its burst boot budget's weight-load rate taken from the benchmark's table."""
    assert inv.site.burst is not None
    rate = _measured_rate(str(WEIGHT_LOAD_TABLE))
    burst = inv.site.burst
    boot = burst.boot.model_copy(update={"weight_load_gib_s": rate})
    site = inv.site.model_copy(update={"burst": burst.model_copy(update={"boot": boot})})
    return inv.model_copy(update={"site": site})


@functools.cache
def _measured_rate(path: str) -> float:
    source = display(Path(path))
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            source, [Problem((), f"cannot read the weight-load table: {cut(str(exc))}")]
        ) from exc
    return measured_weight_load_gib_s(doc, source)


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Loading builds a large acyclic object tree: cycle collection only rescans it, super-linearly."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def site_names() -> list[str]:
    d = inventories_dir()
    return sorted(p.parent.name for p in d.glob("*/nodes.yaml")) if d.is_dir() else []


def load_inventory(site: str) -> Inventory:
    path = site_file(site)
    if not path.parent.exists() and Path(site).name == site and not site.endswith((".yaml", ".yml")):
        # A site name, not a path: say which names there are, as a misspelled stack or host does.
        raise InputError(
            "argument SITE",
            [
                Problem(
                    (), f"no site {site!r} in {display(inventories_dir())}; sites: {', '.join(site_names())}"
                )
            ],
        )
    with _no_gc_pauses():
        return inventory_from_data(read_yaml(path), display(path))

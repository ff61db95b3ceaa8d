"""Read YAML input into strict models; every failure becomes an InputError naming file and key."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gpufleet.model.checks import check_inventory
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.errors import Path as KeyPath
from gpufleet.model.site import Inventory
from gpufleet.plan.engine import check_serving

M = TypeVar("M", bound=BaseModel)

REPO_ROOT = Path(__file__).resolve().parents[2]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    if given.is_file():
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
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(display(path), [Problem((), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(display(path), [Problem((), f"cannot read: {exc}")]) from None


def read_yaml(path: Path) -> Any:
    return parse_yaml(read_text(path), display(path))


def parse_yaml(text: str, source: str) -> Any:
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


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    if err["type"] not in {"model_type", "dict_type", "list_type"} and isinstance(value, str | int | float):
        msg += f" (got {value!r})"
    return msg


def inventory_from_data(data: Any, source: str) -> Inventory:
    inv = validate(Inventory, data, source)
    problems = [*check_inventory(inv), *check_serving(inv)]
    if problems:
        raise InputError(source, problems)
    return inv


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


def load_inventory(site: str) -> Inventory:
    path = site_file(site)
    with _no_gc_pauses():
        return inventory_from_data(read_yaml(path), display(path))

"""Stack config checked against `Pulumi.yaml` the way the Pulumi engine checks it before a program runs.

Pulumi mocks never read project config, so this is where a stack that `pulumi up` would refuse
fails first. The rules follow pulumi/pulumi `sdk/go/common/workspace` (`mergeConfig`,
`validateStackConfigValue`, `ValidateConfigValue`, `config.ParseKey`):

- every stack config key is `<namespace>:<name>`;
- a project key without `default` (or `value`) must be set by every stack, in the project's
  namespace: "Stack 'x' is missing configuration value 'k'";
- `secret: true` keys must be `secure:` in the stack file: "... must be encrypted as it's secret";
- typed keys: `integer` parses as Go's `strconv.Atoi`, `boolean` as `strconv.ParseBool`, `string`
  is any scalar (the engine hands scalars over as text), `array` a list of `items`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpufleet.model.errors import InputError, Problem

_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_BOOL = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}

ConfigType = Literal["string", "integer", "boolean", "array"]


class ItemsType(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: ConfigType
    items: ItemsType | None = None


class ProjectConfigType(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ConfigType | None = None
    description: str | None = None
    items: ItemsType | None = None
    default: Any = None
    value: Any = None
    secret: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ProjectConfigType:
        if self.type == "array" and self.items is None:
            raise ValueError("an array needs `items`")
        if (
            self.type is not None
            and self.default is not None
            and not _valid(self.type, self.items, self.default)
        ):
            raise ValueError(f"default {self.default!r} is not of type {self.type!r}")
        return self


class Project(BaseModel):
    """The parts of `Pulumi.yaml` that decide whether a stack's config is accepted."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    stack_config_dir: str | None = Field(None, alias="stackConfigDir")
    config: dict[str, ProjectConfigType] = {}


def _valid(type_: str, items: ItemsType | None, value: Any) -> bool:
    if type_ == "string":
        return not isinstance(value, dict | list)
    if type_ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and _GO_INT.fullmatch(value) is not None
        )
    if type_ == "boolean":
        return isinstance(value, bool) or (isinstance(value, str) and value in _GO_BOOL)
    return (
        isinstance(value, list)
        and items is not None
        and all(_valid(items.type, items.items, v) for v in value)
    )


def _secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def load_project(path: Path) -> Project:
    from gpufleet.inventory.load import display, read_yaml, validate

    return validate(Project, read_yaml(path), display(path))


def project_problems(project: Project, stack: str, config: Mapping[str, Any]) -> list[Problem]:
    """What the engine would refuse in `config` (the stack file's `config:` mapping) for `stack`."""
    problems = []
    for key in config:
        namespace, _, name = key.partition(":")
        if not namespace or not name:
            problems.append(
                Problem(("config", key), "configuration keys should be of the form `<namespace>:<name>`")
            )
    missing = []
    for short, decl in sorted(project.config.items()):
        key = short if ":" in short else f"{project.name}:{short}"
        path = ("config", key)
        if key not in config:
            if decl.default is None and decl.value is None and key.split(":", 1)[0] == project.name:
                missing.append(short)
            continue
        value = config[key]
        if decl.secret and not _secure(value):
            problems.append(
                Problem(
                    path, f"Stack '{stack}' with configuration key '{short}' must be encrypted as it's secret"
                )
            )
        elif decl.type is not None and not _secure(value) and not _valid(decl.type, decl.items, value):
            problems.append(
                Problem(
                    path, f"Stack '{stack}' with configuration key '{short}' must be of type '{decl.type}'"
                )
            )
    for short in missing:
        problems.append(
            Problem(
                ("config", f"{project.name}:{short}"),
                f"Stack '{stack}' is missing configuration value '{short}' "
                "(Pulumi.yaml declares it without a default)",
            )
        )
    return problems


def check_stack_config(project_file: Path, stack: str, config: Mapping[str, Any], source: str) -> None:
    problems = project_problems(load_project(project_file), stack, config)
    if problems:
        raise InputError(source, problems)

"""Stack configuration: `stacks/Pulumi.<stack>.yaml`, which names the site it deploys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from gpufleet.model.site import MAX_STR, Strict
from gpufleet.model.types import AwsTagValue, Hostname

# What no stack config string may hold, wherever it goes: control characters (NUL, newlines),
# bidirectional and zero-width marks that make a reviewer read another value than the one applied,
# template and shell syntax.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]|\{\{|\{%|\$\(|`")
MAX_CONFIG_STR = 4096


class GpufleetConfig(Strict):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, str_max_length=MAX_STR
    )

    site: Hostname = Field(alias="gpufleet:site", description="inventory under inventories/")
    layer: Literal["onprem", "burst"] = Field(alias="gpufleet:layer")
    owner: AwsTagValue = Field(alias="gpufleet:owner", description="the `owner` tag of every cloud resource")
    cost_center: AwsTagValue = Field(alias="gpufleet:costCenter", description="the `cost-center` tag")
    burst_nodes: int = Field(0, ge=0, alias="gpufleet:burstNodes", description="desired Spot GPU nodes")
    # A stack in the burst stack's own organization and project, or `org/project/stack`;
    # Pulumi.yaml defaults it to "" (none) so the on-prem stacks need not set it.
    onprem_stack: str | None = Field(
        None, alias="gpufleet:onpremStack", pattern=r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+$"
    )

    @field_validator("onprem_stack", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, path)
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _plain_strings(value: object) -> object:
    """Provider config (aws:defaultTags, aws:region) reaches tags, names and logs too."""
    for where, text in _strings(value, ""):
        at = f"{where}: " if where else ""
        if len(text) > MAX_CONFIG_STR:
            raise ValueError(f"{at}a value longer than {MAX_CONFIG_STR} characters")
        if _UNSAFE.search(text):
            raise ValueError(f"{at}control characters, bidi marks, `{{{{`, `{{%`, `$(` or backticks")
    return value


class StackFile(Strict):
    config: dict[str, Annotated[object, AfterValidator(_plain_strings)]]
    secretsprovider: str | None = None
    encryptionsalt: str | None = None

    @field_validator("config")
    @classmethod
    def _namespaced(cls, config: dict[str, object]) -> dict[str, object]:
        for key in config:
            if ":" not in key:
                raise ValueError(f"config key {key!r} needs a namespace, e.g. gpufleet:{key}")
        return config

    def gpufleet(self) -> dict[str, object]:
        return {k: v for k, v in self.config.items() if k.startswith("gpufleet:")}

"""Stack configuration: `stacks/Pulumi.<stack>.yaml`, which names the site it deploys."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from gpufleet.model.site import Hostname, Strict


class GpufleetConfig(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    site: Hostname = Field(alias="gpufleet:site", description="inventory under inventories/")
    layer: Literal["onprem", "burst"] = Field(alias="gpufleet:layer")
    owner: str = Field(alias="gpufleet:owner", min_length=1)
    cost_center: str = Field(alias="gpufleet:costCenter", min_length=1)
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


class StackFile(Strict):
    config: dict[str, object]
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

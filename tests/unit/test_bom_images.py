"""The BOM's images (Triton, the gateway): a tag, plus the digest only once it was read from the registry."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gpufleet.model.site import Inventory

TAG = "nvcr.io/nvidia/tritonserver:26.10-vllm-python-py3"
GATEWAY = "docker.io/library/haproxy:2.6.12"


@pytest.mark.parametrize("key", ["triton_image", "gateway_image"])
@pytest.mark.parametrize("image", [TAG, f"{TAG}@sha256:{'0' * 64}"])
def test_a_tag_with_or_without_a_digest_is_accepted(key: str, image: str, dc1: dict[str, Any]) -> None:
    dc1["bom"][key] = image
    assert getattr(Inventory.model_validate(dc1).bom, key) == image


@pytest.mark.parametrize(
    "image",
    ["nvcr.io/nvidia/tritonserver", f"{TAG}@sha256:abc", "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64],
    ids=["untagged", "short-digest", "digest-without-tag"],
)
@pytest.mark.parametrize("key", ["triton_image", "gateway_image"])
def test_an_unpinned_or_malformed_image_is_refused(key: str, image: str, dc1: dict[str, Any]) -> None:
    dc1["bom"][key] = image
    with pytest.raises(ValidationError):
        Inventory.model_validate(dc1)


def test_the_shipped_production_sites_name_a_tag(dc1: dict[str, Any]) -> None:
    # No digest was read from nvcr.io for these sites: the tag stands alone until one is.
    assert dc1["bom"]["triton_image"] == TAG and dc1["bom"]["gateway_image"] == GATEWAY

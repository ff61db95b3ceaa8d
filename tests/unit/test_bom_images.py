"""The BOM's Triton image: a tag, plus the digest only once it was read from the registry."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gpufleet.model.site import Inventory

TAG = "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3"


@pytest.mark.parametrize("image", [TAG, f"{TAG}@sha256:{'0' * 64}"])
def test_a_tag_with_or_without_a_digest_is_accepted(image: str, dc1: dict[str, Any]) -> None:
    dc1["bom"]["triton_image"] = image
    assert Inventory.model_validate(dc1).bom.triton_image == image


@pytest.mark.parametrize(
    "image",
    ["nvcr.io/nvidia/tritonserver", f"{TAG}@sha256:abc", "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64],
    ids=["untagged", "short-digest", "digest-without-tag"],
)
def test_an_unpinned_or_malformed_image_is_refused(image: str, dc1: dict[str, Any]) -> None:
    dc1["bom"]["triton_image"] = image
    with pytest.raises(ValidationError):
        Inventory.model_validate(dc1)


def test_the_shipped_production_sites_name_a_tag(dc1: dict[str, Any]) -> None:
    # No digest was read from nvcr.io for these sites: the tag stands alone until one is.
    assert dc1["bom"]["triton_image"] == TAG

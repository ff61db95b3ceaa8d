from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INVENTORIES = REPO / "inventories"
SITES = sorted(p.name for p in INVENTORIES.iterdir() if (p / "nodes.yaml").is_file())


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/host checks real machines: collected only when aimed at some (testinfra's --hosts)."""
    if collection_path == REPO / "tests" / "host":
        return not config.getoption("hosts", default=None)
    return None


def site_data(site: str) -> dict[str, Any]:
    return yaml.safe_load((INVENTORIES / site / "nodes.yaml").read_text())


@pytest.fixture(scope="session")
def dc1_data() -> dict[str, Any]:
    return site_data("dc1")


@pytest.fixture
def dc1(dc1_data: dict[str, Any]) -> dict[str, Any]:
    """A fresh, mutable copy of the dc1 inventory document."""
    return copy.deepcopy(dc1_data)

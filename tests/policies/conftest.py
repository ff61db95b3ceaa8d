from __future__ import annotations

import pytest

from gpufleet.inventory.stacks import stack_names
from gpufleet.preview.program import Graph, evaluate_stack


@pytest.fixture(scope="session")
def recorded() -> dict[str, Graph]:
    return {name: evaluate_stack(name) for name in stack_names()}

from __future__ import annotations

import pytest

from gpufleet.inventory.stacks import Stack, load_stack, stack_names
from gpufleet.preview.program import Graph, evaluate_stack

STACKS = stack_names()


@pytest.fixture(scope="session")
def graphs() -> dict[str, Graph]:
    """Every stack's program, run once under mocks (the burst stack against dc1-prod's outputs)."""
    return {name: evaluate_stack(name) for name in STACKS}


@pytest.fixture(scope="session")
def stacks() -> dict[str, Stack]:
    return {name: load_stack(name) for name in STACKS}

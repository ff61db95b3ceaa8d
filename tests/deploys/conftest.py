"""Recorded (tests/fixtures/h100) and hand-written (tests/fixtures/handwritten) command outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyinfra.context import ctx_host

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Recorded:
    command: str
    lines: list[str]
    exit: int


def load(name: str) -> Recorded:
    """`$ command` first, `# exit=N` last, the output between."""
    text = (FIXTURES / name).read_text().splitlines()
    assert text[0].startswith("$ ") and text[-1].startswith("# exit="), name
    return Recorded(command=text[0][2:], lines=text[1:-1], exit=int(text[-1].removeprefix("# exit=")))


def fact_from(fact_cls: type, name: str) -> Any:
    """Run a fact's pure `process()` on a recorded output, as pyinfra does with a host's."""
    return fact_cls().process(load(name).lines)


class FakeHost:
    """The facts a host would report, from fixtures; what pyinfra's `host` gives an operation."""

    name = "fixture-host"

    def __init__(self, facts: dict[type, Any]) -> None:
        self.facts = facts

    def get_fact(self, fact_cls: type, **kwargs: Any) -> Any:
        return self.facts[fact_cls]


@contextmanager
def as_host(facts: dict[type, Any]) -> Iterator[None]:
    with ctx_host.use(FakeHost(facts)):
        yield


def commands(op: Any, *args: Any, **kwargs: Any) -> list[str]:
    """The commands an operation yields for the fake host (its undecorated generator)."""
    return [str(c) for c in op._inner(*args, **kwargs)]


@pytest.fixture
def run_op() -> Callable[..., list[str]]:
    def run(facts: dict[type, Any], op: Any, *args: Any, **kwargs: Any) -> list[str]:
        with as_host(facts):
            return commands(op, *args, **kwargs)

    return run

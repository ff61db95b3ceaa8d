"""Problems with input, each tied to the file and the key path it came from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:/.-]+")

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            # A key with spaces, quotes or newlines is shown quoted so the line stays one line.
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def render(self, source: str) -> str:
        where = format_path(self.path)
        message = " ".join(self.message.splitlines())
        return f"{source}: {where}: {message}" if where else f"{source}: {message}"


class InputError(Exception):
    """Bad input: the CLI prints one line per problem and exits 2, having changed nothing."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [p.render(self.source) for p in self.problems]

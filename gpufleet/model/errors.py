"""Problems with input, each tied to the file and the key path it came from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:/.-]{1,80}")
# A long value or key is cut in an error line: the line names it, it need not repeat it.
CUT = 80
MAX_MESSAGE = 400
# A file wrong everywhere gets its first problems and a count: the reader fixes those first.
MAX_LINES = 50


def cut(text: str, limit: int = CUT) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            # A key with spaces, quotes or newlines is shown quoted so the line stays one line.
            out += f"[{cut(repr(part))}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def render(self, source: str) -> str:
        where = format_path(self.path)
        message = cut(" ".join(self.message.splitlines()), MAX_MESSAGE)
        return f"{source}: {where}: {message}" if where else f"{source}: {message}"


class InputError(Exception):
    """Bad input: the CLI prints one line per problem and exits 2, having changed nothing."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        shown = [p.render(self.source) for p in self.problems[:MAX_LINES]]
        hidden = len(self.problems) - len(shown)
        return shown + ([f"{self.source}: {hidden:,} more problems not shown"] if hidden else [])

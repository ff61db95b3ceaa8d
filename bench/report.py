"""How every benchmark ends: its table written to bench/results/NAME and printed."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def write(name: str, lines: list[str]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / name
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return out

"""Roll a stack's served model back to the revision it served before, as a reviewable change.

The pinned revision lives in the site's inventory (`bom.model_revision`); its git history is the
record of what was served. `rollback` rewrites that one line to the previous distinct revision
in the history, which the model cache still holds (it keeps the newest three), and the change goes
through the same pull request, `gpufleet plan` diff and `pulumi up` as any other.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gpufleet.inventory.load import display
from gpufleet.model.errors import InputError, Problem

_PIN = re.compile(r"^(?P<indent>\s*)model_revision:\s*(?P<rev>[0-9a-f]{7,40})\s*$", re.M)
_CANARY = re.compile(r"^[ \t]*canary_from:[ \t]*(?P<rev>[0-9a-f]{7,40})[ \t]*\n", re.M)
KEY = ("bom", "model_revision")
HISTORY_COMMITS = 200


@dataclass(frozen=True)
class Rollback:
    path: Path
    current: str
    previous: str
    ends_canary: bool = False


def _pin(text: str, source: str) -> re.Match[str]:
    found = list(_PIN.finditer(text))
    if not found:  # the lab, or a site before its first model
        raise InputError(
            source, [Problem(KEY, "no pinned model revision: the site serves no model to roll back")]
        )
    if len(found) != 1:
        raise InputError(
            source, [Problem(KEY, f"expected one pinned model_revision line, found {len(found)}")]
        )
    return found[0]


def history(path: Path) -> list[str]:
    """Distinct pinned revisions in the file's committed history, newest first."""
    top = subprocess.run(
        ["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if top.returncode != 0:
        raise InputError(
            display(path), [Problem((), "not in a git repository: rollback reads the file's history")]
        )
    root = Path(top.stdout.strip())
    rel = path.resolve().relative_to(root.resolve())
    commits = subprocess.run(
        ["git", "-C", str(root), "log", f"-{HISTORY_COMMITS}", "--format=%H", "--", str(rel)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    out: list[str] = []
    for commit in commits:
        shown = subprocess.run(
            ["git", "-C", str(root), "show", f"{commit}:{rel}"], capture_output=True, text=True, timeout=30
        )
        m = _PIN.search(shown.stdout) if shown.returncode == 0 else None
        if m and (not out or out[-1] != m["rev"]):
            out.append(m["rev"])
    return out


def plan_rollback(path: Path) -> Rollback:
    source = display(path)
    text = path.read_text()
    current = _pin(text, source)["rev"]
    canary = _CANARY.search(text)
    if canary:
        # A canary in progress: every replica back on the revision the others never left.
        return Rollback(path=path, current=current, previous=canary["rev"], ends_canary=True)
    served = list(dict.fromkeys(history(path)))
    older = [r for r in served if r != current]
    if not older:
        raise InputError(source, [Problem(KEY, f"{current} is the only revision in this file's history")])
    # The revision served just before: the cache keeps it (the newest three stay).
    return Rollback(path=path, current=current, previous=older[0])


def apply(rollback: Rollback) -> None:
    text = rollback.path.read_text()
    m = _pin(text, display(rollback.path))
    text = text[: m.start("rev")] + rollback.previous + text[m.end("rev") :]
    if rollback.ends_canary:
        text = _CANARY.sub("", text, count=1)
    rollback.path.write_text(text)


def canary_in_progress(path: Path) -> str | None:
    m = _CANARY.search(path.read_text())
    return m["rev"] if m else None


def promote(path: Path) -> None:
    """Every replica on the pinned revision: the canary line goes."""
    path.write_text(_CANARY.sub("", path.read_text(), count=1))

"""Where a site's runs write what is too long for a terminal line: keyrings, and each host's log."""

from __future__ import annotations

import os
from pathlib import Path

from gpufleet.inventory.load import REPO_ROOT


def out_dir(site: str) -> Path:
    """`$GPUFLEET_OUT/<site>`, default `out/<site>` in the repository (git-ignored)."""
    d = Path(os.environ.get("GPUFLEET_OUT", REPO_ROOT / "out")) / site
    d.mkdir(parents=True, exist_ok=True)
    return d


def log_file(site: str, command: str, name: str) -> Path:
    """The full text behind a one-line failure: `out/<site>/logs/<command>-<name>.log`."""
    d = out_dir(site) / "logs"
    d.mkdir(exist_ok=True)
    return d / f"{command}-{name}.log"

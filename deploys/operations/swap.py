"""Swap off, now and at boot: kubelet refuses to start on a node with swap on (its default)."""

from __future__ import annotations

import re
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import FileContents

from deploys.facts.swap import SwapDevices

FSTAB = "/etc/fstab"
# An fstab entry whose type (third field) is swap, not yet commented out.
_SWAP_ENTRY = re.compile(r"^\s*[^#\s]\S*\s+\S+\s+swap\s")
COMMENT_OUT = r"sed -i -E 's/^(\s*[^#[:space:]][^[:space:]]*\s+[^[:space:]]+\s+swap\s.*)$/# \1/' /etc/fstab"


@operation()
def swap_off() -> Generator[str, None, None]:
    if host.get_fact(SwapDevices):
        yield "swapoff -a"
    fstab = host.get_fact(FileContents, path=FSTAB) or []
    if any(_SWAP_ENTRY.match(line) for line in fstab):
        yield COMMENT_OUT

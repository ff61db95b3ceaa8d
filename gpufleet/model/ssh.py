"""An SSH host public key as a node's inventory entry holds it: what a first connection must find."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


def _same_type_inside(value: str) -> str:
    kind, blob = value.split(" ")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise ValueError("the key is not base64") from None
    # The blob starts with its own type as an SSH string: a uint32 length, then the name.
    length = int.from_bytes(raw[:4], "big")
    inside = raw[4 : 4 + length].decode("ascii", "replace")
    if inside != kind:
        raise ValueError(f"the key says {kind} but holds {inside[:40]!r}")
    return value


# `<type> <base64>` as in /etc/ssh/ssh_host_ed25519_key.pub, without the comment.
SshHostKey = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=rf"^({'|'.join(HOST_KEY_TYPES)}) [A-Za-z0-9+/]+={{0,2}}$"),
    AfterValidator(_same_type_inside),
]

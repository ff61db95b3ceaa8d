"""The gateway's tenants: the key issuer's file, checked, written as the two HAProxy maps that the
`gateway-tenants` Secret holds (`tenants.map`: key -> `tenant class`, `limits.map`: key -> requests
per rate window).

The file (YAML, bounded like an inventory):

    tenants:
      - {key: <API key>, name: bank, priority: P0, requests_per_s: 5}

Whoever issues keys may be wrong or hostile: a key or a name that could add a map line, a field,
or a comment is refused (gpufleet.plan.admission's grammars), one line per problem naming the
file and the entry, exit 2, nothing written. API keys are secrets: no error line shows one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationError

from gpufleet.inventory.load import _message, display, read_yaml
from gpufleet.model.errors import InputError, Problem
from gpufleet.model.site import Strict
from gpufleet.plan.admission import (
    API_KEY,
    MAX_TENANT_RPS,
    MAX_TENANTS,
    Priority,
    Tenant,
    TenantName,
    limits_map,
    tenants_map,
)

KEY_RULE = "not an API key: 1 to 128 of A-Za-z0-9._~+/=- (the value is a secret and is not shown)"


def _api_key(key: str) -> str:
    if not API_KEY.fullmatch(key):
        raise ValueError(KEY_RULE)
    return key


class TenantEntry(Strict):
    key: Annotated[str, AfterValidator(_api_key)]
    name: TenantName
    priority: Priority
    requests_per_s: float = Field(gt=0, le=MAX_TENANT_RPS)


class TenantsFile(Strict):
    tenants: list[TenantEntry] = Field(min_length=1, max_length=MAX_TENANTS)


def _problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        secret = len(loc) >= 3 and loc[0] == "tenants" and loc[2] == "key"
        out.append(Problem(loc, KEY_RULE if secret else _message(err)))
    return out


def load_tenants(path: Path) -> dict[str, Tenant]:
    """API key -> tenant, from the key issuer's file; InputError (file, key path) if bad."""
    source = display(path)
    data = read_yaml(path)
    try:
        doc = TenantsFile.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, _problems(exc)) from None
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    keys: dict[str, Tenant] = {}
    for i, entry in enumerate(doc.tenants):
        where = ("tenants", i)
        if not API_KEY.fullmatch(entry.key):
            problems.append(Problem((*where, "key"), KEY_RULE))
        elif entry.key in seen:
            problems.append(Problem((*where, "key"), f"the same key as tenants[{seen[entry.key]}]"))
        else:
            seen[entry.key] = i
        try:
            keys[entry.key] = Tenant(
                name=entry.name, priority=entry.priority, requests_per_s=entry.requests_per_s
            )
        except ValidationError as exc:
            problems += [Problem((*where, *err["loc"]), _message(err)) for err in exc.errors()]
    if problems:
        raise InputError(source, problems)
    return keys


def write_maps(keys: dict[str, Tenant], folder: Path) -> list[Path]:
    """The two map files in `folder`, readable by their owner only (they hold the keys)."""
    maps = {"tenants.map": tenants_map(keys), "limits.map": limits_map(keys)}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in maps.items():
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
        written.append(path)
    return written

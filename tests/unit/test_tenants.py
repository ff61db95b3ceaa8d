"""The key issuer's tenants file -> the gateway's HAProxy maps: what is accepted is exactly one map
entry per key as HAProxy reads it (checked by HAProxy itself), and no tenant or key string can add
an entry, a field or a comment. Bad input is one line per problem, exit 2, nothing written, and no
line shows an API key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.plan.admission import Backend, Tenant, limits_map, plan_admission, tenants_map
from gpufleet.serving.gateway import check_config, write_config

GOOD = {
    "tenants": [
        {"key": "k0-2f9c1d7e4a6b8c0d", "name": "bank", "priority": "P0", "requests_per_s": 5},
        {"key": "dGVzdGtleQ==/x+y~z.", "name": "shop-eu", "priority": "P2", "requests_per_s": 0.5},
    ]
}


def _run(tmp_path: Path, doc: Any) -> tuple[int, str, Path]:
    src = tmp_path / "tenants.yaml"
    src.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    out = tmp_path / "maps"
    result = CliRunner().invoke(app, ["serving", "tenants", str(src), "--out", str(out)])
    return result.exit_code, result.output, out


def map_entries(text: str) -> list[list[str]]:
    """A map file as HAProxy reads it: blank lines and `#` lines skipped, fields split at whitespace."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_maps_hold_one_entry_per_key_and_haproxy_loads_them(tmp_path: Path) -> None:
    code, output, out = _run(tmp_path, GOOD)
    assert code == 0, output
    assert "2 keys (P0 1, P2 1)" in output and "k0-2f9c" not in output
    tenants, limits = (out / "tenants.map"), (out / "limits.map")
    assert tenants.stat().st_mode & 0o777 == 0o600 and limits.stat().st_mode & 0o777 == 0o600
    want = sorted((t["key"], t["name"], t["priority"]) for t in GOOD["tenants"])
    assert sorted(tuple(e) for e in map_entries(tenants.read_text())) == want
    assert sorted(tuple(e) for e in map_entries(limits.read_text())) == sorted(
        [("k0-2f9c1d7e4a6b8c0d", "50"), ("dGVzdGtleQ==/x+y~z.", "5")]
    )
    # HAProxy itself loads the maps the gateway's config names.
    keys = {t["key"]: Tenant(**{k: v for k, v in t.items() if k != "key"}) for t in GOOD["tenants"]}
    backend = Backend(name="primary", model="m", servers=["127.0.0.1:1"], slots=1, rate_rps=1)
    fallback = backend.model_copy(update={"name": "fallback"})
    config = write_config(
        tmp_path / "gw", plan_admission(2, backend, fallback), backend, fallback, keys, 1, 2
    )
    checked = check_config(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr


SECRET = "s3cr3t"
HOSTILE_KEYS = [f"{SECRET} bank P0", f"{SECRET}\nstolen bank P0", f"#{SECRET}", f"{SECRET},k2", f"{SECRET}\t", "",
                f"{SECRET}{{{{7*7}}}}", "x" * 129, f"{SECRET}\x00", f"{SECRET}é"]  # fmt: skip
HOSTILE_NAMES = ["bank P0", "bank\nk2 evil P0", "#bank", "Bank", "a" * 64, "bank:P0", "", "{{7*7}}", "-bank"]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_a_key_that_could_shape_the_map_is_refused_unshown(key: str, tmp_path: Path) -> None:
    doc = {"tenants": [dict(GOOD["tenants"][0], key=key)]}
    code, output, out = _run(tmp_path, doc)
    assert code == 2 and not out.exists()
    (line,) = output.strip().splitlines()
    assert line.endswith(
        "tenants[0].key: not an API key: 1 to 128 of A-Za-z0-9._~+/=- (the value is a secret and is not shown)"
    )
    assert SECRET not in output


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_tenant_name_that_could_shape_the_map_is_refused(name: str, tmp_path: Path) -> None:
    code, output, out = _run(tmp_path, {"tenants": [dict(GOOD["tenants"][0], name=name)]})
    assert code == 2 and not out.exists()
    (line,) = output.strip().splitlines()
    assert "tenants[0].name:" in line


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("priority", "P3", "'P0', 'P1' or 'P2'"),
        ("priority", "P0 P0", "'P0', 'P1' or 'P2'"),
        ("requests_per_s", float("inf"), "finite"),
        ("requests_per_s", float("nan"), "finite"),
        ("requests_per_s", 0, "greater than 0"),
        ("requests_per_s", 10**12, "less than or equal to 100000"),
    ],
)
def test_classes_and_rates_are_bounded(field: str, value: Any, words: str, tmp_path: Path) -> None:
    code, output, _ = _run(tmp_path, {"tenants": [dict(GOOD["tenants"][0], **{field: value})]})
    assert code == 2
    (line,) = output.strip().splitlines()
    assert f"tenants[0].{field}:" in line and words in line


def test_a_key_given_twice_is_refused_without_showing_it(tmp_path: Path) -> None:
    doc = {"tenants": [GOOD["tenants"][0], dict(GOOD["tenants"][1], key=GOOD["tenants"][0]["key"])]}
    code, output, _ = _run(tmp_path, doc)
    assert code == 2 and output.strip().endswith("tenants[1].key: the same key as tenants[0]")
    assert GOOD["tenants"][0]["key"] not in output


def test_the_renderers_refuse_a_key_that_skipped_the_file_check() -> None:
    t = Tenant(name="bank", priority="P0", requests_per_s=1)
    for render in (tenants_map, limits_map):
        with pytest.raises(ValueError, match="one map entry"):
            render({"k evil P0": t})

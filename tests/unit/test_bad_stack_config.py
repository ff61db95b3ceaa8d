"""Bad stack configuration: exit 2 and one line naming stacks/Pulumi.<stack>.yaml and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from tests.conftest import REPO

GOOD = (REPO / "stacks" / "Pulumi.burst-prod.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (GOOD.replace("gpufleet:site: dc1", "gpufleet:site: dc9"), "config.gpufleet:site", "no inventory"),
        (
            GOOD.replace("gpufleet:layer: burst", "gpufleet:layer: cloud"),
            "config.gpufleet:layer",
            "'onprem' or 'burst'",
        ),
        (
            GOOD.replace("gpufleet:burstNodes: 0", "gpufleet:burstNodes: 12"),
            "config.gpufleet:burstNodes",
            "above the site's burst.max_nodes 8",
        ),
        (
            GOOD.replace("gpufleet:burstNodes: 0", "gpufleet:burstNodes: -1"),
            "config.gpufleet:burstNodes",
            "greater than or equal to 0",
        ),
        (
            GOOD.replace("gpufleet:burstNodes", "gpufleet:burstNode"),
            "config.gpufleet:burstNode",
            "unknown key",
        ),
        (
            "\n".join(line for line in GOOD.splitlines() if "onpremStack" not in line),
            "config.gpufleet:onpremStack",
            "must name its on-prem stack",
        ),
        (GOOD.replace("gpufleet:owner: platform", "owner: platform"), "config", "needs a namespace"),
        (GOOD + "\nextra: 1\n", "extra", "unknown key"),
    ],
    ids=[
        "unknown site",
        "bad layer",
        "above max",
        "negative",
        "typo",
        "no onprem stack",
        "no namespace",
        "extra",
    ],
)
def test_bad_stack(text: str, key: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text())
    stack = tmp_path / "stacks" / "Pulumi.broken.yaml"
    stack.write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUFLEET_INVENTORIES", str(REPO / "inventories"))
    result = CliRunner().invoke(app, ["stacks"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"stacks/Pulumi.broken.yaml: {key}"), line
    assert words in line
    assert stack.read_text() == text, "nothing written"


def test_all_shipped_stacks_are_good() -> None:
    result = CliRunner().invoke(app, ["stacks", "--json"])
    assert result.exit_code == 0, result.stderr
    assert "burst-prod" in result.stdout

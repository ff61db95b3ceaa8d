"""Stack files against Pulumi.yaml, as the engine checks them before the program runs.

Pulumi mocks never read project config: a stack the engine refuses would pass every graph test.
The rules are pulumi/pulumi's `sdk/go/common/workspace` (mergeConfig, validateStackConfigValue).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.inventory.load import read_yaml
from gpufleet.inventory.project import Project, load_project, project_problems
from gpufleet.inventory.stacks import qualified_stack, stack_names
from tests.conftest import REPO

PROJECT = REPO / "Pulumi.yaml"


@pytest.mark.parametrize("name", stack_names())
def test_every_stack_file_is_accepted_by_the_project(name: str) -> None:
    config = read_yaml(REPO / "stacks" / f"Pulumi.{name}.yaml")["config"]
    assert project_problems(load_project(PROJECT), name, config) == []


def test_every_declared_key_is_typed_and_described() -> None:
    project = load_project(PROJECT)
    assert project.name == "gpufleet" and project.stack_config_dir == "stacks"
    for key, decl in project.config.items():
        assert decl.type is not None and decl.description, key


def project_with(change: dict[str, object]) -> Project:
    data = yaml.safe_load(PROJECT.read_text())
    for key, decl in change.items():
        data["config"][key] = decl
    return Project.model_validate(data)


@pytest.mark.parametrize(
    ("project_change", "stack_change", "key", "message"),
    [
        # The fault the mocks hid: a key without a default that the on-prem stacks never set.
        (
            {"onpremStack": {"type": "string"}},
            {},
            "gpufleet:onpremStack",
            "Stack 'dc1-prod' is missing configuration value 'onpremStack'",
        ),
        ({}, {"gpufleet:site": None}, "gpufleet:site", "is missing configuration value 'site'"),
        ({}, {"gpufleet:burstNodes": "two"}, "gpufleet:burstNodes", "must be of type 'integer'"),
        ({}, {"gpufleet:burstNodes": "1.5"}, "gpufleet:burstNodes", "must be of type 'integer'"),
        ({}, {"gpufleet:owner": {"team": "x"}}, "gpufleet:owner", "must be of type 'string'"),
        (
            {"owner": {"type": "string", "secret": True}},
            {},
            "gpufleet:owner",
            "must be encrypted as it's secret",
        ),
        ({}, {"owner": "platform"}, "owner", "of the form `<namespace>:<name>`"),
    ],
    ids=["required-no-default", "missing", "not-int", "float", "object-for-string", "secret", "namespace"],
)
def test_what_the_engine_refuses_is_refused(
    project_change: dict[str, object], stack_change: dict[str, object], key: str, message: str
) -> None:
    config = dict(read_yaml(REPO / "stacks" / "Pulumi.dc1-prod.yaml")["config"])
    for k, v in stack_change.items():
        if v is None:
            config.pop(k)
        else:
            config[k] = v
    (problem,) = project_problems(project_with(project_change), "dc1-prod", config)
    assert problem.path == ("config", key)
    assert message in problem.message


@pytest.mark.parametrize("value", [0, "3", "+3", "-0"])
def test_integers_as_go_parses_them(value: object) -> None:
    config = {**read_yaml(REPO / "stacks" / "Pulumi.lab.yaml")["config"], "gpufleet:burstNodes": value}
    assert project_problems(load_project(PROJECT), "lab", config) == []


def test_a_secure_value_satisfies_a_secret_key() -> None:
    config = {
        **read_yaml(REPO / "stacks" / "Pulumi.lab.yaml")["config"],
        "gpufleet:owner": {"secure": "AAAB"},
    }
    project = project_with({"owner": {"type": "string", "secret": True}})
    assert project_problems(project, "lab", config) == []


def test_a_default_of_the_wrong_type_is_a_bad_project() -> None:
    with pytest.raises(ValueError, match="not of type 'integer'"):
        project_with({"burstNodes": {"type": "integer", "default": "many"}})


def test_the_stack_reference_is_qualified_in_the_running_organization() -> None:
    assert qualified_stack("dc1-prod", "acme", "gpufleet") == "acme/gpufleet/dc1-prod"
    assert qualified_stack("other/gpufleet/dc1-prod", "acme", "gpufleet") == "other/gpufleet/dc1-prod"
    burst = read_yaml(REPO / "stacks" / "Pulumi.burst-prod.yaml")["config"]
    assert "/" not in burst["gpufleet:onpremStack"], "the organization is not hard-coded"


@pytest.mark.parametrize("command", [["stacks"], ["plan", "dc1-prod", "--out", "plan-out"]])
def test_stacks_and_plan_give_the_same_one_line_and_exit_2(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stacks").mkdir()
    project = yaml.safe_load(PROJECT.read_text())
    del project["config"]["onpremStack"]["default"]  # the project as it was before the fix
    (tmp_path / "Pulumi.yaml").write_text(yaml.safe_dump(project))
    stack = tmp_path / "stacks" / "Pulumi.dc1-prod.yaml"
    stack.write_text((REPO / "stacks" / "Pulumi.dc1-prod.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPUFLEET_INVENTORIES", str(REPO / "inventories"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "stacks/Pulumi.dc1-prod.yaml: config.gpufleet:onpremStack: Stack 'dc1-prod' is missing configuration "
        "value 'onpremStack' (Pulumi.yaml declares it without a default)"
    ]
    assert not (tmp_path / "plan-out").exists(), "nothing written"

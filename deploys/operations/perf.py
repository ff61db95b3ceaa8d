"""The perf probe's venv: created once, torch installed at the BOM's build from the site's index.

Argument lists, each quoted word by word: nothing from the inventory reaches a shell unquoted.
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.api.command import QuoteString

from deploys.facts.perf import VenvPackages
from gpufleet.plan.perf import PerfEnv


def env_commands(env: PerfEnv, installed: dict[str, str] | None) -> list[list[str]]:
    """What brings the venv to the plan; nothing where it already has the planned torch."""
    commands = [["python3", "-m", "venv", env.path]] if installed is None else []
    if (installed or {}).get("torch") != env.torch:
        commands.append(
            [
                env.python,
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--index-url",
                env.index_url,
                env.requirement,
            ]
        )
    return commands


@operation()
def probe_env(env: PerfEnv) -> Generator[StringCommand, None, None]:
    for argv in env_commands(env, host.get_fact(VenvPackages, python=env.python)):
        yield StringCommand(*(QuoteString(arg) for arg in argv))

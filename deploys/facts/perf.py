"""What the perf probe's venv holds: nothing (no venv), or its packages as pip reports them."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

NO_VENV = "no venv"


class VenvPackages(FactBase[dict[str, str] | None]):
    """`pip list --format=freeze` of the venv whose interpreter is `python`; None where it has none."""

    def command(self, python: str) -> str:
        py = shlex.quote(python)
        return (
            f"if [ -x {py} ]; then {py} -m pip list --format=freeze --disable-pip-version-check; "
            f"else echo {shlex.quote(NO_VENV)}; fi"
        )

    def process(self, output: list[str]) -> dict[str, str] | None:
        if [line.strip() for line in output] == [NO_VENV]:
            return None
        return dict(line.strip().split("==", 1) for line in output if "==" in line)

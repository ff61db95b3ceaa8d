"""Installed Debian packages with versions, and the ones held against upgrades."""

from __future__ import annotations

from pyinfra.api import FactBase


class InstalledVersions(FactBase[dict[str, str]]):
    """`dpkg -l`: installed package -> version, held (`hi`) or not (`ii`)."""

    def command(self) -> str:
        return "dpkg -l"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in output:
            fields = line.split()
            # Other states (rc: removed with its configuration left, un: unknown) are not installed.
            if len(fields) >= 3 and fields[0] in ("ii", "hi"):
                out[fields[1].split(":", 1)[0]] = fields[2]
        return out


class HeldPackages(FactBase[set[str]]):
    """`apt-mark showhold`."""

    def command(self) -> str:
        return "apt-mark showhold"

    @staticmethod
    def default() -> set[str]:
        return set()

    def process(self, output: list[str]) -> set[str]:
        return {line.strip() for line in output if line.strip()}


class DpkgBroken(FactBase[bool]):
    """`dpkg --audit`: packages left half-installed or unconfigured, or dpkg itself cut off."""

    def command(self) -> str:
        # A cut-off dpkg refuses even to audit and says so on stderr: that counts as broken too.
        return "dpkg --audit 2>&1 || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return any(line.strip() for line in output)

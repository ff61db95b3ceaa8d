"""Where a lab keeps its state (removed by `lab down`) and its caches (kept, they only save time),
and the names it gives what it creates in the kernel (bridge, namespaces, veths, cgroups).

The defaults are the user's lab. Every one can be moved by an environment variable, so a second lab
(the test suite's) shares nothing with it: `GPUFLEET_LAB_NAME` renames the kernel objects,
`GPUFLEET_LAB_STATE`, `_CACHE`, `_LOCK` and `_SSH_CONFIG` move the files. Its addresses come from
the inventory it is built from (`GPUFLEET_INVENTORIES`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "gf"
# A short name: it prefixes network interface names, which the kernel stops at 15 characters.
NAME_RE = re.compile(r"[a-z][a-z0-9]{1,3}")


@dataclass(frozen=True)
class LabPaths:
    state: Path
    cache: Path
    # Debian's ssh_config includes ssh_config.d/*.conf: every OpenSSH user (Ansible, testinfra, a
    # person) reaches the lab hosts with their key and known hosts, with nothing to configure.
    system_ssh_config: Path
    # One lab per name: `up` and `down` hold this lock, so two of them never interleave.
    lock: Path
    name: str = DEFAULT_NAME

    @classmethod
    def default(cls) -> LabPaths:
        name = os.environ.get("GPUFLEET_LAB_NAME", DEFAULT_NAME)
        if not NAME_RE.fullmatch(name):
            from gpufleet.model.errors import InputError, Problem

            raise InputError(
                "GPUFLEET_LAB_NAME", [Problem((), f"{name!r}: 2-4 characters, a-z then a-z or 0-9")]
            )
        return cls(
            state=Path(os.environ.get("GPUFLEET_LAB_STATE", "/var/lib/gpufleet/lab")),
            cache=Path(os.environ.get("GPUFLEET_LAB_CACHE", "/var/cache/gpufleet/lab")),
            lock=Path(os.environ.get("GPUFLEET_LAB_LOCK", "/run/gpufleet-lab.lock")),
            system_ssh_config=Path(
                os.environ.get("GPUFLEET_LAB_SSH_CONFIG", "/etc/ssh/ssh_config.d/gpufleet-lab.conf")
            ),
            name=name,
        )

    @property
    def bridge(self) -> str:
        return f"{self.name}br0"

    @property
    def cgroup(self) -> str:
        """The folder under each cgroup hierarchy that holds this lab's hosts."""
        return "gpufleet-lab" if self.name == DEFAULT_NAME else f"gpufleet-lab-{self.name}"

    @property
    def base_tarball(self) -> Path:
        return self.cache / "base-bookworm.tar"

    @property
    def debs(self) -> Path:
        return self.cache / "debs"

    @property
    def mirror(self) -> Path:
        return self.state / "mirror"

    @property
    def base(self) -> Path:
        return self.state / "base"

    @property
    def ssh(self) -> Path:
        return self.state / "ssh"

    @property
    def ssh_config(self) -> Path:
        return self.ssh / "config"

    @property
    def ssh_key(self) -> Path:
        return self.ssh / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def gnupg(self) -> Path:
        return self.state / "gnupg"

    @property
    def mirror_key(self) -> Path:
        return self.state / "gpufleet-mirror.gpg"

    def host(self, hostname: str) -> Path:
        return self.state / "hosts" / hostname

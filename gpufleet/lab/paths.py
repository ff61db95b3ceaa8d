"""Where the lab keeps its state (removed by `lab down`) and its caches (kept, they only save time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabPaths:
    state: Path
    cache: Path
    # Debian's ssh_config includes ssh_config.d/*.conf: every OpenSSH user (Ansible, testinfra, a
    # person) reaches the lab hosts with their key and known hosts, with nothing to configure.
    system_ssh_config: Path
    # One lab per machine: `up` and `down` hold this lock, so two of them never interleave.
    lock: Path

    @classmethod
    def default(cls) -> LabPaths:
        return cls(
            state=Path(os.environ.get("GPUFLEET_LAB_STATE", "/var/lib/gpufleet/lab")),
            cache=Path(os.environ.get("GPUFLEET_LAB_CACHE", "/var/cache/gpufleet/lab")),
            lock=Path(os.environ.get("GPUFLEET_LAB_LOCK", "/run/gpufleet-lab.lock")),
            system_ssh_config=Path(
                os.environ.get("GPUFLEET_LAB_SSH_CONFIG", "/etc/ssh/ssh_config.d/gpufleet-lab.conf")
            ),
        )

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

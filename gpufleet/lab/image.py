"""The lab's base root filesystem and its air-gapped apt mirror.

Both are built from Debian's own packages: the base by mmdebstrap (cached as a tarball, since it
takes a minute and never changes between runs), the mirror by resolving what the lab's node plans
install against the base's dpkg status in a private apt state, downloading only that, indexing it
and signing its Release, as a site would build the mirror it carries into an air gap.

mmdebstrap rather than debootstrap: it downloads with apt in parallel and installs in a few dpkg
runs, where debootstrap fetches package after package and runs dpkg for each; on the project's
2-CPU VM it builds the same base in half the CPU time (bench/results/lab_rehearse.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from gpufleet.lab.paths import LabPaths

SUITE = "bookworm"
UPSTREAM = os.environ.get("GPUFLEET_LAB_UPSTREAM", "http://deb.debian.org/debian")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps", "python3"]
# The suite with its updates and security fixes, for the base and the mirror alike: a host
# upgrades none of its base packages when it installs its plan.
SOURCES = [
    f"deb [signed-by={DEBIAN_KEYRING}] {UPSTREAM} {SUITE} main",
    f"deb [signed-by={DEBIAN_KEYRING}] {UPSTREAM} {SUITE}-updates main",
    f"deb [signed-by={DEBIAN_KEYRING}] {UPSTREAM}-security {SUITE}-security main",
]
# How container images install packages (Debian's own minimal images do both): a lab host's disk is
# scratch, so dpkg skips its per-file fsync and leaves out documentation, manual pages and
# translations, which no lab check reads. The base is built this way, and every host keeps it.
# What a storage host's cold provision costs is its plan: ~145 packages (Ceph mon, mgr, MDS and
# OSD, 56 of them Python modules byte-compiled at configure) against the control plane's 3.
DPKG_LAB = """force-unsafe-io
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""
# A merged /usr set up by mmdebstrap's own hook (Debian's layout since bookworm) rather than by
# the usrmerge package, which would pull Perl into every host.
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
# What the tools that act on hosts need beyond the plan: Ansible's apt module runs on python3-apt.
TOOL_PACKAGES = ["python3-apt"]


def run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stderr, which says what went wrong."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


class LabError(RuntimeError):
    """Something on this machine kept the lab from coming up or going down."""


def base_tarball(paths: LabPaths) -> Path:
    """mmdebstrap the base once; later lab ups unpack the tarball (under a second)."""
    if paths.base_tarball.exists():
        return paths.base_tarball
    paths.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.cache) as tmp:
        root = Path(tmp) / "root"
        hooks = [f"--hook-dir={MERGED_USR_HOOK}"] if MERGED_USR_HOOK.is_dir() else []
        dpkg = [f"--dpkgopt={line}" for line in DPKG_LAB.splitlines()]
        run(
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=minbase",
                *hooks,
                *dpkg,
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(root),
                *SOURCES,
            ]
        )
        # Every host gets its own host keys and machine id at lab up; none may be shared.
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (root / "etc/machine-id").write_text("")
        # mmdebstrap's record of its options: the lab's own dpkg settings are written at lab up.
        (root / "etc/dpkg/dpkg.cfg.d/99mmdebstrap").unlink(missing_ok=True)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        for f in (root / "var/cache/apt/archives").glob("*.deb"):
            f.unlink()
        partial = paths.base_tarball.with_suffix(".partial")
        run(["tar", "-cf", str(partial), "--numeric-owner", "-C", str(root), "."])
        partial.rename(paths.base_tarball)
    return paths.base_tarball


def unpack_base(paths: LabPaths) -> Path:
    if paths.base.exists():
        shutil.rmtree(paths.base)
    paths.base.mkdir(parents=True)
    # tar keeps device nodes, owners and xattrs exactly; Python's tarfile filter would drop some.
    run(["tar", "-xf", str(base_tarball(paths)), "-C", str(paths.base), "--numeric-owner"])
    return paths.base


def _apt_options(state: Path, status: Path, debs: Path) -> list[str]:
    return [
        f"-oDir::State={state}",
        f"-oDir::State::status={status}",
        f"-oDir::Cache={state / 'cache'}",
        f"-oDir::Cache::archives={debs}",
        f"-oDir::Etc::SourceList={state / 'sources.list'}",
        f"-oDir::Etc::SourceParts={state / 'sources.list.d'}",
        f"-oDir::Etc::Preferences={state / 'preferences'}",
        f"-oDir::Etc::PreferencesParts={state / 'preferences.d'}",
        "-oAPT::Install-Recommends=false",
        "-oDebug::NoLocking=true",
    ]


def download(paths: LabPaths, base: Path, packages: Iterable[str]) -> list[Path]:
    """Resolve `packages` against the base's dpkg status and download what it lacks (cached)."""
    paths.debs.mkdir(parents=True, exist_ok=True)
    (paths.debs / "partial").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        for d in ("lists/partial", "cache", "sources.list.d", "preferences.d"):
            (state / d).mkdir(parents=True)
        (state / "sources.list").write_text("\n".join(SOURCES) + "\n")
        opts = _apt_options(state, base / "var/lib/dpkg/status", paths.debs)
        run(["apt-get", "-q", *opts, "update"])
        names = sorted(set(packages))
        run(["apt-get", "-q", "-y", *opts, "--download-only", "install", *names])
        plan = run(["apt-get", "-q", "-s", *opts, "install", *names]).stdout
    wanted = {_deb_name(line) for line in plan.splitlines() if line.startswith("Inst ")}
    missing = sorted(w for w in wanted if not (paths.debs / w).exists())
    if missing:
        raise LabError(f"downloaded packages missing from {paths.debs}: {', '.join(missing[:5])}")
    return sorted(paths.debs / w for w in wanted)


_INST = re.compile(r"^Inst (?P<name>\S+) (?:\[[^\]]*\] )?\((?P<version>\S+) .*\[(?P<arch>[\w-]+)\]\)")


def _deb_name(inst_line: str) -> str:
    """`Inst libssl3 [3.0.1] (3.0.2 Debian-Security:12/stable-security [amd64])` -> archive file name."""
    m = _INST.match(inst_line)
    if m is None:
        raise LabError(f"unexpected apt-get simulation line: {inst_line}")
    return f"{m['name']}_{m['version'].replace(':', '%3a')}_{m['arch']}.deb"


def signing_key(paths: LabPaths) -> None:
    """A fresh key per lab: the mirror is signed as a real air-gapped mirror would be."""
    paths.gnupg.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(paths.gnupg)}
    run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "gpufleet lab mirror",
            "ed25519",
            "sign",
            "1d",
        ],
        env=env,
    )
    run(
        ["gpg", "--batch", "--yes", "--output", str(paths.mirror_key), "--export", "gpufleet lab mirror"],
        env=env,
    )


def build_mirror(paths: LabPaths, debs: list[Path]) -> None:
    """A dists/ + pool/ repository (suite bookworm, component main), signed InRelease."""
    mirror = paths.mirror
    if mirror.exists():
        shutil.rmtree(mirror)
    pool = mirror / "pool/main"
    pool.mkdir(parents=True)
    for deb in debs:
        os.link(deb, pool / deb.name)
    binary = mirror / f"dists/{SUITE}/main/binary-amd64"
    binary.mkdir(parents=True)
    packages = run(["apt-ftparchive", "packages", "pool"], cwd=mirror).stdout
    (binary / "Packages").write_text(packages)
    run(["gzip", "-kf", str(binary / "Packages")])
    release = run(
        [
            "apt-ftparchive",
            f"-oAPT::FTPArchive::Release::Suite={SUITE}",
            f"-oAPT::FTPArchive::Release::Codename={SUITE}",
            "-oAPT::FTPArchive::Release::Components=main",
            "-oAPT::FTPArchive::Release::Architectures=amd64",
            "-oAPT::FTPArchive::Release::Origin=gpufleet",
            "release",
            f"dists/{SUITE}",
        ],
        cwd=mirror,
    ).stdout
    (mirror / f"dists/{SUITE}/Release").write_text(release)
    env = {**os.environ, "GNUPGHOME": str(paths.gnupg)}
    run(
        [
            "gpg",
            "--batch",
            "--yes",
            "--local-user",
            "gpufleet lab mirror",
            "--clearsign",
            "-o",
            str(mirror / f"dists/{SUITE}/InRelease"),
            str(mirror / f"dists/{SUITE}/Release"),
        ],
        env=env,
    )

"""String types named by where the string goes: each allows what its destination allows, nothing more.

An inventory or stack file is written by whoever can commit to the repository, and what it says runs
as root on every node. So no free-form string reaches a template, a command, a path, an apt source,
a Kubernetes object or an AWS tag: each field has the grammar of its destination (Kubernetes label
and taint syntax, Debian suite names, normalised device paths under /dev, mountpoints outside the
system's own directories, AWS tag characters) and a length bound. None of them admits `{{`, `{%`,
quotes, whitespace or shell metacharacters, so none can be evaluated by Jinja, split into extra
arguments, or break out of the YAML or deb822 line it is written into.
"""

from __future__ import annotations

import posixpath
import re
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, StringConstraints


def _written_as_text(value: object) -> object:
    """An address is written as text: pydantic would read `true` as 0.0.0.1 and 167772161 as 10.0.0.1."""
    if isinstance(value, bool | int | float):
        raise ValueError("write an address as text, e.g. 10.0.0.1 or 10.0.0.0/24")
    return value


Address = Annotated[IPv4Address, BeforeValidator(_written_as_text)]
Cidr = Annotated[IPv4Network, BeforeValidator(_written_as_text)]

# Kubernetes' own grammar (k8s.io/apimachinery/pkg/util/validation): a qualified name is an optional
# DNS-1123 subdomain prefix (<= 253) and a name part (<= 63); a label value is <= 63 of the name's
# characters, or empty. Taint values use the label value grammar (ValidateTaint).
_DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
_NAME = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = re.compile(rf"({_NAME})?")


def _prefix_length(key: str) -> str:
    prefix, _, _ = key.rpartition("/")
    if len(prefix) > 253:
        raise ValueError("the prefix of a Kubernetes key is at most 253 characters")
    return key


_LABEL_KEY = rf"^({_DNS_SUBDOMAIN}/)?{_NAME}$"
_LABEL_VALUE = rf"^({_NAME})?$"
_HOSTNAME = rf"^{_DNS_LABEL}$"
_DNS_NAME = rf"^{_DNS_SUBDOMAIN}$"
LabelKey = Annotated[
    str, StringConstraints(pattern=_LABEL_KEY, max_length=317), AfterValidator(_prefix_length)
]
LabelValue = Annotated[str, StringConstraints(pattern=_LABEL_VALUE, max_length=63)]
TaintValue = LabelValue

Hostname = Annotated[str, StringConstraints(pattern=_HOSTNAME, max_length=63)]
DnsName = Annotated[str, StringConstraints(pattern=_DNS_NAME, max_length=253)]


def _port(endpoint: str) -> str:
    if not 1 <= int(endpoint.rpartition(":")[2]) <= 65535:
        raise ValueError("the port must be 1..65535")
    return endpoint


# host:port where the host is a DNS name or an IPv4 address (both fit the subdomain grammar's
# characters; an address is checked as a name, which is what kubeadm does with it too).
_ENDPOINT = rf"^{_DNS_SUBDOMAIN}:[0-9]{{1,5}}$"
Endpoint = Annotated[str, StringConstraints(pattern=_ENDPOINT, max_length=259), AfterValidator(_port)]

# A Debian/Ubuntu suite or codename (bookworm, noble-updates, stable), optionally with one
# sub-path as old security suites had; apt writes it into deb822 `Suites:` unquoted.
_SUITE = r"^[a-z0-9][a-z0-9.+_-]{0,63}(/[a-z0-9][a-z0-9.+_-]{0,63})?$"
DebianSuite = Annotated[str, StringConstraints(pattern=_SUITE)]

# A package source: the characters of a URL apt reads, without quotes, spaces, braces or `$`.
_URL = r"^(https?|file)://[A-Za-z0-9._~:/@%+=,-]+$"
Url = Annotated[str, StringConstraints(pattern=_URL, max_length=512)]

# pip's index: https, and no user:password@ (pip reads an index's credentials from netrc or a
# keyring); the path has a URL's unreserved characters only: no brackets, braces, quotes or `$`.
_INDEX_URL = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%+=,-]*)?$"
IndexUrl = Annotated[str, StringConstraints(pattern=_INDEX_URL, max_length=512)]

_VERSION = r"^[0-9][0-9A-Za-z.+~:-]*$"
Version = Annotated[str, StringConstraints(pattern=_VERSION, max_length=64)]

_PATH_CHARS = re.compile(r"/[A-Za-z0-9._:+@/-]+")


def _normalised_absolute(path: str) -> str:
    if not _PATH_CHARS.fullmatch(path):
        raise ValueError("an absolute path of letters, digits and ._:+@- only")
    if posixpath.normpath(path) != path or "/./" in f"{path}/" or "/../" in f"{path}/":
        raise ValueError(f"not a normalised path (normalised: {posixpath.normpath(path)})")
    return path


AbsolutePath = Annotated[str, StringConstraints(max_length=255), AfterValidator(_normalised_absolute)]

# What a disk may not be even though it lives under /dev: memory, ports, terminals, pseudo files.
_NOT_DISKS = re.compile(
    r"/dev/(mem|kmem|port|null|zero|full|random|urandom|console|tty.*|ptmx|stdin|stdout|stderr|"
    r"(shm|pts|mqueue|hugepages|fd|cpu|net|snd|input)(/.*)?)"
)


def disk_path(path: str) -> str:
    if not path.startswith("/dev/"):
        raise ValueError("a disk is a block device under /dev")
    if _NOT_DISKS.fullmatch(path):
        raise ValueError(f"{path} is not a disk")
    return path


DiskPath = Annotated[AbsolutePath, AfterValidator(disk_path)]

# Directories the system lives in: a filesystem mounted on (or in) one of them replaces the system.
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
               "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib/dpkg", "/var/lib/apt",
               "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/etcd", "/var/lib/ceph")  # fmt: skip
# ... and directories that may hold something, but must not be covered whole.
SYSTEM_PARENTS = ("/", "/var", "/var/lib", "/home", "/tmp", "/opt", "/srv", "/mnt", "/media", "/scratch")


def _mountpoint(path: str) -> str:
    for d in SYSTEM_DIRS:
        if path == d or path.startswith(f"{d}/"):
            raise ValueError(f"{path} is a system directory (or inside {d}): mount data elsewhere")
    if path in SYSTEM_PARENTS:
        raise ValueError(f"{path} holds the system or other mounts: mount data in a folder under it")
    return path


Mountpoint = Annotated[AbsolutePath, AfterValidator(_mountpoint)]

# AWS tag values: AWS allows letters, digits, spaces and _.:/=+-@ (up to 256); we take the ASCII
# part, so no NUL, bidi marks, newlines, `$(` or quotes reach a tag or a log line.
_AWS_TAG = r"^[A-Za-z0-9_.:/=+@-]([A-Za-z0-9 _.:/=+@-]*[A-Za-z0-9_.:/=+@-])?$"
AwsTagValue = Annotated[str, StringConstraints(pattern=_AWS_TAG, max_length=256)]

# What an error line says instead of the regular expression a value failed.
PATTERN_NAMES = {
    _LABEL_KEY: "not a Kubernetes key ([prefix/]name: name <= 63 of A-Za-z0-9._-, alphanumeric at both ends)",
    _LABEL_VALUE: "not a Kubernetes label or taint value (<= 63 of A-Za-z0-9._-, alphanumeric at both ends)",
    _HOSTNAME: "not a host name (<= 63 of a-z0-9-, alphanumeric at both ends)",
    _DNS_NAME: "not a DNS name (dot-separated host names)",
    _ENDPOINT: "not host:port (a DNS name or IPv4 address, and a port)",
    _SUITE: "not a Debian suite name (bookworm, noble-updates)",
    _URL: "not a package source URL (http, https or file; no spaces, quotes, braces or $)",
    _INDEX_URL: "not a Python index URL (https, no user:password@; no spaces, quotes, brackets, braces or $)",
    _VERSION: "not a package version",
    _AWS_TAG: "not an AWS tag value (letters, digits, spaces inside, and _.:/=+@-)",
}

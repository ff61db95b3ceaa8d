"""A first connection to a real site's node: accepted only with the host key its inventory entry holds.

A real SSH server (paramiko's server side, the protocol pyinfra's client speaks) listens on
127.0.0.1 with a key from ssh-keygen; pyinfra's own SSH client and the OpenSSH client, with exactly
the options gpufleet gives them, connect to it as if it were the node. The node's address is not
routable here, so the clients reach the server through a socket (pyinfra) or a HostKeyAlias
(OpenSSH) while looking the key up under the node's own name, as on the site.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from pyinfra.connectors.sshuserclient.client import SSHClient

from gpufleet.inventory.load import inventory_from_data
from gpufleet.provision import connection
from gpufleet.serving.tritonserver import free_port

pytestmark = pytest.mark.integration


def _keygen(path: Path, kind: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True, timeout=30
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


class _Node(paramiko.ServerInterface):
    """Lets anyone in and answers every command with exit 0: the handshake is what is under test."""

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "none,password"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
        # Answered after the request's reply, as sshd does once the command has run.
        threading.Timer(0.05, self._exit, (channel,)).start()
        return True

    @staticmethod
    def _exit(channel: Any) -> None:
        channel.send_exit_status(0)
        channel.close()


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """(port, host public key) of an SSH server on 127.0.0.1, stopped afterwards."""
    public = _keygen(tmp_path / "host", "ed25519")
    host_key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "host"))
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stop = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            t = paramiko.Transport(sock)
            t.add_server_key(host_key)
            transports.append(t)
            try:
                t.start_server(server=_Node())
            except (paramiko.SSHException, EOFError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, public
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for t in transports:
            t.close()


def _site(dc1: dict[str, Any], key: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(connection, "REPO_ROOT", tmp_path / "repo")
    if key is not None:
        dc1["nodes"][0]["ssh_host_key"] = key
    return inventory_from_data(dc1, "inventories/dc1/nodes.yaml")


def _pyinfra_connect(inv: Any, port: int) -> None:
    data = connection.pyinfra_ssh_data(inv)
    client = SSHClient()
    try:
        client.connect(
            str(inv.nodes[0].management_ip),
            sock=socket.create_connection(("127.0.0.1", port), timeout=5),
            username="root",
            password="-",  # paramiko's client never offers "none"
            timeout=5,
            allow_agent=False,
            look_for_keys=False,
            _pyinfra_ssh_known_hosts_file=data["ssh_known_hosts_file"],
            _pyinfra_ssh_strict_host_key_checking=data["ssh_strict_host_key_checking"],
        )
    finally:
        client.close()


def _openssh(inv: Any, port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    args = shlex.split(connection.ansible_ssh_vars(inv)["ansible_ssh_common_args"])
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",  # no operator or system config: only what gpufleet passes
            *args,
            "-o",
            "BatchMode=yes",
            "-o",
            f"HostKeyAlias={inv.nodes[0].management_ip}",
            "-o",
            f"GlobalKnownHostsFile={tmp_path / 'none'}",
            "-p",
            str(port),
            "root@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_key_from_the_inventory_lets_both_clients_in(
    node_server: tuple[int, str], dc1: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, key = node_server
    inv = _site(dc1, key, tmp_path, monkeypatch)
    _pyinfra_connect(inv, port)
    proc = _openssh(inv, port, tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_node_without_a_key_in_the_inventory_is_refused(
    node_server: tuple[int, str], dc1: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = node_server
    inv = _site(dc1, None, tmp_path, monkeypatch)
    with pytest.raises(paramiko.SSHException, match=r"No host key for 10\.40\.0\.11 found"):
        _pyinfra_connect(inv, port)
    proc = _openssh(inv, port, tmp_path)
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr
    assert connection.site_known_hosts(inv).read_text() == "", "nothing was learnt on the way"


def test_another_key_than_the_inventory_says_is_refused(
    node_server: tuple[int, str], dc1: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = node_server
    inv = _site(dc1, _keygen(tmp_path / "impostor", "ed25519"), tmp_path, monkeypatch)
    with pytest.raises(paramiko.BadHostKeyException):
        _pyinfra_connect(inv, port)
    proc = _openssh(inv, port, tmp_path)
    assert proc.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in proc.stderr

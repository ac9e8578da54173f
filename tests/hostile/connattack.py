"""Connection-level attacks and what they need: sources, raw sockets, and a server process's figures.

Every helper polls an explicit condition with a deadline; none sleeps to
synchronise. Sockets are returned to the test, which closes them (``closing``).
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import ssl
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import TLSMaterial

#: the second source address of the hostile tests (a peer that is not 127.0.0.1)
OTHER = "127.0.0.2"
#: a third source, for attacks from more than one address
THIRD = "127.0.0.3"


class SourceTransport(xmlrpc.client.SafeTransport):
    """An agent's HTTPS transport that connects from a given source address."""

    def __init__(self, source: str, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.source = source

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        self._connection = host, http.client.HTTPSConnection(
            chost, None, context=self.context, source_address=(self.source, 0), **(x509 or {}))
        return self._connection[1]


class FromSource:
    """A server as ``attack.agent_run`` sees it, reached from another source address."""

    def __init__(self, port: int, tls: TLSMaterial, source: str = OTHER) -> None:
        self.port = port
        self.tls = tls
        self.source = source

    def proxy(self, user: str, password: str) -> xmlrpc.client.ServerProxy:
        """An agent's client (one connection per call) bound to ``source``."""
        return xmlrpc.client.ServerProxy(
            f"https://{user}:{password}@127.0.0.1:{self.port}/RPC2", allow_none=True,
            transport=SourceTransport(self.source, self.tls.client_context()))


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection from ``source`` that sends nothing."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


def flood(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` idle connections from ``source``.

    One the server resets before connect() returns (it may, on loopback)
    is in the list already closed, which ``closed_by_server`` counts.
    """
    sockets = []
    for _ in range(count):
        try:
            sockets.append(connect(port, source))
        except ConnectionResetError:
            refused = socket.socket()
            refused.close()
            sockets.append(refused)
    return sockets


@contextmanager
def closing(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """Close every socket in the list (as it is when the block ends)."""
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed (or reset) a connection; never blocks."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    try:
        return socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
    except (ConnectionError, OSError):
        return True


def basic_auth(user: str, password: str) -> str:
    """An HTTP basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_head(length: int, auth: str | None = None) -> bytes:
    """The request line and headers of an XML-RPC POST announcing ``length`` bytes of body."""
    lines = ["POST /RPC2 HTTP/1.0", "Host: 127.0.0.1", "Content-Type: text/xml",
             f"Content-Length: {length}"]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def nested_arrays(depth: int, leaf: str = "<value><int>1</int></value>") -> bytes:
    """An XML-RPC ``ping`` call whose one parameter is ``depth`` arrays, one inside the other."""
    inner = "<value><array><data>" * depth + leaf + "</data></array></value>" * depth
    return (f"<?xml version='1.0'?><methodCall><methodName>ping</methodName><params><param>"
            f"{inner}</param></params></methodCall>").encode()


# -- a server process, seen from /proc ----------------------------------------------------

def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def status_field(pid: int, name: str) -> int:
    """A numeric field of /proc/<pid>/status (Threads, VmRSS in kB...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0])
    raise KeyError(name)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_limits(pid: int) -> tuple[int, int]:
    """The soft and hard limits on open files of a process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise KeyError("Max open files")

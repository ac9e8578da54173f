"""Attacks on a bcfg2-server over the network, and what they need: an agent run, sources,
raw sockets and requests, and a server process's figures from /proc.

Shared by the hostile tests (``tests/hostile``, which add the assertions)
and the hostile-network benchmark (``tests/bench/hostile.py``, which times
agent runs under these attacks), so nothing here needs pytest. A "server"
is anything with a ``port`` and a ``tls`` whose ``client_context()`` gives
an SSL context that trusts the server's certificate.

Every helper polls an explicit condition with a deadline; none sleeps to
synchronise. Sockets are returned to the caller, which closes them (``closing``).
"""

from __future__ import annotations

import base64
import functools
import http.client
import os
import select
import socket
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import lxml.etree


class TLS(Protocol):
    """What the helpers need of TLS material: a client context trusting the server."""

    def client_context(self) -> ssl.SSLContext: ...


class Server(Protocol):
    """What the helpers need of a server: where it listens and how to trust it."""

    port: int
    tls: TLS


class Proxied(Protocol):
    """A server as an agent reaches it: an XML-RPC client per call."""

    def proxy(self, user: str, password: str) -> xmlrpc.client.ServerProxy: ...


#: web1 of repo-example: the agent of every hostile test and of the benchmark
WEB1 = ("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret")
#: web2 of repo-example: another client of the same profile
WEB2 = ("5c3f7a62-9d0e-4c1b-8f53-web2", "web2-secret")
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

    def __init__(self, port: int, tls: TLS, source: str = OTHER) -> None:
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


# -- an agent, and requests as raw as an attacker sends them ---------------------------------

#: a statistics upload of one good entry, as a clean agent run sends it
STATS = ('<upload-statistics><Statistics total="1" version="2.0" revision="-1" good="1" '
         'state="clean"><Flags/><Good/><Bad/><Modified/><Extra/></Statistics>'
         '</upload-statistics>')


def agent_run(server: Proxied, user: str = WEB1[0], password: str = WEB1[1]) -> str:
    """One run as a Bcfg2 1.4 agent makes it (one connection per call); the configuration.

    A call that fails raises (an XML-RPC Fault, an OSError...); an answer an
    agent could not use raises AssertionError.
    """
    def proxy() -> xmlrpc.client.ServerProxy:
        return server.proxy(user, password)

    assert proxy().DeclareVersion("1.4.0") is True
    probes = proxy().GetProbes()
    assert lxml.etree.fromstring(probes.encode()).tag == "probes"
    assert proxy().RecvProbeData("<ProbeData/>") is True
    proxy().GetDecisionList("whitelist")
    config = proxy().GetConfig()
    assert lxml.etree.fromstring(config.encode()).tag == "Configuration"
    assert proxy().RecvStats(STATS) is True
    return config


def raw_call(server: Server, body: bytes, user: str = WEB1[0], password: str = WEB1[1],
             source: str = "127.0.0.1", timeout: float = 30.0) -> tuple[int, bytes]:
    """POST one raw body over TLS from ``source``; the HTTP status and response body."""
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=timeout,
                                       context=server.tls.client_context(),
                                       source_address=(source, 0))
    try:
        conn.request("POST", "/RPC2", body=body, headers={
            "Content-Type": "text/xml", "Authorization": basic_auth(user, password)})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def call_body(method: str, *params: Any) -> bytes:
    """An XML-RPC request body."""
    return xmlrpc.client.dumps(params, method, allow_none=True).encode()


def fault_of(body: bytes) -> xmlrpc.client.Fault | None:
    """The Fault a response carries, None for a normal response."""
    try:
        xmlrpc.client.loads(body)
    except xmlrpc.client.Fault as fault:
        return fault
    return None


def tls_socket(server: Server, source: str = "127.0.0.1",
               timeout: float = 10.0) -> ssl.SSLSocket:
    """A TLS connection to the server from ``source``, handshake done."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout,
                                   source_address=(source, 0))
    return server.tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")


# -- slow clients ------------------------------------------------------------------------

#: the first bytes of a TLS ClientHello record: a handshake that never goes on
HELLO_PREFIX = bytes.fromhex("160301020001")


def trickle(server: Server, kind: str, every: float, results: list[float],
            stop: threading.Event) -> None:
    """One slow client from 127.0.0.1; appends the seconds after which the server cut it.

    ``kind``: ``silent`` (connects, sends nothing), ``hello`` (half a
    ClientHello), ``headers`` (the request line and headers, a byte every
    ``every`` seconds, never their end) or ``body`` (the headers, then the
    body a byte at a time). It gives up unrecorded when ``stop`` is set or
    after 30 s.
    """
    started = time.monotonic()
    raw = connect(server.port)
    sock = raw
    payload = b""
    try:
        if kind == "hello":
            raw.sendall(HELLO_PREFIX)
        elif kind in ("headers", "body"):
            sock = server.tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
            head = request_head(1000, basic_auth(*WEB1))
            payload = head[:-4] if kind == "headers" else head + b"<methodCall>"
            if kind == "body":
                sock.sendall(payload)
                payload = b" " * 1000
        for byte in payload * 100:
            if stop.is_set() or time.monotonic() - started > 30:
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            stop.wait(every)  # the attack's own pace: a byte every ``every`` seconds
        else:
            while not closed_by_server(sock) and not stop.is_set():
                stop.wait(0.02)
        results.append(time.monotonic() - started)
    finally:
        sock.close()


# -- statistics floods -------------------------------------------------------------------

#: the issue's example: 360,000 empty entries, 8 MB once escaped into an XML-RPC body
ENTRIES = 360_000


def upload(section: str = "Bad", entries: str = "", **attrs: str) -> str:
    """An <upload-statistics> document with ``entries`` in one section."""
    head = {"total": "1", "version": "2.0", "revision": "-1", "good": "1", "state": "dirty",
            **attrs}
    attributes = " ".join(f'{k}="{v}"' for k, v in head.items())
    return (f"<upload-statistics><Statistics {attributes}><Flags/><{section}>{entries}"
            f"</{section}></Statistics></upload-statistics>")


@functools.cache
def flood_body(section: str) -> bytes:
    """RecvStats with ENTRIES empty entries in ``section``, as the XML-RPC body."""
    return call_body("RecvStats", upload(section, '<Path name="/x"/>' * ENTRIES))


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


def peak_growth(pid: int, attack: Callable[[], object]) -> int:
    """How far a process's peak RSS rises above its RSS while ``attack()`` runs, in bytes.

    Writing 5 to /proc/<pid>/clear_refs restarts the peak (VmHWM) from the RSS now.
    """
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = status_field(pid, "VmRSS")
    attack()
    return (status_field(pid, "VmHWM") - before) * 1024

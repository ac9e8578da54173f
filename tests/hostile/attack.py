"""What every hostile test shares: a real agent run, and the proof it is still served.

Each hostile test mounts one attack against a server and asserts two
things: the attack fails, and an ordinary agent (web1 of repo-example)
completes a whole run meanwhile within ``AGENT_DEADLINE`` seconds. The
deadline is a liveness bound (a starved or stalled server misses it by
far), not a speed target: speed lives in ``make bench``.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lxml.etree
from conftest import WEB1, RunningServer

#: seconds a whole agent run may take while the server is under attack
AGENT_DEADLINE = 10.0

STATS = ('<upload-statistics><Statistics total="1" version="2.0" revision="-1" good="1" '
         'state="clean"><Flags/><Good/><Bad/><Modified/><Extra/></Statistics>'
         '</upload-statistics>')


def agent_run(server: RunningServer, user: str = WEB1[0], password: str = WEB1[1]) -> str:
    """One run as a Bcfg2 1.4 agent makes it (one connection per call); the configuration."""
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


def assert_served(server: RunningServer, within: float = AGENT_DEADLINE, **kwargs: Any) -> str:
    """A real agent run completes within ``within`` seconds; its configuration."""
    started = time.monotonic()
    config = agent_run(server, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < within, f"an agent run took {elapsed:.1f}s under attack (limit {within}s)"
    return config


@contextmanager
def in_background(attack: Callable[[threading.Event], None], threads: int = 1) -> Iterator[None]:
    """Run ``attack(stop)`` in threads while the block runs; stop and join them after it."""
    stop = threading.Event()
    workers = [threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        assert not any(w.is_alive() for w in workers), "an attack thread did not stop"


def raw_call(server: RunningServer, body: bytes, user: str = WEB1[0], password: str = WEB1[1],
             source: str = "127.0.0.1", timeout: float = 30.0) -> tuple[int, bytes]:
    """POST one raw body over TLS from ``source``; the HTTP status and response body."""
    import base64
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=timeout,
                                       context=server.tls.client_context(),
                                       source_address=(source, 0))
    try:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        conn.request("POST", "/RPC2", body=body, headers={
            "Content-Type": "text/xml", "Authorization": f"Basic {auth}"})
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


def tls_socket(server: RunningServer, source: str = "127.0.0.1",
               timeout: float = 10.0) -> ssl.SSLSocket:
    """A TLS connection to the server from ``source``, handshake done."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout,
                                   source_address=(source, 0))
    return server.tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")

"""The health endpoint: plain HTTP on a loopback port for a load balancer's checks.

``GET /healthz`` answers 200 "ok" while the core serves agents, 503 with
the reason while it starts (the multiprocessing core's children loading
the repository) or stops; anything else is 404. It listens on a loopback
address only (``[server] health_port``): it tells anyone who asks whether
the server is up, and it has no TLS. Each request must arrive whole
within ``REQUEST_TIMEOUT`` seconds and ``MAX_REQUEST`` bytes; at most
``MAX_CLIENTS`` are served at once, in daemon threads.
"""

from __future__ import annotations

import http.server
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from bcfg2.errors import ConfigError
from bcfg2.untrusted import escaped

logger = logging.getLogger("bcfg2.health")

PATH = "/healthz"
#: bytes of request line and headers read; a longer request is answered 431
MAX_REQUEST = 4096
#: seconds a request may take to arrive whole
REQUEST_TIMEOUT = 2.0
#: requests served at once; further connections are closed unanswered
MAX_CLIENTS = 8
#: seconds a closing connection waits for the client to stop sending
LINGER = 0.5


def health_address(value: str) -> tuple[str, int] | None:
    """Where ``[server] health_port`` says to listen: ``PORT`` (on 127.0.0.1) or
    ``LOOPBACK-ADDRESS:PORT`` (port 0 there picks a free one); None for ``0`` (off).

    Any address that is not a loopback address is a ``ConfigError``.
    """
    value = value.strip()
    if value in ("", "0"):
        return None
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"[server] health_port: {port_text!r} is not a port number")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"[server] health_port: {host!r} is not an IP address; the health "
                          f"endpoint listens on a loopback address only (127.0.0.1)") from None
    if not ip.is_loopback:
        raise ConfigError(f"[server] health_port: {host} is not a loopback address; the health "
                          f"endpoint has no TLS and no authentication, so it listens on "
                          f"127.0.0.1 (or another loopback address) only")
    return str(ip), port


class BoundedReader:
    """A request's input: at most ``limit`` bytes, all before ``deadline``."""

    def __init__(self, raw: Any, sock: socket.socket, limit: int, deadline: float) -> None:
        self.raw = raw
        self.sock = sock
        self.left = limit
        self.deadline = deadline
        self.exhausted = False

    def _budget(self, size: int) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(remaining)
        if size < 0 or size > self.left:
            size = self.left
        return size

    def readline(self, size: int = -1) -> bytes:
        size = self._budget(size)
        line = self.raw.readline(size) if size else b""
        self.left -= len(line)
        if not self.left and not line.endswith(b"\n"):
            self.exhausted = True
        return line

    def read(self, size: int = -1) -> bytes:
        return b""  # a health check has no body to read

    def close(self) -> None:
        self.raw.close()


class HealthHandler(http.server.BaseHTTPRequestHandler):
    """One request: GET /healthz, or a 404."""

    protocol_version = "HTTP/1.0"
    server_version = "bcfg2-server"
    sys_version = ""
    timeout = REQUEST_TIMEOUT
    server: HealthServer  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self.rfile = BoundedReader(self.rfile, self.connection, MAX_REQUEST,  # type: ignore[assignment]
                                   time.monotonic() + REQUEST_TIMEOUT)

    def handle_one_request(self) -> None:
        self.close_connection = True
        self.raw_requestline = self.rfile.readline(MAX_REQUEST)
        if not self.raw_requestline or not self.parse_request():
            return
        if self.rfile.exhausted:  # type: ignore[attr-defined]
            self._answer(431, f"the request exceeds {MAX_REQUEST} bytes")
        elif self.command == "GET" and self.path.split("?", 1)[0] == PATH:
            self.server.checks += 1
            why = self.server.unavailable()
            self._answer(200, "ok") if why is None else self._answer(503, why)
        else:
            self._answer(404, f"not found; the health check is GET {PATH}")

    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("health check from %s: " + format, self.client_address[0],
                     *(escaped(str(a), 200) for a in args))


def linger(conn: socket.socket) -> None:
    """Send the end of the answer, then read what the client still sends (a little, briefly):
    closing with input unread would reset the connection before the answer is read."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(LINGER)
        for _ in range(16):
            if not conn.recv(MAX_REQUEST):
                break
    except OSError:
        pass


class HealthServer:
    """The health endpoint's listener and the daemon thread accepting on it."""

    def __init__(self, address: tuple[str, int],
                 unavailable: Callable[[], str | None]) -> None:
        """``unavailable()`` says why the core cannot serve now (503), None if it can (200)."""
        self.unavailable = unavailable
        #: health checks answered (200 or 503)
        self.checks = 0
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(address)
            self.listener.listen(16)
        except OSError:
            self.listener.close()
            raise
        self.address = self.listener.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> None:
        """Accept health checks in a daemon thread."""
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except OSError as err:
                if not self._stopping.is_set():
                    logger.debug("health endpoint: accept failed: %s", err)
                    self._stopping.wait(0.1)  # out of descriptors: do not spin
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # MAX_CLIENTS are being served: the balancer retries
                continue
            try:
                threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                                 name="health-check").start()
            except RuntimeError:
                self._slots.release()
                conn.close()

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        try:
            HealthHandler(conn, peer, self)  # type: ignore[arg-type]
        except OSError as err:
            logger.debug("health check from %s failed: %s", peer[0], err)
        finally:
            linger(conn)
            self._slots.release()
            conn.close()

    def stop(self) -> None:
        """Stop accepting (shutting the listener down wakes the blocked accept) and close."""
        self._stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.listener.close()


__all__ = ["MAX_REQUEST", "PATH", "HealthServer", "health_address"]

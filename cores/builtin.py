"""The builtin core: threaded XML-RPC over TLS with the standard library.

The accept loop (``bcfg2.connections``) only accepts and admits within the
connection caps; each admitted connection's TLS handshake, request and
response happen in a worker thread of its own, so one slow client never
holds up the others, and the request deadline cuts one that trickles.
"""

from __future__ import annotations

import http.server as http_server
import logging
import os
import signal
import socket
import socketserver
import ssl
import threading
from typing import Any, NamedTuple

from bcfg2 import http, xmlrpc
from bcfg2.connections import AcceptLoop, Connections, Ticket
from bcfg2.core import NetworkCore
from bcfg2.daemonize import daemon_context
from bcfg2.limits import raise_fd_limit
from bcfg2.options import Setup
from bcfg2.tls import Handshakes, server_context

logger = logging.getLogger("bcfg2.cores.builtin")


class RequestHandler(http_server.BaseHTTPRequestHandler):
    """One HTTP request carrying one XML-RPC call."""

    protocol_version = "HTTP/1.0"
    server_version = "bcfg2-server"
    sys_version = ""
    server: TLSServer

    def __init__(self, request: Any, client_address: Any, server: TLSServer,
                 ticket: Ticket) -> None:
        self.ticket = ticket
        super().__init__(request, client_address, server)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("%s: " + format, self.client_address[0], *args)

    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/xml",
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _refuse(self, refusal: http.Refused) -> None:
        if self.ticket.cut:
            return  # cut by the server, which logged why
        logger.warning("Refused request from %s: %s", self.client_address[0], refusal.message)
        self._reply(refusal.status, (refusal.message + "\n").encode(), "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        core = self.server.core
        try:
            length = http.content_length(self.headers.get("Content-Length"),
                                         core.setup.server.max_request_size)
            result = http.answer(core, self.ticket, self.rfile, length, self.client_address,
                                 self.connection.getpeercert(), self.headers.get("Authorization"))
        except http.Refused as refusal:
            self._refuse(refusal)
            return
        if result.unauthorized:
            self._reply(401, http.UNAUTHORIZED_TEXT, "text/plain",
                        {"WWW-Authenticate": http.CHALLENGE})
        else:
            body, coding = result.content(xmlrpc.accepts_gzip(self.headers.get("Accept-Encoding")))
            self._reply(200, body, extra=http.coding_headers(coding))

    def do_GET(self) -> None:  # noqa: N802
        self._refuse(http.Refused(405, "only XML-RPC POST requests are served"))


class Accepted(NamedTuple):
    """A connection the accept loop admitted, as the server's threads get it."""

    sock: ssl.SSLSocket
    ticket: Ticket


class TLSServer(socketserver.ThreadingMixIn, http_server.HTTPServer):
    """HTTPServer whose TLS handshakes happen in the per-connection thread."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], core: BuiltinCore,
                 context: ssl.SSLContext) -> None:
        self.core = core
        self.ssl_context = context
        self.timeout_seconds = core.setup.server.connection_timeout
        self.handshakes = Handshakes()
        self.connections = Connections.from_setup(core.setup)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RequestHandler)
        self.acceptor = AcceptLoop(self.socket, self.connections, self._serve, core.balancers)

    def serve_until_stopped(self) -> None:
        """Accept connections until ``stop``; sleeps while nobody connects."""
        self.acceptor.run()

    def stop(self) -> None:
        """Make serve_until_stopped return."""
        self.acceptor.stop()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the FQDN, a DNS query we do not need
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def _serve(self, sock: socket.socket, client_address: Any, ticket: Ticket) -> None:
        """Wrap an admitted connection (no handshake yet) and serve it in a thread of its own."""
        sock.settimeout(self.timeout_seconds)
        try:
            conn = self.ssl_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        except OSError as err:
            logger.info("connection from %s failed: %s", client_address[0], err)
            ticket.release()
            sock.close()
            return
        ticket.attach(conn)
        try:
            self.process_request(Accepted(conn, ticket), client_address)
        except Exception:  # no thread could be started
            ticket.release()
            conn.close()
            raise

    def finish_request(self, request: Accepted, client_address: Any) -> None:
        conn, ticket = request
        try:
            if not self.handshakes.run(conn, client_address[0], ticket):
                return
            self.RequestHandlerClass(conn, client_address, self, ticket)
        except (ssl.SSLError, OSError) as err:
            if not ticket.cut:
                logger.info("connection from %s failed: %s", client_address[0], err)
        finally:
            ticket.release()
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def shutdown_request(self, request: Accepted) -> None:
        """Nothing left to do: finish_request closed the connection."""

    def server_close(self) -> None:
        """Stop listening and cut connections that do not complete a TLS handshake.

        Handshakes under way get a second to finish (their
        requests are then served); a silent connection would otherwise hold
        up the shutdown for a whole connection timeout. Requests under way
        are always waited for.
        """
        self.handshakes.close()
        super().server_close()
        self.acceptor.close()
        self.connections.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("error serving %s", client_address[0])


class BuiltinCore(NetworkCore):
    """The builtin server core."""

    name = "bcfg2-server"

    def __init__(self, setup: Setup) -> None:
        # before the core loads plugins: a failed start shuts down what exists so far
        self.server: TLSServer | None = None
        self.context: Any = None
        self._serve_thread: threading.Thread | None = None
        super().__init__(setup)
        #: built here, so an unusable key or certificate stops the start before daemonizing
        self.ssl_context = server_context(setup)

    def _run(self) -> bool:
        # before "Listening on" is logged: a SIGTERM from then on is a clean shutdown
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
            signal.signal(signal.SIGHUP, self._on_hangup)
        raise_fd_limit(self.setup.server.max_connections, logger)
        if not self._start_side_listeners():
            return False
        try:
            self.server = TLSServer((self.host, self.port), self, self.ssl_context)
        except OSError as err:
            logger.error("Cannot listen on %s:%s: %s", self.host or "*", self.port,
                         err.strerror)
            return False
        self.port = self.server.server_address[1]
        self._serve_thread = threading.Thread(target=self.server.serve_until_stopped,
                                              name="accept", daemon=True)
        self._serve_thread.start()
        self._listening()
        return True

    def _block(self) -> None:
        self._wait_for_stop()  # nothing polls meanwhile

    def shutdown(self) -> None:
        """Stop accepting, finish the requests in flight, then stop the core."""
        self.terminate.set()
        self._stop_serving()
        super().shutdown()

    def _stop_serving(self) -> None:
        """Stop accepting connections and wait for the requests in flight."""
        if self.server is not None:
            self.server.stop()
            if self._serve_thread is not None:
                self._serve_thread.join(timeout=10)
            self.server.server_close()
            self.server = None
        xmlrpc.forget_throttle(self)

    def _daemonize(self) -> None:
        """Detach with python-daemon: pidfile, user and group, umask."""
        self.context = daemon_context(self.setup, self.fds(), self._on_signal, self._on_hangup)
        self.context.open()
        logger.info("Daemonized; pid %d written to %s", os.getpid(), self.setup.daemon)


__all__ = ["BuiltinCore"]

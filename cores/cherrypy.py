"""The CherryPy core: XML-RPC over TLS with CherryPy and its cheroot HTTP server.

CherryPy runs the request pipeline: a tool that checks the request line and
its length, and one handler for every XML-RPC call, which authenticates the
caller from the headers before it reads the body. The core's own
CherryPy engine (a private bus, not the global ``cherrypy.engine``) runs the
HTTP server, the signal handlers and daemonization.

cheroot does the TLS handshake in its accept loop, so one silent client would
hold up every other; here the accept loop is ``bcfg2.connections``'s, as in
the builtin core, and the handshake happens in the thread that serves the
connection. cheroot's pool of workers is replaced by a thread per admitted
connection (``ConnectionThreads``): with a fixed pool, as many slow clients
as workers, each trickling its handshake or headers, would stop the server;
the connection caps bound the threads instead.
"""

from __future__ import annotations

import html
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from functools import partial
from typing import Any

import cheroot.server
import cheroot.wsgi
import cherrypy
from cheroot import errors as cheroot_errors
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cherrypy._cptools import Toolbox
from cherrypy.process.plugins import Daemonizer, DropPrivileges, PIDFile, SignalHandler, SimplePlugin
from cherrypy.process.wspbus import Bus, states

from bcfg2 import http, xmlrpc
from bcfg2.connections import AcceptLoop, Connections, Ticket, cut_socket
from bcfg2.core import NetworkCore
from bcfg2.daemonize import daemon_ids, prepare_pidfile
from bcfg2.limits import raise_fd_limit
from bcfg2.options import Setup
from bcfg2.proxyprotocol import TrustedBalancers
from bcfg2.tls import Handshakes, server_context

logger = logging.getLogger("bcfg2.cores.cherrypy")

#: the listen() backlog
REQUEST_QUEUE = 256
#: the largest request line and headers accepted, in bytes
MAX_HEADER_SIZE = 64 * 1024
#: the WSGI environ key of the verified peer certificate, as ssl.SSLSocket.getpeercert() gives it
PEERCERT = "bcfg2.peercert"
#: the WSGI environ key of the connection's ``bcfg2.connections.Ticket``
TICKET = "bcfg2.ticket"


class Refusal(cherrypy.HTTPError):
    """A refused request: its status and one line of text/plain, never an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.text = message

    def set_response(self) -> None:
        """The response CherryPy sends for this error."""
        response = cherrypy.serving.response
        response.status = self.status
        response.headers["Content-Type"] = "text/plain"
        response.body = (self.text + "\n").encode()


def refuse(refused: http.Refused) -> Refusal:
    """Log a refused request with the client's address; the Refusal to raise."""
    logger.warning("Refused request from %s: %s", cherrypy.serving.request.remote.ip,
                   refused.message)
    return Refusal(refused.status, refused.message)


def unauthorized() -> Refusal:
    """HTTP 401 with the challenge agents expect."""
    cherrypy.serving.response.headers["WWW-Authenticate"] = http.CHALLENGE
    return Refusal(401, http.UNAUTHORIZED_TEXT.decode().strip())


def plain_error_page(status: str, message: str, **_: Any) -> bytes:
    """CherryPy's own HTTP errors as one line of text, not an HTML page."""
    cherrypy.serving.response.headers["Content-Type"] = "text/plain"
    return f"{status}: {html.unescape(message)}\n".encode()


class DebugHandler(logging.Handler):
    """Hands CherryPy's access and error log records to our logger at debug level."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log the record's message at debug level."""
        logger.debug("%s", record.getMessage())


class XMLRPCRoot:
    """The CherryPy application root: every path is the XML-RPC endpoint (agents use /RPC2).

    The core itself is not mounted: its XML-RPC methods carry the same
    ``exposed`` attribute that CherryPy dispatches URLs to.
    """

    def __init__(self, core: CherrypyCore) -> None:
        self.core = core

    @cherrypy.expose
    def default(self, *args: str, **params: str) -> bytes:
        """Handle all XML-RPC calls: authenticated from the headers, then the body is read."""
        request = cherrypy.serving.request
        ticket = request.wsgi_environ[TICKET]
        try:
            result = http.answer(self.core, ticket, request.rfile, request.xmlrpc_length,
                                 (request.remote.ip, request.remote.port),
                                 request.wsgi_environ.get(PEERCERT),
                                 request.headers.get("Authorization"))
        except http.Refused as refused:
            if ticket.cut:  # cut by the server, which logged why
                raise Refusal(refused.status, refused.message) from None
            raise refuse(refused) from None
        if result.unauthorized:
            raise unauthorized()
        response = cherrypy.serving.response
        response.headers["Content-Type"] = "text/xml"
        body, coding = result.content(xmlrpc.accepts_gzip(request.headers.get("Accept-Encoding")))
        response.headers.update(http.coding_headers(coding))
        return body


class TLSAdapter(BuiltinSSLAdapter):
    """cheroot's builtin TLS adapter with our context; the handshake is left to the worker."""

    def __init__(self, certificate: str, key: str, context: ssl.SSLContext) -> None:
        super().__init__(certificate, key)
        self.context = context

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        """Wrap without handshaking: the accept loop must never wait for a client."""
        try:
            conn = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as err:  # the client is gone already
            raise cheroot_errors.FatalSSLAlert(*err.args) from err
        return conn, {}

    def get_environ(self, sock: ssl.SSLSocket) -> dict[str, Any]:
        """cheroot's SSL_* entries and the verified peer certificate (or None)."""
        environ = super().get_environ(sock)
        environ[PEERCERT] = sock.getpeercert() or None
        return environ


class Request(cheroot.server.HTTPRequest):
    """One request per connection, as agents make them; an oversized body is refused naming the limit."""

    close_connection = True

    def simple_response(self, status: Any, msg: str = "") -> None:
        """cheroot's own short responses (errors found before the application runs)."""
        limit = self.server.max_request_body_size
        length = self.inheaders.get(b"Content-Length", b"")
        if str(status).startswith("413") and limit and length.isdigit() and int(length) > limit:
            msg = f"request body of {int(length)} bytes exceeds the limit of {limit}\n"
            logger.warning("Refused request from %s: %s", self.conn.remote_addr, msg.strip())
        super().simple_response(status, msg)


class TLSConnection(cheroot.server.HTTPConnection):
    """A connection whose TLS handshake happens in the worker thread serving it."""

    RequestHandlerClass = Request
    handshaken = False
    server: TLSServer
    ticket: Ticket

    def communicate(self) -> bool:
        """Handshake (once), then read the request and answer it; False closes the connection."""
        if not self.handshaken:
            if not self.server.handshake(self):
                return False
            self.handshaken = True
        return super().communicate()


class ConnectionThreads:
    """Stands in for cheroot's worker pool: each admitted connection is served in a thread of its own.

    cheroot asks its pool for ``start``, ``put`` and ``stop``. A fixed pool
    would let as many trickling clients as workers stop the server; here
    ``[server] max_connections`` bounds the threads, and the request
    deadline how long a connection holds one.
    """

    def __init__(self, server: TLSServer) -> None:
        self.server = server
        self._serving: dict[threading.Thread, TLSConnection] = {}
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        """Nothing to start: threads come with connections."""
        self._stopping = False

    def put(self, conn: TLSConnection) -> None:
        """Serve a connection in a new thread."""
        thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                  name=f"connection {conn.remote_addr}")
        with self._lock:
            taken = not self._stopping
            if taken:
                self._serving[thread] = conn
        if not taken:  # the server is stopping
            self._close(conn)
            return
        try:
            thread.start()
        except RuntimeError:  # no thread can be started
            with self._lock:
                del self._serving[thread]
            self._close(conn)
            raise

    @staticmethod
    def _close(conn: TLSConnection) -> None:
        conn.ticket.release()
        conn.close()

    def _serve(self, conn: TLSConnection) -> None:
        try:
            conn.communicate()
        except (KeyboardInterrupt, SystemExit) as interrupt:
            self.server.interrupt = interrupt  # cheroot's way: the server stops
        except Exception:
            logger.exception("Error serving %s", conn.remote_addr)
        finally:
            self._close(conn)
            with self._lock:
                self._serving.pop(threading.current_thread(), None)

    def stop(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the connections being served, then cut them."""
        with self._lock:
            self._stopping = True
            serving = [(t, c) for t, c in self._serving.items()
                       if t is not threading.current_thread()]
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread, _ in serving:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        for thread, conn in serving:
            if thread.is_alive():
                cut_socket(conn.socket)
                thread.join()


class TLSServer(cheroot.wsgi.Server):
    """cheroot's WSGI server: HTTP/1.0 as agents speak it, handshakes in the connections' threads.

    Its accept loop is ``bcfg2.connections.AcceptLoop``: cheroot's wakes up
    twice a second to expire idle keep-alive connections, and a stop waits
    for that; agents make one request per connection, so there are none to
    expire.
    """

    ConnectionClass = TLSConnection
    protocol = "HTTP/1.0"
    max_request_header_size = MAX_HEADER_SIZE

    def __init__(self, address: tuple[str, int], app: Any, adapter: TLSAdapter,
                 setup: Setup, balancers: TrustedBalancers | None = None) -> None:
        timeout = setup.server.connection_timeout
        # requests in flight at shutdown get the connection timeout to finish
        super().__init__(address, app, numthreads=1, server_name="bcfg2-server",
                         request_queue_size=REQUEST_QUEUE, timeout=timeout,
                         shutdown_timeout=timeout)
        self.requests = ConnectionThreads(self)
        self.ssl_adapter = adapter
        self.max_request_body_size = setup.server.max_request_size
        self.handshakes = Handshakes()
        self.connections = Connections.from_setup(setup)
        self.balancers = balancers
        self.acceptor: AcceptLoop | None = None

    def prepare(self) -> None:
        """Bind and listen."""
        super().prepare()
        self.acceptor = AcceptLoop(self.socket, self.connections, self._accept, self.balancers)

    def serve(self) -> None:
        """Accept connections until stop(); sleeps while nobody connects."""
        if self.acceptor is not None:
            self.acceptor.run()

    def _accept(self, sock: socket.socket, address: Any, ticket: Ticket) -> None:
        """Hand an admitted connection, not yet handshaken, to a thread of its own."""
        sock.settimeout(self.timeout)
        try:
            conn_sock, ssl_env = self.ssl_adapter.wrap(sock)
        except cheroot_errors.FatalSSLAlert as err:
            logger.info("connection from %s failed: %s", address[0], err)
            ticket.release()
            sock.close()
            return
        ticket.attach(conn_sock)
        conn = self.ConnectionClass(self, conn_sock, self.ssl_adapter.makefile)
        conn.remote_addr, conn.remote_port = address[:2]
        conn.ssl_env = ssl_env
        conn.ticket = ticket
        self.process_conn(conn)

    def handshake(self, conn: TLSConnection) -> bool:
        """The connection's TLS handshake, which stop() may cut short."""
        sock = conn.socket
        if not self.handshakes.run(sock, conn.remote_addr, conn.ticket):
            return False
        conn.ssl_env = {**self.ssl_adapter.get_environ(sock), TICKET: conn.ticket}
        return True

    def stop(self) -> None:
        """Stop accepting, cut handshakes that take over a second, stop the workers.

        A silent connection would otherwise hold up the shutdown for a whole
        connection timeout. Requests under way are waited for.
        """
        self.handshakes.closing = True
        if self.acceptor is not None:
            self.acceptor.stop()
        self.handshakes.close()
        super().stop()
        self.connections.close()

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's messages go to our logger: errors as errors, the rest at debug level."""
        logger.log(logging.ERROR if level >= logging.ERROR else logging.DEBUG, "%s", msg,
                   exc_info=traceback)


class HTTPServerPlugin(SimplePlugin):
    """Runs the HTTP server while the engine runs.

    A failed bind is logged, not raised: an exception from a start listener
    makes CherryPy's engine end the process with os._exit.
    """

    def __init__(self, bus: Bus, server: TLSServer, core: CherrypyCore) -> None:
        super().__init__(bus)
        self.server = server
        self.core = core
        self.listening = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen and serve in a thread of its own."""
        try:
            self.server.prepare()  # bind, listen, start the workers
        except Exception as err:
            logger.error("Cannot listen on %s:%s: %s", self.core.host or "*", self.core.port, err)
            return
        self.listening = True
        self._thread = threading.Thread(target=self._serve, name="cherrypy-http", daemon=True)
        self._thread.start()
    start.priority = 75

    def _serve(self) -> None:
        try:
            self.server.serve()
        except Exception:
            logger.exception("The HTTP server failed; shutting down")
        else:
            if self.server.interrupt is None:
                return  # stopped by the engine
            # a worker thread raised SystemExit: cheroot stopped the server
            logger.error("The HTTP server stopped (%r); shutting down", self.server.interrupt)
        self.core.terminate.set()

    def stop(self) -> None:
        """Stop accepting and finish the requests in flight."""
        if not self.listening:
            return
        self.listening = False
        try:
            self.server.stop()
        except Exception:
            logger.exception("Error stopping the HTTP server")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
    stop.priority = 25


class CherrypyCore(NetworkCore):
    """The CherryPy-based server core."""

    name = "bcfg2-server"

    def __init__(self, setup: Setup) -> None:
        #: the core's CherryPy engine: HTTP server, signals, daemonization
        self.engine = Bus()
        self._engine_lock = threading.RLock()
        super().__init__(setup)
        #: built here, so an unusable key or certificate stops the start before daemonizing
        self.ssl_context = server_context(setup)
        self.engine.subscribe("log", self._engine_log)
        self.app = self._application()
        comm = setup.communication
        self.server = TLSServer((self.host or "0.0.0.0", self.port), self.app,
                                TLSAdapter(comm.certificate, comm.key, self.ssl_context), setup,
                                self.balancers)
        self.http = HTTPServerPlugin(self.engine, self.server, self)
        self.http.subscribe()
        # after the HTTP server (priority 25) has finished the requests in flight
        self.engine.subscribe("stop", self._engine_stopped, priority=50)

    def _application(self) -> cherrypy.Application:
        """The CherryPy application: its tools, error handling and logging."""
        tools = Toolbox("bcfg2")
        tools.read_request = cherrypy.Tool("on_start_resource", self.read_request)
        config = {"/": {
            "bcfg2.read_request.on": True,
            "request.process_request_body": False,  # read_request reads it as it is
            "request.error_response": self.on_error,
            "request.show_tracebacks": False,
            "request.show_mismatched_params": False,
            "error_page.default": plain_error_page,
            "response.headers.server": self.name,
            "tools.encode.on": False,
            "tools.trailing_slash.on": False,
            "tools.log_headers.on": False,  # they would log the Authorization header
            "tools.log_tracebacks.on": False,  # on_error logs them
        }}
        app = cherrypy.Application(XMLRPCRoot(self), "", config)
        app.toolboxes = {**app.toolboxes, "bcfg2": tools}
        for log in (app.log.error_log, app.log.access_log):
            log.propagate = False  # CherryPy's screen handlers sit on its parent loggers
            log.addHandler(DebugHandler())
        return app

    # -- the request pipeline ------------------------------------------------

    def read_request(self) -> None:
        """Refuse what is not an XML-RPC request, and check its length (a CherryPy tool).

        cheroot has already refused a body over [server] max_request_size (413)
        from its Content-Length, before reading it; the handler reads the
        body once the caller is authenticated.
        """
        request = cherrypy.serving.request
        try:
            if request.method != "POST":
                raise http.Refused(405, "only XML-RPC POST requests are served")
            request.xmlrpc_length = http.content_length(request.headers.get("Content-Length"),
                                                        self.setup.server.max_request_size)
        except http.Refused as refused:
            raise refuse(refused) from None

    def on_error(self) -> None:
        """CherryPy's error response: an unexpected exception becomes an XML-RPC fault."""
        err = sys.exc_info()[1]
        logger.error("Error serving %s", cherrypy.serving.request.remote.ip, exc_info=True)
        response = cherrypy.serving.response
        response.status = 200
        response.headers["Content-Type"] = "text/xml"
        response.body = xmlrpc.fault_response(xmlrpc.fault_for(err))

    # -- running ---------------------------------------------------------------

    def _run(self) -> bool:
        if threading.current_thread() is threading.main_thread():
            # before "Listening on" is logged: a signal from then on is a clean shutdown
            handlers = {"SIGTERM": partial(self._on_signal, signal.SIGTERM),
                        "SIGINT": partial(self._on_signal, signal.SIGINT),
                        "SIGHUP": self._on_hangup}
            signals = SignalHandler(self.engine)
            signals.handlers = handlers
            signals.subscribe()
        raise_fd_limit(self.setup.server.max_connections, logger)
        with self._engine_lock:
            self.engine.start()
        if not self.http.listening:
            return False
        self.port = self.server.socket.getsockname()[1]
        if not self._start_side_listeners():  # after the engine daemonized: its thread survives
            return False
        self._listening()
        return True

    def _block(self) -> None:
        """Sleep until terminate is set (by a signal or whoever runs the core), then stop."""
        self._wait_for_stop()  # nothing polls meanwhile
        self._exit_engine()

    def _engine_log(self, msg: str, level: int) -> None:
        logger.log(logging.ERROR if level >= logging.ERROR else logging.DEBUG, "%s", msg)

    def _exit_engine(self) -> None:
        """Stop the engine once: the HTTP server, then the core, then the exit listeners."""
        with self._engine_lock:
            if self.engine.state is states.STARTED:
                self.engine.exit()

    def _engine_stopped(self) -> None:
        try:
            self.shutdown()
        except Exception:  # an exception here would make the engine call os._exit
            logger.exception("Error shutting down the core")

    def shutdown(self) -> None:
        """Stop the engine (the HTTP server finishes the requests in flight), then the core."""
        self.terminate.set()
        self._exit_engine()
        xmlrpc.forget_throttle(self)
        super().shutdown()

    def _daemonize(self) -> None:
        """Daemonize with CherryPy's Daemonizer, DropPrivileges and PIDFile as the engine starts.

        Order of the start listeners: fork (65), listen (75), user, group and
        umask (77), then the pidfile (78), written with the umask by the user
        the daemon runs as, who can also remove it at exit.
        """
        pidfile = prepare_pidfile(self.setup.daemon)
        uid, gid = daemon_ids(self.setup) or (None, None)
        Daemonizer(self.engine).subscribe()
        DropPrivileges(self.engine, umask=self.setup.server.umask, uid=uid, gid=gid).subscribe()
        pid = PIDFile(self.engine, pidfile)
        self.engine.subscribe("start", pid.start, priority=78)
        self.engine.subscribe("exit", pid.exit)
        self.engine.subscribe("start", partial(self._daemonized, pidfile), priority=79)

    def _daemonized(self, pidfile: str) -> None:
        logger.info("Daemonized; pid %d written to %s", os.getpid(), pidfile)


__all__ = ["CherrypyCore"]

"""The web page's listener: a cheroot WSGI server of its own, over TLS, beside the agents' core.

It never shares the agents' port or server: with the cherrypy core, that
core's engine and HTTP server stay its own, and this one is a separate
cheroot server with no engine (``cherrypy.Application`` is served as plain
WSGI). It uses the server's certificate and key (``[communication]``),
asks for no client certificate, and starts after the core daemonized.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from bcfg2.errors import ConfigError
from bcfg2.options import Setup
from bcfg2.reportdb import SCHEMA as RUNS_SCHEMA
from bcfg2.reportdb import RunStore
from bcfg2.reportdb import database_path as runs_path
from bcfg2.storage import engine_of, open_database
from bcfg2.tls import MIN_VERSIONS
from bcfg2.web import EXTRA_MOUNTS, WSGIApp
from bcfg2.web.app import WebApp, application
from bcfg2.web.audit import AuditLog
from bcfg2.web.sessions import LoginThrottle, Signer, load_secret, secret_path
from bcfg2.web.users import Users, users_path

logger = logging.getLogger("bcfg2.web")

THREADS = 8


def tls_context(setup: Setup) -> ssl.SSLContext:
    """TLS 1.2 or newer with the server's certificate and key; no client certificate."""
    comm = setup.communication
    if not comm.certificate or not comm.key:
        raise ConfigError("[web] listen needs the server's TLS certificate and key "
                          "([communication] certificate, key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = max(MIN_VERSIONS.get(comm.tls_min_version, ssl.TLSVersion.TLSv1_2),
                              ssl.TLSVersion.TLSv1_2)
    try:
        ctx.load_cert_chain(comm.certificate, comm.key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"[web]: cannot load the TLS certificate {comm.certificate} and key "
                          f"{comm.key}: {err}") from None
    return ctx


def _probe_store(core: Any, setup: Setup) -> Any:
    """The Probes plugin's database store, for the probe filter (None if it keeps XML)."""
    if "Probes" not in core.plugins or str(setup.probes.storage) != "sqlite":
        return None
    from bcfg2.plugins.probes import SCHEMA, DatabaseStore

    path = os.path.join(setup.server.state_dir, "Probes", "probes.sqlite")
    return DatabaseStore(path, open_database(setup, path, SCHEMA))


class WebServer:
    """The pages and their API (and ``mount``-ed extras) on ``[web] listen``."""

    def __init__(self, core: Any, setup: Setup, address: tuple[str, int]) -> None:
        self.core = core
        web = setup.web
        self._closing: list[Any] = []
        try:
            path = runs_path(setup)
            if engine_of(setup) == "sqlite":
                os.makedirs(os.path.dirname(path), exist_ok=True)
            store = RunStore(path, database=open_database(setup, path, RUNS_SCHEMA))
            self._closing.append(store)
            probes = _probe_store(core, setup)
            if probes is not None:
                self._closing.append(probes)
            audit = AuditLog.from_setup(setup)
            self._closing.append(audit)
            signer = Signer(load_secret(secret_path(setup)), float(web.session_hours) * 3600)
            self.app = WebApp(core, store, probes, Users(users_path(setup)), signer,
                              LoginThrottle(int(web.login_attempts), float(web.login_window)),
                              audit, float(web.stale_hours))
            self.mounts: dict[str, WSGIApp] = {"/": application(self.app)}
            for where, make in EXTRA_MOUNTS.items():
                extra = make(core)
                if extra is not None:
                    self.mounts[where] = extra
            self.server = wsgi.Server(address, wsgi.PathInfoDispatcher(self.mounts),
                                      numthreads=THREADS, server_name="bcfg2-web")
        except BaseException:
            self._close()
            raise
        try:
            context = tls_context(setup)
            adapter = BuiltinSSLAdapter(setup.communication.certificate,
                                        setup.communication.key)
        except BaseException:
            self._close()
            raise
        adapter.context = context
        self.server.ssl_adapter = adapter
        self.server.error_log = self._error_log  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    @staticmethod
    def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        logger.log(logging.DEBUG if level < logging.ERROR else logging.ERROR,
                   "web server: %s", msg, exc_info=traceback)

    @property
    def address(self) -> tuple[str, int]:
        return tuple(self.server.bind_addr[:2])  # type: ignore[return-value]

    def start(self) -> None:
        """Listen (OSError if it cannot) and serve in a daemon thread."""
        self.server.prepare()
        self._thread = threading.Thread(target=self.server.serve, name="web", daemon=True)
        self._thread.start()
        self.app.view.refresh_in_background()  # the first page need not wait for it

    def stop(self) -> None:
        """Stop serving, let queued actions fail and running ones end, close the stores."""
        if self._thread is not None:
            self.server.stop()
            self._thread.join(timeout=10)
            self._thread = None
        self.app.actions.stop()
        self.app.view.wait_refreshed(10)
        self._close()

    def _close(self) -> None:
        for handle in reversed(self._closing):
            try:
                handle.close()
            except Exception:
                logger.exception("closing %r", handle)
        self._closing = []


__all__ = ["WebServer", "tls_context"]

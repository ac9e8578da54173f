"""The web page: a login-protected view of the fleet, and admin actions with an audit log.

``bcfg2-server`` serves it on ``[web] listen`` (off when empty), over TLS
with its own certificate, on its own port, beside whichever core serves the
agents (``bcfg2.web.server``). The pages read the state ``bcfg2-admin
reports`` reads (runs, client records, probe data) and the metadata through
the Metadata interface's read-only queries (``bcfg2.web.view``); each page
has a JSON twin under ``/api`` (docs/web.md). Users and their roles are in a
file managed with ``bcfg2-admin web user`` (``bcfg2.web.users``); sessions
and CSRF tokens are in ``bcfg2.web.sessions``; admin actions and their
audit log in ``bcfg2.web.audit``. Other modules serve beside the pages with
``mount(path, factory)`` (the Prometheus ``/metrics`` endpoint).

This module stays light (the core imports it to read ``[web] listen``);
``WebServer`` and the pages are imported when the page is switched on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from bcfg2.errors import ConfigError

WSGIApp = Callable[..., Any]
#: what other modules serve beside the pages (``mount``): path -> factory(core) -> a WSGI
#: application (a ``cherrypy.Application`` is one), or None when it is not enabled
EXTRA_MOUNTS: dict[str, Callable[[Any], WSGIApp | None]] = {}


def mount(path: str, make: Callable[[Any], WSGIApp | None]) -> None:
    """Serve another application beside the pages at ``path`` (e.g. ``/metrics``) on the
    web port: ``make(core)`` builds it when the web server starts, or returns None."""
    if not path.startswith("/") or path == "/" or path.endswith("/"):
        raise ValueError(f"mount path {path!r}: like /metrics")
    EXTRA_MOUNTS[path] = make


def web_address(value: str) -> tuple[str, int] | None:
    """``[web] listen``: HOST:PORT (``[::1]:PORT`` for IPv6); None if empty (off)."""
    value = (value or "").strip()
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"[web] listen: {value!r} is not HOST:PORT")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part and part.replace("-", "").isalnum() for part in host.split(".")):
            raise ConfigError(f"[web] listen: {host!r} is not a host name or address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"[web] listen: {port_text!r} is not a port number")
    return host, int(port_text)


def __getattr__(name: str) -> Any:
    if name == "WebServer":
        from bcfg2.web.server import WebServer

        return WebServer
    raise AttributeError(name)


__all__ = ["EXTRA_MOUNTS", "WebServer", "mount", "web_address"]

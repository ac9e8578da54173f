"""The server's TLS context: TLS 1.2 or newer unless tls_min_version says otherwise.

Each test runs a real handshake over a socket pair: the server side in a
thread with ``server_context``, the client side limited to one TLS version
as an old agent would be.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading

import pytest
from conftest import make_setup

from bcfg2.tls import server_context

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

TIMEOUT = 10.0


def setup_for(tmp_path, tls, **overrides):
    return make_setup(tmp_path, communication__key=tls.key,
                      communication__certificate=tls.cert, **overrides)


def agent_context(tls, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context that speaks exactly one TLS version (old ciphers allowed)."""
    ctx = tls.client_context()
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    ctx.minimum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str | None, Exception | None]:
    """The version the client negotiated (None if refused) and the server side's error."""
    server_sock, client_sock = socket.socketpair()
    server_error: list[Exception | None] = [None]

    def serve() -> None:
        try:
            conn = server_ctx.wrap_socket(server_sock, server_side=True)  # the handshake
        except (ssl.SSLError, OSError) as err:
            server_error[0] = err
            return
        with conn, contextlib.suppress(OSError):
            # until the client closes; with TLS 1.3 the session tickets it never reads
            # may make that a reset (Python 3.13), after a complete handshake all the same
            conn.recv(1)

    for sock in (server_sock, client_sock):
        sock.settimeout(TIMEOUT)
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname="127.0.0.1") as conn:
            version = conn.version()
    except ssl.SSLError:
        version = None
    finally:
        client_sock.close()
        thread.join(TIMEOUT)
        server_sock.close()
    assert not thread.is_alive()
    return version, server_error[0]


def tls_1_1_possible(tls) -> bool:
    """Whether this OpenSSL can speak TLS 1.1 at all (both ends at security level 0)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert, tls.key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    version, _ = handshake(ctx, agent_context(tls, ssl.TLSVersion.TLSv1_1))
    return version == "TLSv1.1"


@pytest.fixture
def need_tls_1_1(tls) -> None:
    if not tls_1_1_possible(tls):
        pytest.skip("this OpenSSL cannot negotiate TLS 1.1 even at security level 0")


def test_tls_1_1_is_refused_by_default(tmp_path, tls, need_tls_1_1):
    ctx = server_context(setup_for(tmp_path, tls))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    version, server_error = handshake(ctx, agent_context(tls, ssl.TLSVersion.TLSv1_1))
    assert version is None
    assert "UNSUPPORTED_PROTOCOL" in str(server_error)


@pytest.mark.parametrize(("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                               (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted_by_default(tmp_path, tls, version, name):
    ctx = server_context(setup_for(tmp_path, tls))
    assert handshake(ctx, agent_context(tls, version)) == (name, None)


def test_tls_min_version_1_1_accepts_it_and_warns(tmp_path, tls, need_tls_1_1, caplog):
    with caplog.at_level(logging.WARNING, logger="bcfg2.tls"):
        ctx = server_context(setup_for(tmp_path, tls, communication__tls_min_version="1.1"))
    assert "tls_min_version = 1.1" in caplog.text
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_1
    assert handshake(ctx, agent_context(tls, ssl.TLSVersion.TLSv1_1)) == ("TLSv1.1", None)
    # TLS 1.0 stays refused
    assert handshake(ctx, agent_context(tls, ssl.TLSVersion.TLSv1))[0] is None


def test_tls_min_version_1_3_refuses_1_2_and_does_not_warn(tmp_path, tls, caplog):
    with caplog.at_level(logging.WARNING, logger="bcfg2.tls"):
        ctx = server_context(setup_for(tmp_path, tls, communication__tls_min_version="1.3"))
    assert caplog.records == []
    assert handshake(ctx, agent_context(tls, ssl.TLSVersion.TLSv1_2))[0] is None
    assert handshake(ctx, agent_context(tls, ssl.TLSVersion.TLSv1_3)) == ("TLSv1.3", None)

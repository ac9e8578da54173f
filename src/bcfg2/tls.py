"""The server's TLS context, shared by every network core."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

from bcfg2.errors import CoreInitError
from bcfg2.limits import BurstLog, source_of
from bcfg2.options import Setup
from bcfg2.proxyprotocol import looks_like_header
from bcfg2.untrusted import escaped

if TYPE_CHECKING:
    from bcfg2.connections import Ticket

logger = logging.getLogger(__name__)


MIN_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def server_context(setup: Setup) -> ssl.SSLContext:
    """TLS 1.2 or newer (``tls_min_version``), the server's key pair, client certs if a CA is set.

    Both upstream ``protocol`` values (``xmlrpc/tlsv1``, ``xmlrpc/ssl``)
    negotiate the best version both sides support, never below the minimum.
    Ciphers are the system's defaults.
    """
    comm = setup.communication
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[comm.tls_min_version]
    if comm.tls_min_version in ("1.0", "1.1"):
        logger.warning("[communication] tls_min_version = %s: accepting TLS versions that "
                       "are no longer safe, for old agents", comm.tls_min_version)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at level 1+
    try:
        ctx.load_cert_chain(comm.certificate, comm.key)
    except (OSError, ssl.SSLError) as err:
        raise CoreInitError(f"cannot load the TLS certificate {comm.certificate} and key "
                            f"{comm.key}: {err}") from None
    if comm.ca:
        try:
            ctx.load_verify_locations(comm.ca)
        except (OSError, ssl.SSLError) as err:
            raise CoreInitError(f"cannot load the CA certificate {comm.ca}: {err}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


#: how a plain HTTP request starts (a TLS ClientHello starts with byte 0x16)
HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN",
                b"TRAC")
PLAIN_HTTP_ANSWER = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                     b"Connection: close\r\n\r\n"
                     b"This port speaks HTTPS: the client sent a plain HTTP request.\n")


def refused_before_handshake(sock: ssl.SSLSocket, peer: str, untrusted: BurstLog) -> bool:
    """Refuse what is plainly no TLS ClientHello; True if the connection was refused.

    The first bytes are peeked at before the handshake: they stay in the
    socket for the handshake to read when they are a TLS ClientHello. Plain
    HTTP gets a clear 400. A PROXY protocol header here comes from a peer
    that is not a trusted balancer (the accept loop has consumed theirs), so
    the address it claims would be a lie: the connection is closed, and
    noted in ``untrusted``.
    """
    try:
        first = socket.socket.recv(sock, 4, socket.MSG_PEEK)
    except OSError:
        return False  # the handshake reports it
    if looks_like_header(first):
        untrusted.note(source_of(peer), "Refused a connection from %s: it sent a PROXY "
                               "protocol header but is no trusted balancer ([server] "
                               "proxy_protocol)", escaped(peer))
        return True
    if first[:4] not in HTTP_METHODS:
        return False
    logger.warning("Refused plain HTTP request from %s on the HTTPS port", peer)
    try:
        socket.socket.sendall(sock, PLAIN_HTTP_ANSWER)
    except OSError:
        pass
    return True


#: seconds a TLS handshake under way at shutdown may take to finish
HANDSHAKE_GRACE = 1.0


class Handshakes:
    """TLS handshakes done in the worker threads, which stopping the server may cut short.

    A handshake under way when the server stops gets ``grace`` seconds to
    finish (its request is then served); connections still silent after
    that are cut, so they never hold up a shutdown.
    """

    def __init__(self, grace: float = HANDSHAKE_GRACE) -> None:
        self.grace = grace
        self.closing = False
        self._pending: set[ssl.SSLSocket] = set()
        self._cond = threading.Condition()
        #: refusals of PROXY protocol headers from peers that are no trusted balancers
        self.untrusted_headers = BurstLog(logger, "%s: %d more PROXY protocol headers from "
                                                  "untrusted peers refused in %.0f s (logged "
                                                  "once per burst)")

    def run(self, sock: ssl.SSLSocket, peer: str, ticket: Ticket | None = None) -> bool:
        """Do the handshake of one connection; False if it failed or the server stops.

        A failure is not logged when the server cut the connection (``ticket.cut``):
        the cut was logged, once per burst.
        """
        with self._cond:
            if self.closing:
                return False
            self._pending.add(sock)
        try:
            if refused_before_handshake(sock, peer, self.untrusted_headers):
                return False
            sock.do_handshake()
        except (ssl.SSLError, OSError) as err:
            if ticket is None or not ticket.cut:
                logger.info("TLS handshake with %s failed: %s", peer, err)
            return False
        finally:
            with self._cond:
                self._pending.discard(sock)
                self._cond.notify_all()
        return True

    def close(self) -> None:
        """Refuse new handshakes, wait ``grace`` for those under way, cut the rest."""
        deadline = time.monotonic() + self.grace
        with self._cond:
            self.closing = True
            while self._pending and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            pending = list(self._pending)
        for sock in pending:
            try:
                # the TCP shutdown wakes the worker blocked in do_handshake
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        self.untrusted_headers.flush()

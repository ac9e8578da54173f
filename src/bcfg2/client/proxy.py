"""XML-RPC over HTTPS to the server, as the agent speaks it.

One connection serves the whole run while the server keeps it open (HTTP/1.1
keep-alive); a server that closes after each answer, as upstream's and our
builtin core do, simply gets a new connection per call. A call that meets a
network error is tried again ``retries`` times, waiting ``retry_delay``
seconds, then twice as long each time. A certificate the agent does not
trust, or credentials the server refuses, end the call at once: trying again
cannot help.
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
import time
import urllib.parse
import xmlrpc.client
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from bcfg2.client.errors import (
    AgentError,
    AuthenticationRefused,
    CertificateRefused,
    ProtocolError,
    ServerFault,
    Unreachable,
)
from bcfg2.options import Setup
from bcfg2.untrusted import escaped

#: the largest answer read from the server (a configuration of many large files)
MAX_RESPONSE = 512 * 1024 * 1024
#: what the agent says it is, in DeclareVersion and User-Agent (a 1.4 agent's protocol)
VERSION = "1.4.0"

log = logging.getLogger("bcfg2.client.proxy")
#: how a kept-alive connection the server closed meanwhile fails its next call
DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
           ssl.SSLEOFError, ssl.SSLZeroReturnError)


def tls_context(ca: str | None, cert: str | None, key: str | None,
                server_cns: Sequence[str] = ()) -> ssl.SSLContext:
    """TLS 1.2 or newer; the server checked against ``ca`` (its host name, unless
    ``server_cns`` names the common names to accept); our certificate if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        try:
            ctx.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as err:
            raise AgentError(f"cannot load the CA certificate {ca}: {err}") from None
        ctx.check_hostname = not server_cns
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert or key:
        if not (cert and key):
            raise AgentError("certificate authentication needs both [communication] "
                             "certificate (--ssl-cert) and key (--ssl-key)")
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise AgentError(f"cannot load the client certificate {cert} and key {key}: "
                             f"{err}") from None
    return ctx


def _names(peer: dict[str, Any]) -> list[str]:
    """The names a certificate is for: its common names, then its DNS and IP alt names."""
    names = [value for rdn in peer.get("subject", ()) for name, value in rdn
             if name == "commonName"]
    return names + [value for kind, value in peer.get("subjectAltName", ())
                    if kind in ("DNS", "IP Address") and value not in names]


class Proxy:
    """The server's XML-RPC methods for one run: ``proxy.call("GetConfig")``."""

    def __init__(self, url: str, user: str, password: str | None, *,
                 ca: str | None = None, cert: str | None = None, key: str | None = None,
                 server_cns: Sequence[str] = (), timeout: float = 90.0, retries: int = 3,
                 retry_delay: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise AgentError(f"the server URL {url!r} is not of the form https://host:port")
        self.host = parsed.hostname
        try:
            self.port = parsed.port or 6789
        except ValueError:
            raise AgentError(f"the server URL {url!r} has an invalid port") from None
        self.path = parsed.path or "/RPC2"
        self.where = f"{self.host}:{self.port}"
        self.user = user
        credentials = f"{user}:{password or ''}".encode()
        self._auth = "Basic " + base64.b64encode(credentials).decode("ascii")
        self.server_cns = list(server_cns)
        self.timeout = timeout
        self.retries = max(retries, 0)
        self.retry_delay = max(retry_delay, 0.0)
        self._sleep = sleep
        self._context = tls_context(ca, cert, key, self.server_cns)
        if not ca:
            log.warning("No [communication] ca is set: the server's certificate is not checked")
        self._conn: http.client.HTTPSConnection | None = None
        #: connections opened so far (one per run with keep-alive)
        self.connections = 0

    @classmethod
    def from_setup(cls, setup: Setup) -> Proxy:
        """The proxy of the agent's options ([components] bcfg2, [communication])."""
        comm = setup.communication
        return cls(setup.components.bcfg2, comm.user, comm.password, ca=comm.ca,
                   cert=comm.certificate, key=comm.key, server_cns=comm.serverCommonNames,
                   timeout=comm.timeout, retries=comm.retries, retry_delay=comm.retry_delay)

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` on the server; its answer, or a ServerError saying why not."""
        body = xmlrpc.client.dumps(params, method, allow_none=False).encode("utf-8")
        attempt = 0
        while True:
            reused = self._conn is not None
            try:
                return self._once(method, body)
            except ssl.SSLCertVerificationError as err:
                self.close()
                raise CertificateRefused(
                    f"the certificate of {self.where} is not trusted: "
                    f"{err.verify_message or err.reason}") from None
            except ssl.SSLError as err:
                self.close()
                if not isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                    hint = " (is it an HTTPS server?)" \
                        if err.reason == "WRONG_VERSION_NUMBER" else ""
                    raise CertificateRefused(
                        f"TLS with {self.where} failed: {err.reason or err}{hint}") from None
                error: Exception = err
            except (OSError, http.client.HTTPException) as err:
                self.close()
                error = err
            if reused and isinstance(error, DROPPED):
                continue  # the server closed a kept-alive connection: not a failure
            if attempt >= self.retries:
                raise Unreachable(f"cannot reach the server at {self.where}: "
                                  f"{_reason(error)} (tried {attempt + 1} times)") from None
            delay = self.retry_delay * 2 ** attempt
            log.warning("%s to %s failed: %s; trying again in %.1f s", method, self.where,
                        _reason(error), delay)
            self._sleep(delay)
            attempt += 1

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self._context)
            conn.connect()
            self.connections += 1
            if self.server_cns:
                assert conn.sock is not None
                names = _names(conn.sock.getpeercert() or {})
                if not set(names) & set(self.server_cns):
                    conn.close()
                    raise CertificateRefused(
                        f"the certificate of {self.where} is for {', '.join(names) or 'no name'}"
                        f", not one of [communication] serverCommonNames "
                        f"({', '.join(self.server_cns)})")
            self._conn = conn
        return self._conn

    def _once(self, method: str, body: bytes) -> Any:
        conn = self._connection()
        conn.putrequest("POST", self.path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "text/xml")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Authorization", self._auth)
        conn.putheader("User-Agent", f"bcfg2/{VERSION} (Python 3 agent)")
        conn.putheader("Accept-Encoding", "gzip")  # a kept configuration comes a tenth its size
        conn.endheaders(body)
        response = conn.getresponse()
        data = _read(response)
        coding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if coding == "gzip" and response.status == 200 and len(data) <= MAX_RESPONSE:
            data = _gunzip(data, MAX_RESPONSE, method, self.where)
        elif coding != "identity" and response.status == 200:
            raise ProtocolError(f"the server at {self.where} answered {method} in a coding "
                                f"it was not asked for ({escaped(coding, 40)})")
        if response.will_close or len(data) > MAX_RESPONSE:
            self.close()
        if response.status == 401:
            raise AuthenticationRefused(
                f"the server at {self.where} refused authentication as {self.user!r} "
                "(wrong password, unknown client or a certificate needed)")
        if response.status != 200:
            raise ProtocolError(f"the server at {self.where} answered {method} with HTTP "
                                f"{response.status} {escaped(response.reason, 80)}")
        if len(data) > MAX_RESPONSE:
            raise ProtocolError(f"the answer to {method} exceeds {MAX_RESPONSE} bytes")
        try:
            answer, _ = xmlrpc.client.loads(data, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise ServerFault(method, fault.faultCode,
                              escaped(str(fault.faultString), 300)) from None
        except Exception as err:  # expat and the unmarshaller raise many kinds
            raise ProtocolError(f"the answer to {method} is not XML-RPC: "
                                f"{escaped(str(err), 120)}") from None
        if len(answer) != 1:
            raise ProtocolError(f"the answer to {method} holds {len(answer)} values, not one")
        return answer[0]

    def close(self) -> None:
        """Close the connection (the next call opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _read(response: http.client.HTTPResponse) -> bytes:
    """The body of an answer, at most MAX_RESPONSE + 1 bytes (one read may return less)."""
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_RESPONSE:
        chunk = response.read(min(1 << 16, MAX_RESPONSE + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _gunzip(data: bytes, limit: int, method: str, where: str) -> bytes:
    """A gzip-coded answer decoded, every member of it, to at most ``limit`` + 1 bytes
    (more is refused by the caller, as an uncoded answer that long is)."""
    out: list[bytes] = []
    total = 0
    try:
        while data and total <= limit:
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = member.decompress(data, limit + 1 - total)
            out.append(chunk)
            total += len(chunk)
            if total > limit:
                break
            if not member.eof:
                raise ProtocolError(f"the answer of {where} to {method} is cut short "
                                    f"(gzip)")
            data = member.unused_data
    except zlib.error as err:
        raise ProtocolError(f"the answer of {where} to {method} is not gzip: "
                            f"{escaped(str(err), 120)}") from None
    return b"".join(out)


def _reason(err: BaseException) -> str:
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror})"
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return escaped(str(err) or type(err).__name__, 120)

"""The agent's XML-RPC proxy: keep-alive where the server allows it, retries, clear errors."""

from __future__ import annotations

import base64
import gzip
import http.server
import socket
import ssl
import threading
import xmlrpc.client
from collections.abc import Iterator

import pytest
import trustme
from conftest import state_clients

from bcfg2.client.errors import (
    AuthenticationRefused,
    CertificateRefused,
    ProtocolError,
    ServerFault,
    Unreachable,
)
from bcfg2.client.proxy import Proxy


class Handler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 XML-RPC server: echo, a Fault, a 401 or a 500 by method name."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        server: TinyServer = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        params, method = xmlrpc.client.loads(body)
        server.requests.append((method, self.headers["Authorization"]))
        server.accepted.append(self.headers.get("Accept-Encoding"))
        status, answer, coding = 200, b"", None
        if method == "denied":
            status = 401
        elif method == "broken":
            status = 500
        elif method == "fault":
            answer = xmlrpc.client.dumps(xmlrpc.client.Fault(-32500, "no such client"),
                                         methodresponse=True).encode()
        elif method in CODED:
            answer, coding = CODED[method](list(params)), "br" if method == "brotli" else "gzip"
        else:
            answer = xmlrpc.client.dumps((list(params),), methodresponse=True).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        if coding:
            self.send_header("Content-Encoding", coding)
        self.end_headers()
        self.wfile.write(answer)
        server.served += 1
        if server.close_after and server.served % server.close_after == 0:
            self.close_connection = True  # silently, as an idle timeout does


def _in_two_members(params: list) -> bytes:
    document = xmlrpc.client.dumps((params,), methodresponse=True).encode()
    return gzip.compress(document[:40]) + gzip.compress(document[40:])


#: answers in a content coding, by method name
CODED = {
    "gzipped": _in_two_members,  # as our server sends a kept configuration
    "bomb": lambda params: gzip.compress(b"<" * (4 * 1024 * 1024)),
    "garbled": lambda params: b"\x1f\x8b not really gzip",
    "cut": lambda params: _in_two_members(params)[:-10],
    "brotli": lambda params: b"whatever",
}


class TinyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.cert, tls.key)
        self.context = ctx
        self.requests: list[tuple[str, str]] = []
        self.accepted: list[str | None] = []
        self.connections = 0
        self.served = 0
        self.close_after = 0

    def get_request(self):
        sock, address = super().get_request()
        self.connections += 1
        return self.context.wrap_socket(sock, server_side=True), address


@pytest.fixture
def tiny(tls) -> Iterator[TinyServer]:
    server = TinyServer(tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def proxy_for(port: int, tls, **kwargs) -> Proxy:
    kwargs.setdefault("ca", tls.ca_cert)
    return Proxy(f"https://127.0.0.1:{port}", kwargs.pop("user", "uuid-1"),
                 kwargs.pop("password", "secret"), **kwargs)


def test_one_connection_for_a_run_where_the_server_keeps_it_open(tiny, tls) -> None:
    proxy = proxy_for(tiny.server_address[1], tls)
    for n in range(5):
        assert proxy.call("echo", n, "x") == [n, "x"]
    assert tiny.connections == 1 and proxy.connections == 1
    expected = "Basic " + base64.b64encode(b"uuid-1:secret").decode()
    assert {auth for _, auth in tiny.requests} == {expected}
    proxy.close()


def test_a_kept_connection_the_server_dropped_is_reopened_silently(tiny, tls) -> None:
    tiny.close_after = 2
    sleeps: list[float] = []
    proxy = proxy_for(tiny.server_address[1], tls, sleep=sleeps.append)
    assert [proxy.call("echo", n) for n in range(5)] == [[n] for n in range(5)]
    assert sleeps == []  # no retry: a new connection, at once
    assert tiny.served == 5 and proxy.connections == 3


def test_a_connection_per_call_where_the_server_closes_each(builtin_server, repo, tls) -> None:
    server = builtin_server(repo)
    proxy = proxy_for(server.port, tls, user="uuid-client1", password="pw1")
    for _ in range(3):
        assert proxy.call("DeclareVersion", "1.4.0") is True
    assert proxy.connections == 3


def test_refusals_are_not_retried(tiny, tls) -> None:
    sleeps: list[float] = []
    proxy = proxy_for(tiny.server_address[1], tls, sleep=sleeps.append)
    with pytest.raises(AuthenticationRefused, match="refused authentication as 'uuid-1'"):
        proxy.call("denied")
    with pytest.raises(ProtocolError, match="answered broken with HTTP 500"):
        proxy.call("broken")
    with pytest.raises(ServerFault, match=r"refused fault: no such client \(fault -32500\)"):
        proxy.call("fault")
    assert sleeps == [] and len(tiny.requests) == 3


def test_network_errors_are_retried_with_backoff(tls) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    proxy = proxy_for(port, tls, retries=3, retry_delay=0.5, sleep=sleeps.append)
    with pytest.raises(Unreachable) as err:
        proxy.call("GetProbes")
    assert str(err.value) == (f"cannot reach the server at 127.0.0.1:{port}: "
                              "Connection refused (tried 4 times)")
    assert sleeps == [0.5, 1.0, 2.0]


def test_server_certificate_checks(tiny, tls, tmp_path) -> None:
    port = tiny.server_address[1]
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    with pytest.raises(CertificateRefused, match="is not trusted"):
        proxy_for(port, tls, ca=str(tmp_path / "other.pem")).call("echo")
    with pytest.raises(CertificateRefused, match="not one of"):
        proxy_for(port, tls, server_cns=["bcfg2.example.com"]).call("echo")
    # a name of the certificate (trustme's have subject alternative names only)
    assert proxy_for(port, tls, server_cns=["bcfg2.example.com", "localhost"]).call(
        "echo", 1) == [1]
    # no CA: upstream's agent goes on unauthenticated; so does this one, with a warning
    assert proxy_for(port, tls, ca=None).call("echo", 2) == [2]


def test_a_client_certificate_identifies_the_client(builtin_server, repo, tls) -> None:
    server = builtin_server(repo, ca=True)
    cert, key = tls.client_cert("client2")
    proxy = proxy_for(server.port, tls, user="root", password="globalpw", cert=cert, key=key)
    assert proxy.call("DeclareVersion", "1.4.0-cert") is True
    assert state_clients(repo.path.parent / "state")["client2"]["version"] == "1.4.0-cert"


def test_a_plain_http_server_is_named_as_such(tls) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(CertificateRefused, match=r"WRONG_VERSION_NUMBER \(is it an HTTPS "
                                                     r"server\?\)"):
            proxy_for(server.server_address[1], tls).call("echo")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_gzip_coded_answer_is_read_and_a_bad_or_huge_one_refused(tiny, tls,
                                                                   monkeypatch) -> None:
    proxy = proxy_for(tiny.server_address[1], tls, retries=0)
    assert proxy.call("gzipped", 1, "x") == [1, "x"]
    assert tiny.accepted == ["gzip"]  # the agent asks for it
    monkeypatch.setattr("bcfg2.client.proxy.MAX_RESPONSE", 1024 * 1024)
    for method, reason in [("bomb", "exceeds"), ("garbled", "not gzip"),
                           ("cut", "cut short"), ("brotli", "not asked for")]:
        with pytest.raises(ProtocolError, match=reason):
            proxy.call(method)
    proxy.close()

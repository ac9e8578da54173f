"""Behind a load balancer, on every core: PROXY protocol v2 headers and the health endpoint.

The "balancer" here is the test itself: it connects from 127.0.0.1 (listed
in ``[server] proxy_protocol``), writes a v2 header by hand and then does
the TLS handshake, as HAProxy's ``send-proxy-v2`` with TLS passed through
does. Other peers connect from 127.0.0.2. The last test puts a real
HAProxy in front of the builtin core, configured from examples/haproxy.cfg.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import struct
import subprocess
import threading
import time
import xmlrpc.client

import lxml.etree
import pytest
from conftest import CORES, PLUGINS, make_setup, state_clients, wait_until
from connattack import OTHER, SourceTransport, closed_by_server
from fleet_harness import HAPROXY, free_port, haproxy_config

from bcfg2.errors import ACCESS_DENIED, CoreInitError
from bcfg2.proxyprotocol import SIGNATURE

CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1" floating="true"/>
  <Client name="far-v4" profile="basic" address="192.0.2.10"/>
  <Client name="far-v6" profile="basic" address="2001:db8::5"/>
  <Client name="balancer" profile="basic" address="127.0.0.1"/>
  <Client name="other" profile="basic" address="127.0.0.2"/>
</Clients>
"""
#: how the server's refusals of balancer connections begin in the log
REFUSED_BALANCER = "Refused a connection from balancer 127.0.0.1 ([server] proxy_protocol): "


def proxy_header(source: str | None, port: int = 40000, family: int | None = None) -> bytes:
    """A v2 header as HAProxy writes it: PROXY with TCP addresses, or LOCAL (source None)."""
    if source is None:
        return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    inet = socket.AF_INET6 if ":" in source else socket.AF_INET
    dest = "::1" if inet == socket.AF_INET6 else "127.0.0.1"
    block = (socket.inet_pton(inet, source) + socket.inet_pton(inet, dest)
             + struct.pack("!HH", port, 6789))
    fam = family if family is not None else (0x21 if inet == socket.AF_INET6 else 0x11)
    return SIGNATURE + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block


class HeaderFirst(http.client.HTTPSConnection):
    """An HTTPS connection that writes ``header`` on the TCP connection before TLS."""

    def __init__(self, *args, header: bytes, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header = header

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # plain TCP, from source_address
        self.sock.sendall(self.header)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


class ProxiedTransport(SourceTransport):
    """An agent's transport whose every connection starts with a PROXY header."""

    def __init__(self, source: str, context, header: bytes) -> None:
        super().__init__(source, context)
        self.header = header

    def make_connection(self, host):
        chost, self._extra_headers, x509 = self.get_host_info(host)
        self._connection = host, HeaderFirst(chost, None, context=self.context,
                                             source_address=(self.source, 0),
                                             header=self.header, **(x509 or {}))
        return self._connection[1]


def agent(server, header: bytes | None, user: str = "root", password: str = "globalpw",
          source: str = "127.0.0.1") -> xmlrpc.client.ServerProxy:
    """An agent calling through a hand-made balancer (``header`` None: no header sent)."""
    context = server.tls.client_context()
    transport = (SourceTransport(source, context) if header is None
                 else ProxiedTransport(source, context, header))
    return xmlrpc.client.ServerProxy(f"https://{user}:{password}@127.0.0.1:{server.port}/RPC2",
                                     transport=transport, allow_none=True)


def raw_connection(server, data: bytes, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                    source_address=(source, 0))
    sock.sendall(data)
    return sock


def refused_at_once(server, data: bytes, source: str = "127.0.0.1") -> None:
    """The server closes a connection that sends ``data`` without waiting for more."""
    with raw_connection(server, data, source) as sock:
        wait_until(lambda: closed_by_server(sock), 5, "the server to close the connection")


@pytest.fixture(params=CORES)
def balanced(request, repo, network_server):
    """Factory: a server of each core behind a balancer at 127.0.0.1."""
    repo.write("Metadata/clients.xml", CLIENTS)

    def start(**overrides):
        overrides.setdefault("server__proxy_protocol", "127.0.0.1, 10.0.0.0/8")
        return network_server(repo, core=request.param, **overrides)

    start.repo = repo
    return start


def versions(repo) -> dict[str, str]:
    return {name: row.get("version") for name, row in state_clients(repo.path.parent / "state")
            .items()}


# -- the address in the header ----------------------------------------------------------------

def test_identification_by_address_sees_the_address_in_the_header(balanced):
    server = balanced()
    assert agent(server, proxy_header("192.0.2.10")).DeclareVersion("1.4.1") is True
    assert agent(server, proxy_header("2001:db8::5")).DeclareVersion("1.4.2") is True
    assert agent(server, proxy_header(None)).DeclareVersion("1.4.3") is True  # LOCAL
    seen = versions(balanced.repo)
    assert (seen["far-v4"], seen["far-v6"], seen["balancer"]) == ("1.4.1", "1.4.2", "1.4.3")
    config = lxml.etree.fromstring(agent(server, proxy_header("192.0.2.10")).GetConfig()
                                   .encode())
    assert config.tag == "Configuration"
    # an address no client has is unknown, whoever the balancer is
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        agent(server, proxy_header("192.0.2.99")).DeclareVersion("1.4.0")
    assert info.value.errcode == 401


def test_acls_and_connection_caps_see_the_address_in_the_header(balanced, caplog):
    balanced.repo.write("ACL/ip.xml", """\
        <ACL>
          <Deny address="192.0.2.10" method="GetProbes"/>
        </ACL>
        """)
    server = balanced(server__plugins=PLUGINS + ",ACL")
    with pytest.raises(xmlrpc.client.Fault) as info:
        agent(server, proxy_header("192.0.2.10")).GetProbes()
    assert info.value.faultCode == ACCESS_DENIED
    assert agent(server, proxy_header(None), "uuid-client1", "pw1").GetProbes()
    # a connection whose header has arrived counts for the client's address, not the balancer's
    connections = server.core.server.connections
    with raw_connection(server, proxy_header("192.0.2.10", 40001)):
        wait_until(lambda: (connections.count("192.0.2.10"), connections.count("127.0.0.1"))
                   == (1, 0), 5, "the connection to count for 192.0.2.10, none for 127.0.0.1")


def test_a_header_from_a_peer_that_is_no_balancer_is_refused(balanced, caplog):
    server = balanced()
    caplog.set_level(logging.WARNING, logger="bcfg2")
    for _ in range(3):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            agent(server, proxy_header("192.0.2.10"), source=OTHER).DeclareVersion("1.4.0")
    refusals = [r.getMessage() for r in caplog.records
                if "it sent a PROXY protocol header but is no trusted balancer" in r.getMessage()]
    assert refusals == ["Refused a connection from 127.0.0.2: it sent a PROXY protocol header "
                        "but is no trusted balancer ([server] proxy_protocol)"]  # once per burst
    assert "far-v4" not in versions(balanced.repo)
    # the same peer without a header is an agent like any other, at its own address
    assert agent(server, None, source=OTHER).DeclareVersion("1.4.5") is True
    assert versions(balanced.repo)["other"] == "1.4.5"


def test_without_proxy_protocol_every_header_is_refused(balanced):
    server = balanced(server__proxy_protocol="")
    refused_at_once(server, proxy_header("192.0.2.10"))
    assert agent(server, None).DeclareVersion("1.4.6") is True
    assert versions(balanced.repo) == {"balancer": "1.4.6"}


def test_a_balancer_connection_without_an_acceptable_header_is_refused(balanced, caplog):
    server = balanced()
    caplog.set_level(logging.WARNING, logger="bcfg2")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        agent(server, None).DeclareVersion("1.4.0")  # a TLS ClientHello where the header goes
    wait_until(lambda: REFUSED_BALANCER + "no PROXY protocol header: the connection began a "
               "TLS handshake" in caplog.text, 5, "the refusal to be logged")
    refused_at_once(server, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 6789\r\n",
                    source="127.0.0.1")
    refused_at_once(server, proxy_header("192.0.2.10", family=0x12))  # UDP
    refused_at_once(server, SIGNATURE + b"\x21\x11\xff\xff")  # a 65535-byte block
    assert versions(balanced.repo) == {}
    # refusals of one balancer are logged once per burst, whatever the reason
    assert len([r for r in caplog.records if r.getMessage().startswith(REFUSED_BALANCER)]) == 1
    assert agent(server, proxy_header("192.0.2.10")).DeclareVersion("1.4.7") is True


def test_a_truncated_or_trickled_header_is_cut_at_the_deadline(balanced):
    deadline = 1.0
    server = balanced(server__request_deadline=deadline)
    header = proxy_header("2001:db8::5")
    started = time.monotonic()
    stop = threading.Event()
    cut: list[float] = []

    def trickle() -> None:
        with raw_connection(server, header[:3]) as sock:
            for byte in header[3:-1]:
                if closed_by_server(sock) or stop.wait(0.05):
                    break
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
            wait_until(lambda: closed_by_server(sock) or stop.is_set(), 10, "the cut")
            cut.append(time.monotonic() - started)

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        with raw_connection(server, header[:20]) as truncated:
            # meanwhile the accept loop serves everyone else
            assert agent(server, proxy_header("192.0.2.10")).DeclareVersion("1.4.8") is True
            wait_until(lambda: closed_by_server(truncated), 10, "the truncated header's cut")
            truncated_cut = time.monotonic() - started
    finally:
        trickler.join(timeout=15)
        stop.set()
    assert deadline * 0.9 <= truncated_cut < deadline + 2
    assert cut and deadline * 0.9 <= cut[0] < deadline + 2
    assert "far-v6" not in versions(balanced.repo)


# -- the health endpoint ----------------------------------------------------------------------

def health(server, path: str = "/healthz", method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection(*server.core.health.address, timeout=10)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def test_healthz_says_ok_while_serving_and_503_while_stopping(balanced):
    server = balanced(server__health_port="127.0.0.1:0", server__proxy_protocol="")
    port = server.core.health.port
    wait_until(lambda: health(server)[0] == 200, 120, "the server to serve")  # children load
    assert health(server) == (200, "ok\n")
    assert health(server, "/healthz?from=haproxy") == (200, "ok\n")
    assert health(server, "/")[0] == 404
    assert health(server, "/RPC2", "POST")[0] == 404
    # a request in flight holds the stop up: meanwhile the balancer is told to go elsewhere
    slow = server.tls.client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=10),
        server_hostname="127.0.0.1")
    with slow:
        slow.sendall(b"POST /RPC2 HTTP/1.0\r\n")
        wait_until(lambda: server.core.server.connections.total == 1, 5, "the slow request")
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert wait_until(lambda: health(server) == (503, "stopping\n"), 10, "a 503")
    stopper.join(timeout=30)
    assert server.core.health is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_healthz_is_503_while_the_multiprocessing_children_load(repo, network_server):
    server = network_server(repo, core="multiprocessing", server__children="1",
                            server__health_port="127.0.0.1:0")
    wait_until(lambda: any(c.ready for c in server.core.pool()), 120, "a ready child")
    assert health(server) == (200, "ok\n")
    children = server.core.pool()
    for child in children:
        child.ready = False  # as a freshly started child is, loading the repository
    try:
        assert health(server) == (503, "loading the repository (no child process is ready)\n")
    finally:
        for child in children:
            child.ready = True
    assert health(server) == (200, "ok\n")


def test_healthz_requests_are_bounded_and_timed(balanced):
    server = balanced(server__health_port="127.0.0.1:0", server__proxy_protocol="")
    address = server.core.health.address
    wait_until(lambda: health(server)[0] == 200, 120, "the server to serve")
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nX-Filler: " + b"a" * 5000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 431 ")
    started = time.monotonic()
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /heal")  # and nothing more
        assert sock.recv(100) == b""  # closed at the request timeout, unanswered
    assert time.monotonic() - started < 5
    assert health(server) == (200, "ok\n")


@pytest.mark.parametrize("value", ["0.0.0.0:8080", "192.0.2.1:8080", "[::]:8080",
                                   "localhost:8080", "127.0.0.1:99999"])
def test_the_health_endpoint_listens_on_loopback_only(repo, tls, value):
    from bcfg2.cores.builtin import BuiltinCore

    setup = make_setup(repo, components__bcfg2="https://127.0.0.1:0",
                       communication__password="pw", communication__key=tls.key,
                       communication__certificate=tls.cert, server__health_port=value)
    with pytest.raises(CoreInitError, match=r"\[server\] health_port: "):
        BuiltinCore(setup)


# -- a real HAProxy in front ------------------------------------------------------------------

@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")
def test_an_agent_through_haproxy_is_seen_at_its_own_address(repo, network_server, tmp_path):
    repo.write("Metadata/clients.xml", CLIENTS)
    server = network_server(repo, server__proxy_protocol="127.0.0.1",
                            server__health_port="127.0.0.1:0")
    listen = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(listen, [(server.port, server.core.health.port)],
                                     roundrobin=False))
    check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", listen), timeout=1):
                    return True
            except OSError:
                return False
        wait_until(up, 20, "haproxy to listen")
        wait_until(lambda: server.core.health.checks > 0, 20, "haproxy's first health check")

        class Through:
            port = listen
            tls = server.tls

        # the agent connects to HAProxy from 127.0.0.2; HAProxy connects to the server
        # from 127.0.0.1, and its header names 127.0.0.2
        assert agent(Through, None, source=OTHER).DeclareVersion("1.4.9") is True
        assert versions(repo) == {"other": "1.4.9"}
        assert agent(Through, None, "uuid-client1", "pw1", source=OTHER).GetConfig()
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_a_health_port_in_use_stops_the_start_with_one_clear_line(repo, tls, caplog):
    from bcfg2.cores.builtin import BuiltinCore

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        setup = make_setup(repo, components__bcfg2="https://127.0.0.1:0",
                           communication__password="pw", communication__key=tls.key,
                           communication__certificate=tls.cert,
                           server__health_port=str(port))
        core = BuiltinCore(setup)
        result: list[bool] = []
        runner = threading.Thread(target=lambda: result.append(core.run()))
        runner.start()
        runner.join(timeout=30)
    assert result == [False]
    assert f"Cannot listen on 127.0.0.1:{port} for the health endpoint" in caplog.text
    assert core.server is None  # the agents' port was never opened

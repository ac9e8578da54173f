"""The CherryPy network core, driven over HTTPS as a Bcfg2 1.4 agent does.

Its answers must be those of the builtin core: the reference is the builtin
core itself, started on the same repository, and the content of repo-example/.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import signal
import socket
import ssl
import threading
import xmlrpc.client
from collections.abc import Callable, Iterator

import lxml.etree
import pytest
from test_builtin_core import (
    BY_NAME,
    EXAMPLE_CLIENTS,
    TIMEOUT,
    ExampleClient,
    agent,
    basic_auth,
    check_config,
    client_agent,
    fault_of,
    full_run,
    legacy_context,
    raw_post,
    read_response,
    request_head,
    statistics_for,
    tls_connect,
    web1_works,
)
from test_server_cli import (
    DAEMONIZED,
    LISTENING,
    STARTUP,
    WEB1,
    ServerProcess,
    linux_bundles,
    pid_alive,
    wait_until,
    web1_bundles,
    write_conf,
)

from bcfg2 import xmlrpc as bcfg2_xmlrpc


@pytest.fixture
def cherrypy_server(network_server: Callable[..., object]) -> Callable[..., object]:
    """Factory: start the CherryPy core on 127.0.0.1 port 0 over a repository."""
    return lambda repository, **kwargs: network_server(repository, core="cherrypy", **kwargs)


def agent_sequence(server: object, client: ExampleClient) -> list[object]:
    """What an agent run gets back, call by call, with GetConfig's raw HTTP body."""
    proxy = client_agent(server, client)
    answers: list[object] = [proxy.DeclareVersion("1.4.0pre2"), proxy.GetProbes(),
                             proxy.RecvProbeData("<ProbeData/>"),
                             proxy.GetDecisionList("whitelist")]
    status, body = raw_post(server, xmlrpc.client.dumps((), "GetConfig").encode(),
                            auth=(client.uuid, client.password))
    assert status == 200
    config = lxml.etree.fromstring(xmlrpc.client.loads(body)[0][0].encode())
    answers += [body, proxy.RecvStats(statistics_for(config))]
    return answers


# -- the same answers as the builtin core ------------------------------------------

def test_agent_runs_get_the_same_bytes_as_from_the_builtin_core(example_repo, network_server,
                                                                tmp_path):
    builtin = network_server(example_repo, core="builtin",
                             server__state_dir=str(tmp_path / "state-builtin"))
    cherry = network_server(example_repo, core="cherrypy",
                            server__state_dir=str(tmp_path / "state-cherrypy"))
    for client in EXAMPLE_CLIENTS:
        expected = agent_sequence(builtin, client)
        got = agent_sequence(cherry, client)
        assert got == expected, client.name
        config = lxml.etree.fromstring(xmlrpc.client.loads(got[4])[0][0].encode())
        check_config(config, client)


@pytest.mark.parametrize("client", EXAMPLE_CLIENTS[:2], ids=lambda c: c.name.split(".")[0])
def test_full_agent_run_gives_each_client_its_configuration(example_repo, cherrypy_server,
                                                            client):
    server = cherrypy_server(example_repo)
    check_config(full_run(server, client), client)


# -- authentication and errors ---------------------------------------------------------

def test_wrong_password_is_401_logged_without_password_and_server_keeps_serving(
        example_repo, cherrypy_server, caplog):
    server = cherrypy_server(example_repo)
    web1 = BY_NAME["web1.example.com"]
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        agent(server, web1.uuid, "not-the-password").GetConfig()
    assert info.value.errcode == 401
    headers = {key.lower(): value for key, value in info.value.headers.items()}
    assert headers["www-authenticate"] == 'Basic realm="Bcfg2 Server"'
    failures = [r.getMessage() for r in caplog.records
                if r.name == "bcfg2.cores.cherrypy" and "Authentication failure" in r.getMessage()]
    assert failures and "127.0.0.1" in failures[0] and web1.uuid in failures[0]
    assert "not-the-password" not in caplog.text
    web1_works(server)


def test_no_credentials_is_401(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo)
    status, _ = raw_post(server, xmlrpc.client.dumps((), "GetConfig").encode(), auth=None)
    assert status == 401
    web1_works(server)


def test_unknown_method_and_malformed_body_are_faults(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo)
    with pytest.raises(xmlrpc.client.Fault) as info:
        client_agent(server, BY_NAME["web1.example.com"]).NoSuchMethod()
    assert info.value.faultCode == -32601
    assert "NoSuchMethod" in info.value.faultString
    for body in (b"<methodCall><methodName>GetConfig</methodName><par", b"\x00\xffnot xml"):
        status, reply = raw_post(server, body)
        assert status == 200
        assert fault_of(reply).faultCode == -32700
    web1_works(server)


def test_unexpected_exception_is_a_fault_not_an_error_page(example_repo, cherrypy_server,
                                                           monkeypatch):
    server = cherrypy_server(example_repo)

    def broken(*args: object) -> None:
        raise RuntimeError("broken dispatch 4711")

    monkeypatch.setattr(bcfg2_xmlrpc, "respond", broken)
    status, reply = raw_post(server, xmlrpc.client.dumps((), "GetConfig").encode())
    assert status == 200
    fault = fault_of(reply)
    assert fault.faultCode == bcfg2_xmlrpc.GENERIC_ERROR
    assert "broken dispatch 4711" in fault.faultString
    assert b"Traceback" not in reply and b"<html" not in reply.lower()


def test_billion_laughs_and_external_entities_are_refused_unexpanded(example_repo,
                                                                     cherrypy_server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a9c")
    server = cherrypy_server(example_repo)
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    laughs = ('<?xml version="1.0"?>\n<!DOCTYPE methodCall [' + "".join(entities) + "]>\n"
              "<methodCall><methodName>&lol9;</methodName><params/></methodCall>")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY xxe SYSTEM "file://{secret}">]>'
           "<methodCall><methodName>&xxe;</methodName><params/></methodCall>")
    for body in (laughs, xxe):
        status, reply = raw_post(server, body.encode())
        assert status == 200
        assert fault_of(reply).faultCode == -32700
        assert b"lollol" not in reply and b"TOP-SECRET" not in reply
        assert len(reply) < 2000
    web1_works(server)


def test_oversized_request_is_413_unread(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo, server__max_request_size="1000")
    call = xmlrpc.client.dumps(("9.9.9-" + "x" * 2000,), "DeclareVersion").encode()
    # the body is never sent: the 413 comes from the headers alone
    status, reply = raw_post(server, call, send_body=False)
    assert status == 413
    assert b"1000" in reply
    status, _ = raw_post(server, call)
    assert status == 413
    state = example_repo.path.parent / "state/Metadata/clients.xml"
    assert not state.exists() or b"9.9.9" not in state.read_bytes()
    assert client_agent(server, BY_NAME["web1.example.com"]).DeclareVersion("1.4.0") is True


def test_missing_content_length_is_411_and_get_is_refused(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo)
    with tls_connect(server) as sock:
        sock.sendall(request_head({"Authorization": basic_auth(*WEB1)})
                     + xmlrpc.client.dumps((), "GetConfig").encode())
        status, reply = read_response(sock)
    assert status == 411
    assert b"Content-Length" in reply
    with tls_connect(server) as sock:
        sock.sendall(b"GET /RPC2 HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: {basic_auth(*WEB1)}\r\n\r\n".encode())
        status, reply = read_response(sock)
    assert status == 405
    assert b"POST" in reply and b"<html" not in reply.lower()
    web1_works(server)


def test_truncated_body_times_out_without_holding_up_others(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo, server__connection_timeout="1")
    call = xmlrpc.client.dumps((), "GetConfig").encode()
    with tls_connect(server) as stalled:
        stalled.sendall(request_head({"Authorization": basic_auth(*WEB1),
                                      "Content-Length": str(len(call) + 100)}) + call)
        web1_works(server)  # while the truncated request is open
        status, reply = read_response(stalled)  # the server gives up after 1 s
        assert status == 408
        assert b"request body not received" in reply
    web1_works(server)


# -- TLS ----------------------------------------------------------------------------------

def test_client_certificate_identifies_the_client(example_repo, cherrypy_server, tls):
    server = cherrypy_server(example_repo, ca=True)
    web2 = BY_NAME["web2.example.com"]
    # the agent's default user is root; the certificate says who it is
    config = lxml.etree.fromstring(agent(server, "root", web2.password,
                                         cert=tls.client_cert(web2.name)).GetConfig().encode())
    check_config(config, web2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(example_repo, cherrypy_server, tls):
    server = cherrypy_server(example_repo)
    with pytest.raises(ssl.SSLError) as info:
        tls_connect(server, legacy_context(tls, ssl.TLSVersion.TLSv1_1)).close()
    assert "PROTOCOL_VERSION" in str(info.value)  # the server's alert
    web1_works(server)


def test_silent_connection_does_not_block_other_agents(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo)  # connection_timeout 30 s: it stays open
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        silent.settimeout(TIMEOUT)
        # no TLS handshake from this one: the others are served meanwhile
        for client in EXAMPLE_CLIENTS:
            check_config(full_run(server, client), client)


def test_port_in_use_fails_the_start_and_the_process_lives_on(example_repo, network_server,
                                                               caplog):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = network_server(example_repo, core="cherrypy",
                                components__bcfg2=f"https://127.0.0.1:{port}")
        server.thread.join(TIMEOUT)
        assert not server.thread.is_alive()
    assert any(f"Cannot listen on 127.0.0.1:{port}" in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)


# -- concurrency --------------------------------------------------------------------------

def test_concurrent_agent_runs_each_get_their_own_configuration(example_repo, cherrypy_server):
    server = cherrypy_server(example_repo)
    runs = [EXAMPLE_CLIENTS[i % len(EXAMPLE_CLIENTS)] for i in range(20)]
    barrier = threading.Barrier(len(runs), timeout=TIMEOUT)

    def run(client: ExampleClient) -> tuple[ExampleClient, lxml.etree._Element]:
        barrier.wait()
        return client, full_run(server, client)

    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(run, c) for c in runs]]
    assert len(results) == len(runs)
    for client, config in results:
        check_config(config, client)


# -- bcfg2-server --backend cherrypy as a process --------------------------------------

@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """bcfg2-server processes a test starts; killed at teardown."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of daemons a test starts (not our children); killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_server_process_serves_and_exits_0_on_sigterm(example_repo, tls, tmp_path, processes):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls,
                      server_extra="backend = cherrypy\n")
    server = ServerProcess(["-C", str(conf), "-v"])
    processes.append(server)
    port = server.port()
    assert web1_bundles(tls, port) == linux_bundles(example_repo)
    body = xmlrpc.client.dumps(("1.4.0pre2",), "DeclareVersion").encode()
    # a request in flight and a connection that never handshakes, at SIGTERM
    with socket.create_connection(("127.0.0.1", port)), \
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
            tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(request_head({"Authorization": basic_auth(*WEB1),
                                   "Content-Length": str(len(body))}) + body[:20])
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(re.compile(r"Got signal 15"))
        conn.sendall(body[20:])
        status, reply = read_response(conn)
        assert status == 200
        assert xmlrpc.client.loads(reply)[0] == (True,)
        status, lines = server.finish(timeout=5)
    assert status == 0
    # CherryPy logs nothing to the screen: no access log, no engine messages
    assert not [line for line in lines if "POST /RPC2" in line or "Bus " in line]


def test_daemon_writes_pidfile_serves_and_stops(example_repo, tls, tmp_path, processes,
                                                daemons):
    log = tmp_path / "server.log"
    pidfile = tmp_path / "run" / "bcfg2-server.pid"
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls,
                      logging_extra=f"path = {log}\n")
    launcher = ServerProcess(["-C", str(conf), "--backend", "cherrypy", "-v",
                              "-D", str(pidfile)])
    processes.append(launcher)
    status, _ = launcher.finish(timeout=STARTUP)
    assert status == 0  # the launcher returns once the daemon is detached

    def daemon_port() -> int | None:
        match = LISTENING.search(log.read_text()) if log.exists() else None
        return int(match.group(1)) if match else None

    try:
        port = wait_until(daemon_port, STARTUP, "the daemon's 'Listening on' log line")
        wait_until(lambda: DAEMONIZED.search(log.read_text()), STARTUP, "'Daemonized'")
        pid = int(pidfile.read_text().strip())
    finally:
        if log.exists():
            daemons.extend(int(p) for p in DAEMONIZED.findall(log.read_text()))
    assert daemons == [pid]
    assert pid != launcher.proc.pid
    assert pid_alive(pid)
    assert (pidfile.stat().st_mode & 0o777) == 0o600  # written with [server] umask 0077
    assert web1_bundles(tls, port) == linux_bundles(example_repo)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 10, "the daemon to exit")
    assert not pidfile.exists()


def test_daemon_refuses_pidfile_of_running_server(example_repo, tls, tmp_path, processes):
    pidfile = tmp_path / "bcfg2-server.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live process: "the server is running"
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    server = ServerProcess(["-C", str(conf), "--backend", "cherrypy", "-D", str(pidfile)])
    processes.append(server)
    status, lines = server.finish(timeout=STARTUP)
    assert status != 0
    [line] = [line for line in lines if line.strip()]
    assert str(pidfile) in line
    assert pidfile.read_text().strip() == str(os.getpid())

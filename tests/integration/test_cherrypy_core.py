"""The CherryPy network core, driven over HTTPS as a Bcfg2 1.4 agent does.

Its answers must be those of the builtin core: the reference is the builtin
core itself, started on the same repository, and the content of repo-example/.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import xmlrpc.client
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import pid_alive
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
                if r.name == "bcfg2.xmlrpc" and "Authentication failure" in r.getMessage()]
    assert failures and "127.0.0.1" in failures[0] and web1.uuid in failures[0]
    assert "not-the-password" not in caplog.text
    web1_works(server)






def test_unexpected_exception_is_a_fault_not_an_error_page(example_repo, cherrypy_server,
                                                           monkeypatch):
    server = cherrypy_server(example_repo)

    def broken(*args: object) -> None:
        raise RuntimeError("broken dispatch 4711")

    monkeypatch.setattr(bcfg2_xmlrpc, "handle", broken)
    status, reply = raw_post(server, xmlrpc.client.dumps((), "GetConfig").encode())
    assert status == 200
    fault = fault_of(reply)
    assert fault.faultCode == bcfg2_xmlrpc.GENERIC_ERROR
    assert "broken dispatch 4711" in fault.faultString
    assert b"Traceback" not in reply and b"<html" not in reply.lower()






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




# -- TLS ----------------------------------------------------------------------------------







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


# -- bcfg2-server --backend cherrypy as a process --------------------------------------

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

"""bcfg2-server as a real process: bcfg2.conf, start-up errors, signals, -D."""

from __future__ import annotations

import base64
import http.client
import os
import re
import signal
import socket
import xmlrpc.client
from collections.abc import Callable, Iterator

import lxml.etree
import pytest
from conftest import (
    DAEMONIZED,
    LISTENING,
    STARTUP,
    WEB1,
    Repo,
    ServerProcess,
    pid_alive,
    state_clients,
    wait_until,
    write_conf,
)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start bcfg2-server; every process is killed at teardown."""
    started: list[ServerProcess] = []

    def factory(*args: str) -> ServerProcess:
        server = ServerProcess(list(args))
        started.append(server)
        return server

    yield factory
    for server in started:
        server.kill()




def proxy(tls, port: int, user: str, password: str) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"https://{user}:{password}@127.0.0.1:{port}/RPC2",
                                     context=tls.client_context(), allow_none=True)


def web1_bundles(tls, port: int) -> set[str]:
    config = lxml.etree.fromstring(proxy(tls, port, *WEB1).GetConfig().encode())
    return {b.get("name") for b in config}


def linux_bundles(repo: Repo) -> set[str]:
    """The bundles groups.xml gives to the linux group (every example client)."""
    groups = lxml.etree.parse(str(repo.path / "Metadata/groups.xml"))
    return set(groups.xpath("//Group[@name='linux']/Bundle/@name"))


# -- serving and stopping ----------------------------------------------------------

def test_serves_agents_and_exits_0_on_sigterm(example_repo, tls, tmp_path, start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    server = start_server("-C", str(conf), "-v")
    port = server.port()
    assert proxy(tls, port, *WEB1).DeclareVersion("1.4.0pre2") is True
    assert web1_bundles(tls, port) == linux_bundles(example_repo)
    server.proc.send_signal(signal.SIGTERM)
    status, _ = server.finish(timeout=10)
    assert status == 0


def test_a_misspelt_variable_is_warned_about_at_start_up(example_repo, tls, tmp_path,
                                                        processes):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    server = ServerProcess(["-C", str(conf), "-v"], env={**os.environ,
                                                         "BCFG2_SERVER_MAX_CONECTIONS": "100"})
    processes.append(server)
    server.wait_for(re.compile(r"BCFG2_SERVER_MAX_CONECTIONS sets no option and is ignored "
                               r"\(did you mean BCFG2_SERVER_MAX_CONNECTIONS\?\)"))
    server.port()
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish(timeout=10)[0] == 0


def test_sigterm_as_soon_as_listening_is_a_clean_exit(example_repo, tls, tmp_path,
                                                      start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    server = start_server("-C", str(conf), "-v")
    server.port()
    server.proc.send_signal(signal.SIGTERM)
    status, _ = server.finish(timeout=10)
    assert status == 0


def test_request_in_flight_at_sigterm_is_answered(example_repo, tls, tmp_path, start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    server = start_server("-C", str(conf), "-v")
    port = server.port()
    body = xmlrpc.client.dumps(("1.4.0pre2",), "DeclareVersion").encode()
    auth = base64.b64encode(":".join(WEB1).encode()).decode()
    head = (f"POST /RPC2 HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
            f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw, \
            tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        # the handshake is done: a worker thread is serving this connection
        conn.sendall(head + body[:20])
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(re.compile(r"Got signal 15"))
        conn.sendall(body[20:])
        resp = http.client.HTTPResponse(conn)
        resp.begin()
        assert resp.status == 200
        assert xmlrpc.client.loads(resp.read())[0] == (True,)
    status, _ = server.finish(timeout=10)
    assert status == 0
    assert state_clients(example_repo.path.parent / "state")["web1.example.com"]["version"] == \
        "1.4.0pre2"


def test_silent_connection_does_not_delay_sigterm(example_repo, tls, tmp_path, start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)  # connection timeout 30 s
    server = start_server("-C", str(conf), "-v")
    port = server.port()
    with socket.create_connection(("127.0.0.1", port)):
        assert web1_bundles(tls, port) == linux_bundles(example_repo)
        server.proc.send_signal(signal.SIGTERM)
        status, _ = server.finish(timeout=5)
    assert status == 0


# -- configuration errors ------------------------------------------------------------

def error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.strip()]


def test_invalid_value_exits_2_with_one_line(example_repo, tls, tmp_path, start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls, server_extra="umask = abc\n")
    status, lines = start_server("-C", str(conf), "-v").finish()
    assert status == 2
    [line] = error_lines(lines)
    assert str(conf) in line
    assert "[server]" in line
    assert "umask" in line


def test_missing_password_fails_with_one_line(example_repo, tls, tmp_path, start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls, password=None)
    status, lines = start_server("-C", str(conf), "-v").finish()
    assert status != 0
    [line] = error_lines(lines)
    assert "[communication] password" in line
    assert "Traceback" not in line


def test_unusable_tls_key_fails_with_one_line(example_repo, tls, tmp_path, start_server):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key\n")
    conf.write_text(conf.read_text().replace(f"key = {tls.key}", f"key = {bad_key}"))
    status, lines = start_server("-C", str(conf)).finish()
    assert status != 0
    [line] = error_lines(lines)
    assert str(bad_key) in line


@pytest.mark.parametrize("backend", ["builtin", "multiprocessing", "cherrypy"])
def test_a_plugin_that_cannot_load_fails_with_one_line(example_repo, tls, tmp_path,
                                                        start_server, backend):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls,
                      server_extra=f"backend = {backend}\n")
    conf.write_text(conf.read_text().replace("Rules, Defaults", "Rules, Defaults, Nonexistent"))
    status, lines = start_server("-C", str(conf)).finish()
    assert status == 1
    assert error_lines(lines) == ["bcfg2-server: no plugin named 'Nonexistent'\n"]


# -- daemon mode ---------------------------------------------------------------------

def test_daemon_writes_pidfile_serves_and_stops(example_repo, tls, tmp_path, start_server,
                                                daemons):
    log = tmp_path / "server.log"
    pidfile = tmp_path / "run" / "bcfg2-server.pid"
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls,
                      logging_extra=f"path = {log}\n")
    launcher = start_server("-C", str(conf), "-v", "-D", str(pidfile))
    status, _ = launcher.finish(timeout=STARTUP)
    assert status == 0  # the launcher returns once the daemon is detached

    def daemon_port() -> int | None:
        match = LISTENING.search(log.read_text()) if log.exists() else None
        return int(match.group(1)) if match else None

    try:
        port = wait_until(daemon_port, STARTUP, "the daemon's 'Listening on' log line")
        pid = int(pidfile.read_text().strip())
    finally:
        # whatever happens, the daemon (pid as it logged it) is killed at teardown
        if log.exists():
            daemons.extend(int(p) for p in DAEMONIZED.findall(log.read_text()))
    assert daemons == [pid]
    assert pid != launcher.proc.pid
    assert pid_alive(pid)
    assert web1_bundles(tls, port) == linux_bundles(example_repo)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 10, "the daemon to exit")
    assert not pidfile.exists()


def test_daemon_refuses_pidfile_of_running_server(example_repo, tls, tmp_path, start_server):
    pidfile = tmp_path / "bcfg2-server.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live process: "the server is running"
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    status, lines = start_server("-C", str(conf), "-D", str(pidfile)).finish(timeout=STARTUP)
    assert status != 0
    [line] = error_lines(lines)
    assert str(pidfile) in line
    assert pidfile.read_text().strip() == str(os.getpid())


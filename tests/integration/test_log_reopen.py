"""SIGHUP reopens the log files: what logrotate needs (rename, HUP, a new file)."""

from __future__ import annotations

import os
import re
import signal
import xmlrpc.client
from pathlib import Path

import lxml.etree
import pytest
from conftest import DAEMONIZED, LISTENING, STARTUP, WEB1, ServerProcess, pid_alive, wait_until, write_conf

REOPENED = "Got SIGHUP: reopened the log files"


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def rotate_and_hangup(log: Path, pid: int) -> Path:
    """Rename the log as logrotate does, send SIGHUP, wait for the new file's first line."""
    rotated = log.with_name(log.name + ".1")
    log.rename(rotated)
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: REOPENED in text(log) or not pid_alive(pid), STARTUP,
               "a new log file saying it was reopened")
    assert pid_alive(pid), f"the server died of SIGHUP; its log:\n{text(rotated)[-2000:]}"
    return rotated


def agent(tls, port: int) -> xmlrpc.client.ServerProxy:
    user, password = WEB1
    return xmlrpc.client.ServerProxy(f"https://{user}:{password}@127.0.0.1:{port}/RPC2",
                                     context=tls.client_context(), allow_none=True)


def bundles(tls, port: int) -> int:
    """How many bundles web1's configuration has: the server still serves."""
    return len(lxml.etree.fromstring(agent(tls, port).GetConfig().encode()))


@pytest.mark.parametrize("backend", ["builtin", "cherrypy", "multiprocessing"])
def test_sighup_reopens_the_log_file_after_a_rename(example_repo, tls, tmp_path, processes,
                                                    backend):
    log = tmp_path / "bcfg2-server.log"
    extra = f"backend = {backend}\n" + ("children = 1\n" if backend == "multiprocessing" else "")
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls, server_extra=extra,
                      logging_extra=f"path = {log}\n")
    server = ServerProcess(["-C", str(conf), "-v"])
    processes.append(server)
    port = server.port()
    wait_until(lambda: LISTENING.search(text(log)), STARTUP, "'Listening on' in the log file")
    assert bundles(tls, port) > 0  # serving: past its start-up
    rotated = rotate_and_hangup(log, server.proc.pid)
    assert bundles(tls, port) > 0  # still serving
    assert REOPENED not in text(rotated)
    assert LISTENING.search(text(rotated))  # the old lines stay where they were
    # a second rotation works the same way
    rotate_and_hangup(log, server.proc.pid)
    server.proc.send_signal(signal.SIGTERM)
    status, _ = server.finish(timeout=20)
    assert status == 0
    assert re.search(r"Got signal 15, shutting down", text(log))


@pytest.mark.parametrize("backend", ["builtin", "cherrypy"])
def test_a_daemon_reopens_its_log_file_on_sighup(example_repo, tls, tmp_path, processes, daemons,
                                                 backend):
    log = tmp_path / "bcfg2-server.log"
    pidfile = tmp_path / "run" / "bcfg2-server.pid"
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls,
                      server_extra=f"backend = {backend}\n", logging_extra=f"path = {log}\n")
    launcher = ServerProcess(["-C", str(conf), "-v", "-D", str(pidfile)])
    processes.append(launcher)
    assert launcher.finish(timeout=STARTUP)[0] == 0
    try:
        match = wait_until(lambda: LISTENING.search(text(log)), STARTUP, "the daemon listening")
    finally:
        daemons.extend(int(p) for p in DAEMONIZED.findall(text(log)))
    pid = int(pidfile.read_text())
    port = int(match.group(1))
    # the daemon writes its state (SQLite, opened before it forked): a version, a run
    assert agent(tls, port).DeclareVersion("1.4.0") is True
    rotate_and_hangup(log, pid)
    assert bundles(tls, port) > 0
    assert "locking protocol" not in text(log)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), 10, "the daemon to exit")

"""The systemd service files of examples/systemd, and the server's side of Type=notify."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STARTUP, ServerProcess, write_conf

from bcfg2 import options
from bcfg2.limits import FD_RESERVE
from bcfg2.sdnotify import notify

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "examples" / "systemd"
UNIT = UNITS / "bcfg2-server.service"


def unit_settings() -> dict[str, list[str]]:
    """The [Service] settings of the unit, each with every value it is given."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def option_default(dest: str):
    return next(opt.default for opt in options.OPTIONS if opt.dest == dest)


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart exists: point it at the bcfg2-server of this environment
    here = Path(sys.executable).parent / "bcfg2-server"
    unit = tmp_path / "bcfg2-server.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/bcfg2-server", str(here)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    # a misspelt or unknown setting is only a warning (exit 0) naming the file: none allowed
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if unit.name in line]
    assert (done.returncode, complaints) == (0, [])


def test_the_hardening_is_on():
    settings = unit_settings()
    assert settings["Type"] == ["notify"]  # the server sends READY=1 (below)
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == [option_default("server.state_dir")]
    for flag in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert settings[flag] == ["true"], flag
    assert settings["User"] == ["bcfg2"]


def test_the_open_files_limit_covers_the_connection_cap():
    (limit,) = unit_settings()["LimitNOFILE"]
    assert int(limit) >= option_default("server.max_connections") + FD_RESERVE


def test_sysusers_and_tmpfiles_make_the_user_and_the_state_directory(tmp_path):
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        pytest.skip("systemd-sysusers or systemd-tmpfiles is not installed (package systemd)")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles gives the directories to bcfg2: needs root")
    (tmp_path / "etc").mkdir()
    for tool, snippet in ((sysusers, "bcfg2-server.sysusers"), (tmpfiles, "bcfg2-server.tmpfiles")):
        args = [tool, f"--root={tmp_path}"] + (["--create"] if tool == tmpfiles else [])
        done = subprocess.run([*args, str(UNITS / snippet)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in
              (tmp_path / "etc" / "passwd").read_text().splitlines()}
    uid = int(passwd["bcfg2"][2])
    assert passwd["bcfg2"][5] == option_default("server.state_dir")
    state = tmp_path / option_default("server.state_dir").lstrip("/")
    assert state.is_dir()
    assert (state.stat().st_uid, state.stat().st_mode & 0o7777) == (uid, 0o750)


@pytest.fixture
def notify_socket():
    """A datagram socket in the abstract namespace, as systemd gives a Type=notify service."""
    name = f"@bcfg2-test-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(STARTUP)
    yield name, sock
    sock.close()


def test_notify_sends_to_the_socket_and_nothing_without_one(notify_socket, tmp_path):
    name, sock = notify_socket
    assert notify("READY=1", {"NOTIFY_SOCKET": name}) is True
    assert sock.recv(4096) == b"READY=1"
    assert notify("READY=1", {}) is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as by_path:
        by_path.bind(str(path))
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": str(path)}) is True
        assert by_path.recv(4096) == b"STOPPING=1"


def test_a_socket_nobody_listens_on_is_a_warning(tmp_path, caplog):
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "Cannot tell systemd READY=1" in caplog.text


@pytest.mark.parametrize("backend", ["builtin", "cherrypy"])
def test_the_server_says_ready_once_listening_and_stopping_at_sigterm(
        example_repo, tls, tmp_path, processes, notify_socket, backend):
    name, sock = notify_socket
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls,
                      server_extra=f"backend = {backend}\n")
    server = ServerProcess(["-C", str(conf), "-v"], env={**os.environ, "NOTIFY_SOCKET": name})
    processes.append(server)
    port = server.port()
    ready = sock.recv(4096).decode()
    assert ready.splitlines() == ["READY=1", f"STATUS=Listening on https://127.0.0.1:{port}"]
    server.proc.send_signal(signal.SIGTERM)
    assert sock.recv(4096) == b"STOPPING=1"
    assert server.finish(timeout=20)[0] == 0


"""Daemonizing: pidfiles and privileges."""

from __future__ import annotations

import os

import pytest
from conftest import make_setup

from bcfg2.daemonize import daemon_context, remove_stale_pidfile
from bcfg2.errors import CoreInitError


def ignore(signum: int, frame: object) -> None:
    """A signal handler that does nothing (these tests never send one)."""


def test_a_stale_pidfile_is_removed(tmp_path):
    pidfile = tmp_path / "bcfg2-server.pid"
    pidfile.write_text("999999999\n")  # beyond the kernel's pid range: no such process
    remove_stale_pidfile(str(pidfile))
    assert not pidfile.exists()


def test_a_pidfile_of_a_running_server_refuses_to_start(tmp_path):
    pidfile = tmp_path / "bcfg2-server.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    with pytest.raises(CoreInitError, match="already running"):
        remove_stale_pidfile(str(pidfile))
    assert pidfile.exists()


def test_without_root_the_default_user_is_kept(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    setup = make_setup(repo)
    setup.daemon = str(tmp_path / "run" / "server.pid")
    context = daemon_context(setup, [], ignore, ignore)
    assert context.uid == os.getuid() and context.gid == os.getgid()


def test_without_root_switching_user_is_a_clear_error(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    setup = make_setup(repo, server__user="4242", server__group="4242")
    setup.daemon = str(tmp_path / "run" / "server.pid")
    with pytest.raises(CoreInitError, match=r"\[server\] user/group"):
        daemon_context(setup, [], ignore, ignore)


def test_the_cores_descriptors_survive_daemonizing(repo, tmp_path, local_core):
    read_end, write_end = os.pipe()
    try:
        setup = make_setup(repo)
        setup.daemon = str(tmp_path / "run" / "server.pid")
        context = daemon_context(setup, [read_end, write_end], ignore, ignore)
        assert {read_end, write_end} <= set(context.files_preserve)
    finally:
        os.close(read_end)
        os.close(write_end)

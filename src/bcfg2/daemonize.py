"""Daemonization with python-daemon: pidfile, privileges, umask, kept files."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
from collections.abc import Callable
from typing import Any

import daemon
import daemon.pidfile

from bcfg2.errors import CoreInitError
from bcfg2.options import Setup


def _id(value: str, lookup: Callable[[str], Any], what: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return lookup(value)[2]
    except KeyError:
        raise CoreInitError(f"[server] {what}: no such {what} {value!r}") from None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_pidfile(path: str) -> None:
    """A pidfile naming a process that is gone is left from a crash: remove it."""
    try:
        with open(path) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid and _pid_running(pid):
        raise CoreInitError(f"pidfile {path}: the server is already running as pid {pid}")
    os.unlink(path)


def prepare_pidfile(path: str) -> str:
    """The absolute path of a pidfile, its directory made and a stale pidfile removed."""
    pidfile = os.path.abspath(path)
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    remove_stale_pidfile(pidfile)
    return pidfile


def daemon_ids(setup: Setup) -> tuple[int, int] | None:
    """The uid and gid of [server] user/group, or None: without root the current user stays."""
    uid = _id(setup.server.user, pwd.getpwnam, "user")
    gid = _id(setup.server.group, grp.getgrnam, "group")
    if os.geteuid() == 0:
        return uid, gid
    if (uid, gid) not in ((0, 0), (os.getuid(), os.getgid())):
        raise CoreInitError(f"[server] user/group: cannot switch to {setup.server.user}:"
                            f"{setup.server.group} without running as root")
    return None


def daemon_context(setup: Setup, keep: list[int], on_signal: Callable[[int, Any], None],
                   on_hangup: Callable[[int, Any], None]) -> Any:
    """A DaemonContext that keeps the log files and the core's descriptors (``keep``) open.

    ``on_signal`` answers SIGTERM and SIGINT, ``on_hangup`` SIGHUP (the log files).
    """
    pidfile = prepare_pidfile(setup.daemon)
    ids = daemon_ids(setup)
    preserve = []
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None) or getattr(handler, "socket", None)
        if stream is not None and hasattr(stream, "fileno"):
            try:
                preserve.append(stream.fileno())
            except (OSError, ValueError):
                pass
    preserve.extend(keep)
    kwargs: dict[str, Any] = {}
    if ids is not None:
        kwargs.update(uid=ids[0], gid=ids[1])
    return daemon.DaemonContext(
        umask=setup.server.umask,
        pidfile=daemon.pidfile.TimeoutPIDLockFile(pidfile, acquire_timeout=5),
        files_preserve=preserve,
        signal_map={signal.SIGTERM: on_signal, signal.SIGINT: on_signal,
                    signal.SIGHUP: on_hangup},
        **kwargs,
    )

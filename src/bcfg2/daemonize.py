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


def daemon_context(setup: Setup, fam: Any, on_signal: Callable[[int, Any], None]) -> Any:
    """A DaemonContext that keeps the log files and the file monitor open."""
    pidfile = os.path.abspath(setup.daemon)
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    remove_stale_pidfile(pidfile)
    uid = _id(setup.server.user, pwd.getpwnam, "user")
    gid = _id(setup.server.group, grp.getgrnam, "group")
    preserve = []
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None) or getattr(handler, "socket", None)
        if stream is not None and hasattr(stream, "fileno"):
            try:
                preserve.append(stream.fileno())
            except (OSError, ValueError):
                pass
    if fam is not None:
        preserve.extend(fam.fds())
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs.update(uid=uid, gid=gid)
    elif (uid, gid) not in ((0, 0), (os.getuid(), os.getgid())):
        raise CoreInitError(f"[server] user/group: cannot switch to {setup.server.user}:"
                            f"{setup.server.group} without running as root")
    return daemon.DaemonContext(
        umask=setup.server.umask,
        pidfile=daemon.pidfile.TimeoutPIDLockFile(pidfile, acquire_timeout=5),
        files_preserve=preserve,
        signal_map={signal.SIGTERM: on_signal, signal.SIGINT: on_signal,
                    signal.SIGHUP: None},
        **kwargs,
    )

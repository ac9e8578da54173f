"""Logging set-up for the server and the local tools."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from bcfg2.options import Setup
from bcfg2.untrusted import one_line

FORMAT = "%(asctime)s %(name)s[%(process)d]: %(levelname)s %(message)s"


class OneLineFormatter(logging.Formatter):
    """A formatter that keeps each message on its line: control characters in it are escaped.

    Messages carry what clients send (method names, profiles, entry names);
    a newline there would otherwise forge a log line of its own. A
    traceback, added after the message, keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = one_line(record.message)
        return super().formatMessage(record)


def log_level(setup: Setup) -> int:
    """The most detailed of ``[logging] level`` (a name), ``debug`` and ``verbose``.

    So ``-v`` on the command line still shows more than ``level = error`` in
    bcfg2.conf; neither set: warning.
    """
    levels: list[int] = []
    name = getattr(setup.logging, "level", "")
    if name:
        levels.append(logging.getLevelNamesMapping()[name.upper()])
    if setup.logging.debug:
        levels.append(logging.DEBUG)
    if setup.logging.verbose:
        levels.append(logging.INFO)
    return min(levels, default=logging.WARNING)


def setup_logging(setup: Setup, console: bool = True, prog: str = "bcfg2-server") -> None:
    """Log to stderr (when in the foreground), a file and syslog as configured."""
    level = log_level(setup)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level)
    if console:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(handler)
    if setup.logging.path:
        handler = logging.handlers.WatchedFileHandler(setup.logging.path)
        handler.setFormatter(OneLineFormatter(FORMAT))
        root.addHandler(handler)
    if setup.logging.syslog and os.path.exists("/dev/log"):
        try:
            handler = logging.handlers.SysLogHandler(
                "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            pass
        else:
            handler.setFormatter(OneLineFormatter(prog + "[%(process)d]: %(message)s"))
            root.addHandler(handler)


def reopen_logs() -> list[str]:
    """Reopen the log files whose path now names another file, or none (``SIGHUP``).

    After logrotate renames ``bcfg2-server.log``, the next line goes to a new
    file of that name, created now. The paths of the files are returned.
    """
    paths = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.acquire()  # no line is half written to the old file meanwhile
            try:
                handler.reopenIfNeeded()
            finally:
                handler.release()
            paths.append(handler.baseFilename)
    return paths


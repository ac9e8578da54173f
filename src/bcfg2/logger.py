"""Logging set-up for the server and the local tools."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from bcfg2.options import Setup

FORMAT = "%(asctime)s %(name)s[%(process)d]: %(levelname)s %(message)s"


def setup_logging(setup: Setup, console: bool = True, prog: str = "bcfg2-server") -> None:
    """Log to stderr (when in the foreground), a file and syslog as configured."""
    if setup.logging.debug:
        level = logging.DEBUG
    elif setup.logging.verbose:
        level = logging.INFO
    else:
        level = logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level)
    if console:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(handler)
    if setup.logging.path:
        handler = logging.handlers.WatchedFileHandler(setup.logging.path)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    if setup.logging.syslog and os.path.exists("/dev/log"):
        try:
            handler = logging.handlers.SysLogHandler(
                "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            pass
        else:
            handler.setFormatter(logging.Formatter(prog + "[%(process)d]: %(message)s"))
            root.addHandler(handler)

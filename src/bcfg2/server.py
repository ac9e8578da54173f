"""bcfg2-server: start the network core named by [server] backend."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from bcfg2 import options
from bcfg2.core import NetworkCore
from bcfg2.errors import ConfigError, CoreInitError
from bcfg2.logger import setup_logging
from bcfg2.plugin.manager import find_core


def load_core(name: str) -> type[NetworkCore]:
    """The network core class for a ``[server] backend`` name (see bcfg2.plugin.manager)."""
    return find_core(name)


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(count: int = 2) -> None:
    """Let glibc keep few malloc arenas.

    glibc gives threads arenas of their own (up to eight per CPU); a server
    that serves each connection in a new thread then holds memory it no
    longer uses. Child processes inherit the limit through the environment.
    """
    os.environ.setdefault("MALLOC_ARENA_MAX", str(count))
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, count)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv: Sequence[str] | None = None) -> int:
    try:
        setup = options.load(argv, prog="bcfg2-server",
                             description="Serve Bcfg2 configurations to agents over XML-RPC.",
                             daemon_flag=True)
    except ConfigError as err:
        print(f"bcfg2-server: {err}", file=sys.stderr)
        return 2
    setup_logging(setup, console=not setup.daemon)
    for var, meant in options.misspelt_variables():
        logging.getLogger("bcfg2.server").warning(
            "%s sets no option and is ignored (did you mean %s?)", var, meant)
    limit_malloc_arenas()
    try:
        core = load_core(setup.server.backend)(setup)
    except (CoreInitError, ConfigError) as err:
        print(f"bcfg2-server: {err}", file=sys.stderr)
        return 1
    try:
        return 0 if core.run() else 1
    except CoreInitError as err:
        # e.g. daemonizing: a pidfile of a running server, an unknown [server] user
        core.shutdown()
        print(f"bcfg2-server: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

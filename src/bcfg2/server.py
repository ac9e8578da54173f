"""bcfg2-server: start the network core named by [server] backend."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from bcfg2 import options
from bcfg2.core import NetworkCore
from bcfg2.errors import ConfigError, CoreInitError
from bcfg2.logger import setup_logging

#: core name -> "module:Class"; imported only when chosen
CORES = {
    "builtin": "bcfg2.cores.builtin:BuiltinCore",
    "multiprocessing": "bcfg2.cores.multiprocessing:MultiprocessingCore",
    "cherrypy": "bcfg2.cores.cherrypy:CherrypyCore",
}
def best_core() -> str:
    """The recommended core: rendering in parallel where there is more than one CPU."""
    return "multiprocessing" if (os.cpu_count() or 1) > 1 else "builtin"


def load_core(name: str) -> type[NetworkCore]:
    """The network core class for a ``[server] backend`` name."""
    if name == "best":
        name = best_core()
    target = CORES.get(name)
    if target is None:
        from importlib import metadata  # only for third-party cores: a heavy import

        for ep in metadata.entry_points(group="bcfg2.cores"):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise CoreInitError(f"[server] backend: no core named {name!r}")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as err:
        raise CoreInitError(f"[server] backend: core {name} cannot be loaded: {err}") from err


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

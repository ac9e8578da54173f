"""bcfg2-info: see the repository as the server sees it, with no network.

It loads a LocalCore (every plugin, the whole repository) and answers
questions about it: a client's metadata, its abstract entries, a rendered
bundle, the bound configuration or a single bound file (for one client or
for all of them), which generator handles what, and the effective options.
Run with a command it answers that one and exits (non-zero on an error);
run without one it opens an interactive shell with history and tab
completion of commands, clients, bundles and entries.

Repository changes are not picked up on their own: ``update`` reads them,
so a session keeps a stable view while the admin edits files.

Layout: ``shell`` runs command lines (errors, output, help); the commands
are grouped in ``build``, ``query`` and ``debug``, the interactive loop
and tab completion in ``completion``; ``InfoShell`` puts them together.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence

from bcfg2 import options, tools
from bcfg2.info.build import BuildCommands
from bcfg2.info.completion import Completion
from bcfg2.info.debug import DebugCommands, profile_summary
from bcfg2.info.query import QueryCommands
from bcfg2.info.shell import PROG, CommandError, command

__all__ = ["CommandError", "InfoShell", "PROG", "command", "main", "make_parser", "run"]

HISTORY_ENV = "BCFG2_INFO_HISTORY"
DEFAULT_HISTORY = "~/.bcfg2_info_history"


class InfoShell(BuildCommands, QueryCommands, DebugCommands, Completion):
    """Every bcfg2-info command over one LocalCore (see ``bcfg2.info.shell.Shell``)."""


def make_parser() -> argparse.ArgumentParser:
    """The command line: the server's options, bcfg2-info's own, then a command."""
    parser = options.make_parser(PROG, "Examine a Bcfg2 repository as the server sees it.")
    parser.add_argument("--profile", action="store_true",
                        help="print the start-up and command times and a cProfile summary "
                             "to stderr")
    parser.add_argument("--history", metavar="FILE", default=None,
                        help=f"readline history of the interactive shell (default "
                             f"${HISTORY_ENV}, else {DEFAULT_HISTORY})")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="a command and its arguments; without one, an interactive "
                             "shell starts")
    return parser


def history_file(option: str | None) -> str:
    """The history file: --history, else $BCFG2_INFO_HISTORY, else ~/.bcfg2_info_history."""
    return os.path.expanduser(option or os.environ.get(HISTORY_ENV) or DEFAULT_HISTORY)


def run(argv: Sequence[str] | None) -> int:
    """bcfg2-info proper; errors are raised for tools.run to report."""
    setup, ns = tools.parse(make_parser(), argv, PROG)
    profiler = cProfile.Profile() if ns.profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        with tools.local_core(setup) as core:
            loaded = time.perf_counter()
            shell = InfoShell(core, history=None if setup.args else history_file(ns.history))
            if setup.args:
                shell.onecmd(shlex.join(setup.args))
                status = shell.status
            else:
                shell.interact()
                status = 0
            finished = time.perf_counter()
    finally:
        if profiler is not None:
            profiler.disable()
    if profiler is not None:
        print(f"{PROG}: core start-up {loaded - started:.3f}s, "
              f"{'command' if setup.args else 'session'} {finished - loaded:.3f}s",
              file=sys.stderr)
        print(profile_summary(profiler), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``bcfg2-info [options] command args...``) or the shell."""
    words = list(argv if argv is not None else sys.argv[1:])
    return tools.run(PROG, lambda: run(words),
                     debug=lambda: logging.getLogger().isEnabledFor(logging.DEBUG))

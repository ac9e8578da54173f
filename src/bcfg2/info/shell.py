"""The bcfg2-info shell itself: running one command line, errors, output, help.

The commands live in one module per group (build, query, debug) as classes
over ``Shell``; ``bcfg2.info.InfoShell`` puts them together. ``command``
turns a ``do_x(self, words)`` method into a command that checks its
arguments and knows its usage line.
"""

from __future__ import annotations

import cmd
import contextlib
import functools
import inspect
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bcfg2.core import LocalCore
from bcfg2.errors import Bcfg2Error
from bcfg2.metadata import ClientMetadata
from bcfg2.testrun import quiet_builds

PROG = "bcfg2-info"
logger = logging.getLogger("bcfg2.info")
#: the address admin methods of the core are called with: a local tool is local
LOCAL = ("127.0.0.1", 0)
#: commands whose point is (or may be) the log: not quietened
LOGGING_COMMANDS = frozenset({"update", "event_debug", "debug", "profile"})


class CommandError(Exception):
    """A command cannot run (bad arguments, unknown client...): one line for the user."""


Command = Callable[["Shell", list[str]], Any]


def command(usage: str, least: int = 0, most: int | None = 0,
            complete: Sequence[str | None] = ()) -> Callable[[Command], Callable]:
    """Turn ``do_x(self, words)`` into a cmd handler that checks its argument count.

    ``most=None`` allows any number of arguments. The usage line is kept on
    the handler for ``help`` and for the error a wrong call gets. ``complete``
    names what each argument is, for tab completion (see ``Completion.candidates``);
    a kind ending in ``*`` also stands for every argument after it.
    """
    def decorate(func: Command) -> Callable[[Shell, str], Any]:
        @functools.wraps(func)
        def handler(self: Shell, arg: str) -> Any:
            try:
                words = shlex.split(arg)
            except ValueError as err:
                raise CommandError(f"{err}; usage: {usage}") from None
            if len(words) < least or (most is not None and len(words) > most):
                raise CommandError(f"usage: {usage}")
            return func(self, words)

        handler.usage = usage  # type: ignore[attr-defined]
        handler.arguments = tuple(complete)  # type: ignore[attr-defined]
        return handler
    return decorate


def table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> str:
    """Rows as left-aligned columns under a header line."""
    grid = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in grid) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                        row[-1]]).rstrip() for row in grid]
    return "\n".join(lines) + "\n"


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def joined(items: Iterable[str]) -> str:
    """A sorted, comma-separated list, or "(none)"."""
    return ", ".join(sorted(items)) or "(none)"


class Shell(cmd.Cmd):
    """The bcfg2-info commands over one LocalCore: the plumbing every command group shares.

    ``status`` is the exit status of the last command: 0, or 1 after an
    error; errors go to stderr as one line each. ``history`` is the readline
    history file of the interactive loop (None: no history).
    """

    prompt = "> "

    def __init__(self, core: LocalCore, history: str | None = None) -> None:
        super().__init__()
        self.core = core
        self.status = 0
        self.history = history

    # -- plumbing ------------------------------------------------------------

    def onecmd(self, line: str) -> bool:
        """Run one command line; errors become one line on stderr and status 1."""
        self.status = 0
        words = line.split()
        # commands that build report the problems themselves, once; update must let the
        # log show what is wrong with a file just edited
        quiet = quiet_builds() if words and words[0] not in LOGGING_COMMANDS \
            else contextlib.nullcontext()
        try:
            with quiet:
                return bool(super().onecmd(line))
        except (CommandError, Bcfg2Error) as err:
            self.error(str(err))
        except BrokenPipeError:  # the reader went away (| head): bcfg2.tools.run's business
            raise
        except Exception as err:
            logger.debug("command %r failed", line, exc_info=True)
            self.error(f"{line.split()[0]} failed: {err.__class__.__name__}: {err} "
                       f"(-d shows the traceback)")
        return False

    def error(self, message: str) -> None:
        """Report a failed command."""
        self.status = 1
        print(f"{PROG}: {message}", file=sys.stderr)

    def out(self, text: str) -> None:
        self.stdout.write(text if text.endswith("\n") else text + "\n")

    def emptyline(self) -> bool:
        """An empty line does nothing (cmd would repeat the last command)."""
        return False

    def default(self, line: str) -> bool:
        raise CommandError(f"unknown command {line.split()[0]!r}; 'help' lists the commands")

    def get_names(self) -> list[str]:
        """Every attribute name, minus do_EOF, so that help does not list it."""
        return [name for name in super().get_names() if name != "do_EOF"]

    def do_help(self, arg: str) -> bool:
        """List the commands, or show how to use one: help [command]"""
        topic = arg.strip()
        if not topic:
            super().do_help("")
            return False
        handler = getattr(self, f"do_{topic}", None)
        if handler is None or topic == "EOF":
            raise CommandError(f"unknown command {topic!r}; 'help' lists the commands")
        usage = getattr(handler, "usage", None)
        if usage:
            self.out(f"usage: {usage}")
        self.out(inspect.getdoc(handler) or "")
        return False

    # -- helpers -------------------------------------------------------------

    def client(self, name: str) -> str:
        """The canonical name of a known client or alias; never registers a new one.

        Building metadata for an unknown name would register it with the
        default profile, which a look at the repository must not do.
        """
        client = self.core.metadata.resolve_name(name)
        if client is None:
            raise CommandError(f"unknown client {name!r}; 'clients' lists them")
        return client

    def metadata(self, name: str) -> ClientMetadata:
        return self.core.build_metadata(self.client(name))

    def group_names(self) -> list[str]:
        """Names of every group the Metadata plugin declares."""
        return [group.name for group in self.core.metadata.list_groups()]

    def targets(self, words: Sequence[str]) -> list[str]:
        """The clients named, or members of the groups named; every client if none."""
        clients = self.core.metadata.list_clients()
        if not words:
            return clients
        groups = set(self.group_names())
        chosen: set[str] = set()
        wanted_groups = []
        for word in words:
            client = self.core.metadata.resolve_name(word)
            if client is not None:
                chosen.add(client)
            elif word in groups:
                wanted_groups.append(word)
            else:
                raise CommandError(f"{word!r} is neither a client nor a group; 'clients' and "
                                   f"'groups' list them")
        if wanted_groups:
            for client in clients:
                if client not in chosen and any(
                        g in self.core.build_metadata(client).groups for g in wanted_groups):
                    chosen.add(client)
        return sorted(chosen)

    @staticmethod
    def write(path: str, text: str) -> None:
        """Write a file, creating its directory; a failure is a CommandError."""
        try:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as err:
            raise CommandError(f"cannot write {path}: {err.strerror}") from None

    # -- leaving -------------------------------------------------------------

    @command("quit")
    def do_quit(self, words: list[str]) -> bool:
        """Leave bcfg2-info."""
        return True

    @command("exit")
    def do_exit(self, words: list[str]) -> bool:
        """Leave bcfg2-info (as quit does)."""
        return True

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 - the name cmd gives Ctrl-D
        """Leave on Ctrl-D."""
        self.out("")
        return True

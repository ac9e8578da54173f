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
"""

from __future__ import annotations

import argparse
import cmd
import code
import contextlib
import cProfile
import functools
import inspect
import io
import logging
import os
import pstats
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lxml.etree

from bcfg2 import options, tools
from bcfg2.core import LocalCore
from bcfg2.errors import Bcfg2Error
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Generator, PropertyFiles, Structure
from bcfg2.testrun import build_client, config_failures, find_bundle, quiet_builds
from bcfg2.xml import tostring

PROG = "bcfg2-info"
HISTORY_ENV = "BCFG2_INFO_HISTORY"
DEFAULT_HISTORY = "~/.bcfg2_info_history"
logger = logging.getLogger("bcfg2.info")
#: the address admin methods of the core are called with: a local tool is local
LOCAL = ("127.0.0.1", 0)
#: commands whose point is (or may be) the log: not quietened
LOGGING_COMMANDS = frozenset({"update", "event_debug", "debug", "profile"})


class CommandError(Exception):
    """A command cannot run (bad arguments, unknown client...): one line for the user."""


Command = Callable[["InfoShell", list[str]], Any]


def command(usage: str, least: int = 0, most: int | None = 0,
            complete: Sequence[str | None] = ()) -> Callable[[Command], Callable]:
    """Turn ``do_x(self, words)`` into a cmd handler that checks its argument count.

    ``most=None`` allows any number of arguments. The usage line is kept on
    the handler for ``help`` and for the error a wrong call gets. ``complete``
    names what each argument is, for tab completion (see ``InfoShell.candidates``);
    a kind ending in ``*`` also stands for every argument after it.
    """
    def decorate(func: Command) -> Callable[[InfoShell, str], Any]:
        @functools.wraps(func)
        def handler(self: InfoShell, arg: str) -> Any:
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


def option_value(name: str, value: Any) -> str:
    """An option's value as bcfg2.conf would spell it; secrets masked."""
    if "password" in name and value:
        return "********"
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if name == "umask" and isinstance(value, int):
        return f"{value:04o}"
    return str(value)


def split_altsrc(words: list[str], usage: str) -> tuple[str | None, list[str]]:
    """Take ``--altsrc=NAME`` or ``--altsrc NAME`` out of the words: (altsrc, the rest)."""
    altsrc = None
    positional = []
    words = list(words)
    while words:
        word = words.pop(0)
        if word.startswith("--altsrc="):
            altsrc = word.partition("=")[2]
        elif word == "--altsrc" and words:
            altsrc = words.pop(0)
        elif word.startswith("-"):
            raise CommandError(f"unknown option {word!r}; usage: {usage}")
        else:
            positional.append(word)
    if altsrc == "":
        raise CommandError(f"usage: {usage}")
    return altsrc, positional


class Progress:
    """A one-line progress bar on a terminal (``[=====>    ] 512/1000 clients``).

    Drawn only when the stream is a tty, and redrawn only when the bar moves,
    so that it costs nothing measurable on a thousand clients.
    """

    WIDTH = 30

    def __init__(self, total: int, what: str, stream: Any = None) -> None:
        self.total = total
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = bool(self.stream.isatty()) and total > 0
        except (AttributeError, ValueError):
            self.enabled = False
        self._last = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        filled = self.WIDTH * done // self.total
        if filled == self._last and done != self.total:
            return
        self._last = filled
        bar = ("=" * filled + (">" if filled < self.WIDTH else "")).ljust(self.WIDTH)
        self.stream.write(f"\r[{bar}] {done}/{self.total} {self.what}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class EventPrinter(logging.Handler):
    """Shows the file monitor's debug log (one line per event handled) in the shell."""

    def __init__(self, shell: InfoShell) -> None:
        super().__init__(logging.DEBUG)
        self.shell = shell

    def emit(self, record: logging.LogRecord) -> None:
        self.shell.out(f"event: {record.getMessage()}")


class InfoShell(cmd.Cmd):
    """The bcfg2-info commands over one LocalCore.

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
        self._event_printer: EventPrinter | None = None

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

    def interact(self) -> None:
        """The interactive loop; Ctrl-C abandons the line, quit or Ctrl-D leaves."""
        intro = (f"{PROG}: {len(self.core.metadata.list_clients())} clients in "
                 f"{self.core.repository}\nType 'help' for the commands, 'quit' to leave.")
        readline = _readline()
        if readline is not None:
            # paths, client names and options are single words for completion
            readline.set_completer_delims(" \t\n")
        self.load_history()
        try:
            while True:
                try:
                    self.cmdloop(intro)
                    return
                except KeyboardInterrupt:
                    self.out("")
                    intro = ""
        finally:
            self.save_history()

    # -- readline: history and completion -----------------------------------

    def load_history(self) -> bool:
        """Read the history file into readline; False if there is none to read."""
        readline = _readline()
        if readline is None or not self.history:
            return False
        try:
            readline.read_history_file(self.history)
        except OSError:
            return False
        return True

    def save_history(self) -> bool:
        """Write readline's history to the history file; False if that cannot be done."""
        readline = _readline()
        if readline is None or not self.history:
            return False
        try:
            readline.set_history_length(1000)
            readline.write_history_file(self.history)
        except OSError as err:
            logger.debug("cannot save the history to %s: %s", self.history, err)
            return False
        return True

    def candidates(self, kind: str | None, previous: list[str]) -> list[str]:
        """Every possible value of one kind of argument (for completion)."""
        if kind == "client":
            return self.core.metadata.list_clients()
        if kind == "group":
            return self.group_names()
        if kind == "target":  # a client or a group
            return self.candidates("client", previous) + self.candidates("group", previous)
        if kind == "bundle":
            return sorted({name for plugin in self.core.plugins_by_type(Structure)
                           for name in plugin.list_bundles()})
        if kind == "property":
            return sorted({name for plugin in self.core.plugins_by_type(PropertyFiles)
                           for name in plugin.list_property_files() if name.endswith(".xml")})
        if kind == "path":
            return sorted({name for tag, name in self.mapped() if tag == "Path"})
        if kind == "type":
            return sorted({tag for tag, _name in self.mapped()})
        if kind == "name":  # an entry name of the type given just before
            wanted = previous[-1].lower() if previous else None
            return sorted({name for tag, name in self.mapped()
                           if wanted is None or tag.lower() == wanted})
        if kind == "command":
            return [name[3:] for name in self.get_names() if name.startswith("do_")]
        return []

    def mapped(self) -> list[tuple[str, str]]:
        """(tag, name) of every entry some generator names."""
        return [item for gen in self.core.plugins_by_type(Generator)
                for item in gen.list_entries()]

    def complete_arguments(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """Tab completion of a command's arguments, by what each argument is."""
        words = line[:begidx].split()
        if not words:
            return self.completenames(text, line, begidx, endidx)
        name, previous = words[0], [w for w in words[1:] if not w.startswith("-")]
        if name == "profile":
            rest = line[len(line) - len(line.lstrip()):].split(None, 1)[1] \
                if len(line.split(None, 1)) > 1 else ""
            offset = len(line) - len(rest)
            if not rest[:begidx - offset].split():
                return self.completenames(text, rest, begidx - offset, endidx - offset)
            return self.complete_arguments(text, rest, begidx - offset, endidx - offset)
        handler = getattr(self, f"do_{name}", None)
        kinds = getattr(handler, "arguments", ())
        if not kinds:
            return []
        index = len(previous)
        if index < len(kinds):
            kind = kinds[index]
        elif kinds[-1] and kinds[-1].endswith("*"):
            kind = kinds[-1]
        else:
            return []
        kind = kind.rstrip("*") if kind else None
        return [c for c in self.candidates(kind, previous) if c.startswith(text)]

    def complete_client(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """Tab completion of client names."""
        return [name for name in self.core.metadata.list_clients() if name.startswith(text)]

    complete_build = complete_buildfile = complete_showclient = complete_arguments
    complete_showentries = complete_buildall = complete_buildallfile = complete_arguments
    complete_buildbundle = complete_automatch = complete_expirecache = complete_arguments
    complete_mappings = complete_profile = complete_arguments

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

    def generators_for(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> list[str]:
        """Names of the generators that would bind the entry, as Core.Bind picks them."""
        probe = entry
        if "altsrc" in entry.attrib:
            probe = lxml.etree.Element(entry.tag, name=entry.get("altsrc"))
        return [gen.name for gen, _func in self.core.generators_for(probe, metadata)]

    def bind_path(self, path: str, metadata: ClientMetadata,
                  altsrc: str | None) -> lxml.etree._Element:
        """One bound Path entry for a client, or a CommandError saying why not."""
        entry = lxml.etree.Element("Path", name=path)
        if altsrc:
            entry.set("altsrc", altsrc)
        try:
            self.core.Bind(entry, metadata)
        except Exception as err:
            logger.debug("binding Path:%s failed", path, exc_info=True)
            raise CommandError(f"cannot bind Path:{path} for {metadata.hostname}: {err}") from None
        return entry

    def missing_bundles(self, metadata: ClientMetadata,
                        structures: Iterable[lxml.etree._Element]) -> None:
        """Report (one line) the client's bundles its structures lack, e.g. a broken file."""
        doc = lxml.etree.Element("Configuration")
        for structure in structures:
            doc.append(lxml.etree.Element(structure.tag, name=structure.get("name") or ""))
        problems = config_failures(self.core, doc, metadata)
        if problems:
            self.error(f"{metadata.hostname}: {'; '.join(problems)}")

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

    # -- building ------------------------------------------------------------

    @command("build <client> [file]", 1, 2, complete=("client", None))
    def do_build(self, words: list[str]) -> bool:
        """Build a client's whole configuration: print it as XML, or write it to file."""
        name = self.client(words[0])
        config, problems = build_client(self.core, name)
        if config is None or config.tag == "error":
            raise CommandError(f"cannot build {name}: {'; '.join(problems)}")
        text = tostring(config, pretty=True)
        if len(words) == 2:
            if not os.path.isdir(os.path.dirname(os.path.abspath(words[1]))):
                raise CommandError(f"cannot write {words[1]}: no such directory")
            self.write(words[1], text)
            self.out(f"wrote the configuration of {name} to {words[1]}")
        else:
            self.out(text)
        if problems:
            self.error(f"{name}: {'; '.join(problems)}")
        return False

    @command("buildall <directory> [client|group ...]", 1, None,
             complete=(None, "target*"))
    def do_buildall(self, words: list[str]) -> bool:
        """Build the configuration of every client (or of those given, or of a group's
        members) into <directory>/<client>.xml; failed clients are listed at the end."""
        directory = words[0]
        clients = self.targets(words[1:])
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise CommandError(f"cannot create {directory}: {err.strerror}") from None
        progress = Progress(len(clients), "clients")
        failed: list[tuple[str, list[str]]] = []
        written = 0
        with quiet_builds():
            for done, name in enumerate(clients, 1):
                config, problems = build_client(self.core, name)
                if config is not None and config.tag == "Configuration":
                    self.write(os.path.join(directory, f"{name}.xml"),
                               tostring(config, pretty=True))
                    written += 1
                if problems:
                    failed.append((name, problems))
                progress.update(done)
        progress.finish()
        self.out(f"built {len(clients)} clients into {directory}: {written} written, "
                 f"{len(failed)} failed")
        for name, problems in failed:
            self.error(f"{name}: {'; '.join(problems)}")
        return False

    @command("buildfile [--altsrc=<name>] <path> <client>", 2, None,
             complete=("path", "client"))
    def do_buildfile(self, words: list[str]) -> bool:
        """Bind one Path entry for a client and print it as the client gets it."""
        usage = self.do_buildfile.usage
        altsrc, positional = split_altsrc(words, usage)
        if len(positional) != 2:
            raise CommandError(f"usage: {usage}")
        path, client = positional
        self.out(tostring(self.bind_path(path, self.metadata(client), altsrc), pretty=True))
        return False

    @command("buildallfile <directory> <path> [--altsrc=<name>] [client ...]", 2, None,
             complete=(None, "path", "client*"))
    def do_buildallfile(self, words: list[str]) -> bool:
        """Bind one Path entry for every client (or those given), as buildfile prints it,
        into <directory>/<client>/<path>."""
        altsrc, positional = split_altsrc(words, self.do_buildallfile.usage)
        if len(positional) < 2:
            raise CommandError(f"usage: {self.do_buildallfile.usage}")
        directory, path, *names = positional
        clients = sorted({self.client(name) for name in names}) or \
            self.core.metadata.list_clients()
        progress = Progress(len(clients), "clients")
        failed = []
        with quiet_builds():
            for done, name in enumerate(clients, 1):
                try:
                    entry = self.bind_path(path, self.core.build_metadata(name), altsrc)
                except (CommandError, Bcfg2Error) as err:
                    failed.append(str(err))
                else:
                    self.write(os.path.join(directory, name, path.lstrip("/")),
                               tostring(entry, pretty=True))
                progress.update(done)
        progress.finish()
        self.out(f"bound Path:{path} for {len(clients)} clients into {directory}: "
                 f"{len(clients) - len(failed)} written, {len(failed)} failed")
        for message in failed:
            self.error(message)
        return False

    @command("buildbundle <bundle> <client>", 2, 2, complete=("bundle", "client"))
    def do_buildbundle(self, words: list[str]) -> bool:
        """Show a bundle as rendered for a client: templates rendered and Group/Client
        conditionals applied, entries not bound."""
        name, client = words
        found = find_bundle(self.core, name)
        if found is None:
            raise CommandError(f"unknown bundle {name!r}; 'bundles' lists them")
        plugin, bundle = found
        metadata = self.metadata(client)
        if not bundle.in_service:
            raise CommandError(f"bundle {name} cannot be used: {bundle.error}")
        try:
            rendered = plugin.render_bundle(bundle.name, metadata)
        except Exception as err:
            logger.debug("rendering bundle %s failed", name, exc_info=True)
            raise CommandError(f"cannot render bundle {name} for {metadata.hostname}: "
                               f"{err}") from None
        self.out(tostring(rendered, pretty=True))
        return False

    @command("automatch [-f] <property file> <client>", 2, 3, complete=("property", "client"))
    def do_automatch(self, words: list[str]) -> bool:
        """Show an XML Properties file with its Group/Client conditionals resolved for a
        client, as a template sees it with automatch (-f: even where automatch is off)."""
        usage = self.do_automatch.usage
        force = "-f" in words
        positional = [w for w in words if w != "-f"]
        if len(positional) != 2 or any(w.startswith("-") for w in positional):
            raise CommandError(f"usage: {usage}")
        name, client = positional
        plugins = self.core.plugins_by_type(PropertyFiles)
        if not plugins:
            raise CommandError("no plugin serving property files (Properties) is loaded")
        plugin = next((p for p in plugins if name in p.list_property_files()), plugins[0])
        matched, enabled = plugin.match_property_file(name, self.metadata(client))
        if not (enabled or force):
            raise CommandError(f"automatch is off for {name} ([properties] automatch, or "
                               f"automatch= on the file); -f forces it")
        self.out(tostring(matched, pretty=True))
        return False

    # -- the repository ------------------------------------------------------

    @command("bundles")
    def do_bundles(self, words: list[str]) -> bool:
        """List every bundle the structure plugins know, with its file."""
        rows = []
        for plugin in self.core.plugins_by_type(Structure):
            for name in plugin.list_bundles():
                info = plugin.bundle_info(name)
                path = info.path if info is not None else None
                rows.append((name, plugin.name,
                             os.path.relpath(path, self.core.repository) if path else ""))
        self.out(table(rows, ("Bundle", "Plugin", "File")))
        return False

    @command("clients")
    def do_clients(self, words: list[str]) -> bool:
        """List every client with its profile."""
        rows = []
        errors: dict[str, int] = {}
        for name in self.core.metadata.list_clients():
            try:
                profile = self.core.build_metadata(name).profile
            except Bcfg2Error as err:
                profile = f"(error: {err})"
                errors[str(err)] = errors.get(str(err), 0) + 1
            rows.append((name, profile))
        self.out(table(rows, ("Client", "Profile")))
        if errors:
            self.error("; ".join(f"{count} clients: {message}"
                                 for message, count in sorted(errors.items())))
        return False

    @command("groups")
    def do_groups(self, words: list[str]) -> bool:
        """List every group with its flags: profile, public, default, category."""
        rows = [(g.name, yes(g.profile), yes(g.public), yes(g.default), g.category or "")
                for g in self.core.metadata.list_groups()]
        self.out(table(rows, ("Group", "Profile", "Public", "Default", "Category")))
        return False

    @command("showclient <client> [client...]", 1, None, complete=("client*",))
    def do_showclient(self, words: list[str]) -> bool:
        """Show the metadata of clients: profile, groups, bundles, identity, connectors."""
        blocks = []
        for word in words:
            meta = self.metadata(word)
            categories = [f"{cat}={group}" for cat, group in meta.categories.items()]
            fields = [
                ("Hostname", meta.hostname), ("Profile", meta.profile),
                ("Groups", joined(meta.groups)), ("Bundles", joined(meta.bundles)),
                ("Aliases", joined(meta.aliases)), ("Addresses", joined(meta.addresses)),
                ("Categories", joined(categories)), ("UUID", meta.uuid or "(none)"),
                ("Version", meta.version or "(not declared)"),
                ("Connectors", joined(meta.connectors)),
            ]
            lines = [f"{label + ':':<12}{value}" for label, value in fields]
            for source in sorted(meta.connectors):
                data = getattr(meta, source)
                if isinstance(data, Mapping):
                    data = joined(f"{key}={value}" for key, value in data.items())
                lines.append(f"  {source}: {data}")
            blocks.append("\n".join(lines))
        self.out("\n\n".join(blocks))
        return False

    @command("showentries <client> [type]", 1, 2, complete=("client", "type"))
    def do_showentries(self, words: list[str]) -> bool:
        """List the abstract entries of a client's bundles, optionally of one type."""
        metadata = self.metadata(words[0])
        wanted = words[1].lower() if len(words) == 2 else None
        rows = []
        structures = self.core.GetStructures(metadata)
        for structure in structures:
            for entry in structure:
                if not isinstance(entry.tag, str) or entry.tag in ("Bundle", "BoundBundle"):
                    continue
                if wanted is not None and entry.tag.lower() != wanted:
                    continue
                generators = self.generators_for(entry, metadata)
                rows.append((entry.tag, entry.get("name") or "", structure.get("name") or "",
                             ", ".join(generators) or "(none: will fail)"))
        if not rows:
            what = f"{words[1]} entries" if wanted else "entries"
            self.out(f"no {what} in the configuration of {metadata.hostname}")
        else:
            self.out(table(sorted(rows), ("Type", "Name", "Bundle", "Generator")))
        self.missing_bundles(metadata, structures)
        return False

    @command("mappings [type] [name]", 0, 2, complete=("type", "name"))
    def do_mappings(self, words: list[str]) -> bool:
        """List which generator handles which entry, optionally for one type and name."""
        wanted_tag = words[0].lower() if words else None
        wanted_name = words[1] if len(words) == 2 else None
        found: dict[tuple[str, str], list[str]] = {}
        for gen in self.core.plugins_by_type(Generator):
            for tag, name in gen.list_entries():
                if wanted_tag is not None and tag.lower() != wanted_tag:
                    continue
                if wanted_name is None or name == wanted_name:
                    found.setdefault((tag, name), []).append(gen.name)
        if not found and words:
            raise CommandError(f"no generator handles {':'.join(words)}")
        rows = [(tag, name, ", ".join(gens)) for (tag, name), gens in sorted(found.items())]
        self.out(table(rows, ("Type", "Name", "Generator")))
        return False

    @command("config [section]", 0, 1)
    def do_config(self, words: list[str]) -> bool:
        """Show the effective options (bcfg2.conf, then the command line, then defaults);
        passwords are masked."""
        setup = self.core.setup
        rows = []
        known = set()
        for opt in options.OPTIONS:
            known.add((opt.section, opt.name))
            rows.append((opt.section, opt.name, option_value(opt.name, setup.get(opt.section, opt.name))))
        for section in setup.raw.sections():  # plugin sections the table does not know
            for name, value in setup.raw.items(section):
                if (section, name) not in known:
                    rows.append((section, name, option_value(name, value)))
        if words:
            rows = [row for row in rows if row[0] == words[0]]
            if not rows:
                raise CommandError(f"no options in section [{words[0]}]")
        self.out(f"bcfg2.conf: {setup.config_file or '(none)'}")
        self.out(table(rows, ("Section", "Option", "Value")))
        return False

    # -- the core ------------------------------------------------------------

    @command("update")
    def do_update(self, words: list[str]) -> bool:
        """Read the repository changes made since the last update (or start)."""
        start = time.monotonic()
        count = self.core.refresh()
        self.out(f"handled {count} file events in {time.monotonic() - start:.3f}s"
                 if count else "no changes")
        return False

    @command("expirecache [client ...]", 0, None, complete=("client*",))
    def do_expirecache(self, words: list[str]) -> bool:
        """Expire the cached metadata of every client, or of those given."""
        names = sorted({self.client(word) for word in words})
        self.core.expire_metadata_cache(LOCAL, names or None)
        self.out(f"expired the cached metadata of {', '.join(names) or 'every client'}")
        return False

    @command("event_debug [on|off]", 0, 1)
    def do_event_debug(self, words: list[str]) -> bool:
        """Show each file monitor event as it is handled (by update), or stop showing them."""
        if words and words[0] not in ("on", "off"):
            raise CommandError(f"usage: {self.do_event_debug.usage}")
        enable = not words or words[0] == "on"
        fam_logger = logging.getLogger("bcfg2.filemonitor")
        self.core.set_fam_debug(LOCAL, enable)
        if enable and self._event_printer is None:
            self._event_printer = EventPrinter(self)
            fam_logger.addHandler(self._event_printer)
            fam_logger.setLevel(logging.DEBUG)
            fam_logger.propagate = False
        elif not enable and self._event_printer is not None:
            fam_logger.removeHandler(self._event_printer)
            fam_logger.setLevel(logging.NOTSET)
            fam_logger.propagate = True
            self._event_printer = None
        self.out(f"file monitor events {'shown' if enable else 'hidden'}")
        return False

    @command("debug [-n] [-f <file>]", 0, 3)
    def do_debug(self, words: list[str]) -> bool:
        """Open a Python console (IPython if installed, unless -n) with the core as
        ``self``; Ctrl-D comes back. With -f, run the file's statements there instead."""
        usage = self.do_debug.usage
        plain, script = False, None
        words = list(words)
        while words:
            word = words.pop(0)
            if word == "-n":
                plain = True
            elif word == "-f" and words:
                script = words.pop(0)
            else:
                raise CommandError(f"usage: {usage}")
        namespace: dict[str, Any] = {"self": self.core, "core": self.core, "shell": self,
                                     "lxml": lxml}
        if script is not None:
            self.run_script(script, namespace)
            return False
        banner = "The core is 'self'; Ctrl-D goes back to bcfg2-info."
        if not plain:
            try:
                import IPython  # type: ignore[import-not-found]
            except ImportError:
                pass
            else:
                IPython.embed(header=banner, user_ns=namespace, colors="neutral")
                return False
        try:
            code.interact(banner=banner, local=namespace, exitmsg="")
        except SystemExit:
            pass
        return False

    def run_script(self, path: str, namespace: dict[str, Any]) -> None:
        """Run a file of Python statements in the debug namespace; errors in one line."""
        try:
            with open(path, encoding="utf-8") as fh:
                source = fh.read()
        except OSError as err:
            raise CommandError(f"cannot read {path}: {err.strerror}") from None
        try:
            compiled = compile(source, path, "exec")
        except SyntaxError as err:
            raise CommandError(f"{path}:{err.lineno}: {err.msg}") from None
        try:
            exec(compiled, namespace)  # noqa: S102 - the admin's own script, by design
        except SystemExit:
            pass
        except Exception as err:
            logger.debug("%s failed", path, exc_info=True)
            lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
                     if f.filename == path]
            where = f"{path}:{lines[-1]}" if lines else path
            raise CommandError(f"{where}: {err.__class__.__name__}: {err}") from None

    @command("profile <command> [arguments...]", 1, None, complete=("command",))
    def do_profile(self, words: list[str]) -> bool:
        """Run a command under cProfile and show where its time went."""
        if words[0] == "profile":
            raise CommandError("profile cannot profile itself")
        profiler = cProfile.Profile()
        try:
            profiler.runcall(cmd.Cmd.onecmd, self, shlex.join(words))
        finally:
            self.out(profile_summary(profiler))
        return False

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


def profile_summary(profiler: cProfile.Profile, top: int = 25) -> str:
    """The top of a profile, by cumulative time."""
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    return stream.getvalue().strip("\n")


def _readline() -> Any:
    """The readline module, or None where Python has none."""
    try:
        import readline
    except ImportError:
        return None
    return readline


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


if __name__ == "__main__":
    sys.exit(main())

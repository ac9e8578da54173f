"""bcfg2-info: see the repository as the server sees it, with no network.

It loads a LocalCore (every plugin, the whole repository) and answers
questions about it: a client's metadata, its abstract entries, the bound
configuration or a single bound file, and which generator handles what.
Run with a command it answers that one and exits (non-zero on an error);
run without one it opens an interactive shell.

Repository changes are not picked up on their own: ``update`` reads them,
so a session keeps a stable view while the admin edits files.
"""

from __future__ import annotations

import cmd
import functools
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lxml.etree

from bcfg2 import options
from bcfg2.core import LocalCore
from bcfg2.errors import Bcfg2Error, ConfigError, CoreInitError
from bcfg2.logger import setup_logging
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Generator, Structure
from bcfg2.xml import tostring

PROG = "bcfg2-info"
logger = logging.getLogger("bcfg2.info")


class CommandError(Exception):
    """A command cannot run (bad arguments, unknown client...): one line for the user."""


Command = Callable[["InfoShell", list[str]], Any]


def command(usage: str, least: int = 0, most: int | None = 0) -> Callable[[Command], Callable]:
    """Turn ``do_x(self, words)`` into a cmd handler that checks its argument count.

    ``most=None`` allows any number of arguments. The usage line is kept on
    the handler for ``help`` and for the error a wrong call gets.
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


class InfoShell(cmd.Cmd):
    """The bcfg2-info commands over one LocalCore.

    ``status`` is the exit status of the last command: 0, or 1 after an
    error; errors go to stderr as one line each.
    """

    prompt = "> "

    def __init__(self, core: LocalCore) -> None:
        super().__init__()
        self.core = core
        self.status = 0

    # -- plumbing ------------------------------------------------------------

    def onecmd(self, line: str) -> bool:
        """Run one command line; errors become one line on stderr and status 1."""
        self.status = 0
        try:
            return bool(super().onecmd(line))
        except (CommandError, Bcfg2Error) as err:
            self.error(str(err))
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
        self.out(handler.__doc__ or "")
        return False

    def interact(self) -> None:
        """The interactive loop; Ctrl-C abandons the line, quit or Ctrl-D leaves."""
        intro = (f"{PROG}: {len(self.core.metadata.list_clients())} clients in "
                 f"{self.core.repository}\nType 'help' for the commands, 'quit' to leave.")
        while True:
            try:
                self.cmdloop(intro)
                return
            except KeyboardInterrupt:
                self.out("")
                intro = ""

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

    def generators_for(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> list[str]:
        """Names of the generators that would bind the entry, as Core.Bind picks them."""
        probe = entry
        if "altsrc" in entry.attrib:
            probe = lxml.etree.Element(entry.tag, name=entry.get("altsrc"))
        return [gen.name for gen, _func in self.core.generators_for(probe, metadata)]

    def complete_client(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """Tab completion of client names."""
        return [name for name in self.core.metadata.list_clients() if name.startswith(text)]

    complete_build = complete_buildfile = complete_showclient = complete_client
    complete_showentries = complete_client

    # -- commands ------------------------------------------------------------

    @command("build <client> [file]", 1, 2)
    def do_build(self, words: list[str]) -> bool:
        """Build a client's whole configuration: print it as XML, or write it to file."""
        name = self.client(words[0])
        config = self.core.BuildConfiguration(name)
        if config.tag == "error":
            raise CommandError(f"cannot build {name}: {config.get('type')}")
        text = tostring(config, pretty=True)
        if len(words) == 2:
            try:
                with open(words[1], "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as err:
                raise CommandError(f"cannot write {words[1]}: {err.strerror}") from None
            self.out(f"wrote the configuration of {name} to {words[1]}")
        else:
            self.out(text)
        failed = [f"{e.tag}:{e.get('name')}" for e in config.iter() if "failure" in e.attrib]
        if failed:
            self.error(f"{name}: {len(failed)} entries failed to bind: {', '.join(failed)}")
        return False

    @command("buildfile [--altsrc=<name>] <path> <client>", 2, None)
    def do_buildfile(self, words: list[str]) -> bool:
        """Bind one Path entry for a client and print it as the client gets it."""
        usage = self.do_buildfile.usage
        altsrc = None
        positional = []
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
        if len(positional) != 2 or altsrc == "":
            raise CommandError(f"usage: {usage}")
        path, client = positional
        metadata = self.metadata(client)
        entry = lxml.etree.Element("Path", name=path)
        if altsrc:
            entry.set("altsrc", altsrc)
        try:
            self.core.Bind(entry, metadata)
        except Exception as err:
            logger.debug("binding Path:%s failed", path, exc_info=True)
            raise CommandError(f"cannot bind Path:{path} for {metadata.hostname}: {err}") from None
        self.out(tostring(entry, pretty=True))
        return False

    @command("bundles")
    def do_bundles(self, words: list[str]) -> bool:
        """List every bundle the structure plugins know, with its file."""
        rows = []
        for plugin in self.core.plugins_by_type(Structure):
            for name, bundle in sorted(getattr(plugin, "bundles", {}).items()):
                rows.append((name, plugin.name, os.path.relpath(bundle.name, self.core.repository)))
        self.out(table(rows, ("Bundle", "Plugin", "File")))
        return False

    @command("clients")
    def do_clients(self, words: list[str]) -> bool:
        """List every client with its profile."""
        rows = []
        for name in self.core.metadata.list_clients():
            try:
                profile = self.core.build_metadata(name).profile
            except Bcfg2Error as err:
                profile = f"(error: {err})"
            rows.append((name, profile))
        self.out(table(rows, ("Client", "Profile")))
        return False

    @command("groups")
    def do_groups(self, words: list[str]) -> bool:
        """List every group with its flags: profile, public, default, category."""
        names = self.core.metadata.get_all_group_names()
        groups = self.core.metadata.groups_model.groups
        rows = [(g.name, yes(g.profile), yes(g.public), yes(g.default), g.category or "")
                for g in (groups[name] for name in names)]
        self.out(table(rows, ("Group", "Profile", "Public", "Default", "Category")))
        return False

    @command("showclient <client> [client...]", 1, None)
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

    @command("showentries <client> [type]", 1, 2)
    def do_showentries(self, words: list[str]) -> bool:
        """List the abstract entries of a client's bundles, optionally of one type."""
        metadata = self.metadata(words[0])
        wanted = words[1].lower() if len(words) == 2 else None
        rows = []
        for structure in self.core.GetStructures(metadata):
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
            return False
        self.out(table(sorted(rows), ("Type", "Name", "Bundle", "Generator")))
        return False

    @command("mappings [type] [name]", 0, 2)
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

    @command("update")
    def do_update(self, words: list[str]) -> bool:
        """Read the repository changes made since the last update (or start)."""
        count = self.core.refresh()
        self.out(f"handled {count} file events" if count else "no changes")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``bcfg2-info [options] command args...``) or the shell."""
    try:
        setup = options.load(argv, prog=PROG, positional="a command and its arguments; "
                             "without one, an interactive shell starts",
                             description="Examine a Bcfg2 repository as the server sees it.")
    except ConfigError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help, or a bad option (already reported)
        return exc.code if isinstance(exc.code, int) else 2
    # a look at the repository is not a server event: keep it out of syslog
    setup.set("logging", "syslog", False)
    setup_logging(setup, console=True, prog=PROG)
    try:
        core = LocalCore(setup)
    except (CoreInitError, ConfigError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    try:
        shell = InfoShell(core)
        if setup.args:
            shell.onecmd(shlex.join(setup.args))
            return shell.status
        shell.interact()
        return 0
    finally:
        core.shutdown()


if __name__ == "__main__":
    sys.exit(main())

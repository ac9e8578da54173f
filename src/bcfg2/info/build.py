"""Building: whole configurations, single files, bundles and property files, for one
client or many."""

from __future__ import annotations

import os
import sys
from typing import Any

import lxml.etree

from bcfg2.errors import Bcfg2Error
from bcfg2.info.shell import CommandError, Shell, command, logger
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import PropertyFiles
from bcfg2.testrun import build_client, find_bundle, quiet_builds
from bcfg2.xml import tostring


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


class BuildCommands(Shell):
    """build, buildall, buildfile, buildallfile, buildbundle, automatch."""

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

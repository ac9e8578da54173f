"""What every lint check shares: findings, error names, the repository being checked.

A check is a function that takes a ``Context`` and yields ``Finding``s. It
reads the repository files itself (raw, with their line numbers) and asks
``Context.core`` (a LocalCore over the same repository) only for what needs
the server's view: client metadata, structures, generators.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lxml.etree

from bcfg2 import tools
from bcfg2.core import LocalCore
from bcfg2.options import Setup
from bcfg2.xml import XI_FALLBACK, XI_INCLUDE

LEVELS = ("error", "warning", "silent")
GENSHI_NS = "http://genshi.edgewall.org/"


@dataclass(frozen=True)
class Finding:
    """One problem: where it is (path relative to the repository, line) and what."""

    path: str
    line: int | None
    name: str
    message: str

    def sort_key(self) -> tuple[str, int, str, str]:
        return (self.path, self.line or 0, self.name, self.message)

    def format(self, level: str) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {level}: {self.message} [{self.name}]"


@dataclass(frozen=True)
class Check:
    """A named family of checks, the error names it reports and their default levels."""

    name: str
    func: Callable[[Context], Iterable[Finding]]
    errors: dict[str, str]
    doc: str


CHECKS: dict[str, Check] = {}


def check(name: str, **errors: str) -> Callable[[Callable[[Context], Iterable[Finding]]],
                                                 Callable[[Context], Iterable[Finding]]]:
    """Register a check function under ``name``; keyword arguments are its error names.

    Error names use dashes; keyword arguments use underscores for them.
    """
    def register(func: Callable[[Context], Iterable[Finding]]) -> Callable[[Context], Iterable[Finding]]:
        CHECKS[name] = Check(name, func, {k.replace("_", "-"): v for k, v in errors.items()},
                             (func.__doc__ or "").strip().splitlines()[0])
        return func
    return register


def all_errors() -> dict[str, str]:
    """Every error name with its default level."""
    out: dict[str, str] = {}
    for chk in CHECKS.values():
        out.update(chk.errors)
    return out


@dataclass
class Context:
    """The repository under check, the enabled plugins, and a lazily built core."""

    setup: Setup
    required_attrs: list[str] = field(default_factory=lambda: ["owner", "group", "mode"])
    verbose: bool = False
    _core: LocalCore | None = None
    _core_cm: Any = None
    _log_level: int | None = None
    _xml: dict[str, lxml.etree._ElementTree | None] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        return self.setup.server.repository

    def enabled(self, plugin: str) -> bool:
        """Whether ``plugin`` is in ``[server] plugins``: lint follows the server."""
        return plugin in self.setup.server.plugins

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.repository)

    def finding(self, path: str, line: int | None, name: str, message: str) -> Finding:
        """A finding about a file; paths in the message become relative too."""
        message = message.replace(self.repository.rstrip(os.sep) + os.sep, "")
        return Finding(self.relative(path), line, name, " ".join(message.split()))

    def ignored(self, fname: str) -> bool:
        """Editor backups and VCS files, as the file monitor ignores them."""
        return any(fnmatch.fnmatch(fname, pattern) for pattern in self.setup.server.ignore_files)

    def files(self, plugin: str, predicate: Callable[[str], bool] = lambda p: True,
              recursive: bool = True) -> list[str]:
        """Sorted absolute paths of the files in a plugin's directory (if it is enabled)."""
        top = os.path.join(self.repository, plugin)
        if not self.enabled(plugin) or not os.path.isdir(top):
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not self.ignored(d))
            if not recursive:
                dirnames[:] = []
            for fname in filenames:
                path = os.path.join(dirpath, fname)
                if not self.ignored(fname) and predicate(path):
                    out.append(path)
        return sorted(out)

    def xml(self, path: str) -> lxml.etree._ElementTree | None:
        """A file parsed as it is on disk (XIncludes not resolved); None if it does not parse.

        Parse errors are the Validate check's business; other checks skip such files.
        """
        if path not in self._xml:
            try:
                self._xml[path] = lxml.etree.parse(path, parser())
            except (OSError, lxml.etree.XMLSyntaxError):
                self._xml[path] = None
        return self._xml[path]

    def with_includes(self, path: str) -> list[tuple[str, lxml.etree._ElementTree]]:
        """A file and every file it XIncludes (nested), each parsed on its own."""
        out = []
        pending, seen = [path], set()
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            tree = self.xml(current)
            if tree is None:
                continue
            out.append((current, tree))
            pending.extend(target for _inc, targets in includes(tree, current)
                           for target in targets)
        return out

    @property
    def core(self) -> LocalCore:
        """A LocalCore over the repository, started at first use (shut down by ``close``)."""
        if self._core is None:
            if not (self.verbose or self.setup.logging.debug):
                # the core logs what lint reports as findings: keep stderr clean
                logger = logging.getLogger("bcfg2")
                self._log_level = logger.level
                logger.setLevel(logging.CRITICAL)
            self._core_cm = tools.local_core(self.setup)
            self._core = self._core_cm.__enter__()
        return self._core

    def close(self) -> None:
        """Shut the core down and give the server's loggers their level back."""
        try:
            if self._core_cm is not None:
                self._core_cm.__exit__(None, None, None)
        finally:
            self._core_cm = self._core = None
            if self._log_level is not None:
                logging.getLogger("bcfg2").setLevel(self._log_level)
                self._log_level = None


def parser() -> lxml.etree.XMLParser:
    """Repository files as admins wrote them: no network, line numbers kept."""
    return lxml.etree.XMLParser(no_network=True, huge_tree=True)


def includes(tree: lxml.etree._ElementTree,
             path: str) -> Iterator[tuple[lxml.etree._Element, list[str]]]:
    """Each ``xi:include`` of a file with the files it names (globs expanded)."""
    basedir = os.path.dirname(path)
    for inc in tree.getroot().iter(XI_INCLUDE):
        href = inc.get("href", "")
        if glob.has_magic(href):
            targets = [m for m in sorted(glob.glob(os.path.join(basedir, href)))
                       if os.path.abspath(m) != os.path.abspath(path)]
        else:
            targets = [os.path.normpath(os.path.join(basedir, href))] if href else []
        yield inc, targets


def has_fallback(inc: lxml.etree._Element) -> bool:
    return inc.find(XI_FALLBACK) is not None


def is_genshi(tree: lxml.etree._ElementTree | None, path: str) -> bool:
    """A Genshi markup template: a ``.genshi`` file or a root declaring Genshi's namespace."""
    if path.endswith(".genshi"):
        return True
    return tree is not None and GENSHI_NS in tree.getroot().nsmap.values()


def shorten(names: Iterable[str], verbose: bool = False, most: int = 5) -> str:
    """A sorted list of names for a message; long ones end with "and N more"."""
    items = sorted(names)
    if verbose or len(items) <= most:
        return ", ".join(items)
    return ", ".join(items[:most]) + f" and {len(items) - most} more"

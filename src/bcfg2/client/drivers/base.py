"""The one interface every driver of the agent implements.

A driver handles some ``(tag, type)`` pairs of configuration entries (``("Path", "file")``,
``("Package", "deb")``, ``("Service", "systemd")``...). The agent asks each entry's driver
to *verify* it (is the machine as the entry says?), collects the wrong ones, asks their
drivers to *install* them in one batch per driver, offers the extra entries each driver
finds (*find_extra*) for *remove*, and tells drivers which bundles changed.

Drivers never run a command or touch a file outside ``Context``: commands go through
``Context.run`` (so tests can record them) and paths through ``Context.path`` (so tests
write under a throwaway root).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lxml.etree

Element = lxml.etree._Element
#: runs a command (argv, no shell) and returns the completed process; tests substitute one
Runner = Callable[..., subprocess.CompletedProcess]


def entry_key(entry: Element) -> tuple[str, str]:
    """The identity of an entry in one configuration: its tag and name."""
    return entry.tag, entry.get("name", "")


@dataclass
class EntryState:
    """What verifying one entry found: correct or not, why not, and a diff for files."""

    correct: bool
    #: short human reasons, e.g. "owner is root, should be www-data"; never contents
    reasons: list[str] = field(default_factory=list)
    #: a unified diff (files only, never for sensitive entries), or "" when none
    diff: str = ""


@dataclass
class Context:
    """What a driver may use of the machine and the run."""

    #: every absolute path a driver touches is under this root ("/" on a real run)
    root: str = "/"
    dry_run: bool = False
    #: the parsed options (bcfg2.options.Setup); drivers read their own sections from it
    setup: Any = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("bcfg2.client"))
    runner: Runner = subprocess.run
    #: environment for commands (tests point PATH at stub tools)
    env: Mapping[str, str] | None = None
    #: asks the person at the terminal a yes/no question (interactive mode, -I); None: never
    ask: Callable[[str], bool] | None = None

    def path(self, name: str) -> str:
        """The real location of an entry's absolute path under the root."""
        if not os.path.isabs(name):
            raise ValueError(f"not an absolute path: {name!r}")
        if self.root in ("", "/"):
            return os.path.normpath(name)
        return os.path.join(self.root, os.path.normpath(name).lstrip("/"))

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            check: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a command with no shell, capturing its output (``timeout`` seconds at most:
        subprocess.TimeoutExpired after)."""
        self.log.debug("running %s", " ".join(argv))
        extra = {"timeout": timeout} if timeout else {}
        return self.runner(list(argv), input=input, capture_output=True, check=check,
                           env=dict(self.env) if self.env is not None else None, **extra)


class Driver:
    """Base of every driver. Subclasses set ``name`` and ``handles`` and override the rest."""

    #: the name upstream's agent gives the tool ("POSIX", "APT", "DNF", "Systemd"...),
    #: used by ``-D``/``drivers`` option and in logs
    name: ClassVar[str] = ""
    #: the (tag, type) pairs handled; type None matches an entry of that tag with no type
    handles: ClassVar[frozenset[tuple[str, str | None]]] = frozenset()

    def __init__(self, context: Context) -> None:
        self.context = context
        self.log = context.log.getChild(self.name or type(self).__name__)

    @classmethod
    def available(cls, context: Context) -> bool:
        """Whether this machine can use the driver (its tools exist)."""
        return True

    def handles_entry(self, entry: Element) -> bool:
        """Whether ``entry`` is this driver's."""
        return (entry.tag, entry.get("type")) in self.handles

    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        """Check one entry against the machine; ``modlist`` names every Path entry of the
        configuration (files a package's checksums need not match, paths a pruned directory
        keeps). A driver may set ``current_<attr>`` attributes on a wrong entry: they go to
        the server with the statistics, as upstream's drivers do."""
        raise NotImplementedError

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """Make the machine match each entry (all at once where the tool allows one
        transaction); answers, per ``entry_key``, whether it now matches."""
        raise NotImplementedError

    def find_extra(self) -> list[Element]:
        """Entries present on the machine that no configuration entry of this driver's
        kind names (extra packages, services, users...), as elements of the same tag."""
        return []

    def remove(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """Remove extra entries; answers, per ``entry_key``, whether each was removed."""
        return {entry_key(e): False for e in entries}

    def bundle_updated(self, bundle: Element, changed: Mapping[tuple[str, str], bool]
                       ) -> Mapping[tuple[str, str], bool] | None:
        """A bundle had entries installed: restart its services and the like. May answer,
        per ``entry_key``, the new state of entries it acted on (an Action that failed)."""
        return None

    def bundle_not_updated(self, bundle: Element) -> Mapping[tuple[str, str], bool] | None:
        """A bundle needed no change (services with ``restart="interactive"`` etc.); answers
        as ``bundle_updated``."""
        return None

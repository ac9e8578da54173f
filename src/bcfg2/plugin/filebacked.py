"""Repository files and directories that reread themselves when they change.

- FileBacked / XMLFileBacked: one repository file, reparsed on each event;
  a parse error keeps the last good version in service and is logged once.
  An XML file's XIncludes are watched too.
- DirectoryBacked / XMLDirectoryBacked: every file below a directory, each
  a FileBacked (or a subclass) of its own.

Every reload builds new state and then swaps one reference, so a build that
is running keeps reading the version it started with.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.plugin.base import Debuggable
from bcfg2.xml import parse_repository_file

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event, FileMonitor

logger = logging.getLogger(__name__)


class FileBacked:
    """One file of the repository; ``Index`` is called whenever it is (re)read."""

    def __init__(self, name: str, fam: FileMonitor | None = None) -> None:
        self.name = name
        self.fam = fam
        self.data: bytes = b""
        #: the last error reading or parsing this file, or None
        self.error: str | None = None
        #: whether a version of this file was ever read successfully
        self.in_service = False

    def HandleEvent(self, event: Event | None = None) -> None:  # noqa: N802
        """Reread the file (on exists, created or changed); see ``removed`` for deleted."""
        if event is not None and event.action == "deleted" and event.path == self.name:
            self.in_service = False
            self.error = None
            self.removed()
            return
        if event is not None and event.action not in ("exists", "created", "changed"):
            return
        try:
            with open(self.name, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return  # deleted before we read it; a deleted event follows
        except OSError as err:
            self._report(f"{self.name}: cannot read: {err.strerror}")
            return
        previous = self.data
        self.data = data
        try:
            self.Index()
        except RepositoryError as err:
            self.data = previous
            self._report(str(err))
        else:
            if self.error:
                logger.warning("%s: fixed, now in service", self.name)
            self.error = None
            self.in_service = True

    def _report(self, message: str) -> None:
        if message != self.error:
            state = ("the last good version stays in service" if self.in_service
                     else "not in service until it is fixed")
            logger.error("%s (%s)", message, state)
        self.error = message

    def Index(self) -> None:  # noqa: N802
        """Turn ``self.data`` into whatever the subclass serves."""

    def removed(self) -> None:
        """The file was deleted: a watched file's owner decides what that means."""

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.name!r})"


class XMLFileBacked(FileBacked):
    """An XML file with XInclude support (``xdata`` is the parsed root).

    Files it includes are watched too when a file monitor is given, and a
    change to one of them rereads this file.
    """

    def __init__(self, name: str, fam: FileMonitor | None = None,
                 should_monitor: bool = False) -> None:
        super().__init__(name, fam)
        self.xdata: lxml.etree._Element | None = None
        self.label = ""
        self.extras: list[str] = []
        self._watched: set[str] = set()
        if should_monitor and fam is not None:
            fam.AddMonitor(name, self)

    @property
    def entries(self) -> list[lxml.etree._Element]:
        xdata = self.xdata
        return [] if xdata is None else [el for el in xdata if isinstance(el.tag, str)]

    def HandleEvent(self, event: Event | None = None) -> None:  # noqa: N802
        if event is not None and event.path != self.name:
            if event.action == "exists":
                return  # watching an included file: it was read with this file
            event = None  # an included file changed or went away: reread this file
        super().HandleEvent(event)

    def Index(self) -> None:  # noqa: N802
        root, includes = parse_repository_file(self.name, self.data)
        self.load_xml(root)
        self.xdata = root
        self.label = root.get("name", "")
        self.extras = includes
        if self.fam is not None:
            for path in includes:
                if path not in self._watched:
                    self._watched.add(path)
                    self.fam.AddMonitor(path, self)

    def load_xml(self, root: lxml.etree._Element) -> None:
        """Hook for subclasses: validate and derive state from a new root."""


class DirectoryBacked(Debuggable):
    """Every file below a directory, as ``__child__`` objects keyed by relative path.

    Subdirectories are watched recursively. ``patterns`` selects the file
    names to load; ``ignore`` names files to skip silently. Both must match
    the whole file name (``fullmatch``: "x.xml" and a newline is no XML file).
    """

    __child__: type[FileBacked] = FileBacked
    patterns = re.compile(r".*")
    ignore: re.Pattern[str] | None = None

    def __init__(self, data: str, fam: FileMonitor) -> None:
        Debuggable.__init__(self)
        self.data = os.path.normpath(data)
        self.fam = fam
        self.entries: dict[str, FileBacked] = {}
        self.handles: dict[int, str] = {}
        self.add_directory_monitor("")

    def add_directory_monitor(self, relative: str) -> None:
        path = os.path.join(self.data, relative) if relative else self.data
        if relative in self.handles.values():
            return
        if not os.path.isdir(path):
            self.logger.info("%s does not exist; nothing to load from it", path)
            return
        handle = self.fam.AddMonitor(path, self)
        self.handles[handle] = relative

    def add_entry(self, relative: str, event: Event) -> None:
        entry = self.__child__(os.path.join(self.data, relative), self.fam)
        entry.HandleEvent(event)
        self.entries[relative] = entry

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        if event.action == "endExist":
            return
        relative = os.path.relpath(event.path, self.data)
        basename = os.path.basename(event.path)
        action = event.action
        if action == "deleted":
            if relative in self.entries:
                del self.entries[relative]
            else:
                self._remove_directory(relative)
            return
        if os.path.isdir(event.path):
            if action in ("exists", "created"):
                self.add_directory_monitor(relative)
            return
        if (self.ignore is not None and self.ignore.fullmatch(basename)) or \
                not self.patterns.fullmatch(basename):
            return
        if relative in self.entries and action == "changed":
            self.entries[relative].HandleEvent(event)
        else:
            self.add_entry(relative, event)

    def _remove_directory(self, relative: str) -> None:
        prefix = relative + os.sep
        for handle, rel in list(self.handles.items()):
            if rel == relative or rel.startswith(prefix):
                self.fam.RemoveMonitor(handle)
                del self.handles[handle]
        for key in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[key]


class XMLDirectoryBacked(DirectoryBacked):
    """Every ``*.xml`` file below a directory."""

    __child__ = XMLFileBacked
    patterns = re.compile(r".*\.xml\Z")


#: names in a scripts directory that are never run: hidden files, editor backups
NOT_SCRIPTS = re.compile(r"\..*|.*~|#.*#")


def executables(directory: str, logger: logging.Logger) -> list[str]:
    """The executable files of a scripts directory (Trigger/, PuppetENC/), sorted by name.

    A file that is not executable is logged and skipped; hidden files and
    editor backups are skipped silently; a missing directory has none.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = os.path.join(directory, name)
        if NOT_SCRIPTS.fullmatch(name) or not os.path.isfile(path):
            continue
        if not os.access(path, os.X_OK):
            logger.warning("%s is not executable; not running it", path)
            continue
        out.append(path)
    return out

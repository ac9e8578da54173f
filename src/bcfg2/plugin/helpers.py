"""File-backed building blocks that plugins share.

- FileBacked / XMLFileBacked: one repository file, reparsed on each event;
  a parse error keeps the last good version in service and is logged once.
- StructFile: an XML file with nested ``<Group>``/``<Client>`` conditionals
  (with ``negate``), resolved per client by ``Match``/``XMLMatch``.
- DirectoryBacked / XMLDirectoryBacked: every file below a directory.
- Specificity / EntrySet: the versions of one entry (``name``,
  ``name.G50_group``, ``name.H_host``) and the choice of the best one.
- InfoXML: ``info.xml`` metadata (owner, group, mode...) for Path entries.
- PriorityStructFile / PrioDir: the Rules-style generator with priorities.

Every reload builds new state and then swaps one reference, so a build that
is running keeps reading the version it started with.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.errors import PluginExecutionError, RepositoryError, SpecificityError
from bcfg2.plugin.base import Debuggable, Plugin, as_bool
from bcfg2.plugin.interfaces import Generator
from bcfg2.xml import parse_repository_file

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event, FileMonitor
    from bcfg2.metadata import ClientMetadata
    from bcfg2.options import Setup

logger = logging.getLogger(__name__)

Condition = tuple[str, str, bool]  # (tag, name, negate)


def condition_holds(tag: str, name: str | None, negate: bool, metadata: ClientMetadata) -> bool:
    """Whether a ``<Group>`` or ``<Client>`` conditional admits the client."""
    if tag == "Group":
        result = name in metadata.groups
    else:
        result = name == metadata.hostname or name in metadata.aliases
    return result != negate


def conditions_hold(conditions: Iterable[Condition], metadata: ClientMetadata) -> bool:
    return all(condition_holds(tag, name, neg, metadata) for tag, name, neg in conditions)


def flatten_conditions(
    root: lxml.etree._Element, conditional_tags: tuple[str, ...] = ("Group", "Client")
) -> list[tuple[tuple[Condition, ...], lxml.etree._Element]]:
    """Every non-conditional element below root with the conditions above it."""
    out: list[tuple[tuple[Condition, ...], lxml.etree._Element]] = []

    def walk(node: lxml.etree._Element, conds: tuple[Condition, ...]) -> None:
        for child in node:
            if not isinstance(child.tag, str):
                continue
            if child.tag in conditional_tags:
                cond = (child.tag, child.get("name"), as_bool(child.get("negate", "false")))
                walk(child, conds + (cond,))
            else:
                out.append((conds, child))

    walk(root, ())
    return out


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


class StructFile(XMLFileBacked):
    """An XML file whose ``<Group>``/``<Client>`` tags are conditionals."""

    conditional_tags: tuple[str, ...] = ("Group", "Client")

    def _include_element(self, item: lxml.etree._Element, metadata: ClientMetadata,
                         *args: Any) -> bool:
        if item.tag in ("Group", "Client"):
            return condition_holds(item.tag, item.get("name"),
                                   as_bool(item.get("negate", "false")), metadata)
        return True

    def _match(self, item: lxml.etree._Element, metadata: ClientMetadata,
               *args: Any) -> list[lxml.etree._Element]:
        if not isinstance(item.tag, str) or not self._include_element(item, metadata, *args):
            return []
        if item.tag in self.conditional_tags:
            out: list[lxml.etree._Element] = []
            for child in item:
                out.extend(self._match(child, metadata, *args))
            return out
        if not len(item):
            new = copy.copy(item)  # a leaf: copied by lxml, in C
            new.tail = None
            return [new]
        new = lxml.etree.Element(item.tag, attrib=dict(item.attrib))
        new.text = item.text
        new.tail = item.tail
        for child in item:
            new.extend(self._match(child, metadata, *args))
        return [new]

    def Match(self, metadata: ClientMetadata, *args: Any) -> list[lxml.etree._Element]:  # noqa: N802
        """The entries that apply to the client, conditionals flattened (copies)."""
        xdata = self.xdata
        if xdata is None:
            return []
        out: list[lxml.etree._Element] = []
        for child in xdata:
            out.extend(self._match(child, metadata, *args))
        return out

    def XMLMatch(self, metadata: ClientMetadata, *args: Any) -> lxml.etree._Element:  # noqa: N802
        """A copy of the whole document with conditionals resolved."""
        xdata = self.xdata
        if xdata is None:
            raise PluginExecutionError(f"{self.name} has never been parsed successfully")
        return self.match_tree(xdata, metadata, *args)

    def match_tree(self, xdata: lxml.etree._Element, metadata: ClientMetadata,
                   *args: Any) -> lxml.etree._Element:
        """A copy of ``xdata`` with conditionals resolved (for rendered templates too)."""
        root = lxml.etree.Element(xdata.tag, attrib=dict(xdata.attrib))
        root.text = xdata.text
        for child in xdata:
            root.extend(self._match(child, metadata, *args))
        return root


class DirectoryBacked(Debuggable):
    """Every file below a directory, as ``__child__`` objects keyed by relative path.

    Subdirectories are watched recursively. ``patterns`` selects the file
    names to load; ``ignore`` names files to skip silently.
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
        if (self.ignore is not None and self.ignore.match(basename)) or \
                not self.patterns.match(basename):
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
    patterns = re.compile(r"^.*\.xml$")


class Specificity:
    """How specifically a file applies: to all clients, a group, or one host."""

    def __init__(self, all: bool = False, group: str | bool = False,  # noqa: A002
                 hostname: str | bool = False, prio: int = 0) -> None:
        self.all = all
        self.group = group
        self.hostname = hostname
        self.prio = prio

    def matches(self, metadata: ClientMetadata) -> bool:
        return bool(
            self.all
            or (self.hostname and self.hostname == metadata.hostname)
            or (self.group and self.group in metadata.groups)
        )

    def _key(self) -> tuple[int, int]:
        if self.hostname:
            return (3, 0)
        if self.group:
            return (2, self.prio)
        return (1, 0)

    def __lt__(self, other: Specificity) -> bool:
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Specificity) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        if self.hostname:
            return f"host {self.hostname}"
        if self.group:
            return f"group {self.group} (priority {self.prio})"
        return "all"


class SpecificData(FileBacked):
    """One version of an entry, with the Specificity its file name gives it."""

    def __init__(self, name: str, specific: Specificity, fam: FileMonitor | None = None) -> None:
        super().__init__(name, fam)
        self.specific = specific


def default_path_metadata(setup: Setup) -> dict[str, str]:
    """Attributes every Path entry gets unless info.xml says otherwise."""
    md = setup.mdata
    return {
        "owner": md.owner,
        "group": md.group,
        "mode": md.mode,
        "paranoid": "true" if md.paranoid else "false",
        "sensitive": "true" if md.sensitive else "false",
        "important": "true" if md.important else "false",
        "secontext": md.secontext,
    }


class InfoXML(StructFile):
    """``info.xml``: Info attributes per group, client and (real) path name."""

    conditional_tags = ("Group", "Client", "Path")

    def _include_element(self, item: lxml.etree._Element, metadata: ClientMetadata,
                         *args: Any) -> bool:
        if item.tag == "Path":
            entry = args[0] if args else None
            name = entry.get("realname", entry.get("name")) if entry is not None else None
            return (item.get("name") == name) != as_bool(item.get("negate", "false"))
        return super()._include_element(item, metadata, *args)

    def load_xml(self, root: lxml.etree._Element) -> None:
        # every <Info> with the conditions above it, found once per change
        self.infos = [(conds, elem) for conds, elem in
                      flatten_conditions(root, self.conditional_tags) if elem.tag == "Info"]

    infos: list[tuple[tuple[Condition, ...], lxml.etree._Element]] = []

    def BindEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        """Apply the first matching ``<Info>``; False if none matched."""
        name = entry.get("realname", entry.get("name"))
        for conds, info in self.infos:
            if all((cname == name) != negate if tag == "Path"
                   else condition_holds(tag, cname, negate, metadata)
                   for tag, cname, negate in conds):
                for key, value in info.attrib.items():
                    entry.set(key, value)
                for child in info:
                    entry.extend(self._match(child, metadata, entry))
                return True
        return False


def bind_info(entry: lxml.etree._Element, metadata: ClientMetadata,
              infoxml: InfoXML | None, default: dict[str, str]) -> None:
    """Set default Path attributes, then whatever info.xml says for this client."""
    entry.attrib.update(default)
    if infoxml is not None:
        infoxml.BindEntry(entry, metadata)


#: what follows an entry's name in the file name of a group- or host-specific version
SPECIFIC_SUFFIX = re.compile(r"\.(?:H_(?P<hostname>\S+)|G(?P<prio>\d+)_(?P<group>\S+))$")


class EntrySet(Debuggable):
    """The versions of one entry, chosen by the specificity of their file names.

    ``name`` applies to all clients, ``name.G50_group`` to members of group
    (higher priority wins), ``name.H_host`` to one host; host beats group
    beats all, and two equally specific matches are an error.
    """

    ignore = re.compile(r"^(\.#.*|.*~|\..*\.sw[px]|.*\.swx|#.*#)$")

    def __init__(self, basename: str, path: str, entry_type: type[SpecificData],
                 setup: Setup, fam: FileMonitor | None = None) -> None:
        Debuggable.__init__(self)
        self.basename = basename
        self.path = path
        self.entry_type = entry_type
        self.setup = setup
        self.fam = fam
        self.entries: dict[str, SpecificData] = {}
        self.infoxml: InfoXML | None = None
        self.default_info = default_path_metadata(setup)

    def specificity_from_filename(self, fname: str) -> Specificity:
        """Parse ``name``, ``name.G##_group`` or ``name.H_host``."""
        if fname == self.basename:
            return Specificity(all=True)
        match = None
        if fname.startswith(self.basename):
            match = SPECIFIC_SUFFIX.match(fname, len(self.basename))
        if match is None:
            raise SpecificityError(f"{os.path.join(self.path, fname)}: cannot tell which "
                                   f"clients it is for from its name")
        if match.group("hostname"):
            return Specificity(hostname=match.group("hostname"))
        if match.group("group"):
            return Specificity(group=match.group("group"), prio=int(match.group("prio")))
        return Specificity(all=True)

    def handle_event(self, event: Event) -> None:
        fname = os.path.basename(event.path)
        if fname == "info.xml":
            self.update_metadata(event)
            return
        if self.ignore.match(fname):
            return
        if event.action == "deleted":
            self.entries.pop(fname, None)
        elif event.action == "changed" and fname in self.entries:
            self.entries[fname].HandleEvent(event)
        elif event.action in ("exists", "created", "changed"):
            self.entry_init(event)

    def entry_init(self, event: Event) -> None:
        fname = os.path.basename(event.path)
        try:
            spec = self.specificity_from_filename(fname)
        except SpecificityError as err:
            self.logger.warning("%s; ignoring it", err)
            return
        entry = self.entry_type(event.path, spec, self.fam)
        entry.HandleEvent(event)
        self.entries[fname] = entry

    def update_metadata(self, event: Event) -> None:
        if event.action == "deleted":
            self.infoxml = None
            return
        if self.infoxml is None:
            self.infoxml = InfoXML(event.path, self.fam)
        self.infoxml.HandleEvent(event)

    def get_matching(self, metadata: ClientMetadata) -> list[SpecificData]:
        return [item for item in list(self.entries.values()) if item.specific.matches(metadata)]

    def best_matching(self, metadata: ClientMetadata,
                      matching: list[SpecificData] | None = None) -> SpecificData:
        """The most specific match; SpecificityError on none or on a tie."""
        if matching is None:
            matching = self.get_matching(metadata)
        if not matching:
            raise PluginExecutionError(
                f"no version of {self.path} applies to {metadata.hostname}")
        ranked = sorted(matching, key=lambda item: item.specific._key(), reverse=True)
        if len(ranked) > 1 and ranked[0].specific == ranked[1].specific:
            names = ", ".join(sorted(os.path.basename(item.name) for item in ranked
                                     if item.specific == ranked[0].specific))
            raise SpecificityError(
                f"{self.path}: {names} match {metadata.hostname} equally well "
                f"({ranked[0].specific})")
        return ranked[0]

    def bind_info_to_entry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> None:
        bind_info(entry, metadata, self.infoxml, self.default_info)


class PriorityStructFile(StructFile):
    """A StructFile with a ``priority`` attribute on its root, indexed by entry."""

    def load_xml(self, root: lxml.etree._Element) -> None:
        try:
            priority = int(root.get("priority", "0"))
        except ValueError:
            raise RepositoryError(
                f"{self.name}: priority {root.get('priority')!r} is not an integer") from None
        index: dict[str, dict[str, list[tuple[tuple[Condition, ...], lxml.etree._Element]]]] = {}
        for conds, elem in flatten_conditions(root):
            name = elem.get("name")
            if name is None:
                continue
            index.setdefault(elem.tag, {}).setdefault(name, []).append((conds, elem))
        self.rules = (priority, index)
        if self.on_change is not None:
            self.on_change()

    rules: tuple[int, dict[str, dict[str, list[Any]]]] | None = None
    #: called after each successful reload (the PrioDir's merged index goes stale)
    on_change: Callable[[], None] | None = None


#: one rule in a PrioDir's merged index: file, its priority, conditions, element
Rule = tuple[PriorityStructFile, int, tuple[Condition, ...], lxml.etree._Element]


class PrioDir(Plugin, Generator, XMLDirectoryBacked):
    """Entries described in XML files with priorities (the Rules model).

    The matching entry from the file with the highest priority binds the
    abstract entry; two files with the same priority are a conflict.
    """

    __child__ = PriorityStructFile
    regex_option: tuple[str, str] | None = None
    replace_name_option: tuple[str, str] | None = None

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        self.regex = bool(self.regex_option and core.setup.get(*self.regex_option))
        self.replace_name = bool(
            self.replace_name_option and core.setup.get(*self.replace_name_option))
        self._regex_cache: dict[str, re.Pattern[str] | None] = {}
        self._merged: dict[str, dict[str, list[Rule]]] | None = None
        XMLDirectoryBacked.__init__(self, self.data, core.fam)

    def _compiled(self, name: str) -> re.Pattern[str] | None:
        if name not in self._regex_cache:
            try:
                self._regex_cache[name] = re.compile(name)
            except re.error:
                self._regex_cache[name] = None
        return self._regex_cache[name]

    def _names(self, entry: lxml.etree._Element) -> list[str]:
        """The names a rule may have to match: a Path "/dir/" also matches "/dir"."""
        name = entry.get("name", "")
        if entry.tag == "Path" and len(name) > 1 and name.endswith("/"):
            return [name, name.rstrip("/")]
        return [name]

    def _sources(self) -> list[PriorityStructFile]:
        return [src for src in list(self.entries.values())
                if isinstance(src, PriorityStructFile) and src.rules is not None]

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        XMLDirectoryBacked.HandleEvent(self, event)
        self._merged = None

    def add_entry(self, relative: str, event: Event) -> None:
        super().add_entry(relative, event)
        entry = self.entries.get(relative)
        if isinstance(entry, PriorityStructFile):
            entry.on_change = self._invalidate

    def _invalidate(self) -> None:
        self._merged = None

    def _index(self) -> dict[str, dict[str, list[Rule]]]:
        """Every rule of every file, by tag and name: built once per change, not per entry."""
        merged = self._merged
        if merged is None:
            merged = {}
            for src in self._sources():
                priority, index = src.rules
                for tag, by_name in index.items():
                    target = merged.setdefault(tag, {})
                    for name, items in by_name.items():
                        target.setdefault(name, []).extend(
                            (src, priority, conds, elem) for conds, elem in items)
            self._merged = merged
        return merged

    def _exact(self, entry: lxml.etree._Element) -> list[Rule]:
        by_name = self._index().get(entry.tag) or {}
        return [rule for name in self._names(entry) for rule in by_name.get(name, ())]

    def _by_regex(self, entry: lxml.etree._Element) -> list[Rule]:
        if not self.regex:
            return []
        names = self._names(entry)
        out = []
        for key, rules in (self._index().get(entry.tag) or {}).items():
            if key in names:
                continue
            pattern = self._compiled(key)
            if pattern is not None and any(pattern.fullmatch(name) for name in names):
                out.extend(rules)
        return out

    def _applies(self, entry: lxml.etree._Element, metadata: ClientMetadata,
                 regex: bool) -> bool:
        rules = self._by_regex(entry) if regex else self._exact(entry)
        return any(conditions_hold(rule[2], metadata) for rule in rules)

    def binder_for(self, entry: lxml.etree._Element,
                   metadata: ClientMetadata) -> Callable[..., Any] | None:
        """BindEntry when a rule of this exact name applies to the client.

        A rule under a Group or Client conditional that excludes the client
        does not count, so it cannot compete with another generator.
        """
        return self.BindEntry if self._applies(entry, metadata, regex=False) else None

    def HandlesEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        """True if only a regular-expression rule applies to the client."""
        return self._applies(entry, metadata, regex=True)

    def HandleEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> Any:  # noqa: N802
        return self.BindEntry(entry, metadata)

    def list_entries(self) -> list[tuple[str, str]]:
        return sorted((tag, name) for tag, by_name in self._index().items() for name in by_name)

    def get_match(self, entry: lxml.etree._Element,
                  metadata: ClientMetadata) -> tuple[PriorityStructFile, lxml.etree._Element]:
        """The source file and element that bind this entry for this client."""
        name = entry.get("name", "")
        # per file: its exact-name matches (the last wins), else its regex matches
        per_file: dict[PriorityStructFile, tuple[int, list[Any], list[Any]]] = {}
        for kind, rules in ((1, self._exact(entry)), (2, self._by_regex(entry))):
            for src, priority, conds, elem in rules:
                if conditions_hold(conds, metadata):
                    per_file.setdefault(src, (priority, [], []))[kind].append(elem)
        found = [(priority, src, exact[-1] if exact else regex[0])
                 for src, (priority, exact, regex) in per_file.items()]
        if not found:
            raise PluginExecutionError(
                f"{self.name}: no rule for {entry.tag}:{name} applies to {metadata.hostname}")
        top = max(item[0] for item in found)
        best = [item for item in found if item[0] == top]
        if len(best) > 1:
            files = ", ".join(sorted(os.path.relpath(item[1].name, self.data) for item in best))
            msg = (f"{self.name}: {entry.tag}:{name} for {metadata.hostname} is defined by "
                   f"several files with priority {top}: {files}")
            self.logger.error(msg)
            raise PluginExecutionError(msg)
        return best[0][1], best[0][2]

    def get_attrs(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, str]:
        """Attributes to set on the entry; text and children are copied in place."""
        src, data = self.get_match(entry, metadata)
        if data.text is not None and data.text.strip():
            entry.text = data.text
        for child in data:
            if isinstance(child.tag, str):
                entry.extend(src._match(child, metadata))
        name = entry.get("name", "")
        attrs = {}
        for key, value in data.attrib.items():
            if key == "name":
                continue
            if self.replace_name:
                value = value.replace("%{name}", name)
            attrs[key] = value
        return attrs

    def BindEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:  # noqa: N802
        for key, value in self.get_attrs(entry, metadata).items():
            entry.set(key, value)
        return entry

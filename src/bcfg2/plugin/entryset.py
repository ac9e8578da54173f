"""The versions of one entry, and the info.xml attributes of Path entries.

- Specificity: how specifically a file applies, from its name (``name`` for
  every client, ``name.G50_group`` for a group with a priority,
  ``name.H_host`` for one host).
- SpecificData / EntrySet: one version of an entry, and every version of it
  with the choice of the best one for a client.
- InfoXML / bind_info / default_path_metadata: ``info.xml`` attributes
  (owner, group, mode...) for Path entries, over the ``[mdata]`` defaults.
- set_content: a file's content into a Path entry (text, base64 or empty).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.bindmemo import sees, sees_within
from bcfg2.errors import PluginExecutionError, SpecificityError
from bcfg2.plugin.base import Debuggable, as_bool
from bcfg2.plugin.filebacked import FileBacked
from bcfg2.plugin.structfile import (
    Audience,
    Condition,
    StructFile,
    admitted,
    condition_holds,
    flatten_conditions,
    match_element,
)

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event, FileMonitor
    from bcfg2.metadata import ClientMetadata
    from bcfg2.options import Setup

#: what follows an entry's name in the file name of a group- or host-specific version;
#: ``\Z``, not ``$``, so that ``motd.H_host\n`` is no version for ``host``
SPECIFIC_SUFFIX = re.compile(r"\.(?:H_(?P<hostname>\S+)|G(?P<prio>\d+)_(?P<group>\S+))\Z")


#: group signatures whose choice one entry set remembers
MEMO = 4096


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

    #: whether ``get_data`` depends on nothing but the file (not on the client at all):
    #: a plain version, not a template (``bcfg2.bindmemo``)
    by_likeness = False

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

    def __init__(self, name: str, fam: FileMonitor | None = None) -> None:
        super().__init__(name, fam)
        self.infos: list[tuple[tuple[Condition, ...], lxml.etree._Element]] = []
        self._chosen: tuple[Audience, dict[Any, tuple[dict[str, str],
                                                      lxml.etree._Element] | None]] = (
            Audience(), {})

    def admits(self, metadata: ClientMetadata,
               *args: Any) -> Callable[[lxml.etree._Element], bool]:
        """Group/Client conditionals as usual; ``<Path>`` by the entry's real name (args[0])."""
        entry = args[0] if args else None
        name = entry.get("realname", entry.get("name")) if entry is not None else None

        def admit(item: lxml.etree._Element) -> bool:
            if item.tag == "Path":
                return (item.get("name") == name) != as_bool(item.get("negate", "false"))
            return admitted(item, metadata)
        return admit

    def load_xml(self, root: lxml.etree._Element) -> None:
        # every <Info> with the conditions above it, found once per change
        self.infos = [(conds, elem) for conds, elem in
                      flatten_conditions(root, self.conditional_tags) if elem.tag == "Info"]
        audience = Audience.of(cond for conds, _ in self.infos for cond in conds)
        # then the memo of which <Info> applies, by entry name and what the conditionals see
        self._chosen = (audience, {})

    def match_info(self, entry: lxml.etree._Element, metadata: ClientMetadata,
                   ) -> tuple[dict[str, str], lxml.etree._Element] | None:
        """The first ``<Info>`` that applies (its attributes and element), or None.

        Worked out once per entry name and client likeness (``Audience``),
        until the file changes.
        """
        audience, memo = self._chosen  # before the infos: a reload swaps both
        sees(audience)
        name = entry.get("realname", entry.get("name"))
        key = (name, audience.key(metadata))
        try:
            return memo[key]
        except KeyError:
            pass
        found = None
        for conds, info in self.infos:
            if all((cname == name) != negate if tag == "Path"
                   else condition_holds(tag, cname, negate, metadata)
                   for tag, cname, negate in conds):
                found = (dict(info.attrib), info)
                break
        memo[key] = found
        return found

    def bind_children(self, entry: lxml.etree._Element, info: lxml.etree._Element,
                      metadata: ClientMetadata) -> None:
        """Add an ``<Info>``'s children (ACLs...) that apply to the client, as copies."""
        if len(info):
            sees_within(info)
            admits = self.admits(metadata, entry)
            for child in info:
                entry.extend(match_element(child, metadata, self.conditional_tags, admits))

    def BindEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        """Apply the first matching ``<Info>``; False if none matched."""
        found = self.match_info(entry, metadata)
        if found is None:
            return False
        entry.attrib.update(found[0])
        self.bind_children(entry, found[1], metadata)
        return True


def bind_info(entry: lxml.etree._Element, metadata: ClientMetadata,
              infoxml: InfoXML | None, default: dict[str, str]) -> None:
    """Set default Path attributes, then whatever info.xml says for this client."""
    found = infoxml.match_info(entry, metadata) if infoxml is not None else None
    if found is None:
        entry.attrib.update(default)
        return
    # one pass: the defaults' order, then the new attributes of the <Info>, as two would give
    entry.attrib.update(default | found[0])
    infoxml.bind_children(entry, found[1], metadata)


def set_content(entry: lxml.etree._Element, data: bytes | str) -> None:
    """Put file content into an entry: text, base64 or empty."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data:
        entry.text = None
        entry.set("empty", "true")
        return
    if entry.get("encoding") != "base64":
        try:
            entry.text = data.decode("utf-8")
            return
        except (UnicodeDecodeError, ValueError):
            pass  # binary, or characters XML cannot hold
    entry.set("encoding", "base64")
    entry.text = base64.b64encode(data).decode("ascii")


class EntrySet(Debuggable):
    """The versions of one entry, chosen by the specificity of their file names.

    ``name`` applies to all clients, ``name.G50_group`` to members of group
    (higher priority wins), ``name.H_host`` to one host; host beats group
    beats all, and two equally specific matches are an error.
    """

    #: editor files; \Z so that match() too looks at the whole file name
    ignore = re.compile(r"(?:\.#.*|.*~|\..*\.sw[px]|.*\.swx|#.*#)\Z")

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
        self._forget()

    def _forget(self) -> None:
        """Start a new memo of the best version per client likeness (the versions changed)."""
        specifics = [item.specific for item in list(self.entries.values())]
        audience = Audience((spec.group for spec in specifics if spec.group),
                            (spec.hostname for spec in specifics if spec.hostname))
        self._best: tuple[Audience, dict[Any, SpecificData]] = (audience, {})

    def specificity_from_filename(self, fname: str) -> Specificity:
        """Parse ``name``, ``name.G##_group`` or ``name.H_host``."""
        if fname == self.basename:
            return Specificity(all=True)
        match = None
        if fname.startswith(self.basename):
            match = SPECIFIC_SUFFIX.fullmatch(fname, len(self.basename))
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
        if self.ignore.fullmatch(fname):
            return
        if event.action == "deleted":
            self.entries.pop(fname, None)
        elif event.action == "changed" and fname in self.entries:
            self.entries[fname].HandleEvent(event)
            return  # the same versions: the same choices
        elif event.action in ("exists", "created", "changed"):
            self.entry_init(event)
        self._forget()  # after the change: a build that read the old versions keeps the old memo

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
        """The most specific match; SpecificityError on none or on a tie.

        Without ``matching``, the answer is remembered for every client that
        looks alike to the versions' groups and hosts, until the versions change.
        """
        if matching is not None:
            return self._rank(matching, metadata)
        audience, memo = self._best  # before the versions: a change swaps the memo after them
        sees(audience)
        key = audience.key(metadata)
        best = memo.get(key)
        if best is None:
            best = memo[key] = self._rank(self.get_matching(metadata), metadata)
        return best

    def _rank(self, matching: list[SpecificData], metadata: ClientMetadata) -> SpecificData:
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

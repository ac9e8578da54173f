"""XML files whose ``<Group>`` and ``<Client>`` tags are conditionals.

A conditional admits its children for the clients it names (a member of
the group, the client or one of its aliases), or, with ``negate="true"``,
for every other client. ``match_element`` resolves them for one client;
``StructFile`` is a repository file read that way (bundles, rules,
properties...), and ``PriorityStructFile`` one with a priority, as Rules
and Defaults use them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.errors import PluginExecutionError, RepositoryError
from bcfg2.plugin.base import as_bool
from bcfg2.plugin.filebacked import XMLFileBacked

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

#: one conditional: (tag, name, negate)
Condition = tuple[str, str, bool]
#: the tags that are conditionals in every StructFile
CONDITIONAL_TAGS = ("Group", "Client")


def condition_holds(tag: str, name: str | None, negate: bool, metadata: ClientMetadata) -> bool:
    """Whether a ``<Group>`` or ``<Client>`` conditional admits the client."""
    if tag == "Group":
        result = name in metadata.groups
    else:
        result = name == metadata.hostname or name in metadata.aliases
    return result != negate


def conditions_hold(conditions: Iterable[Condition], metadata: ClientMetadata) -> bool:
    """Whether every one of a list of conditionals admits the client."""
    return all(condition_holds(tag, name, neg, metadata) for tag, name, neg in conditions)


#: the likeness key of an audience that names nobody
_NOTHING: frozenset[str] = frozenset()


class Audience:
    """The groups and client names that some conditionals or file versions name.

    Two clients in the same of these groups, with the same of these names
    (as hostname or alias), look alike to all of them: what was worked out
    for one holds for the other. ``key`` is that likeness, so memos keyed by
    it are exact and shared by every client of a group signature.
    """

    __slots__ = ("clients", "groups")

    def __init__(self, groups: Iterable[str | None] = (),
                 clients: Iterable[str | None] = ()) -> None:
        self.groups = frozenset(groups)
        self.clients = frozenset(clients)

    @classmethod
    def of(cls, conditions: Iterable[Condition]) -> Audience:
        """The audience of ``<Group>``/``<Client>`` conditionals (other tags are left to the caller)."""
        conditions = list(conditions)
        return cls((name for tag, name, _ in conditions if tag == "Group"),
                   (name for tag, name, _ in conditions if tag == "Client"))

    def key(self, metadata: ClientMetadata) -> Hashable:
        """What of the client these conditionals can see."""
        if not self.groups and not self.clients:
            return _NOTHING  # nothing to see: every client alike
        groups = self.groups & metadata.groups
        if not self.clients:
            return groups
        hostname = metadata.hostname
        return (groups, hostname if hostname in self.clients else None,
                self.clients & metadata.aliases)


def flatten_conditions(
    root: lxml.etree._Element, conditional_tags: tuple[str, ...] = CONDITIONAL_TAGS
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


def admitted(element: lxml.etree._Element, metadata: ClientMetadata) -> bool:
    """False for a ``<Group>``/``<Client>`` conditional that excludes the client."""
    if element.tag in CONDITIONAL_TAGS:
        return condition_holds(element.tag, element.get("name"),
                               as_bool(element.get("negate", "false")), metadata)
    return True


def match_element(element: lxml.etree._Element, metadata: ClientMetadata,
                  conditional_tags: tuple[str, ...] = CONDITIONAL_TAGS,
                  admits: Callable[[lxml.etree._Element], bool] | None = None,
                  ) -> list[lxml.etree._Element]:
    """What of one element applies to the client: copies, with conditionals resolved.

    A conditional (a tag in ``conditional_tags``) that admits the client
    gives its children, resolved in turn, and one that does not gives
    nothing; any other element gives one copy of itself with its children
    resolved. Comments and processing instructions are left out. ``admits``
    decides which elements are kept (default: ``<Group>``/``<Client>`` by
    name and ``negate``); InfoXML adds ``<Path>`` conditionals with it.
    The original is never changed, so every client gets its own copies.
    """
    if not isinstance(element.tag, str):
        return []
    if not (admitted(element, metadata) if admits is None else admits(element)):
        return []
    if element.tag in conditional_tags:
        out: list[lxml.etree._Element] = []
        for child in element:
            out.extend(match_element(child, metadata, conditional_tags, admits))
        return out
    if not len(element):
        new = copy.copy(element)  # a leaf: copied by lxml, in C
        new.tail = None
        return [new]
    new = lxml.etree.Element(element.tag, attrib=dict(element.attrib))
    new.text = element.text
    new.tail = element.tail
    for child in element:
        new.extend(match_element(child, metadata, conditional_tags, admits))
    return [new]


class StructFile(XMLFileBacked):
    """An XML file whose ``<Group>``/``<Client>`` tags are conditionals."""

    conditional_tags: tuple[str, ...] = CONDITIONAL_TAGS

    def admits(self, metadata: ClientMetadata,
               *args: Any) -> Callable[[lxml.etree._Element], bool] | None:
        """How this file's conditionals are decided for a client (None: the default).

        ``args`` are those given to ``Match``/``XMLMatch``; a subclass with
        conditionals of its own (InfoXML's ``<Path>``) returns its test here.
        """
        return None

    def Match(self, metadata: ClientMetadata, *args: Any) -> list[lxml.etree._Element]:  # noqa: N802
        """The entries that apply to the client, conditionals flattened (copies)."""
        xdata = self.xdata
        if xdata is None:
            return []
        admits = self.admits(metadata, *args)
        out: list[lxml.etree._Element] = []
        for child in xdata:
            out.extend(match_element(child, metadata, self.conditional_tags, admits))
        return out

    def XMLMatch(self, metadata: ClientMetadata, *args: Any) -> lxml.etree._Element:  # noqa: N802
        """A copy of the whole document with conditionals resolved.

        With the usual ``<Group>``/``<Client>`` conditionals, the resolved
        document is made once per client likeness (the groups and clients the
        file names) and each caller gets a copy of it, until the file changes.
        """
        xdata = self.xdata
        if xdata is None:
            raise PluginExecutionError(f"{self.name} has never been parsed successfully")
        if self.conditional_tags != CONDITIONAL_TAGS or self.admits(metadata, *args) is not None:
            return self.match_tree(xdata, metadata, *args)
        resolved = self._resolved
        if resolved is None or resolved[0] is not xdata:  # tied to the parsed tree it came from
            audience = Audience(
                (el.get("name") for el in xdata.iter("Group")),
                (el.get("name") for el in xdata.iter("Client")))
            resolved = self._resolved = (xdata, audience, {})
        key = resolved[1].key(metadata)
        tree = resolved[2].get(key)
        if tree is None:
            tree = resolved[2][key] = self.match_tree(xdata, metadata, *args)
        return copy.deepcopy(tree)

    #: (the parsed tree, its Audience, likeness -> the tree resolved for such clients)
    _resolved: tuple[lxml.etree._Element, Audience, dict[Any, lxml.etree._Element]] | None = None

    def match_tree(self, xdata: lxml.etree._Element, metadata: ClientMetadata,
                   *args: Any) -> lxml.etree._Element:
        """A copy of ``xdata`` with conditionals resolved (for rendered templates too)."""
        admits = self.admits(metadata, *args)
        root = lxml.etree.Element(xdata.tag, attrib=dict(xdata.attrib))
        root.text = xdata.text
        for child in xdata:
            root.extend(match_element(child, metadata, self.conditional_tags, admits))
        return root


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

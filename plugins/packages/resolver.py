"""Dependency resolution over the packages a client's sources offer.

A ``View`` merges the indices of a client's sources (highest priority
first, then in sources.xml order) with their blacklists and whitelists
applied; ``resolve`` closes a set of package names under their
dependencies.

Where upstream Bcfg2 added nothing for a requirement it could not decide
(``a | b``, or a virtual package with several providers), and the client's
package manager then picked one that Bcfg2 reported as an extra package,
this resolver decides as the package manager would, so the configuration
names every package the client ends up with:

- a requirement already met by a package in the set (the name itself, or a
  package providing it) adds nothing;
- requirements with only one way to meet them (one real package, or a
  virtual with one provider) are followed first, so the set is as complete
  as possible before any choice is made;
- then each remaining choice, in order, takes the first alternative, and
  for a virtual package its first provider in index order (apt's own
  choice), unless something added meanwhile meets it.

The order is fixed by the sorted initial names, so the same sources and
the same packages give the same answer every time.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bcfg2.plugins.packages.index import DEPENDS, ESSENTIAL, GROUP_KINDS, RECOMMENDS, Index, Record
from bcfg2.plugins.packages.sources import Source

#: how many resolutions are remembered (each is a few kilobytes)
MEMO_SIZE = 4096
#: ``<Package group=... type=...>``: which kinds of members each type installs
GROUP_TYPES = {
    "mandatory": GROUP_KINDS[:1],
    "default": GROUP_KINDS[:2],
    "optional": GROUP_KINDS,
    "all": GROUP_KINDS,
}


@dataclass(frozen=True)
class Result:
    """One resolution: every package of the closed set, and what it had to add."""

    #: every package in the closed set (initial names as resolved, and what was added)
    packages: frozenset[str]
    #: the packages added to the initial ones (dependencies, providers chosen), sorted
    added: tuple[str, ...]
    #: names (initial, or required by a package) that no source offers, sorted
    unknown: tuple[str, ...]


class View:
    """The packages of a client's sources, merged: what resolution walks.

    ``parts`` are (source, index) pairs in the order they are consulted; a
    package name offered by several sources comes from the first.
    """

    def __init__(self, parts: list[tuple[Source, Index]]) -> None:
        self.parts = parts
        self.packages: dict[str, Record]
        self.provides: dict[str, list[str]]
        #: which part each package comes from (None: all from the first)
        self.owner: dict[str, int] | None = None
        filtered = any(src.blacklist or src.whitelist for src, _ in parts)
        if len(parts) == 1 and not filtered:
            index = parts[0][1]
            self.packages, self.provides = index.packages, index.provides
        else:
            self._merge()
        self.groups: dict[str, dict[str, list[str]]] = {}
        for _, index in parts:
            for group, kinds in index.groups.items():
                self.groups.setdefault(group, kinds)
        self.recommends = [src.recommended for src, _ in parts]
        self.ptypes = [index.ptype for _, index in parts]
        essential: set[str] = set()
        for part, (src, index) in enumerate(parts):
            if src.essential:
                essential.update(name for name, rec in index.packages.items()
                                 if rec[ESSENTIAL] and self.part_of(name) == part)
        self.essential = tuple(sorted(essential))
        self.memo: OrderedDict[frozenset[str], Result] = OrderedDict()
        #: structures built from results (by whoever builds them), bounded like ``memo``
        self.structures: OrderedDict[Any, Any] = OrderedDict()

    def remember_structure(self, key: Any, structure: Any) -> None:
        """Keep a structure built from a result of this view, for the next client."""
        self.structures[key] = structure
        if len(self.structures) > MEMO_SIZE:
            self.structures.popitem(last=False)

    def _merge(self) -> None:
        packages: dict[str, Record] = {}
        owner: dict[str, int] = {}
        provides: dict[str, list[str]] = {}
        for part, (src, index) in enumerate(self.parts):
            offers = src.admits if (src.blacklist or src.whitelist) else None
            for name, record in index.packages.items():
                if name not in packages and (offers is None or offers(name)):
                    packages[name] = record
                    owner[name] = part
            for capability, providers in index.provides.items():
                mine = provides.get(capability)
                usable = [p for p in providers if offers is None or offers(p)]
                if mine is None:
                    if usable:
                        provides[capability] = usable
                else:
                    mine.extend(p for p in usable if p not in mine)
        self.packages, self.owner, self.provides = packages, owner, provides

    def part_of(self, name: str) -> int:
        """The position (in ``parts``) of the source a package comes from."""
        return 0 if self.owner is None else self.owner.get(name, 0)

    def ptype_of(self, name: str) -> str:
        """The entry type of a package: that of the source offering it, else the first's."""
        return self.ptypes[self.part_of(name)] if self.ptypes else ""

    def knows(self, name: str) -> bool:
        """Whether a package or a capability of this name is offered."""
        return name in self.packages or name in self.provides

    def group_members(self, group: str, kind: str = "default") -> list[str] | None:
        """The packages ``<Package group=... type=kind>`` installs, or None for no such group."""
        kinds = self.groups.get(group)
        if kinds is None:
            return None
        members: list[str] = []
        for wanted in GROUP_TYPES.get(kind, GROUP_TYPES["default"]):
            members.extend(kinds.get(wanted, ()))
        return members

    # -- resolution --------------------------------------------------------

    def resolve(self, initial: Iterable[str]) -> Result:
        """The closed set for these initial names, remembered for the next asker."""
        key = frozenset(initial)
        memo = self.memo
        found = memo.get(key)
        if found is not None:
            memo.move_to_end(key)
            return found
        result = self._resolve(key)
        memo[key] = result
        if len(memo) > MEMO_SIZE:
            memo.popitem(last=False)
        return result

    def _resolve(self, initial: frozenset[str]) -> Result:
        packages, provides = self.packages, self.provides
        have: set[str] = set()
        unknown: set[str] = set()
        queue: deque[str] = deque()
        choices: deque[list[str]] = deque()

        def met(name: str) -> bool:
            if name in have:
                return True
            providers = provides.get(name)
            return providers is not None and any(p in have for p in providers)

        def only_way(name: str) -> str | None:
            """The one package that meets a requirement, if there is exactly one."""
            if name in packages:
                return name
            providers = provides.get(name)
            if providers is not None and len(providers) == 1:
                return providers[0]
            return None

        def add(name: str) -> None:
            have.add(name)
            queue.append(name)

        def follow(requirements: list[list[str]]) -> None:
            for alternatives in requirements:
                if len(alternatives) == 1:
                    name = alternatives[0]
                    if met(name):
                        continue
                    pick = only_way(name)
                    if pick is not None:
                        add(pick)
                    elif name in provides:
                        choices.append(alternatives)
                    else:
                        unknown.add(name)
                elif not any(met(name) for name in alternatives):
                    choices.append(alternatives)

        for name in sorted(initial):
            if not met(name):
                pick = only_way(name)
                if pick is not None:
                    add(pick)
                elif name in provides:
                    choices.append([name])
                else:
                    unknown.add(name)
        recommends, owner = self.recommends, self.owner
        while True:
            while queue:
                name = queue.popleft()
                record = packages[name]
                follow(record[DEPENDS])
                if record[RECOMMENDS] and recommends[0 if owner is None else owner[name]]:
                    follow(record[RECOMMENDS])
            if not choices:
                break
            alternatives = choices.popleft()
            if any(met(name) for name in alternatives):
                continue
            for name in alternatives:
                if name in packages:
                    add(name)
                    break
                providers = provides.get(name)
                if providers:
                    add(providers[0])
                    break
            else:
                unknown.add(alternatives[0] if len(alternatives) == 1
                            else " | ".join(alternatives))
        return Result(packages=frozenset(have), added=tuple(sorted(have - initial)),
                      unknown=tuple(sorted(unknown)))

"""PrioDir: a generator of entries described in XML files with priorities (Rules, Defaults)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.bindmemo import by_likeness, sees, sees_within
from bcfg2.configcache import depends_on
from bcfg2.errors import PluginExecutionError
from bcfg2.plugin.base import Plugin
from bcfg2.plugin.filebacked import XMLDirectoryBacked
from bcfg2.plugin.interfaces import Generator
from bcfg2.plugin.structfile import (
    Audience,
    Condition,
    PriorityStructFile,
    conditions_hold,
    match_element,
)

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event
    from bcfg2.metadata import ClientMetadata

#: one rule in a PrioDir's merged index: file, its priority, conditions, element
Rule = tuple[PriorityStructFile, int, tuple[Condition, ...], lxml.etree._Element]
#: the most entry names whose recorded tokens are kept at once (names come from structures)
MAX_TOKEN_MEMO = 100_000


class RulePlan:
    """The rules that may bind one (tag, name), and what they give each kind of client.

    ``outcome`` is worked out once per client likeness (the groups and client
    names of the rules' conditionals), until the PrioDir's files change.
    """

    __slots__ = ("audience", "exact", "outcomes", "regex")

    def __init__(self, exact: list[Rule], regex: list[Rule]) -> None:
        self.exact = exact
        self.regex = regex
        self.audience = Audience.of(cond for rule in exact + regex for cond in rule[2])
        #: likeness -> (an exact rule applies, a regex rule applies, the chosen rule or None)
        self.outcomes: dict[Any, tuple[bool, bool, tuple[PriorityStructFile,
                                                           lxml.etree._Element] | None]] = {}

    def outcome(self, metadata: ClientMetadata) -> tuple[
            bool, bool, tuple[PriorityStructFile, lxml.etree._Element] | None]:
        if not (self.exact or self.regex):
            return NO_OUTCOME  # most entries a PrioDir is asked about: none of its names
        sees(self.audience)
        key = self.audience.key(metadata)
        found = self.outcomes.get(key)
        if found is None:
            exact = [rule for rule in self.exact if conditions_hold(rule[2], metadata)]
            regex = [rule for rule in self.regex if conditions_hold(rule[2], metadata)]
            found = self.outcomes[key] = (bool(exact), bool(regex), choose(exact, regex))
        return found


#: the outcome for a name no rule has
NO_OUTCOME: tuple[bool, bool, None] = (False, False, None)


def choose(exact: list[Rule], regex: list[Rule],
           ) -> tuple[PriorityStructFile, lxml.etree._Element] | None:
    """Of the rules that apply, the one that binds; None if none does or files conflict.

    Per file, its last exact-name match wins, else its first regex match;
    then the file with the highest priority, which must be the only one.
    """
    per_file: dict[PriorityStructFile, tuple[int, list[Any], list[Any]]] = {}
    for kind, rules in ((1, exact), (2, regex)):
        for src, priority, _conds, elem in rules:
            per_file.setdefault(src, (priority, [], []))[kind].append(elem)
    found = [(priority, src, exact[-1] if exact else regex[0])
             for src, (priority, exact, regex) in per_file.items()]
    if not found:
        return None
    top = max(item[0] for item in found)
    best = [item for item in found if item[0] == top]
    if len(best) > 1:
        return None
    return best[0][1], best[0][2]


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
        self._plans: dict[tuple[str, str], RulePlan] = {}
        #: (tag, name) -> what a build asking about it records (see _record)
        self._tokens: dict[tuple[str, str], tuple[str, ...]] = {}
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
        self._invalidate()

    def add_entry(self, relative: str, event: Event) -> None:
        super().add_entry(relative, event)
        entry = self.entries.get(relative)
        if isinstance(entry, PriorityStructFile):
            entry.on_change = self._invalidate

    def _invalidate(self) -> None:
        """A file changed, came or went: rebuild the index, and drop the configurations
        that asked about a name whose rules are not the same ones now."""
        old = self._merged
        self._merged = None
        self._plans = {}
        if old is None:
            return  # not built since the last change: no build has read it
        new = self._index()
        stale = set()
        for tag in old.keys() | new.keys():
            before, after = old.get(tag, {}), new.get(tag, {})
            for name in before.keys() | after.keys():
                if [id(rule[3]) for rule in before.get(name, ())] != \
                        [id(rule[3]) for rule in after.get(name, ())]:
                    stale.add(self._token(tag, name))
        if stale:
            self.expire_configurations(*stale)

    def _token(self, tag: str, name: str) -> str:
        """What a build that asks about (tag, name) records (``bcfg2.configcache``)."""
        return f"{self.name}:{tag}:{name}"

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond the names each build asks about (the whole directory with
        regular expressions)."""
        return ""

    def plan(self, entry: lxml.etree._Element) -> RulePlan:
        """The rules for the entry's tag and name, found once per change to the files."""
        self._record(entry)  # every time: a build served from the memo read the rules too
        plans = self._plans  # before the index: a change swaps both
        key = (entry.tag, entry.get("name", ""))
        found = plans.get(key)
        if found is None:
            found = plans[key] = RulePlan(self._exact(entry), self._by_regex(entry))
        return found

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

    def _record(self, entry: lxml.etree._Element) -> None:
        """What a build that asks about this entry depends on (``bcfg2.configcache``): the
        rules of its names, or with regular expressions any rule of any file."""
        key = (entry.tag, entry.get("name", ""))
        tokens = self._tokens.get(key)
        if tokens is None:  # a function of the name alone: worked out once per name
            if len(self._tokens) >= MAX_TOKEN_MEMO:
                self._tokens.clear()
            tokens = self._tokens[key] = (
                *(self._token(entry.tag, name) for name in self._names(entry)),
                *((self.data,) if self.regex else ()))
        depends_on(*tokens)

    def _exact(self, entry: lxml.etree._Element) -> list[Rule]:
        by_name = self._index().get(entry.tag) or {}
        names = self._names(entry)
        return [rule for name in names for rule in by_name.get(name, ())]

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

    def binder_for(self, entry: lxml.etree._Element,
                   metadata: ClientMetadata) -> Callable[..., Any] | None:
        """BindEntry when a rule of this exact name applies to the client.

        A rule under a Group or Client conditional that excludes the client
        does not count, so it cannot compete with another generator.
        """
        if entry.tag not in self._index():
            self._record(entry)  # a rule of this name may come
            return None  # no rule of this tag at all, as for most entries of other generators
        return self.BindEntry if self.plan(entry).outcome(metadata)[0] else None

    def HandlesEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        """True if only a regular-expression rule applies to the client."""
        return self.plan(entry).outcome(metadata)[1]

    def HandleEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> Any:  # noqa: N802
        return self.BindEntry(entry, metadata)

    def list_entries(self) -> list[tuple[str, str]]:
        return sorted((tag, name) for tag, by_name in self._index().items() for name in by_name)

    def get_match(self, entry: lxml.etree._Element,
                  metadata: ClientMetadata) -> tuple[PriorityStructFile, lxml.etree._Element]:
        """The source file and element that bind this entry for this client."""
        chosen = self.plan(entry).outcome(metadata)[2]
        if chosen is not None:
            return chosen
        name = entry.get("name", "")
        # none applies, or files of one priority conflict: say which
        per_file: dict[PriorityStructFile, int] = {}
        for src, priority, conds, _elem in self._exact(entry) + self._by_regex(entry):
            if conditions_hold(conds, metadata):
                per_file[src] = priority
        if not per_file:
            raise PluginExecutionError(
                f"{self.name}: no rule for {entry.tag}:{name} applies to {metadata.hostname}")
        top = max(per_file.values())
        files = ", ".join(sorted(os.path.relpath(src.name, self.data)
                                 for src, priority in per_file.items() if priority == top))
        msg = (f"{self.name}: {entry.tag}:{name} for {metadata.hostname} is defined by "
               f"several files with priority {top}: {files}")
        self.logger.error(msg)
        raise PluginExecutionError(msg)

    def get_attrs(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, str]:
        """Attributes to set on the entry; text and children are copied in place."""
        _src, data = self.get_match(entry, metadata)
        if data.text is not None and data.text.strip():
            entry.text = data.text
        if len(data):
            sees_within(data)
            for child in data:
                if isinstance(child.tag, str):
                    entry.extend(match_element(child, metadata))
        attrs = dict(data.attrib)
        attrs.pop("name", None)
        if self.replace_name:
            name = entry.get("name", "")
            attrs = {key: value.replace("%{name}", name) for key, value in attrs.items()}
        return attrs

    def BindEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:  # noqa: N802
        entry.attrib.update(self.get_attrs(entry, metadata))
        by_likeness()  # the rule chosen (its audience reported), its children as they apply
        return entry

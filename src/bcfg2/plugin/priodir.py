"""PrioDir: a generator of entries described in XML files with priorities (Rules, Defaults)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.configcache import depends_on
from bcfg2.errors import PluginExecutionError
from bcfg2.plugin.base import Plugin
from bcfg2.plugin.filebacked import XMLDirectoryBacked
from bcfg2.plugin.interfaces import Generator
from bcfg2.plugin.structfile import Condition, PriorityStructFile, conditions_hold, match_element

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event
    from bcfg2.metadata import ClientMetadata

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
        names = self._names(entry)
        depends_on(*(self._token(entry.tag, name) for name in names))
        return [rule for name in names for rule in by_name.get(name, ())]

    def _by_regex(self, entry: lxml.etree._Element) -> list[Rule]:
        if not self.regex:
            return []
        depends_on(self.data)  # any rule of any file may match
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
        _src, data = self.get_match(entry, metadata)
        if data.text is not None and data.text.strip():
            entry.text = data.text
        for child in data:
            if isinstance(child.tag, str):
                entry.extend(match_element(child, metadata))
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

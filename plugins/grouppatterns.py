"""GroupPatterns: groups for clients whose host names match patterns.

``GroupPatterns/config.xml`` holds ``<GroupPattern>`` elements, each with
one or more ``<NamePattern>`` (a regular expression searched in the host
name) or ``<NameRange>`` (a host name with numeric ranges such as
``node[[1-32]]`` or ``rack[[1-4,7]]-n[[1-16]]``) and the ``<Group>``
names given to matching clients. In the group names of a NamePattern,
``$1``, ``$2``... stand for what the pattern's parenthesised groups
matched. As in Bcfg2, a NameRange is anchored at the start of the host
name only, so ``node[[1-32]]`` also matches ``node7.example.com``.

The file is reread when it changes; a file with an error keeps the last
good version in service. After a change, the cached metadata of exactly
the clients whose pattern groups change is expired.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.filemonitor import FileMonitor
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Connector, Plugin, XMLFileBacked

#: ``[[1-5,7]]`` in a NameRange
RANGE = re.compile(r"\[\[([^\]]*)\]\]")
#: one part of a range list: ``7`` or ``1-5``
RANGE_PART = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
#: ``$1`` in a group name
SUBSTITUTION = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class NamePattern:
    """A regular expression searched in the host name; groups may use ``$N``."""

    regex: re.Pattern[str]
    groups: tuple[str, ...]

    def process(self, hostname: str) -> list[str]:
        """The groups for a host name (substituted), or [] if it does not match."""
        match = self.regex.search(hostname)
        if match is None:
            return []
        found = match.groups()
        out = []
        for group in self.groups:
            name = SUBSTITUTION.sub(lambda m: found[int(m.group(1)) - 1] or "", group)
            if name:
                out.append(name)
        return out


@dataclass(frozen=True)
class NameRange:
    """A host name with ``[[ranges]]`` of numbers, matched from its start."""

    regex: re.Pattern[str]
    ranges: tuple[tuple[tuple[int, int], ...], ...]
    groups: tuple[str, ...]

    def process(self, hostname: str) -> list[str]:
        """The groups for a host name, or [] if it does not match."""
        match = self.regex.match(hostname)
        if match is None:
            return []
        for digits, allowed in zip(match.groups(), self.ranges, strict=True):
            number = int(digits)
            if not any(low <= number <= high for low, high in allowed):
                return []
        return list(self.groups)


Matcher = NamePattern | NameRange


def parse_ranges(spec: str) -> tuple[tuple[int, int], ...] | None:
    """``1-5,7`` as ((1, 5), (7, 7)); None if it is not a range list."""
    out = []
    for part in spec.split(","):
        match = RANGE_PART.fullmatch(part)
        if match is None:
            return None
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            return None
        out.append((low, high))
    return tuple(out)


def host_groups(matchers: tuple[Matcher, ...], hostname: str) -> frozenset[str]:
    """Every group the patterns give a host name."""
    return frozenset(group for matcher in matchers for group in matcher.process(hostname))


def parse_patterns(root: lxml.etree._Element, path: str) -> tuple[Matcher, ...]:
    """The matchers of a GroupPatterns/config.xml (RepositoryError with path:line if wrong).

    What the plugin serves and what bcfg2-lint checks, read the same way.
    """
    if root.tag != "GroupPatterns":
        raise RepositoryError(f"{path}:{root.sourceline}: the root element must be "
                              f"<GroupPatterns>, not <{root.tag}>")
    return tuple(_PatternsReader(path).matchers(root))


class _PatternsReader:
    """Reads GroupPattern elements; errors name the file and the line."""

    def __init__(self, name: str) -> None:
        self.name = name

    def matchers(self, node: lxml.etree._Element) -> list[Matcher]:
        out: list[Matcher] = []
        for child in node:
            if not isinstance(child.tag, str):
                continue
            if child.tag == "GroupPatterns":
                out.extend(self.matchers(child))
            elif child.tag == "GroupPattern":
                out.extend(self._pattern(child))
            else:
                raise self._error(child, f"unknown element <{child.tag}> "
                                         f"(GroupPattern expected)")
        return out

    def _error(self, node: lxml.etree._Element, message: str) -> RepositoryError:
        return RepositoryError(f"{self.name}:{node.sourceline}: {message}")

    def _pattern(self, node: lxml.etree._Element) -> list[Matcher]:
        children = [child for child in node if isinstance(child.tag, str)]
        for child in children:
            if child.tag not in ("NamePattern", "NameRange", "Group"):
                raise self._error(child, f"unknown element <{child.tag}> "
                                         f"(NamePattern, NameRange or Group expected)")
            if not (child.text or "").strip():
                raise self._error(child, f"empty <{child.tag}>")
        groups = tuple(child.text.strip() for child in children if child.tag == "Group")
        if not groups:
            raise self._error(node, "<GroupPattern> without a <Group>")
        out: list[Matcher] = []
        for child in children:
            if child.tag == "NamePattern":
                out.append(self._name_pattern(child, groups))
            elif child.tag == "NameRange":
                out.append(self._name_range(child, groups))
        if not out:
            raise self._error(node, "<GroupPattern> without a NamePattern or NameRange")
        return out

    def _name_pattern(self, node: lxml.etree._Element, groups: tuple[str, ...]) -> NamePattern:
        text = node.text.strip()
        try:
            regex = re.compile(text)
        except re.error as err:
            raise self._error(node, f"invalid regular expression {text!r}: {err}") from None
        for group in groups:
            for ref in SUBSTITUTION.findall(group):
                if not 1 <= int(ref) <= regex.groups:
                    raise self._error(node, f"group {group!r} uses ${ref}, but {text!r} "
                                            f"has {regex.groups} parenthesised group(s)")
        return NamePattern(regex, groups)

    def _name_range(self, node: lxml.etree._Element, groups: tuple[str, ...]) -> NameRange:
        text = node.text.strip()
        pieces = RANGE.split(text)  # literal, range, literal, range, ..., literal
        ranges = []
        for spec in pieces[1::2]:
            parsed = parse_ranges(spec)
            if parsed is None:
                raise self._error(node, f"invalid range [[{spec}]] in {text!r}")
            ranges.append(parsed)
        regex = re.compile("(\\d+)".join(re.escape(literal) for literal in pieces[0::2]))
        return NameRange(regex, tuple(ranges), groups)



class PatternsFile(XMLFileBacked):
    """GroupPatterns/config.xml; ``matchers`` is empty until it is parsed."""

    def __init__(self, name: str, fam: FileMonitor | None, plugin: GroupPatterns) -> None:
        self.plugin = plugin
        self.matchers: tuple[Matcher, ...] = ()
        super().__init__(name, fam, should_monitor=True)

    def removed(self) -> None:
        self.plugin.logger.info("%s was removed: no pattern groups now", self.name)
        self._swap(())

    def load_xml(self, root: lxml.etree._Element) -> None:
        self._swap(parse_patterns(root, self.name))

    def _swap(self, matchers: tuple[Matcher, ...]) -> None:
        self.matchers = matchers
        self.plugin.patterns_changed()

class GroupPatterns(Plugin, Connector):
    """Groups from patterns on client host names (GroupPatterns/config.xml)."""

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: GroupPatterns gives no groups", self.data)
        self.config = PatternsFile(os.path.join(self.data, "config.xml"), core.fam, self)

    def get_additional_groups(self, metadata: ClientMetadata) -> list[str]:
        """The groups the patterns give this client's host name, sorted."""
        return sorted(host_groups(self.config.matchers, metadata.hostname))

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing: all it gives is groups, which the core keys configurations by."""
        return ""

    def patterns_changed(self) -> None:
        """Expire the cached metadata of the clients whose pattern groups change."""
        self.expire_metadata_if_groups_change()


__all__ = ["GroupPatterns", "NamePattern", "NameRange", "host_groups", "parse_patterns",
           "parse_ranges"]

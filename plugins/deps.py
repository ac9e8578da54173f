"""Deps: "entry X requires entries Y and Z", added to the client's configuration."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.plugin import Plugin, StructFile, StructureValidator, XMLDirectoryBacked, depends_on

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

Key = tuple[str, str]
#: tags that group entries rather than being entries themselves
GROUPINGS = ("Bundle", "BoundBundle", "Independent")


class DepsFile(StructFile):
    """One ``<Dependencies priority=...>`` file."""

    priority = 0

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "Dependencies":
            raise RepositoryError(f"{self.name}: the root element must be <Dependencies>, "
                                  f"not <{root.tag}>")
        try:
            priority = int(root.get("priority", "0"))
        except ValueError:
            raise RepositoryError(
                f"{self.name}: priority {root.get('priority')!r} is not an integer") from None
        for el in root.iter():
            if isinstance(el.tag, str) and el is not root and el.tag not in GROUPINGS \
                    and not el.get("name"):
                raise RepositoryError(f"{self.name}:{el.sourceline}: <{el.tag}> needs a name=")
        self.priority = priority

    def prerequisites(self, metadata: ClientMetadata) -> dict[Key, list[lxml.etree._Element]]:
        """For each entry this file names, its prerequisites for this client."""
        out: dict[Key, list[lxml.etree._Element]] = {}
        for entry in self.Match(metadata):
            reqs = out.setdefault((entry.tag, entry.get("name")), [])
            reqs.extend(child for child in entry if isinstance(child.tag, str))
        return out


class Deps(Plugin, StructureValidator, XMLDirectoryBacked):
    """Adds the prerequisites of the client's entries as an Independent structure.

    Prerequisites are followed transitively; an entry already in the
    configuration is not added again. When several files name the same
    entry, the one with the highest priority wins; a tie is an error.
    """

    __child__ = DepsFile
    patterns = re.compile(r".*\.xml")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        XMLDirectoryBacked.__init__(self, self.data, core.fam)

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond its files (recorded while validating)."""
        return ""

    def _rules(self, metadata: ClientMetadata) -> dict[Key, list[lxml.etree._Element]]:
        """Prerequisites by entry for this client, priorities resolved."""
        found: dict[Key, list[tuple[int, str, list[lxml.etree._Element]]]] = {}
        files = sorted((f for f in list(self.entries.values())
                        if isinstance(f, DepsFile) and f.xdata is not None),
                       key=lambda f: f.name)
        for deps_file in files:
            for key, reqs in deps_file.prerequisites(metadata).items():
                found.setdefault(key, []).append((deps_file.priority, deps_file.name, reqs))
        rules: dict[Key, list[lxml.etree._Element]] = {}
        for key, candidates in found.items():
            top = max(prio for prio, _, _ in candidates)
            best = [c for c in candidates if c[0] == top]
            if len(best) > 1:
                names = ", ".join(os.path.relpath(name, self.data) for _, name, _ in best)
                self.logger.error("%s: %s:%s for %s is defined by several files with "
                                  "priority %d: %s; its prerequisites are not added",
                                  self.name, key[0], key[1], metadata.hostname, top, names)
                continue
            rules[key] = best[0][2]
        return rules

    def validate_structures(self, metadata: ClientMetadata,
                            structures: list[lxml.etree._Element]) -> None:
        """Append an ``<Independent name="Deps">`` with the missing prerequisites."""
        depends_on(self.data)  # every file may name an entry of the configuration
        present: set[Key] = set()
        for structure in structures:
            for entry in structure:
                if not isinstance(entry.tag, str) or entry.tag in GROUPINGS:
                    continue
                tag = entry.tag[5:] if entry.tag.startswith("Bound") else entry.tag
                present.add((tag, entry.get("name")))
        rules = self._rules(metadata)
        added: list[lxml.etree._Element] = []
        seen = set(present)
        pending = sorted(present)
        while pending:
            for req in rules.get(pending.pop(0), []):
                key = (req.tag, req.get("name"))
                if key in seen:
                    continue
                seen.add(key)
                pending.append(key)
                added.append(lxml.etree.Element(req.tag, attrib=dict(req.attrib)))
        if added:
            independent = lxml.etree.Element("Independent", name=self.name)
            independent.extend(added)
            structures.append(independent)

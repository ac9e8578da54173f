"""Decisions: the whitelist and blacklist a client downloads in decision mode."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.errors import PluginExecutionError, RepositoryError, SpecificityError
from bcfg2.plugin import SPECIFIC_SUFFIX, Decision, DirectoryBacked, Plugin, Specificity, StructFile

if TYPE_CHECKING:
    from bcfg2.filemonitor import FileMonitor
    from bcfg2.metadata import ClientMetadata

MODES = ("whitelist", "blacklist")


def specificity_of(basename: str, mode: str) -> Specificity:
    """``mode.xml`` is for all clients, ``.G##_group`` for a group, ``.H_host`` for one host."""
    base = f"{mode}.xml"
    if basename == base:
        return Specificity(all=True)
    match = SPECIFIC_SUFFIX.fullmatch(basename, len(base))
    if match is None:
        raise SpecificityError(f"cannot tell which clients {basename} is for from its name")
    if match.group("hostname"):
        return Specificity(hostname=match.group("hostname"))
    return Specificity(group=match.group("group"), prio=int(match.group("prio")))


class DecisionFile(StructFile):
    """One whitelist or blacklist file, with Group/Client conditionals."""

    def __init__(self, name: str, fam: FileMonitor | None = None) -> None:
        super().__init__(name, fam)
        basename = os.path.basename(name)
        self.mode = basename.split(".", 1)[0]
        self.specific = specificity_of(basename, self.mode)

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "Decisions":
            raise RepositoryError(f"{self.name}: the root element must be <Decisions>, "
                                  f"not <{root.tag}>")
        for decision in root.iter("Decision"):
            if not decision.get("type") or not decision.get("name"):
                raise RepositoryError(f"{self.name}:{decision.sourceline}: a <Decision> "
                                      f"needs both type= and name=")

    def get_decisions(self, metadata: ClientMetadata) -> list[tuple[str, str]]:
        """(type, name) of every decision in this file that applies to the client."""
        if self.xdata is None:
            return []
        return [(el.get("type"), el.get("name"))
                for el in self.XMLMatch(metadata).iter("Decision")]


class Decisions(Plugin, Decision, DirectoryBacked):
    """Serves ``Decisions/whitelist.xml`` and ``blacklist.xml`` and their variants.

    Every version of the list that applies to the client (all clients, its
    groups, its host name) is merged, least specific first, without repeats.
    """

    __child__ = DecisionFile
    patterns = re.compile(r"(?:whitelist|blacklist)\.xml(?:\.(?:H_\S+|G\d+_\S+))?")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        DirectoryBacked.__init__(self, self.data, core.fam)

    def add_directory_monitor(self, relative: str) -> None:
        """Only the top directory holds lists; subdirectories are ignored."""
        if not relative:
            super().add_directory_monitor(relative)

    def GetDecisions(self, metadata: ClientMetadata, mode: str) -> list[tuple[str, str]]:  # noqa: N802
        """The merged (type, name) decisions of the given mode for the client."""
        if mode not in MODES:
            raise PluginExecutionError(f"unknown decision mode {mode!r}")
        files = sorted((f for f in list(self.entries.values())
                        if isinstance(f, DecisionFile) and f.mode == mode
                        and f.specific.matches(metadata)),
                       key=lambda f: (f.specific, f.name))
        result: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for decision_file in files:
            for item in decision_file.get_decisions(metadata):
                if item not in seen:
                    seen.add(item)
                    result.append(item)
        return result

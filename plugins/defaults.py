"""Defaults: default attributes for bound entries."""

from __future__ import annotations

from typing import Any

import lxml.etree

from bcfg2.errors import PluginExecutionError
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option
from bcfg2.plugin import GoalValidator, PrioDir, depends_on


class Defaults(PrioDir, GoalValidator):
    """Fills in attributes that bound entries do not set yet.

    Defaults binds nothing itself: it acts once the configuration is bound,
    and its entry names are always regular expressions.
    """

    options = (
        Option("defaults", "replace_name", False,
               "Replace %{name} in Defaults attributes with the entry's name.", type="bool"),
    )
    replace_name_option = ("defaults", "replace_name")
    #: it binds nothing and claims nothing, whatever the client (``bcfg2.bindmemo``)
    binds_by_likeness = True

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.regex = True

    def binder_for(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> None:
        return None

    def HandlesEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        return False

    def list_entries(self) -> list[tuple[str, str]]:
        return []

    def validate_goals(self, metadata: ClientMetadata, config: lxml.etree._Element) -> None:
        depends_on(self.data)  # its names are regular expressions: any file may match
        tags = list(self._index())
        if not tags:
            return
        for structure in config:
            # only the entries of a tag some default names, picked out by lxml
            for entry in structure.iterchildren(*tags):
                if "failure" not in entry.attrib:
                    self.BindEntry(entry, metadata)

    def BindEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:  # noqa: N802
        try:
            _src, data = self.get_match(entry, metadata)
        except PluginExecutionError:
            return entry  # no default applies (or a conflict, already logged)
        name = entry.get("name", "")
        attrib = entry.attrib
        for key, value in data.attrib.items():
            if key == "name" or key in attrib:
                continue
            if self.replace_name:
                value = value.replace("%{name}", name)
            entry.set(key, value)
        return entry

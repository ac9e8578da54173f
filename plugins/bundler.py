"""Bundler: bundles of related entries, one XML file per bundle."""

from __future__ import annotations

import os
import re
from typing import Any

import lxml.etree

from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Plugin, StructFile, Structure, XMLDirectoryBacked, as_bool


class BundleFile(StructFile):
    """One bundle; its name is the file name without the extension."""

    @property
    def bundle_name(self) -> str:
        return os.path.splitext(os.path.basename(self.name))[0]


class Bundler(Plugin, Structure, XMLDirectoryBacked):
    """Builds the client's bundles with Group/Client conditionals resolved."""

    __child__ = BundleFile
    patterns = re.compile(r"^.*\.xml$")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        XMLDirectoryBacked.__init__(self, self.data, core.fam)

    @property
    def bundles(self) -> dict[str, BundleFile]:
        """Bundle files by bundle name."""
        return {entry.bundle_name: entry for entry in list(self.entries.values())
                if isinstance(entry, BundleFile)}

    def BuildStructures(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        bundles = self.bundles
        result = []
        pending = sorted(metadata.bundles)
        added = set(pending)
        while pending:
            name = pending.pop(0)
            bundle = bundles.get(name)
            if bundle is None:
                self.logger.error("Bundle %s does not exist (needed by %s)", name,
                                  metadata.hostname)
                continue
            if bundle.xdata is None:
                self.logger.error("Bundle %s cannot be used (needed by %s): %s", name,
                                  metadata.hostname, bundle.error)
                continue
            data = bundle.XMLMatch(metadata)
            if as_bool(data.get("independent", "false")):
                data.tag = "Independent"
                del data.attrib["independent"]
            data.set("name", name)
            for child in data.findall("RequiredBundle"):
                required = child.get("name")
                if not required:
                    self.logger.warning("Bundle %s: RequiredBundle without a name ignored",
                                        name)
                    data.remove(child)
                    continue
                if required not in added:
                    added.add(required)
                    pending.append(required)
                if as_bool(child.get("inherit_modification", "false")):
                    data.replace(child, lxml.etree.Element("BoundBundle", name=required))
                else:
                    data.remove(child)
            result.append(data)
        return result

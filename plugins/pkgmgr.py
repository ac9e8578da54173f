"""Pkgmgr: packages listed literally in XML package lists, with priorities.

The older way of serving packages (Packages, which reads the sources'
indexes, is the newer one; the two cannot be loaded together). Each
``Pkgmgr/*.xml`` file is a ``<PackageList>`` whose attributes other than
``priority`` (``type``, ``uri``, ``multiarch``, ``srcs``...) are given to
every ``<Package>`` in it that does not set them itself; ``uri`` and a
package's ``file`` make its ``url``. Binding follows Rules: the file with
the highest priority wins, and two files of the same priority that both
apply to a client are a failure of that entry.

A package with ``<Instance>`` children can be asked for as a virtual
target, ``name:arch1,arch2``: it binds as ``name`` and keeps only the
instances of those architectures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.plugin import PrioDir, PriorityStructFile

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

#: what a package list may hold besides packages
CONTAINER_TAGS = ("Group", "Client", "PackageList")


def package_url(uri: str, file: str) -> str:
    """The URL of a package file in a repository directory (one slash between them)."""
    return uri.rstrip("/") + "/" + file.lstrip("/")


def inheritable(package_list: lxml.etree._Element) -> dict[str, str]:
    """The attributes of a ``<PackageList>`` that its packages inherit."""
    return {key: value for key, value in package_list.attrib.items()
            if key != "priority" and not key.startswith("{")}


class PackageListFile(PriorityStructFile):
    """One ``Pkgmgr/*.xml`` file: its packages carry what the package list says."""

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "PackageList":
            raise RepositoryError(f"{self.name}: the root element must be <PackageList>, "
                                  f"not <{root.tag}>")
        self._resolve(root, inheritable(root))
        super().load_xml(root)

    def _resolve(self, node: lxml.etree._Element, inherited: dict[str, str]) -> None:
        """Give packages their inherited attributes and url; unwrap included lists.

        A ``<PackageList>`` below the root (the root of an XIncluded file)
        adds its own attributes for its packages and is then replaced by
        its children, so that the priority index sees them; the priority
        is the including file's.
        """
        for child in list(node):
            if not isinstance(child.tag, str):
                continue
            if child.tag == "Package":
                for key, value in inherited.items():
                    if key not in child.attrib:
                        child.set(key, value)
                if "url" not in child.attrib and child.get("uri") and child.get("file"):
                    child.set("url", package_url(child.get("uri", ""), child.get("file", "")))
            elif child.tag == "PackageList":
                self._resolve(child, {**inherited, **inheritable(child)})
                position = node.index(child)
                for offset, grandchild in enumerate(list(child)):
                    node.insert(position + offset, grandchild)
                node.remove(child)
            elif child.tag in CONTAINER_TAGS:
                self._resolve(child, inherited)
            else:
                raise RepositoryError(f"{self.name}:{child.sourceline}: <{child.tag}> is not "
                                      f"a <Package>, <Group> or <Client>")


class Pkgmgr(PrioDir):
    """Binds Package entries from the package lists in Pkgmgr/."""

    __child__ = PackageListFile
    conflicts = ["Packages"]
    #: its rules chosen as Rules' are; a virtual target's instances by the name alone
    binds_by_likeness = True

    def _virtual(self, entry: lxml.etree._Element) -> tuple[str, set[str]] | None:
        """(package, architectures) for a ``name:arch,...`` target no list names as such."""
        name = entry.get("name", "")
        if entry.tag != "Package" or ":" not in name:
            return None
        if name in (self._index().get("Package") or {}):
            return None
        base, _, arches = name.rpartition(":")
        wanted = {arch for arch in arches.split(",") if arch}
        return (base, wanted) if base and wanted else None

    def _names(self, entry: lxml.etree._Element) -> list[str]:
        virtual = self._virtual(entry)
        return [virtual[0]] if virtual else super()._names(entry)

    def BindEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:  # noqa: N802
        """Bind as Rules does; a virtual target keeps the instances it names."""
        super().BindEntry(entry, metadata)
        virtual = self._virtual(entry)
        if virtual is not None:
            for instance in entry.findall("Instance"):
                if instance.get("arch") not in virtual[1]:
                    entry.remove(instance)
        return entry

"""``Packages/sources.xml``: the package sources, and which clients each applies to.

A ``<Source>`` applies to a client when the ``<Group>``/``<Client>``
conditionals around it admit the client and the client is in one of the
source's ``<Arch>`` groups (the first such, in the order the source lists
them, is the architecture whose index it gets). Each (source, architecture)
is one index, fetched and cached on its own (``Source.key(arch)``).
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.plugin import Condition, StructFile, as_bool, conditions_hold, flatten_conditions

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

#: source type -> the entry type its packages are bound with
PTYPES = {"apt": "deb", "yum": "yum", "pac": "pacman", "pkgng": "pkgng"}
#: what an element of ``<Source>`` may hold, as sources.xml writes them
SOURCE_CHILDREN = ("Component", "Arch", "GPGKey", "Options", "Blacklist", "Whitelist")


@dataclass(frozen=True)
class Source:
    """One ``<Source>`` of sources.xml, with the conditionals that select its clients."""

    type: str
    #: the conventional layout's base URL (with ``version`` and components), or ""
    url: str
    #: a URL used as it is (no layout), or ""
    rawurl: str
    version: str
    components: tuple[str, ...]
    arches: tuple[str, ...]
    blacklist: frozenset[str]
    whitelist: frozenset[str]
    gpgkeys: tuple[str, ...]
    #: ``<Options>`` attributes for the generated client configuration, in order
    client_options: tuple[tuple[str, str], ...]
    recommended: bool
    essential: bool
    debsrc: bool
    priority: int
    #: the name given (``name=``), else one made from the URL
    name: str
    conditions: tuple[Condition, ...] = ()
    #: where a relative ``file:`` URL is read from (the plugin's directory)
    base_dir: str = ""

    @property
    def ptype(self) -> str:
        return PTYPES[self.type]

    @property
    def base_url(self) -> str:
        """The URL as written (rawurl, else url), for messages and generated configs."""
        return self.rawurl or self.url

    def fetch_url(self, url: str) -> str:
        """A URL as the server fetches it: a relative ``file:`` URL is made absolute.

        ``file:mirror/debian`` (no slashes after the colon) names a directory
        below the Packages directory of the repository, for a mirror shipped
        with it; every other URL is used as written.
        """
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "file" and not parsed.netloc and not parsed.path.startswith("/"):
            return "file://" + urllib.parse.quote(
                os.path.normpath(os.path.join(self.base_dir, urllib.parse.unquote(parsed.path)))
                + ("/" if url.endswith("/") else ""))
        return url

    def applies(self, metadata: ClientMetadata) -> str | None:
        """The architecture this source serves the client, or None when it does not apply."""
        if not conditions_hold(self.conditions, metadata):
            return None
        for arch in self.arches:
            if arch in metadata.groups:
                return arch
        return None

    def key(self, arch: str) -> str:
        """What identifies this source's index for one architecture (cache file names)."""
        ident = "\0".join((self.type, self.url, self.rawurl, self.version,
                           ",".join(self.components), arch))
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def admits(self, name: str) -> bool:
        """Whether the blacklist and whitelist let this source offer a package."""
        if name in self.blacklist:
            return False
        return not self.whitelist or name in self.whitelist

    def describe(self) -> str:
        """One line naming the source (type, URL, version, components)."""
        parts = [self.type, self.base_url]
        if self.version:
            parts.append(self.version)
        if self.components:
            parts.append(",".join(self.components))
        return " ".join(parts)


def _texts(element: lxml.etree._Element, tag: str) -> list[str]:
    return [(child.text or "").strip() for child in element.iterchildren(tag)
            if (child.text or "").strip()]


class SourceProblem(RepositoryError):
    """A ``<Source>`` that cannot be used; ``check`` names the problem for bcfg2-lint
    (``source-needs-url``, ``source-needs-version`` or ``invalid-source``) and ``reason``
    says it without the file and line."""

    def __init__(self, where: str, check: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.check = check
        self.reason = reason


def parse_source(element: lxml.etree._Element, conditions: tuple[Condition, ...],
                 path: str, base_dir: str = "") -> Source:
    """A Source from its element; a SourceProblem saying what is wrong with it."""
    where = f"{path}:{element.sourceline}"
    kind = element.get("type", "")
    if kind not in PTYPES:
        choices = ", ".join(sorted(PTYPES))
        raise SourceProblem(where, "invalid-source",
                            f"<Source type={kind!r}> is not one of {choices}"
                            + (" (Pulp sources are not supported)"
                               if element.get("pulp_id") else ""))
    url = element.get("url", "").strip()
    rawurl = element.get("rawurl", "").strip()
    if url and rawurl:
        raise SourceProblem(where, "source-needs-url",
                            f"{kind} Source has both url= and rawurl=; give one of them")
    if not (url or rawurl):
        why = " (Pulp sources are not supported)" if element.get("pulp_id") else ""
        raise SourceProblem(where, "source-needs-url",
                            f"{kind} Source has neither url= nor rawurl={why}")
    version = element.get("version", "").strip()
    if url and not version and kind in ("apt", "yum", "pkgng"):
        raise SourceProblem(where, "source-needs-version",
                            f"{kind} Source with url={url} has no version=")
    components = tuple(_texts(element, "Component"))
    if url and not components and kind in ("apt", "pac", "pkgng"):
        # yum url+version without components is the version's root
        raise SourceProblem(where, "invalid-source",
                            f"{kind} Source with url= needs a <Component>")
    arches = tuple(_texts(element, "Arch"))
    if not arches:
        raise SourceProblem(where, "invalid-source", "a <Source> needs at least one <Arch> "
                            "(the group that selects the architecture)")
    for child in element:
        if isinstance(child.tag, str) and child.tag not in SOURCE_CHILDREN:
            raise SourceProblem(where, "invalid-source",
                                f"<{child.tag}> is not part of a <Source>")
    options: list[tuple[str, str]] = []
    for opts in element.iterchildren("Options"):
        if as_bool(opts.get("serveronly", "false")):
            continue
        options.extend((k, v) for k, v in opts.attrib.items()
                       if k not in ("serveronly", "clientonly"))
    try:
        priority = int(element.get("priority", "500"))
    except ValueError:
        raise SourceProblem(where, "invalid-source", f"priority {element.get('priority')!r} "
                            f"is not an integer") from None
    name = element.get("name", "").strip() or _default_name(url or rawurl, version, components)
    return Source(
        type=kind, url=url, rawurl=rawurl, version=version, components=components,
        arches=arches, blacklist=frozenset(_texts(element, "Blacklist")),
        whitelist=frozenset(_texts(element, "Whitelist")),
        gpgkeys=tuple(_texts(element, "GPGKey")), client_options=tuple(options),
        recommended=as_bool(element.get("recommended", "false")),
        essential=as_bool(element.get("essential", "true")),
        debsrc=as_bool(element.get("debsrc", "false")), priority=priority, name=name,
        conditions=conditions, base_dir=base_dir)


def _default_name(url: str, version: str, components: tuple[str, ...]) -> str:
    parsed = urllib.parse.urlsplit(url)
    stem = (parsed.netloc + parsed.path).strip("/").replace("/", "_") or "source"
    return "-".join(part for part in (stem, version, "_".join(components)) if part)


class SourcesFile(StructFile):
    """``Packages/sources.xml``, parsed into Sources (the last good list stays in service)."""

    def __init__(self, name: str, fam: object = None, base_dir: str = "",
                 on_change: object = None) -> None:
        super().__init__(name, fam, should_monitor=fam is not None)  # type: ignore[arg-type]
        self.base_dir = base_dir
        self.sources: tuple[Source, ...] = ()
        self.on_change = on_change

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "Sources":
            raise RepositoryError(f"{self.name}: the root element must be <Sources>, "
                                  f"not <{root.tag}>")
        sources: list[Source] = []
        for conditions, element in flatten_conditions(root):
            if element.tag == "Sources":  # an XInclude'd file's root
                for inner_conds, inner in flatten_conditions(element):
                    if inner.tag == "Source":
                        sources.append(parse_source(inner, conditions + inner_conds,
                                                    self.name, self.base_dir))
                continue
            if element.tag != "Source":
                raise RepositoryError(f"{self.name}:{element.sourceline}: <{element.tag}> "
                                      f"is not a <Source>, <Group> or <Client>")
            sources.append(parse_source(element, conditions, self.name, self.base_dir))
        self.sources = tuple(sources)
        if callable(self.on_change):
            self.on_change()

    def removed(self) -> None:
        self.sources = ()
        if callable(self.on_change):
            self.on_change()

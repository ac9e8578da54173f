"""Yum/DNF sources: ``repomd.xml``, then primary, filelists and comps.

Every file repomd.xml lists is checked against its checksum there, and may
be compressed with gzip, xz, zstd (RHEL 10) or bzip2. Requirements come
from ``rpm:requires`` (``rpmlib(...)`` is the package manager's own and
skipped); rich dependencies give alternatives for ``(a or b)`` and a
requirement each for ``(a and b)``; ``if``/``unless``/``with``/``without``
add only what is required unconditionally. Of filelists only the paths some
package requires are kept, so memory stays close to that of primary alone.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import lxml.etree

from bcfg2.plugins.packages.fetch import (
    DecompressingReader,
    Fetcher,
    FetchError,
    checksum,
    sha256,
)
from bcfg2.plugins.packages.index import GROUP_KINDS, Index, gc_paused

if TYPE_CHECKING:
    from bcfg2.plugins.packages.sources import Source

COMMON = "{http://linux.duke.edu/metadata/common}"
RPM = "{http://linux.duke.edu/metadata/rpm}"
REPO = "{http://linux.duke.edu/metadata/repo}"
FILELISTS = "{http://linux.duke.edu/metadata/filelists}"
#: comps package types, as GROUP_KINDS names them
COMPS_KINDS = {"mandatory": "mandatory", "default": "default", "optional": "optional"}
RICH_WORD = re.compile(r"\(|\)|[^\s()]+")


@dataclass(frozen=True)
class RepoFile:
    """One file repomd.xml lists."""

    href: str
    checksum_type: str
    checksum: str


def _parser() -> lxml.etree.XMLParser:
    return lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                huge_tree=True)


def parse_repomd(data: bytes) -> dict[str, RepoFile]:
    """repomd.xml: data type (primary, filelists, group...) -> its file."""
    try:
        root = lxml.etree.fromstring(data, _parser())
    except lxml.etree.XMLSyntaxError as err:
        raise FetchError(f"repomd.xml does not parse: {err}") from None
    out = {}
    for item in root.iter(f"{REPO}data"):
        location = item.find(f"{REPO}location")
        digest = item.find(f"{REPO}checksum")
        if location is None or digest is None or not location.get("href"):
            continue
        out[item.get("type", "")] = RepoFile(location.get("href"), digest.get("type", "sha256"),
                                             (digest.text or "").strip().lower())
    if "primary" not in out:
        raise FetchError("repomd.xml lists no primary metadata")
    return out


def rich(text: str) -> list[list[str]]:
    """The requirements of an RPM dependency, rich (``(a or b)``) or plain."""
    text = text.strip()
    if not text.startswith("("):
        return [[text.split()[0]]] if text else []
    words = RICH_WORD.findall(text)
    position = 0

    def expression() -> list[list[str]]:
        nonlocal position
        if position < len(words) and words[position] == "(":
            position += 1
            terms = [expression()]
            ops = []
            while position < len(words) and words[position] != ")":
                word = words[position]
                if word in ("and", "or", "if", "unless", "with", "without", "else"):
                    ops.append(word)
                    position += 1
                    terms.append(expression())
                else:
                    position += 1  # a version comparison: skipped
            position += 1
            if not ops:
                return terms[0]
            if all(op == "or" for op in ops):
                return [[name for term in terms for alts in term[:1] for name in alts]]
            if all(op in ("and", "with") for op in ops):
                return [req for term in terms for req in term]
            return terms[0] if ops[0] in ("if", "unless") else []
        name = words[position] if position < len(words) else ""
        position += 1
        while position < len(words) and words[position] in ("<", ">", "=", "<=", ">=", "<>"):
            position += 2
        return [[name]] if name else []

    return expression()


def _entries(element: lxml.etree._Element | None) -> list[tuple[str, str]]:
    if element is None:
        return []
    return [(e.get("name", ""), e.get("flags", "")) for e in element.iter(f"{RPM}entry")]


def _stream(data: bytes | BinaryIO) -> BinaryIO:
    return io.BytesIO(data) if isinstance(data, bytes) else data


@gc_paused()
def parse_primary(data: bytes | BinaryIO, arch: str = "", ptype: str = "yum") -> Index:
    """An Index from primary.xml (its bytes, or a file to read it from, such as a
    DecompressingReader); of several arches of one name the client's wins."""
    index = Index(ptype)
    rank: dict[str, int] = {}
    try:
        for _, pkg in lxml.etree.iterparse(_stream(data), tag=f"{COMMON}package",
                                           resolve_entities=False, no_network=True,
                                           load_dtd=False, huge_tree=True):
            name = pkg.findtext(f"{COMMON}name") or ""
            pkg_arch = pkg.findtext(f"{COMMON}arch") or ""
            if not name or pkg_arch == "src":
                pkg.clear()
                continue
            score = 2 if pkg_arch == arch else 1 if pkg_arch == "noarch" else 0
            if rank.get(name, -1) > score:
                pkg.clear()
                continue
            rank[name] = score
            version = pkg.find(f"{COMMON}version")
            ver = "" if version is None else "-".join(
                v for v in (version.get("ver", ""), version.get("rel", "")) if v)
            if version is not None and version.get("epoch", "0") not in ("", "0"):
                ver = f"{version.get('epoch')}:{ver}"
            fmt = pkg.find(f"{COMMON}format")
            requires: list[list[str]] = []
            recommends: list[list[str]] = []
            provides: list[str] = []
            if fmt is not None:
                for req, _ in _entries(fmt.find(f"{RPM}requires")):
                    if req and not req.startswith("rpmlib("):
                        requires.extend(rich(req))
                for rec, _ in _entries(fmt.find(f"{RPM}recommends")):
                    recommends.extend(rich(rec))
                provides = [p for p, _ in _entries(fmt.find(f"{RPM}provides")) if p]
                provides.extend(f.text for f in fmt.iter(f"{COMMON}file") if f.text)
            index.add(name, ver, pkg_arch, requires, recommends, False, provides)
            pkg.clear()
    except lxml.etree.XMLSyntaxError as err:
        raise FetchError(f"primary.xml does not parse: {err}") from None
    if not index.packages:  # a blank file does not parse: something was there
        raise FetchError("no package in primary.xml")
    return index


def add_filelists(index: Index, data: bytes | BinaryIO) -> None:
    """Add the file provides some package of the index requires, from filelists.xml."""
    wanted = {name for rec in index.packages.values() for alts in rec[2] for name in alts
              if name.startswith("/")}
    wanted.difference_update(index.provides)
    if not wanted:
        return
    try:
        for _, pkg in lxml.etree.iterparse(_stream(data), tag=f"{FILELISTS}package",
                                           resolve_entities=False, no_network=True,
                                           load_dtd=False, huge_tree=True):
            name = pkg.get("name", "")
            if name in index.packages:
                for f in pkg.iter(f"{FILELISTS}file"):
                    if f.text in wanted:
                        providers = index.provides.setdefault(f.text, [])
                        if name not in providers:
                            providers.append(name)
            pkg.clear()
    except lxml.etree.XMLSyntaxError as err:
        raise FetchError(f"filelists.xml does not parse: {err}") from None


def parse_comps(data: bytes) -> dict[str, dict[str, list[str]]]:
    """comps groups: id and name -> {"mandatory", "default", "optional": [packages]}."""
    try:
        root = lxml.etree.fromstring(data, _parser())
    except lxml.etree.XMLSyntaxError as err:
        raise FetchError(f"comps does not parse: {err}") from None
    groups: dict[str, dict[str, list[str]]] = {}
    for group in root.iter("group"):
        kinds: dict[str, list[str]] = {kind: [] for kind in GROUP_KINDS}
        for req in group.iter("packagereq"):
            kind = COMPS_KINDS.get(req.get("type", "default"))
            if kind is not None and req.text:
                kinds[kind].append(req.text.strip())
        for key in [group.findtext("id")] + [n.text for n in group.findall("name")
                                              if not n.get("{http://www.w3.org/XML/1998/namespace}lang")]:
            if key:
                groups[key.strip()] = kinds
    return groups


def _open(fetcher: Fetcher, base: str, item: RepoFile) -> DecompressingReader:
    """A file listed in repomd.xml, checked, to be read decompressed as it is parsed."""
    url = f"{base}/{item.href}"
    data = fetcher.get(url)
    if checksum(item.checksum_type, data) != item.checksum:
        raise FetchError(f"{url}: {item.checksum_type} does not match repomd.xml")
    return DecompressingReader(data, url, fetcher.max_size)


def load(src: Source, arch: str, fetcher: Fetcher, known_key: str | None = None
         ) -> tuple[str, Index, list[str]] | None:
    """Fetch and parse a Yum source for one architecture: (key, index, files read)."""
    if src.rawurl:
        bases = [src.rawurl.replace("$basearch", arch).rstrip("/")]
    else:
        bases = ["/".join(p.strip("/") for p in (src.url.rstrip("/"), src.version, component, arch)
                          if p) for component in (src.components or ("",))]
    bases = [src.fetch_url(base) for base in bases]
    repomds = [(base, fetcher.get(f"{base}/repodata/repomd.xml")) for base in bases]
    key = sha256(b"".join(data for _, data in repomds))
    if key == known_key:
        return None
    index = Index(src.ptype)
    files = []
    for base, raw in repomds:
        listed = parse_repomd(raw)
        part = parse_primary(_open(fetcher, base, listed["primary"]), arch, src.ptype)
        if "filelists" in listed:
            add_filelists(part, _open(fetcher, base, listed["filelists"]))
        comps = listed.get("group_gz") or listed.get("group") or listed.get("group_xz")
        if comps is not None:
            part.groups = parse_comps(_open(fetcher, base, comps).read())
        index.absorb(part)
        files.append(f"{base}/repodata/repomd.xml")
    return key, index, files

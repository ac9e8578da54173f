"""APT sources: ``Release``/``InRelease`` and ``Packages`` indices.

The Release file lists every index with its size and SHA256; each index
read is checked against it, so a mirror that serves a truncated or stale
file, or an error page, keeps the last good index in service. The
signature of ``InRelease`` is not checked (its armor is stripped): a site
that needs signed indices verifies its mirror, as upstream Bcfg2 did not
either.

``Packages`` stanzas give a package's Depends and Pre-Depends (requirements,
with ``a | b`` alternatives), Recommends, Provides and ``Essential: yes``;
version constraints, architecture restrictions (``[amd64]``) and
qualifiers (``perl:any``) are stripped, since the resolver works on names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bcfg2.plugins.packages.fetch import Fetcher, FetchError, NotFound, decompress, sha256
from bcfg2.plugins.packages.index import Index, gc_paused

if TYPE_CHECKING:
    from bcfg2.plugins.packages.sources import Source

#: the index files a Release may list for one Packages, best first
COMPRESSIONS = (".xz", ".zst", ".gz", "")
#: one relationship: a name, then anything (version, arch list, profile) up to the comma
NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9+.\-_]*)(?::[a-z0-9-]+)?")


@dataclass
class Release:
    """What a Release file says: index path -> (size, sha256), and its flags."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: ``No-Support-for-Architecture-all: Packages``: binary-all is a separate index
    separate_all: bool = False


def strip_armor(text: str) -> str:
    """The signed text of a clearsigned InRelease (the text itself otherwise)."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    head, _, rest = text.partition("\n\n")
    body, _, _ = rest.partition("\n-----BEGIN PGP SIGNATURE-----")
    return "\n".join(line[2:] if line.startswith("- ") else line for line in body.split("\n"))


def parse_release(data: bytes) -> Release:
    """A Release or InRelease file (a FetchError if it lists no SHA256 checksums)."""
    text = strip_armor(data.decode("utf-8", "replace"))
    release = Release()
    section = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if section == "sha256":
                parts = line.split()
                if len(parts) == 3 and parts[1].isdigit():
                    release.files[parts[2]] = (int(parts[1]), parts[0].lower())
            continue
        key, _, value = line.partition(":")
        section = key.strip().lower()
        if section == "no-support-for-architecture-all":
            release.separate_all = value.strip() == "Packages"
    if not release.files:
        raise FetchError("the Release file lists no SHA256 checksums")
    return release


def relations(value: str) -> list[list[str]]:
    """``a (>= 1) | b:any, c [amd64]`` as ``[["a", "b"], ["c"]]``."""
    out: list[list[str]] = []
    for requirement in value.split(","):
        alternatives = []
        for alternative in requirement.split("|"):
            match = NAME.match(alternative)
            if match:
                alternatives.append(match.group(1))
        if alternatives:
            out.append(alternatives)
    return out


def stanzas(text: str) -> list[dict[str, str]]:
    """The deb822 paragraphs of a Packages file, fields by (case-folded) name."""
    out: list[dict[str, str]] = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.split("\n"):
            if not line or line.startswith("#"):
                continue
            if line[0] in " \t":
                if key is not None:
                    fields[key] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


@gc_paused()
def parse_packages(data: bytes, ptype: str = "deb") -> Index:
    """An Index from a Packages file; an error if text was there but no package in it."""
    text = data.decode("utf-8", "replace")
    index = Index(ptype)
    for fields in stanzas(text):
        name = fields.get("package")
        if not name:
            continue
        depends = relations(fields.get("pre-depends", "")) + relations(fields.get("depends", ""))
        provides = [alts[0] for alts in relations(fields.get("provides", ""))]
        index.add(name, fields.get("version", ""), fields.get("architecture", ""), depends,
                  relations(fields.get("recommends", "")),
                  fields.get("essential", "").lower() == "yes", provides)
    if not index.packages and text.strip():
        raise FetchError("no package stanza in the index (an error page?)")
    return index


def _fetch_release(fetcher: Fetcher, base: str) -> tuple[bytes, Release] | None:
    """The InRelease or Release below ``base``; None when neither exists."""
    for name in ("InRelease", "Release"):
        try:
            data = fetcher.get(f"{base}/{name}")
        except NotFound:
            continue  # any other error (a timeout, a 500) is the answer
        return data, parse_release(data)
    return None


def _verified(fetcher: Fetcher, base: str, release: Release, stem: str, limit: int) -> bytes | None:
    """The best-compressed listed variant of one index, checked; None if none is listed."""
    for suffix in COMPRESSIONS:
        path = stem + suffix
        listed = release.files.get(path)
        if listed is None:
            continue
        url = f"{base}/{path}"
        data = fetcher.get(url)
        size, digest = listed
        if len(data) != size or sha256(data) != digest:
            raise FetchError(f"{url}: size or SHA256 does not match the Release file")
        return decompress(data, url, limit)
    return None


def load(src: Source, arch: str, fetcher: Fetcher, known_key: str | None = None
         ) -> tuple[str, Index, list[str]] | None:
    """Fetch and parse an APT source for one architecture: (key, index, files read).

    None when the Release (the key) is what ``known_key`` says: unchanged.
    """
    limit = fetcher.max_size
    if src.rawurl:
        base = src.fetch_url(src.rawurl.rstrip("/"))
        found = _fetch_release(fetcher, base)
        if found is None:
            for suffix in COMPRESSIONS:
                try:
                    data = fetcher.get(f"{base}/Packages{suffix}")
                except NotFound:
                    continue
                key = sha256(data)
                if key == known_key:
                    return None
                url = f"{base}/Packages{suffix}"
                return key, parse_packages(decompress(data, url, limit), src.ptype), [url]
            raise FetchError(f"{base}: no Release and no Packages file")
        raw, release = found
        key = sha256(raw)
        if key == known_key:
            return None
        data = _verified(fetcher, base, release, "Packages", limit)
        if data is None:
            raise FetchError(f"{base}: the Release file lists no Packages index")
        return key, parse_packages(data, src.ptype), [base]
    base = src.fetch_url(f"{src.url.rstrip('/')}/dists/{src.version}")
    found = _fetch_release(fetcher, base)
    if found is None:
        raise FetchError(f"{base}: no InRelease or Release file")
    raw, release = found
    key = sha256(raw)
    if key == known_key:
        return None
    index = Index(src.ptype)
    files = []
    for component in src.components:
        arches = [arch] + (["all"] if release.separate_all else [])
        for one in arches:
            stem = f"{component}/binary-{one}/Packages"
            data = _verified(fetcher, base, release, stem, limit)
            if data is None:
                if one == "all":
                    continue
                raise FetchError(f"{base}: the Release file lists no {stem}")
            index.absorb(parse_packages(data, src.ptype))
            files.append(f"{base}/{stem}")
    return key, index, files

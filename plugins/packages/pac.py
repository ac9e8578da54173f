"""Pacman sources: a sync database (``core.db``), a tar of ``desc`` files.

The tar is read in memory (nothing is extracted to disk), with a cap on
its members; ``%DEPENDS%``, ``%PROVIDES%``, ``%OPTDEPENDS%`` (as
recommends) and ``%GROUPS%`` (every member of a pacman group is
installed with it) are read, version constraints stripped.
"""

from __future__ import annotations

import io
import re
import tarfile
from typing import TYPE_CHECKING

from bcfg2.plugins.packages.fetch import Fetcher, FetchError, decompress, sha256
from bcfg2.plugins.packages.index import Index, gc_paused

if TYPE_CHECKING:
    from bcfg2.plugins.packages.sources import Source

#: the most members a database may have (the largest real ones hold ~30,000 packages)
MAX_MEMBERS = 500_000
CONSTRAINT = re.compile(r"[<>=:].*")


def _fields(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("%") and line.endswith("%") and len(line) > 2:
            current = out.setdefault(line[1:-1], [])
        elif line and current is not None:
            current.append(line)
    return out


def _names(values: list[str]) -> list[str]:
    return [n for n in (CONSTRAINT.sub("", v).strip() for v in values) if n]


@gc_paused()
def parse_db(data: bytes, limit: int = 2**30) -> Index:
    """An Index from a pacman sync database (compressed or not)."""
    raw = decompress(data, "pacman database", limit)
    index = Index("pacman")
    per_package: dict[str, dict[str, list[str]]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for count, member in enumerate(tar):
                if count > MAX_MEMBERS:
                    raise FetchError(f"pacman database has more than {MAX_MEMBERS} members")
                if not member.isfile() or "/" not in member.name:
                    continue
                directory, _, base = member.name.rpartition("/")
                if base not in ("desc", "depends"):
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                per_package.setdefault(directory, {}).update(
                    _fields(fh.read().decode("utf-8", "replace")))
    except (tarfile.TarError, EOFError) as err:
        raise FetchError(f"pacman database is not a tar file: {err}") from None
    for fields in per_package.values():
        name = (fields.get("NAME") or [""])[0]
        if not name:
            continue
        version = (fields.get("VERSION") or [""])[0]
        index.add(name, version, (fields.get("ARCH") or [""])[0],
                  [[n] for n in _names(fields.get("DEPENDS", []))],
                  [[n] for n in _names(fields.get("OPTDEPENDS", []))], False,
                  _names(fields.get("PROVIDES", [])))
        for group in fields.get("GROUPS", []):
            members = index.groups.setdefault(group, {"mandatory": [], "default": [],
                                                      "optional": []})
            members["mandatory"].append(name)
    if not index.packages:
        raise FetchError("no package in the pacman database")
    return index


def load(src: Source, arch: str, fetcher: Fetcher, known_key: str | None = None
         ) -> tuple[str, Index, list[str]] | None:
    """Fetch a pacman source: ``{url}/{repo}/os/{arch}/{repo}.db`` per component, or
    ``{rawurl}/{repo}.db`` (``{rawurl}`` itself when it names a .db file)."""
    if src.rawurl:
        base = src.rawurl.replace("$arch", arch).rstrip("/")
        urls = ([f"{base}/{c}.db" for c in src.components] if src.components else
                [base if base.endswith((".db", ".tar.gz", ".tar.zst", ".tar.xz"))
                 else f"{base}/{src.name}.db"])
    else:
        urls = [f"{src.url.rstrip('/')}/{c}/os/{arch}/{c}.db" for c in src.components]
    blobs = [(url, fetcher.get(src.fetch_url(url))) for url in urls]
    key = sha256(b"".join(blob for _, blob in blobs))
    if key == known_key:
        return None
    index = Index("pacman")
    for _, blob in blobs:
        index.absorb(parse_db(blob, fetcher.max_size))
    return key, index, urls

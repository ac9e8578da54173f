"""pkgng (FreeBSD) sources: ``packagesite.pkg`` (or ``.txz``).

The file is a compressed tar holding ``packagesite.yaml``: one JSON object
per line, one per package, with its ``deps`` by name and its shared
libraries required and provided. Its signature is not checked.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import TYPE_CHECKING

from bcfg2.plugins.packages.fetch import Fetcher, FetchError, NotFound, decompress, sha256
from bcfg2.plugins.packages.index import Index, gc_paused

if TYPE_CHECKING:
    from bcfg2.plugins.packages.sources import Source

MEMBER = "packagesite.yaml"


def _yaml(data: bytes, limit: int) -> bytes:
    raw = decompress(data, "packagesite", limit)
    if raw.lstrip().startswith(b"{"):
        return raw  # a packagesite.yaml on its own
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if member.isfile() and member.name.rpartition("/")[2] == MEMBER:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        return fh.read(limit + 1)
    except (tarfile.TarError, EOFError) as err:
        raise FetchError(f"packagesite is not a tar file: {err}") from None
    raise FetchError(f"packagesite holds no {MEMBER}")


@gc_paused()
def parse_packagesite(data: bytes, limit: int = 2**30) -> Index:
    """An Index from a packagesite (the tar, or packagesite.yaml itself)."""
    index = Index("pkgng")
    for number, line in enumerate(_yaml(data, limit).splitlines(), 1):
        if not line.strip():
            continue
        try:
            pkg = json.loads(line)
        except ValueError as err:
            raise FetchError(f"packagesite line {number} is not JSON: {err}") from None
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            continue
        deps = pkg.get("deps") or {}
        depends = [[str(name)] for name in deps] if isinstance(deps, dict) else []
        depends += [[str(lib)] for lib in pkg.get("shlibs_required") or () if isinstance(lib, str)]
        provides = [str(p) for p in (pkg.get("shlibs_provided") or []) + (pkg.get("provides") or [])
                    if isinstance(p, str)]
        index.add(pkg["name"], str(pkg.get("version", "")), str(pkg.get("arch", "")), depends,
                  [], False, provides)
    if not index.packages:
        raise FetchError("no package in the packagesite")
    return index


def load(src: Source, arch: str, fetcher: Fetcher, known_key: str | None = None
         ) -> tuple[str, Index, list[str]] | None:
    """Fetch a pkgng source: ``{url}/FreeBSD:{version}:{arch}/{component}/packagesite.pkg``
    (then ``.txz``), or ``{rawurl}/packagesite.pkg``."""
    if src.rawurl:
        bases = [src.rawurl.rstrip("/")]
    else:
        bases = [f"{src.url.rstrip('/')}/FreeBSD:{src.version}:{arch}/{c}" for c in src.components]
    blobs = []
    for base in bases:
        errors = []
        for name in ("packagesite.pkg", "packagesite.txz"):
            try:
                blobs.append((f"{base}/{name}", fetcher.get(src.fetch_url(f"{base}/{name}"))))
                break
            except NotFound as err:
                errors.append(str(err))  # try the other name; other errors are the answer
        else:
            raise FetchError("; ".join(errors))
    key = sha256(b"".join(blob for _, blob in blobs))
    if key == known_key:
        return None
    index = Index("pkgng")
    for _, blob in blobs:
        index.absorb(parse_packagesite(blob, fetcher.max_size))
    return key, index, [url for url, _ in blobs]

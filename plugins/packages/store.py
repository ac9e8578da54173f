"""The index cache: one JSON file per (source, architecture) in the state directory.

``<cache>/<source key>.json`` holds two lines of JSON: a header with the
layout's version, the source, and the key of the upstream files the index
was read from (the checksum of the ``Release`` or ``repomd.xml``), then the
parsed index. A refresh that finds the same key downloads nothing more, a
server that starts reads every index in well under a second instead of
fetching and parsing them again, and a process that only needs to know
what is cached (the multiprocessing core's parent, which fetches and
writes these files but renders nothing) reads the header line alone. The
multiprocessing core's children read the whole files.

JSON rather than pickle: a cache file that someone else could write must
not be able to run code in the server.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from bcfg2.plugins.packages.index import FORMAT, Index, gc_paused
from bcfg2.xml import atomic_write

logger = logging.getLogger("bcfg2.plugins.Packages")


@dataclass(frozen=True)
class Cached:
    """One index as the cache holds it."""

    #: what identifies the upstream files it was read from
    key: str
    index: Index
    #: the source, as a line (for humans reading the cache directory)
    source: str = ""
    #: the modification time of the cache file when it was read (to notice a newer one)
    mtime: float = 0.0
    #: how many packages the index has (also when only the header was read)
    size: int = 0


#: the longest header line read (it holds a source's line and a checksum)
HEADER_LIMIT = 64 * 1024


class IndexStore:
    """The cache directory: read and write indices by source key."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.json")

    def mtime(self, key: str) -> float:
        """When the cache file of a source was last written (0.0: there is none)."""
        try:
            return os.stat(self.path(key)).st_mtime
        except OSError:
            return 0.0

    def load(self, key: str, header_only: bool = False) -> Cached | None:
        """The cached index of a source, or None (no file, or one that is not a cache).

        With ``header_only`` the index is not read: the answer's ``index`` is
        empty and its ``size`` says how many packages the cached one has.
        """
        path = self.path(key)
        try:
            with open(path, "rb") as fh, gc_paused():
                mtime = os.fstat(fh.fileno()).st_mtime
                header = json.loads(fh.readline(HEADER_LIMIT))
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    return None  # written by another version: fetched and parsed again
                upstream_key, size = str(header["key"]), int(header["size"])
                source = str(header.get("source", ""))
                if header_only:
                    return Cached(key=upstream_key, index=Index(str(header["ptype"])),
                                  source=source, mtime=mtime, size=size)
                index = Index.from_json(json.loads(fh.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("Packages: ignoring the cache file %s: %s", path,
                           err if str(err) else type(err).__name__)
            return None
        return Cached(key=upstream_key, index=index, source=source, mtime=mtime,
                      size=len(index))

    def save(self, key: str, upstream_key: str, index: Index, source: str) -> None:
        """Write a source's index (atomically: readers see the old file or the new one)."""
        header = {"format": FORMAT, "source": source, "key": upstream_key,
                  "ptype": index.ptype, "size": len(index)}
        text = (json.dumps(header, separators=(",", ":")) + "\n"
                + json.dumps(index.to_json(), separators=(",", ":")))
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        atomic_write(self.path(key), text, mode=0o640)

    def save_blob(self, name: str, data: bytes) -> None:
        """Store a small file beside the indices (a GPG key)."""
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        atomic_write(os.path.join(self.directory, name), data, mode=0o640)

    def load_blob(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.directory, name), "rb") as fh:
                return fh.read()
        except OSError:
            return None

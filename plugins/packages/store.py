"""The index cache: one JSON file per (source, architecture) in the state directory.

``<cache>/<source key>.json`` holds the parsed index together with the key
of the upstream files it was read from (the checksum of the ``Release``
or ``repomd.xml``), so a refresh that finds the same key downloads nothing
more, and a server that starts reads every index in well under a second
instead of fetching and parsing them again. The multiprocessing core's
children read these files; only the parent process fetches and writes them.

JSON rather than pickle: a cache file that someone else could write must
not be able to run code in the server.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from bcfg2.plugins.packages.index import FORMAT, Index
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

    def load(self, key: str) -> Cached | None:
        """The cached index of a source, or None (no file, or one that is not a cache)."""
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                mtime = os.fstat(fh.fileno()).st_mtime
                data = json.loads(fh.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            logger.warning("Packages: ignoring the cache file %s: %s", path, err)
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None  # written by another version: fetched and parsed again
        try:
            index = Index.from_json(data["index"])
            key_read = str(data["key"])
        except (KeyError, ValueError) as err:
            logger.warning("Packages: ignoring the cache file %s: %s", path, err)
            return None
        return Cached(key=key_read, index=index, source=str(data.get("source", "")),
                      mtime=mtime)

    def save(self, key: str, upstream_key: str, index: Index, source: str) -> None:
        """Write a source's index (atomically: readers see the old file or the new one)."""
        document = {"format": FORMAT, "source": source, "key": upstream_key,
                    "index": index.to_json()}
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        atomic_write(self.path(key), json.dumps(document, separators=(",", ":")), mode=0o640)

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

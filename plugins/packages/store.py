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

Servers sharing one PostgreSQL database (``[database] engine =
postgresql``) keep the same header and JSON in its ``packages_cache``
table instead (``DatabaseIndexStore``), so an index one of them fetched is
what every one of them reads at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from bcfg2.errors import StorageError
from bcfg2.plugins.packages.index import FORMAT, Index, gc_paused
from bcfg2.storage import Database, Migration, Schema, engine_of, migrate, open_database
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


def _header(upstream_key: str, index: Index, source: str) -> str:
    return json.dumps({"format": FORMAT, "source": source, "key": upstream_key,
                       "ptype": index.ptype, "size": len(index)}, separators=(",", ":"))


def _from_parts(header_text: bytes | str, body: bytes | None, mtime: float,
                header_only: bool) -> Cached | None:
    """A Cached from a header line and (unless ``header_only``) the index's JSON; None for
    another layout. A ValueError, KeyError or TypeError for one that is damaged."""
    header = json.loads(header_text)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return None  # written by another version: fetched and parsed again
    upstream_key, size = str(header["key"]), int(header["size"])
    source = str(header.get("source", ""))
    if header_only:
        return Cached(key=upstream_key, index=Index(str(header["ptype"])), source=source,
                      mtime=mtime, size=size)
    index = Index.from_json(json.loads(body or b""))
    return Cached(key=upstream_key, index=index, source=source, mtime=mtime, size=len(index))


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
                header = fh.readline(HEADER_LIMIT)
                return _from_parts(header, None if header_only else fh.read(), mtime,
                                   header_only)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("Packages: ignoring the cache file %s: %s", path,
                           err if str(err) else type(err).__name__)
            return None

    def save(self, key: str, upstream_key: str, index: Index, source: str) -> None:
        """Write a source's index (atomically: readers see the old file or the new one)."""
        text = (_header(upstream_key, index, source) + "\n"
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


#: the index cache in the database, for servers sharing one (``[database] engine =
#: postgresql``): fetched and parsed by one, read by all at start-up
SCHEMA = Schema("packages", (
    Migration(1, "package indices and GPG keys shared by the servers of one database",
              tables=("""
        CREATE TABLE IF NOT EXISTS packages_cache (
            name TEXT PRIMARY KEY,
            header TEXT NOT NULL,
            body {blob} NOT NULL,
            saved {real} NOT NULL
        )""",)),
))


class DatabaseIndexStore(IndexStore):
    """The index cache in a database: the same header and JSON as the files, one row each.

    GPG keys go in the same table, with an empty header. ``mtime`` is when a
    row was saved, so a server (or a multiprocessing child) sees that another
    saved a newer index the same way it sees a newer file.
    """

    def __init__(self, database: Database, directory: str = "") -> None:
        super().__init__(directory)
        self.db = database
        migrate(database, SCHEMA)

    def path(self, key: str) -> str:
        return f"{self.db.describe()}#packages_cache/{key}"

    def mtime(self, key: str) -> float:
        try:
            saved = self.db.run(lambda tx: tx.execute(
                "SELECT saved FROM packages_cache WHERE name = ?", (key,)).scalar())
        except StorageError as err:
            logger.warning("Packages: cannot read the index cache: %s", err)
            return 0.0
        return float(saved) if saved is not None else 0.0

    def load(self, key: str, header_only: bool = False) -> Cached | None:
        columns = "header, saved" if header_only else "header, saved, body"
        try:
            row = self.db.run(lambda tx: tx.execute(
                f"SELECT {columns} FROM packages_cache WHERE name = ?", (key,)).one())
        except StorageError as err:
            logger.warning("Packages: cannot read the index cache: %s", err)
            return None
        if row is None or not row[0]:
            return None
        try:
            with gc_paused():
                return _from_parts(row[0], None if header_only else bytes(row[2]),
                                   float(row[1]), header_only)
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("Packages: ignoring the cached index %s: %s", key, err)
            return None

    def _put(self, name: str, header: str, body: bytes) -> None:
        def work(tx: Any) -> None:
            tx.execute("INSERT INTO packages_cache (name, header, body, saved) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "header = excluded.header, body = excluded.body, saved = excluded.saved",
                       (name, header, body, time.time()))

        try:
            self.db.run(work, write=True)
        except StorageError as err:
            raise OSError(f"the index cache in {self.db.describe()}: {err}") from None

    def save(self, key: str, upstream_key: str, index: Index, source: str) -> None:
        self._put(key, _header(upstream_key, index, source),
                  json.dumps(index.to_json(), separators=(",", ":")).encode())

    def save_blob(self, name: str, data: bytes) -> None:
        self._put(name, "", data)

    def load_blob(self, name: str) -> bytes | None:
        try:
            row = self.db.run(lambda tx: tx.execute(
                "SELECT body FROM packages_cache WHERE name = ?", (name,)).one())
        except StorageError:
            return None
        return None if row is None else bytes(row[0])


def open_store(setup: Any, directory: str) -> IndexStore:
    """The index cache under this configuration: files in ``directory`` (one server, SQLite),
    or the database servers share (``[database] engine = postgresql``)."""
    if engine_of(setup) != "postgresql":
        return IndexStore(directory)
    return DatabaseIndexStore(open_database(setup, "", SCHEMA), directory)

"""Generated secrets made once for a fleet of servers sharing one PostgreSQL database.

SSHbase's host keys and the Cfg creators' keys and certificates are made
the first time a client needs them and kept in the repository. Servers that
each have a checkout of their own would each make a different key for one
host. With ``[database] engine = postgresql`` every generated file is also
recorded in the ``generated_files`` table, and a server about to generate
one first takes an advisory lock named after the file and looks there: if
another server made it, that content is written into this server's
repository instead (where the file would have been generated); otherwise
it generates, records the files and commits, then writes them. A server
whose repository lacks a file the table has thus writes it on first use.

What is recorded is what is written to disk (an encrypted ``.crypt`` key
as its sealed bytes), as a group: the files one generation makes (a key
pair) under the name of the first. With SQLite nothing of this is used: a
single server's repository is the only copy.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from bcfg2.options import Setup, server_name
from bcfg2.storage import Database, Migration, Schema, Transaction, engine_of, migrate
from bcfg2.xml import atomic_write

logger = logging.getLogger(__name__)

#: the generated files of every server; no SQLite file: the table is only used on PostgreSQL
SCHEMA = Schema("generated", (
    Migration(1, "files generated once for the whole fleet", tables=("""
        CREATE TABLE IF NOT EXISTS generated_files (
            path TEXT PRIMARY KEY,
            grp TEXT NOT NULL,
            content {blob} NOT NULL,
            mode INTEGER NOT NULL,
            created {real} NOT NULL,
            server TEXT NOT NULL
        )""",), statements=(
        "CREATE INDEX IF NOT EXISTS generated_files_by_group ON generated_files (grp)",)),
))

#: the lock a server holds while it looks up and makes one group of files
LOCK_PREFIX = "bcfg2.generated:"
#: the longest server name recorded
MAX_SERVER = 255

#: what a generation makes: absolute path in the repository -> (content as written, mode)
Files = Mapping[str, tuple[bytes, int]]

_MIGRATED: set[str] = set()
_MIGRATED_LOCK = threading.Lock()


class SharedFiles:
    """The ``generated_files`` table of a fleet, for one server's repository."""

    def __init__(self, database: Database, repository: str, server: str) -> None:
        self.db = database
        self.repository = os.path.realpath(repository)
        self.server = server[:MAX_SERVER]

    @classmethod
    def from_setup(cls, setup: Setup) -> SharedFiles | None:
        """The table under this configuration; None with SQLite (nothing is shared)."""
        if engine_of(setup) != "postgresql":
            return None
        from bcfg2.storage.postgresql import PostgreSQLDatabase, Settings

        return cls(PostgreSQLDatabase(Settings.from_setup(setup)), setup.server.repository,
                   server_name(setup))

    def close(self) -> None:
        """Give back this handle's share of the connection pool."""
        self.db.close()

    def relative(self, path: str) -> str:
        """A repository file's name in the table: relative to the repository root."""
        rel = os.path.relpath(os.path.realpath(path), self.repository)
        if rel.startswith("..") or os.path.isabs(rel):
            raise ValueError(f"{path} is not inside the repository {self.repository}")
        return rel

    def absolute(self, rel: str) -> str:
        """Where a file the table names goes in this repository; ValueError if outside."""
        if not rel or os.path.isabs(rel) or "\0" in rel:
            raise ValueError(f"generated_files: {rel!r} is not a relative path")
        path = os.path.normpath(os.path.join(self.repository, rel))
        if os.path.commonpath([path, self.repository]) != self.repository:
            raise ValueError(f"generated_files: {rel!r} points outside the repository")
        return path

    def _migrate(self) -> None:
        key = self.db.describe()
        with _MIGRATED_LOCK:
            if key in _MIGRATED:
                return
        migrate(self.db, SCHEMA)
        with _MIGRATED_LOCK:
            _MIGRATED.add(key)

    def ensure(self, first: str, make: Callable[[], Files],
               usable: Callable[[dict[str, bytes]], bool] | None = None) -> dict[str, bytes]:
        """The files of the group named by ``first``, from the table or made now; written.

        Under the group's advisory lock: the group's recorded files are
        taken if there are any (and ``usable`` accepts them); otherwise
        ``make()`` makes them (it may be called again if the connection is
        lost before COMMIT, so it must not write anything itself), they are
        recorded and committed. Then each file is written into this
        repository with ``atomic_write``. Returns absolute path -> content.
        Raises StorageError when the table cannot be read or written
        (nothing is written to disk then).
        """
        group = self.relative(first)
        self._migrate()

        def work(tx: Transaction) -> tuple[dict[str, tuple[bytes, int]], str]:
            tx.lock(LOCK_PREFIX + group)
            rows = tx.execute("SELECT path, content, mode, server FROM generated_files "
                              "WHERE grp = ?", (group,)).rows
            found = {self.absolute(path): (bytes(content), int(mode))
                     for path, content, mode, _ in rows}
            if found and (usable is None or usable({p: c for p, (c, _) in found.items()})):
                return found, str(rows[0][3])
            made = {path: (bytes(content), int(mode)) for path, (content, mode) in make().items()}
            now = time.time()
            tx.execute("DELETE FROM generated_files WHERE grp = ?", (group,))
            for path, (content, mode) in made.items():
                tx.execute("INSERT INTO generated_files (path, grp, content, mode, created, "
                           "server) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                           "grp = excluded.grp, content = excluded.content, "
                           "mode = excluded.mode, created = excluded.created, "
                           "server = excluded.server",
                           (self.relative(path), group, content, mode, now, self.server))
            return made, ""

        files, other = self.db.run(work, write=True)
        if other:
            logger.info("Writing %s as generated by %s (generated_files)", group, other)
        for path, (content, mode) in files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, content, mode)
        return {path: content for path, (content, _) in files.items()}

    def forget(self, first: str) -> int:
        """Delete the recorded files of the group named by ``first`` (the next ``ensure``
        makes new ones); how many rows."""
        group = self.relative(first)
        self._migrate()

        def work(tx: Transaction) -> int:
            tx.lock(LOCK_PREFIX + group)
            return tx.execute("DELETE FROM generated_files WHERE grp = ?", (group,)).rowcount

        return int(self.db.run(work, write=True))

    def count(self) -> int:
        """How many files the table holds (for tools and tests)."""
        self._migrate()
        return int(self.db.run(
            lambda tx: tx.execute("SELECT COUNT(*) FROM generated_files").scalar()))


def shared_files(setup: Setup) -> SharedFiles | None:
    """The fleet's generated-files table under this configuration, or None (SQLite)."""
    return SharedFiles.from_setup(setup)


__all__ = ["SCHEMA", "Files", "SharedFiles", "shared_files"]

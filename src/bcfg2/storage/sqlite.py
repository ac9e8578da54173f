"""The embedded engine: one SQLite file per store, the default for a one-server site.

One connection per process, shared by its threads behind a lock (a process
that forked gets its own on first use). WAL lets other processes (the
multiprocessing core's children, bcfg2-admin) read while the server writes;
a write transaction takes the file's write lock at once (``BEGIN
IMMEDIATE``) and waits up to 30 s for another writer. A crash never leaves
half a transaction: SQLite's journal sees to that.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from bcfg2 import metrics
from bcfg2.errors import StorageError
from bcfg2.storage.base import Database, Result, Transaction, check_sql

T = TypeVar("T")

#: how long a writer waits for another process's write lock, in seconds
BUSY_TIMEOUT = 30


class SQLiteTransaction(Transaction):
    """Statements on the shared connection, inside the database's lock."""

    engine = "sqlite"

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.conn = conn
        self.where = where

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        check_sql(sql)
        try:
            cursor = self.conn.execute(sql, tuple(params))
            rows = cursor.fetchall()
        except sqlite3.Error as err:
            raise StorageError(f"{self.where}: {err}") from err
        return Result(rows, cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        check_sql(sql)
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as err:
            raise StorageError(f"{self.where}: {err}") from err

    def table_exists(self, name: str) -> bool:
        return self.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (name,)).one() is not None

    def lock(self, name: str) -> None:
        """Nothing to take: a write transaction already excludes every other writer."""


#: every database opened in this process (close_connections closes their connections)
_OPEN: weakref.WeakSet[SQLiteDatabase] = weakref.WeakSet()


def close_connections() -> None:
    """Close this process's SQLite connections; each opens again on its next use.

    Before daemonizing: the fork keeps SQLite's per-file lock bookkeeping,
    which names descriptors the daemon then closes, so a connection opened
    afterwards would fail every transaction ("locking protocol").
    """
    for db in list(_OPEN):
        db.close()


class SQLiteDatabase(Database):
    """One SQLite file; ``pragmas`` are the per-connection settings of its store."""

    engine = "sqlite"

    def __init__(self, path: str, pragmas: Sequence[str] = ("synchronous=FULL",)) -> None:
        self.path = path
        self.pragmas = tuple(pragmas)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        with self._lock:
            self._connection()  # a file that cannot be opened fails here, at start-up
        _OPEN.add(self)

    def describe(self) -> str:
        return self.path

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (opened on first use, or again after a fork)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            for pragma in self.pragmas:
                conn.execute(f"PRAGMA {pragma}")
        except OSError as err:
            raise StorageError(f"{self.path}: cannot be opened: {err}") from err
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: {err}") from err
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[Transaction]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as err:
                raise StorageError(f"{self.path}: {err}") from err
            try:
                yield SQLiteTransaction(conn, self.path)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise StorageError(f"{self.path}: cannot commit: {err}") from err

    @metrics.timed_storage
    def run(self, work: Callable[[Transaction], T], write: bool = False) -> T:
        """``work`` in one transaction: a local file has no connection to lose."""
        with self.transaction(write) as tx:
            return work(tx)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

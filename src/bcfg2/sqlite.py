"""The server's SQLite databases (probe data, client runs): opened one way."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator


def connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection the threads of one process share (behind the caller's lock).

    The directory is made private if it is new; WAL lets other processes
    read while one writes; transactions are explicit (``BEGIN``), and a
    writer waits up to 30 s for another.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, lock: threading.Lock,
                write: bool = False) -> Iterator[sqlite3.Connection]:
    """The caller's lock and one transaction on ``conn``: committed, or rolled back on error."""
    with lock:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

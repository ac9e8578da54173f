"""The server's SQLite databases (probe data, client runs): opened one way."""

from __future__ import annotations

import os
import sqlite3


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

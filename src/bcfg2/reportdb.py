"""Client runs as agents report them, in an embedded SQLite database.

The Reporting plugin records every ``RecvStats`` upload here (one
transaction per run); ``bcfg2-admin reports``, ``minestruct`` and ``pull``
read it, with or without a server running. The database lives at
``<[server] state_dir>/Reporting/reporting.sqlite`` and uses WAL, so readers
never block the server and a crash never leaves half a run.

A run keeps its counts and the entries that matter to an admin: bad ones
(with why they failed, from the agent's ``current_*`` attributes), modified
ones and extra ones. Good entries are only counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import lxml.etree

import bcfg2.sqlite
from bcfg2.options import Setup

KINDS = ("Bad", "Modified", "Extra")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    client TEXT NOT NULL,
    timestamp REAL NOT NULL,
    state TEXT NOT NULL,
    revision TEXT NOT NULL,
    total INTEGER NOT NULL,
    good INTEGER NOT NULL,
    bad INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    extra INTEGER NOT NULL,
    dry_run INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_client ON runs (client, timestamp);
CREATE TABLE IF NOT EXISTS entries (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    tag TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_run ON entries (run);
"""

#: attributes that carry file contents; never part of a reason's wording
CONTENT_ATTRS = ("current_bfile", "current_bdiff", "current_diff")


def database_path(setup: Setup) -> str:
    """Where the run database of a server with this configuration lives."""
    return os.path.join(setup.server.state_dir, "Reporting", "reporting.sqlite")


@dataclass
class Entry:
    """One bad, modified or extra entry of a run."""

    kind: str
    tag: str
    name: str
    reason: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    """One client run: when, how it ended, its counts and (if loaded) its entries."""

    id: int
    client: str
    timestamp: float
    state: str
    revision: str
    total: int
    good: int
    bad: int
    modified: int
    extra: int
    dry_run: bool
    entries: list[Entry] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind == kind]


def reason(kind: str, entry: lxml.etree._Element) -> str:
    """Why an entry is bad, modified or extra, in a few words.

    Agents describe a failed entry with ``current_<attr>`` attributes next to
    the wanted ``<attr>``: each differing pair becomes "attr is X, should be
    Y"; content attributes become "content differs".
    """
    if kind == "Extra":
        return "on the host but not in its configuration"
    parts: list[str] = []
    if entry.get("current_exists", "").lower() == "false":
        parts.append("does not exist")
    content = False
    for attr, current in sorted(entry.attrib.items()):
        if not attr.startswith("current_") or attr == "current_exists":
            continue
        if attr in CONTENT_ATTRS:
            content = True
            continue
        wanted = entry.get(attr[len("current_"):])
        if wanted is None:
            parts.append(f"{attr[len('current_'):]} is {current!r}")
        elif wanted != current:
            parts.append(f"{attr[len('current_'):]} is {current!r}, should be {wanted!r}")
    if content:
        parts.append("content differs")
    if not parts:
        return "modified during the run" if kind == "Modified" else "failed verification"
    return "; ".join(parts)


def parse_run(statistics: lxml.etree._Element) -> tuple[dict[str, object], list[Entry]]:
    """The run record and entries described by an ``<upload-statistics>`` document."""
    stats = statistics if statistics.tag == "Statistics" else statistics.find(".//Statistics")
    if stats is None:
        raise ValueError("no <Statistics> element")
    entries: list[Entry] = []
    for kind in KINDS:
        for section in stats.findall(kind):
            for entry in section:
                if not isinstance(entry.tag, str):
                    continue
                entries.append(Entry(kind, entry.tag, entry.get("name", ""),
                                     reason(kind, entry), dict(entry.attrib)))

    def number(name: str, default: int) -> int:
        try:
            return int(stats.get(name, default))
        except ValueError:
            return default

    counts = {kind: sum(1 for e in entries if e.kind == kind) for kind in KINDS}
    total = number("total", 0)
    flags = {flag.get("name"): flag.get("value", "").lower() == "true"
             for flag in stats.iterfind("Flags/Flag")}
    record: dict[str, object] = {
        "state": stats.get("state") or ("dirty" if counts["Bad"] else "clean"),
        "revision": stats.get("revision", ""),
        "total": total,
        "good": number("good", max(total - counts["Bad"], 0)),
        "bad": counts["Bad"],
        "modified": counts["Modified"],
        "extra": counts["Extra"],
        "dry_run": bool(flags.get("dry_run")),
    }
    return record, entries


class RunStore:
    """The run database: record runs, prune old ones, and answer reports.

    One connection behind a lock per process; several processes (the server
    and bcfg2-admin) may use the file at once.
    """

    def __init__(self, path: str, create: bool = True) -> None:
        if not create and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no client run has been recorded yet")
        self.path = path
        self.lock = threading.Lock()
        # a crash of the server loses nothing; a power cut may lose the last runs
        self.conn = bcfg2.sqlite.connect(path, synchronous="NORMAL")
        self.conn.execute("PRAGMA cache_size=-512")  # KiB: runs are written, rarely read
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextlib.contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The store's lock and one SQLite transaction, rolled back on error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def record(self, client: str, statistics: lxml.etree._Element,
               timestamp: float | None = None) -> int:
        """Store one run of ``client`` (server time unless given); its id."""
        run, entries = parse_run(statistics)
        when = time.time() if timestamp is None else timestamp
        with self._transaction(write=True) as conn:
            cursor = conn.execute(
                "INSERT INTO runs (client, timestamp, state, revision, total, good, bad, "
                "modified, extra, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (client, when, run["state"], run["revision"], run["total"], run["good"],
                 run["bad"], run["modified"], run["extra"], int(bool(run["dry_run"]))))
            run_id = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT INTO entries (run, kind, tag, name, reason, attrs) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, e.kind, e.tag, e.name, e.reason, json.dumps(e.attrs, sort_keys=True))
                 for e in entries])
        return run_id

    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Delete runs older than ``keep_days``, except each client's latest; how many."""
        if keep_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - keep_days * 86400
        with self._transaction(write=True) as conn:
            cursor = conn.execute(
                "DELETE FROM runs WHERE timestamp < ? AND id NOT IN "
                "(SELECT MAX(id) FROM runs GROUP BY client)", (cutoff,))
            return cursor.rowcount

    def latest_runs(self) -> list[Run]:
        """Every client's most recently recorded run (without entries), by client name."""
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE id IN "
                "(SELECT MAX(id) FROM runs GROUP BY client) ORDER BY client").fetchall()
        return [_run(row) for row in rows]

    def runs(self, client: str, limit: int = 10) -> list[Run]:
        """The client's most recent runs, newest first, with their entries."""
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE client = ? "
                "ORDER BY id DESC LIMIT ?", (client, limit)).fetchall()
            result = [_run(row) for row in rows]
            for run in result:
                run.entries = [
                    Entry(kind, tag, name, why, json.loads(attrs))
                    for kind, tag, name, why, attrs in conn.execute(
                        "SELECT kind, tag, name, reason, attrs FROM entries WHERE run = ? "
                        "ORDER BY kind, tag, name", (run.id,))]
        return result

    def latest(self, client: str) -> Run | None:
        """The client's most recent run with its entries, or None."""
        found = self.runs(client, limit=1)
        return found[0] if found else None

    def count(self) -> int:
        """How many runs are stored."""
        with self._transaction() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


RUN_COLUMNS = ("id, client, timestamp, state, revision, total, good, bad, modified, extra, "
               "dry_run")


def _run(row: tuple) -> Run:
    return Run(*row[:10], dry_run=bool(row[10]))

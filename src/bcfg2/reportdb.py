"""Client runs as agents report them, in an embedded SQLite database.

The Reporting plugin records every ``RecvStats`` upload here (one
transaction per run); ``bcfg2-admin reports``, ``minestruct`` and ``pull``
read it, with or without a server running. The database lives at
``<[server] state_dir>/Reporting/reporting.sqlite`` and uses WAL, so readers
never block the server and a crash never leaves half a run.

A run keeps its counts and the entries that matter to an admin: bad ones
(with why they failed, from the agent's ``current_*`` attributes), modified
ones and extra ones. Good entries are only counted.

What a client sends is stored as data, bounded (``StoreLimits``): a value
over its length limit is cut and ends in ``MARKER``, and the entry lists
the fields cut; an entry whose tag is not a plain name, an attribute whose
name is not, a state other than clean or dirty and a revision with
characters outside printable ASCII are refused (the entry or attribute left
out, the state taken from the counts, the revision left empty). A run
counts what it could not store: ``dropped`` entries and ``truncated``
values. A client's runs beyond ``max_runs_per_hour`` are counted per client
and not stored. Output escapes control characters; the database keeps them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import lxml.etree

import bcfg2.sqlite
from bcfg2.options import Setup
from bcfg2.statsupload import KINDS

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
    dry_run INTEGER NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_client ON runs (client, timestamp);
CREATE TABLE IF NOT EXISTS entries (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    tag TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    attrs TEXT NOT NULL,
    truncated TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS entries_by_run ON entries (run);
CREATE TABLE IF NOT EXISTS dropped_runs (
    client TEXT PRIMARY KEY,
    runs INTEGER NOT NULL,
    last REAL NOT NULL
);
"""

#: columns added since the first schema: (table, column, declaration)
ADDED_COLUMNS = (
    ("runs", "dropped", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "truncated", "INTEGER NOT NULL DEFAULT 0"),
    ("entries", "truncated", "TEXT NOT NULL DEFAULT ''"),
)

#: attributes that carry file contents; never part of a reason's wording
CONTENT_ATTRS = ("current_bfile", "current_bdiff", "current_diff")
#: what ends a value cut at its limit
MARKER = "...[truncated]"
#: the longest attribute value (entry names included) other than contents
MAX_VALUE = 1024
#: the longest reason and revision stored
MAX_REASON = 1024
MAX_REVISION = 128
#: entry tags and attribute names: plain XML names, no namespace
TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
REVISION = re.compile(r"[!-~]*")
STATES = ("clean", "dirty")
#: the largest count (total, good) a run may claim
MAX_COUNT = 10**9
HOUR = 3600.0


@dataclass(frozen=True)
class StoreLimits:
    """How much of a client's runs is stored (``[reporting]`` options; 0: no limit)."""

    max_entry_content: int = 64 * 1024
    max_run_content: int = 4 * 1024 * 1024
    max_runs_per_hour: int = 12


def cut(value: str, limit: int) -> tuple[str, bool]:
    """``value`` cut to ``limit`` characters with MARKER at the end; whether it was."""
    if limit <= 0 or len(value) <= limit:
        return value, False
    return value[:limit] + MARKER, True


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
    #: the attributes whose values were cut at their limit
    truncated: tuple[str, ...] = ()


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
    #: entries the agent sent that were not stored (over a limit, or refused)
    dropped: int = 0
    #: values cut at their limit or refused
    truncated: int = 0
    entries: list[Entry] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind == kind]


def reason(kind: str, attrs: Mapping[str, str]) -> str:
    """Why an entry with these attributes is bad, modified or extra, in a few words.

    Agents describe a failed entry with ``current_<attr>`` attributes next to
    the wanted ``<attr>``: each differing pair becomes "attr is X, should be
    Y"; content attributes become "content differs".
    """
    if kind == "Extra":
        return "on the host but not in its configuration"
    parts: list[str] = []
    if attrs.get("current_exists", "").lower() == "false":
        parts.append("does not exist")
    content = False
    for attr, current in sorted(attrs.items()):
        if not attr.startswith("current_") or attr == "current_exists":
            continue
        if attr in CONTENT_ATTRS:
            content = True
            continue
        wanted = attrs.get(attr[len("current_"):])
        if wanted is None:
            parts.append(f"{attr[len('current_'):]} is {current!r}")
        elif wanted != current:
            parts.append(f"{attr[len('current_'):]} is {current!r}, should be {wanted!r}")
    if content:
        parts.append("content differs")
    if not parts:
        return "modified during the run" if kind == "Modified" else "failed verification"
    return "; ".join(parts)


class RunReport:
    """One run as read from an ``<upload-statistics>`` document, within the limits.

    ``record`` is the run's row; ``rows()`` yields the entries to store one
    at a time (with their attributes as JSON), so a run of many entries is
    never held as Python objects all at once. ``dropped`` and ``truncated``
    are final once ``rows()`` is exhausted.
    """

    def __init__(self, statistics: lxml.etree._Element, limits: StoreLimits) -> None:
        stats = statistics if statistics.tag == "Statistics" \
            else statistics.find(".//Statistics")
        if stats is None:
            raise ValueError("no <Statistics> element")
        self.stats = stats
        self.limits = limits
        self.truncated = 0
        self.stored = 0
        self.received = {kind: self._received(kind) for kind in KINDS}
        self.record = self._record()

    @property
    def dropped(self) -> int:
        """Entries the agent sent that are not stored."""
        return sum(self.received.values()) - self.stored

    def _received(self, kind: str) -> int:
        """How many entries of a kind the agent sent (kept or not, see bcfg2.statsupload)."""
        count = 0
        for section in self.stats.iterfind(kind):
            given = section.get("received", "")
            count += int(given) if given.isdigit() else len(section)
        return count

    def _number(self, name: str, default: int) -> int:
        given = self.stats.get(name)
        if given is None:
            return default
        try:
            value = int(given)
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_COUNT:
            self.truncated += 1
            return default
        return value

    def _record(self) -> dict[str, object]:
        state = self.stats.get("state")
        if state not in STATES:
            self.truncated += state is not None
            state = "dirty" if self.received["Bad"] else "clean"
        revision, was_cut = cut(self.stats.get("revision", ""), MAX_REVISION)
        if not REVISION.fullmatch(revision):
            revision, was_cut = "", True
        self.truncated += was_cut
        total = self._number("total", 0)
        flags = {flag.get("name"): flag.get("value", "").lower() == "true"
                 for flag in self.stats.iterfind("Flags/Flag")}
        return {
            "state": state,
            "revision": revision,
            "total": total,
            "good": self._number("good", max(total - self.received["Bad"], 0)),
            "bad": self.received["Bad"],
            "modified": self.received["Modified"],
            "extra": self.received["Extra"],
            "dry_run": bool(flags.get("dry_run")),
        }

    def _entry(self, kind: str, element: lxml.etree._Element) -> Entry | None:
        """The entry as stored: names checked, values cut; None if its tag is refused."""
        if not isinstance(element.tag, str) or not TAG.fullmatch(element.tag):
            return None
        attrs: dict[str, str] = {}
        cut_names: list[str] = []
        for name, value in element.attrib.items():
            if not ATTRIBUTE.fullmatch(name):
                self.truncated += 1
                continue
            limit = self.limits.max_entry_content if name in CONTENT_ATTRS else MAX_VALUE
            attrs[name], was_cut = cut(value, limit)
            if was_cut:
                cut_names.append(name)
        why, reason_cut = cut(reason(kind, attrs), MAX_REASON)
        self.truncated += len(cut_names) + reason_cut
        return Entry(kind, element.tag, attrs.get("name", ""), why, attrs, tuple(cut_names))

    def rows(self) -> Iterator[tuple[Entry, str]]:
        """The entries to store, bad ones first, each with its attributes as JSON."""
        budget = self.limits.max_run_content
        used = 0
        for kind in KINDS:
            for section in self.stats.iterfind(kind):
                for element in section:
                    entry = self._entry(kind, element)
                    if entry is None:
                        continue
                    attrs = json.dumps(entry.attrs, sort_keys=True)
                    size = len(entry.tag) + len(entry.name) + len(entry.reason) + len(attrs)
                    if budget > 0 and used + size > budget:
                        continue
                    used += size
                    self.stored += 1
                    yield entry, attrs

    def entries(self) -> list[Entry]:
        """Every entry that is stored (for tests and tools; ``rows`` streams them)."""
        return [entry for entry, _ in self.rows()]


def parse_run(statistics: lxml.etree._Element, limits: StoreLimits | None = None) -> RunReport:
    """The run an ``<upload-statistics>`` document describes, read within ``limits``."""
    return RunReport(statistics, limits or StoreLimits())


@dataclass(frozen=True)
class Recorded:
    """What ``RunStore.record`` did with a run."""

    #: the stored run's id; None if the client is over its hourly cap
    run_id: int | None
    #: the run is the first one dropped since the client was last under its cap
    burst: bool = False


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
        for table, column, declaration in ADDED_COLUMNS:  # a database of an older version
            if column not in {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def _transaction(self, write: bool = False) -> contextlib.AbstractContextManager[
            sqlite3.Connection]:
        """The store's lock and one SQLite transaction, rolled back on error."""
        return bcfg2.sqlite.transaction(self.conn, self.lock, write)

    def record(self, client: str, statistics: lxml.etree._Element,
               timestamp: float | None = None, limits: StoreLimits | None = None) -> Recorded:
        """Store one run of ``client`` (server time unless given) within ``limits``."""
        limits = limits or StoreLimits()
        report = parse_run(statistics, limits)
        run = report.record
        when = time.time() if timestamp is None else timestamp
        with self._transaction(write=True) as conn:
            if limits.max_runs_per_hour > 0 and conn.execute(
                    "SELECT COUNT(*) FROM runs WHERE client = ? AND timestamp > ?",
                    (client, when - HOUR)).fetchone()[0] >= limits.max_runs_per_hour:
                return self._drop_run(conn, client, when)
            cursor = conn.execute(
                "INSERT INTO runs (client, timestamp, state, revision, total, good, bad, "
                "modified, extra, dry_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (client, when, run["state"], run["revision"], run["total"], run["good"],
                 run["bad"], run["modified"], run["extra"], int(bool(run["dry_run"]))))
            run_id = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT INTO entries (run, kind, tag, name, reason, attrs, truncated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((run_id, e.kind, e.tag, e.name, e.reason, attrs, ",".join(e.truncated))
                 for e, attrs in report.rows()))
            conn.execute("UPDATE runs SET dropped = ?, truncated = ? WHERE id = ?",
                         (report.dropped, report.truncated, run_id))
        return Recorded(run_id)

    @staticmethod
    def _drop_run(conn: sqlite3.Connection, client: str, when: float) -> Recorded:
        """Count a run over the hourly cap instead of storing it."""
        last = conn.execute("SELECT last FROM dropped_runs WHERE client = ?",
                            (client,)).fetchone()
        conn.execute("INSERT INTO dropped_runs (client, runs, last) VALUES (?, 1, ?) "
                     "ON CONFLICT (client) DO UPDATE SET runs = runs + 1, last = excluded.last",
                     (client, when))
        return Recorded(None, burst=last is None or when - last[0] > HOUR)

    def dropped_runs(self) -> dict[str, tuple[int, float]]:
        """Per client, the runs not stored over the hourly cap and when the last came."""
        with self._transaction() as conn:
            return {client: (runs, last) for client, runs, last in conn.execute(
                "SELECT client, runs, last FROM dropped_runs")}

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
                    Entry(kind, tag, name, why, json.loads(attrs),
                          tuple(cut_names.split(",")) if cut_names else ())
                    for kind, tag, name, why, attrs, cut_names in conn.execute(
                        "SELECT kind, tag, name, reason, attrs, truncated FROM entries "
                        "WHERE run = ? ORDER BY kind, tag, name", (run.id,))]
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
               "dry_run, dropped, truncated")


def _run(row: tuple) -> Run:
    return Run(*row[:10], dry_run=bool(row[10]), dropped=row[11], truncated=row[12])

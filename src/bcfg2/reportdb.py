"""Client runs as agents report them, in the run-time database.

The Reporting plugin records every ``RecvStats`` upload here (one
transaction per run); ``bcfg2-admin reports``, ``minestruct`` and ``pull``
read it, with or without a server running. The database is
``<[server] state_dir>/Reporting/reporting.sqlite`` (WAL: readers never block
the server) or the shared PostgreSQL database with ``[database] engine =
postgresql`` (``bcfg2.storage``); either way a crash never leaves half a run.

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

import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import lxml.etree

from bcfg2.options import Setup
from bcfg2.statsupload import KINDS
from bcfg2.storage import Database, Migration, Schema, SQLiteDatabase, Transaction, migrated

#: columns added to the first layout before schema versions existed: (table, column, type)
ADDED_COLUMNS = (
    ("runs", "dropped", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "truncated", "INTEGER NOT NULL DEFAULT 0"),
    ("entries", "truncated", "TEXT NOT NULL DEFAULT ''"),
)

_COMMON = (
    "CREATE INDEX IF NOT EXISTS runs_by_client ON runs (client, timestamp)",
    """CREATE TABLE IF NOT EXISTS entries (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        tag TEXT NOT NULL,
        name TEXT NOT NULL,
        reason TEXT NOT NULL,
        attrs TEXT NOT NULL,
        truncated TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS entries_by_run ON entries (run)",
)
_RUNS = """CREATE TABLE IF NOT EXISTS runs (
        id {rowid},
        client TEXT NOT NULL,
        timestamp {real} NOT NULL,
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
    )"""
_DROPPED = """CREATE TABLE IF NOT EXISTS dropped_runs (
        client TEXT PRIMARY KEY,
        runs INTEGER NOT NULL,
        last {real} NOT NULL
    )"""


#: what a run's outcome is, worst first (``category``): the web page's states and chart colours
CATEGORIES = ("failed", "bad", "modified", "extra", "clean")
DAY = 86400.0


def category(bad: int, modified: int, extra: int, failures: int) -> str:
    """A run's outcome in one word: entries the server failed to bind, bad, modified,
    extra entries (the worst there is), or clean."""
    if failures:
        return "failed"
    if bad:
        return "bad"
    if modified:
        return "modified"
    if extra:
        return "extra"
    return "clean"


def day_of(timestamp: float) -> int:
    """The UTC day a time falls on, as days since 1970-01-01."""
    return int(timestamp // DAY)


def _fill_summaries(tx: Transaction) -> None:
    """Migration 3: each client's latest run, and the runs of each day by outcome."""
    tx.execute("INSERT INTO latest_runs (client, run) SELECT client, MAX(id) FROM runs "
               "GROUP BY client")
    days: dict[tuple[int, str], int] = {}
    for timestamp, bad, modified, extra in tx.execute(
            "SELECT timestamp, bad, modified, extra FROM runs"):
        key = (day_of(timestamp), category(bad, modified, extra, 0))
        days[key] = days.get(key, 0) + 1
    tx.executemany("INSERT INTO run_days (day, category, runs) VALUES (?, ?, ?)",
                   ((day, cat, runs) for (day, cat), runs in days.items()))


def _add_missing_columns(tx: Transaction) -> None:
    """A SQLite file of the very first layout lacks some columns: add them."""
    if tx.engine != "sqlite":
        return
    for table, column, declaration in ADDED_COLUMNS:
        if column not in {row[1] for row in tx.execute(f"PRAGMA table_info({table})")}:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


#: the run tables; migration 1 is their layout before schema versions existed
SCHEMA = Schema(
    "reporting",
    (
        Migration(
            1, "runs, their entries, and the runs counted over the hourly cap",
            tables=(_RUNS, _DROPPED), statements=_COMMON, apply=_add_missing_columns),
        Migration(
            2, "which server stored each run and the repository revision it served",
            statements=("ALTER TABLE runs ADD COLUMN server TEXT NOT NULL DEFAULT ''",
                        "ALTER TABLE runs ADD COLUMN served_revision TEXT NOT NULL "
                        "DEFAULT ''")),
        Migration(
            3, "each run's duration, timings and server-side bind failures; each client's "
               "latest run; the runs of each day by outcome",
            tables=("ALTER TABLE runs ADD COLUMN duration {real} NOT NULL DEFAULT 0",),
            statements=(
                "ALTER TABLE runs ADD COLUMN timings TEXT NOT NULL DEFAULT ''",
                "ALTER TABLE runs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
                "CREATE INDEX IF NOT EXISTS runs_by_time ON runs (timestamp)",
                "CREATE TABLE latest_runs (client TEXT PRIMARY KEY, run BIGINT NOT NULL)",
                "CREATE TABLE run_days (day INTEGER NOT NULL, category TEXT NOT NULL, "
                "runs INTEGER NOT NULL, PRIMARY KEY (day, category))"),
            apply=_fill_summaries),
    ),
    # a crash of the server loses nothing; a power cut may lose the last runs.
    # cache_size in KiB: runs are written, rarely read
    sqlite_pragmas=("synchronous=NORMAL", "cache_size=-512", "foreign_keys=ON"),
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
#: the longest server name stored with a run
MAX_SERVER = 255
#: entry tags and attribute names: plain XML names, no namespace
TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
REVISION = re.compile(r"[!-~]*")
STATES = ("clean", "dirty")
#: the largest count (total, good) a run may claim
MAX_COUNT = 10**9
#: the most time stamps (``<OpStamps>``) a run keeps
MAX_TIMINGS = 32
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
    #: the server that stored the run (``[server] name``; '' before schema version 2)
    server: str = ""
    #: the repository revision that server served (its Version plugins; '' if unknown)
    served_revision: str = ""
    #: seconds from the agent's first time stamp to its last (0: it sent none)
    duration: float = 0.0
    #: the agent's time stamps (``<OpStamps>``), in seconds since the run started, in order
    timings: dict[str, float] = field(default_factory=dict)
    #: bad entries the server itself failed to bind (they carry a ``failure`` attribute)
    failures: int = 0
    entries: list[Entry] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind == kind]

    @property
    def category(self) -> str:
        """The run's outcome in one word (``category``)."""
        return category(self.bad, self.modified, self.extra, self.failures)


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
        #: stored bad entries the server failed to bind
        self.failures = 0
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
        timings = self._timings()
        return {
            "timings": timings,
            "duration": max(timings.values(), default=0.0),
            "state": state,
            "revision": revision,
            "total": total,
            "good": self._number("good", max(total - self.received["Bad"], 0)),
            "bad": self.received["Bad"],
            "modified": self.received["Modified"],
            "extra": self.received["Extra"],
            "dry_run": bool(flags.get("dry_run")),
        }

    def _timings(self) -> dict[str, float]:
        """The agent's ``<OpStamps>`` as seconds since the first, in order (bounded, checked)."""
        stamps: dict[str, float] = {}
        node = self.stats.find("OpStamps")
        for name, value in (node.attrib.items() if node is not None else ()):
            try:
                when = float(value)
            except ValueError:
                when = math.nan
            if not ATTRIBUTE.fullmatch(name) or not math.isfinite(when) \
                    or len(stamps) >= MAX_TIMINGS:
                self.truncated += 1
                continue
            stamps[name] = when
        if not stamps:
            return {}
        first = min(stamps.values())
        return {name: round(when - first, 3)
                for name, when in sorted(stamps.items(), key=lambda item: item[1])}

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
                    self.failures += kind == "Bad" and "failure" in entry.attrs
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

    ``path`` is the SQLite file; ``database``, if given, is where the tables
    are instead (``bcfg2.storage.open_database``). Several processes (the
    server and bcfg2-admin) and servers may use it at once.
    """

    def __init__(self, path: str, create: bool = True, database: Database | None = None) -> None:
        if database is None and not create and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no client run has been recorded yet")
        self.path = path
        self.db = migrated(database if database is not None else SQLiteDatabase(
            path, SCHEMA.sqlite_pragmas), SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, client: str, statistics: lxml.etree._Element,
               timestamp: float | None = None, limits: StoreLimits | None = None,
               server: str = "", served_revision: str = "") -> Recorded:
        """Store one run of ``client`` (server time unless given) within ``limits``.

        ``server`` and ``served_revision`` say which server stored it and the
        repository revision that server was serving (provenance in a fleet).
        """
        limits = limits or StoreLimits()
        when = time.time() if timestamp is None else timestamp
        server = cut(server, MAX_SERVER)[0]
        served_revision = cut(served_revision, MAX_REVISION)[0]

        def write(tx: Transaction) -> Recorded:
            if limits.max_runs_per_hour > 0 and tx.execute(
                    "SELECT COUNT(*) FROM runs WHERE client = ? AND timestamp > ?",
                    (client, when - HOUR)).scalar() >= limits.max_runs_per_hour:
                return self._drop_run(tx, client, when)
            # parsed again on a retry: rows() counts what it drops as it goes
            report = fresh.pop() if fresh else parse_run(statistics, limits)
            run = report.record
            run_id = int(tx.execute(
                "INSERT INTO runs (client, timestamp, state, revision, total, good, bad, "
                "modified, extra, dry_run, server, served_revision, duration, timings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (client, when, run["state"], run["revision"], run["total"], run["good"],
                 run["bad"], run["modified"], run["extra"], int(bool(run["dry_run"])),
                 server, served_revision, run["duration"],
                 json.dumps(run["timings"]) if run["timings"] else "")).scalar())
            # rows() is lazy (a flood of entries is never all in memory at once) and
            # counts what it drops or cuts as it goes: the run's row is told afterwards
            tx.executemany(
                "INSERT INTO entries (run, kind, tag, name, reason, attrs, truncated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((run_id, e.kind, e.tag, e.name, e.reason, attrs, ",".join(e.truncated))
                 for e, attrs in report.rows()))
            if report.dropped or report.truncated or report.failures:
                tx.execute("UPDATE runs SET dropped = ?, truncated = ?, failures = ? "
                           "WHERE id = ?", (report.dropped, report.truncated,
                                            report.failures, run_id))
            self._summarise(tx, client, run_id, when, category(
                int(run["bad"]), int(run["modified"]), int(run["extra"]), report.failures))
            return Recorded(run_id)

        fresh = [parse_run(statistics, limits)]  # no <Statistics>: refused before any write
        return self.db.run(write, write=True)

    @staticmethod
    def _summarise(tx: Transaction, client: str, run_id: int, when: float, outcome: str) -> None:
        """Keep the summaries current: the client's latest run, and the runs of its day."""
        tx.execute("INSERT INTO latest_runs (client, run) VALUES (?, ?) ON CONFLICT (client) "
                   "DO UPDATE SET run = excluded.run", (client, run_id))
        tx.execute("INSERT INTO run_days (day, category, runs) VALUES (?, ?, 1) "
                   "ON CONFLICT (day, category) DO UPDATE SET runs = run_days.runs + 1",
                   (day_of(when), outcome))

    @staticmethod
    def _drop_run(tx: Transaction, client: str, when: float) -> Recorded:
        """Count a run over the hourly cap instead of storing it."""
        last = tx.execute("SELECT last FROM dropped_runs WHERE client = ?", (client,)).one()
        tx.execute("INSERT INTO dropped_runs (client, runs, last) VALUES (?, 1, ?) "
                   "ON CONFLICT (client) DO UPDATE SET runs = dropped_runs.runs + 1, "
                   "last = excluded.last", (client, when))
        return Recorded(None, burst=last is None or when - last[0] > HOUR)

    def dropped_runs(self) -> dict[str, tuple[int, float]]:
        """Per client, the runs not stored over the hourly cap and when the last came."""
        return {client: (runs, last) for client, runs, last in self.db.run(
            lambda tx: tx.execute("SELECT client, runs, last FROM dropped_runs"))}

    def prune(self, keep_days: float, now: float | None = None) -> int:
        """Delete runs older than ``keep_days``, except each client's latest; how many."""
        if keep_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - keep_days * 86400
        return self.db.run(lambda tx: tx.execute(
            "DELETE FROM runs WHERE timestamp < ? AND id NOT IN "
            "(SELECT MAX(id) FROM runs GROUP BY client)", (cutoff,)).rowcount, write=True)

    def latest_runs(self, at: float | None = None) -> list[Run]:
        """Every client's most recently recorded run (without entries and timings), by
        client name; with ``at``, each client's last run at that time (clients with none
        then left out)."""
        rows = self.db.run(lambda tx: tx.execute(
            f"SELECT {LIST_COLUMNS} FROM runs WHERE id IN ({_latest_ids(at)})",
            () if at is None else (at,)).rows)
        # sorted here, not by the database: its collation is the site's choice
        return sorted((_run(row) for row in rows), key=lambda run: run.client)

    def runs(self, client: str, limit: int = 10, offset: int = 0,
             before: float | None = None) -> list[Run]:
        """The client's most recent runs (at ``before`` if given), newest first, with their
        entries; ``offset`` skips the newest ones (paging)."""
        def read(tx: Transaction) -> list[Run]:
            result = [_run(row) for row in tx.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE client = ? AND timestamp <= ? "
                "ORDER BY timestamp DESC, id DESC LIMIT ? OFFSET ?",
                (client, math.inf if before is None else before, limit, offset))]
            for run in result:
                run.entries = _entries(tx, run.id)
            return result

        return self.db.run(read)

    def run_count(self, client: str, before: float | None = None) -> int:
        """How many runs of the client are stored (up to ``before``)."""
        return int(self.db.run(lambda tx: tx.execute(
            "SELECT COUNT(*) FROM runs WHERE client = ? AND timestamp <= ?",
            (client, math.inf if before is None else before)).scalar()))

    def run_by_id(self, run_id: int) -> Run | None:
        """One run with its entries, or None."""
        def read(tx: Transaction) -> Run | None:
            row = tx.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).one()
            if row is None:
                return None
            found = _run(row)
            found.entries = _entries(tx, found.id)
            return found

        return self.db.run(read)

    def daily_outcomes(self, first_day: int, last_day: int) -> dict[int, dict[str, int]]:
        """Runs per UTC day (``day_of``) from ``first_day`` to ``last_day``, by outcome."""
        out: dict[int, dict[str, int]] = {day: {} for day in range(first_day, last_day + 1)}
        for day, outcome, runs in self.db.run(lambda tx: tx.execute(
                "SELECT day, category, runs FROM run_days WHERE day >= ? AND day <= ?",
                (first_day, last_day))):
            out[int(day)][outcome] = int(runs)
        return out

    def durations(self, since: float, until: float) -> list[float]:
        """The durations of the runs stored between two times (of those that sent any)."""
        return [float(value) for (value,) in self.db.run(lambda tx: tx.execute(
            "SELECT duration FROM runs WHERE timestamp > ? AND timestamp <= ? AND duration > 0",
            (since, until)))]

    def client_history(self, client: str, since: float,
                       until: float) -> list[tuple[float, str, float]]:
        """The client's runs between two times, oldest first: (time, outcome, duration)."""
        return [(float(when), category(bad, modified, extra, failures), float(duration))
                for when, bad, modified, extra, failures, duration in self.db.run(
                    lambda tx: tx.execute(
                        "SELECT timestamp, bad, modified, extra, failures, duration FROM runs "
                        "WHERE client = ? AND timestamp > ? AND timestamp <= ? "
                        "ORDER BY timestamp", (client, since, until)))]

    def common_problems(self, at: float | None = None, limit: int = 50,
                        kinds: tuple[str, ...] = ("Bad", "Modified", "Extra")) -> list[Problem]:
        """The entries of the clients' latest runs (at ``at``) that most clients share,
        most clients first; each with the clients it concerns."""
        marks = ", ".join("?" for _ in kinds)
        params: tuple = (*(() if at is None else (at,)), *kinds)
        rows = self.db.run(lambda tx: tx.execute(
            "SELECT e.kind, e.tag, e.name, r.client, e.reason FROM entries e "
            "JOIN runs r ON r.id = e.run "
            f"WHERE e.run IN ({_latest_ids(at)}) AND e.kind IN ({marks})", params).rows)
        found: dict[tuple[str, str, str], Problem] = {}
        for kind, tag, name, client, why in rows:
            problem = found.setdefault((kind, tag, name), Problem(kind, tag, name))
            problem.clients.append((client, why))
        ranked = sorted(found.values(),
                        key=lambda p: (-len(p.clients), p.kind, p.tag, p.name))
        for problem in ranked:
            problem.clients.sort()
        return ranked[:limit] if limit > 0 else ranked

    def changes(self, since: float, until: float, limit: int = 500) -> list[Change]:
        """Entries the agents changed (modified) between two times, newest first."""
        return [Change(client, float(when), tag, name, why) for client, when, tag, name, why
                in self.db.run(lambda tx: tx.execute(
                    "SELECT r.client, r.timestamp, e.tag, e.name, e.reason FROM runs r "
                    "JOIN entries e ON e.run = r.id WHERE r.timestamp > ? AND r.timestamp <= ? "
                    "AND e.kind = ? ORDER BY r.timestamp DESC, e.tag, e.name LIMIT ?",
                    (since, until, "Modified", limit)))]

    def latest(self, client: str) -> Run | None:
        """The client's most recent run with its entries, or None."""
        found = self.runs(client, limit=1)
        return found[0] if found else None

    def runs_after(self, run_id: int, limit: int) -> list[Run]:
        """The runs stored with a larger id than ``run_id``, by id (without entries and
        timings), at most ``limit`` (a reader catching up with what was recorded since)."""
        return [_run(row) for row in self.db.run(lambda tx: tx.execute(
            f"SELECT {LIST_COLUMNS} FROM runs WHERE id > ? ORDER BY id LIMIT ?",
            (run_id, limit)))]

    def last_id(self) -> int:
        """The id of the newest run stored (0 if none): changes with every run recorded."""
        return int(self.db.run(lambda tx: tx.execute("SELECT MAX(id) FROM runs").scalar()) or 0)

    def count(self) -> int:
        """How many runs are stored."""
        return int(self.db.run(lambda tx: tx.execute("SELECT COUNT(*) FROM runs").scalar()))


def _latest_ids(at: float | None) -> str:
    """SQL giving each client's latest run id (at the time of its one parameter, if ``at``)."""
    if at is None:
        return "SELECT run FROM latest_runs"
    return ("SELECT (SELECT id FROM runs WHERE runs.client = latest_runs.client AND "
            "runs.timestamp <= ? ORDER BY runs.timestamp DESC, runs.id DESC LIMIT 1) "
            "FROM latest_runs")


def _entries(tx: Transaction, run_id: int) -> list[Entry]:
    return [Entry(kind, tag, name, why, json.loads(attrs),
                  tuple(cut_names.split(",")) if cut_names else ())
            for kind, tag, name, why, attrs, cut_names in sorted(tx.execute(
                "SELECT kind, tag, name, reason, attrs, truncated FROM entries "
                "WHERE run = ?", (run_id,)))]


@dataclass
class Problem:
    """An entry that clients' latest runs share, and (client, reason) of each."""

    kind: str
    tag: str
    name: str
    clients: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    """An entry an agent changed during a run."""

    client: str
    timestamp: float
    tag: str
    name: str
    reason: str


RUN_COLUMNS = ("id, client, timestamp, state, revision, total, good, bad, modified, extra, "
               "dry_run, dropped, truncated, server, served_revision, duration, timings, failures")


#: the columns of a run in lists: its timings left out (they are read with one client's runs)
LIST_COLUMNS = RUN_COLUMNS.replace("timings", "'' AS timings")


def _run(row: tuple) -> Run:
    return Run(*row[:10], dry_run=bool(row[10]), dropped=row[11], truncated=row[12],
               server=row[13], served_revision=row[14], duration=row[15],
               timings=json.loads(row[16]) if row[16] else {}, failures=row[17])

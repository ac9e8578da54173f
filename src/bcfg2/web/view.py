"""What the pages show, as data: the fleet's clients with their last runs, filtered,
sorted and paged by query parameters, at the present or at a past time.

Every page and its JSON twin are built from these functions, so the page,
the API and the tests agree. Query parameters are untrusted: each is
checked whole (``re.fullmatch``) and bounded; a bad one is a ``BadQuery``
naming it (a 400).
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bcfg2.reportdb import CATEGORIES, DAY, Run, RunStore, category, day_of

logger = logging.getLogger("bcfg2.web")

#: what the state filter takes: a run's outcome, or one of these
STATE_FILTERS = (*CATEGORIES, "dirty", "stale", "never", "dryrun", "pinned")
SORT_KEYS = ("name", "profile", "state", "last", "duration", "good", "bad", "modified", "extra",
             "server", "revision", "version")
NAME = re.compile(r"[A-Za-z0-9_.:@+-]{1,255}")
FREE_TEXT = re.compile(r"[^\x00-\x1f\x7f]{0,200}")
PROBE = re.compile(r"(?P<name>[A-Za-z0-9_.-]{1,128})=(?P<value>[^\x00-\x1f\x7f]{0,512})")
NUMBER = re.compile(r"[0-9]{1,7}(\.[0-9]{1,3})?")
AT = re.compile(r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ](?P<time>[0-9]{2}:[0-9]{2}))?")
MAX_PER_PAGE = 1000
PER_PAGE = 100
#: days of the daily chart
CHART_DAYS = 30
#: clients the "needs attention" table lists
ATTENTION = 20
#: the times (now and past dates) whose latest runs are kept in memory
CACHED_TIMES = 4
#: seconds between whole reads of the present's latest runs (``FleetView._latest``)
FULL_READ = 60.0
#: the most runs recorded since the last read that are caught up with, not read whole
CATCH_UP = 5000


class BadQuery(ValueError):
    """A query parameter that cannot be used, with the reason (a 400)."""


def parse_at(value: str | None) -> float | None:
    """``?at=YYYY-MM-DD`` (the end of that UTC day) or ``YYYY-MM-DDTHH:MM`` (UTC)."""
    if not value:
        return None
    match = AT.fullmatch(value)
    if match is None:
        raise BadQuery("at: a date as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    try:
        day = datetime.datetime.strptime(match["date"], "%Y-%m-%d").replace(
            tzinfo=datetime.UTC)
        if match["time"]:
            hours, minutes = map(int, match["time"].split(":"))
            return (day + datetime.timedelta(hours=hours, minutes=minutes)).timestamp()
    except ValueError as err:
        raise BadQuery(f"at: {err}") from None
    return day.timestamp() + DAY - 0.001


def when(timestamp: float | None) -> str:
    """A time as the pages show it (UTC, to the minute)."""
    if timestamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def age(seconds: float) -> str:
    """How long ago, in the largest unit that fits."""
    if seconds < 90:
        return f"{max(int(seconds), 0)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.1f} d"


@dataclass(slots=True)
class ClientRow:
    """One client as the lists show it (``state``: its last run's outcome, or never)."""

    name: str
    profile: str
    version: str
    pinned: bool
    run: Run | None
    stale: bool
    state: str

    def as_dict(self, now: float) -> dict[str, Any]:
        run = self.run
        out: dict[str, Any] = {"name": self.name, "profile": self.profile, "state": self.state,
                               "stale": self.stale, "pinned": self.pinned,
                               "version": self.version}
        if run is None:
            out.update(last_run=None, age_seconds=None)
        else:
            out.update(last_run=run.timestamp, last_run_utc=when(run.timestamp),
                       age_seconds=round(now - run.timestamp, 1), duration=run.duration,
                       total=run.total, good=run.good, bad=run.bad, modified=run.modified,
                       extra=run.extra, failures=run.failures, dry_run=run.dry_run,
                       server=run.server, served_revision=run.served_revision,
                       revision=run.revision, run_id=run.id)
        return out


@dataclass
class Query:
    """The list filters, sort and page of a request's query parameters."""

    state: str = ""
    group: str = ""
    profile: str = ""
    server: str = ""
    revision: str = ""
    probe: str = ""
    q: str = ""
    unseen: float | None = None
    sort: str = "name"
    page: int = 1
    per: int = PER_PAGE
    at: float | None = None
    raw: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Query:
        def text(key: str, pattern: re.Pattern[str]) -> str:
            value = params.get(key, "")
            if isinstance(value, list):
                raise BadQuery(f"{key}: given more than once")
            value = str(value)
            if value and not pattern.fullmatch(value):
                raise BadQuery(f"{key}: {value[:40]!r} is not a valid value")
            return value

        query = cls()
        query.state = text("state", re.compile("|".join(STATE_FILTERS)))
        query.group = text("group", NAME)
        query.profile = text("profile", NAME)
        query.server = text("server", NAME)
        query.revision = text("revision", FREE_TEXT)
        query.probe = text("probe", PROBE)
        query.q = text("q", FREE_TEXT).strip()
        unseen = text("unseen", NUMBER)
        query.unseen = float(unseen) if unseen else None
        sort = text("sort", re.compile("-?(" + "|".join(SORT_KEYS) + ")"))
        query.sort = sort or "name"
        page, per = text("page", re.compile("[1-9][0-9]{0,5}")), text("per", re.compile(
            "[1-9][0-9]{0,3}"))
        query.page = int(page) if page else 1
        query.per = min(int(per), MAX_PER_PAGE) if per else PER_PAGE
        query.at = parse_at(text("at", AT))
        query.raw = {key: str(params[key]) for key in
                     ("state", "group", "profile", "server", "revision", "probe", "q", "unseen",
                      "sort", "per", "at") if params.get(key)}
        return query


def _sort_key(key: str) -> Any:
    order = {name: n for n, name in enumerate((*CATEGORIES, "never"))}

    def get(row: ClientRow) -> Any:
        run = row.run
        if key == "name":
            return row.name
        if key == "profile":
            return (row.profile, row.name)
        if key == "state":
            return (order[row.state], row.name)
        if key == "version":
            return (row.version, row.name)
        if run is None:
            return (1, 0, row.name)
        value = {"last": run.timestamp, "duration": run.duration, "good": run.good,
                 "bad": run.bad, "modified": run.modified, "extra": run.extra,
                 "server": run.server, "revision": run.served_revision}[key]
        return (0, value, row.name)

    return get


class FleetView:
    """The fleet's clients and runs as the pages show them."""

    def __init__(self, core: Any, store: RunStore, probes: Any, stale_hours: float) -> None:
        self.core = core
        self.store = store
        #: the Probes plugin's database store (None: no probe filter)
        self.probes = probes
        self.stale = stale_hours * 3600
        #: the latest runs by the time they are for (None: now), with the newest run id then
        self._cache: dict[float | None, tuple[int, float, dict[str, Run]]] = {}
        self._lock = threading.Lock()
        self._refreshing = False
        self._refresher: threading.Thread | None = None

    def _latest(self, at: float | None) -> dict[str, Run]:
        """The latest runs (at ``at``), kept in memory by the time they are for.

        A past time's are read again only when a run was recorded since. The present's
        are brought up to date with the runs recorded since (each is its client's newest),
        and read whole again in the background every ``FULL_READ`` seconds: on PostgreSQL
        a run may commit after one with a larger id, which catching up by id would miss.
        """
        last = self.store.last_id()
        with self._lock:
            kept = self._cache.get(at)
        if kept is not None:
            seen, read_at, latest = kept
            if at is None and time.monotonic() - read_at >= FULL_READ:
                self.refresh_in_background()
            if seen == last:
                return latest
            if at is None:
                newer = self.store.runs_after(seen, CATCH_UP)
                if len(newer) < CATCH_UP:
                    latest = dict(latest)
                    for run in newer:
                        latest[run.client] = run
                    with self._lock:
                        if self._cache.get(at) is kept:
                            self._cache[at] = (newer[-1].id if newer else last, read_at, latest)
                    return latest
        return self._read_whole(at, last)

    def _read_whole(self, at: float | None, last: int) -> dict[str, Run]:
        latest = {run.client: run for run in self.store.latest_runs(at)}
        with self._lock:
            if at not in self._cache and len(self._cache) >= CACHED_TIMES:
                self._cache.pop(next(k for k in self._cache if k is not None))
            self._cache[at] = (last, time.monotonic(), latest)
        return latest

    def refresh_in_background(self) -> None:
        """Read the present's latest runs whole in a thread (one at a time), so that no
        request waits for it (also at start-up, before the first page is asked for)."""
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def read() -> None:
            try:
                self._read_whole(None, self.store.last_id())
            except Exception:
                logger.exception("Web: cannot read the latest runs")
            finally:
                with self._lock:
                    self._refreshing = False

        self._refresher = threading.Thread(target=read, name="web-latest-runs", daemon=True)
        self._refresher.start()

    def wait_refreshed(self, timeout: float) -> None:
        """Wait for a background read to end (before the stores close)."""
        refresher = self._refresher
        if refresher is not None:
            refresher.join(timeout)

    def now(self, at: float | None) -> float:
        return time.time() if at is None else at

    def rows(self, at: float | None = None) -> list[ClientRow]:
        """Every client known to the metadata or with a run, with its latest run at ``at``."""
        now = self.now(at)
        latest = self._latest(at)
        summaries = self.core.metadata.client_summaries()
        out = []
        for name in sorted(set(summaries) | set(latest)):
            summary = summaries.get(name)
            run = latest.get(name)
            if run is None:
                state, stale = "never", False
            else:
                state = category(run.bad, run.modified, run.extra, run.failures)
                stale = now - run.timestamp > self.stale
            if summary is None:
                out.append(ClientRow(name, "", "", False, run, stale, state))
            else:
                out.append(ClientRow(name, summary.profile, summary.version or "",
                                     summary.pinned, run, stale, state))
        return out

    def overview(self, at: float | None = None) -> dict[str, Any]:
        """The tiles' counts, the daily chart's data, the run-time histogram's, and the
        clients that need attention."""
        now = self.now(at)
        rows = self.rows(at)
        counts = {name: 0 for name in (*CATEGORIES, "stale", "never", "dryrun")}
        for row in rows:
            counts[row.state] += 1
            counts["stale"] += row.stale
            counts["dryrun"] += bool(row.run and row.run.dry_run)
        last = day_of(now)
        daily = self.store.daily_outcomes(last - CHART_DAYS + 1, last)
        durations = self.store.durations(now - self.stale, now)
        worst = {"failed": 0, "bad": 1}
        attention = sorted((row for row in rows if row.state in worst or row.stale),
                           key=lambda r: (worst.get(r.state, 2),
                                          r.run.timestamp if r.run else 0, r.name))[:ATTENTION]
        return {"at": at, "now": now, "clients": len(rows), "counts": counts,
                "daily": [{"day": day, "date": when(day * DAY)[:10], "runs": outcomes}
                          for day, outcomes in sorted(daily.items())],
                "durations": durations, "attention": attention}

    def select(self, query: Query) -> tuple[list[ClientRow], int]:
        """The rows the query's filters keep, sorted, and the page it asks for; the total."""
        now = self.now(query.at)
        rows = self.rows(query.at)
        keep = None
        if query.group:
            keep = set(self.core.metadata.clients_in_groups([query.group]))
        if query.probe:
            if self.probes is None:
                raise BadQuery("probe: probe data is not in the database here ([probes] "
                               "storage = xml, or no Probes plugin)")
            match = PROBE.fullmatch(query.probe)
            assert match is not None
            found = set(self.probes.clients_with(match["name"], match["value"]))
            keep = found if keep is None else keep & found
        text = query.q.lower()

        def wanted(row: ClientRow) -> bool:
            run = row.run
            if keep is not None and row.name not in keep:
                return False
            if query.state:
                state = query.state
                if state == "stale" and not row.stale:
                    return False
                if state == "never" and run is not None:
                    return False
                if state == "dirty" and row.state in ("clean", "never"):
                    return False
                if state == "dryrun" and not (run and run.dry_run):
                    return False
                if state == "pinned" and not row.pinned:
                    return False
                if state in CATEGORIES and row.state != state:
                    return False
            if query.profile and row.profile != query.profile:
                return False
            if query.server and (run is None or run.server != query.server):
                return False
            if query.revision and (run is None
                                   or not run.served_revision.startswith(query.revision)):
                return False
            if query.unseen is not None and run is not None \
                    and now - run.timestamp <= query.unseen * 3600:
                return False
            return not text or text in row.name.lower()

        selected = [row for row in rows if wanted(row)]
        key = query.sort.lstrip("-")
        selected.sort(key=_sort_key(key), reverse=query.sort.startswith("-"))
        if key not in ("name", "profile", "state", "version"):  # clients that never ran last
            selected = [r for r in selected if r.run is not None] + \
                [r for r in selected if r.run is None]
        start = (query.page - 1) * query.per
        return selected[start:start + query.per], len(selected)


__all__ = ["BadQuery", "ClientRow", "FleetView", "Query", "STATE_FILTERS", "age", "parse_at",
           "when"]

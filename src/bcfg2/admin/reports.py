"""Client runs: who is clean, who is dirty and why, who has not checked in.

What clients reported is printed with control characters escaped (a newline
in an entry name cannot forge a line); ``--json`` gives the stored values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from typing import Any

from bcfg2.errors import StorageError
from bcfg2.options import Setup
from bcfg2.reportdb import SCHEMA, Run, RunStore, database_path
from bcfg2.storage import engine_of, open_database
from bcfg2.tools import ToolError, local_core
from bcfg2.untrusted import one_line

#: the longest client-reported value printed on a report line
SHOWN = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which report: all clients (default), the dirty ones, the stale ones, one client."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dirty", action="store_true",
                       help="only clients whose last run was dirty, with what is wrong")
    which.add_argument("--stale", type=float, metavar="HOURS",
                       help="clients that have not checked in for HOURS (or never)")
    which.add_argument("--client", metavar="NAME",
                       help="one client's recent runs, the latest in detail")
    which.add_argument("--prune", action="store_true",
                       help="delete runs older than [reporting] keep_days (or --days) now")
    parser.add_argument("--runs", type=int, default=5, metavar="N",
                        help="how many runs --client lists (default 5)")
    parser.add_argument("--days", type=float, metavar="DAYS",
                        help="with --prune: the age limit instead of [reporting] keep_days")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def when(timestamp: float) -> str:
    """A run's time, local, to the second."""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def known_clients(setup: Setup) -> list[str]:
    """Every client the repository's Metadata knows (clients.xml and first contacts)."""
    setup.set("server", "plugins", ["Metadata"])
    with local_core(setup) as core:
        return sorted(core.metadata.list_clients())


def open_store(setup: Setup) -> RunStore | None:
    """The run database, or None if no run has been recorded yet."""
    try:
        path = database_path(setup)
        if engine_of(setup) == "sqlite" and not os.path.exists(path):
            return None
        return RunStore(path, database=open_database(setup, path, SCHEMA))
    except StorageError as err:
        raise ToolError(f"cannot read the run database: {err}") from None


def latest_run(setup: Setup, client: str) -> Run:
    """The client's latest run with its entries; a ToolError if it has none."""
    store = open_store(setup)
    if store is None:
        raise ToolError(f"no run recorded for {client} (no run recorded at all)")
    try:
        latest = store.latest(client)
    finally:
        store.close()
    if latest is None:
        raise ToolError(f"no run recorded for {client}")
    return latest


def as_dict(run: Run, entries: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {
        "client": run.client, "timestamp": run.timestamp, "time": when(run.timestamp),
        "state": run.state, "revision": run.revision, "total": run.total, "good": run.good,
        "bad": run.bad, "modified": run.modified, "extra": run.extra,
        "dry_run": run.dry_run, "dropped": run.dropped, "truncated": run.truncated,
        "server": run.server, "served_revision": run.served_revision}
    if entries:
        record["entries"] = [{"kind": e.kind.lower(), "tag": e.tag, "name": e.name,
                              "reason": e.reason, "truncated": list(e.truncated)}
                             for e in run.entries]
    return record


def shown(value: str) -> str:
    """A value a client reported, fit for one line of a report: control characters escaped."""
    line = one_line(value)
    return line if len(line) <= SHOWN else line[:SHOWN] + "..."


def provenance(run: Run) -> str:
    """Which server stored a run and the revision it served, as a note ('' if unknown)."""
    if not run.server and not run.served_revision:
        return ""
    return f"  served by {shown(run.server or '?')} at revision {shown(run.served_revision or '?')}"


#: the characters of a served revision the overview shows (a Git hash's short form)
SHORT_REVISION = 12


def not_stored(run: Run) -> str:
    """What the server did not keep of a run, as a note for its line ('' if nothing)."""
    parts = [f"{run.dropped} entries not stored"] if run.dropped else []
    if run.truncated:
        parts.append(f"{run.truncated} values cut")
    return f" ({', '.join(parts)})" if parts else ""


def run_lines(run: Run) -> list[str]:
    """The bad, modified and extra entries of a run, one line each."""
    return [f"  {entry.kind.lower():8}  {shown(entry.tag)}:{shown(entry.name)}: "
            f"{shown(entry.reason)}" for kind in ("Bad", "Modified", "Extra")
            for entry in run.of_kind(kind)]


def run(setup: Setup, args: argparse.Namespace) -> int:
    if args.prune:
        return prune(setup, args)
    clients = known_clients(setup)
    store = open_store(setup)
    try:
        latest = {r.client: r for r in store.latest_runs()} if store else {}
        dropped = store.dropped_runs() if store else {}
        if args.client:
            return one_client(store, clients, latest, dropped, args)
        if args.dirty:
            dirty = [store.latest(r.client) for r in latest.values() if r.state != "clean"] \
                if store else []
            return dirty_report([r for r in dirty if r is not None], args)
        if args.stale is not None:
            return stale_report(clients, latest, args)
        return overview(clients, latest, dropped, args)
    finally:
        if store:
            store.close()


def overview(clients: list[str], latest: dict[str, Run],
             dropped: dict[str, tuple[int, float]], args: argparse.Namespace) -> int:
    """Every client, known or reporting, with its last run and state.

    The last column counts the client's runs not stored over ``[reporting]
    max_runs_per_hour``; the two before it, which server stored the last run and
    the repository revision it served (shortened; ``--client`` shows it whole).
    """
    names = sorted(set(clients) | set(latest))
    if args.json:
        print(json.dumps([dict(as_dict(latest[n], entries=False) if n in latest
                               else {"client": n, "state": "never"},
                               dropped_runs=dropped.get(n, (0, 0.0))[0]) for n in names],
                         indent=1))
        return 0
    rows = [("Client", "Last run", "State", "Good/Total", "Bad", "Modified", "Extra",
             "Server", "Revision", "Over cap")]
    for name in names:
        r = latest.get(name)
        over = str(dropped.get(name, (0, 0.0))[0])
        if r is None:
            rows.append((shown(name), "never", "-", "-", "-", "-", "-", "-", "-", over))
        else:
            rows.append((shown(name), when(r.timestamp), shown(r.state), f"{r.good}/{r.total}",
                         str(r.bad), str(r.modified), str(r.extra), shown(r.server or "-"),
                         shown(r.served_revision[:SHORT_REVISION] or "-"), over))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    states = [latest[n].state if n in latest else "never" for n in names]
    print(f"{len(names)} clients: {states.count('clean')} clean, "
          f"{len(states) - states.count('clean') - states.count('never')} dirty, "
          f"{states.count('never')} never reported")
    return 0


def dirty_report(dirty: list[Run], args: argparse.Namespace) -> int:
    """The clients whose last run was dirty, and what is wrong with each."""
    if args.json:
        print(json.dumps([as_dict(r) for r in dirty], indent=1))
        return 0
    if not dirty:
        print("no dirty clients")
        return 0
    for r in dirty:
        print(f"{shown(r.client)}: {shown(r.state)} at {when(r.timestamp)} ({r.bad} bad, "
              f"{r.modified} modified, {r.extra} extra of {r.total}){not_stored(r)}"
              f"{provenance(r)}")
        for line in run_lines(r):
            print(line)
    return 0


def stale_report(clients: list[str], latest: dict[str, Run], args: argparse.Namespace) -> int:
    """Clients whose last run is older than --stale hours, and those that never ran."""
    now = time.time()
    cutoff = now - args.stale * 3600
    stale = [(name, latest.get(name)) for name in sorted(set(clients) | set(latest))
             if name not in latest or latest[name].timestamp < cutoff]
    if args.json:
        print(json.dumps([{"client": n, "timestamp": r.timestamp if r else None,
                           "hours": round((now - r.timestamp) / 3600, 1) if r else None}
                          for n, r in stale], indent=1))
        return 0
    if not stale:
        print(f"every client has checked in within {args.stale:g} hours")
        return 0
    width = max(len(shown(name)) for name, _ in stale)
    for name, r in stale:
        if r is None:
            print(f"{shown(name).ljust(width)}  never reported")
        else:
            print(f"{shown(name).ljust(width)}  last run {when(r.timestamp)} "
                  f"({(now - r.timestamp) / 3600:.1f} hours ago)")
    return 0


def one_client(store: RunStore | None, clients: list[str], latest: dict[str, Run],
               dropped: dict[str, tuple[int, float]], args: argparse.Namespace) -> int:
    """One client's recent runs, the latest with its entries."""
    name = args.client
    if name not in clients and name not in latest:
        raise ToolError(f"unknown client {shown(name)}")
    runs = store.runs(name, limit=max(args.runs, 1)) if store else []
    over, last_over = dropped.get(name, (0, 0.0))
    if args.json:
        print(json.dumps([dict(as_dict(r), dropped_runs=over) for r in runs], indent=1))
        return 0
    if not runs:
        print(f"{shown(name)}: no run recorded")
        return 0
    for r in runs:
        print(f"{when(r.timestamp)}  {shown(r.state):5}  good {r.good}/{r.total}  bad {r.bad}  "
              f"modified {r.modified}  extra {r.extra}"
              + ("  (dry run)" if r.dry_run else "") + not_stored(r) + provenance(r))
    if over:
        print(f"{over} runs not stored over [reporting] max_runs_per_hour, the last at "
              f"{when(last_over)}")
    lines = run_lines(runs[0])
    if lines:
        print(f"latest run of {shown(name)}:")
        for line in lines:
            print(line)
    return 0


def prune(setup: Setup, args: argparse.Namespace) -> int:
    """Delete old runs now (each client's latest run stays)."""
    days = args.days if args.days is not None else float(setup.reporting.keep_days)
    if days <= 0:
        raise ToolError("nothing to prune: [reporting] keep_days is 0 (keep every run); "
                        "give --days")
    store = open_store(setup)
    if store is None:
        print("no runs recorded")
        return 0
    try:
        removed = store.prune(days)
        print(f"pruned {removed} runs older than {days:g} days; {store.count()} left")
    finally:
        store.close()
    return 0

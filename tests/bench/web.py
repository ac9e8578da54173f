"""Benchmark of the web page: the overview and the client list over a big fleet.

It generates a repository of ``--clients`` clients (10,000 by default; genrepo's naming),
writes ``--days`` days (30) of ``--runs-per-day`` runs (4) per client straight into the run
database (SQLite, as the Reporting plugin leaves it: runs, each client's latest run, the
runs per day; the dirty latest runs with their entries), then starts the page over a
LocalCore (not listening: requests go through its WSGI application, as the tests do) and
times, after one warm-up request each, the median and the worst of ``--repeat`` requests
(the overview and the list also with a run recorded before each request, as on a live
server, where the page catches up with the runs recorded since it last read them):

- ``/`` (the overview: tiles, 30-day chart, run-time histogram, needs attention);
- ``/clients`` (the client list, first page of 100, by name);
- ``/clients?state=dirty&sort=-last`` (a filtered, sorted list);
- ``/api/clients?per=1000`` (the JSON API, a page of 1,000);

and the whole read of every client's latest run, which the server does in the background
at start and every minute (requests only catch up with the runs recorded since).

The target is 300 ms for the overview and the client list on this machine.

Usage: python tests/bench/web.py [--clients N] [--days D] [--runs-per-day R] [--repeat K]
                                 [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genrepo import RepoSpec, generate  # noqa: E402

TARGET_MS = 300.0
OUTCOMES = (("clean", 0.72), ("bad", 0.1), ("modified", 0.08), ("extra", 0.07),
            ("failed", 0.03))
PAGES = ("/", "/clients", "/clients?state=dirty&sort=-last", "/api/clients?per=1000")
#: the pages timed again with a run recorded before each request (the cache catching up)
LIVE_PAGES = ("/", "/clients")
LIVE = " (a run recorded before each)"


def load_runs(path: str, clients: list[str], days: int, per_day: int, now: float) -> int:
    """Write the runs straight into the run database; how many."""
    from bcfg2.reportdb import RunStore, day_of

    rng = random.Random(15)
    store = RunStore(path)
    names, weights = zip(*OUTCOMES, strict=True)
    total = 0
    try:
        def write(tx: Any) -> int:
            rows = []
            days_count: dict[tuple[int, str], int] = {}
            for n, client in enumerate(clients):
                if n % 50 == 49:
                    continue  # never reported
                for step in range(days * per_day, 0, -1):
                    when = now - step * 86400 / per_day + rng.uniform(0, 600)
                    outcome = "clean" if step > 1 else rng.choices(names, weights)[0]
                    bad = int(outcome in ("bad", "failed"))
                    rows.append((client, when, "dirty" if bad else "clean", "r1", 300,
                                 300 - bad, bad, int(outcome == "modified"),
                                 int(outcome == "extra"), 0, "srv-a", "abc123",
                                 rng.uniform(4, 40), '{"start": 0.0}',
                                 int(outcome == "failed"), outcome))
                    key = (day_of(when), outcome)
                    days_count[key] = days_count.get(key, 0) + 1
            tx.executemany(
                "INSERT INTO runs (client, timestamp, state, revision, total, good, bad, "
                "modified, extra, dry_run, server, served_revision, duration, timings, "
                "failures) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row[:15] for row in rows))
            tx.execute("INSERT INTO latest_runs (client, run) SELECT client, MAX(id) FROM runs "
                       "GROUP BY client")
            tx.executemany("INSERT INTO run_days (day, category, runs) VALUES (?, ?, ?)",
                           ((d, c, k) for (d, c), k in days_count.items()))
            latest = tx.execute("SELECT r.id, r.bad, r.modified, r.extra, r.failures FROM runs r "
                                "JOIN latest_runs l ON l.run = r.id").rows
            entries = []
            for run_id, bad, modified, extra, failures in latest:
                if bad:
                    attrs = '{"failure": "no matching generator"}' if failures else \
                        '{"mode": "0644", "current_mode": "0600"}'
                    entries.append((run_id, "Bad", "Path", f"/etc/bench/{run_id % 40}.conf",
                                    "mode is '0600', should be '0644'", attrs))
                if modified:
                    entries.append((run_id, "Modified", "Service", "ntp", "restarted", "{}"))
                if extra:
                    entries.append((run_id, "Extra", "Package", "telnetd",
                                    "on the host but not in its configuration", "{}"))
            tx.executemany("INSERT INTO entries (run, kind, tag, name, reason, attrs) "
                           "VALUES (?, ?, ?, ?, ?, ?)", entries)
            return len(rows)

        total = store.db.run(write, write=True)
    finally:
        store.close()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs-per-day", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)

    import lxml.etree
    import webtest

    from bcfg2.core import LocalCore
    from bcfg2.devcert import make_self_signed
    from bcfg2.options import build
    from bcfg2.reportdb import RunStore
    from bcfg2.web.server import WebServer
    from bcfg2.web.users import Users

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-web-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        spec = RepoSpec(clients=args.clients, profiles=10, groups=20, groups_per_profile=2,
                        bundles=10, entries=20)
        repo = generate(str(work / "repo"), spec)
        state = work / "state"
        make_self_signed(str(work / "server.crt"), str(work / "server.key"))
        setup = build("/dev/null", {
            "server.repository": str(work / "repo"), "server.plugins": "Metadata",
            "server.state_dir": str(state), "server.filemonitor": "pseudo",
            "logging.syslog": "false", "communication.key": str(work / "server.key"),
            "communication.certificate": str(work / "server.crt")})
        (state / "Reporting").mkdir(parents=True, exist_ok=True)
        now = time.time()
        runs = load_runs(str(state / "Reporting" / "reporting.sqlite"),
                         [c.name for c in repo.clients],
                         args.days, args.runs_per_day, now)
        Users(str(state / "web" / "users.json")).add("bench", "viewer", "bench-password")
        loaded = time.monotonic() - started
        core = LocalCore(setup)
        server = WebServer(core, setup, ("127.0.0.1", 0))
        try:
            client = webtest.TestApp(server.server.wsgi_app, extra_environ={
                "wsgi.url_scheme": "https", "HTTP_HOST": "localhost",
                "REMOTE_ADDR": "127.0.0.1"})
            # as WebServer.start does: every client's latest run is read in the background
            begin = time.perf_counter()
            server.app.view.refresh_in_background()
            server.app.view.wait_refreshed(600)
            whole_read = round((time.perf_counter() - begin) * 1000, 1)
            form = client.get("/login").forms[0]
            form["username"], form["password"] = "bench", "bench-password"
            form.submit(status=303)
            figures: dict[str, Any] = {"clients": args.clients, "runs": runs,
                                       "load_seconds": round(loaded, 1),
                                       "whole_read_ms": whole_read, "pages": {}}
            recorder = RunStore(str(state / "Reporting" / "reporting.sqlite"))
            upload = lxml.etree.fromstring(
                '<Statistics total="300" good="300" state="clean" revision="r1"/>')
            try:
                for page in PAGES:
                    begin = time.perf_counter()
                    client.get(page)  # warm-up: the first request reads the latest runs whole
                    first = round((time.perf_counter() - begin) * 1000, 1)
                    for live in (False, True):
                        if live and page not in LIVE_PAGES:
                            continue
                        times = []
                        for n in range(args.repeat):
                            if live:  # as on a live server: runs keep arriving
                                recorder.record(repo.clients[n].name, upload)
                            begin = time.perf_counter()
                            answer = client.get(page)
                            times.append((time.perf_counter() - begin) * 1000)
                        figures["pages"][page + (LIVE if live else "")] = {
                            "first_ms": None if live else first,
                            "median_ms": round(statistics.median(times), 1),
                            "max_ms": round(max(times), 1), "bytes": len(answer.body)}
            finally:
                recorder.close()
        finally:
            server.stop()
            core.shutdown()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        print(f"{figures['clients']} clients, {figures['runs']} runs over {args.days} days "
              f"(loaded in {figures['load_seconds']} s); {os.cpu_count()} CPUs; every client's "
              f"latest run read in {figures['whole_read_ms']} ms (in the background: at start "
              f"and every minute)")
        for page, result in figures["pages"].items():
            mark = "" if page.startswith("/api") or page.count("?") else \
                ("  ok" if result["median_ms"] < TARGET_MS else f"  OVER {TARGET_MS:.0f} ms")
            first = f"first {result['first_ms']:7.1f} ms" if result["first_ms"] else " " * 16
            print(f"  {page:50} {first}  median {result['median_ms']:7.1f} ms  max "
                  f"{result['max_ms']:7.1f} ms  {result['bytes']:7} bytes{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

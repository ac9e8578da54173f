"""The run database's queries for the web page, on both engines: latest runs now and at a
past time, paged history, runs per day by outcome, durations, common problems, changes."""

from __future__ import annotations

from pathlib import Path

import lxml.etree

from bcfg2.reportdb import DAY, RunStore, category, day_of, parse_run

DAY0 = 20_000 * DAY  # a UTC midnight


def stats(bad: int = 0, modified: int = 0, extra: int = 0, failure: bool = False,
          start: float = 0.0, took: float = 0.0) -> lxml.etree._Element:
    """An upload with that many bad, modified and extra entries (one server-side failure)."""
    failed = ' failure="no matching generator"'
    bads = "".join(f'<Path name="/etc/bad{n}" type="file" current_mode="0600" mode="0644"'
                   f'{failed if failure and n == 0 else ""}/>' for n in range(bad))
    mods = "".join(f'<Service name="svc{n}" type="systemd"/>' for n in range(modified))
    extras = "".join(f'<Package name="extra{n}" type="deb"/>' for n in range(extra))
    stamps = f'<OpStamps start="{start}" config="{start + took / 2}" finished="{start + took}"/>' \
        if took else ""
    state = "dirty" if bad else "clean"
    return lxml.etree.fromstring(
        f'<upload-statistics><Statistics total="{bad + 5}" good="5" state="{state}" '
        f'revision="r1">{stamps}<Bad>{bads}</Bad><Modified>{mods}</Modified>'
        f'<Extra>{extras}</Extra></Statistics></upload-statistics>')


def opened(tmp_path: Path, store_database) -> RunStore:
    return RunStore(str(tmp_path / "db" / "runs.sqlite"), database=store_database())


def test_a_run_keeps_its_timings_duration_and_server_side_failures() -> None:
    report = parse_run(stats(bad=2, failure=True, start=100.0, took=8.5))
    report.entries()
    assert report.record["duration"] == 8.5
    assert list(report.record["timings"]) == ["start", "config", "finished"]
    assert report.failures == 1
    bogus = lxml.etree.fromstring('<Statistics total="1" good="1" state="clean">'
                                  '<OpStamps start="nan" finished="x"/></Statistics>')
    refused = parse_run(bogus)
    assert refused.record["timings"] == {} and refused.truncated == 2


def test_outcomes_are_the_worst_there_is() -> None:
    assert category(1, 1, 1, 1) == "failed"
    assert category(1, 1, 1, 0) == "bad"
    assert category(0, 1, 1, 0) == "modified"
    assert category(0, 0, 1, 0) == "extra"
    assert category(0, 0, 0, 0) == "clean"


def test_latest_runs_now_and_at_a_past_time(tmp_path: Path, store_database) -> None:
    store = opened(tmp_path, store_database)
    store.record("a", stats(bad=1), timestamp=DAY0 + 10)
    store.record("a", stats(), timestamp=DAY0 + 20)
    store.record("b", stats(modified=1), timestamp=DAY0 + 30)
    assert [(r.client, r.category) for r in store.latest_runs()] == [
        ("a", "clean"), ("b", "modified")]
    assert [(r.client, r.category) for r in store.latest_runs(at=DAY0 + 15)] == [("a", "bad")]
    assert store.latest_runs(at=DAY0) == []
    store.close()


def test_history_is_paged_newest_first_and_stops_at_a_time(tmp_path: Path,
                                                           store_database) -> None:
    store = opened(tmp_path, store_database)
    for n in range(5):
        store.record("a", stats(extra=n), timestamp=DAY0 + n)
    assert [r.extra for r in store.runs("a", limit=2)] == [4, 3]
    assert [r.extra for r in store.runs("a", limit=2, offset=2)] == [2, 1]
    assert [r.extra for r in store.runs("a", limit=10, before=DAY0 + 1)] == [1, 0]
    assert store.run_count("a") == 5 and store.run_count("a", before=DAY0 + 2) == 3
    run = store.runs("a", limit=1)[0]
    assert store.run_by_id(run.id).entries[0].name == "extra0"
    assert store.run_by_id(run.id + 1000) is None
    store.close()


def test_runs_per_day_by_outcome_and_durations(tmp_path: Path, store_database) -> None:
    store = opened(tmp_path, store_database)
    store.record("a", stats(), timestamp=DAY0 + 5)
    store.record("b", stats(bad=1, failure=True), timestamp=DAY0 + 6)
    store.record("a", stats(bad=1, start=1.0, took=30.0), timestamp=DAY0 + DAY + 5)
    store.record("b", stats(start=1.0, took=12.0), timestamp=DAY0 + DAY + 6)
    first = day_of(DAY0)
    assert store.daily_outcomes(first - 1, first + 1) == {
        first - 1: {}, first: {"clean": 1, "failed": 1}, first + 1: {"bad": 1, "clean": 1}}
    assert sorted(store.durations(DAY0 + DAY, DAY0 + 2 * DAY)) == [12.0, 30.0]
    assert store.client_history("a", DAY0, DAY0 + 2 * DAY) == [
        (DAY0 + 5, "clean", 0.0), (DAY0 + DAY + 5, "bad", 30.0)]
    store.close()


def test_common_problems_and_changes(tmp_path: Path, store_database) -> None:
    store = opened(tmp_path, store_database)
    store.record("a", stats(bad=2, modified=1), timestamp=DAY0 + 1)
    store.record("b", stats(bad=1), timestamp=DAY0 + 2)
    store.record("c", stats(bad=1), timestamp=DAY0 + 3)
    store.record("c", stats(), timestamp=DAY0 + 4)  # c is clean now
    problems = store.common_problems()
    assert [(p.kind, p.name, [c for c, _ in p.clients]) for p in problems] == [
        ("Bad", "/etc/bad0", ["a", "b"]), ("Bad", "/etc/bad1", ["a"]),
        ("Modified", "svc0", ["a"])]
    assert "mode is '0600', should be '0644'" in problems[0].clients[0][1]
    past = store.common_problems(at=DAY0 + 3, kinds=("Bad",))
    assert [c for c, _ in past[0].clients] == ["a", "b", "c"]
    assert [(c.client, c.name) for c in store.changes(DAY0, DAY0 + 10)] == [("a", "svc0")]
    assert store.changes(DAY0 + 1, DAY0 + 10) == []
    store.close()


def test_an_older_database_gets_the_summaries(tmp_path: Path, store_database) -> None:
    """Migration 3 fills the latest runs and the days from the runs already stored."""
    store = opened(tmp_path, store_database)
    store.record("a", stats(bad=1), timestamp=DAY0 + 1)
    store.record("a", stats(), timestamp=DAY0 + 2)

    def back_to_version_2(tx) -> None:
        tx.execute("DELETE FROM latest_runs")
        tx.execute("DELETE FROM run_days")
        tx.execute("DROP TABLE latest_runs")
        tx.execute("DROP TABLE run_days")
        for column in ("duration", "timings", "failures"):
            tx.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        tx.execute("UPDATE schema_versions SET version = 2 WHERE store = ?", ("reporting",))

    store.db.run(back_to_version_2, write=True)
    store.close()
    again = opened(tmp_path, store_database)
    assert [r.category for r in again.latest_runs()] == ["clean"]
    assert again.daily_outcomes(day_of(DAY0), day_of(DAY0)) == {
        day_of(DAY0): {"bad": 1, "clean": 1}}
    again.close()

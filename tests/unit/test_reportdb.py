"""The run database: what a run records, why entries failed, and pruning."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import lxml.etree
import pytest

from bcfg2.reportdb import (
    MARKER,
    MAX_REVISION,
    MAX_VALUE,
    RunStore,
    StoreLimits,
    parse_run,
    reason,
)
from bcfg2.statsupload import read_statistics

DIRTY = """\
<upload-statistics>
  <Statistics total="5" version="2.0" revision="abc123" good="2" state="dirty">
    <Flags><Flag name="dry_run" value="True"/></Flags>
    <Modified><Service name="sshd" type="systemd" qtext=""/></Modified>
    <Extra><Package name="telnetd" type="deb" current_version="1.2"/>
           <Path name="/etc/cron.d/old" type="file"/></Extra>
    <Good><Path name="/etc/motd" type="file" qtext=""/></Good>
    <Bad>
      <Path name="/etc/ntp.conf" type="file" owner="root" mode="0644" qtext=""
            current_owner="root" current_mode="0600" current_bdiff="LSBhCisgYg=="/>
      <Path name="/etc/issue" type="file" current_exists="false" qtext=""/>
      <Package name="chrony" type="deb" version="4.2" current_version="4.0" qtext=""/>
    </Bad>
  </Statistics>
</upload-statistics>
"""


def doc(text: str) -> lxml.etree._Element:
    return lxml.etree.fromstring(text.encode())


def test_a_run_keeps_counts_state_flags_and_the_entries_that_matter() -> None:
    report = parse_run(doc(DIRTY))
    run, entries = report.record, report.entries()
    assert run == {"state": "dirty", "revision": "abc123", "total": 5, "good": 2, "bad": 3,
                   "modified": 1, "extra": 2, "dry_run": True, "duration": 0.0, "timings": {}}
    kinds = sorted((e.kind, e.tag, e.name) for e in entries)
    assert kinds == [("Bad", "Package", "chrony"), ("Bad", "Path", "/etc/issue"),
                     ("Bad", "Path", "/etc/ntp.conf"), ("Extra", "Package", "telnetd"),
                     ("Extra", "Path", "/etc/cron.d/old"), ("Modified", "Service", "sshd")]


def test_reasons_say_what_differs_in_an_admins_words() -> None:
    bad = {e.name: e.reason for e in parse_run(doc(DIRTY)).entries() if e.kind == "Bad"}
    assert bad["/etc/ntp.conf"] == "mode is '0600', should be '0644'; content differs"
    assert bad["/etc/issue"] == "does not exist"
    assert bad["chrony"] == "version is '4.0', should be '4.2'"
    assert reason("Bad", {"name": "/x"}) == "failed verification"
    assert reason("Extra", {"name": "/x"}).startswith("on the host")


def test_statistics_without_a_statistics_element_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_run(doc("<upload-statistics/>"))


def test_runs_are_stored_and_read_back_newest_first(tmp_path: Path, store_database) -> None:
    store = RunStore(str(tmp_path / "db" / "runs.sqlite"), database=store_database())
    clean = DIRTY.replace('state="dirty"', 'state="clean"')
    store.record("web1", doc(DIRTY), timestamp=1000.0)
    store.record("web1", doc(clean), timestamp=2000.0)
    store.record("db1", doc(DIRTY), timestamp=1500.0)
    latest = {r.client: (r.state, r.timestamp) for r in store.latest_runs()}
    assert latest == {"web1": ("clean", 2000.0), "db1": ("dirty", 1500.0)}
    runs = store.runs("web1")
    assert [r.timestamp for r in runs] == [2000.0, 1000.0]
    assert {e.name for e in runs[1].of_kind("Bad")} == {"/etc/ntp.conf", "/etc/issue", "chrony"}
    assert runs[1].of_kind("Bad")[0].attrs["qtext"] == ""
    assert store.latest("nobody") is None
    store.close()


def test_pruning_drops_old_runs_but_keeps_each_clients_latest(tmp_path: Path,
                                                             store_database) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"), database=store_database())
    day = 86400.0
    now = 100 * day
    store.record("old-client", doc(DIRTY), timestamp=now - 50 * day)
    store.record("busy", doc(DIRTY), timestamp=now - 40 * day)
    store.record("busy", doc(DIRTY), timestamp=now - 1 * day)
    assert store.prune(keep_days=30, now=now) == 1
    assert {(r.client, r.timestamp) for r in store.latest_runs()} == {
        ("old-client", now - 50 * day), ("busy", now - day)}
    assert store.count() == 2
    assert store.prune(keep_days=0, now=now) == 0  # 0 keeps everything
    # the entries of a pruned run go with it
    assert store.db.run(lambda tx: tx.execute(
        "SELECT COUNT(*) FROM entries WHERE run NOT IN (SELECT id FROM runs)").scalar()) == 0
    assert store.db.run(lambda tx: tx.execute("SELECT COUNT(*) FROM entries").scalar()) == 12
    store.close()


def test_reading_a_database_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no client run"):
        RunStore(str(tmp_path / "missing.sqlite"), create=False)
    assert not (tmp_path / "missing.sqlite").exists()


# -- limits: what one client can store ------------------------------------------------

def stats_doc(*entries: str, kind: str = "Bad", **attrs: str) -> lxml.etree._Element:
    """An upload with ``entries`` (XML text) in one section."""
    head = {"version": "2.0", "total": "10", "good": "5", "state": "dirty", **attrs}
    stats = lxml.etree.Element("Statistics", head)
    section = lxml.etree.SubElement(stats, kind)
    for entry in entries:
        section.append(lxml.etree.fromstring(entry))
    root = lxml.etree.Element("upload-statistics")
    root.append(stats)
    return root


def test_contents_and_values_over_their_limit_are_cut_and_marked() -> None:
    big = "QUJD" * 25_000
    long_value = "v" * (MAX_VALUE + 10)
    report = parse_run(stats_doc(
        f'<Path name="/etc/big" current_bfile="{big}" mode="{long_value}"/>',
        f'<Path name="/{"n" * 2000}"/>'), StoreLimits(max_entry_content=1000))
    first, second = report.entries()
    assert first.attrs["current_bfile"] == big[:1000] + MARKER
    assert first.attrs["mode"] == long_value[:MAX_VALUE] + MARKER
    assert first.truncated == ("current_bfile", "mode")
    assert second.name.endswith(MARKER) and len(second.name) == MAX_VALUE + len(MARKER)
    assert report.truncated == 3 and report.dropped == 0
    unlimited = parse_run(stats_doc(f'<Path name="/b" current_bfile="{big}"/>'),
                          StoreLimits(max_entry_content=0)).entries()
    assert unlimited[0].attrs["current_bfile"] == big


def test_entries_and_attributes_with_names_that_are_not_plain_are_left_out() -> None:
    report = parse_run(stats_doc(
        '<Path name="/ok" good_attr="1" xmlns:x="urn:x" x:forged="1"/>',
        '<x:Path xmlns:x="urn:x" name="/namespaced"/>',
        '<Path name="/second"/>'))
    entries = report.entries()
    assert [e.name for e in entries] == ["/ok", "/second"]
    assert entries[0].attrs == {"name": "/ok", "good_attr": "1"}
    assert report.dropped == 1 and report.truncated == 1


@pytest.mark.parametrize("attrs, state, revision", [
    ({"state": "clean\n2024-01-01 db1.example.com clean"}, "dirty", "-1"),
    ({"state": "dirty"}, "dirty", "-1"),
    ({"revision": "abc\ndef"}, "dirty", ""),
    ({"revision": "r" * 500}, "dirty", "r" * MAX_REVISION + MARKER),
])
def test_state_and_revision_are_validated(attrs: dict, state: str, revision: str) -> None:
    report = parse_run(stats_doc('<Path name="/x"/>', **{"revision": "-1", **attrs}))
    assert report.record["state"] == state
    assert report.record["revision"] == revision


@pytest.mark.parametrize("total, stored", [("12", 12), ("-3", 0), ("1" * 5000, 0),
                                           ("2000000000", 0), ("x", 0)])
def test_counts_are_plain_bounded_numbers(total: str, stored: int) -> None:
    assert parse_run(stats_doc(total=total)).record["total"] == stored


def test_a_run_stores_at_most_max_run_content_bad_entries_first() -> None:
    extra = [f'<Package name="extra{i}" type="deb"/>' for i in range(50)]
    doc = stats_doc(*extra, kind="Extra")
    stats = doc[0]
    bad = lxml.etree.SubElement(stats, "Bad")  # after the extra ones, as agents send them
    for i in range(50):
        lxml.etree.SubElement(bad, "Path", name=f"/etc/bad{i}", current_bdiff="A" * 200)
    report = parse_run(doc, StoreLimits(max_run_content=8_000))
    entries = report.entries()
    kinds = [e.kind for e in entries]
    bad = kinds.count("Bad")
    assert 0 < bad < 50 and kinds[:bad] == ["Bad"] * bad  # bad ones first; smaller ones fill up
    assert sum(len(e.name) + len(e.reason) + len(json.dumps(e.attrs)) + len(e.tag)
               for e in entries) <= 8_000
    assert report.dropped == 100 - len(entries)
    assert report.record["bad"] == 50 and report.record["extra"] == 50


def test_counts_come_from_what_the_agent_sent_not_what_was_kept() -> None:
    upload = read_statistics(DIRTY, max_entries=1)
    report = parse_run(upload)
    assert (report.record["bad"], report.record["modified"], report.record["extra"]) == (3, 1, 2)
    assert len(report.entries()) == 1 and report.dropped == 5


def test_runs_over_the_hourly_cap_are_counted_not_stored(tmp_path: Path,
                                                         store_database) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"), database=store_database())
    limits = StoreLimits(max_runs_per_hour=3)
    start = 1_000_000.0
    outcomes = [store.record("web1", doc(DIRTY), timestamp=start + minute * 60, limits=limits)
                for minute in range(6)]
    assert [o.run_id is not None for o in outcomes] == [True] * 3 + [False] * 3
    assert [o.burst for o in outcomes] == [False] * 3 + [True, False, False]
    assert store.record("db1", doc(DIRTY), timestamp=start + 300, limits=limits).run_id
    assert store.dropped_runs() == {"web1": (3, start + 300)}
    # an hour after the first runs there is room again; a later burst is a new one
    assert store.record("web1", doc(DIRTY), timestamp=start + 3601, limits=limits).run_id
    later = start + 3 * 3600
    bursts = [store.record("web1", doc(DIRTY), timestamp=later + s, limits=limits).burst
              for s in range(5)]
    assert bursts == [False, False, False, True, False]
    assert store.dropped_runs()["web1"][0] == 5
    assert store.record("web1", doc(DIRTY), timestamp=later + 10,
                        limits=StoreLimits(max_runs_per_hour=0)).run_id
    store.close()


def test_what_was_cut_or_dropped_is_kept_with_the_run(tmp_path: Path, store_database) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"), database=store_database())
    big = "QUJD" * 1000
    store.record("web1", stats_doc(f'<Path name="/etc/big" current_bfile="{big}"/>',
                                   '<x:P xmlns:x="urn:x" name="/refused"/>'),
                 limits=StoreLimits(max_entry_content=100))
    run = store.latest("web1")
    assert (run.dropped, run.truncated) == (1, 1)
    assert run.entries[0].truncated == ("current_bfile",)
    assert store.latest_runs()[0].dropped == 1
    store.close()


def test_a_database_of_the_first_schema_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE runs (id INTEGER PRIMARY KEY, client TEXT NOT NULL, timestamp REAL NOT NULL,
            state TEXT NOT NULL, revision TEXT NOT NULL, total INTEGER NOT NULL,
            good INTEGER NOT NULL, bad INTEGER NOT NULL, modified INTEGER NOT NULL,
            extra INTEGER NOT NULL, dry_run INTEGER NOT NULL);
        CREATE TABLE entries (run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            kind TEXT NOT NULL, tag TEXT NOT NULL, name TEXT NOT NULL, reason TEXT NOT NULL,
            attrs TEXT NOT NULL);
        INSERT INTO runs VALUES (1, 'old', 1.0, 'clean', '-1', 1, 1, 0, 0, 0, 0);
        INSERT INTO entries VALUES (1, 'Bad', 'Path', '/x', 'failed verification', '{}');
    """)
    conn.close()
    store = RunStore(str(path))
    old = store.latest("old")
    assert (old.dropped, old.truncated, old.entries[0].truncated) == (0, 0, ())
    store.record("new", doc(DIRTY))
    assert store.latest("new").bad == 3
    store.close()
    assert (old.server, old.served_revision) == ("", "")  # stored before provenance
    with sqlite3.connect(path) as conn:  # stamped as the first version, then migrated
        assert conn.execute("SELECT * FROM schema_versions").fetchall() == [("reporting", 3)]

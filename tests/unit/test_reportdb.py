"""The run database: what a run records, why entries failed, and pruning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import lxml.etree
import pytest

from bcfg2.reportdb import RunStore, parse_run, reason

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
    run, entries = parse_run(doc(DIRTY))
    assert run == {"state": "dirty", "revision": "abc123", "total": 5, "good": 2, "bad": 3,
                   "modified": 1, "extra": 2, "dry_run": True}
    kinds = sorted((e.kind, e.tag, e.name) for e in entries)
    assert kinds == [("Bad", "Package", "chrony"), ("Bad", "Path", "/etc/issue"),
                     ("Bad", "Path", "/etc/ntp.conf"), ("Extra", "Package", "telnetd"),
                     ("Extra", "Path", "/etc/cron.d/old"), ("Modified", "Service", "sshd")]


def test_reasons_say_what_differs_in_an_admins_words() -> None:
    bad = {e.name: e.reason for e in parse_run(doc(DIRTY))[1] if e.kind == "Bad"}
    assert bad["/etc/ntp.conf"] == "mode is '0600', should be '0644'; content differs"
    assert bad["/etc/issue"] == "does not exist"
    assert bad["chrony"] == "version is '4.0', should be '4.2'"
    assert reason("Bad", lxml.etree.Element("Path", name="/x")) == "failed verification"
    assert reason("Extra", lxml.etree.Element("Path", name="/x")).startswith("on the host")


def test_statistics_without_a_statistics_element_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_run(doc("<upload-statistics/>"))


def test_runs_are_stored_and_read_back_newest_first(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "db" / "runs.sqlite"))
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


def test_pruning_drops_old_runs_but_keeps_each_clients_latest(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"))
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
    conn = sqlite3.connect(store.path)
    orphans = conn.execute("SELECT COUNT(*) FROM entries WHERE run NOT IN "
                           "(SELECT id FROM runs)").fetchone()[0]
    conn.close()
    assert orphans == 0
    store.close()


def test_reading_a_database_that_does_not_exist_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no client run"):
        RunStore(str(tmp_path / "missing.sqlite"), create=False)
    assert not (tmp_path / "missing.sqlite").exists()

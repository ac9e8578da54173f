"""bcfg2-admin dbcopy: a site's state from SQLite to PostgreSQL and back, and upstream's XML.

Each direction is checked by content, not only by counts: every row of every
copied table on both sides, the runs read back through the run store (with
their entries and provenance), and a run recorded after the copy (the id
sequence follows the copied ids). A second copy without --force is refused
and changes nothing; with --force it duplicates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from conftest import Repo, make_setup
from test_admin_cli import admin_run, one_error_line
from test_dbmigrate import conf

from bcfg2 import clientstate, reportdb
from bcfg2.admin import dbcopy
from bcfg2.plugins import probes
from bcfg2.reportdb import RunStore, StoreLimits
from bcfg2.storage import Database, SQLiteDatabase
from bcfg2.web import audit

RUN = """\
<upload-statistics><Statistics total="3" good="1" state="dirty" revision="r{n}">
  <Bad><Path name="/etc/motd" mode="0644" current_mode="0600"/>
       <Service name="ssh" status="on" current_status="off"/></Bad>
  <Extra><Package name="telnetd" type="deb"/></Extra>
  <Good><Path name="/etc/hosts"/></Good>
</Statistics></upload-statistics>"""


def run_doc(n: int) -> lxml.etree._Element:
    return lxml.etree.fromstring(RUN.format(n=n).encode())


def populate(state: Path, database: Callable | None = None) -> None:
    """Two clients' state, probe data, three stored runs and one over the hourly cap."""
    setup_paths = {s.schema.store: s.path for s in dbcopy.stores(make_setup("/nonexistent",
                                                                            state))}
    handle = (lambda: database()) if database else (lambda: None)
    clients = clientstate.ClientState(setup_paths["clients"], handle())
    clients.update("web1.example.com", {"profile": "web", "version": "1.4.0"})
    clients.update("db1.example.com", {"version": "1.3.0", "auth": "cert"})
    clients.close()
    store = probes.DatabaseStore(setup_paths["probes"], handle())
    store.save("web1.example.com", {"os": "debian\n", "role": "web"}, ["webserver"])
    store.close()
    runs = RunStore(setup_paths["reporting"], database=handle())
    runs.record("web1.example.com", run_doc(1), timestamp=1000.5, server="east",
                served_revision="abc")
    runs.record("web1.example.com", run_doc(2), timestamp=2000.25, server="west",
                served_revision="def")
    runs.record("db1.example.com", run_doc(3), timestamp=3000.0,
                limits=StoreLimits(max_runs_per_hour=1))
    runs.record("db1.example.com", run_doc(4), timestamp=3001.0,
                limits=StoreLimits(max_runs_per_hour=1))  # counted, not stored
    runs.close()
    log = audit.AuditLog(setup_paths["web_audit"], handle())
    log.set_status(log.add("admin", "web1.example.com", "pin", ""), "done", "pinned")
    log.close()


def snapshot(databases: dict[str, Database], state: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every copied table, sorted (what the copy must carry over whole)."""
    out = {}
    for store in dbcopy.stores(make_setup("/nonexistent", state)):
        db = databases[store.schema.store]
        for table in store.tables:
            out[table.name] = sorted(db.run(lambda tx, t=table: tx.execute(
                f"SELECT {', '.join(t.columns)} FROM {t.name}").rows), key=repr)
    return out


def sqlite_dbs(state: Path) -> dict[str, Database]:
    return {s.schema.store: SQLiteDatabase(s.path)
            for s in dbcopy.stores(make_setup("/nonexistent", state))}


def pg_dbs(pg_database: Any) -> dict[str, Database]:
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    return {name: PostgreSQLDatabase(pg_database.settings())
            for name in ("clients", "probes", "reporting", "web_audit")}


def close(dbs: dict[str, Database]) -> None:
    for db in dbs.values():
        db.close()


COUNTS = {"clients": 2, "probes": 2, "groups": 1, "runs": 3, "entries": 9, "dropped_runs": 1,
          "latest_runs": 2, "run_days": 1, "audit": 1}


def counts(rows: dict[str, list[Any]]) -> dict[str, int]:
    return {table: len(found) for table, found in rows.items()}


def test_sqlite_state_is_copied_into_postgresql_once(repo: Repo, tmp_path: Path, capsys,
                                                     pg_database: Any) -> None:
    state = tmp_path / "state"
    populate(state)
    source = sqlite_dbs(state)
    before = snapshot(source, state)
    assert counts(before) == COUNTS
    args = conf(tmp_path, repo, pg_database.overrides)
    status, out, _ = admin_run(capsys, *args, "dbcopy", "--from", "sqlite", "--to", "postgresql")
    assert status == 0
    assert "reporting: copied 3 runs, 9 entries, 1 dropped_runs, 2 latest_runs, 1 run_days from" in out
    target = pg_dbs(pg_database)
    try:
        assert snapshot(target, state) == before
        runs = RunStore("", database=target["reporting"])
        latest = runs.latest("web1.example.com")
        assert (latest.server, latest.served_revision, latest.revision) == ("west", "def", "r2")
        assert sorted((e.kind, e.name) for e in latest.entries) == [
            ("Bad", "/etc/motd"), ("Bad", "ssh"), ("Extra", "telnetd")]
        # a run stored after the copy gets an id after the copied ones
        new = runs.record("web1.example.com", run_doc(5), timestamp=4000.0).run_id
        assert new == max(row[0] for row in before["runs"]) + 1

        status, _, err = admin_run(capsys, *args, "dbcopy", "--from", "sqlite")
        assert status == 1 and "--force" in one_error_line(err)
        assert counts(snapshot(target, state))["runs"] == 4  # refused: nothing changed
        for _ in range(2):
            status, _, _ = admin_run(capsys, *args, "dbcopy", "--from", "sqlite", "--force")
            assert status == 0
            assert snapshot(target, state) == before  # replaced, never duplicated
    finally:
        close(target)
        close(source)


def test_postgresql_state_is_copied_back_into_sqlite(repo: Repo, tmp_path: Path, capsys,
                                                    pg_database: Any) -> None:
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    state = tmp_path / "state"
    populate(tmp_path / "unused", lambda: PostgreSQLDatabase(pg_database.settings()))
    source = pg_dbs(pg_database)
    before = snapshot(source, state)
    assert counts(before) == COUNTS
    args = conf(tmp_path, repo, pg_database.overrides)
    status, out, _ = admin_run(capsys, *args, "dbcopy", "--from", "postgresql")
    assert status == 0 and out.count("copied") == 4  # clients, probes, reporting, web_audit
    target = sqlite_dbs(state)
    try:
        assert snapshot(target, state) == before
        runs = RunStore(reportdb.database_path(make_setup(repo, state)))
        assert [r.server for r in runs.runs("web1.example.com")] == ["west", "east"]
        assert runs.dropped_runs()["db1.example.com"][0] == 1
        runs.close()
        assert clientstate.ClientState(clientstate.database_path(str(state))).load() == {
            "web1.example.com": {"profile": "web", "version": "1.4.0"},
            "db1.example.com": {"version": "1.3.0", "auth": "cert"}}
        status, _, err = admin_run(capsys, *args, "dbcopy", "--from", "postgresql",
                                   "--to", "sqlite")
        assert status == 1 and "already holds clients (2 clients)" in one_error_line(err)
        assert admin_run(capsys, *args, "dbcopy", "--from", "postgresql", "--force")[0] == 0
        assert snapshot(target, state) == before
    finally:
        close(target)
        close(source)


PROBED = """\
<Probed>
  <Client name="web1.example.com" timestamp="1700000000">
    <Probe name="os" value="debian"/>
    <Probe name="role" value="web&#10;"/>
    <Group name="webserver"/>
    <Group name="bad group"/>
  </Client>
  <Client name="db1.example.com" timestamp="1700000000">
    <Probe name="../etc" value="x"/>
    <Probe name="mem" value="4096"/>
  </Client>
  <Client name="../evil" timestamp="1700000000"><Probe name="os" value="x"/></Client>
</Probed>
"""
CLIENTS = """\
<Clients version="3.0">
  <Client name="web1.example.com" profile="web" version="1.4.0" address="10.0.0.1"/>
  <Client name="DB1.example.com" profile="db"/>
</Clients>
"""


def test_upstreams_probed_xml_and_clients_xml_are_imported(
        repo: Repo, tmp_path: Path, capsys, storage_engine: str, store_database,
        request: pytest.FixtureRequest) -> None:
    probed = tmp_path / "probed.xml"
    probed.write_text(PROBED)
    clients_xml = tmp_path / "clients.xml"
    clients_xml.write_text(CLIENTS)
    database = request.getfixturevalue("pg_database").overrides \
        if storage_engine == "postgresql" else None
    args = conf(tmp_path, repo, database)
    words = ("dbcopy", "--from", "xml", "--probed", str(probed), "--clients", str(clients_xml))
    status, out, _ = admin_run(capsys, *args, *words)
    assert status == 0
    assert "probes: imported 2 clients from" in out and "(3 left out)" in out
    assert "'../evil' is not a valid client name" in out
    assert "clients: imported 2 clients from" in out
    state = tmp_path / "state"

    def stored() -> tuple[Any, ...]:
        store = probes.DatabaseStore(str(state / "Probes" / "probes.sqlite"), store_database())
        client_state = clientstate.ClientState(clientstate.database_path(str(state)),
                                               store_database())
        try:
            return (store.load("web1.example.com"), store.load("db1.example.com"),
                    store.load("../evil"), client_state.load())
        finally:
            store.close()
            client_state.close()

    expected = (({"os": "debian", "role": "web\n"}, ["webserver"]), ({"mem": "4096"}, []),
                ({}, []), {"web1.example.com": {"profile": "web", "version": "1.4.0"},
                           "db1.example.com": {"profile": "db"}})
    assert stored() == expected
    status, _, err = admin_run(capsys, *args, *words)
    assert status == 1 and "--force" in one_error_line(err)
    assert admin_run(capsys, *args, *words, "--force")[0] == 0
    assert stored() == expected  # replaced, never duplicated
    status, _, err = admin_run(capsys, *args, "dbcopy", "--from", "xml", "--probed",
                               str(tmp_path / "missing.xml"))
    assert status == 1 and "missing.xml: cannot be read" in one_error_line(err)
    probed.write_text("<Probed><Client name='x'>")
    status, _, err = admin_run(capsys, *args, "dbcopy", "--from", "xml", "--probed",
                               str(probed), "--force")
    assert status == 1 and "probed.xml" in one_error_line(err)
    assert stored() == expected  # a broken file changes nothing

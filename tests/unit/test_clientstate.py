"""The client state database: one row per client, and the import of an earlier state file."""

from __future__ import annotations

import os
import sqlite3

from conftest import state_clients

from bcfg2.clientstate import ClientState, database_path

#: the client state file as the server wrote it before schema versions existed
TODAYS_LAYOUT = """
CREATE TABLE IF NOT EXISTS clients (
    name TEXT PRIMARY KEY,
    profile TEXT,
    trusted_profile TEXT,
    repository_profile TEXT,
    version TEXT,
    auth TEXT,
    registered REAL NOT NULL
);
INSERT INTO clients (name, profile, version, registered) VALUES ('old', 'basic', '1.3', 5.5);
"""


def test_each_change_writes_one_row(tmp_path, store_database) -> None:
    store = ClientState(database_path(str(tmp_path)), store_database())
    for n in range(500):
        store.update(f"host{n}", {"profile": "basic", "trusted_profile": "basic"})
    store.update("host7", {"version": "1.4.0"})
    assert store.load(["host7"]) == {"host7": {"profile": "basic", "trusted_profile": "basic",
                                               "version": "1.4.0"}}
    assert len(store.load()) == 500
    assert store.remove("host7") and not store.remove("host7")
    store.close()
    again = ClientState(database_path(str(tmp_path)), store_database())  # a restart
    assert len(again.load()) == 499 and "host7" not in again.load()
    again.close()


def test_a_state_file_of_the_layout_before_schema_versions_is_stamped_as_version_1_then_migrated(
        tmp_path) -> None:
    path = database_path(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with sqlite3.connect(path) as conn:
        conn.executescript(TODAYS_LAYOUT)
    layout = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master "
                                           "WHERE name = 'clients'").fetchone()
    store = ClientState(path)
    assert store.load() == {"old": {"profile": "basic", "version": "1.3"}}
    store.update("old", {"version": "1.4.0"})
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM schema_versions").fetchall() == [("clients", 2)]
        # the old columns kept as they were; migration 2 added the pinned one
        assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'clients'").fetchone()[
            0].replace(", pinned TEXT", "") == layout[0]
        assert conn.execute("SELECT version, registered FROM clients").fetchall() == [
            ("1.4.0", 5.5)]


def test_servers_sharing_postgresql_see_each_others_clients(tmp_path, pg_database) -> None:
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    one = ClientState(database_path(str(tmp_path / "one")),
                      PostgreSQLDatabase(pg_database.settings()))
    two = ClientState(database_path(str(tmp_path / "two")),
                      PostgreSQLDatabase(pg_database.settings()))
    one.update("newcomer", {"profile": "basic"})
    assert two.load(["newcomer"]) == {"newcomer": {"profile": "basic"}}
    assert two.remove("newcomer") and one.load() == {}
    one.close()
    two.close()
    assert not (tmp_path / "one").exists()  # no SQLite file on the side
    # (with the cache events store, whose client generations its writes bump)
    assert sorted(pg_database.query("SELECT store, version FROM schema_versions")) == [
        ("cache_events", 1), ("clients", 2)]


def test_the_state_file_of_an_earlier_version_is_imported_once(tmp_path) -> None:
    legacy = tmp_path / "Metadata" / "clients.xml"
    legacy.parent.mkdir()
    legacy.write_text(
        '<Clients version="3.0">'
        '<Client name="New.example.com" profile="basic" repository_profile="" version="1.4"/>'
        f'<Client name="big.example.com" profile="basic" version="{"9" * 5000}"/>'
        '<Client name="boot" auth="cert" bogus="x"/></Clients>')
    ClientState(database_path(str(tmp_path))).close()  # as the server opens it at start
    assert state_clients(tmp_path) == {
        "new.example.com": {"profile": "basic", "repository_profile": "", "version": "1.4"},
        "big.example.com": {"profile": "basic"},  # a value no server would write is dropped
        "boot": {"auth": "cert"},
    }
    assert not legacy.exists() and legacy.with_name("clients.xml.imported").exists()
    legacy.write_text('<Clients version="3.0"><Client name="late" profile="x"/></Clients>')
    ClientState(database_path(str(tmp_path))).close()
    assert "late" not in state_clients(tmp_path)  # only when the database is created


def test_a_tool_marks_its_change_for_the_running_server(tmp_path) -> None:
    store = ClientState(database_path(str(tmp_path)))
    store.mark_changed()
    assert (tmp_path / "Metadata" / "state.sqlite.changed").read_text().strip()
    store.close()

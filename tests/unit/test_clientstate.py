"""The client state database: one row per client, and the import of an earlier state file."""

from __future__ import annotations

import sqlite3

from conftest import state_clients

from bcfg2.clientstate import ClientState, database_path


def test_each_change_writes_one_row(tmp_path) -> None:
    store = ClientState(database_path(str(tmp_path)))
    for n in range(500):
        store.update(f"host{n}", {"profile": "basic", "trusted_profile": "basic"})
    store.update("host7", {"version": "1.4.0"})
    assert store.load(["host7"]) == {"host7": {"profile": "basic", "trusted_profile": "basic",
                                               "version": "1.4.0"}}
    assert len(store.load()) == 500
    assert store.remove("host7") and not store.remove("host7")
    store.close()
    with sqlite3.connect(database_path(str(tmp_path))) as conn:
        assert conn.execute("SELECT count(*) FROM clients").fetchone() == (499,)


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

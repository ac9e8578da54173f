"""The storage layer's contract, run against both engines: SQLite and a real PostgreSQL.

Migrations (fresh, stepwise, refused when the database is newer, all or
nothing), transactions (a failure rolls back; concurrent writers from
threads lose nothing), the common SQL dialect, and for PostgreSQL what a
lost connection does: retried before COMMIT, never after.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bcfg2.errors import CommitUncertainError, ConfigError, SchemaTooNewError, StorageError
from bcfg2.storage import (
    Database,
    Migration,
    Schema,
    SQLiteDatabase,
    Transaction,
    migrate,
    migrated,
    open_database,
    status,
)
from bcfg2.storage.base import to_pyformat

ENGINES = ("sqlite", "postgresql")

V1 = Migration(1, "notes", statements=(
    # no IF NOT EXISTS: running it twice would fail
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
))
V2 = Migration(
    2, "note authors and a counter",
    tables=("CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL, at {real})",),
    statements=("ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'nobody'",))
SCHEMA_V1 = Schema("contract", (V1,))
SCHEMA_V2 = Schema("contract", (V1, V2))


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opened(engine: str, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[Callable[[], Database]]:
    """Factory: a new handle on the test's one database (a file, or a PostgreSQL database)."""
    handles: list[Database] = []
    if engine == "postgresql":
        from bcfg2.storage.postgresql import PostgreSQLDatabase

        pg = request.getfixturevalue("pg_database")

        def make() -> Database:
            handles.append(PostgreSQLDatabase(pg.settings()))
            return handles[-1]
    else:
        def make() -> Database:
            handles.append(SQLiteDatabase(str(tmp_path / "store.sqlite")))
            return handles[-1]
    yield make
    for handle in handles:
        handle.close()


@pytest.fixture
def db(opened: Callable[[], Database]) -> Database:
    return opened()


def notes(db: Database) -> list[str]:
    return sorted(row[0] for row in db.run(lambda tx: tx.execute("SELECT body FROM notes")))


# -- migrations --------------------------------------------------------------------------

def test_a_fresh_database_gets_every_migration_and_its_version(db: Database) -> None:
    before = migrate(db, SCHEMA_V2)
    assert (before.current, before.latest, before.pending) == (0, 2, 2)
    assert status(db, SCHEMA_V2).pending == 0
    db.run(lambda tx: tx.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (1, "hello")),
           write=True)
    assert db.run(lambda tx: tx.execute("SELECT body, author FROM notes").rows) == [
        ("hello", "nobody")]
    assert db.run(lambda tx: tx.execute(
        "SELECT store, version FROM schema_versions").rows) == [("contract", 2)]
    assert migrate(db, SCHEMA_V2).pending == 0  # again: nothing to do, nothing run twice


def test_migrations_apply_stepwise_keeping_the_data(db: Database) -> None:
    assert status(db, SCHEMA_V1).current == 0
    migrate(db, SCHEMA_V1)
    db.run(lambda tx: tx.execute("INSERT INTO notes (id, body) VALUES (1, ?)", ("kept",)),
           write=True)
    assert status(db, SCHEMA_V2).pending == 1
    step = migrate(db, SCHEMA_V2)
    assert (step.current, step.latest) == (1, 2)
    assert db.run(lambda tx: tx.execute("SELECT body, author FROM notes").rows) == [
        ("kept", "nobody")]


def test_a_database_newer_than_the_code_is_refused_untouched(db: Database) -> None:
    migrate(db, SCHEMA_V2)
    with pytest.raises(SchemaTooNewError, match=r"version 2.*up to 1"):
        migrate(db, SCHEMA_V1)
    assert status(db, SCHEMA_V2).current == 2


def test_a_failing_migration_changes_nothing(db: Database) -> None:
    migrate(db, SCHEMA_V1)
    broken = Schema("contract", (V1, Migration(2, "half", statements=(
        "CREATE TABLE half (x INTEGER)", "CREATE TABLE notes (x INTEGER)"))))
    with pytest.raises(StorageError):
        migrate(db, broken)
    assert status(db, SCHEMA_V1).current == 1
    assert not db.run(lambda tx: tx.table_exists("half"))


def test_migrations_must_be_numbered_in_order() -> None:
    with pytest.raises(ValueError, match="numbered"):
        Schema("x", (Migration(2, "two"),))


def test_two_servers_starting_at_once_migrate_once(opened: Callable[[], Database]) -> None:
    handles = [opened() for _ in range(4)]
    barrier = threading.Barrier(len(handles))
    outcomes: list[object] = []

    def start(handle: Database) -> None:
        barrier.wait()
        try:
            outcomes.append(migrate(handle, SCHEMA_V2).current)
        except Exception as err:  # noqa: BLE001 - the test reports it
            outcomes.append(err)

    threads = [threading.Thread(target=start, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes, key=str) == [0, 2, 2, 2]  # one migrated from 0, three found 2


# -- transactions ------------------------------------------------------------------------

def test_a_transaction_that_raises_stores_nothing(db: Database) -> None:
    migrate(db, SCHEMA_V2)

    def half(tx: Transaction) -> None:
        tx.execute("INSERT INTO notes (id, body) VALUES (1, ?)", ("lost",))
        raise ValueError("half way")

    with pytest.raises(ValueError):
        db.run(half, write=True)
    with pytest.raises(ValueError), db.transaction(write=True) as tx:
        half(tx)
    with pytest.raises(StorageError):  # a statement the database refuses
        db.run(lambda tx: (tx.execute("INSERT INTO notes (id, body) VALUES (2, 'x')"),
                           tx.execute("INSERT INTO notes (id, body) VALUES (2, 'y')")),
               write=True)
    assert notes(db) == []
    db.run(lambda tx: tx.execute("INSERT INTO notes (id, body) VALUES (3, ?)", ("fine",)),
           write=True)
    assert notes(db) == ["fine"]


def test_concurrent_writers_from_threads_lose_nothing(opened: Callable[[], Database]) -> None:
    """Read-modify-write under ``lock``: every increment counts, on either engine."""
    first = opened()
    migrate(first, SCHEMA_V2)
    first.run(lambda tx: tx.execute("INSERT INTO counters (name, n) VALUES ('c', 0)"),
              write=True)
    handles = [first, opened()]  # two handles: two connections, as two processes have
    threads_n, each = 8, 15
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def bump(tx: Transaction, worker: int, step: int) -> None:
        tx.lock("counter c")
        n = tx.execute("SELECT n FROM counters WHERE name = 'c'").scalar()
        tx.execute("UPDATE counters SET n = ? WHERE name = 'c'", (n + 1,))
        tx.execute("INSERT INTO notes (id, body) VALUES (?, ?)",
                   (worker * 1000 + step, f"w{worker}s{step}"))

    def writer(worker: int) -> None:
        barrier.wait()
        try:
            for step in range(each):
                handles[worker % 2].run(lambda tx, s=step: bump(tx, worker, s), write=True)
        except BaseException as err:  # noqa: BLE001 - the test reports it
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert first.run(lambda tx: tx.execute(
        "SELECT n FROM counters WHERE name = 'c'").scalar()) == threads_n * each
    assert len(notes(first)) == threads_n * each


def test_the_common_dialect(db: Database) -> None:
    migrate(db, SCHEMA_V2)

    def work(tx: Transaction) -> tuple:
        tx.executemany("INSERT INTO counters (name, n, at) VALUES (?, ?, ?)",
                       ((f"k{i}", i, 1_700_000_000.123456) for i in range(3)))
        tx.execute("INSERT INTO counters (name, n) VALUES ('k1', 10) ON CONFLICT (name) "
                   "DO UPDATE SET n = counters.n + excluded.n")
        skipped = tx.execute("INSERT INTO counters (name, n) VALUES ('k2', 99) "
                             "ON CONFLICT (name) DO NOTHING").rowcount
        new_id = tx.execute("INSERT INTO notes (id, body) VALUES (7, ?) RETURNING id",
                            ("a 100% literal",)).scalar()
        return (skipped, new_id,
                tx.execute("SELECT name, n, at FROM counters WHERE name <> ?", ("k0",)).rows,
                tx.execute("SELECT ? || '%'", ("50",)).scalar())

    skipped, new_id, rows, percent = db.run(work, write=True)
    assert (skipped, new_id, percent) == (0, 7, "50%")
    assert sorted(rows) == [("k1", 11, 1_700_000_000.123456), ("k2", 2, 1_700_000_000.123456)]


def test_a_question_mark_inside_a_literal_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="pass it as a parameter"):
        db.run(lambda tx: tx.execute("SELECT 'why?'"))
    with pytest.raises(ValueError, match="comments"):
        db.run(lambda tx: tx.execute("SELECT 1 -- ?"))
    assert to_pyformat("SELECT a FROM t WHERE b = ? AND c = 'it''s 5%'") == \
        "SELECT a FROM t WHERE b = %s AND c = 'it''s 5%%'"


# -- SQLite ------------------------------------------------------------------------------

def test_sqlite_keeps_its_file_in_wal_mode_private(tmp_path: Path) -> None:
    db = SQLiteDatabase(str(tmp_path / "new" / "store.sqlite"))
    migrate(db, SCHEMA_V1)
    db.close()
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    with sqlite3.connect(tmp_path / "new" / "store.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_file_that_cannot_be_opened_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot be opened"):
        SQLiteDatabase(str(tmp_path / "file" / "store.sqlite"))


# -- PostgreSQL: lost connections, settings, the missing driver --------------------------

@pytest.fixture
def pg(pg_database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    from bcfg2.storage import postgresql

    monkeypatch.setattr(postgresql, "BACKOFF", 0.01)
    db = postgresql.PostgreSQLDatabase(pg_database.settings())
    migrate(db, SCHEMA_V2)
    yield db
    db.close()


def test_work_cut_off_by_a_killed_backend_is_done_again(pg: Database, pg_database,
                                                        caplog) -> None:
    calls = []

    def work(tx: Transaction) -> None:
        calls.append(tx.backend_pid())
        tx.execute("INSERT INTO notes (id, body) VALUES (1, ?)", ("once",))
        if len(calls) == 1:
            pg_database.terminate(tx.backend_pid())  # from a second connection
        tx.execute("SELECT 1")

    with caplog.at_level(logging.WARNING, logger="bcfg2.storage"):
        pg.run(work, write=True)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert notes(pg) == ["once"]
    assert "trying again" in caplog.text and "(1 of " in caplog.text


def test_idle_pooled_connections_killed_by_a_restart_are_replaced(pg: Database, pg_database,
                                                                  caplog) -> None:
    notes(pg)
    assert pg_database.terminate_others() >= 1
    pg.run(lambda tx: tx.execute("INSERT INTO notes (id, body) VALUES (2, 'after')"),
           write=True)
    assert notes(pg) == ["after"]


def test_retries_are_bounded(pg: Database, pg_database) -> None:
    from bcfg2.storage.postgresql import RETRIES

    calls = []

    def doomed(tx: Transaction) -> None:
        calls.append(1)
        pg_database.terminate(tx.backend_pid())
        tx.execute("SELECT 1")

    with pytest.raises(StorageError) as failed:
        pg.run(doomed, write=True)
    assert not isinstance(failed.value, CommitUncertainError)
    assert len(calls) == RETRIES + 1


def test_a_connection_lost_during_commit_is_never_retried(pg: Database, pg_database,
                                                          monkeypatch) -> None:
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    real_commit = PostgreSQLDatabase._commit
    cut = [True]  # the next COMMIT to cut off

    def lost(self, conn) -> None:
        if cut and cut.pop():
            pg_database.terminate(conn.info.backend_pid)  # the backend dies as COMMIT leaves
        real_commit(self, conn)

    monkeypatch.setattr(PostgreSQLDatabase, "_commit", lost)
    calls = []

    def work(tx: Transaction) -> None:
        calls.append(1)
        tx.execute("INSERT INTO notes (id, body) VALUES (3, 'unknown')")

    with pytest.raises(CommitUncertainError, match="may or may not be stored"):
        pg.run(work, write=True)
    assert len(calls) == 1
    assert notes(pg) == []  # this time it was lost; the caller was told it might be

    def read(tx: Transaction) -> int:  # a read has nothing to lose: it is done again
        calls.append(1)
        if len(calls) == 2:
            pg_database.terminate(tx.backend_pid())
        return tx.execute("SELECT 5").scalar()

    assert pg.run(read) == 5
    assert len(calls) == 3


def test_a_read_is_no_transaction_and_takes_no_lock(pg: Database, monkeypatch) -> None:
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    commits = []
    monkeypatch.setattr(PostgreSQLDatabase, "_commit", lambda self, conn: commits.append(1))
    assert pg.run(lambda tx: tx.execute("SELECT 7").scalar()) == 7
    assert commits == []
    with pytest.raises(StorageError, match="outside a write transaction"):
        pg.run(lambda tx: tx.lock("anything"))


def test_a_read_transaction_cannot_write(pg: Database) -> None:
    with pytest.raises(StorageError, match="read-only"):
        pg.run(lambda tx: tx.execute("INSERT INTO notes (id, body) VALUES (9, 'no')"))
    assert notes(pg) == []


def test_the_password_is_never_shown(pg_database, monkeypatch, caplog) -> None:
    from bcfg2.storage import postgresql

    monkeypatch.setattr(postgresql, "POOL_WAIT", 1.0)
    settings = pg_database.settings(password="wrong-Secret-123")
    assert "wrong-Secret-123" not in repr(settings) + settings.describe()
    db = postgresql.PostgreSQLDatabase(settings)
    with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as failed:
        migrate(db, SCHEMA_V1)
    db.close()
    assert "wrong-Secret-123" not in str(failed.value) + caplog.text
    assert pg_database.name in str(failed.value)


def test_database_options_are_libpq_keywords(pg_database, tmp_path) -> None:
    from conftest import make_setup

    setup = make_setup(tmp_path, **pg_database.overrides,
                       database__options="application_name=bcfg2-test, connect_timeout=5")
    db = open_database(setup, str(tmp_path / "unused.sqlite"), SCHEMA_V1)
    try:
        assert db.engine == "postgresql"
        assert db.run(lambda tx: tx.execute("SELECT current_setting('application_name')")
                      .scalar()) == "bcfg2-test"
    finally:
        db.close()
    assert not (tmp_path / "unused.sqlite").exists()
    with pytest.raises(ConfigError, match="keyword=value"):
        open_database(make_setup(tmp_path, **pg_database.overrides,
                                 database__options="sslmode"), "x", SCHEMA_V1)


def test_a_missing_driver_is_one_line_naming_the_package(tmp_path, monkeypatch) -> None:
    from conftest import make_setup

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError) as failed:
        open_database(make_setup(tmp_path, database__engine="postgresql"), "x", SCHEMA_V1)
    message = str(failed.value)
    assert "\n" not in message and "pip install 'psycopg[binary]' psycopg-pool" in message


def test_a_store_whose_migration_is_refused_lets_go_of_its_database(tmp_path: Path) -> None:
    """migrated() closes the database it could not bring up to date: a store that fails
    to start holds no file open (the daemon's file descriptors, a test's cleanup)."""
    path = tmp_path / "store.sqlite"

    def open_files() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path)
                   for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))

    newer = SQLiteDatabase(str(path))
    migrate(newer, SCHEMA_V2)
    newer.close()
    db = SQLiteDatabase(str(path))
    with pytest.raises(SchemaTooNewError):
        migrated(db, SCHEMA_V1)
    assert open_files() == 0
    again = migrated(SQLiteDatabase(str(path)), SCHEMA_V2)  # the file is sound
    again.close()

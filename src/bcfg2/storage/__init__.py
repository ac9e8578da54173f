"""One storage layer for what the server learns at run time, with two engines.

Client registrations and profiles (``bcfg2.clientstate``), probe data and
probe groups (the Probes plugin), client runs (``bcfg2.reportdb``) and,
on PostgreSQL, the fleet's generated keys (``bcfg2.generated``) are each a
store: a ``Schema`` of numbered migrations and code that reads and
writes through a ``Database``. ``[database] engine`` chooses where:

- ``sqlite`` (the default; ``sqlite3``, upstream's name, is the same): one
  file per store under ``[server] state_dir``, as before schema versions
  existed (``bcfg2.storage.sqlite``);
- ``postgresql``: every store in one PostgreSQL database, which several
  servers may share (``bcfg2.storage.postgresql``; needs psycopg 3 and
  psycopg-pool).

SQL is written once (see ``bcfg2.storage.base`` for the dialect and its two
rules); migrations are applied when a store opens, or by hand with
``bcfg2-admin dbmigrate``. Errors (``bcfg2.errors``)::

    StorageError                  the transaction was rolled back: nothing was stored
    +-- CommitUncertainError      the connection was lost during COMMIT: maybe stored
    +-- SchemaTooNewError         the database was migrated by a newer server
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bcfg2.errors import CommitUncertainError, ConfigError, SchemaTooNewError, StorageError
from bcfg2.storage.base import ENGINES, Database, Result, Transaction
from bcfg2.storage.migrations import Migration, Schema, Status, migrate, migrated, status
from bcfg2.storage.sqlite import SQLiteDatabase

if TYPE_CHECKING:
    from bcfg2.options import Setup

#: upstream's engine names, as ours
ALIASES = {"sqlite3": "sqlite", "postgresql": "postgresql", "sqlite": "sqlite"}


def engine_of(setup: Setup | None) -> str:
    """The engine ``[database] engine`` names (sqlite without a Setup)."""
    if setup is None or not hasattr(setup, "database"):
        return "sqlite"
    name = str(setup.database.engine or "sqlite").strip().lower()
    if name not in ALIASES:
        raise ConfigError(f"[database] engine: {name!r} is not one of {', '.join(ENGINES)}")
    return ALIASES[name]


def open_database(setup: Setup | None, path: str, schema: Schema) -> Database:
    """The database a store with this schema uses under this configuration.

    ``path`` is the store's SQLite file (used with the sqlite engine); with
    postgresql every store shares the process's pool of ``[database]``.
    """
    if engine_of(setup) == "sqlite":
        return SQLiteDatabase(path, schema.sqlite_pragmas)
    from bcfg2.storage.postgresql import PostgreSQLDatabase, Settings

    assert setup is not None
    return PostgreSQLDatabase(Settings.from_setup(setup))


__all__ = [
    "ENGINES",
    "CommitUncertainError",
    "Database",
    "Migration",
    "Result",
    "SQLiteDatabase",
    "Schema",
    "SchemaTooNewError",
    "Status",
    "StorageError",
    "Transaction",
    "engine_of",
    "migrate",
    "migrated",
    "open_database",
    "status",
]

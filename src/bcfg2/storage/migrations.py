"""Schema versions: each store's numbered migrations, applied once, in order, at start-up.

A store declares a ``Schema``: its name and its migrations, numbered from
1. The table ``schema_versions(store, version)`` records the last one
applied to the database. ``migrate`` applies the pending ones in one
transaction, after taking a lock every server sharing the database waits
for (SQLite's write lock; a PostgreSQL advisory lock), so two servers
starting at once migrate once. A database whose version is newer than the
code's is refused (``SchemaTooNewError``): an older server must not write
into tables it does not understand.

Migration 1 of each store is the layout its tables had before schema
versions existed, written with ``CREATE TABLE IF NOT EXISTS``: a database
of that layout is stamped as version 1 and otherwise left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bcfg2.errors import SchemaTooNewError
from bcfg2.storage.base import Database, Transaction

#: where the applied versions are kept (one row per store)
VERSIONS_TABLE = "schema_versions"
#: the lock every server takes before it looks at or changes the versions
MIGRATION_LOCK = "bcfg2.schema_versions"


@dataclass(frozen=True)
class Migration:
    """One step of a store's schema.

    Its statements run in this order: those for the engine at hand
    (``sqlite`` or ``postgresql``: what the engines spell differently, such
    as autoincrement keys or a double-precision column), then the common
    ones, then ``apply`` (for what SQL alone cannot say, such as looking at
    the columns an older file has).
    """

    version: int
    description: str
    statements: tuple[str, ...] = ()
    sqlite: tuple[str, ...] = ()
    postgresql: tuple[str, ...] = ()
    apply: Callable[[Transaction], None] | None = None

    def run(self, tx: Transaction) -> None:
        """Apply this step inside ``tx``."""
        for sql in (*getattr(self, tx.engine), *self.statements):
            tx.execute(sql)
        if self.apply is not None:
            self.apply(tx)


@dataclass(frozen=True)
class Schema:
    """A store's tables: its name in ``schema_versions`` and its migrations, in order.

    ``sqlite_pragmas`` are the settings each SQLite connection to the store's
    file gets (they belong to a connection, not to the schema).
    """

    store: str
    migrations: tuple[Migration, ...]
    sqlite_pragmas: tuple[str, ...] = field(default=("synchronous=FULL",))

    def __post_init__(self) -> None:
        numbers = [m.version for m in self.migrations]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"store {self.store}: migrations must be numbered 1, 2, ... "
                             f"in order, not {numbers}")

    @property
    def latest(self) -> int:
        """The version this code writes."""
        return len(self.migrations)


@dataclass(frozen=True)
class Status:
    """Where a store's schema stands in one database."""

    store: str
    #: the version applied (0: none yet)
    current: int
    #: the version the code knows
    latest: int

    @property
    def pending(self) -> int:
        """How many migrations are not applied yet."""
        return max(self.latest - self.current, 0)


def _current(tx: Transaction, store: str) -> int:
    if not tx.table_exists(VERSIONS_TABLE):
        return 0
    found = tx.execute(f"SELECT version FROM {VERSIONS_TABLE} WHERE store = ?",
                       (store,)).scalar()
    return int(found or 0)


def _refuse_newer(schema: Schema, current: int, db: Database) -> None:
    if current > schema.latest:
        raise SchemaTooNewError(
            f"{db.describe()}: the {schema.store} tables are at schema version {current}, "
            f"but this server knows versions up to {schema.latest}: a newer server has "
            f"migrated them; run that version (or restore a backup made before)")


def status(db: Database, schema: Schema) -> Status:
    """The store's applied and latest versions, read without changing anything."""
    current = db.run(lambda tx: _current(tx, schema.store))
    return Status(schema.store, current, schema.latest)


def migrate(db: Database, schema: Schema) -> Status:
    """Apply the store's pending migrations in one transaction; where it stood before.

    Raises SchemaTooNewError (changing nothing) if the database is newer than
    the code.
    """
    def work(tx: Transaction) -> Status:
        tx.lock(MIGRATION_LOCK)
        tx.execute(f"CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} "
                   "(store TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        current = _current(tx, schema.store)
        _refuse_newer(schema, current, db)
        for migration in schema.migrations[current:]:
            migration.run(tx)
        if current != schema.latest:
            tx.execute(f"INSERT INTO {VERSIONS_TABLE} (store, version) VALUES (?, ?) "
                       "ON CONFLICT (store) DO UPDATE SET version = excluded.version",
                       (schema.store, schema.latest))
        return Status(schema.store, current, schema.latest)

    return db.run(work, write=True)

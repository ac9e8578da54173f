"""What every engine provides: a Database, its transactions, and what a statement returns.

SQL is written once, in a dialect both engines understand: ``?``
placeholders, ``INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE``,
``RETURNING``, and the types TEXT, INTEGER and BIGINT. What the engines
spell differently (an autoincrement key, a double-precision float) goes in
a migration's per-engine statements (``bcfg2.storage.migrations``).

Two rules keep the placeholder translation for PostgreSQL exact: a ``?``
never appears inside a quoted string or identifier (pass the value as a
parameter instead; ``check_sql`` refuses it), and statements carry no SQL
comments.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: the engines there are, by the name ``[database] engine`` gives them
ENGINES = ("sqlite", "postgresql")


class Result:
    """The rows one statement returned (all of them, fetched) and the rows it changed."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        #: rows inserted, updated or deleted (-1 where the engine does not say, as for a SELECT)
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def one(self) -> tuple[Any, ...] | None:
        """The first row, or None if there is none."""
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        """The first column of the first row, or None if there is no row."""
        return self.rows[0][0] if self.rows else None


def _pieces(sql: str) -> Iterator[tuple[bool, str]]:
    """``sql`` cut into (quoted, text) pieces: string literals and quoted identifiers apart."""
    start, quote = 0, ""
    for index, char in enumerate(sql):
        if not quote and char in "'\"":
            yield False, sql[start:index]
            start, quote = index, char
        elif char == quote:
            yield True, sql[start:index + 1]
            start, quote = index + 1, ""
    if quote:
        raise ValueError(f"unterminated quote in SQL: {sql!r}")
    yield False, sql[start:]


def check_sql(sql: str) -> None:
    """Refuse SQL the placeholder translation could get wrong (see the module's rules)."""
    for quoted, text in _pieces(sql):
        if quoted and "?" in text:
            raise ValueError(f"'?' inside a quoted string or identifier: pass it as a "
                             f"parameter instead: {sql!r}")
        if not quoted and ("--" in text or "/*" in text):
            raise ValueError(f"no SQL comments in statements: {sql!r}")


def to_pyformat(sql: str) -> str:
    """The common dialect's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    check_sql(sql)
    return "".join(text.replace("%", "%%") if quoted
                   else text.replace("%", "%%").replace("?", "%s")
                   for quoted, text in _pieces(sql))


def lock_key(name: str) -> int:
    """A stable signed 64-bit number for a lock's name (PostgreSQL advisory locks take one)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Transaction(abc.ABC):
    """One transaction: statements in the common dialect, committed together or not at all."""

    #: the engine's name, for the few places (migrations) that must know it
    engine: str

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement; its rows (all fetched) and row count."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row (the rows may be a generator)."""

    @abc.abstractmethod
    def table_exists(self, name: str) -> bool:
        """Whether a table of that name exists (in the current schema)."""

    @abc.abstractmethod
    def lock(self, name: str) -> None:
        """Hold a lock named ``name`` until this transaction ends.

        Every server sharing the database waits for it: two servers never do
        the work it guards at once. On SQLite a write transaction already
        excludes every other writer, so this costs nothing there.
        """


class Database(abc.ABC):
    """Where stores keep their tables: one engine, transactions per call.

    ``run(work, write)`` is what stores use: it calls ``work(transaction)``
    and commits, and if the connection was lost before COMMIT went out it
    calls ``work`` again on a new one (a bounded number of times), so
    ``work`` must only touch the database. ``transaction()`` is the same
    without the retry, for code that cannot be re-run.
    """

    engine: str

    @abc.abstractmethod
    def transaction(self, write: bool = False) -> contextlib.AbstractContextManager[Transaction]:
        """One transaction, committed when the block ends, rolled back if it raises.

        ``write`` says the transaction writes: SQLite then takes the write
        lock at once (``BEGIN IMMEDIATE``) rather than failing half way.
        """

    @abc.abstractmethod
    def run(self, work: Callable[[Transaction], T], write: bool = False) -> T:
        """``work`` in one transaction, retried after a connection lost before COMMIT."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the connection (or this handle's share of the pool)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the database is, for messages: a path or a URL, never a password."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

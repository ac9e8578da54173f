"""The shared engine: every store in one PostgreSQL database, for several servers at once.

psycopg 3 with psycopg-pool, imported only when ``[database] engine =
postgresql`` is chosen. A server process holds one pool, made at its first
transaction and shared by every store (a multiprocessing child, started
fresh, makes its own; a forked process drops the one it inherited).

A transaction is one call of ``run``. If the connection is lost before
COMMIT is sent (the server restarted, the backend was terminated, the
network broke) or PostgreSQL rolled the transaction back to break a
deadlock, the work is done again on a new connection, up to ``RETRIES``
times with a growing pause, each retry logged. If the connection is lost
while COMMIT is on its way, nobody knows whether the change was stored:
that is never retried, and ``CommitUncertainError`` goes up to the caller,
so an agent gets a Fault rather than an acknowledgement of a write that may
be lost. The password is given to libpq apart from everything that is
logged and never appears in a message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bcfg2 import metrics
from bcfg2.errors import CommitUncertainError, ConfigError, StorageError
from bcfg2.storage.base import Database, Result, Transaction, lock_key, to_pyformat

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

    from bcfg2.options import Setup

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: how often lost work is tried again, and the first pause (doubled each time), in seconds
RETRIES = 4
BACKOFF = 0.1
#: how long a transaction waits for a connection from the pool, in seconds
POOL_WAIT = 10.0
#: how long it waits while the server is known to be unreachable (the last wait came to
#: nothing), so that during an outage each call fails at once instead of holding a
#: request for POOL_WAIT; the first that gets a connection ends the outage
OUTAGE_WAIT = 0.5
#: one libpq connection parameter name (``[database] options``)
KEYWORD = re.compile(r"[a-z_]{1,64}")
INSTALL = "pip install 'psycopg[binary]' psycopg-pool"
#: the session setting of every pooled connection (libpq's ``options`` parameter)
READ_ONLY_SESSION = "-c default_transaction_read_only=on"


def _modules() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, or a one-line error saying what to install."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as err:
        raise ConfigError(f"[database] engine = postgresql needs psycopg 3 and psycopg-pool "
                          f"({err}): {INSTALL}") from None
    return psycopg, psycopg_pool


def parse_options(text: str) -> tuple[tuple[str, str], ...]:
    """``[database] options``: comma-separated ``key=value`` libpq connection parameters."""
    found: list[tuple[str, str]] = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        key, sep, value = word.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not KEYWORD.fullmatch(key):
            raise ConfigError(f"[database] options: {word.partition('=')[0]!r} is not of "
                              f"the form keyword=value (libpq connection parameters, "
                              f"separated by commas)")
        found.append((key, value))
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    """Where the database is and how to log in (``[database]``); the password never shows."""

    name: str = "bcfg2"
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = ""
    port: str = ""
    options: tuple[tuple[str, str], ...] = ()
    pool_size: int = 10

    @classmethod
    def from_setup(cls, setup: Setup) -> Settings:
        db = setup.database
        port = str(db.port or "").strip()
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"[database] port: {port!r} is not a port number")
        if int(db.pool_size) < 1:
            raise ConfigError("[database] pool_size must be at least 1")
        return cls(name=str(db.name or ""), user=str(db.user or ""),
                   password=str(db.password or ""), host=str(db.host or ""), port=port,
                   options=parse_options(str(db.options or "")),
                   pool_size=int(db.pool_size))

    def keywords(self) -> dict[str, str]:
        """The libpq connection parameters (the empty ones left to libpq's defaults)."""
        given = {"dbname": self.name, "user": self.user, "password": self.password,
                 "host": self.host, "port": self.port}
        return {**dict(self.options), **{k: v for k, v in given.items() if v}}

    def describe(self) -> str:
        """The database as a URL without the password, for messages."""
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"postgresql://{user}{self.host or 'localhost'}{port}/{self.name}"


def _first_line(err: BaseException) -> str:
    """An error's message on one line (libpq's run over several), or its class."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _SharedPool:
    """One process's pool for one database, and how many handles use it."""

    def __init__(self, settings: Settings) -> None:
        _, psycopg_pool = _modules()
        self.pid = os.getpid()
        self.users = 0
        keywords = settings.keywords()
        # a statement outside BEGIN READ WRITE cannot write: reads run in autocommit mode
        # (one round trip each, no BEGIN and COMMIT), and stay read-only all the same
        keywords["options"] = " ".join(
            filter(None, (keywords.get("options", ""), READ_ONLY_SESSION)))
        self.pool: psycopg_pool.ConnectionPool = psycopg_pool.ConnectionPool(
            "", kwargs={**keywords, "autocommit": False},
            min_size=1, max_size=settings.pool_size, timeout=POOL_WAIT,
            name=f"bcfg2-{os.getpid()}", open=True)


_POOLS: dict[Settings, _SharedPool] = {}
_POOLS_LOCK = threading.Lock()


def _acquire(settings: Settings) -> _SharedPool:
    with _POOLS_LOCK:
        shared = _POOLS.get(settings)
        if shared is not None and shared.pid != os.getpid():
            shared = None  # inherited through a fork: its connections are the parent's
        if shared is None:
            shared = _POOLS[settings] = _SharedPool(settings)
        shared.users += 1
        return shared


def _release(settings: Settings, shared: _SharedPool) -> None:
    with _POOLS_LOCK:
        shared.users -= 1
        if shared.users > 0 or shared.pid != os.getpid():
            return
        if _POOLS.get(settings) is shared:
            del _POOLS[settings]
    shared.pool.close()


class PostgreSQLTransaction(Transaction):
    """Statements on one pooled connection."""

    engine = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any], write: bool = True) -> None:
        self.conn = conn
        self.write = write

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        with self.conn.cursor() as cursor:
            cursor.execute(to_pyformat(sql), tuple(params))
            rows = cursor.fetchall() if cursor.description is not None else []
            return Result(rows, cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(to_pyformat(sql), (tuple(row) for row in rows))

    def table_exists(self, name: str) -> bool:
        return self.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = "
                            "current_schema() AND tablename = ?", (name,)).one() is not None

    def lock(self, name: str) -> None:
        """A transaction-level advisory lock: released by COMMIT or ROLLBACK."""
        if not self.write:
            raise StorageError(f"advisory lock {name!r} taken outside a write transaction")
        self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    def backend_pid(self) -> int:
        """The server process serving this connection (the tests terminate it)."""
        return int(self.conn.info.backend_pid)


class PostgreSQLDatabase(Database):
    """A handle on the process's pool for one database (``close`` gives its share back)."""

    engine = "postgresql"

    def __init__(self, settings: Settings) -> None:
        self.psycopg, _ = _modules()
        self.settings = settings
        self._shared: _SharedPool | None = None
        self._lock = threading.Lock()
        #: whether the last wait for a connection came to nothing (see OUTAGE_WAIT)
        self._outage = False

    def describe(self) -> str:
        return self.settings.describe()

    def _pool(self) -> psycopg_pool.ConnectionPool:
        """The process's pool, made on first use (or again in a forked process)."""
        with self._lock:
            if self._shared is None or self._shared.pid != os.getpid():
                self._shared = _acquire(self.settings)
            return self._shared.pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._pool()
        wait = OUTAGE_WAIT if self._outage else POOL_WAIT
        try:
            conn = pool.getconn(timeout=wait)
        except self.psycopg.Error as err:
            self._outage = True
            raise StorageError(f"{self.describe()}: no connection within {wait:g} s: "
                               f"{err}") from err
        self._outage = False
        try:
            yield conn
        finally:
            pool.putconn(conn)  # a broken connection is discarded, a dirty one rolled back

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        """Send COMMIT (its own method, so a test can lose the connection right here)."""
        conn.commit()

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> None:
        if not conn.broken and not conn.closed:
            with contextlib.suppress(Exception):
                conn.rollback()

    @contextlib.contextmanager
    def _attempt(self, write: bool) -> Iterator[PostgreSQLTransaction]:
        """One transaction on one connection; the block's own errors go up as they are.

        A write is one transaction (BEGIN READ WRITE); COMMIT is sent when
        the block ends, and if the connection breaks during it, the outcome
        is unknown (CommitUncertainError). A read runs its statements in
        autocommit mode, each read-only by the session's default (PostgreSQL
        refuses a write in it): under READ COMMITTED each statement of a
        transaction sees its own snapshot anyway, so BEGIN and COMMIT would
        only cost two round trips. A read that fails is simply done again.
        """
        with self._connection() as conn:
            conn.autocommit = not write  # the connection is idle: no query is sent
            if not write:
                yield PostgreSQLTransaction(conn, write=False)
                return
            try:
                conn.read_only = False
                yield PostgreSQLTransaction(conn)
            except BaseException:
                self._rollback(conn)
                raise
            try:
                self._commit(conn)
            except self.psycopg.Error as err:
                if write and (conn.broken or conn.closed):
                    raise CommitUncertainError(
                        f"{self.describe()}: the connection was lost during COMMIT; the "
                        f"change may or may not be stored: {err}") from err
                if not write:
                    raise
                self._rollback(conn)
                raise StorageError(f"{self.describe()}: cannot commit: {err}") from err

    def _retryable(self, err: BaseException) -> bool:
        """A lost connection, or a rollback PostgreSQL chose (deadlock, serialization)."""
        psycopg = self.psycopg
        if isinstance(err, psycopg.errors.TransactionRollback):
            return True
        if not isinstance(err, psycopg.OperationalError):
            return False
        return getattr(err, "sqlstate", None) is None \
            or str(err.sqlstate).startswith(("08", "57P"))

    @metrics.timed_storage
    def run(self, work: Callable[[Transaction], T], write: bool = False) -> T:
        attempt = 0
        while True:
            try:
                with self._attempt(write) as tx:
                    return work(tx)
            except self.psycopg.Error as err:
                if attempt >= RETRIES or not self._retryable(err):
                    raise StorageError(f"{self.describe()}: {_first_line(err)}") from err
                pause = BACKOFF * 2 ** attempt
                attempt += 1
                logger.warning("%s: %s; trying again in %.1f s (%d of %d)", self.describe(),
                               _first_line(err), pause, attempt, RETRIES)
                time.sleep(pause)

    @contextlib.contextmanager
    def transaction(self, write: bool = False) -> Iterator[Transaction]:
        """One attempt, not retried: the block cannot be run again from here."""
        try:
            with self._attempt(write) as tx:
                yield tx
        except self.psycopg.Error as err:
            raise StorageError(f"{self.describe()}: {_first_line(err)}") from err

    def dedicated(self) -> psycopg.Connection[Any]:
        """A connection of its own, outside the pool, in autocommit mode (for LISTEN).

        The caller closes it. Raises StorageError (one line, no password) if
        the database cannot be reached.
        """
        try:
            return self.psycopg.connect(**self.settings.keywords(), autocommit=True)
        except self.psycopg.Error as err:
            raise StorageError(f"{self.describe()}: {_first_line(err)}") from err

    def close(self) -> None:
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            _release(self.settings, shared)

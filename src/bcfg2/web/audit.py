"""Admin actions on clients: queued one client at a time, each recorded in the audit log.

The audit log is a store (``bcfg2.storage``: ``<state_dir>/web/audit.sqlite`` or
the shared PostgreSQL database): who asked for what on which client, when,
and how it went (queued, running, done, or failed with the reason).
``Actions`` runs the actions of one client in the order they were asked
for, never two at once (a queue per client, drained by a small pool of
threads; with PostgreSQL also an advisory lock per client, so servers
sharing the database take turns too), so two admins acting at once cannot
interleave.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bcfg2.errors import StorageError
from bcfg2.options import Setup
from bcfg2.storage import (
    Database,
    Migration,
    Schema,
    SQLiteDatabase,
    engine_of,
    migrated,
    open_database,
)

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed")
#: the longest detail and reason stored
MAX_TEXT = 1024

_TABLE = """CREATE TABLE audit (
        id {rowid},
        timestamp {real} NOT NULL,
        username TEXT NOT NULL,
        client TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        finished {real}
    )"""

SCHEMA = Schema("web_audit", (
    Migration(1, "admin actions on clients from the web page",
              tables=(_TABLE,),
              statements=("CREATE INDEX audit_by_client ON audit (client, id)",)),
))


def database_path(setup: Setup) -> str:
    return os.path.join(setup.server.state_dir, "web", "audit.sqlite")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    timestamp: float
    user: str
    client: str
    action: str
    detail: str
    status: str
    reason: str
    finished: float | None


COLUMNS = "id, timestamp, username, client, action, detail, status, reason, finished"


class AuditLog:
    """The audit table."""

    def __init__(self, path: str, database: Database | None = None) -> None:
        if database is None:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.db = migrated(database if database is not None else SQLiteDatabase(
            path, SCHEMA.sqlite_pragmas), SCHEMA)

    @classmethod
    def from_setup(cls, setup: Setup) -> AuditLog:
        path = database_path(setup)
        if engine_of(setup) == "sqlite":
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return cls(path, open_database(setup, path, SCHEMA))

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def client_lock(self, client: str) -> Iterator[None]:
        """Held while an action on ``client`` runs. On PostgreSQL an advisory lock, so that
        the servers sharing the database act on one client one at a time too (the queue
        orders them within a server); SQLite serves one server, whose queue suffices."""
        if self.db.engine != "postgresql":
            yield
            return
        with self.db.transaction(write=True) as tx:  # an advisory lock needs a transaction
            tx.lock(f"bcfg2.web.action:{client}")
            yield

    def add(self, user: str, client: str, action: str, detail: str) -> int:
        return int(self.db.run(lambda tx: tx.execute(
            "INSERT INTO audit (timestamp, username, client, action, detail, status) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (time.time(), user, client, action, detail[:MAX_TEXT], "queued")).scalar(),
            write=True))

    def set_status(self, entry: int, status: str, reason: str = "") -> None:
        finished = time.time() if status in ("done", "failed") else None
        self.db.run(lambda tx: tx.execute(
            "UPDATE audit SET status = ?, reason = ?, finished = ? WHERE id = ?",
            (status, reason[:MAX_TEXT], finished, entry)), write=True)

    def get(self, entry: int) -> AuditEntry | None:
        row = self.db.run(lambda tx: tx.execute(
            f"SELECT {COLUMNS} FROM audit WHERE id = ?", (entry,)).one())
        return AuditEntry(*row) if row else None

    def recent(self, client: str | None = None, limit: int = 50,
               offset: int = 0) -> list[AuditEntry]:
        """The latest entries, newest first (of one client, if given)."""
        where, params = ("WHERE client = ? ", (client,)) if client is not None else ("", ())
        return [AuditEntry(*row) for row in self.db.run(lambda tx: tx.execute(
            f"SELECT {COLUMNS} FROM audit {where}ORDER BY id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset)))]


Perform = Callable[[str, str, str], str]


class Actions:
    """The queue of admin actions: per client, in order, one at a time.

    ``perform(client, action, detail)`` does one action and returns what it
    did in a few words (stored as the reason of a done entry); an exception
    fails the entry with its message.
    """

    def __init__(self, audit: AuditLog, perform: Perform, workers: int = 2) -> None:
        self.audit = audit
        self.perform = perform
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="web-action")
        self._queues: dict[str, collections.deque[tuple[int, str, str]]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopped = False

    def submit(self, user: str, client: str, action: str, detail: str = "") -> int:
        """Queue an action; its audit entry's id."""
        entry = self.audit.add(user, client, action, detail)
        with self._lock:
            if self._stopped:
                self.audit.set_status(entry, "failed", "the server is stopping")
                return entry
            queue = self._queues.get(client)
            if queue is None:
                self._queues[client] = collections.deque([(entry, action, detail)])
                self._pool.submit(self._drain, client)
            else:
                queue.append((entry, action, detail))
        return entry

    def _status(self, entry: int, status: str, reason: str = "") -> None:
        """Record an entry's status; a database that cannot take it is logged, not raised
        (the queue goes on)."""
        try:
            self.audit.set_status(entry, status, reason)
        except StorageError as err:
            logger.error("Web action %d: cannot record %s in the audit log: %s", entry,
                         status, err)

    def _drain(self, client: str) -> None:
        """Run the client's queued actions in order until its queue is empty."""
        while True:
            with self._lock:
                queue = self._queues[client]
                if not queue or self._stopped:
                    for entry, _, _ in queue:
                        self._status(entry, "failed", "the server stopped")
                    del self._queues[client]
                    self._changed.notify_all()
                    return
                entry, action, detail = queue[0]
            try:
                with self.audit.client_lock(client):
                    self._status(entry, "running")
                    result = self.perform(client, action, detail)
            except Exception as err:
                logger.warning("Web action %s on %s failed: %s", action, client, err)
                self._status(entry, "failed", str(err) or type(err).__name__)
            else:
                self._status(entry, "done", result)
            with self._lock:
                queue.popleft()
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no action is queued or running; False at the timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queues:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        """Run no more queued actions (they fail, saying so); wait for the running ones."""
        with self._lock:
            self._stopped = True
        self._pool.shutdown(wait=True)


__all__ = ["SCHEMA", "Actions", "AuditEntry", "AuditLog", "STATUSES"]

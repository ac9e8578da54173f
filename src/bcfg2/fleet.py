"""Several servers on one PostgreSQL database: each one's cache expiries reach the others.

A server (the process that listens for agents; a multiprocessing core's
children hear from their parent) keeps client metadata, client state and
other plugins' copies in memory. When another server changes what the
database holds, those copies must be read again. Three parts do it:

- the publisher: every expiry of this server's metadata cache, except
  those relayed from elsewhere and the caching mode's own rules
  (``LOCAL_TAGS``), is written to ``cache_events`` and announced with
  NOTIFY in the same transaction (``bcfg2.storage.events``), from a thread
  of its own so no request waits for the database; an expiry that cannot
  be written is kept and sent again (many of them become one "expire all");
- the listener: a dedicated connection (not from the pool, autocommit)
  LISTENs, reads the events after the last one it read and applies the
  other servers' ones with ``relayed(tag)`` tags (so the multiprocessing
  children hear of them and the plugins read their state again). After a
  lost connection it reconnects with a growing pause, logged once per
  outage, and reads everything after the last event it read (NOTIFY has no
  replay); events pruned before it could read them make it expire all.
  It prunes events older than ``[database] event_retention`` now and then;
- ``check(client)``: read-your-writes without waiting for a notification.
  The database counts changes per client (``client_generations``, bumped
  with probe data and client state); a call whose counter is newer than the
  one this server last built the client's metadata at expires the client
  first, so the configuration is built from what the database holds.

Nothing here runs on SQLite: a one-server site has nobody to tell.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from bcfg2.cache import LOCAL_TAGS, STORAGE, Expiry, MetadataCache, relayed
from bcfg2.errors import ConfigError, StorageError
from bcfg2.storage import events, migrate

if TYPE_CHECKING:
    from bcfg2.options import Setup

logger = logging.getLogger("bcfg2.fleet")

#: seconds the listener waits for a notification before it looks at its stop flag
POLL = 0.5
#: seconds between reads of the events table without a notification (a safety net)
CATCH_UP_EVERY = 5.0
#: seconds between two prunings of old events by this server
PRUNE_EVERY = 60.0
#: most batches pruned at once
PRUNE_ROUNDS = 10
#: the first pause after a lost connection and the longest, in seconds
BACKOFF, MAX_BACKOFF = 0.1, 10.0
#: expiries kept while the database cannot be written; beyond, they become one "expire all"
MAX_PENDING = 1000


def named(setup: Setup) -> bool:
    """Whether ``[server] name`` gives the name (else it follows the port)."""
    return bool(str(getattr(setup.server, "name", "") or "").strip())


def _first_line(err: BaseException) -> str:
    """An error's message on one line (libpq's run over several), or its class."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class Fleet:
    """This server's part in a fleet sharing one PostgreSQL database (see the module)."""

    def __init__(self, setup: Setup, name: str) -> None:
        from bcfg2.storage.postgresql import PostgreSQLDatabase, Settings

        self.name = name
        self.retention = float(setup.database.event_retention)
        if self.retention <= 0:
            raise ConfigError("[database] event_retention must be a positive number of seconds")
        self.db = PostgreSQLDatabase(Settings.from_setup(setup))
        try:
            migrate(self.db, events.SCHEMA)
            #: the id of the last event read; earlier ones happened before this server loaded
            self.last_seen = self.db.run(events.last_id)
        except BaseException:
            self.db.close()
            raise
        self.cache: MetadataCache | None = None
        self._outbox: queue.Queue[Expiry | None] = queue.Queue()
        self._stop = threading.Event()
        self._stop_listening = threading.Event()
        self._threads: list[threading.Thread] = []
        #: client -> the counter this server last expired its metadata at
        self._seen: dict[str, int] = {}
        self._seen_lock = threading.Lock()
        self._check_failing = False
        #: ids of the last event of each batch this server announced, not yet notified back
        self._published: set[int] = set()
        self._published_lock = threading.Lock()
        #: set while the listener's LISTEN is in place (and its missed events read)
        self.listening = threading.Event()
        #: the PostgreSQL backend of the listener's connection (0: none)
        self.listener_pid = 0
        self._last_prune = 0.0

    # -- wiring -----------------------------------------------------------------

    def attach(self, cache: MetadataCache) -> None:
        """Publish this server's expiries of ``cache`` and apply the others' to it."""
        self.cache = cache
        cache.subscribe(self._on_expiry)

    def start(self) -> None:
        """Start the publisher and the listener threads."""
        for target, name in ((self._publish_loop, "fleet-publish"),
                             (self._listen_loop, "fleet-listen")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_listening(self) -> None:
        """Stop applying the other servers' expiries (publishing goes on)."""
        self._stop_listening.set()
        for thread in self._threads:
            if thread.name == "fleet-listen":
                thread.join(timeout=10)

    def close(self) -> None:
        """Stop both threads (sending what is pending once more) and let go of the pool."""
        self._stop.set()
        self._stop_listening.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self.db.close()

    # -- publishing -------------------------------------------------------------

    def _on_expiry(self, expiry: Expiry) -> None:
        """Called by the cache, under its lock: queue the expiry for the publisher."""
        if expiry.relayed or expiry.tag in LOCAL_TAGS:
            return
        if expiry.clients is not None and not expiry.clients:
            return  # named nobody: only this process's generation mattered
        self._outbox.put(expiry)

    def _publish_loop(self) -> None:
        pending: list[tuple[frozenset[str] | None, str]] = []
        pause, stopping, failing = BACKOFF, False, False
        while True:
            items: list[Expiry | None] = []
            try:  # wait for one (or, with some pending, until it is time to try again)
                items.append(self._outbox.get(timeout=pause if pending else None))
                while True:
                    items.append(self._outbox.get_nowait())
            except queue.Empty:
                pass
            for item in items:
                if item is None:
                    stopping = True
                else:
                    pending.append((item.clients, item.tag))
            if len(pending) > MAX_PENDING:
                pending = [(None, STORAGE)]
            if pending:
                try:
                    self._send(list(pending))
                    pending, pause = [], BACKOFF
                    if failing:
                        logger.warning("announcing cache expiries to the other servers again")
                        failing = False
                except StorageError as err:
                    if stopping:
                        logger.error("%d cache expiries not announced to the other servers "
                                     "(stopping): %s", len(pending), err)
                        return
                    if not failing:
                        logger.error("cannot announce %d cache expiries to the other servers "
                                     "(kept, sent again with growing pauses): %s",
                                     len(pending), err)
                        failing = True
                    pause = min(pause * 2, MAX_BACKOFF)
            if stopping:
                return

    def _send(self, batch: list[tuple[frozenset[str] | None, str]]) -> None:
        """Store and announce some expiries in one transaction."""
        last = self.db.run(lambda tx: events.publish(tx, self.name, batch, time.time()),
                           write=True)
        with self._published_lock:
            self._published.add(last)

    def _own(self, payload: str) -> bool:
        """Whether a notification announces this server's own latest events, and every
        event before them was read already.

        Inserts are serialised and notifications arrive in commit order, so
        when this server's notification of id N arrives, every other server's
        event below N was notified (and read) before: there is nothing to read.
        """
        if not payload.isdigit() or len(payload) > 19:
            return False
        announced = int(payload)
        with self._published_lock:
            if announced not in self._published:
                return False
            self._published = {n for n in self._published if n > announced}
        self.last_seen = max(self.last_seen, announced)
        return True

    # -- listening --------------------------------------------------------------

    def _connect(self) -> Any:
        """The listener's own connection (its own method, so a test can hold it back)."""
        return self.db.dedicated()

    def _listen_loop(self) -> None:
        from bcfg2.storage.postgresql import PostgreSQLTransaction

        psycopg = self.db.psycopg
        outage = False
        pause = BACKOFF
        while not self._stop_listening.is_set():
            try:
                conn = self._connect()
            except StorageError as err:
                if not outage:
                    logger.warning("cannot listen for the other servers' cache expiries: %s; "
                                   "trying again (with growing pauses)", err)
                    outage = True
                self._stop_listening.wait(pause)
                pause = min(pause * 2, MAX_BACKOFF)
                continue
            try:
                with conn:
                    tx = PostgreSQLTransaction(conn)
                    tx.execute(f"LISTEN {events.CHANNEL}")
                    self.listener_pid = tx.backend_pid()
                    self._catch_up(tx)
                    if outage:
                        logger.warning("listening for the other servers' cache expiries again "
                                       "(read every event missed meanwhile)")
                    outage, pause = False, BACKOFF
                    self.listening.set()
                    self._serve(conn, tx)
            except (psycopg.Error, StorageError) as err:
                if not outage:
                    logger.warning("lost the connection that listens for the other servers' "
                                   "cache expiries: %s; reconnecting", _first_line(err))
                    outage = True
                self._stop_listening.wait(pause)
                pause = min(pause * 2, MAX_BACKOFF)
            except Exception:  # a bug: logged, and listening goes on after a pause
                logger.exception("the listener for the other servers' cache expiries failed")
                self._stop_listening.wait(MAX_BACKOFF)
            finally:
                self.listening.clear()
                self.listener_pid = 0

    def _serve(self, conn: Any, tx: Any) -> None:
        """Wait for notifications; read the new events at each (but this server's own),
        and now and then anyway."""
        last_read = time.monotonic()
        while not self._stop_listening.is_set():
            woken = [note.payload for note in conn.notifies(timeout=POLL, stop_after=1)
                     if not self._own(note.payload)]
            now = time.monotonic()
            if woken or now - last_read >= CATCH_UP_EVERY:
                self._catch_up(tx)
                last_read = now
            if now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                self.prune(time.time())

    def _catch_up(self, tx: Any) -> None:
        """Apply every event after the last one read; expire all if some were pruned unread."""
        upto = events.pruned_upto(tx)
        if upto > self.last_seen:
            logger.warning("cache events %d to %d were pruned before this server read them "
                           "(away longer than [database] event_retention): expiring all "
                           "cached metadata", self.last_seen + 1, upto)
            self._expire(None, STORAGE)
            self.last_seen = upto
        while True:
            batch = events.read_after(tx, self.last_seen)
            for event in batch:
                if event.server != self.name and (event.clients is None or event.clients):
                    self._expire(event.clients, event.tag)
                self.last_seen = event.id
            if len(batch) < events.BATCH:
                return

    def _expire(self, clients: frozenset[str] | None, tag: str) -> None:
        if self.cache is not None:
            self.cache.expire(clients, tag=relayed(tag))

    def prune(self, now: float) -> int:
        """Delete the events older than the retention (bounded); how many. Errors are logged."""
        deleted = 0
        try:
            for _ in range(PRUNE_ROUNDS):
                count = self.db.run(lambda tx: events.prune(tx, now - self.retention),
                                    write=True)
                deleted += count
                if count < events.BATCH:
                    break
        except StorageError as err:
            logger.warning("cannot prune old cache events: %s", err)
        return deleted

    # -- read-your-writes -------------------------------------------------------

    def check(self, client: str) -> None:
        """Expire ``client`` first if the database changed it since this server last looked.

        One indexed read. A database that cannot be read is logged (once per
        outage) and the call goes on: it fails on its own if it needs the
        database.
        """
        try:
            current = self.db.run(lambda tx: events.generation(tx, client))
        except StorageError as err:
            if not self._check_failing:
                logger.warning("cannot read the generation of client metadata: %s", err)
                self._check_failing = True
            return
        self._check_failing = False
        with self._seen_lock:
            if current <= self._seen.get(client, 0):
                return
            self._seen[client] = current
            self._expire(frozenset([client]), STORAGE)


__all__ = ["Fleet", "named"]

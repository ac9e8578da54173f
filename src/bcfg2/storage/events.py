"""Cache events and client generations: what servers sharing one database tell each other.

Two tables of the ``cache_events`` store, used on PostgreSQL only (a SQLite
site has one server, with nobody to tell):

- ``cache_events``: one row per expiry of a server's metadata cache (who
  made it, the clients it names as a JSON list or NULL for all of them, its
  tag, when). The insert and ``NOTIFY bcfg2_cache, '<id>'`` go in one
  transaction, so a listener woken by the notification always finds the
  row; the payload is the id alone (NOTIFY payloads must stay small).
  Inserts are serialised by an advisory lock, so ids become visible in
  order and a reader that remembers the last id it read misses nothing.
  Old rows are pruned; ``cache_events_pruned`` keeps the highest id pruned,
  so a reader that was away longer than the retention knows it missed some.
- ``client_generations``: a counter per client, bumped in the transaction
  that changes what the database knows of it (probe data, client state).
  A server compares it with the value its cached metadata was built at:
  read-your-writes inside one agent run, whichever servers its calls reach,
  without waiting for a notification.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from bcfg2.storage.base import Transaction
from bcfg2.storage.migrations import Migration, Schema

#: the channel of LISTEN and NOTIFY
CHANNEL = "bcfg2_cache"
#: held by a transaction that inserts events, so ids commit in their order
PUBLISH_LOCK = "bcfg2.cache_events"
#: most events read, or pruned, by one statement
BATCH = 1000

SCHEMA = Schema("cache_events", (
    Migration(1, "expiries announced to the other servers; a generation per client",
              tables=("CREATE TABLE IF NOT EXISTS cache_events (id {serial}, server TEXT "
                      "NOT NULL, clients TEXT, tag TEXT NOT NULL, created {real} NOT NULL)",),
              statements=(
                  "CREATE INDEX IF NOT EXISTS cache_events_created ON cache_events (created)",
                  "CREATE TABLE IF NOT EXISTS cache_events_pruned (singleton INTEGER PRIMARY "
                  "KEY, upto BIGINT NOT NULL)",
                  "CREATE TABLE IF NOT EXISTS client_generations (client TEXT PRIMARY KEY, "
                  "generation BIGINT NOT NULL)",
              )),
))


@dataclass(frozen=True)
class Event:
    """One stored expiry: its id, the server that made it, whom it names (None: all), its tag."""

    id: int
    server: str
    clients: frozenset[str] | None
    tag: str


def publish(tx: Transaction, server: str, expiries: Iterable[tuple[frozenset[str] | None, str]],
            now: float) -> int:
    """Store expiries (clients, tag) made by ``server`` and notify the listeners; the last id.

    Call it in a write transaction on PostgreSQL: the notification is sent
    when, and only if, the rows are committed.
    """
    tx.lock(PUBLISH_LOCK)
    last = 0
    for clients, tag in expiries:
        names = None if clients is None else json.dumps(sorted(clients))
        last = int(tx.execute("INSERT INTO cache_events (server, clients, tag, created) "
                              "VALUES (?, ?, ?, ?) RETURNING id",
                              (server, names, tag, now)).scalar())
    if last:
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, str(last)))
    return last


def _clients(text: str | None) -> frozenset[str] | None:
    """A stored client list; anything but a JSON list of names means every client."""
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return frozenset(names)


def read_after(tx: Transaction, last_seen: int) -> list[Event]:
    """The next events after id ``last_seen``, in order (at most BATCH)."""
    rows = tx.execute("SELECT id, server, clients, tag FROM cache_events WHERE id > ? "
                      "ORDER BY id LIMIT ?", (last_seen, BATCH)).rows
    return [Event(int(row[0]), str(row[1]), _clients(row[2]), str(row[3])) for row in rows]


def last_id(tx: Transaction) -> int:
    """The id of the newest event (0 if there is none): where a server starts reading."""
    return int(tx.execute("SELECT max(id) FROM cache_events").scalar() or 0)


def pruned_upto(tx: Transaction) -> int:
    """The highest id pruned so far (0: none)."""
    return int(tx.execute("SELECT upto FROM cache_events_pruned WHERE singleton = 1")
               .scalar() or 0)


def prune(tx: Transaction, before: float) -> int:
    """Delete up to BATCH events created before ``before``; how many were deleted."""
    ids = [int(row[0]) for row in tx.execute(
        "DELETE FROM cache_events WHERE id IN (SELECT id FROM cache_events WHERE created < ? "
        "ORDER BY id LIMIT ?) RETURNING id", (before, BATCH))]
    if ids:
        tx.execute("INSERT INTO cache_events_pruned (singleton, upto) VALUES (1, ?) "
                   "ON CONFLICT (singleton) DO UPDATE SET upto = CASE WHEN excluded.upto > "
                   "cache_events_pruned.upto THEN excluded.upto ELSE cache_events_pruned.upto "
                   "END", (max(ids),))
    return len(ids)


def bump_generation(tx: Transaction, client: str) -> int:
    """Count one more change of what the database knows of ``client``; the new count."""
    return int(tx.execute("INSERT INTO client_generations (client, generation) VALUES (?, 1) "
                          "ON CONFLICT (client) DO UPDATE SET generation = "
                          "client_generations.generation + 1 RETURNING generation",
                          (client,)).scalar())


def generation(tx: Transaction, client: str) -> int:
    """How many changes of ``client`` the database has counted (0: none)."""
    return int(tx.execute("SELECT generation FROM client_generations WHERE client = ?",
                          (client,)).scalar() or 0)


def shared(tx: Transaction) -> bool:
    """Whether the database may be shared by several servers (PostgreSQL): counters kept."""
    return tx.engine == "postgresql"


__all__ = ["CHANNEL", "SCHEMA", "Event", "bump_generation", "generation", "last_id", "prune",
           "pruned_upto", "publish", "read_after", "shared"]

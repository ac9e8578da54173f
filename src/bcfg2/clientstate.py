"""What the server learns about clients at run time, one row per client.

A client registered on first contact, the profile it asserted (and the
one the repository gave it, which access checks go by), the version it
declared, the end of its bootstrap: each change writes one row of the
``clients`` table, never the whole state. The table lives in
``<[server] state_dir>/Metadata/state.sqlite``, or in PostgreSQL with
``[database] engine = postgresql`` (``bcfg2.storage``). Values are stored as
given; callers bound them (``bcfg2.untrusted``).

A tool that changes the state while a server runs (``bcfg2-admin client
del``) calls ``mark_changed``; the server watches that marker and reads the
state again. With PostgreSQL the change also goes to every server sharing
the database as a cache event (``remove``).

A state directory of an earlier version kept this in
``Metadata/clients.xml``; it is imported once, when the database is
created, and renamed ``clients.xml.imported``.
"""

from __future__ import annotations

import logging
import os
import time

import lxml.etree

from bcfg2.storage import Database, Migration, Schema, SQLiteDatabase, Transaction, events, migrate

logger = logging.getLogger(__name__)

#: the server name a tool's cache events carry (``bcfg2.storage.events``)
TOOL = "bcfg2-admin"

#: the attributes a client's row holds (the Metadata plugin's overlay of clients.xml)
COLUMNS = ("profile", "trusted_profile", "repository_profile", "version", "auth", "pinned")

#: the clients table; migration 1 is the layout it had before schema versions
SCHEMA = Schema("clients", (
    Migration(1, "one row per client", tables=("""
        CREATE TABLE IF NOT EXISTS clients (
            name TEXT PRIMARY KEY,
            profile TEXT,
            trusted_profile TEXT,
            repository_profile TEXT,
            version TEXT,
            auth TEXT,
            registered {real} NOT NULL
        )""",)),
    Migration(2, "clients an admin pinned to their profile (AssertProfile leaves it)",
              statements=("ALTER TABLE clients ADD COLUMN pinned TEXT",)),
))

Overlay = dict[str, dict[str, str]]
#: the longest value imported from an earlier state file (earlier versions bounded nothing)
MAX_IMPORTED = 1024


def database_path(state_dir: str) -> str:
    """Where the client state of a server with this state directory lives."""
    return os.path.join(state_dir, "Metadata", "state.sqlite")


class ClientState:
    """The run-time state of every client, shared by the threads of one process.

    ``path`` is the SQLite file (and names the marker file); ``database``,
    if given, is where the table is instead (``bcfg2.storage.open_database``).
    Several processes (the multiprocessing core's children, bcfg2-admin)
    may use it at once.
    """

    def __init__(self, path: str, database: Database | None = None) -> None:
        self.path = path
        self.db = database if database is not None else SQLiteDatabase(
            path, SCHEMA.sqlite_pragmas)
        try:
            existed = self.db.run(lambda tx: tx.table_exists("clients"))
            migrate(self.db, SCHEMA)
            if self.db.engine == "postgresql":  # the client generations other servers read
                migrate(self.db, events.SCHEMA)
        except BaseException:
            self.db.close()
            raise
        if not existed:
            self._import_xml(os.path.join(os.path.dirname(path), "clients.xml"))

    def close(self) -> None:
        self.db.close()

    def load(self, names: list[str] | None = None) -> Overlay:
        """The state of the named clients (None: of every client), without empty columns."""
        query = f"SELECT name, {', '.join(COLUMNS)} FROM clients"

        def read(tx: Transaction) -> list[tuple]:
            if names is None:
                return tx.execute(query).rows
            return [row for name in names
                    for row in tx.execute(query + " WHERE name = ?", (name,))]

        rows = self.db.run(read)
        return {row[0]: {key: value for key, value in zip(COLUMNS, row[1:], strict=True)
                         if value is not None} for row in rows}

    def update(self, name: str, attrs: dict[str, str]) -> None:
        """Set some attributes of one client (its row is made if it has none)."""
        unknown = set(attrs) - set(COLUMNS)
        if unknown:
            raise ValueError(f"not a column of the client state: {', '.join(sorted(unknown))}")
        keys = list(attrs)
        registered = time.time()

        def write(tx: Transaction) -> None:
            tx.execute("INSERT INTO clients (name, registered) VALUES (?, ?) "
                       "ON CONFLICT (name) DO NOTHING", (name, registered))
            if keys:
                tx.execute(f"UPDATE clients SET {', '.join(k + ' = ?' for k in keys)} "
                           f"WHERE name = ?", [attrs[k] for k in keys] + [name])
            if events.shared(tx):  # another server's next call sees it at once
                events.bump_generation(tx, name)

        self.db.run(write, write=True)

    def remove(self, name: str) -> bool:
        """Forget one client; False if it had no state. In a shared database the servers
        are told (a cache event from ``TOOL``, as the Metadata plugin's own): each reads
        the client's state again, not only one that serves the client next."""
        def write(tx: Transaction) -> bool:
            removed = tx.execute("DELETE FROM clients WHERE name = ?", (name,)).rowcount > 0
            if removed and events.shared(tx):
                events.bump_generation(tx, name)
                events.publish(tx, TOOL, [(frozenset([name]), "Metadata")], time.time())
            return removed

        return self.db.run(write, write=True)

    @property
    def marker(self) -> str:
        """The file a tool rewrites after changing the state behind a running server's back."""
        return self.path + ".changed"

    def mark_changed(self) -> None:
        """Tell a running server (which watches ``marker``) to read the whole state again."""
        with open(self.marker, "w") as fh:
            fh.write(f"{time.time()}\n")

    def _import_xml(self, legacy: str) -> None:
        """Import the clients.xml an earlier version kept in the state directory."""
        if not os.path.exists(legacy):
            return
        parser = lxml.etree.XMLParser(no_network=True, resolve_entities=False, huge_tree=True)
        try:
            root = lxml.etree.parse(legacy, parser).getroot()
        except (OSError, lxml.etree.XMLSyntaxError) as err:
            logger.error("%s: cannot import the earlier client state: %s", legacy, err)
            return
        count = 0
        for node in root.iter("Client"):
            name = (node.get("name") or "").lower()
            if not name:
                continue
            attrs = {k: v for k, v in node.attrib.items() if k in COLUMNS}
            for key, value in list(attrs.items()):
                if len(value) > MAX_IMPORTED:
                    logger.warning("%s: client %s: %s of %d characters not imported",
                                   legacy, name[:64], key, len(value))
                    del attrs[key]
            self.update(name, attrs)
            count += 1
        try:
            os.replace(legacy, legacy + ".imported")
        except OSError as err:
            logger.error("%s: imported, but cannot be renamed: %s", legacy, err)
        logger.info("Imported the state of %d clients from %s", count, legacy)


__all__ = ["COLUMNS", "SCHEMA", "TOOL", "ClientState", "database_path"]

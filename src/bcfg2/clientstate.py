"""What the server learns about clients at run time, one row per client in SQLite.

A client registered on first contact, the profile it asserted (and the
one the repository gave it, which access checks go by), the version it
declared, the end of its bootstrap: each change writes one row of
``<[server] state_dir>/Metadata/state.sqlite``, never the whole state.
Values are stored as given; callers bound them (``bcfg2.untrusted``).

A tool that changes the state while a server runs (``bcfg2-admin client
del``) calls ``mark_changed``; the server watches that marker and reads the
state again.

A state directory of an earlier version kept this in
``Metadata/clients.xml``; it is imported once, when the database is
created, and renamed ``clients.xml.imported``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import lxml.etree

import bcfg2.sqlite

logger = logging.getLogger(__name__)

#: the attributes a client's row holds (the Metadata plugin's overlay of clients.xml)
COLUMNS = ("profile", "trusted_profile", "repository_profile", "version", "auth")

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    name TEXT PRIMARY KEY,
    profile TEXT,
    trusted_profile TEXT,
    repository_profile TEXT,
    version TEXT,
    auth TEXT,
    registered REAL NOT NULL
);
"""

Overlay = dict[str, dict[str, str]]
#: the longest value imported from an earlier state file (earlier versions bounded nothing)
MAX_IMPORTED = 1024


def database_path(state_dir: str) -> str:
    """Where the client state of a server with this state directory lives."""
    return os.path.join(state_dir, "Metadata", "state.sqlite")


class ClientState:
    """The run-time state of every client, shared by the threads of one process.

    Several processes (the multiprocessing core's children, bcfg2-admin) may
    open the same file: WAL lets them read while the server writes.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        fresh = not os.path.exists(path)
        self.conn = bcfg2.sqlite.connect(path)
        self.conn.executescript(SCHEMA)
        if fresh:
            self._import_xml(os.path.join(os.path.dirname(path), "clients.xml"))

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def load(self, names: list[str] | None = None) -> Overlay:
        """The state of the named clients (None: of every client), without empty columns."""
        query = f"SELECT name, {', '.join(COLUMNS)} FROM clients"
        with bcfg2.sqlite.transaction(self.conn, self.lock) as conn:
            if names is None:
                rows = conn.execute(query).fetchall()
            else:
                rows = [row for name in names
                        for row in conn.execute(query + " WHERE name = ?", (name,))]
        return {row[0]: {key: value for key, value in zip(COLUMNS, row[1:], strict=True)
                         if value is not None} for row in rows}

    def update(self, name: str, attrs: dict[str, str]) -> None:
        """Set some attributes of one client (its row is made if it has none)."""
        unknown = set(attrs) - set(COLUMNS)
        if unknown:
            raise ValueError(f"not a column of the client state: {', '.join(sorted(unknown))}")
        keys = list(attrs)
        with bcfg2.sqlite.transaction(self.conn, self.lock, write=True) as conn:
            conn.execute("INSERT OR IGNORE INTO clients (name, registered) VALUES (?, ?)",
                         (name, time.time()))
            if keys:
                conn.execute(f"UPDATE clients SET {', '.join(k + ' = ?' for k in keys)} "
                             f"WHERE name = ?", [attrs[k] for k in keys] + [name])

    def remove(self, name: str) -> bool:
        """Forget one client; False if it had no state."""
        with bcfg2.sqlite.transaction(self.conn, self.lock, write=True) as conn:
            return conn.execute("DELETE FROM clients WHERE name = ?", (name,)).rowcount > 0

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


__all__ = ["COLUMNS", "ClientState", "database_path"]

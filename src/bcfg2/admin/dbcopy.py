"""Move a site's run-time state between SQLite, PostgreSQL and upstream's XML files.

``--from sqlite --to postgresql`` copies the client state, probe data, web audit log and
run history of ``[server] state_dir``'s SQLite files into the ``[database]``
PostgreSQL database (going from one server to a fleet); ``--from postgresql
--to sqlite`` copies them back. Each store is copied in one transaction,
run ids kept (so entries stay with their runs); a target that already holds
rows is refused unless ``--force`` is given, which then replaces what the
target holds of those stores. Running it twice thus never duplicates
anything. The fleet's ``generated_files`` table is not copied: the keys it
records are in every server's checkout (and with SQLite the checkout is
their only place).

``--from xml`` imports upstream Bcfg2's ``Probes/probed.xml`` (``--probed``,
by default the repository's) and the client state of a ``clients.xml``
(``--clients``: the attributes the server keeps per client: profile,
version, auth...) into the engine ``--to`` names (by default the configured
one). There ``--force`` replaces the data of the clients the files name and
leaves the others as they are. What the files hold is bounded and checked as
a client's upload would be: a client name that is not a valid one, a probe
or group name that is not a plain name, or a value over its limit is left
out, counted and reported.

The server may keep running for an XML import; for a copy between engines
stop the servers first, or runs stored meanwhile go to one side only.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lxml.etree

from bcfg2 import clientstate, reportdb
from bcfg2.errors import StorageError, UntrustedInputError
from bcfg2.identity import valid_client_name
from bcfg2.options import Setup
from bcfg2.plugins import probes
from bcfg2.storage import Database, Schema, SQLiteDatabase, Transaction, migrate
from bcfg2.tools import ToolError
from bcfg2.web import audit
from bcfg2.xml import parse_untrusted

ENGINES = ("sqlite", "postgresql")
#: the largest probe output imported (the Probes plugin's default max_probe_size)
MAX_PROBE_VALUE = 256 * 1024
#: the most groups imported per client (the Probes plugin's default max_groups)
MAX_GROUPS = 100


@dataclass(frozen=True)
class Table:
    """One table a store copies: its name, columns, and the key its ids live in."""

    name: str
    columns: tuple[str, ...]
    #: an identity column whose sequence must follow the copied ids (PostgreSQL)
    identity: str = ""


@dataclass(frozen=True)
class Store:
    """A store's schema, its SQLite file, and its tables, parents first."""

    schema: Schema
    path: str
    tables: tuple[Table, ...]


def stores(setup: Setup) -> list[Store]:
    """The stores a copy moves (generated_files lives in the repository under SQLite)."""
    state_dir = setup.server.state_dir or setup.server.repository
    runs = tuple(column.strip() for column in reportdb.RUN_COLUMNS.split(","))
    return [
        Store(clientstate.SCHEMA, clientstate.database_path(state_dir), (
            Table("clients", ("name", *clientstate.COLUMNS, "registered")),)),
        Store(probes.SCHEMA, os.path.join(state_dir, "Probes", "probes.sqlite"), (
            Table("probes", ("client", "name", "value")),
            Table("groups", ("client", "name")))),
        Store(reportdb.SCHEMA, reportdb.database_path(setup), (
            Table("runs", runs, identity="id"),
            Table("entries", ("run", "kind", "tag", "name", "reason", "attrs", "truncated")),
            Table("dropped_runs", ("client", "runs", "last")),
            Table("latest_runs", ("client", "run")),
            Table("run_days", ("day", "category", "runs")))),
        Store(audit.SCHEMA, audit.database_path(setup), (
            Table("audit", tuple(c.strip() for c in audit.COLUMNS.split(",")),
                  identity="id"),)),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, choices=(*ENGINES, "xml"),
                        help="where the state is now: the SQLite files of [server] state_dir, "
                             "the [database] PostgreSQL database, or upstream's XML files")
    parser.add_argument("--to", dest="target", choices=ENGINES,
                        help="where it goes (default: the other engine; for --from xml, "
                             "[database] engine)")
    parser.add_argument("--force", action="store_true",
                        help="write into a target that already holds state (replacing it)")
    parser.add_argument("--probed", metavar="FILE",
                        help="with --from xml: upstream's probed.xml (default: "
                             "<repository>/Probes/probed.xml, if it exists)")
    parser.add_argument("--clients", metavar="FILE",
                        help="with --from xml: a clients.xml whose client state to import")


def _postgresql(setup: Setup) -> Database:
    from bcfg2.storage.postgresql import PostgreSQLDatabase, Settings

    try:
        return PostgreSQLDatabase(Settings.from_setup(setup))
    except Exception as err:  # ConfigError, or psycopg missing: one line
        raise ToolError(f"cannot use the [database] PostgreSQL database: {err}") from None


@contextmanager
def opened(setup: Setup, engine: str, store: Store, create: bool) -> Iterator[Database | None]:
    """The store's database on an engine, migrated; None for a SQLite file that does not
    exist and is not to be created."""
    if engine == "sqlite" and not create and not os.path.exists(store.path):
        yield None
        return
    db = SQLiteDatabase(store.path, store.schema.sqlite_pragmas) if engine == "sqlite" \
        else _postgresql(setup)
    try:
        migrate(db, store.schema)
        yield db
    except StorageError as err:
        raise ToolError(f"{store.schema.store}: {err}") from None
    finally:
        db.close()


def counts(tx: Transaction, store: Store) -> dict[str, int]:
    return {table.name: int(tx.execute(f"SELECT COUNT(*) FROM {table.name}").scalar())
            for table in store.tables}


def _where(engine: str, store: Store, db: Database | None) -> str:
    return store.path if engine == "sqlite" or db is None else db.describe()


def copy(setup: Setup, source: str, target: str, force: bool) -> int:
    """Copy every store from one engine to the other; refuse a non-empty target."""
    work = stores(setup)
    # look at every target first: nothing is written if any of them is refused
    busy = []
    for store in work:
        with opened(setup, target, store, create=False) as db:
            found = db.run(lambda tx, s=store: counts(tx, s)) if db is not None else {}
            if any(found.values()):
                busy.append(f"{store.schema.store} ("
                            + ", ".join(f"{n} {t}" for t, n in found.items() if n) + ")")
    if busy and not force:
        raise ToolError(f"the {target} target already holds {'; '.join(busy)}: give --force "
                        f"to replace it")
    for store in work:
        name = store.schema.store
        with opened(setup, source, store, create=False) as src:
            if src is None:
                print(f"{name}: nothing to copy ({store.path} does not exist)")
                continue
            rows = src.run(lambda tx, s=store: {
                t.name: tx.execute(f"SELECT {', '.join(t.columns)} FROM {t.name}").rows
                for t in s.tables})
            where_from = _where(source, store, src)
        with opened(setup, target, store, create=True) as dst:
            assert dst is not None
            dst.run(functools.partial(_replace, store=store, rows=rows), write=True)
            print(f"{name}: copied " + ", ".join(f"{len(rows[t.name])} {t.name}"
                                                 for t in store.tables)
                  + f" from {where_from} to {_where(target, store, dst)}")
    return 0


def _replace(tx: Transaction, store: Store, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    """Make the store's tables hold exactly ``rows`` (children emptied first)."""
    for table in reversed(store.tables):
        tx.execute(f"DELETE FROM {table.name}")
    for table in store.tables:
        marks = ", ".join("?" for _ in table.columns)
        tx.executemany(f"INSERT INTO {table.name} ({', '.join(table.columns)}) "
                       f"VALUES ({marks})", rows[table.name])
        if table.identity and tx.engine == "postgresql":
            # ids were given, not drawn: the next drawn one must come after them
            tx.execute(f"SELECT setval(pg_get_serial_sequence(?, ?), "
                       f"COALESCE(MAX({table.identity}), 0) + 1, false) FROM {table.name}",
                       (table.name, table.identity))


# -- upstream's XML files -------------------------------------------------------------

@dataclass
class Imported:
    """What an XML file gave: per client the data to store, and what was left out."""

    clients: dict[str, Any]
    skipped: list[str]


def _parse(path: str) -> lxml.etree._Element:
    try:
        with open(path, "rb") as fh:
            return parse_untrusted(fh.read(), path)
    except OSError as err:
        raise ToolError(f"{path}: cannot be read: {err.strerror}") from None
    except UntrustedInputError as err:  # a syntax error (with its line), a DTD...
        raise ToolError(f"{path}: {err}") from None


def _client_name(node: lxml.etree._Element, path: str, skipped: list[str]) -> str | None:
    name = (node.get("name") or "").lower()
    if not valid_client_name(name):
        skipped.append(f"{path}:{node.sourceline}: {name[:64]!r} is not a valid client name")
        return None
    return name


def read_probed(path: str) -> Imported:
    """Upstream's probed.xml: per client its probes' output and its probe groups."""
    root = _parse(path)
    out: dict[str, tuple[dict[str, str], list[str]]] = {}
    skipped: list[str] = []
    for node in root.iter("Client"):
        name = _client_name(node, path, skipped)
        if name is None:
            continue
        data: dict[str, str] = {}
        for probe in node.iter("Probe"):
            probe_name, value = probe.get("name") or "", probe.get("value") or ""
            if not probes.safe_name(probe_name):
                skipped.append(f"{path}:{probe.sourceline}: probe name {probe_name[:64]!r}")
            elif len(value.encode("utf-8", "replace")) > MAX_PROBE_VALUE:
                skipped.append(f"{path}:{probe.sourceline}: probe {probe_name} of "
                               f"{len(value)} characters (over {MAX_PROBE_VALUE})")
            else:
                data[probe_name] = value
        groups = sorted({g.get("name") or "" for g in node.iter("Group")})
        kept = [g for g in groups if probes.safe_name(g)][:MAX_GROUPS]
        if len(kept) != len(groups):
            skipped.append(f"{path}: client {name}: {len(groups) - len(kept)} groups")
        out[name] = (data, kept)
    return Imported(out, skipped)


def read_clients(path: str) -> Imported:
    """The client state of a clients.xml: the attributes the server keeps per client."""
    root = _parse(path)
    out: dict[str, dict[str, str]] = {}
    skipped: list[str] = []
    for node in root.iter("Client"):
        name = _client_name(node, path, skipped)
        if name is None:
            continue
        attrs = {}
        for key in clientstate.COLUMNS:
            value = node.get(key)
            if value is None:
                continue
            if len(value) > clientstate.MAX_IMPORTED or "\n" in value or "\0" in value:
                skipped.append(f"{path}:{node.sourceline}: client {name}: {key}")
                continue
            attrs[key] = value
        out[name] = attrs
    return Imported(out, skipped)


def _save_probes(tx: Transaction, data: dict[str, tuple[dict[str, str], list[str]]]) -> None:
    for client, (values, groups) in data.items():
        tx.execute("DELETE FROM probes WHERE client = ?", (client,))
        tx.execute("DELETE FROM groups WHERE client = ?", (client,))
        tx.executemany("INSERT INTO probes (client, name, value) VALUES (?, ?, ?)",
                       [(client, k, v) for k, v in values.items()])
        tx.executemany("INSERT INTO groups (client, name) VALUES (?, ?)",
                       [(client, g) for g in groups])


def _save_clients(tx: Transaction, data: dict[str, dict[str, str]], when: float) -> None:
    for client, attrs in data.items():
        values = [attrs.get(key) for key in clientstate.COLUMNS]
        tx.execute(f"INSERT INTO clients (name, {', '.join(clientstate.COLUMNS)}, registered) "
                   f"VALUES (?, {', '.join('?' for _ in clientstate.COLUMNS)}, ?) "
                   f"ON CONFLICT (name) DO UPDATE SET "
                   + ", ".join(f"{key} = excluded.{key}" for key in clientstate.COLUMNS),
                   (client, *values, when))


def import_xml(setup: Setup, target: str, probed: str | None, clients: str | None,
               force: bool) -> int:
    """Import probed.xml and a clients.xml's client state into the target engine."""
    import time

    if probed is None and clients is None:
        default = os.path.join(setup.server.repository, "Probes", probes.STORE_FILE)
        if not os.path.exists(default):
            raise ToolError(f"nothing to import: no {default}; give --probed or --clients")
        probed = default
    by_store = {s.schema.store: s for s in stores(setup)}
    jobs: list[tuple[Store, Imported, Callable[[Transaction], None], str]] = []
    if probed is not None:
        probe_data = read_probed(probed)
        jobs.append((by_store["probes"], probe_data,
                     lambda tx: _save_probes(tx, probe_data.clients), probed))
    if clients is not None:
        client_state = read_clients(clients)
        now = time.time()
        jobs.append((by_store["clients"], client_state,
                     lambda tx: _save_clients(tx, client_state.clients, now), clients))
    for store, _, _, _ in jobs:
        with opened(setup, target, store, create=False) as db:
            found_counts = db.run(lambda tx, s=store: counts(tx, s)) if db else {}
        if any(found_counts.values()) and not force:
            raise ToolError(f"the {target} target already holds {store.schema.store} state ("
                            + ", ".join(f"{n} {t}" for t, n in found_counts.items() if n)
                            + "): give --force to replace that of the clients imported")
    for store, imported, save, path in jobs:
        with opened(setup, target, store, create=True) as db:
            assert db is not None
            db.run(save, write=True)
            where = _where(target, store, db)
        for line in imported.skipped:
            print(f"left out: {line}")
        print(f"{store.schema.store}: imported {len(imported.clients)} clients from {path} "
              f"to {where}" + (f" ({len(imported.skipped)} left out)" if imported.skipped
                               else ""))
    return 0


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Copy between the engines, or import the XML files; 0 when done."""
    from bcfg2.storage import engine_of

    if args.source != "xml" and (args.probed or args.clients):
        raise ToolError("--probed and --clients go with --from xml")
    if args.source == "xml":
        return import_xml(setup, args.target or engine_of(setup), args.probed, args.clients,
                          args.force)
    target = args.target or next(e for e in ENGINES if e != args.source)
    if target == args.source:
        raise ToolError(f"--from and --to are both {target}: nothing to copy")
    return copy(setup, args.source, target, args.force)

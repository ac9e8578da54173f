"""Apply the run-time database's pending schema migrations and print each store's version.

The server applies them itself at start-up; this is for doing it by hand
(before starting a fleet of servers on a new version, say) or, with
``--check``, for finding out whether any is pending (exit status 1).
SQLite files that do not exist yet are left alone: a store makes its file
at the latest version when it is first used.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from bcfg2 import clientstate, generated, reportdb
from bcfg2.errors import StorageError
from bcfg2.options import Setup
from bcfg2.plugins import probes
from bcfg2.plugins.packages import store as packages_cache
from bcfg2.storage import Schema, engine_of, events, migrate, open_database, status
from bcfg2.tools import ToolError
from bcfg2.web import audit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit with status 1 if a migration is pending")


@dataclass(frozen=True)
class Store:
    """One store of the run-time database, where its SQLite file would be."""

    schema: Schema
    path: str
    #: why the store is not in the database under this configuration, or ""
    elsewhere: str = ""


def stores(setup: Setup) -> list[Store]:
    """The stores the server writes under this configuration."""
    state_dir = setup.server.state_dir or setup.server.repository
    in_repository = os.path.realpath(state_dir) == os.path.realpath(setup.server.repository)
    storage = getattr(getattr(setup, "probes", None), "storage", "sqlite")
    return [
        Store(clientstate.SCHEMA, clientstate.database_path(state_dir),
              "kept in Metadata/clients.xml ([server] state_dir is the repository)"
              if in_repository else ""),
        Store(probes.SCHEMA, os.path.join(state_dir, "Probes", "probes.sqlite"),
              "kept in Probes/probed.xml ([probes] storage = xml)" if storage == "xml" else ""),
        Store(reportdb.SCHEMA, reportdb.database_path(setup)),
        Store(audit.SCHEMA, audit.database_path(setup)),
        Store(events.SCHEMA, "", "" if engine_of(setup) == "postgresql"
              else "PostgreSQL only (servers sharing a database tell each other of expiries)"),
        Store(generated.SCHEMA, "",
              "" if engine_of(setup) == "postgresql" else
              "generated keys are kept in the repository alone (one server, SQLite)"),
        Store(packages_cache.SCHEMA, "",
              "" if engine_of(setup) == "postgresql" else
              "package indices are cached as files in the state directory (one server)"),
    ]


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Migrate (or, with --check, look at) every store; 1 if --check finds one pending."""
    engine = engine_of(setup)
    pending = 0
    for store in stores(setup):
        name = store.schema.store
        if store.elsewhere:
            print(f"{name}: {store.elsewhere}")
            continue
        if engine == "sqlite" and not os.path.exists(store.path):
            print(f"{name}: {store.path} not created yet (made at version "
                  f"{store.schema.latest} when first used)")
            continue
        try:
            db = open_database(setup, store.path, store.schema)
            try:
                found = status(db, store.schema)
                if found.current > found.latest or not args.check:
                    found = migrate(db, store.schema)  # refuses a newer database
            finally:
                db.close()
        except StorageError as err:
            raise ToolError(str(err)) from None
        where = store.path if engine == "sqlite" else db.describe()
        if args.check:
            pending += found.pending
            state = f"{found.pending} migration(s) pending" if found.pending else "up to date"
            print(f"{name}: version {found.current} of {found.latest}, {state} ({where})")
        elif found.pending:
            print(f"{name}: migrated from version {found.current} to {found.latest} ({where})")
        else:
            print(f"{name}: version {found.latest}, up to date ({where})")
    return 1 if pending else 0

"""Reporting: every client run an agent reports, stored for bcfg2-admin reports.

Each ``RecvStats`` upload becomes one run in the run-time database (SQLite,
or PostgreSQL with ``[database] engine``; ``bcfg2.reportdb``), written before
the agent's call returns: its state, counts, and the bad, modified and extra
entries with their reasons, and which server stored it (``[server] name``)
at which repository revision (the Version plugins'). Runs
older than ``[reporting] keep_days`` are pruned (each client's latest run is
kept however old), when the first run is recorded and then at most once an
hour. The database is opened at that first run too, so tools that load the
plugin without receiving statistics (bcfg2-info, bcfg2-lint) never touch it.

What one client can store is bounded (``[reporting] max_entry_content``,
``max_run_content``, ``max_runs_per_hour``; see ``bcfg2.reportdb``): a run
over the hourly cap is counted, not stored, and logged once per burst; the
agent's call succeeds all the same.

Upstream's ``[reporting] transport`` and Django settings are not needed:
the database is the server's own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import lxml.etree

from bcfg2.errors import StorageError
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option, server_name
from bcfg2.plugin import Statistics
from bcfg2.reportdb import SCHEMA, RunStore, StoreLimits, database_path
from bcfg2.storage import open_database

PRUNE_INTERVAL = 3600.0


class Reporting(Statistics):
    """Stores client runs in the run-time database; ``bcfg2-admin reports`` reads them."""

    options = (
        Option("reporting", "keep_days", 90,
               "Client runs stored by the Reporting plugin are pruned after this many days "
               "(each client's latest run is always kept); 0 keeps every run.", type="int"),
        Option("reporting", "max_entry_content", 64 * 1024,
               "Longest file content (current_bfile, current_bdiff, current_diff) stored per "
               "entry, in characters of base64 or text: longer ones are cut and marked, and "
               "bcfg2-admin pull refuses them; 0: no limit.", type="int"),
        Option("reporting", "max_run_content", 4 * 1024 * 1024,
               "Most characters one run may store (names, reasons, attributes, contents); "
               "entries beyond it are counted as dropped, bad ones kept first; 0: no "
               "limit.", type="int"),
        Option("reporting", "max_runs_per_hour", 12,
               "Runs stored per client within any hour; more are counted, not stored (the "
               "agent's call still succeeds); 0: no limit.", type="int"),
    )

    def __init__(self, core: Any) -> None:
        Statistics.__init__(self, core)
        self.keep_days = float(core.setup.reporting.keep_days)
        self.path = database_path(core.setup)
        reporting = core.setup.reporting
        self.limits = StoreLimits(reporting.max_entry_content, reporting.max_run_content,
                                  reporting.max_runs_per_hour)
        self._lock = threading.Lock()
        self._store: RunStore | None = None
        self._next_prune = 0.0
        #: recorded with each run, with the revision the core serves (fleet provenance)
        self.server = server_name(core.setup)

    @property
    def store(self) -> RunStore:
        """The run database, opened on first use."""
        with self._lock:
            if self._store is None:
                try:
                    self._store = RunStore(self.path, database=open_database(
                        self.core.setup, self.path, SCHEMA))
                except StorageError as err:  # a StorageError: the agent is told
                    raise StorageError(f"cannot open the run database: {err}") from err
            return self._store

    def prune(self) -> int:
        """Drop the runs older than ``[reporting] keep_days``; how many went."""
        try:
            removed = self.store.prune(self.keep_days)
        except StorageError as err:
            self.logger.error("cannot prune old runs: %s", err)
            return 0
        if removed:
            self.logger.info("pruned %d runs older than %g days", removed, self.keep_days)
        return removed

    def process_statistics(self, metadata: ClientMetadata, data: lxml.etree._Element) -> None:
        """Record the run (or count it, over the hourly cap); prune at the first run and hourly."""
        client = metadata.hostname
        recorded = self.store.record(client, data, limits=self.limits, server=self.server,
                                     served_revision=str(self.core.revision))
        if recorded.burst:
            self.logger.warning("%s reports more than %d runs an hour; the others are counted, "
                                "not stored, until it slows down", client,
                                self.limits.max_runs_per_hour)
        with self._lock:
            now = time.monotonic()
            due = now >= self._next_prune
            if due:
                self._next_prune = now + PRUNE_INTERVAL
        if due:
            self.prune()

    def shutdown(self) -> None:
        Statistics.shutdown(self)
        with self._lock:
            if self._store is not None:
                self._store.close()

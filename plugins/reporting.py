"""Reporting: every client run an agent reports, stored for bcfg2-admin reports.

Each ``RecvStats`` upload becomes one run in the embedded SQLite database
(``bcfg2.reportdb``), written before the agent's call returns: its state,
counts, and the bad, modified and extra entries with their reasons. Runs
older than ``[reporting] keep_days`` are pruned (each client's latest run is
kept however old), at start-up and then at most once an hour.

Upstream's ``[reporting] transport`` and Django settings are not needed:
the database is local and always there.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import lxml.etree

from bcfg2.errors import PluginInitError
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Statistics
from bcfg2.reportdb import RunStore, database_path

PRUNE_INTERVAL = 3600.0


class Reporting(Statistics):
    """Stores client runs in SQLite; ``bcfg2-admin reports`` reads them."""

    def __init__(self, core: Any) -> None:
        Statistics.__init__(self, core)
        self.keep_days = float(core.setup.reporting.keep_days)
        try:
            self.store = RunStore(database_path(core.setup))
        except (OSError, sqlite3.Error) as err:
            raise PluginInitError(f"cannot open the run database: {err}") from err
        self._prune_lock = threading.Lock()
        self._last_prune = 0.0
        self.prune()

    def prune(self) -> int:
        """Drop the runs older than ``[reporting] keep_days``; how many went."""
        with self._prune_lock:
            self._last_prune = time.monotonic()
        try:
            removed = self.store.prune(self.keep_days)
        except sqlite3.Error as err:
            self.logger.error("cannot prune old runs: %s", err)
            return 0
        if removed:
            self.logger.info("pruned %d runs older than %g days", removed, self.keep_days)
        return removed

    def process_statistics(self, metadata: ClientMetadata, data: lxml.etree._Element) -> None:
        """Record the run; prune if the last pruning is an hour old."""
        self.store.record(metadata.hostname, data)
        with self._prune_lock:
            due = time.monotonic() - self._last_prune >= PRUNE_INTERVAL
        if due:
            self.prune()

    def shutdown(self) -> None:
        Statistics.shutdown(self)
        self.store.close()

"""The Reporting plugin: its [reporting] limits reach the run database, bursts are logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import lxml.etree
from conftest import Repo

from bcfg2.reportdb import RunStore

UPLOAD = ('<upload-statistics><Statistics version="2.0" total="2" good="1" state="dirty">'
          '<Bad><Path name="/etc/big" type="file" current_bfile="{content}"/></Bad>'
          "</Statistics></upload-statistics>")


def test_a_burst_of_runs_is_stored_up_to_the_cap_and_logged_once(
        repo: Repo, local_core, caplog, tmp_path: Path) -> None:
    core = local_core(repo.path, reporting__max_runs_per_hour="2",
                      reporting__max_entry_content="8")
    plugin = core.plugins["Reporting"]
    upload = lxml.etree.fromstring(UPLOAD.format(content="QUJD" * 100))
    with caplog.at_level(logging.WARNING, logger=plugin.logger.name):
        for _ in range(5):
            core.process_statistics("client1", upload)  # the agent's call succeeds each time
    warnings = [r.getMessage() for r in caplog.records if "runs an hour" in r.getMessage()]
    assert warnings == ["client1 reports more than 2 runs an hour; the others are counted, "
                        "not stored, until it slows down"]
    store = RunStore(plugin.path, create=False)
    try:
        assert store.count() == 2
        assert store.dropped_runs()["client1"][0] == 3
        entry = store.latest("client1").entries[0]
        assert entry.truncated == ("current_bfile",)
        assert entry.attrs["current_bfile"].startswith("QUJDQUJD...")
    finally:
        store.close()

"""An agent run through a network core with ``[database] engine = postgresql``.

Registration at first contact, the declared version, probe data and groups,
and the run's statistics all land in PostgreSQL (and nothing in SQLite
files); a second server on the same database knows the client and its
probe groups; a restart of the database between runs is survived.
"""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo
from test_reports_cli import statistics

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes,Reporting"
GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true" default="true"/>
  <Group name="webserver"><Bundle name="web"/></Group>
</Groups>
"""
UPLOAD = ('<ProbeData><probe-data name="role" source="Probes">group:webserver\n'
          'nginx\n</probe-data></ProbeData>')


def pg_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/web.xml", '<Bundle name="web"><Package name="nginx"/></Bundle>')
    repo.write("Probes/role", "#!/bin/sh\necho group:webserver\n")
    return repo


def bundles(config: lxml.etree._Element) -> set[str]:
    return {b.get("name") for b in config.iter("Bundle")}


def agent_run(server, user: str, password: str) -> lxml.etree._Element:
    agent = server.proxy(user, password)
    assert agent.DeclareVersion("1.4.0") is True
    assert lxml.etree.fromstring(agent.GetProbes().encode()).find("probe").get("name") == "role"
    assert agent.RecvProbeData(UPLOAD) is True
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    assert agent.RecvStats(statistics(config, {})) is True
    return config


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_an_agent_run_lands_in_postgresql(repo: Repo, network_server, pg_database,
                                          tmp_path: Path, core: str) -> None:
    """(The multiprocessing core's children, started fresh, each make their own pool.)"""
    pg_repo(repo)
    options = dict(server__plugins=PLUGINS, probes__allowed_groups="webserver", core=core,
                   server__children="2", **pg_database.overrides)
    first = network_server(repo, **options)
    config = agent_run(first, "newhost", "globalpw")  # unknown to clients.xml: registered
    assert bundles(config) == {"web"}

    assert pg_database.query("SELECT name, profile, version FROM clients") == [
        ("newhost", "basic", "1.4.0")]
    assert pg_database.query("SELECT client, name, value FROM probes") == [
        ("newhost", "role", "nginx\n")]
    assert pg_database.query("SELECT client, name FROM groups") == [("newhost", "webserver")]
    assert pg_database.query("SELECT client, state, total FROM runs") == [
        ("newhost", "clean", 1)]
    assert sorted(pg_database.query("SELECT store, version FROM schema_versions")) == [
        ("cache_events", 1), ("clients", 2), ("probes", 1), ("reporting", 3)]
    assert list((tmp_path / "state").rglob("*.sqlite")) == []

    # another server on the same database (its own state directory) knows the client
    second = network_server(repo, server__state_dir=str(tmp_path / "state2"), **options)
    assert "newhost" in second.admin().Metadata.list_clients()
    assert bundles(lxml.etree.fromstring(
        second.proxy("newhost", "globalpw").GetConfig().encode())) == {"web"}

    # the database restarts (every connection of both servers is cut): the next run works
    assert pg_database.terminate_others() >= 1
    agent_run(first, "newhost", "globalpw")
    assert pg_database.query("SELECT count(*) FROM runs") == [(2,)]


def test_a_write_whose_commit_was_lost_is_never_acknowledged(repo: Repo, network_server,
                                                             pg_database, monkeypatch) -> None:
    from bcfg2.storage.postgresql import PostgreSQLDatabase

    pg_repo(repo)
    server = network_server(repo, server__plugins=PLUGINS, probes__allowed_groups="webserver",
                            **pg_database.overrides)
    agent = server.proxy("client1", "pw1")
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    assert agent.RecvStats(statistics(config, {})) is True  # the run database is open now
    real_commit = PostgreSQLDatabase._commit

    def lost(self, conn) -> None:
        if not conn.read_only:  # every write's COMMIT is cut off
            pg_database.terminate(conn.info.backend_pid)
        real_commit(self, conn)

    monkeypatch.setattr(PostgreSQLDatabase, "_commit", lost)
    for call in (lambda: agent.RecvProbeData(UPLOAD),
                 lambda: agent.RecvStats(statistics(config, {}))):
        with pytest.raises(xmlrpc.client.Fault, match="server-side error"):
            call()
    monkeypatch.setattr(PostgreSQLDatabase, "_commit", real_commit)
    assert pg_database.query("SELECT count(*) FROM runs") == [(1,)]
    assert pg_database.query("SELECT count(*) FROM probes") == [(0,)]
    assert agent.RecvStats(statistics(config, {})) is True  # sent again, stored once
    assert pg_database.query("SELECT count(*) FROM runs") == [(2,)]

"""Two servers on one PostgreSQL database: what one learns, the other serves.

Server A (builtin core) and server B (builtin or multiprocessing) share the
test's PostgreSQL database, each with a state directory of its own, and
keep complete metadata cached (``aggressive``), so B serves stale groups
unless something tells it. Two paths do: the cache events A publishes
(NOTIFY, read by B's listener) and the per-client generation counter B
reads at each call (read-your-writes without NOTIFY). Each is tested with
the other turned off, and with both off B is shown to serve stale groups.
"""

from __future__ import annotations

import statistics as stats
import threading
import time
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from conftest import Repo, wait_until

from bcfg2.cache import Expiry

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes"
GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true" default="true">
    <Group name="linux"/>
  </Group>
  <Group name="other" profile="true"/>
  <Group name="linux"><Bundle name="base"/></Group>
  <Group name="webserver"><Bundle name="web"/></Group>
  <Group name="dbserver"><Bundle name="db"/></Group>
</Groups>
"""
ROLE = {"webserver": {"base", "web"}, "dbserver": {"base", "db"}}


def upload(role: str) -> str:
    return (f'<ProbeData><probe-data name="role" source="Probes">group:{role}\n'
            f'</probe-data></ProbeData>')


@pytest.fixture
def fleet(repo: Repo, pg_database, network_server, tmp_path: Path):
    """Factory: start server ``name`` (core ``core``) on the test's database.

    (The database is requested first, so the servers stop before it is dropped.)
    """
    repo.write("Metadata/groups.xml", GROUPS)
    for bundle, package in (("base", "bash"), ("web", "nginx"), ("db", "postgresql")):
        repo.write(f"Bundler/{bundle}.xml",
                   f'<Bundle name="{bundle}"><Package name="{package}"/></Bundle>')
    repo.write("Probes/role", "#!/bin/sh\necho group:webserver\n")

    def start(name: str, core: str = "builtin", **extra: Any):
        server = network_server(
            repo, core=core, server__plugins=PLUGINS, server__name=name,
            server__state_dir=str(tmp_path / f"state-{name}"), server__children="2",
            probes__allowed_groups="webserver dbserver", caching__client_metadata="aggressive",
            **pg_database.overrides, **extra)
        assert server.core.fleet is not None
        wait_until(server.core.fleet.listening.is_set, 30, f"{name} to listen")
        return server

    return start


def bundles(server, client: str = "client1", password: str = "pw1") -> set[str]:
    config = lxml.etree.fromstring(server.proxy(client, password).GetConfig().encode())
    return {b.get("name") for b in config.iter("Bundle")}


def send(server, role: str, client: str = "client1", password: str = "pw1") -> None:
    assert server.proxy(client, password).RecvProbeData(upload(role)) is True


def settle(pg_database, b, uploads: int = 1) -> None:
    """Wait until A has published its first ``uploads`` probe expiries and B has read them
    (so B caches what it builds next, rather than dropping it for an expiry on its way)."""
    def count() -> int:
        return pg_database.query("SELECT count(*) FROM cache_events WHERE server = 'A' "
                                 "AND tag = 'Probes'")[0][0]

    wait_until(lambda: count() >= uploads, 30, "A to publish its expiries")
    top = pg_database.query("SELECT max(id) FROM cache_events")[0][0]
    wait_until(lambda: b.core.fleet.last_seen >= top, 30, "B to read them")


def no_counter(server) -> None:
    """Turn off B's generation check: only the events can tell it."""
    server.core.fleet.check = lambda client: None


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
@pytest.mark.parametrize("path", ["notify", "counter"])
def test_a_probe_upload_on_a_changes_the_groups_b_serves(fleet, pg_database, core: str,
                                                         path: str) -> None:
    a, b = fleet("A"), fleet("B", core=core)
    send(a, "webserver")
    settle(pg_database, b)
    assert bundles(b) == ROLE["webserver"]  # cached by B (by its children if it has them)
    if path == "notify":
        no_counter(b)
    else:
        b.core.fleet.stop_listening()
    send(a, "dbserver")
    if path == "counter":  # read-your-writes: the very next call
        assert bundles(b) == ROLE["dbserver"]
    else:  # the event reaches B (and B's children) soon after
        wait_until(lambda: bundles(b) == ROLE["dbserver"], 30, "B to serve the new groups")
    assert bundles(a) == ROLE["dbserver"]


def test_without_events_or_counter_b_serves_stale_groups(fleet, pg_database) -> None:
    """The control: what the two paths above prevent."""
    a, b = fleet("A"), fleet("B")
    send(a, "webserver")
    settle(pg_database, b)
    assert bundles(b) == ROLE["webserver"]
    no_counter(b)
    b.core.fleet.stop_listening()
    send(a, "dbserver")
    assert bundles(a) == ROLE["dbserver"]
    assert bundles(b) == ROLE["webserver"]


def test_a_client_registered_on_a_is_known_to_b_and_its_children(fleet) -> None:
    a, b = fleet("A"), fleet("B", core="multiprocessing")
    assert bundles(b) == {"base"}  # B is up, its children too
    assert "newhost" not in b.admin().Metadata.list_clients()
    no_counter(b)
    assert bundles(a, "newhost", "globalpw") == {"base"}  # registered at first contact
    wait_until(lambda: "newhost" in b.admin().Metadata.list_clients(), 30,
               "B to know the client A registered")
    # B's child renders for it (B's parent registers nobody again: the row is A's)
    assert bundles(b, "newhost", "globalpw") == {"base"}


def test_a_client_deleted_by_the_admin_tool_is_forgotten_by_every_server(
        fleet, repo: Repo, pg_database, tmp_path: Path) -> None:
    """``bcfg2-admin client del`` on one machine: every server sharing the database is
    told at once (not only through the counter, when the client next calls it)."""
    from conftest import make_setup

    from bcfg2.admin import client as client_tool

    a, b = fleet("A"), fleet("B", core="multiprocessing")
    no_counter(b)
    assert bundles(a, "newhost", "globalpw") == {"base"}  # registered at first contact
    wait_until(lambda: "newhost" in b.admin().Metadata.list_clients(), 30,
               "B to know the client A registered")
    setup = make_setup(repo, server__state_dir=str(tmp_path / "state-tool"),
                       **pg_database.overrides)
    clients = str(repo.path / "Metadata" / "clients.xml")
    client_tool.delete_client(clients, client_tool._state_file(setup, clients), "newhost",
                              setup)
    wait_until(lambda: "newhost" not in b.admin().Metadata.list_clients(), 30,
               "B to forget the deleted client")
    assert pg_database.query("SELECT server, tag FROM cache_events WHERE clients = "
                             "'[\"newhost\"]' ORDER BY id DESC LIMIT 1") == [
        ("bcfg2-admin", "Metadata")]


def test_the_generation_counter_counts_probe_and_state_writes(fleet, pg_database) -> None:
    a = fleet("A")
    send(a, "webserver")
    first = pg_database.query("SELECT generation FROM client_generations WHERE client = "
                              "'client1'")[0][0]
    send(a, "webserver")  # the same data again: nothing changed, nothing counted
    assert pg_database.query("SELECT generation FROM client_generations WHERE client = "
                             "'client1'") == [(first,)]
    send(a, "dbserver")
    assert pg_database.query("SELECT generation FROM client_generations WHERE client = "
                             "'client1'") == [(first + 1,)]
    assert a.proxy("client1", "pw1").DeclareVersion("1.4.0") is True
    assert pg_database.query("SELECT generation FROM client_generations WHERE client = "
                             "'client1'") == [(first + 2,)]
    # the event rows name the client and the tag, never the probe data
    rows = pg_database.query("SELECT server, clients, tag FROM cache_events ORDER BY id")
    assert ("A", '["client1"]', "Probes") in rows
    assert all("group:" not in (clients or "") for _, clients, _ in rows)


class Gate:
    """Holds B's listener back from reconnecting until opened."""

    def __init__(self, fleet_: Any) -> None:
        self.open = threading.Event()
        self.waiting = threading.Event()
        original = fleet_._connect

        def connect() -> Any:
            self.waiting.set()
            self.open.wait(60)
            return original()

        fleet_._connect = connect


def cut_listener(pg_database, b) -> Gate:
    """Terminate B's listening backend; B then waits at the gate to reconnect."""
    gate = Gate(b.core.fleet)
    pg_database.terminate(b.core.fleet.listener_pid)
    wait_until(gate.waiting.is_set, 30, "B's listener to notice the lost connection")
    return gate


def test_a_lost_listener_connection_is_survived_and_missed_events_replayed(
        fleet, pg_database, caplog: pytest.LogCaptureFixture) -> None:
    a, b = fleet("A"), fleet("B")
    send(a, "webserver")
    settle(pg_database, b)
    no_counter(b)
    assert bundles(b) == ROLE["webserver"]
    assert bundles(b, "client2", "pw2") == set()
    cache = b.core.metadata_cache
    assert {"client1", "client2"} <= set(cache.clients())
    gate = cut_listener(pg_database, b)
    try:
        send(a, "dbserver")  # its NOTIFY is sent while B is not listening
        wait_until(lambda: pg_database.query("SELECT count(*) FROM cache_events WHERE "
                                             "server = 'A' AND tag = 'Probes'")[0][0] >= 2,
                   30, "A to publish the expiry")
        assert "client1" in cache  # nothing told B yet
    finally:
        gate.open.set()
    wait_until(b.core.fleet.listening.is_set, 30, "B to listen again")
    wait_until(lambda: "client1" not in cache, 30, "B to replay the missed event")
    assert "client2" in cache  # replayed precisely: not everything expired
    assert bundles(b) == ROLE["dbserver"]
    lost = [r for r in caplog.records if "lost the connection that listens" in r.getMessage()]
    assert len(lost) == 1


def test_events_pruned_before_b_read_them_expire_everything(fleet, pg_database) -> None:
    a, b = fleet("A"), fleet("B")
    send(a, "webserver")
    settle(pg_database, b)
    no_counter(b)
    assert bundles(b) == ROLE["webserver"]
    assert bundles(b, "client2", "pw2") == set()
    cache = b.core.metadata_cache
    gate = cut_listener(pg_database, b)
    try:
        send(a, "dbserver")
        wait_until(lambda: pg_database.query("SELECT count(*) FROM cache_events WHERE "
                                             "server = 'A' AND tag = 'Probes'")[0][0] >= 2,
                   30, "A to publish the expiry")
        assert a.core.fleet.prune(time.time() + 2 * a.core.fleet.retention) >= 2
        assert pg_database.query("SELECT count(*) FROM cache_events") == [(0,)]
        generation = cache.generation
        assert {"client1", "client2"} <= set(cache.clients())
    finally:
        gate.open.set()
    wait_until(lambda: len(cache) == 0, 30, "B to expire everything")
    assert cache.generation > generation
    assert bundles(b) == ROLE["dbserver"]


def test_events_are_kept_for_the_retention_only(fleet, pg_database) -> None:
    a = fleet("A", database__event_retention="600")
    send(a, "webserver")
    wait_until(lambda: pg_database.query("SELECT count(*) FROM cache_events")[0][0] >= 1,
               30, "A to publish")
    assert a.core.fleet.prune(time.time()) == 0  # younger than the retention
    assert a.core.fleet.prune(time.time() + 601) >= 1
    assert pg_database.query("SELECT count(*) FROM cache_events") == [(0,)]


def test_latency_from_an_upload_on_a_to_b_serving_it(fleet, pg_database) -> None:
    """Measured, not asserted: median over 50 uploads, by each path."""
    a, b = fleet("A"), fleet("B")
    applied = threading.Event()
    stamp = [0.0]

    def on_expiry(expiry: Expiry) -> None:
        if expiry.relayed_from("Probes") and expiry.clients and "client1" in expiry.clients:
            stamp[0] = time.monotonic()
            applied.set()

    b.core.metadata_cache.subscribe(on_expiry)
    send(a, "webserver")
    settle(pg_database, b)
    assert bundles(b) == ROLE["webserver"]
    counter = []
    for i in range(50):
        role = ("dbserver", "webserver")[i % 2]
        applied.clear()
        start = time.monotonic()
        send(a, role)
        served = bundles(b)
        counter.append(time.monotonic() - start)
        assert served == ROLE[role]
    # NOTIFY alone: B's generation check off, the time until B's cache has the expiry
    no_counter(b)
    notify_only, after_ack = [], []
    for i in range(50):
        role = ("dbserver", "webserver")[i % 2]
        assert bundles(b) == ROLE[("webserver", "dbserver")[i % 2]]  # B caches the old
        applied.clear()
        start = time.monotonic()
        send(a, role)
        acked = time.monotonic()
        assert applied.wait(30)
        notify_only.append(stamp[0] - start)
        after_ack.append(stamp[0] - acked)
        assert bundles(b) == ROLE[role]
    print(f"\nupload on A to B serving the new groups (counter path, upload + one GetConfig): "
          f"median {stats.median(counter) * 1000:.1f} ms; upload start to B's cache expiry "
          f"(NOTIFY path): median {stats.median(notify_only) * 1000:.1f} ms "
          f"(p90 {sorted(notify_only)[44] * 1000:.1f} ms; after A acknowledged the upload: "
          f"median {stats.median(after_ack) * 1000:.1f} ms)")


def test_a_sqlite_server_runs_none_of_it(repo: Repo, network_server, tmp_path: Path) -> None:
    import sqlite3

    server = network_server(repo, server__plugins=PLUGINS, server__state_dir=str(tmp_path / "s"))
    assert server.core.fleet is None
    assert server.proxy("client1", "pw1").RecvProbeData("<ProbeData/>") is True
    assert lxml.etree.fromstring(server.proxy("client1", "pw1").GetConfig().encode()).tag \
        == "Configuration"
    for path in (tmp_path / "s").rglob("*.sqlite"):
        with sqlite3.connect(path) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert not tables & {"cache_events", "client_generations"}, path


def test_an_expiry_that_cannot_be_stored_is_sent_later(fleet, pg_database,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from bcfg2.errors import StorageError

    a, b = fleet("A"), fleet("B")
    real_send = a.core.fleet._send
    failures = []

    def flaky(batch):
        if len(failures) < 3:
            failures.append(batch)
            raise StorageError("the database is away")
        return real_send(batch)

    a.core.fleet._send = flaky
    b.core.fleet.check = lambda client: None
    assert bundles(b) == {"base"}
    send(a, "webserver")
    wait_until(lambda: len(failures) == 3, 30, "A to try three times")
    wait_until(lambda: bundles(b) == ROLE["webserver"], 30, "B to hear of it at last")
    assert len([r for r in caplog.records
                if "cannot announce" in r.getMessage()]) == 1  # once per outage


def test_servers_are_named_by_port_unless_named(fleet) -> None:
    import socket

    a = fleet("A")
    assert a.core.fleet.name == "A"
    unnamed = fleet("")
    assert unnamed.core.fleet.name == f"{socket.gethostname()}:{unnamed.port}"

"""Three servers (builtin and multiprocessing cores) on one PostgreSQL behind one HAProxy.

Round-robin balancing sends each call of an agent's run to the next
server: the run works only if nothing of it lives in one server's memory.
A server killed with SIGKILL loses no write it acknowledged, and the
balancer's other servers go on serving; a PostgreSQL restart fails the
calls in flight with a Fault and no later call.
"""

from __future__ import annotations

import ssl
import xmlrpc.client
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo, wait_until
from fleet_harness import HAPROXY, Fleet
from test_postgresql_storage import PLUGINS, agent_run, pg_repo
from test_reports_cli import statistics

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed "
                                                        "(apt-get install haproxy)")

CLIENTS = """\
<Clients>
  <Client name="agent1.example.com" profile="basic" uuid="agent1" password="agent1-pw"/>
  <Client name="agent2.example.com" profile="basic" uuid="agent2" password="agent2-pw"/>
</Clients>
"""
@pytest.fixture
def fleet(repo: Repo, tls, network_server, pg_database, tmp_path: Path):
    pg_repo(repo)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Rules/packages.xml", '<Rules><Package name="nginx" type="deb" version="auto"/>'
                                     '</Rules>')
    made = Fleet(repo, tls, network_server, pg_database, tmp_path / "fleet", PLUGINS,
                 probes__allowed_groups="webserver")
    yield made
    made.stop()


def runs_of(pg_database, client: str) -> int:
    return pg_database.query("SELECT COUNT(*) FROM runs WHERE client = %s", (client,))[0][0]


def test_runs_spread_over_the_servers_share_one_state(fleet: Fleet, pg_database) -> None:
    for core in ("builtin", "multiprocessing", "builtin"):
        fleet.add(core)
    fleet.start_haproxy()
    configs = [agent_run(fleet, "agent1", "agent1-pw") for _ in range(3)]
    # the probe data sent to one server gave the bundle the config another server built
    assert all({b.get("name") for b in c.iter("Bundle")} == {"web"} for c in configs)
    served = fleet.sessions()
    assert len(served) == 3 and all(served.values()), f"a server got no call: {served}"
    assert runs_of(pg_database, "agent1.example.com") == 3  # each run once, in one history
    # a client first seen through one server is known to the others
    agent_run(fleet, "agent2", "agent2-pw")
    assert {row[0] for row in pg_database.query("SELECT name FROM clients")} >= {
        "agent1.example.com", "agent2.example.com"}


def test_a_killed_server_loses_no_acknowledged_write_and_the_others_serve_on(
        fleet: Fleet, pg_database, processes) -> None:
    fleet.add("builtin")
    doomed = fleet.add_process(processes)
    fleet.add("multiprocessing")
    fleet.start_haproxy()
    acknowledged = 0
    for _ in range(2):
        agent_run(fleet, "agent1", "agent1-pw")
        acknowledged += 1
    doomed.kill()
    fleet.wait_up(2)  # the balancer's health checks notice

    def first_run() -> bool:
        # a connection HAProxy opened to the dead server just before it was marked down
        # fails at the TLS level, and an agent simply connects again
        try:
            agent_run(fleet, "agent1", "agent1-pw")
        except (ssl.SSLError, ConnectionError, xmlrpc.client.ProtocolError):
            return False
        return True

    wait_until(first_run, 30, "an agent run through the two servers left")
    acknowledged += 1
    for _ in range(2):
        agent_run(fleet, "agent1", "agent1-pw")
        acknowledged += 1
    assert runs_of(pg_database, "agent1.example.com") == acknowledged


def test_a_postgresql_restart_fails_the_calls_in_flight_and_no_later_one(
        fleet: Fleet, pg_database, pg_cluster) -> None:
    for core in ("builtin", "multiprocessing"):
        fleet.add(core)
    fleet.start_haproxy()
    agent_run(fleet, "agent1", "agent1-pw")
    pg_cluster.pause()
    agent = fleet.proxy("agent1", "agent1-pw")
    try:
        with pytest.raises(xmlrpc.client.Fault):
            agent.RecvStats(statistics(lxml.etree.fromstring(agent.GetConfig().encode()), {}))
    finally:
        pg_cluster.resume()

    def run_again() -> bool:
        # until the servers' pools have connected again, a call fails at once with a Fault
        # (never waits long, never loses a write): an agent tries again at its next run
        try:
            agent_run(fleet, "agent1", "agent1-pw")
        except xmlrpc.client.Fault:  # clear, and nothing half-stored: the next run counts
            return False
        return True

    wait_until(run_again, 60, "an agent run after PostgreSQL is back")
    agent_run(fleet, "agent1", "agent1-pw")
    assert runs_of(pg_database, "agent1.example.com") == 3

"""Metadata is built once per request, and a render never sees metadata older than the last expiry.

Builds are counted as an admin sees them: the ``build_metadata`` count of
``get_statistics``, which the multiprocessing core merges over its children.
"""

from __future__ import annotations

import lxml.etree
import pytest
from conftest import CORES, RunningServer, probe_groups_repo

AGENT = ("uuid-client1", "pw1")

#: agent methods pass by address (no metadata needed for the ACL); plugin RMI defers,
#: and metadata.xml grants Metadata.list_clients to the group basic (client1)
IP_ACL = '<ACL><Allow method="*"/><Defer method="*.*"/></ACL>'
METADATA_ACL = '<ACL><Group name="basic"><Allow method="Metadata.list_clients"/></Group></ACL>'

PROBE_DATA = ('<ProbeData><probe-data name="role" source="Probes">group:{group}\n'
              '</probe-data></ProbeData>')


def builds(server: RunningServer) -> int:
    """How many times metadata has been built, in every process of the server.

    The metadata an ACL check sees (from the repository alone) counts as a build too.
    """
    stats = server.admin().get_statistics()
    return sum(int(stats.get(name, (0, 0, 0, 0))[3])
               for name in ("build_metadata", "build_trusted_metadata"))


@pytest.mark.parametrize("core_name", CORES)
@pytest.mark.parametrize("mode", ["off", "initial", "cautious", "aggressive"])
def test_each_request_builds_metadata_once(repo, network_server, core_name, mode):
    repo.write("ACL/ip.xml", IP_ACL)
    repo.write("ACL/metadata.xml", METADATA_ACL)
    repo.write("Probes/role", "#!/bin/sh\necho group:basic\n")
    server = network_server(repo, core=core_name, caching__client_metadata=mode,
                            server__plugins="Metadata,Bundler,Cfg,Rules,Probes,ACL",
                            probes__allowed_groups="basic linux",
                            server__children="1")
    agent = server.proxy(*AGENT)
    assert agent.DeclareVersion("1.4.0") is True
    calls = {
        "GetProbes": agent.GetProbes,
        "RecvProbeData": lambda: agent.RecvProbeData(PROBE_DATA.format(group="linux")),
        "GetConfig": agent.GetConfig,
        "GetDecisionList": lambda: agent.GetDecisionList("whitelist"),
        "RecvStats": lambda: agent.RecvStats(
            '<upload-statistics><Statistics version="2.0" state="clean"/>'
            '</upload-statistics>'),
        "Metadata.list_clients (ACL-checked)": agent.Metadata.list_clients,
    }
    counts = {}
    for name, call in calls.items():
        assert server.admin().expire_metadata_cache() is True  # every call starts cold
        before = builds(server)
        call()
        counts[name] = builds(server) - before
    assert counts == dict.fromkeys(calls, 1)


def test_a_render_right_after_probe_data_sees_the_new_groups_1000_times(repo, network_server):
    """RecvProbeData runs in the parent, GetConfig in a child: the expiry must arrive first."""
    probe_groups_repo(repo)
    server = network_server(repo, core="multiprocessing", caching__client_metadata="aggressive",
                            server__plugins="Metadata,Bundler,Cfg,Rules,Probes",
                            probes__allowed_groups="alpha beta",
                            server__children="2")
    core = server.core
    wrong = []
    for i in range(1000):
        group = ("alpha", "beta")[i % 2]
        caller = core.authenticate(None, *AGENT, ("127.0.0.1", 40000 + i))
        assert core.RecvProbeData(caller, PROBE_DATA.format(group=group)) is True
        caller = core.authenticate(None, *AGENT, ("127.0.0.1", 40000 + i))
        config = lxml.etree.fromstring(str(core.GetConfig(caller)).encode())
        bundles = {b.get("name") for b in config.iter("Bundle")}
        if group not in bundles or ({"alpha", "beta"} - {group}) & bundles:
            wrong.append((i, group, sorted(bundles)))
    assert wrong == []

"""The configuration cache on the multiprocessing core: each child keeps its own, and
drops what a repository edit, a probe upload or a change of the client's metadata
made stale, whichever child serves the next request."""

from __future__ import annotations

import lxml.etree
from conftest import Repo
from test_multiprocessing_core import WEB1, ready_children, start

PROBE = ('<ProbeData><probe-data name="virt" source="Probes">kvm\ngroup:virtual'
         '</probe-data></ProbeData>')


def motd(config: str) -> str:
    return lxml.etree.fromstring(config.encode()).xpath("//Path[@name='/etc/motd']")[0].text


def cached_count(server) -> int:  # noqa: ANN001
    return int(server.admin().get_statistics().get("GetConfig:cached", (0, 0, 0, 0))[3])


def test_children_keep_configurations_until_what_they_were_built_from_changes(
        example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo, caching__client_metadata="cautious",
                   probes__allowed_groups="virtual")
    ready_children(server, 2)
    agent = server.proxy(*WEB1)
    served = [agent.GetConfig() for _ in range(6)]
    assert len(set(served)) == 1
    # each child built it once at most: the rest came from the children's caches
    assert cached_count(server) >= 4

    # an edit reaches every child: none serves its kept configuration again
    (example_repo.path / "Cfg/etc/motd/motd.G10_web").write_text("edited\n")
    assert all(motd(agent.GetConfig()) == "edited\n" for _ in range(4))

    # probe data the parent stored: the client is now virtual, in every child
    before = cached_count(server)
    assert agent.RecvProbeData(PROBE) is True
    after_probe = [agent.GetConfig() for _ in range(4)]
    assert all("a virtual machine (kvm)" in motd(config) for config in after_probe)
    assert len(set(after_probe)) == 1 and after_probe[0] != served[0]

    # a profile asserted in the parent: the children serve the new profile's configuration
    assert agent.AssertProfile("dbserver") is True
    sshd = lxml.etree.fromstring(agent.GetConfig().encode()).xpath(
        "//Path[@name='/etc/ssh/sshd_config']")[0]
    assert "RHEL flavour" in sshd.text
    assert cached_count(server) > before  # and kept serving from the caches meanwhile


def test_the_cache_can_be_turned_off(example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo, caching__configurations="0")
    agent = server.proxy(*WEB1)
    before = cached_count(server)  # the statistics of this process's earlier servers
    assert len({agent.GetConfig() for _ in range(4)}) == 1
    assert cached_count(server) == before

"""The configuration cache on the multiprocessing core: each child keeps its own, and
the parent keeps what they hand it, and each drops what a repository edit, a probe
upload or a change of the client's metadata made stale, whichever child serves the
next request."""

from __future__ import annotations

import random

import lxml.etree
import pytest
from cache_world import CLIENTS, PLUGINS, World, from_scratch
from conftest import Repo
from test_multiprocessing_core import WEB1, ready_children, start

from bcfg2.identity import Caller

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


def caller(client: str) -> Caller:
    return Caller(("127.0.0.1", 4000), client=client)


@pytest.mark.parametrize("mode", ["aggressive", "off"])
def test_randomised_changes_never_have_the_parent_serve_a_stale_configuration(
        tmp_path, network_server, local_core, mode: str) -> None:
    """As the configuration-cache test of one process, with the multiprocessing core's
    parent serving what its children kept: after each random step, every client's
    configuration (asked of the parent as an agent's call is) equals a fresh build by
    another core over the same repository and state (the parent itself builds nothing:
    building there would give its plugins what they compare changes with)."""
    repo = Repo(tmp_path / "repo")
    world = World(repo, random.Random(17))
    options = {"server__plugins": PLUGINS, "probes__allowed_groups": "g[0-9]"}
    server = start(network_server, repo, caching__client_metadata=mode, **options)
    fresh = local_core(repo, server__filemonitor="inotify", caching__client_metadata="off",
                       caching__configurations="0", **options)
    ready_children(server, 2)
    core = server.core
    assert core.keeps_configurations
    counts = core.config_cache.counts
    kinds: dict[str, int] = {}
    steps = 500
    for number in range(steps):
        kind = world.step(core)  # probe data as RecvProbeData stores it, in the parent
        kinds[kind] = kinds.get(kind, 0) + 1
        fresh.refresh()
        fresh.metadata_cache.expire()  # it reads the probe data the parent stored anew
        for client in CLIENTS:
            served = str(core.GetConfig(caller(client)))
            assert served == from_scratch(fresh, client), \
                f"step {number} ({kind}): {client} was served a stale configuration"
    # most steps change what a few clients get: the parent serves the others itself
    assert counts["hits"] > steps * len(CLIENTS) * 0.3, counts
    assert counts["stored"] > steps, counts
    assert len(kinds) == 14, kinds


def test_the_parent_serves_what_it_keeps_without_asking_a_child(
        example_repo: Repo, network_server, monkeypatch) -> None:
    server = start(network_server, example_repo)
    ready_children(server, 2)
    core = server.core
    agent = server.proxy(*WEB1)
    first = agent.GetConfig()
    asked: list[str] = []
    rpc = core.rpc
    monkeypatch.setattr(core, "rpc", lambda child, method, *args, **kwargs: (
        asked.append(method), rpc(child, method, *args, **kwargs))[1])
    assert [agent.GetConfig() for _ in range(3)] == [first] * 3
    assert asked == []
    # an edit: the next call goes to a child, the one after is kept again
    (example_repo.path / "Cfg/etc/motd/motd.G10_web").write_text("edited\n")
    assert motd(agent.GetConfig()) == "edited\n"
    assert asked == ["GetConfig"]
    assert motd(agent.GetConfig()) == "edited\n"
    assert asked == ["GetConfig"]


def test_a_configuration_a_child_built_before_an_edit_the_parent_saw_is_not_kept(
        example_repo: Repo, network_server) -> None:
    """The child renders; before its answer is kept, an edit reaches the parent (the order
    a busy machine may give them): the parent must not keep the older configuration."""
    server = start(network_server, example_repo)
    ready_children(server, 2)
    core = server.core
    motd_file = example_repo.path / "Cfg/etc/motd/motd.G10_web"
    render = core._render

    def render_then_edit(client: str, generation: int):  # noqa: ANN202
        answer = render(client, generation)
        motd_file.write_text("edited meanwhile\n")
        core.catch_up()  # the parent handles the edit before it keeps the answer
        return answer

    core._render = render_then_edit
    agent = server.proxy(*WEB1)
    assert motd(agent.GetConfig()) != "edited meanwhile\n"  # built before the edit
    core._render = render
    assert motd(agent.GetConfig()) == "edited meanwhile\n"


def test_a_rules_edit_drops_what_the_parent_kept_though_it_built_no_rules(
        example_repo: Repo, network_server) -> None:
    """Rules says which of its names changed by comparing with the rules it built; the
    parent built none, so it drops every configuration that recorded a Rules name."""
    server = start(network_server, example_repo)
    ready_children(server, 2)
    core = server.core
    agent = server.proxy(*WEB1)
    agent.GetConfig()
    assert "web1.example.com" in core.config_cache
    rules = sorted((example_repo.path / "Rules").glob("*.xml"))[0]
    rules.write_text(rules.read_text().replace("<Rules", "<Rules ", 1))  # same rules
    core.catch_up()
    assert "web1.example.com" not in core.config_cache


def test_with_a_polling_monitor_the_parent_keeps_nothing(
        example_repo: Repo, network_server) -> None:
    """A polling child may not have seen an edit the parent saw: the children answer."""
    server = network_server(example_repo, core="multiprocessing", server__children="2",
                            server__filemonitor="pseudo")
    ready_children(server, 2)
    agent = server.proxy(*WEB1)
    assert len({agent.GetConfig() for _ in range(3)}) == 1
    assert not server.core.keeps_configurations
    assert len(server.core.config_cache) == 0


def test_a_failing_lookup_in_the_parent_leaves_the_answer_to_a_child(
        example_repo: Repo, network_server, monkeypatch, caplog) -> None:
    server = start(network_server, example_repo)
    ready_children(server, 2)
    agent = server.proxy(*WEB1)
    first = agent.GetConfig()

    def broken(client, metadata):  # noqa: ANN001, ANN202 - a plugin's cache_key raising
        raise RuntimeError("cache_key failed")

    monkeypatch.setattr(server.core, "kept_configuration", broken)
    assert agent.GetConfig() == first
    assert "Looking up the kept configuration of web1.example.com failed" in caplog.text

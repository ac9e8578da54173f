"""The configuration cache serves exactly what a fresh build gives, and keeps within bounds.

The main test makes thousands of random changes (seeded) to a small
repository, the clients' probe data and their metadata; after each one,
every client's configuration as the cache serves it must equal, byte for
byte, a build that bypasses the cache. A cache that kept one configuration
too long fails it; one that kept nothing would pass it, so the test also
asserts that most configurations were served from the cache.
"""

from __future__ import annotations

import base64
import os
import random
from pathlib import Path

import lxml.etree
import pytest
from cache_world import CLIENTS, PLUGINS, World, from_scratch
from conftest import Repo

from bcfg2.configcache import ConfigCache, TemplateReads, compress, depends_on, recording
from bcfg2.plugin import Generator, Plugin, not_cacheable

pytest.importorskip("pyinotify")

@pytest.mark.parametrize(("mode", "configurations", "steps"), [
    ("off", 10000, 1500), ("aggressive", 10000, 1000),
    ("off", 0, 1000),  # every configuration built, its entries copied where alike
])
def test_randomised_changes_never_serve_a_stale_configuration(
        tmp_path: Path, local_core, mode: str, configurations: int, steps: int) -> None:
    repo = Repo(tmp_path / "repo")
    world = World(repo, random.Random(16))
    core = local_core(repo, server__plugins=PLUGINS, server__filemonitor="inotify",
                      caching__client_metadata=mode, probes__allowed_groups="g[0-9]",
                      caching__configurations=configurations)
    counts = core.config_cache.counts
    kinds: dict[str, int] = {}
    for number in range(steps):
        kind = world.step(core)
        kinds[kind] = kinds.get(kind, 0) + 1
        core.refresh()
        for client in CLIENTS:
            served = core.serve_configuration(client, core.build_metadata(client))
            assert served == from_scratch(core, client), \
                f"step {number} ({kind}): {client} was served a stale configuration"
    if configurations:
        # most steps change what a few clients get: the others are served from the cache
        assert counts["hits"] > steps * len(CLIENTS) * 0.3, counts
        assert counts["dropped"] > steps, counts
    # and most bound entries of a build are copies of one bound for a client alike
    assert core.bind_memo.counts["hits"] > steps * len(CLIENTS) * 0.3, core.bind_memo.counts
    assert len(kinds) == 14, kinds  # every kind of step was taken


# -- what is cached, and what is not --------------------------------------------------------


def small_repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "repo")
    repo.write("Metadata/groups.xml", '<Groups><Group name="p" profile="true">'
                                      '<Bundle name="b"/></Group></Groups>')
    clients = "".join(f'<Client name="c{i}" profile="p"/>' for i in range(20))
    repo.write("Metadata/clients.xml", f'<Clients version="3.0">{clients}</Clients>')
    repo.write("Bundler/b.xml", '<Bundle><Path name="/etc/motd"/><Path name="/etc/t"/>'
                                '</Bundle>')
    repo.write("Cfg/etc/motd/motd", "x" * 5000)
    repo.write("Cfg/etc/motd/motd.H_c3", "for c3 " * 700)
    repo.write("Cfg/etc/t/t.genshi", "host ${metadata.hostname}\n")
    return repo


def serve_all(core, clients: list[str]) -> list[str]:  # noqa: ANN001
    return [core.serve_configuration(c, core.build_metadata(c)) for c in clients]


def test_a_change_drops_only_the_configurations_built_from_it(tmp_path: Path, local_core):
    repo = small_repo(tmp_path)
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg", server__filemonitor="inotify")
    clients = [f"c{i}" for i in range(20)]
    first = serve_all(core, clients)
    assert len(core.config_cache) == 20
    # c3 has a version of its own; the other 19 read the same files, indexed once
    assert core.config_cache.token_sets == 2
    (repo.path / "Cfg/etc/motd/motd.H_c3").write_text("c3 again")
    core.refresh()
    assert "c3" not in core.config_cache and len(core.config_cache) == 19
    second = serve_all(core, clients)
    assert second[:3] == first[:3] and "c3 again" in second[3]
    # a new version may be any client's: every configuration with the entry goes
    repo.write("Cfg/etc/motd/motd.H_c5", "c5 now")
    core.refresh()
    assert len(core.config_cache) == 0
    third = serve_all(core, clients)
    assert "c5 now" in third[5] and third[:5] == second[:5]
    # an entry nobody has yet: nobody's configuration depends on it
    repo.write("Cfg/etc/unused/unused", "u")
    core.refresh()
    assert len(core.config_cache) == 20


def test_memory_stays_within_the_bounds_least_recently_served_out(tmp_path: Path, local_core):
    repo = small_repo(tmp_path)
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg",
                      caching__configurations=5)
    clients = [f"c{i}" for i in range(20)]
    serve_all(core, clients)
    assert len(core.config_cache) == 5
    assert all(f"c{i}" in core.config_cache for i in range(15, 20))
    assert core.config_cache.counts["evicted"] == 15
    # by bytes: each configuration takes its compressed size, far less than its text
    text = serve_all(core, ["c19"])[0]
    assert len(compress(text)) < len(text) / 5
    five = core.config_cache.size  # five configurations and the file names they share
    one = local_core(repo, server__plugins="Metadata,Bundler,Cfg", caching__configurations=1)
    serve_all(one, clients)
    each = (five - one.config_cache.size) // 4  # what one more configuration costs
    bound = one.config_cache.size + 2 * each + each // 2  # room for about three of the five
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg",
                      caching__configuration_bytes=bound)
    served = serve_all(core, clients)
    assert 0 < len(core.config_cache) < 5 and core.config_cache.size <= bound
    assert serve_all(core, clients) == served


def test_the_cache_drops_the_oldest_configuration_when_a_new_one_exceeds_the_bytes():
    cache = ConfigCache(max_entries=100, max_bytes=2000)
    # random bytes do not compress: about 1100 bytes each once kept
    texts = {f"c{i}": base64.b64encode(os.urandom(1100)).decode() for i in range(5)}
    for name, text in texts.items():
        assert cache.store(name, "k", compress(text), ["/t"], cache.generation)
        assert cache.size <= 2000
    assert len(cache) == 1 and cache.lookup("c4", "k") == texts["c4"]
    assert not cache.store("big", "k", compress(os.urandom(3000).hex()), [], cache.generation)
    # what it depends on counts too: one whose tokens alone are over the bound is not kept
    assert not cache.store("deps", "k", compress("x"), [f"/repo/{i}" for i in range(20)],
                           cache.generation)
    assert cache.lookup("c4", "k") == texts["c4"] and cache.size <= 2000


class Undeclared(Plugin, Generator):
    """A third-party generator that says nothing about what it depends on."""

    def __init__(self, core) -> None:  # noqa: ANN001
        Plugin.__init__(self, core)
        Generator.__init__(self)
        self.Entries["Path"] = {"/etc/counter": self.bind}
        self.count = 0

    def bind(self, entry, metadata):  # noqa: ANN001, ANN201
        self.count += 1
        entry.set("type", "file")
        entry.text = str(self.count)
        return entry


class Clock(Undeclared):
    """A generator whose output is the world's: it declares so while building."""

    def cache_key(self, metadata) -> str:  # noqa: ANN001
        return ""

    def bind(self, entry, metadata):  # noqa: ANN001, ANN201
        not_cacheable("Clock serves a counter")
        return super().bind(entry, metadata)


@pytest.mark.parametrize("plugin", [Undeclared, Clock])
def test_a_plugin_that_cannot_say_or_says_world_makes_its_configurations_uncacheable(
        tmp_path: Path, local_core, register, plugin) -> None:
    register(plugin)
    repo = small_repo(tmp_path)
    repo.write("Bundler/b.xml", '<Bundle><Path name="/etc/motd"/><Path name="/etc/counter"/>'
                                '</Bundle>')
    core = local_core(repo, server__plugins=f"Metadata,Bundler,Cfg,{plugin.name}")
    served = serve_all(core, ["c1", "c1", "c1"])
    assert len(set(served)) == 3  # each one built anew: the counter goes up
    assert len(core.config_cache) == 0 and core.config_cache.counts["uncacheable"] == 3


def test_a_template_that_asks_for_the_time_is_never_kept(tmp_path: Path, local_core):
    repo = small_repo(tmp_path)
    repo.write("Cfg/etc/t/t.genshi", "{% python import time %}${time.time()}\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg")
    first, second = serve_all(core, ["c1", "c1"])
    assert first != second and len(core.config_cache) == 0
    assert TemplateReads.of("t", b"${metadata.hostname}").world is None
    assert TemplateReads.of("t", b"# time servers, open ports\n").world is None
    assert TemplateReads.of("t", b"{% python from datetime import date %}").world is not None
    assert TemplateReads.of("t", b"${open('/etc/passwd').read()}").world is not None


def test_a_probe_upload_and_a_metadata_expiry_drop_the_client(tmp_path: Path, local_core):
    repo = small_repo(tmp_path)
    repo.write("Cfg/etc/t/t.genshi", "${metadata.Probes.get('os', '-')}\n")
    repo.write("Probes/os", "#!/bin/sh\nuname\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Probes",
                      caching__client_metadata="aggressive")
    serve_all(core, ["c1", "c2"])
    probe = lxml.etree.Element("probe-data", name="os", source="Probes")
    probe.text = "plan9"
    core.plugins["Probes"].ReceiveData(core.build_metadata("c1"), [probe])
    assert "c1" not in core.config_cache and "c2" in core.config_cache
    assert "plan9" in serve_all(core, ["c1"])[0]
    # an expiry relayed from the parent or another server drops the clients it names
    core.metadata_cache.expire(["c2"], tag="relayed:Probes")
    assert "c2" not in core.config_cache and "c1" in core.config_cache
    # a cautious run start is no change: the key decides
    core.metadata_cache.expire(["c1"], tag="cautious")
    assert "c1" in core.config_cache


def test_a_build_that_read_what_changed_meanwhile_is_not_kept():
    cache = ConfigCache()
    assert cache.store("c0", "k", compress("kept"), ["/repo/Cfg/etc/x"], cache.generation)
    generation = cache.generation
    with recording() as deps:
        depends_on("/repo/Cfg/etc/motd", "Rules:Package:x")
    cache.invalidate_path("/repo/Cfg/etc/other/other")
    assert cache.store("c1", "k", compress("unrelated change"), deps.tokens, generation)
    cache.invalidate_path("/repo/Cfg/etc/motd/motd")
    assert not cache.store("c2", "k", compress("stale"), deps.tokens, generation)
    assert cache.lookup("c1", "k") is None  # dropped by the second change
    cache.store("c1", "k", compress("again"), deps.tokens, cache.generation)
    assert cache.lookup("c1", "k") == "again"
    cache.drop(["c1"])
    assert cache.lookup("c1", "k") is None


def test_all_the_names_of_a_plugin_are_dropped_at_once_where_none_can_be_told_apart():
    """``invalidate_owned``: what the multiprocessing parent does on a file event in a
    plugin's directory (it cannot tell which of the plugin's names changed)."""
    cache = ConfigCache()
    generation = cache.generation
    cache.store("rules", "k", compress("r"), ["Rules:Package:x", "/repo/Cfg/etc/a"], generation)
    cache.store("bundle", "k", compress("b"), ["Bundler", "/repo/Cfg/etc/a"], generation)
    cache.store("odd", "k", compress("o"), ["nameless", "/repo/Cfg/etc/a"], generation)
    cache.store("paths", "k", compress("p"), ["/repo/Rules/r.xml"], generation)
    assert cache.invalidate_owned(["Rules"]) == 1  # a path under Rules/ is no name of it
    assert "rules" not in cache and {"bundle", "odd", "paths"} <= set(cache._entries)
    # with the plugins known, a name of none of them goes too
    assert cache.invalidate_owned(["Rules"], known=["Rules", "Bundler"]) == 1
    assert "odd" not in cache and "bundle" in cache
    # a build that began before and recorded one of the names is not kept after
    with recording() as deps:
        depends_on("Bundler:b1", "/repo/Cfg/etc/b")
    began = cache.generation
    cache.invalidate_owned(["Rules"])
    assert cache.store("late", "k", compress("l"), deps.tokens, began)
    cache.invalidate_owned(["Bundler"])
    assert not cache.store("stale", "k", compress("s"), deps.tokens, began)
    assert "bundle" not in cache and "late" not in cache
    cache.drop()
    assert cache._owned == {}  # nothing indexed for what left


def test_a_lookup_gives_the_tokens_a_configuration_was_kept_with():
    cache = ConfigCache()
    cache.store("c0", "k", compress("kept"), ["/repo/Cfg/etc/x", "Rules:Path:/x"], 0)
    assert cache.lookup_kept("c0", "k") == (compress("kept"),
                                            frozenset({"/repo/Cfg/etc/x", "Rules:Path:/x"}))
    assert cache.lookup_kept("c0", "other key") is None


def test_a_helper_that_may_read_the_time_keeps_configurations_out(tmp_path: Path, local_core):
    repo = small_repo(tmp_path)
    repo.write("TemplateHelper/greet.py", '__export__ = ["greet"]\n\n'
                                          'def greet(name):\n    return "hello " + name\n')
    repo.write("Cfg/etc/t/t.genshi", "${metadata.TemplateHelper['greet'].greet('x')}\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,TemplateHelper",
                      server__filemonitor="inotify")
    assert "hello x" in serve_all(core, ["c1"])[0]
    assert "c1" in core.config_cache  # a helper that reads nothing outside is no obstacle
    (repo.path / "TemplateHelper/greet.py").write_text(
        '__export__ = ["greet"]\nimport time\n\n'
        'def greet(name):\n    return f"hello {name} at {time.time()}"\n')
    core.refresh()
    assert "c1" not in core.config_cache  # the helper changed: everything built with it goes
    first, second = serve_all(core, ["c1", "c1"])
    assert first != second and len(core.config_cache) == 0


def test_the_version_chosen_per_group_signature_follows_versions_that_come_and_go(
        tmp_path: Path, local_core) -> None:
    repo = small_repo(tmp_path)
    (repo.path / "Cfg/etc/motd/motd.H_c3").unlink()
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg", server__filemonitor="inotify")

    def motd(client: str) -> str:
        config = core.BuildConfiguration(client)  # no configuration cache: the choice alone
        return config.xpath("//Path[@name='/etc/motd']")[0].text

    assert motd("c1") == motd("c2") == "x" * 5000  # one signature, one choice
    repo.write("Cfg/etc/motd/motd.H_c1", "c1's own")
    core.refresh()
    assert (motd("c1"), motd("c2")) == ("c1's own", "x" * 5000)
    repo.write("Cfg/etc/motd/motd.G10_p", "the profile's")
    core.refresh()
    assert (motd("c1"), motd("c2")) == ("c1's own", "the profile's")
    (repo.path / "Cfg/etc/motd/motd.H_c1").unlink()
    core.refresh()
    assert motd("c1") == motd("c2") == "the profile's"

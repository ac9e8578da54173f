"""Bound entries copied for clients alike (``bcfg2.bindmemo``) are what a fresh build gives.

Each test builds a configuration for several clients, so that later ones
are copies of entries bound for earlier ones, and compares every one of
them with a build that copies nothing (``from_scratch``): a copy handed to
a client its choices would have told apart fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS, Repo, rewrite

from bcfg2.bindmemo import BindMemo, Record
from bcfg2.core import LocalCore
from bcfg2.plugin import Generator, Plugin
from bcfg2.plugin.structfile import Audience
from bcfg2.plugins.rules import Rules
from bcfg2.xml import tostring

Factory = Callable[..., LocalCore]

#: client2 alone in the profile "other"; client4 named by a host version of /etc/motd
PROFILES = {"client1": "basic", "client2": "other", "client3": "basic", "client4": "basic"}
NAMES = list(PROFILES)
CLIENTS = '<Clients version="3.0">' + "".join(
    f'<Client name="{name}" profile="{profile}"/>' for name, profile in PROFILES.items()
) + "</Clients>"


def setup_repo(repo: Repo, bundle: str) -> None:
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Bundler/base.xml", f"<Bundle>\n{bundle}\n</Bundle>\n")


def from_scratch(core: LocalCore, client: str) -> str:
    """The client's configuration with no bound entry copied."""
    memo = core.bind_memo
    limit, memo.max_entries = memo.max_entries, 0
    try:
        return tostring(core.BuildConfiguration(client))
    finally:
        memo.max_entries = limit


def built(core: LocalCore, order: list[str] = NAMES) -> dict[str, lxml.etree._Element]:
    """Every client's configuration, built in this order, each checked against a fresh one."""
    configs = {}
    for client in order:
        config = core.BuildConfiguration(client)
        assert tostring(config) == from_scratch(core, client), client
        configs[client] = config
    return configs


def entry(config: lxml.etree._Element, tag: str, name: str) -> lxml.etree._Element:
    found = [el for el in config.iter(tag) if el.get("name") == name]
    assert len(found) == 1, tostring(config)
    return found[0]


def a_repository_of_every_choice(repo: Repo) -> None:
    """Group and host versions, info.xml and Rules with Group and Client conditionals,
    conditional children in both, Defaults."""
    setup_repo(repo, '<Path name="/etc/motd"/><Path name="/etc/acl"/>'
                     '<Service name="sshd"/><Package name="vim"/>')
    repo.write("Cfg/etc/motd/motd", "all\n")
    repo.write("Cfg/etc/motd/motd.G50_linux", "linux\n")
    repo.write("Cfg/etc/motd/motd.H_client4", "four\n")
    repo.write("Cfg/etc/acl/acl", "x\n")
    repo.write("Cfg/etc/acl/info.xml",
               '<FileInfo><Client name="client3"><Info mode="0600"/></Client>'
               '<Info mode="0644"><Group name="linux"><ACL type="access" scope="user" '
               'user="alice" perms="rw"/></Group></Info></FileInfo>')
    repo.write("Rules/r.xml",
               '<Rules priority="1">'
               '<Client name="client1"><Service name="sshd" status="off"/></Client>'
               '<Client name="client1" negate="true"><Service name="sshd" status="on"/></Client>'
               '<Package name="vim" version="1"><Group name="linux">'
               '<Instance version="1" arch="amd64"/></Group></Package></Rules>')
    repo.write("Defaults/d.xml", '<Defaults priority="1"><Service name="ssh.*" type="systemd"/>'
                                 '</Defaults>')


def test_every_client_gets_what_its_choices_give_in_any_order(
        repo: Repo, local_core: Factory) -> None:
    a_repository_of_every_choice(repo)
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults")
    for order in (NAMES, NAMES[::-1], ["client3", "client1", "client4", "client2"]):
        configs = built(core, order)
        motd = {c: entry(configs[c], "Path", "/etc/motd").text for c in NAMES}
        assert motd == {"client1": "linux\n", "client2": "all\n", "client3": "linux\n",
                        "client4": "four\n"}
        acl = {c: (entry(configs[c], "Path", "/etc/acl").get("mode"),
                   len(entry(configs[c], "Path", "/etc/acl"))) for c in NAMES}
        assert acl == {"client1": ("0644", 1), "client2": ("0644", 0), "client3": ("0600", 0),
                       "client4": ("0644", 1)}
        sshd = {c: entry(configs[c], "Service", "sshd").get("status") for c in NAMES}
        assert sshd == {"client1": "off", "client2": "on", "client3": "on", "client4": "on"}
        assert all(entry(configs[c], "Service", "sshd").get("type") == "systemd"
                   for c in NAMES)
        vim = {c: len(entry(configs[c], "Package", "vim")) for c in NAMES}
        assert vim == {"client1": 1, "client2": 0, "client3": 1, "client4": 1}
        # each configuration holds copies: what is done to one reaches no other
        entry(configs["client1"], "Path", "/etc/motd").set("changed", "here")
        entry(configs["client1"], "Path", "/etc/acl")[0].set("perms", "rwx")
        again = core.BuildConfiguration("client3")
        assert entry(again, "Path", "/etc/motd").get("changed") is None
        assert entry(again, "Path", "/etc/acl").get("changed") is None
        assert entry(core.BuildConfiguration("client1"), "Path", "/etc/acl")[0].get(
            "perms") == "rw"
    assert core.bind_memo.counts["hits"] > 0 and len(core.bind_memo) > 0


def test_edits_reach_the_next_build_of_every_client(repo: Repo, local_core: Factory) -> None:
    a_repository_of_every_choice(repo)
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults",
                      server__filemonitor="inotify")
    built(core)
    rewrite(repo.path / "Cfg/etc/motd/motd.G50_linux", "linux 2\n")
    repo.write("Cfg/etc/acl/info.xml", '<FileInfo><Info mode="0640"/></FileInfo>')
    repo.write("Rules/r.xml", '<Rules priority="1"><Service name="sshd" status="masked"/>'
                              '<Package name="vim" version="2"/></Rules>')
    core.refresh()
    configs = built(core)
    assert [entry(configs[c], "Path", "/etc/motd").text for c in NAMES] == [
        "linux 2\n", "all\n", "linux 2\n", "four\n"]
    assert {entry(configs[c], "Path", "/etc/acl").get("mode") for c in NAMES} == {"0640"}
    assert {entry(configs[c], "Service", "sshd").get("status") for c in NAMES} == {"masked"}
    assert {entry(configs[c], "Package", "vim").get("version") for c in NAMES} == {"2"}


def test_templates_are_rendered_for_each_client(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Path name="/etc/hostname"/>')
    repo.write("Cfg/etc/hostname/hostname.genshi", "${metadata.hostname}\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg")
    configs = built(core)
    assert [entry(configs[c], "Path", "/etc/hostname").text for c in NAMES] == [
        f"{c}\n" for c in NAMES]
    assert len(core.bind_memo) == 0


class HostRules(Rules):
    """A third party's Rules that adds what only the client itself may see: its class
    does not renew the promise Rules makes, so nothing it binds is copied."""

    name = "HostRules"

    def BindEntry(self, entry: Any, metadata: Any) -> Any:  # noqa: N802
        super().BindEntry(entry, metadata)
        entry.set("comment", f"for {metadata.hostname}")
        return entry


class Claimer(Plugin, Generator):
    """A third party's generator that claims /etc/motd for client3 alone, reporting
    nothing of how it chooses: it is asked again before any copy."""

    name = "Claimer"

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)

    def binder_for(self, entry: Any, metadata: Any) -> Any:
        if entry.get("name") == "/etc/motd" and metadata.hostname == "client3":
            return self.bind
        return None

    def bind(self, entry: Any, metadata: Any) -> Any:
        entry.text = "claimed"
        return entry

    def cache_key(self, metadata: Any) -> str:
        return ""


def test_a_subclass_that_does_not_renew_the_promise_is_bound_each_time(
        repo: Repo, local_core: Factory, register: Callable[..., None]) -> None:
    register(HostRules)
    setup_repo(repo, '<Service name="sshd"/>')
    repo.write("HostRules/r.xml", '<Rules priority="1"><Service name="sshd" status="on"/>'
                                  '</Rules>')
    core = local_core(repo, server__plugins="Metadata,Bundler,HostRules")
    configs = built(core)
    assert [entry(configs[c], "Service", "sshd").get("comment") for c in NAMES] == [
        f"for {c}" for c in NAMES]
    assert len(core.bind_memo) == 0  # nothing it bound was kept, to be asked about again


def test_a_generator_that_reports_nothing_is_asked_before_each_copy(
        repo: Repo, local_core: Factory, register: Callable[..., None]) -> None:
    register(Claimer)
    setup_repo(repo, '<Path name="/etc/motd"/><Path name="/etc/issue"/>')
    repo.write("Cfg/etc/motd/motd", "all\n")
    repo.write("Cfg/etc/issue/issue", "issue\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Claimer")
    configs = built(core)
    motd = {c: entry(configs[c], "Path", "/etc/motd") for c in NAMES}
    assert "multiple generators" in motd["client3"].get("failure", "")
    assert all(motd[c].text == "all\n" and "failure" not in motd[c].attrib
               for c in NAMES if c != "client3")
    assert core.bind_memo.counts["hits"] > 0  # the others' entries were copies


@pytest.mark.parametrize(("entries", "size"), [(3, 10**9), (10**6, 1500), (0, 10**9)])
def test_the_kept_entries_stay_within_their_bounds(
        repo: Repo, local_core: Factory, entries: int, size: int) -> None:
    a_repository_of_every_choice(repo)
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults",
                      caching__bound_entries=entries, caching__bound_bytes=size)
    for _ in range(3):
        built(core)
        assert len(core.bind_memo) <= entries and core.bind_memo.size <= size
    if entries == 0:
        assert len(core.bind_memo) == 0 and core.bind_memo.counts["hits"] == 0


# -- the memo itself ------------------------------------------------------------------------


class Meta:
    def __init__(self, hostname: str, *groups: str) -> None:
        self.hostname = hostname
        self.groups = frozenset(groups)
        self.aliases: frozenset[str] = frozenset()


def promised(*audiences: Audience) -> Record:
    record = Record()
    record.audiences.extend(audiences)
    record.promised = True
    return record


def test_a_kept_entry_serves_only_clients_alike_to_its_audiences() -> None:
    memo = BindMemo()
    element = lxml.etree.Element("Path", name="/etc/motd")
    element.text = "linux"
    key = ("Path", ("name", "/etc/motd"))
    audience = Audience(["linux"], ["h1"])
    assert memo.store(key, promised(audience), Meta("a", "linux", "x"), element, ("t",), 0)
    found = memo.lookup(key, Meta("b", "linux", "y"))
    assert found is not None and found[0].text == "linux" and found[1] == ("t",)
    assert found[0] is not element  # a copy was kept, the caller's element is its own
    assert memo.lookup(key, Meta("c", "y")) is None  # not in linux
    assert memo.lookup(key, Meta("h1", "linux")) is None  # named by the audience
    # not promised, or bound before a change: not kept
    assert not memo.store(key, Record(), Meta("c", "y"), element, (), 0)
    memo.clear()
    assert memo.lookup(key, Meta("b", "linux")) is None
    assert not memo.store(key, promised(audience), Meta("a", "linux"), element, (), 0)
    assert memo.store(key, promised(audience), Meta("a", "linux"), element, (), 1)


def test_the_oldest_kept_entries_go_first() -> None:
    memo = BindMemo(max_entries=2)
    for number in range(3):
        memo.store(("Path", number), promised(), Meta("a"), lxml.etree.Element("Path"), (), 0)
    assert len(memo) == 2 and memo.lookup(("Path", 0), Meta("a")) is None
    assert memo.lookup(("Path", 2), Meta("b")) is not None

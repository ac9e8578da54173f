"""The Core: plugin loading, metadata caching, binding, exposed methods and ACLs."""

from __future__ import annotations

import inspect
import itertools
import logging
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from conftest import make_distribution, make_setup

from bcfg2.core import Core, CoreInitError, LocalCore, sort_xml
from bcfg2.errors import CriticalError, PluginInitError
from bcfg2.identity import Caller
from bcfg2.plugin import ClientACLs, Connector, Generator, Plugin, Probing, exposed

ADDRESS = ("127.0.0.1", 40001)
AGENT_METHODS = ["AssertProfile", "DeclareVersion", "GetProbes", "RecvProbeData",
                 "GetDecisionList", "GetConfig", "RecvStats"]
ADMIN_METHODS = ["get_statistics", "expire_metadata_cache", "toggle_debug", "set_debug",
                 "toggle_core_debug", "set_core_debug", "toggle_fam_debug", "set_fam_debug",
                 "listMethods", "methodHelp", "Metadata.list_clients",
                 "Metadata.toggle_debug", "Metadata.remove_client"]


def plugin_list(*names: str) -> str:
    return ",".join(("Metadata", "Bundler") + names)


# -- loading plugins -----------------------------------------------------------


class Alpha(Plugin, Connector):
    sort_order = 20


class Beta(Plugin, Connector):
    sort_order = 10


class Zeta(Plugin, Connector):
    sort_order = 10


class Peace(Plugin):
    conflicts = ["War"]


class War(Plugin):
    pass


class Halfprobe(Plugin, Probing):
    def GetProbes(self, metadata: Any) -> list:  # noqa: N802
        return []


def test_plugins_named_in_the_configuration_are_loaded(repo, local_core):
    core = local_core(repo, server__plugins="Metadata,Bundler,Rules")
    loaded = set(core.plugins)
    assert loaded == {"Metadata", "Bundler", "Rules"}
    assert core.metadata is core.plugins["Metadata"]


def test_an_unknown_plugin_name_stops_the_core(repo, local_core):
    with pytest.raises(CoreInitError, match="Nosuchplugin"):
        local_core(repo, server__plugins="Metadata,Nosuchplugin")


def test_without_a_metadata_plugin_the_core_does_not_start(repo, local_core):
    with pytest.raises(CoreInitError, match="Metadata"):
        local_core(repo, server__plugins="Bundler,Rules")


def test_a_plugin_lacking_a_method_of_its_interface_is_refused(repo, local_core, register):
    register(Halfprobe)
    with pytest.raises(CoreInitError) as excinfo:
        local_core(repo, server__plugins=plugin_list("Halfprobe"))
    assert "Halfprobe" in str(excinfo.value)
    assert "ReceiveData" in str(excinfo.value)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Factory: install a distribution with one plugin module, on sys.path for this test."""
    def install(module: str, source: str, plugin: str) -> None:
        make_distribution(tmp_path / "site", f"{module}_dist", {f"{module}.py": source},
                          plugins={plugin: f"{module}:{plugin}"})
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.delitem(sys.modules, module, raising=False)
    return install


@pytest.mark.parametrize(("source", "reported"), [
    ("import bcfg2_no_such_dependency\n", "bcfg2_no_such_dependency"),
    ("import bcfg2.plugins.no_such_helper\n", "bcfg2.plugins.no_such_helper"),
    ("raise ImportError('needs libfoo 2')\n", "needs libfoo 2"),
    ("raise RuntimeError('cannot open /dev/foo')\n", "cannot open /dev/foo"),
    ("def broken(:\n", "invalid syntax"),
])
def test_a_plugin_that_fails_to_import_stops_the_core_with_the_error(
        repo, local_core, installed, source, reported):
    installed("brokenplug", source, "Brokenplug")
    with pytest.raises(CoreInitError) as excinfo:
        local_core(repo, server__plugins=plugin_list("Brokenplug"))
    assert "Brokenplug" in str(excinfo.value)
    assert reported in str(excinfo.value)
    assert excinfo.value.__cause__ is not None


@pytest.mark.parametrize("order", [("Peace", "War"), ("War", "Peace")])
def test_of_two_conflicting_plugins_the_first_loaded_wins(repo, local_core, register, order):
    register(Peace, War)
    core = local_core(repo, server__plugins=plugin_list(*order))
    first, second = order
    assert first in core.plugins
    assert second not in core.plugins
    assert core.plugin_blacklist == {second: [first]}


def test_plugins_by_type_orders_by_sort_order_then_name(repo, local_core, register):
    classes = [Alpha, Zeta, Beta]
    register(*classes)
    core = local_core(repo, server__plugins=plugin_list(*(c.name for c in classes)))
    expected = [c.name for c in sorted(classes, key=lambda c: (c.sort_order, c.name))]
    assert expected != [c.name for c in classes]  # the loading order is not the answer
    assert [p.name for p in core.plugins_by_type(Connector)] == expected


# -- metadata caching ----------------------------------------------------------


class Counter(Plugin, Connector):
    """A connector whose groups change on every call."""

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.calls = 0

    def get_additional_groups(self, metadata: Any) -> list[str]:
        self.calls += 1
        return [f"dynamic-{self.calls}"]


@pytest.fixture
def counted(repo, local_core, monkeypatch, register):
    """Factory: a core with the Counter connector and a count of Metadata builds."""
    register(Counter)

    def factory(mode: str) -> tuple[Any, Counter, list[str]]:
        core = local_core(repo, server__plugins=plugin_list("Counter"),
                          caching__client_metadata=mode)
        initial: list[str] = []
        original = core.metadata.get_initial_metadata

        def counting(name: str) -> Any:
            initial.append(name)
            return original(name)

        monkeypatch.setattr(core.metadata, "get_initial_metadata", counting)
        return core, core.plugins["Counter"], initial

    return factory


def authenticate(core: Core, uuid: str, password: str, address: tuple[str, int]) -> Caller:
    caller = core.authenticate(None, uuid, password, address)
    assert caller is not None
    return caller


def test_caching_off_builds_fresh_metadata_every_time(counted):
    core, counter, initial = counted("off")
    first = core.build_metadata("client1")
    second = core.build_metadata("client1")
    assert first is not second
    assert counter.calls == 2
    assert initial == ["client1", "client1"]
    assert "dynamic-1" in first.groups
    assert "dynamic-2" in second.groups and "dynamic-1" not in second.groups


def test_caching_initial_keeps_the_metadata_part_and_runs_connectors_each_time(counted):
    core, counter, initial = counted("initial")
    first = core.build_metadata("client1")
    second = core.build_metadata("client1")
    assert initial == ["client1"]
    assert counter.calls == 2
    assert first is not second
    # the cached part is not polluted by the groups of an earlier build
    assert "dynamic-2" in second.groups and "dynamic-1" not in second.groups
    assert first.profile == second.profile == "basic"


def test_caching_aggressive_keeps_the_object_until_expired(counted):
    core, counter, initial = counted("aggressive")
    first = core.build_metadata("client1")
    other = core.build_metadata("client2")
    assert core.build_metadata("client1") is first
    assert counter.calls == 2

    # a client run does not expire anything in this mode
    core.GetProbes(authenticate(core, "uuid-client1", "pw1", ADDRESS))
    assert core.build_metadata("client1") is first

    assert core.expire_metadata_cache(ADDRESS, ["client1"]) is True
    renewed = core.build_metadata("client1")
    assert renewed is not first
    assert "dynamic-3" in renewed.groups
    assert core.build_metadata("client2") is other

    core.expire_metadata_cache(ADDRESS)
    assert core.build_metadata("client2") is not other
    assert core.build_metadata("client1") is not renewed


@pytest.mark.parametrize("mode", ["cautious", "on"])
def test_caching_cautious_expires_a_client_when_its_run_starts(counted, mode):
    core, counter, _initial = counted(mode)
    assert core.metadata_cache_mode == "cautious"
    first = core.build_metadata("client1")
    other = core.build_metadata("client2")
    assert core.build_metadata("client1") is first

    core.GetProbes(authenticate(core, "uuid-client1", "pw1", ADDRESS))
    renewed = core.build_metadata("client1")
    assert renewed is not first
    assert core.build_metadata("client2") is other


# -- binding ---------------------------------------------------------------------


class Marking:
    """Binds an entry by recording who bound it, under which name."""

    def mark(self, entry: lxml.etree._Element, metadata: Any) -> lxml.etree._Element:
        entry.set("bound_by", self.name)
        entry.set("bound_as", entry.get("name"))
        if entry.get("realname"):
            entry.set("bound_for", entry.get("realname"))
        return entry


class Listed(Marking, Plugin, Generator):
    """A generator with an Entries table."""

    paths = ("/etc/one", "/etc/both", "/etc/alternative", "/etc/fallback", "/etc/twice")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        self.Entries["Path"] = {name: self.mark for name in self.paths}


class AlsoListed(Listed):
    """A second generator listing some of the same entries by name."""

    paths = ("/etc/twice",)


class Dynamic(Marking, Plugin, Generator):
    """A generator deciding per entry (HandlesEntry)."""

    paths = ("/etc/two", "/etc/both")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)

    def HandlesEntry(self, entry: lxml.etree._Element, metadata: Any) -> bool:  # noqa: N802
        return entry.tag == "Package" or entry.get("name") in self.paths

    def HandleEntry(self, entry: lxml.etree._Element, metadata: Any) -> Any:  # noqa: N802
        return self.mark(entry, metadata)


BIND_GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"/>
  <Group name="basic">
    <Bundle name="files"/>
    <Bundle name="packages"/>
  </Group>
  <Group name="other" profile="true"/>
</Groups>
"""

FILES_BUNDLE = """\
<Bundle>
  <Path name="/etc/one"/>
  <Path name="/etc/two"/>
  <Path name="/etc/both"/>
  <Path name="/etc/twice"/>
  <Path name="/etc/nobody"/>
  <Path name="/etc/real" altsrc="/etc/alternative"/>
  <Path name="/etc/fallback" altsrc="/etc/not-served"/>
</Bundle>
"""


@pytest.fixture
def bound(repo, local_core, register) -> dict[str, lxml.etree._Element]:
    """client1's configuration over the Listed and Dynamic generators, entries by name."""
    register(Listed, AlsoListed, Dynamic)
    repo.write("Metadata/groups.xml", BIND_GROUPS)
    repo.write("Bundler/files.xml", FILES_BUNDLE)
    repo.write("Bundler/packages.xml", '<Bundle><Package name="zsh"/></Bundle>')
    core = local_core(repo, server__plugins=plugin_list("Listed", "AlsoListed", "Dynamic"))
    config = core.BuildConfiguration("client1")
    assert config.tag == "Configuration"
    assert sorted(b.get("name") for b in config) == ["files", "packages"]
    return {entry.get("name"): entry for bundle in config for entry in bundle}


def test_each_entry_is_bound_by_the_generator_that_handles_it(bound):
    assert bound["/etc/one"].get("bound_by") == "Listed"
    assert bound["/etc/two"].get("bound_by") == "Dynamic"
    assert bound["zsh"].get("bound_by") == "Dynamic"
    for name in ("/etc/one", "/etc/two", "zsh"):
        assert "failure" not in bound[name].attrib


def test_an_entry_no_generator_handles_fails_alone(bound):
    assert bound["/etc/nobody"].get("failure")
    assert "bound_by" not in bound["/etc/nobody"].attrib


def test_an_entry_two_generators_list_fails_naming_both(bound):
    failure = bound["/etc/twice"].get("failure")
    assert "Listed" in failure and "AlsoListed" in failure
    assert "bound_by" not in bound["/etc/twice"].attrib


def test_a_generator_listing_an_entry_beats_one_claiming_it_by_pattern(bound):
    # as upstream: an Entries listing wins over HandlesEntry
    assert bound["/etc/both"].get("bound_by") == "Listed"
    assert "failure" not in bound["/etc/both"].attrib


def test_altsrc_binds_under_the_other_name_and_keeps_its_own(bound):
    entry = bound["/etc/real"]
    assert entry.get("bound_by") == "Listed"
    assert entry.get("bound_as") == "/etc/alternative"
    assert entry.get("bound_for") == "/etc/real"
    assert "altsrc" not in entry.attrib and "realname" not in entry.attrib
    assert "failure" not in entry.attrib


def test_an_altsrc_nobody_serves_falls_back_to_the_real_name(bound):
    entry = bound["/etc/fallback"]
    assert entry.get("bound_by") == "Listed"
    assert entry.get("bound_as") == "/etc/fallback"
    assert "failure" not in entry.attrib
    assert "altsrc" not in entry.attrib and "realname" not in entry.attrib


# -- exposed methods -------------------------------------------------------------


class Pinger(Plugin):
    @exposed
    def ping(self) -> str:
        """Answer pong, to show the server is alive."""
        return "pong"


def test_list_methods_names_core_methods_and_plugin_rmi(repo, local_core, register):
    register(Pinger)
    core = local_core(repo, server__plugins=plugin_list("Pinger"))
    methods = core.listMethods(ADDRESS)
    for name in AGENT_METHODS + ADMIN_METHODS + ["Pinger.ping", "Metadata.get_all_group_names"]:
        assert name in methods
    assert "BuildConfiguration" not in methods and "shutdown" not in methods
    assert core.rmi["Metadata.list_clients"]() == ["client1", "client2"]
    assert core.rmi["Pinger.ping"]() == "pong"


def test_method_help_returns_the_docstring(repo, local_core, register):
    register(Pinger)
    core = local_core(repo, server__plugins=plugin_list("Pinger"))
    assert core.methodHelp(ADDRESS, "Pinger.ping") == inspect.getdoc(Pinger.ping)
    assert core.methodHelp(ADDRESS, "GetConfig") == inspect.getdoc(Core.GetConfig)
    assert core.methodHelp(ADDRESS, "BuildConfiguration") == ""


ADDRESSES = [("192.0.2.10", 5000), ("2001:db8::7", 5000), ("127.0.0.1", 5000), ("::1", 5000)]


@pytest.mark.parametrize("method", AGENT_METHODS)
def test_agents_may_call_agent_methods_from_any_address(repo, local_core, method):
    core = local_core(repo)
    for address in ADDRESSES:
        assert core.check_acls(Caller(address, client="client1"), method) is True


@pytest.mark.parametrize("method", ADMIN_METHODS)
def test_admin_methods_need_an_admin_identity_wherever_it_calls_from(repo, local_core, method):
    core = local_core(repo)
    for address in ADDRESSES:
        assert core.check_acls(Caller(address, client="client1"), method) is False
        assert core.check_acls(address, method) is False  # no identity at all
        assert core.check_acls(Caller(address, admin="user:admin"), method) is True


def test_an_admin_is_no_client(repo, local_core):
    core = local_core(repo)
    with pytest.raises(CriticalError, match="admin, not a client"):
        core.GetConfig(Caller(ADDRESS, admin="user:admin"))


def test_the_admin_identity_comes_from_the_admin_user_and_password(repo, local_core):
    core = local_core(repo, communication__admin_user="admin",
                      communication__admin_password="s3cret")
    admin = core.authenticate(None, "admin", "s3cret", ("192.0.2.10", 5000))
    assert (admin.admin, admin.client) == ("user:admin", None)
    # the admin user with another password is refused, never tried as a client
    assert core.authenticate(None, "admin", "pw1", ADDRESS) is None
    agent = core.authenticate(None, "uuid-client1", "pw1", ADDRESS)
    assert (agent.admin, agent.client) == (None, "client1")


def test_the_admin_identity_comes_from_a_listed_certificate(repo, local_core):
    core = local_core(repo, communication__admin_cns="Admin.Example.COM, ops")
    cert = {"subject": ((("commonName", "admin.example.com"),),)}
    caller = core.authenticate(cert, "", "", ("192.0.2.10", 5000))
    assert caller.admin == "cert:admin.example.com"
    assert core.check_acls(caller, "Metadata.list_clients") is True


def test_trust_loopback_restores_upstreams_rule(repo, local_core):
    core = local_core(repo, communication__trust_loopback=True)
    local = core.authenticate(None, "uuid-client1", "pw1", ("127.0.0.1", 5000))
    remote = core.authenticate(None, "uuid-client1", "pw1", ("192.0.2.10", 5000))
    assert (local.client, local.admin) == ("client1", "loopback")
    assert core.check_acls(local, "Metadata.list_clients") is True
    assert core.check_acls(remote, "Metadata.list_clients") is False


class AllowByAddress(Plugin, ClientACLs):
    def check_acl_ip(self, address: tuple[str, int], rmi: str) -> bool | None:
        return True

    def check_acl_metadata(self, metadata: Any, rmi: str) -> bool:
        return True


class DenyClient2(Plugin, ClientACLs):
    def check_acl_ip(self, address: tuple[str, int], rmi: str) -> bool | None:
        return None

    def check_acl_metadata(self, metadata: Any, rmi: str) -> bool:
        return metadata.hostname != "client2"


def test_an_acl_plugin_that_defers_still_gets_its_say(repo, local_core, register):
    register(AllowByAddress, DenyClient2)
    core = local_core(repo, server__plugins=plugin_list("AllowByAddress", "DenyClient2"))
    first = authenticate(core, "uuid-client1", "pw1", ("127.0.0.1", 40011))
    second = authenticate(core, "uuid-client2", "pw2", ("127.0.0.1", 40012))
    assert core.check_acls(first, "GetConfig") is True
    assert core.check_acls(second, "GetConfig") is False


@pytest.fixture
def restore_bcfg2_log_level() -> Iterator[None]:
    logger = logging.getLogger("bcfg2")
    level = logger.level
    yield
    logger.setLevel(level)


def test_set_and_toggle_debug_switch_every_plugin(repo, local_core, restore_bcfg2_log_level):
    core = local_core(repo)
    assert not any(p.debug_flag for p in core.plugins.values())
    assert core.set_debug(ADDRESS, "true") is True
    assert all(p.debug_flag for p in core.plugins.values())
    assert core.debug_flag is True and core.fam.debug is True
    assert core.toggle_debug(ADDRESS) is False
    assert not any(p.debug_flag for p in core.plugins.values())
    assert core.debug_flag is False and core.fam.debug is False


def test_plugin_rmi_switches_the_debug_of_one_plugin(repo, local_core):
    core = local_core(repo)
    assert core.rmi["Metadata.toggle_debug"]() is True
    assert core.plugins["Metadata"].debug_flag is True
    assert core.plugins["Bundler"].debug_flag is False


# -- sort_xml --------------------------------------------------------------------


def _children() -> list[lxml.etree._Element]:
    bundle = lxml.etree.Element("Bundle", name="b")
    for name in ("/z", "/a", "/m"):
        lxml.etree.SubElement(bundle, "Path", name=name)
    return [
        bundle,
        lxml.etree.Element("Package", name="libc", arch="x86_64"),
        lxml.etree.Element("Package", name="libc", arch="i686"),
        lxml.etree.Element("Service", name="libc"),
        lxml.etree.Element("Independent", name="a"),
    ]


def test_sort_xml_gives_one_order_whatever_the_input_order():
    results = set()
    for order in itertools.permutations(range(5)):
        children = _children()
        root = lxml.etree.Element("Configuration")
        for index in order:
            root.append(children[index])
        sort_xml(root)
        results.add(lxml.etree.tostring(root))
    assert len(results) == 1
    root = lxml.etree.fromstring(results.pop())
    names = [child.get("name") for child in root]
    assert names == sorted(names)
    assert [p.get("name") for p in root.find("Bundle")] == ["/a", "/m", "/z"]


class Fragile(Plugin):
    """A plugin that cannot start."""

    def __init__(self, core: Any) -> None:
        raise PluginInitError("the database is unreachable")


class Tidy(Plugin):
    """A plugin that records that it was shut down."""

    stopped: list[str] = []

    def shutdown(self) -> None:
        Tidy.stopped.append(self.name)
        super().shutdown()


def test_a_plugin_failing_to_start_stops_start_up_and_shuts_down_the_others(
        repo, monkeypatch, register) -> None:
    register(Tidy, Fragile)
    monkeypatch.setattr(Tidy, "stopped", [])
    with pytest.raises(CoreInitError, match="Fragile.*database is unreachable"):
        LocalCore(make_setup(repo, server__plugins=plugin_list("Tidy", "Fragile")))
    assert Tidy.stopped == ["Tidy"]


class ThirdParty(Plugin):
    """A plugin installed by another distribution, found through its entry point."""


def test_a_third_party_plugin_is_found_through_its_entry_point(repo, monkeypatch) -> None:
    import importlib.metadata

    module = types.ModuleType("site_plugins_for_test")
    module.ThirdParty = ThirdParty
    monkeypatch.setitem(sys.modules, module.__name__, module)
    point = importlib.metadata.EntryPoint(name="ThirdParty",
                                          value="site_plugins_for_test:ThirdParty",
                                          group="bcfg2.plugins")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [point] if group == "bcfg2.plugins" else [])
    core = LocalCore(make_setup(repo, server__plugins=plugin_list("ThirdParty")))
    try:
        assert isinstance(core.plugins["ThirdParty"], ThirdParty)
    finally:
        core.shutdown()
    with pytest.raises(CoreInitError, match="no plugin named 'Missing'"):
        LocalCore(make_setup(repo, server__plugins=plugin_list("Missing")))

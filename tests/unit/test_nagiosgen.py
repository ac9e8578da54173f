"""NagiosGen: each client's Nagios host definition, and the Nagios server's aggregate."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import lxml.etree
import pytest
from conftest import PLUGINS, Repo, rewrite, wait_until

from bcfg2.core import LocalCore
from bcfg2.errors import PluginExecutionError
from bcfg2.plugins import nagiosgen

Factory = Callable[..., LocalCore]
SERVER_PATH = "/etc/nagios/conf.d/bcfg2.cfg"

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
    <Group name="datacenter-2"/>
  </Group>
  <Group name="other" profile="true">
    <Group name="nagios-server"/>
  </Group>
  <Group name="linux"><Bundle name="nagios"/></Group>
  <Group name="nagios-server"><Bundle name="nagios"/></Group>
</Groups>
"""

#: client1 has its address in clients.xml; client2 is found through DNS (faked below)
CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1" address="10.0.0.1"/>
  <Client name="client2" profile="other" uuid="uuid-client2" password="pw2" floating="true"/>
</Clients>
"""

BUNDLE = f"""\
<Bundle>
  <Path name="/etc/nagiosgen.status"/>
  <Group name="nagios-server">
    <Path name="{SERVER_PATH}"/>
  </Group>
</Bundle>
"""

CONFIG = """\
<NagiosGen>
  <Group name="datacenter-2">
    <Option name="parents">dc-2-switch</Option>
  </Group>
  <Group name="linux">
    <Option name="notification_period">workhours</Option>
    <Option name="notification_options">d</Option>
  </Group>
  <Client name="client1">
    <Option name="max_check_attempts">10</Option>
    <Option name="notification_options">d,u,r</Option>
  </Client>
  <Client name="client2">
    <Option name="use">nagios-host</Option>
  </Client>
</NagiosGen>
"""

LINUX_GROUP = """\
define hostgroup{
        hostgroup_name  linux
        alias           Linux hosts
}
"""
SERVER_GROUP = "define hostgroup{\n        hostgroup_name  nagios-server\n}\n"
UNUSED_GROUP = "define hostgroup{\n        hostgroup_name  unused\n}\n"
NAGIOS_BUNDLE = "define service{\n        service_description  NRPE\n}\n"


class FakeDNS:
    """Stands in for the system resolver: known names only, every question recorded."""

    def __init__(self) -> None:
        self.answers = {"client2": "192.0.2.7"}
        self.asked: list[str] = []

    def __call__(self, hostname: str) -> str:
        self.asked.append(hostname)
        if hostname not in self.answers:
            raise OSError(f"[Errno -2] Name or service not known: {hostname}")
        return self.answers[hostname]


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """No real DNS in these tests: NagiosGen's lookups go to a FakeDNS."""
    fake = FakeDNS()
    monkeypatch.setattr(nagiosgen, "lookup_address", fake)
    return fake


@pytest.fixture
def nagios_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Bundler/nagios.xml", BUNDLE)
    repo.write("NagiosGen/config.xml", CONFIG)
    repo.write("NagiosGen/linux-group.cfg", LINUX_GROUP)
    repo.write("NagiosGen/nagios-server-group.cfg", SERVER_GROUP)
    repo.write("NagiosGen/unused-group.cfg", UNUSED_GROUP)
    repo.write("NagiosGen/nagios-bundle.cfg", NAGIOS_BUNDLE)
    return repo


def make(local_core: Factory, repo: Repo, **overrides: str) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",NagiosGen", **overrides)


def paths(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    config = core.BuildConfiguration(client)
    assert config.tag == "Configuration"
    return {el.get("name"): el for el in config.iter("Path")}


def definitions(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The ``define kind {`` blocks of a Nagios file: (kind, [(directive, value)...])."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("define "):
            out.append((line[len("define "):].rstrip("{ "), []))
        elif line and line != "}":
            key, value = line.split(None, 1)
            out[-1][1].append((key, value))
    return out


def host(text: str) -> dict[str, str]:
    """The directives of the one host definition in a text (and there is only one)."""
    blocks = [d for kind, d in definitions(text) if kind == "host"]
    assert len(blocks) == 1, text
    return dict(blocks[0])


def host_names(text: str) -> list[str]:
    """The host_name of every host definition in a text, in order."""
    return [dict(d)["host_name"] for kind, d in definitions(text) if kind == "host"]


def test_a_client_gets_its_host_definition(nagios_repo: Repo, local_core, dns) -> None:
    core = make(local_core, nagios_repo)
    entry = paths(core, "client1")["/etc/nagiosgen.status"]
    assert "failure" not in entry.attrib
    assert (entry.get("type"), entry.get("owner"), entry.get("group"), entry.get("mode")) == \
        ("file", "root", "root", "0400")
    assert definitions(entry.text) == [("host", [
        ("host_name", "client1"), ("alias", "client1"), ("address", "10.0.0.1"),
        ("hostgroups", "linux,nagios"),
        ("parents", "dc-2-switch"), ("notification_period", "workhours"),
        ("notification_options", "d,u,r"), ("max_check_attempts", "10"),
        ("use", "default"),
    ])]
    assert "\n\thost_name                        client1\n" in entry.text
    assert dns.asked == []  # the address came from clients.xml
    kept = (nagios_repo.path / "NagiosGen/client1-host.cfg").read_text()
    assert kept == entry.text


def test_a_client_without_an_address_is_looked_up(nagios_repo: Repo, local_core, dns) -> None:
    core = make(local_core, nagios_repo)
    defined = host(paths(core, "client2")["/etc/nagiosgen.status"].text)
    assert defined["address"] == "192.0.2.7"
    assert defined["use"] == "nagios-host"  # the option replaces the default template
    assert defined["hostgroups"] == "nagios,nagios-server"
    assert dns.asked == ["client2"]


def test_a_failed_lookup_fails_only_the_host_entry(nagios_repo: Repo, local_core, dns) -> None:
    del dns.answers["client2"]
    core = make(local_core, nagios_repo)
    served = paths(core, "client2")
    assert "no address for client2" in served["/etc/nagiosgen.status"].get("failure")
    assert "Name or service not known" in served["/etc/nagiosgen.status"].get("failure")
    assert "failure" not in served[SERVER_PATH].attrib
    assert not (nagios_repo.path / "NagiosGen/client2-host.cfg").exists()


def test_an_address_option_is_used_without_a_lookup(nagios_repo: Repo, local_core,
                                                   dns) -> None:
    del dns.answers["client2"]
    nagios_repo.write("NagiosGen/config.xml", CONFIG.replace(
        '<Option name="use">nagios-host</Option>',
        '<Option name="address">client2.mgmt.example.com</Option>'))
    core = make(local_core, nagios_repo)
    defined = host(paths(core, "client2")["/etc/nagiosgen.status"].text)
    assert defined["address"] == "client2.mgmt.example.com"
    assert dns.asked == []


@pytest.fixture
def hung_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A resolver that never answers until the test is over."""
    release = threading.Event()

    def hang(hostname: str) -> str:
        release.wait()
        raise OSError("released")

    monkeypatch.setattr(nagiosgen, "lookup_address", hang)
    yield release
    release.set()


def test_a_hanging_lookup_is_bounded_by_resolve_timeout(nagios_repo: Repo, local_core,
                                                        hung_dns) -> None:
    core = make(local_core, nagios_repo, nagiosgen__resolve_timeout="0.2")
    failure = paths(core, "client2")["/etc/nagiosgen.status"].get("failure")
    assert "the DNS lookup took more than 0.2s" in failure
    # client1 needs no lookup and is served as before
    assert "failure" not in paths(core, "client1")["/etc/nagiosgen.status"].attrib


def test_hung_lookups_hold_a_bounded_number_of_threads(hung_dns) -> None:
    resolver = nagiosgen.Resolver(timeout=0.05)
    for _ in range(nagiosgen.MAX_PENDING_LOOKUPS):
        with pytest.raises(PluginExecutionError, match="took more than"):
            resolver("client2")
    with pytest.raises(PluginExecutionError, match="lookups are still pending"):
        resolver("client2")
    hung_dns.set()  # the resolver answers: the slots come back
    resolver.lookup = lambda name: "192.0.2.9"

    def answered() -> bool:
        try:
            return resolver("client2") == "192.0.2.9"
        except PluginExecutionError:
            return False  # a hung lookup has not yet given its slot back
    wait_until(answered, 10, "the released lookups to give their slots back")


def test_the_nagios_server_gets_every_host_and_the_groups_in_use(nagios_repo: Repo,
                                                                 local_core) -> None:
    core = make(local_core, nagios_repo)
    client1 = paths(core, "client1")["/etc/nagiosgen.status"].text
    served = paths(core, "client2")
    client2 = served["/etc/nagiosgen.status"].text
    aggregate = served[SERVER_PATH]
    assert (aggregate.get("owner"), aggregate.get("group"), aggregate.get("mode")) == \
        ("nagios", "nagios", "0440")
    text = aggregate.text
    # the group and bundle files of hostgroups some host uses, then the hosts, by name
    order = [text.index(piece) for piece in (LINUX_GROUP, NAGIOS_BUNDLE, SERVER_GROUP,
                                             client1, client2)]
    assert order == sorted(order)
    assert "unused" not in text
    assert [kind for kind, _ in definitions(text)] == \
        ["hostgroup", "service", "hostgroup", "host", "host"]
    assert (nagios_repo.path / "NagiosGen/nagiosgen.cfg").read_text() == text
    # the older name of the server file serves the same text
    older = lxml.etree.Element("Path", name="/etc/nagios/nagiosgen.cfg")
    core.Bind(older, core.build_metadata("client2"))
    assert older.text == text


def test_the_aggregate_follows_the_host_files(nagios_repo: Repo, local_core) -> None:
    core = make(local_core, nagios_repo)
    plugin = core.plugins["NagiosGen"]
    assert definitions(plugin.server_config()) == []
    paths(core, "client1")
    assert host_names(plugin.server_config()) == ["client1"]
    paths(core, "client2")
    assert host_names(plugin.server_config()) == ["client1", "client2"]
    (nagios_repo.path / "NagiosGen/client1-host.cfg").unlink()
    assert host_names(plugin.server_config()) == ["client2"]
    assert "hostgroup_name  linux" not in plugin.server_config()  # no host in linux now


def test_legacy_parents_xml_adds_parents(nagios_repo: Repo, local_core, caplog) -> None:
    nagios_repo.write("NagiosGen/parents.xml", """\
        <NagiosParents>
          <Depend name="client1" on="core-router"/>
          <Depend name="client2" on="core-router"/>
        </NagiosParents>""")
    with caplog.at_level(logging.WARNING):
        core = make(local_core, nagios_repo)
    assert "config.xml replaces parents.xml" in caplog.text
    assert host(paths(core, "client1")["/etc/nagiosgen.status"].text)["parents"] == \
        "dc-2-switch,core-router"
    assert host(paths(core, "client2")["/etc/nagiosgen.status"].text)["parents"] == \
        "core-router"


@pytest.mark.parametrize("option, message", [
    ('<Option name="notes">one\ntwo</Option>', "needs a value on one line"),
    ('<Option name="bad name">x</Option>', "is no Nagios directive name"),
    ('<Option name="notes"/>', "needs a value on one line"),
])
def test_a_bad_config_keeps_the_last_good_version(nagios_repo: Repo, local_core, caplog,
                                                  option: str, message: str) -> None:
    core = make(local_core, nagios_repo)
    broken = CONFIG.replace("<Client name=\"client1\">", f"<Client name=\"client1\">{option}")
    rewrite(nagios_repo.path / "NagiosGen/config.xml", broken)
    with caplog.at_level(logging.ERROR):
        core.refresh()
    assert message in caplog.text
    assert "NagiosGen/config.xml:9:" in caplog.text
    defined = host(paths(core, "client1")["/etc/nagiosgen.status"].text)
    assert defined["max_check_attempts"] == "10" and "notes" not in defined


def test_without_config_xml_the_defaults_apply(nagios_repo: Repo, local_core) -> None:
    (nagios_repo.path / "NagiosGen/config.xml").unlink()
    core = make(local_core, nagios_repo)
    assert host(paths(core, "client1")["/etc/nagiosgen.status"].text) == {
        "host_name": "client1", "alias": "client1", "address": "10.0.0.1",
        "hostgroups": "linux,nagios", "use": "default"}


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_agents_get_their_entries_through_a_network_core(nagios_repo: Repo, network_server,
                                                         core: str) -> None:
    # the multiprocessing core's children do not see the FakeDNS: every address is known
    nagios_repo.write("Metadata/clients.xml", CLIENTS.replace(
        'password="pw2"', 'password="pw2" address="192.0.2.7"'))
    server = network_server(nagios_repo, core=core, server__plugins=PLUGINS + ",NagiosGen",
                            server__children="2")

    def served(uuid: str, password: str) -> dict[str, str]:
        config = lxml.etree.fromstring(server.proxy(uuid, password).GetConfig().encode())
        return {el.get("name"): el.text for el in config.iter("Path")}

    client1 = served("uuid-client1", "pw1")
    assert set(client1) == {"/etc/nagiosgen.status"}
    assert host(client1["/etc/nagiosgen.status"])["address"] == "10.0.0.1"
    client2 = served("uuid-client2", "pw2")
    assert host_names(client2[SERVER_PATH]) == ["client1", "client2"]
    assert host(client2["/etc/nagiosgen.status"])["address"] == "192.0.2.7"


# -- the configuration cache ------------------------------------------------------

def served(core: LocalCore, client: str) -> str:
    """What an agent is sent: kept, or built and kept (``bcfg2.configcache``)."""
    return core.serve_configuration(client, core.build_metadata(client))


def test_configurations_are_kept_until_what_nagiosgen_read_changes(
        nagios_repo: Repo, local_core: Factory) -> None:
    from cache_world import from_scratch

    nagios_repo.write("Metadata/clients.xml", CLIENTS.replace(
        'floating="true"', 'address="10.0.0.2"'))  # no DNS: client2's configuration is kept
    core = make(local_core, nagios_repo, server__filemonitor="inotify")
    counts = core.config_cache.counts
    for client in ("client1", "client2"):
        served(core, client)
    hits = counts["hits"]
    assert [served(core, c) for c in ("client1", "client2")] == [
        from_scratch(core, c) for c in ("client1", "client2")]
    assert counts["hits"] == hits + 2
    host_file = nagios_repo.path / "NagiosGen/client1-host.cfg"
    changes = {
        "a hostgroup file client1 looks for appears": lambda: nagios_repo.write(
            "NagiosGen/datacenter-2-group.cfg", "define hostgroup{\n hostgroup_name dc2\n}\n"),
        "config.xml changes client1's options": lambda: nagios_repo.write(
            "NagiosGen/config.xml", CONFIG.replace(">10<", ">12<")),
        "client1's kept definition goes away": host_file.unlink,
    }

    def settled() -> None:
        """Both kept, and the files their builds wrote handled (their events drop the
        builds that wrote them once: the next build writes nothing)."""
        for _ in range(3):
            for client in ("client1", "client2"):
                served(core, client)
            core.refresh()
        assert "client1" in core.config_cache and "client2" in core.config_cache

    for what, change in changes.items():
        settled()
        change()
        core.refresh()
        first = served(core, "client1")  # writes client1-host.cfg (again)
        assert host_file.exists(), what  # (a fresh build would write it too: asked first)
        assert first == from_scratch(core, "client1"), what
        core.refresh()  # the write's event: the Nagios server's aggregate changes with it
        assert served(core, "client2") == from_scratch(core, "client2"), what
    aggregate = lxml.etree.fromstring(served(core, "client2").encode()).xpath(
        f"//Path[@name='{SERVER_PATH}']")[0].text
    client1 = [dict(d) for kind, d in definitions(aggregate)
               if kind == "host" and dict(d)["host_name"] == "client1"]
    assert [d["max_check_attempts"] for d in client1] == ["12"]
    # a file nobody reads changes nothing: served as kept
    settled()
    hits = counts["hits"]
    nagios_repo.write("NagiosGen/notes.txt", "x\n")
    core.refresh()
    served(core, "client1")
    assert counts["hits"] == hits + 1


def test_a_host_definition_whose_address_dns_gave_is_not_kept(
        nagios_repo: Repo, local_core: Factory, dns: FakeDNS) -> None:
    core = make(local_core, nagios_repo, server__filemonitor="inotify")
    served(core, "client2")
    dns.answers["client2"] = "192.0.2.99"  # the address changed in DNS
    assert host(paths(core, "client2")["/etc/nagiosgen.status"].text)["address"] == \
        "192.0.2.99"
    assert "192.0.2.99" in served(core, "client2")
    served(core, "client1")  # its address is in clients.xml
    assert "client2" not in core.config_cache and "client1" in core.config_cache

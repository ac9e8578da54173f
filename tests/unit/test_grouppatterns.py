"""GroupPatterns: groups from host-name patterns and ranges, live reloads, cache expiry."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import PLUGINS, Repo, rewrite

from bcfg2.core import LocalCore
from bcfg2.plugins.grouppatterns import host_groups

Factory = Callable[..., LocalCore]

HOSTS = ("node1.example.com", "node32.example.com", "node33.example.com",
         "xnfs1.example.com", "xlogin2.example.com", "xwww.example.com", "db.example.com")

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"/>
  <Group name="rack1"><Bundle name="rack"/></Group>
</Groups>
"""

CONFIG = """\
<GroupPatterns>
  <GroupPattern>
    <NameRange>node[[1-32]]</NameRange>
    <Group>rack1</Group>
  </GroupPattern>
  <GroupPattern>
    <NamePattern>^x(\\w[^\\d\\.]+)\\d*\\.</NamePattern>
    <Group>$1-server</Group>
    <Group>cluster</Group>
  </GroupPattern>
</GroupPatterns>
"""


@pytest.fixture
def hosts_repo(repo: Repo) -> Repo:
    clients = "".join(f'<Client name="{host}" profile="basic"/>' for host in HOSTS)
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", f'<Clients version="3.0">{clients}</Clients>')
    repo.write("Bundler/rack.xml", '<Bundle><Package name="rack-agent"/></Bundle>')
    repo.write("GroupPatterns/config.xml", CONFIG)
    return repo


def make(local_core: Factory, repo: Repo, **overrides: str) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",GroupPatterns", **overrides)


def pattern_groups(core: LocalCore, host: str) -> set[str]:
    return core.build_metadata(host).additional_groups


def test_a_range_gives_its_group_and_the_groups_bundles(hosts_repo, local_core) -> None:
    core = make(local_core, hosts_repo)
    assert pattern_groups(core, "node1.example.com") == {"rack1"}
    assert pattern_groups(core, "node32.example.com") == {"rack1"}
    assert pattern_groups(core, "node33.example.com") == set()   # outside the range
    metadata = core.build_metadata("node1.example.com")
    assert "rack" in metadata.bundles
    built = core.plugins["Bundler"].BuildStructures(metadata)
    assert [(el.tag, el.get("name")) for s in built for el in s] == [("Package", "rack-agent")]
    assert "rack" not in core.build_metadata("db.example.com").bundles


def test_regex_groups_are_substituted_into_group_names(hosts_repo, local_core) -> None:
    core = make(local_core, hosts_repo)
    assert pattern_groups(core, "xnfs1.example.com") == {"nfs-server", "cluster"}
    assert pattern_groups(core, "xlogin2.example.com") == {"login-server", "cluster"}
    assert pattern_groups(core, "xwww.example.com") == {"www-server", "cluster"}
    assert "nfs-server" in core.build_metadata("xnfs1.example.com").groups
    assert pattern_groups(core, "db.example.com") == set()


@pytest.mark.parametrize(("spec", "host", "matches"), [
    ("n[[1-3,7]]-r[[10-12]]", "n7-r11", True),
    ("n[[1-3,7]]-r[[10-12]]", "n5-r11", False),
    ("n[[1-3,7]]-r[[10-12]]", "n2-r13", False),
    ("a.b[[1-2]]", "axb1", False),      # the literal part is not a regular expression
    ("node[[1-3]]", "node12", False),   # all the digits count
])
def test_name_ranges(hosts_repo, local_core, spec, host, matches) -> None:
    hosts_repo.write("GroupPatterns/config.xml", f"""\
        <GroupPatterns><GroupPattern><NameRange>{spec}</NameRange><Group>ranged</Group>
        </GroupPattern></GroupPatterns>""")
    core = make(local_core, hosts_repo)
    assert (host_groups(core.plugins["GroupPatterns"].config.matchers, host) == {"ranged"}) \
        is matches


def test_a_live_edit_takes_effect_after_refresh(hosts_repo, local_core) -> None:
    core = make(local_core, hosts_repo)
    assert pattern_groups(core, "node33.example.com") == set()
    rewrite(hosts_repo.path / "GroupPatterns/config.xml", CONFIG.replace("[[1-32]]", "[[1-40]]"))
    assert core.refresh() > 0
    assert pattern_groups(core, "node33.example.com") == {"rack1"}
    assert "rack" in core.build_metadata("node33.example.com").bundles


@pytest.mark.parametrize(("broken", "message"), [
    ("<GroupPatterns><GroupPattern>", "config.xml:1:"),
    ("<GroupPatterns>\n<GroupPattern><NamePattern>(x</NamePattern><Group>g</Group>"
     "</GroupPattern></GroupPatterns>", "config.xml:2: invalid regular expression"),
    ("<GroupPatterns>\n\n<GroupPattern><NamePattern>(x)</NamePattern><Group>g-$2</Group>"
     "</GroupPattern></GroupPatterns>", "config.xml:3: group 'g-$2' uses $2"),
    ("<GroupPatterns>\n<GroupPattern><NameRange>n[[5-1]]</NameRange><Group>g</Group>"
     "</GroupPattern></GroupPatterns>", "config.xml:2: invalid range"),
])
def test_a_malformed_file_keeps_the_last_good_version(hosts_repo, local_core, caplog,
                                                      broken, message) -> None:
    core = make(local_core, hosts_repo)
    rewrite(hosts_repo.path / "GroupPatterns/config.xml", broken)
    with caplog.at_level(logging.ERROR):
        core.refresh()
    assert message in caplog.text
    assert pattern_groups(core, "node1.example.com") == {"rack1"}
    assert pattern_groups(core, "xnfs1.example.com") == {"nfs-server", "cluster"}


def test_aggressive_caching_expires_only_the_clients_whose_groups_change(
        hosts_repo, local_core) -> None:
    core = make(local_core, hosts_repo, caching__client_metadata="aggressive")
    node33 = core.build_metadata("node33.example.com")
    node1 = core.build_metadata("node1.example.com")
    nfs = core.build_metadata("xnfs1.example.com")
    assert core.build_metadata("node33.example.com") is node33
    rewrite(hosts_repo.path / "GroupPatterns/config.xml", CONFIG.replace("[[1-32]]", "[[1-40]]"))
    core.refresh()
    assert core.build_metadata("node1.example.com") is node1
    assert core.build_metadata("xnfs1.example.com") is nfs
    renewed = core.build_metadata("node33.example.com")
    assert renewed is not node33 and "rack" in renewed.bundles


def test_a_pattern_group_changes_the_configuration_served(repo, network_server) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true"/>
          <Group name="other" profile="true"/>
          <Group name="patterned"><Bundle name="extra"/></Group>
        </Groups>""")
    repo.write("Bundler/extra.xml", '<Bundle><Package name="extra-tool"/></Bundle>')
    repo.write("GroupPatterns/config.xml", """\
        <GroupPatterns><GroupPattern><NamePattern>^client1$</NamePattern>
        <Group>patterned</Group></GroupPattern></GroupPatterns>""")
    server = network_server(repo, server__plugins=PLUGINS + ",GroupPatterns")

    def bundles(user: str, password: str) -> list[str]:
        config = lxml.etree.fromstring(server.proxy(user, password).GetConfig().encode())
        return [b.get("name") for b in config.iter("Bundle")]

    assert bundles("uuid-client1", "pw1") == ["extra"]
    assert bundles("uuid-client2", "pw2") == []


def test_removing_the_file_removes_the_pattern_groups(hosts_repo, local_core) -> None:
    core = make(local_core, hosts_repo, caching__client_metadata="aggressive")
    assert pattern_groups(core, "node1.example.com") == {"rack1"}
    (hosts_repo.path / "GroupPatterns/config.xml").unlink()
    core.refresh()
    assert pattern_groups(core, "node1.example.com") == set()

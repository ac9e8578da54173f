"""What a build works out once for every client of a group signature follows each change.

Cfg's choice of version, info.xml's ``<Info>``, the Rules and Defaults that
apply are remembered per kind of client (the groups and client names the
files mention); these tests build for one client, change the repository,
and check that the next build of every client of that kind sees the change.
"""

from __future__ import annotations

from collections.abc import Callable

import lxml.etree
from conftest import ALL_BASE_GROUPS, Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]

#: client1 and client3 have the same profile and so the same groups; client2 another
CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic"/>
  <Client name="client2" profile="other"/>
  <Client name="client3" profile="basic"/>
</Clients>
"""


def setup_repo(repo: Repo, *entries: str) -> None:
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "\n".join(entries) + "\n</Bundle>\n")


def bound(core: LocalCore, client: str, tag: str, name: str) -> lxml.etree._Element:
    config = core.BuildConfiguration(client)
    found = [el for el in config.iter(tag) if el.get("name") == name]
    assert len(found) == 1, lxml.etree.tostring(config)
    return found[0]


def texts(core: LocalCore, name: str = "/etc/motd") -> list[str | None]:
    return [bound(core, client, "Path", name).text
            for client in ("client1", "client2", "client3")]


def test_new_group_version_reaches_every_member_on_its_next_build(
        repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Path name="/etc/motd"/>')
    repo.write("Cfg/etc/motd/motd", "all\n")
    core = local_core(repo)
    assert texts(core) == ["all\n"] * 3
    repo.write("Cfg/etc/motd/motd.G50_linux", "linux\n")
    core.refresh()
    assert texts(core) == ["linux\n", "all\n", "linux\n"]
    repo.write("Cfg/etc/motd/motd.G60_other", "other\n")
    core.refresh()
    assert texts(core) == ["linux\n", "other\n", "linux\n"]
    (repo.path / "Cfg/etc/motd/motd.G50_linux").unlink()
    core.refresh()
    assert texts(core) == ["all\n", "other\n", "all\n"]


def test_host_version_is_for_its_host_only_though_others_share_its_groups(
        repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Path name="/etc/motd"/>')
    repo.write("Cfg/etc/motd/motd", "all\n")
    repo.write("Cfg/etc/motd/motd.G50_linux", "linux\n")
    core = local_core(repo)
    assert texts(core) == ["linux\n", "all\n", "linux\n"]
    repo.write("Cfg/etc/motd/motd.H_client3", "three\n")
    core.refresh()
    assert texts(core) == ["linux\n", "all\n", "three\n"]
    # a changed version is served at once, to each client that gets it
    rewrite(repo.path / "Cfg/etc/motd/motd.G50_linux", "linux 2\n")
    core.refresh()
    assert texts(core) == ["linux 2\n", "all\n", "three\n"]


def test_changed_info_xml_applies_on_the_next_build(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Path name="/etc/motd"/>')
    repo.write("Cfg/etc/motd/motd", "all\n")
    info = repo.write("Cfg/etc/motd/info.xml", """\
        <FileInfo>
          <Client name="client3"><Info mode="0600"/></Client>
          <Group name="linux"><Info mode="0640" owner="web"/></Group>
          <Info mode="0644"/>
        </FileInfo>""")
    core = local_core(repo)

    def modes() -> list[tuple[str | None, str | None]]:
        return [(entry.get("mode"), entry.get("owner")) for entry in
                (bound(core, client, "Path", "/etc/motd")
                 for client in ("client1", "client2", "client3"))]

    assert modes() == [("0640", "web"), ("0644", "root"), ("0600", "root")]
    rewrite(info, '<FileInfo><Group name="linux"><Info mode="0400"/></Group>'
                  '<Info mode="0444"/></FileInfo>')
    core.refresh()
    assert modes() == [("0400", "root"), ("0444", "root"), ("0400", "root")]
    info.unlink()
    core.refresh()
    assert [mode for mode, _ in modes()] == ["644"] * 3


def test_group_membership_change_changes_the_versions_chosen(
        repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Path name="/etc/motd"/>', '<Package name="tool"/>')
    repo.write("Cfg/etc/motd/motd", "all\n")
    repo.write("Cfg/etc/motd/motd.G50_linux", "linux\n")
    repo.write("Rules/rules.xml", """\
        <Rules priority="1">
          <Group name="linux"><Package name="tool" version="2"/></Group>
          <Group name="linux" negate="true"><Package name="tool" version="1"/></Group>
        </Rules>""")
    core = local_core(repo)
    assert texts(core) == ["linux\n", "all\n", "linux\n"]
    assert bound(core, "client2", "Package", "tool").get("version") == "1"
    rewrite(repo.path / "Metadata/groups.xml",
            ALL_BASE_GROUPS.replace('<Group name="other" profile="true">',
                                    '<Group name="other" profile="true"><Group name="linux"/>'))
    core.refresh()
    assert texts(core) == ["linux\n"] * 3
    assert bound(core, "client2", "Package", "tool").get("version") == "2"


def test_rules_follow_new_files_and_client_conditionals(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Package name="tool"/>')
    repo.write("Rules/base.xml", """\
        <Rules priority="1">
          <Package name="tool" version="1"/>
          <Client name="client3"><Package name="tool" version="3"/></Client>
        </Rules>""")
    core = local_core(repo)

    def versions() -> list[str | None]:
        return [bound(core, client, "Package", "tool").get("version")
                for client in ("client1", "client2", "client3")]

    assert versions() == ["1", "1", "3"]
    repo.write("Rules/linux.xml", """\
        <Rules priority="5">
          <Group name="linux"><Package name="tool" version="5"/></Group>
        </Rules>""")
    core.refresh()
    assert versions() == ["5", "1", "5"]
    rewrite(repo.path / "Rules/linux.xml",
            '<Rules priority="5"><Group name="other"><Package name="tool" version="6"/>'
            '</Group></Rules>')
    core.refresh()
    assert versions() == ["1", "6", "3"]
    # two files of one priority for a client: that client's entry fails, every time
    repo.write("Rules/clash.xml",
               '<Rules priority="5"><Package name="tool" version="7"/></Rules>')
    core.refresh()
    for _ in range(2):
        assert bound(core, "client2", "Package", "tool").get("failure")
    assert bound(core, "client1", "Package", "tool").get("version") == "7"


def test_defaults_follow_their_file(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Package name="tool"/>', '<Package name="other" type="rpm"/>')
    repo.write("Rules/base.xml", '<Rules priority="1"><Package name="tool" version="1"/>'
                                 '<Package name="other" version="1"/></Rules>')
    defaults = repo.write("Defaults/defaults.xml", """\
        <Defaults priority="1">
          <Group name="linux"><Package name=".*" type="deb"/></Group>
          <Package name="to.*" type="yum"/>
        </Defaults>""")
    core = local_core(repo)
    assert bound(core, "client1", "Package", "tool").get("type") == "deb"
    assert bound(core, "client2", "Package", "tool").get("type") == "yum"
    assert bound(core, "client3", "Package", "other").get("type") == "rpm"
    rewrite(defaults, '<Defaults priority="1"><Package name="t.*" type="pac"/></Defaults>')
    core.refresh()
    assert [bound(core, client, "Package", "tool").get("type")
            for client in ("client1", "client2", "client3")] == ["pac"] * 3


def test_bundles_follow_their_file_included_files_and_group_changes(
        repo: Repo, local_core: Factory) -> None:
    setup_repo(repo)
    repo.write("Rules/rules.xml", '<Rules priority="1"><Package name="a" version="1"/>'
                                  '<Package name="b" version="1"/>'
                                  '<Package name="c" version="1"/></Rules>')
    bundle = repo.write("Bundler/base.xml", """\
        <Bundle xmlns:xi="http://www.w3.org/2001/XInclude">
          <Group name="linux"><Package name="a"/></Group>
          <Client name="client3"><Package name="b"/></Client>
          <xi:include href="more.xml"/>
        </Bundle>""")
    more = repo.write("Bundler/more.xml", '<Group name="other"><Package name="c"/></Group>')
    core = local_core(repo)

    def packages() -> list[list[str]]:
        return [sorted(el.get("name") for el in core.BuildConfiguration(client).iter("Package"))
                for client in ("client1", "client2", "client3")]

    assert packages() == [["a"], ["c"], ["a", "b"]]
    # each build gets its own copy: changing one configuration changes no other
    core.BuildConfiguration("client1").find("Bundle/Package").set("name", "changed")
    assert packages() == [["a"], ["c"], ["a", "b"]]
    rewrite(more, '<Group name="linux"><Package name="c"/></Group>')
    core.refresh()
    assert packages() == [["a", "c"], [], ["a", "b", "c"]]
    rewrite(bundle, '<Bundle><Group name="other"><Package name="b"/></Group></Bundle>')
    core.refresh()
    assert packages() == [[], ["b"], []]
    rewrite(repo.path / "Metadata/groups.xml",
            ALL_BASE_GROUPS.replace('<Group name="basic" profile="true" public="true">',
                                    '<Group name="basic" profile="true" public="true">'
                                    '<Group name="other"/>'))
    core.refresh()
    assert packages() == [["b"], ["b"], ["b"]]


def test_bundle_files_that_appear_and_go_are_served_and_forgotten(
        repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Package name="a"/>')
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS.replace(
        '<Bundle name="base"/>\n  </Group>\n  <Group name="linux">',
        '<Bundle name="base"/>\n    <Bundle name="extra"/>\n  </Group>\n  <Group name="linux">'))
    repo.write("Rules/rules.xml", '<Rules priority="1"><Package name="a" version="1"/>'
                                  '<Package name="b" version="1"/></Rules>')
    core = local_core(repo)

    def bundles(client: str) -> list[str]:
        return sorted(el.get("name") for el in core.BuildConfiguration(client).iter("Bundle"))

    assert bundles("client2") == ["base"]
    repo.write("Bundler/extra.xml", '<Bundle><Package name="b"/></Bundle>')
    core.refresh()
    assert (bundles("client1"), bundles("client2")) == (["base"], ["base", "extra"])
    (repo.path / "Bundler/extra.xml").unlink()
    core.refresh()
    assert bundles("client2") == ["base"]

"""Rules: literal entries with priorities, Group conditionals, regex names."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS as GROUPS
from conftest import Repo, rewrite

from bcfg2.core import LocalCore
from bcfg2.errors import PluginExecutionError

Factory = Callable[..., LocalCore]


def bundle(repo: Repo, *entries: str) -> None:
    """Give both clients the bundle "base" holding the entries."""
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "\n".join(entries) + "\n</Bundle>\n")


def entries(config: lxml.etree._Element, tag: str) -> dict[str, lxml.etree._Element]:
    return {el.get("name"): el for el in config.iter(tag)}


def bind(core: LocalCore, client: str, tag: str, name: str) -> lxml.etree._Element:
    entry = lxml.etree.Element(tag, name=name)
    core.Bind(entry, core.build_metadata(client))
    return entry






def test_rules_bind_attributes_children_and_text(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Package name="openssh-server"/>', '<Service name="sshd"/>',
           '<POSIXUser name="daemon"/>', '<Path name="/etc/issue"/>', '<Path name="/srv"/>')
    repo.write("Rules/rules.xml", """\
        <Rules priority="0">
          <Package name="openssh-server" type="deb" version="auto"/>
          <Service name="sshd" status="on" type="systemd"/>
          <POSIXUser name="daemon" uid="2" home="/sbin" group="daemon">
            <MemberOf group="lp"/>
            <MemberOf group="adm"/>
          </POSIXUser>
          <Path name="/etc/issue" type="file" owner="root" group="root" mode="0644">Welcome</Path>
          <Path name="/srv" type="directory" owner="root" group="root" mode="0775">
            <ACL type="default" scope="user" user="www" perms="rw"/>
            <Group name="linux">
              <ACL type="default" scope="group" group="linux" perms="rx"/>
            </Group>
          </Path>
        </Rules>""")
    core = local_core(repo)
    for client, has_linux_acl in (("client1", True), ("client2", False)):
        config = core.BuildConfiguration(client)
        assert not config.xpath("//*[@failure]")
        pkg = entries(config, "Package")["openssh-server"]
        assert dict(pkg.attrib) == {"name": "openssh-server", "type": "deb", "version": "auto"}
        assert entries(config, "Service")["sshd"].get("status") == "on"
        user = entries(config, "POSIXUser")["daemon"]
        assert (user.get("uid"), user.get("home")) == ("2", "/sbin")
        assert sorted(m.get("group") for m in user.iter("MemberOf")) == ["adm", "lp"]
        paths = entries(config, "Path")
        assert paths["/etc/issue"].text == "Welcome"
        assert paths["/etc/issue"].get("type") == "file"
        acls = sorted((acl.get("scope"), acl.get("perms")) for acl in paths["/srv"])
        assert acls == ([("group", "rx"), ("user", "rw")] if has_linux_acl else [("user", "rw")])
        assert paths["/srv"].find("Group") is None


def test_higher_priority_file_wins(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Package name="foo"/>')
    versions = {10: "1.0", 50: "5.0", 20: "2.0"}
    for prio, version in versions.items():
        repo.write(f"Rules/p{prio}.xml",
                   f'<Rules priority="{prio}"><Package name="foo" version="{version}"/></Rules>')
    core = local_core(repo)
    config = core.BuildConfiguration("client1")
    assert entries(config, "Package")["foo"].get("version") == versions[max(versions)]


def test_same_priority_conflict_is_a_bind_failure_naming_the_files(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    bundle(repo, '<Package name="foo"/>', '<Package name="bar"/>')
    repo.write("Rules/one.xml", '<Rules priority="5"><Package name="foo" version="1"/>'
                                '<Package name="bar" version="1"/></Rules>')
    repo.write("Rules/sub/two.xml", '<Rules priority="5"><Package name="foo" version="2"/>'
                                    '</Rules>')
    core = local_core(repo)
    with pytest.raises(PluginExecutionError) as info:
        bind(core, "client1", "Package", "foo")
    assert "one.xml" in str(info.value)
    assert os.path.join("sub", "two.xml") in str(info.value)

    caplog.set_level(logging.ERROR)
    config = core.BuildConfiguration("client1")
    packages = entries(config, "Package")
    assert "one.xml" in packages["foo"].get("failure")
    assert packages["foo"].get("version") is None
    # the rest of the configuration is served
    assert packages["bar"].get("version") == "1"
    assert "failure" not in packages["bar"].attrib
    assert "two.xml" in caplog.text


def test_same_priority_is_fine_when_only_one_applies(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Package name="foo"/>')
    repo.write("Rules/one.xml", '<Rules priority="5"><Group name="linux">'
                                '<Package name="foo" version="linux"/></Group></Rules>')
    repo.write("Rules/two.xml", '<Rules priority="5"><Group name="linux" negate="true">'
                                '<Package name="foo" version="not-linux"/></Group></Rules>')
    core = local_core(repo)
    assert entries(core.BuildConfiguration("client1"), "Package")["foo"].get("version") == "linux"
    assert entries(core.BuildConfiguration("client2"), "Package")["foo"].get("version") == \
        "not-linux"


def test_entries_under_conditionals(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Service name="ntp"/>', '<Service name="linux-only"/>')
    repo.write("Rules/services.xml", """\
        <Rules priority="0">
          <Group name="linux">
            <Service name="ntp" status="on"/>
            <Service name="linux-only" status="on"/>
          </Group>
          <Client name="client2">
            <Service name="ntp" status="off"/>
          </Client>
        </Rules>""")
    core = local_core(repo)
    one = entries(core.BuildConfiguration("client1"), "Service")
    assert one["ntp"].get("status") == "on"
    assert one["linux-only"].get("status") == "on"
    two = entries(core.BuildConfiguration("client2"), "Service")
    assert two["ntp"].get("status") == "off"
    assert two["linux-only"].get("failure") == "no matching generator"


def test_rule_that_does_not_apply_leaves_the_entry_to_another_generator(
        repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Path name="/etc/motd"/>')
    repo.write("Cfg/etc/motd/motd", "from Cfg\n")
    repo.write("Rules/links.xml", '<Rules priority="0"><Client name="client1">'
                                  '<Path name="/etc/motd" type="symlink" to="/etc/issue"/>'
                                  '</Client></Rules>')
    core = local_core(repo)
    motd = entries(core.BuildConfiguration("client2"), "Path")["/etc/motd"]
    assert "failure" not in motd.attrib
    assert motd.text == "from Cfg\n"


@pytest.mark.parametrize("regex", ["true", "false"])
def test_regex_names_are_anchored(repo: Repo, local_core: Factory, regex: str) -> None:
    bundle(repo, '<Service name="bcfg2"/>', '<Service name="bcfg2-server"/>',
           '<Service name="xbcfg2"/>', '<Package name="python3-lxml"/>')
    repo.write("Rules/r.xml", """\
        <Rules priority="0">
          <Service name="bcfg2" status="on"/>
          <Package name="python3-.*" type="deb"/>
        </Rules>""")
    core = local_core(repo, rules__regex=regex)
    config = core.BuildConfiguration("client1")
    services = entries(config, "Service")
    assert services["bcfg2"].get("status") == "on"
    assert services["bcfg2-server"].get("failure") == "no matching generator"
    assert services["xbcfg2"].get("failure") == "no matching generator"
    lxml_pkg = entries(config, "Package")["python3-lxml"]
    if regex == "true":
        assert lxml_pkg.get("type") == "deb"
    else:
        assert lxml_pkg.get("failure") == "no matching generator"


def test_exact_name_beats_regex_in_the_same_file(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Service name="bcfg2-server"/>', '<Service name="bcfg2-report"/>')
    repo.write("Rules/r.xml", """\
        <Rules priority="0">
          <Service name="bcfg2-.*" status="off"/>
          <Service name="bcfg2-server" status="on"/>
        </Rules>""")
    core = local_core(repo, rules__regex="true")
    services = entries(core.BuildConfiguration("client1"), "Service")
    assert services["bcfg2-server"].get("status") == "on"
    assert services["bcfg2-report"].get("status") == "off"


@pytest.mark.parametrize("replace", ["true", "false"])
def test_replace_name(repo: Repo, local_core: Factory, replace: str) -> None:
    users = ["alice", "bob"]
    bundle(repo, *(f'<POSIXUser name="{user}"/>' for user in users))
    repo.write("Rules/users.xml", '<Rules priority="0">'
                                  '<POSIXUser name=".*" home="/home/%{name}" shell="/bin/sh"/>'
                                  '</Rules>')
    core = local_core(repo, rules__regex="true", rules__replace_name=replace)
    bound = entries(core.BuildConfiguration("client1"), "POSIXUser")
    for user in users:
        expected = f"/home/{user}" if replace == "true" else "/home/%{name}"
        assert bound[user].get("home") == expected
        assert bound[user].get("shell") == "/bin/sh"


def test_edited_rules_file_is_reloaded_and_bad_edit_keeps_last_good(
        repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Package name="foo"/>')
    path = repo.write("Rules/r.xml", '<Rules priority="0"><Package name="foo" version="1"/></Rules>')
    core = local_core(repo)
    assert bind(core, "client1", "Package", "foo").get("version") == "1"

    rewrite(path, '<Rules priority="0"><Package name="foo" version="22"/></Rules>')
    core.refresh()
    assert bind(core, "client1", "Package", "foo").get("version") == "22"

    rewrite(path, '<Rules priority="0"><Package name="foo" version="333"></Rules>')
    core.refresh()
    assert bind(core, "client1", "Package", "foo").get("version") == "22"

    rewrite(path, '<Rules priority="high"><Package name="foo" version="4444"/></Rules>')
    core.refresh()
    assert bind(core, "client1", "Package", "foo").get("version") == "22"

    path.unlink()
    core.refresh()
    with pytest.raises(PluginExecutionError):
        bind(core, "client1", "Package", "foo")
    foo = entries(core.BuildConfiguration("client1"), "Package")["foo"]
    assert foo.get("failure") == "no matching generator"


def test_altsrc_binds_from_another_rule_but_keeps_the_name(repo: Repo,
                                                           local_core: Factory) -> None:
    bundle(repo, '<Package name="openssl" altsrc="openssl-encap"/>')
    repo.write("Rules/r.xml", '<Rules priority="0">'
                              '<Package name="openssl-encap" type="encap" version="3.0"/>'
                              '</Rules>')
    core = local_core(repo)
    [pkg] = core.BuildConfiguration("client1").iter("Package")
    assert dict(pkg.attrib) == {"name": "openssl", "type": "encap", "version": "3.0"}


# -- Rules beside Cfg: who binds a Path ----------------------------------------


def test_a_path_in_both_rules_and_cfg_is_a_conflict_naming_both(repo: Repo,
                                                                local_core: Factory) -> None:
    bundle(repo, '<Path name="/etc/motd"/>')
    repo.write("Rules/paths.xml", '<Rules priority="1">'
               '<Path name="/etc/motd" type="permissions" owner="root" group="root" '
               'mode="0644"/></Rules>')
    repo.write("Cfg/etc/motd/motd", "hello\n")
    config = local_core(repo).BuildConfiguration("client1")
    failure = entries(config, "Path")["/etc/motd"].get("failure")
    assert failure is not None and "Rules" in failure and "Cfg" in failure


def test_a_regex_rule_yields_to_cfg_which_lists_the_file(repo: Repo,
                                                         local_core: Factory) -> None:
    bundle(repo, '<Path name="/etc/motd"/>', '<Path name="/etc/issue"/>')
    repo.write("Rules/paths.xml", '<Rules priority="1">'
               '<Path name="/etc/.*" type="permissions" owner="root" group="adm" '
               'mode="0640"/></Rules>')
    repo.write("Cfg/etc/motd/motd", "hello\n")
    config = local_core(repo, rules__regex="true").BuildConfiguration("client1")
    paths = entries(config, "Path")
    assert paths["/etc/motd"].get("type") == "file"
    assert paths["/etc/motd"].text == "hello\n"
    assert paths["/etc/issue"].get("type") == "permissions"
    assert paths["/etc/issue"].get("group") == "adm"
    assert "failure" not in paths["/etc/motd"].attrib
    assert "failure" not in paths["/etc/issue"].attrib


def test_a_path_with_a_trailing_slash_matches_the_rule_without_it(repo: Repo,
                                                                  local_core: Factory) -> None:
    bundle(repo, '<Path name="/srv/data/"/>')
    repo.write("Rules/dirs.xml", '<Rules priority="0">'
               '<Path name="/srv/data" type="directory" owner="root" group="root" '
               'mode="0755"/></Rules>')
    entry = bind(local_core(repo), "client1", "Path", "/srv/data/")
    assert entry.get("type") == "directory"
    assert entry.get("name") == "/srv/data/"
    assert "failure" not in entry.attrib

"""Bundler: one bundle per file, conditionals, RequiredBundle, independent and
fully bound entries."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import Repo

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]


def groups(repo: Repo, *bundles: str) -> None:
    """Every client (both profiles) gets the named bundles."""
    listed = "".join(f'<Bundle name="{name}"/>' for name in bundles)
    repo.write("Metadata/groups.xml", f"""\
        <Groups>
          <Group name="basic" profile="true" public="true"><Group name="linux"/></Group>
          <Group name="other" profile="true"/>
          <Group name="all-clients">{listed}</Group>
          <Client name="client1"><Group name="all-clients"/></Client>
          <Client name="client2"><Group name="all-clients"/></Client>
        </Groups>""")


def structures(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    built = core.plugins["Bundler"].BuildStructures(core.build_metadata(client))
    return {s.get("name"): s for s in built}


def children(structure: lxml.etree._Element) -> list[tuple[str, str]]:
    return [(el.tag, el.get("name")) for el in structure]




def test_bundle_name_is_the_file_name(repo: Repo, local_core: Factory) -> None:
    groups(repo, "web-server", "mail.relay")
    repo.write("Bundler/web-server.xml", '<Bundle name="something-else"><Package name="a"/></Bundle>')
    repo.write("Bundler/mail.relay.xml", '<Bundle><Package name="b"/></Bundle>')
    core = local_core(repo)
    built = structures(core, "client1")
    assert sorted(built) == ["mail.relay", "web-server"]
    assert children(built["web-server"]) == [("Package", "a")]
    assert all(s.tag == "Bundle" for s in built.values())


def test_conditionals_are_resolved_and_flattened(repo: Repo, local_core: Factory) -> None:
    groups(repo, "ssh")
    repo.write("Bundler/ssh.xml", """\
        <Bundle>
          <Path name="/etc/ssh/ssh_config"/>
          <Group name="linux">
            <Package name="openssh-server"/>
            <Client name="client1"><Service name="sshd"/></Client>
            <Client name="client1" negate="true"><Service name="never"/></Client>
          </Group>
          <Group name="linux" negate="true">
            <Package name="ssh"/>
          </Group>
          <Client name="client2"><Path name="/etc/ssh/shosts.equiv"/></Client>
        </Bundle>""")
    core = local_core(repo)
    assert children(structures(core, "client1")["ssh"]) == [
        ("Path", "/etc/ssh/ssh_config"), ("Package", "openssh-server"), ("Service", "sshd")]
    assert children(structures(core, "client2")["ssh"]) == [
        ("Path", "/etc/ssh/ssh_config"), ("Package", "ssh"), ("Path", "/etc/ssh/shosts.equiv")]


def test_independent_bundle(repo: Repo, local_core: Factory) -> None:
    groups(repo, "motd", "dependent")
    repo.write("Bundler/motd.xml", '<Bundle independent="true"><Package name="a"/></Bundle>')
    repo.write("Bundler/dependent.xml", '<Bundle independent="false"><Package name="b"/></Bundle>')
    repo.write("Rules/r.xml", '<Rules priority="0"><Package name="a" type="deb"/>'
                              '<Package name="b" type="deb"/></Rules>')
    core = local_core(repo)
    config = core.BuildConfiguration("client1")
    motd = config.find("Independent")
    assert motd is not None and motd.get("name") == "motd"
    assert "independent" not in motd.attrib
    assert children(motd) == [("Package", "a")]
    assert [b.get("name") for b in config.findall("Bundle")] == ["dependent"]


def test_required_bundles_are_added_once_even_with_cycles(repo: Repo,
                                                          local_core: Factory) -> None:
    groups(repo, "a")
    repo.write("Bundler/a.xml", '<Bundle><RequiredBundle name="b"/><Package name="pa"/>'
                                '<Group name="linux"><RequiredBundle name="c"/></Group></Bundle>')
    repo.write("Bundler/b.xml", '<Bundle><RequiredBundle name="a"/><RequiredBundle name="c"/>'
                                '<Package name="pb"/></Bundle>')
    repo.write("Bundler/c.xml", '<Bundle><RequiredBundle name="b"/><Package name="pc"/></Bundle>')
    repo.write("Bundler/d.xml", '<Bundle><Package name="pd"/></Bundle>')
    core = local_core(repo)
    built = core.plugins["Bundler"].BuildStructures(core.build_metadata("client1"))
    assert sorted(s.get("name") for s in built) == ["a", "b", "c"]
    for structure in built:
        assert structure.find(".//RequiredBundle") is None
        assert [tag for tag, _ in children(structure)] == ["Package"]


def test_required_bundle_under_a_group_that_does_not_apply(repo: Repo,
                                                           local_core: Factory) -> None:
    groups(repo, "a")
    repo.write("Bundler/a.xml", '<Bundle><Group name="linux"><RequiredBundle name="c"/></Group>'
                                '</Bundle>')
    repo.write("Bundler/c.xml", '<Bundle><Package name="pc"/></Bundle>')
    core = local_core(repo)
    assert sorted(structures(core, "client1")) == ["a", "c"]
    assert sorted(structures(core, "client2")) == ["a"]


def test_inherit_modification_leaves_a_bound_bundle(repo: Repo, local_core: Factory) -> None:
    groups(repo, "automount")
    repo.write("Bundler/automount.xml", """\
        <Bundle>
          <RequiredBundle name="nfs-client" inherit_modification="true"/>
          <RequiredBundle name="tools"/>
          <Service name="autofs"/>
        </Bundle>""")
    repo.write("Bundler/nfs-client.xml", '<Bundle><Service name="nfslock"/></Bundle>')
    repo.write("Bundler/tools.xml", '<Bundle><Package name="less"/></Bundle>')
    repo.write("Rules/r.xml", '<Rules priority="0"><Service name=".*" status="on"/>'
                              '<Package name="less" type="deb"/></Rules>')
    core = local_core(repo, rules__regex="true")
    built = structures(core, "client1")
    assert children(built["automount"]) == [("BoundBundle", "nfs-client"), ("Service", "autofs")]

    config = core.BuildConfiguration("client1")
    assert not config.xpath("//*[@failure]")
    automount = config.xpath("Bundle[@name='automount']")[0]
    # the agent sees the required bundle inside, so its modification propagates
    assert automount.xpath("Bundle/@name") == ["nfs-client"]
    assert sorted(config.xpath("Bundle/@name")) == ["automount", "nfs-client", "tools"]


def test_required_bundle_without_name_is_dropped_with_a_warning(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    groups(repo, "a")
    repo.write("Bundler/a.xml", '<Bundle><RequiredBundle inherit_modification="true"/>'
                                '<RequiredBundle/><Package name="pa"/></Bundle>')
    core = local_core(repo)
    caplog.set_level(logging.WARNING)
    built = structures(core, "client1")
    assert children(built["a"]) == [("Package", "pa")]
    assert "RequiredBundle" in caplog.text
    assert core.BuildConfiguration("client1").xpath("Bundle/@name") == ["a"]


def test_missing_bundle_is_logged_and_the_others_are_served(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    groups(repo, "present", "absent")
    repo.write("Bundler/present.xml", '<Bundle><RequiredBundle name="also-absent"/>'
                                      '<Package name="p"/></Bundle>')
    repo.write("Rules/r.xml", '<Rules priority="0"><Package name="p" type="deb"/></Rules>')
    core = local_core(repo)
    caplog.set_level(logging.ERROR)
    config = core.BuildConfiguration("client1")
    assert config.tag == "Configuration"
    assert config.xpath("Bundle/@name") == ["present"]
    assert config.xpath("Bundle/Package/@type") == ["deb"]
    assert "absent" in caplog.text
    assert "also-absent" in caplog.text


def test_a_bundle_whose_file_never_parsed_is_reported_with_its_error(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    groups(repo, "good", "broken")
    repo.write("Bundler/good.xml", '<Bundle><Package name="p"/></Bundle>')
    broken = repo.write("Bundler/broken.xml", "<Bundle>\n  <Package name='q'>\n</Bundle>\n")
    repo.write("Rules/r.xml", '<Rules priority="0"><Package name="p" type="deb"/></Rules>')
    core = local_core(repo)
    caplog.set_level(logging.ERROR)
    config = core.BuildConfiguration("client1")
    assert config.xpath("Bundle/@name") == ["good"]
    messages = [r.getMessage() for r in caplog.records if r.name == "bcfg2.plugins.Bundler"]
    assert any("broken cannot be used" in m and f"{broken}:3:" in m for m in messages)
    assert not any("does not exist" in m for m in messages)
    parse_errors = [r.getMessage() for r in caplog.records if r.name != "bcfg2.plugins.Bundler"
                    and f"{broken}:3:" in r.getMessage()]
    assert parse_errors and "not in service until it is fixed" in parse_errors[0]


def test_broken_bundle_keeps_last_good_version_and_new_bundles_appear(
        repo: Repo, local_core: Factory) -> None:
    groups(repo, "a", "later")
    path = repo.write("Bundler/a.xml", '<Bundle><Package name="one"/></Bundle>')
    core = local_core(repo)
    assert sorted(structures(core, "client1")) == ["a"]

    before = path.stat().st_mtime_ns
    path.write_text('<Bundle><Package name="two"></Bundle>')
    os.utime(path, ns=(before + 10**9, before + 10**9))
    repo.write("Bundler/later.xml", '<Bundle><Package name="three"/></Bundle>')
    core.refresh()
    built = structures(core, "client1")
    assert children(built["a"]) == [("Package", "one")]
    assert children(built["later"]) == [("Package", "three")]

    path.unlink()
    core.refresh()
    assert sorted(structures(core, "client1")) == ["later"]


def test_bound_entries_come_out_fully_bound(repo: Repo, local_core: Factory) -> None:
    groups(repo, "base")
    repo.write("Bundler/base.xml", """\
        <Bundle>
          <BoundPackage name="openssh-server" type="yum" version="5.8p2"/>
          <BoundService name="sshd" type="chkconfig" status="on"/>
          <BoundPath name="/etc/flag" type="file" owner="root" group="root" mode="0600">on</BoundPath>
          <BoundPOSIXUser name="svc" uid="900" home="/srv"><MemberOf group="adm"/></BoundPOSIXUser>
        </Bundle>""")
    # what Rules says about the same names must not matter
    repo.write("Rules/r.xml", '<Rules priority="0"><Package name="openssh-server" type="deb" '
                              'version="auto"/></Rules>')
    core = local_core(repo)
    assert [tag for tag, _ in children(structures(core, "client1")["base"])] == [
        "BoundPackage", "BoundService", "BoundPath", "BoundPOSIXUser"]
    bundle = core.BuildConfiguration("client1").find("Bundle")
    assert not bundle.xpath("//*[@failure]")
    found = {el.tag: el for el in bundle}
    assert sorted(found) == ["POSIXUser", "Package", "Path", "Service"]
    assert dict(found["Package"].attrib) == {"name": "openssh-server", "type": "yum",
                                             "version": "5.8p2"}
    assert dict(found["Service"].attrib) == {"name": "sshd", "type": "chkconfig", "status": "on"}
    assert found["Path"].text == "on" and found["Path"].get("mode") == "0600"
    assert [m.get("group") for m in found["POSIXUser"]] == ["adm"]

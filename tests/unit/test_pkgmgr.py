"""Pkgmgr: package lists with priorities, inherited attributes, instances and conditionals."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS, Repo, rewrite

from bcfg2.core import LocalCore
from bcfg2.errors import PluginExecutionError
from bcfg2.plugin import Plugin
from bcfg2.plugin.manager import registered
from bcfg2.plugins.pkgmgr import package_url

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Pkgmgr"


@pytest.fixture
def core_for(local_core: Factory) -> Callable[[Repo], LocalCore]:
    """A core with Metadata, Bundler and Pkgmgr over a repository."""
    return lambda repo: local_core(repo, server__plugins=PLUGINS)


def bundle(repo: Repo, *entries: str) -> None:
    """Give both clients the bundle "base" holding the entries."""
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "\n".join(entries) + "\n</Bundle>\n")


def packages(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    return {el.get("name"): el for el in core.BuildConfiguration(client).iter("Package")}


def bind(core: LocalCore, client: str, name: str) -> lxml.etree._Element:
    entry = lxml.etree.Element("Package", name=name)
    core.Bind(entry, core.build_metadata(client))
    return entry


def test_higher_priority_list_wins(repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="bash"/>')
    for prio, version in ((0, "3.0-18"), (5, "3.0-19"), (3, "3.0-18.1")):
        repo.write(f"Pkgmgr/p{prio}.xml", f'<PackageList priority="{prio}" type="yum">'
                                          f'<Package name="bash" version="{version}"/>'
                                          f'</PackageList>')
    pkg = packages(core_for(repo), "client1")["bash"]
    assert dict(pkg.attrib) == {"name": "bash", "type": "yum", "version": "3.0-19"}


def test_same_priority_is_a_failure_of_that_entry_only(
        repo: Repo, core_for: Callable[[Repo], LocalCore],
        caplog: pytest.LogCaptureFixture) -> None:
    bundle(repo, '<Package name="bash"/>', '<Package name="zlib"/>')
    repo.write("Pkgmgr/a.xml", '<PackageList priority="1" type="yum">'
                               '<Package name="bash" version="1"/>'
                               '<Package name="zlib" version="1.2"/></PackageList>')
    repo.write("Pkgmgr/b.xml", '<PackageList priority="1" type="yum">'
                               '<Package name="bash" version="2"/></PackageList>')
    core = core_for(repo)
    with pytest.raises(PluginExecutionError) as info:
        bind(core, "client1", "bash")
    assert "a.xml" in str(info.value) and "b.xml" in str(info.value)
    caplog.set_level(logging.ERROR)
    pkgs = packages(core, "client1")
    assert "a.xml" in pkgs["bash"].get("failure")
    assert pkgs["bash"].get("version") is None
    assert pkgs["zlib"].get("version") == "1.2"
    assert "failure" not in pkgs["zlib"].attrib


def test_package_list_attributes_are_inherited_unless_the_package_sets_them(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="audit"/>', '<Package name="kernel"/>')
    repo.write("Pkgmgr/centos.xml", """\
        <PackageList priority="7" type="yum" uri="http://mirror/os/" multiarch="x86_64,i686"
                     srcs="x86_64 i386">
          <Group name="linux">
            <Package name="audit" version="1.0.13"/>
          </Group>
          <Package name="kernel" type="rpm" version="2.6.9" multiarch="x86_64"/>
        </PackageList>""")
    pkgs = packages(core_for(repo), "client1")
    assert dict(pkgs["audit"].attrib) == {
        "name": "audit", "type": "yum", "uri": "http://mirror/os/", "version": "1.0.13",
        "multiarch": "x86_64,i686", "srcs": "x86_64 i386"}
    assert pkgs["kernel"].get("type") == "rpm"
    assert pkgs["kernel"].get("multiarch") == "x86_64"
    assert pkgs["kernel"].get("uri") == "http://mirror/os/"
    assert "priority" not in pkgs["kernel"].attrib


def test_url_is_made_from_uri_and_file(repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="foo"/>', '<Package name="bar"/>', '<Package name="own"/>',
           '<Package name="nouri"/>')
    repo.write("Pkgmgr/encap.xml", """\
        <PackageList priority="0" type="encap" uri="http://pkgs.example.com/encap/">
          <Package name="foo" file="foo-1.0-encap-share.tar.gz" version="1.0"/>
          <Package name="bar" file="/bar-2.tar.gz" uri="http://other/dir" version="2"/>
          <Package name="own" file="own.tar.gz" url="http://elsewhere/own.tar.gz"/>
        </PackageList>""")
    repo.write("Pkgmgr/nouri.xml", '<PackageList priority="0" type="encap">'
                                   '<Package name="nouri" file="n.tar.gz"/></PackageList>')
    pkgs = packages(core_for(repo), "client1")
    assert pkgs["foo"].get("url") == "http://pkgs.example.com/encap/foo-1.0-encap-share.tar.gz"
    assert pkgs["bar"].get("url") == "http://other/dir/bar-2.tar.gz"
    assert pkgs["own"].get("url") == "http://elsewhere/own.tar.gz"
    assert "url" not in pkgs["nouri"].attrib
    assert package_url("http://a/b", "c.rpm") == package_url("http://a/b/", "c.rpm") \
        == "http://a/b/c.rpm"


INSTANCES = """\
    <PackageList priority="0" type="rpm" uri="http://mirror/RPMS/">
      <Package name="libfoo">
        <Instance arch="i386" version="1.0.4" release="12" simplefile="libfoo.i386.rpm"/>
        <Instance arch="i686" version="1.0.4" release="12" simplefile="libfoo.i686.rpm"/>
        <Instance arch="x86_64" version="1.0.4" release="12" simplefile="libfoo.x86_64.rpm"/>
      </Package>
      <Package name="glibc">
        <Instance arch="x86_64" version="2.3.4" release="2.25">
          <Ignore name="/etc/rpc"/>
        </Instance>
        <Group name="linux">
          <Instance arch="i686" version="2.3.4" release="2.25"/>
        </Group>
      </Package>
    </PackageList>"""


def test_instances_are_copied_with_their_children_and_conditionals(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="libfoo"/>', '<Package name="glibc"/>')
    repo.write("Pkgmgr/rpms.xml", INSTANCES)
    core = core_for(repo)
    one = packages(core, "client1")
    assert [i.get("arch") for i in one["libfoo"].iter("Instance")] == ["i386", "i686", "x86_64"]
    assert one["libfoo"].get("uri") == "http://mirror/RPMS/"
    assert sorted(i.get("arch") for i in one["glibc"].iter("Instance")) == ["i686", "x86_64"]
    assert one["glibc"].find("Instance/Ignore").get("name") == "/etc/rpc"
    assert one["glibc"].find("Group") is None
    two = packages(core, "client2")
    assert [i.get("arch") for i in two["glibc"].iter("Instance")] == ["x86_64"]


def test_a_virtual_target_keeps_only_the_instances_it_names(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="libfoo" altsrc="libfoo:i386,i686"/>',
           '<Package name="libfoo:x86_64"/>')
    repo.write("Pkgmgr/rpms.xml", INSTANCES)
    pkgs = packages(core_for(repo), "client1")
    assert [i.get("arch") for i in pkgs["libfoo"].iter("Instance")] == ["i386", "i686"]
    assert "altsrc" not in pkgs["libfoo"].attrib
    assert [i.get("arch") for i in pkgs["libfoo:x86_64"].iter("Instance")] == ["x86_64"]
    assert pkgs["libfoo:x86_64"].get("type") == "rpm"


def test_a_listed_name_with_a_colon_is_not_a_virtual_target(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="libc6:i386"/>')
    repo.write("Pkgmgr/deb.xml", '<PackageList priority="0" type="deb">'
                                 '<Package name="libc6" version="2.36"/>'
                                 '<Package name="libc6:i386" version="2.35"/></PackageList>')
    assert packages(core_for(repo), "client1")["libc6:i386"].get("version") == "2.35"


def test_group_and_client_conditionals(repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="bcfg2"/>', '<Package name="linux-only"/>')
    repo.write("Pkgmgr/base.xml", """\
        <PackageList priority="0" type="yum">
          <Group name="linux">
            <Package name="bcfg2" version="linux"/>
            <Package name="linux-only" version="1"/>
          </Group>
          <Group name="linux" negate="true">
            <Package name="bcfg2" version="not-linux"/>
          </Group>
        </PackageList>""")
    repo.write("Pkgmgr/host.xml", """\
        <PackageList priority="1000" type="yum">
          <Client name="client2"><Package name="bcfg2" version="pinned"/></Client>
        </PackageList>""")
    core = core_for(repo)
    one = packages(core, "client1")
    assert one["bcfg2"].get("version") == "linux"
    assert one["linux-only"].get("version") == "1"
    two = packages(core, "client2")
    assert two["bcfg2"].get("version") == "pinned"
    assert two["linux-only"].get("failure") == "no matching generator"


def test_an_unknown_package_has_no_matching_generator(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="nowhere"/>', '<Package name="known"/>')
    repo.write("Pkgmgr/p.xml", '<PackageList priority="0" type="deb">'
                               '<Package name="known" version="1"/></PackageList>')
    pkgs = packages(core_for(repo), "client1")
    assert pkgs["nowhere"].get("failure") == "no matching generator"
    assert pkgs["known"].get("version") == "1"


def test_an_xincluded_package_list_adds_its_own_attributes(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="a"/>', '<Package name="b"/>')
    repo.write("Pkgmgr/main.xml", """\
        <PackageList priority="3" type="yum" uri="http://main/"
                     xmlns:xi="http://www.w3.org/2001/XInclude">
          <Package name="a" file="a.rpm"/>
          <xi:include href="parts/extra.xml"/>
        </PackageList>""")
    repo.write("Pkgmgr/parts/extra.xml", '<PackageList priority="0" uri="http://extra/">'
                                         '<Package name="b" file="b.rpm"/></PackageList>')
    core = core_for(repo)
    pkgs = packages(core, "client1")
    assert pkgs["a"].get("url") == "http://main/a.rpm"
    # the included file is also a package list of its own (priority 0); main.xml wins
    assert pkgs["b"].get("url") == "http://extra/b.rpm"
    assert pkgs["b"].get("type") == "yum"


def test_a_malformed_file_keeps_the_last_good_version_and_others_serve(
        repo: Repo, core_for: Callable[[Repo], LocalCore]) -> None:
    bundle(repo, '<Package name="foo"/>', '<Package name="bar"/>')
    path = repo.write("Pkgmgr/foo.xml", '<PackageList priority="0" type="deb">'
                                        '<Package name="foo" version="1"/></PackageList>')
    repo.write("Pkgmgr/bar.xml", '<PackageList priority="0" type="deb">'
                                 '<Package name="bar" version="9"/></PackageList>')
    core = core_for(repo)
    assert bind(core, "client1", "foo").get("version") == "1"
    for broken in ('<PackageList priority="0"><Package name="foo" version="2"></PackageList>',
                   '<PackageList priority="x"><Package name="foo" version="3"/></PackageList>',
                   '<Rules priority="0"><Package name="foo" version="4"/></Rules>',
                   '<PackageList priority="0"><Service name="foo"/></PackageList>'):
        rewrite(path, broken)
        core.refresh()
        pkgs = packages(core, "client1")
        assert pkgs["foo"].get("version") == "1", broken
        assert pkgs["bar"].get("version") == "9"
    rewrite(path, '<PackageList priority="0" type="deb"><Package name="foo" version="5"/>'
                  '</PackageList>')
    core.refresh()
    assert bind(core, "client1", "foo").get("version") == "5"


class Packages(Plugin):
    """A stand-in for the Packages plugin (the real one is not part of this change)."""


@pytest.mark.parametrize("order", [("Pkgmgr", "Packages"), ("Packages", "Pkgmgr")])
def test_pkgmgr_and_packages_are_never_loaded_together(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture,
        order: tuple[str, str]) -> None:
    first, second = order
    caplog.set_level(logging.WARNING)
    with registered(Packages):
        core = local_core(repo, server__plugins=f"Metadata,Bundler,{first},{second}")
    assert first in core.plugins
    assert second not in core.plugins
    assert core.plugin_blacklist == {second: [first]}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"Not loading plugin {second}: it conflicts with {first}" in warnings

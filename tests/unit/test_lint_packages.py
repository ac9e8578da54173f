"""bcfg2-lint on Packages and Pkgmgr: sources.xml mistakes, schemas, packages no source offers."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS, Repo

import bcfg2.lint
from bcfg2.lint import schemas
from bcfg2.plugin import PackageSources, Plugin
from bcfg2.plugin.manager import registered

FINDING = re.compile(r"^(?P<path>[^:]+)(?::(?P<line>\d+))?: (?P<level>error|warning): "
                     r"(?P<message>.+) \[(?P<name>[a-z0-9-]+)\]$")
BASE = "Metadata,Bundler,Cfg,Rules,Defaults"
#: what the fake package sources offer
OFFERED = {"openssh-server", "vim", "libc6"}


class Packages(Plugin, PackageSources):
    """A stand-in for the Packages plugin: an index of a few names."""

    def knows_package(self, name: str) -> bool | None:
        return name in OFFERED


class FakeSources(Plugin, PackageSources):
    """Package sources under another name, so that Pkgmgr can be loaded beside them."""

    def knows_package(self, name: str) -> bool | None:
        return name in OFFERED


class NoIndex(Plugin, PackageSources):
    """Package sources whose index is not loaded: they know nothing either way."""

    def knows_package(self, name: str) -> bool | None:
        return None


Run = Callable[..., tuple[int, list[dict[str, str]], str]]


@pytest.fixture
def lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run bcfg2-lint with a plugin list; (status, findings, stdout)."""
    def run(repository: Repo, *args: str, plugins: str) -> tuple[int, list[dict[str, str]], str]:
        capsys.readouterr()
        with registered(Packages, FakeSources, NoIndex):
            status = bcfg2.lint.main(["-C", "/dev/null", "-Q", str(repository),
                                      "--plugins", plugins,
                                      "--state-dir", str(tmp_path / "state"), *args])
        out = capsys.readouterr().out
        findings = []
        for line in out.splitlines():
            match = FINDING.match(line)
            assert match, f"not a finding line: {line!r}"
            findings.append(match.groupdict())
        return status, findings, out
    return run


def keys(findings: list[dict[str, str]]) -> set[tuple[str, int | None, str, str]]:
    return {(f["path"], int(f["line"]) if f["line"] else None, f["name"], f["level"])
            for f in findings}


# -- sources.xml ----------------------------------------------------------------

SOURCES = """\
    <Sources xmlns:xi="http://www.w3.org/2001/XInclude">
      <Group name="linux">
        <Source type="apt" url="http://deb.debian.org/debian" version="bookworm">
          <Component>main</Component>
          <Arch>amd64</Arch>
          <Arch>amd46</Arch>
        </Source>
        <Source type="apt" url="http://security.debian.org/">
          <Component>main</Component><Arch>amd64</Arch>
        </Source>
        <Source type="yum" url="http://mirror/el" rawurl="http://mirror/el/9/">
          <Arch>x86_64</Arch>
        </Source>
        <Source type="yum">
          <Arch>x86_64</Arch>
        </Source>
        <Source type="pac" url="http://arch/"><Component>core</Component><Arch>x86_64</Arch></Source>
        <Source type="yum" rawurl="http://mirror/el/9/os/"><Arch>node-7</Arch></Source>
        <Source type="pkgng" url="http://pkg.freebsd.org"><Arch>amd64</Arch></Source>
      </Group>
      <xi:include href="extra.xml"/>
    </Sources>
    """


@pytest.fixture
def sources_repo(repo: Repo) -> Repo:
    """Groups linux, amd64 and x86_64, node-N from GroupPatterns, and a sources.xml."""
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true"><Group name="linux"/><Group name="amd64"/></Group>
          <Group name="other" profile="true"><Group name="x86_64"/></Group>
        </Groups>
        """)
    repo.write("GroupPatterns/config.xml", """\
        <GroupPatterns>
          <GroupPattern><NamePattern>^node(\\d+)$</NamePattern><Group>node-$1</Group></GroupPattern>
        </GroupPatterns>
        """)
    repo.write("Packages/sources.xml", SOURCES)
    repo.write("Packages/extra.xml", """\
        <Sources>
          <Source type="apt" rawurl="http://local/debian/" version="x"><Arch>arm64</Arch></Source>
        </Sources>
        """)
    return repo


def test_sources_xml_findings_with_their_lines_and_levels(lint: Run, sources_repo: Repo) -> None:
    status, findings, out = lint(sources_repo, "PackagesSources",
                                 plugins=BASE + ",GroupPatterns,Packages")
    assert keys(findings) == {
        ("Packages/sources.xml", 6, "source-arch-not-a-group", "warning"),
        ("Packages/sources.xml", 8, "source-needs-version", "error"),
        ("Packages/sources.xml", 11, "source-needs-url", "error"),
        ("Packages/sources.xml", 14, "source-needs-url", "error"),
        ("Packages/sources.xml", 19, "source-needs-version", "error"),
        ("Packages/extra.xml", 2, "source-arch-not-a-group", "warning"),
    }
    assert status == 2
    assert "Arch amd46 of apt Source http://deb.debian.org/debian is not a group" in out
    assert "yum Source has both url= and rawurl=" in out
    assert "yum Source has neither url= nor rawurl=" in out
    assert "apt Source with url=http://security.debian.org/ has no version=" in out


def test_sources_xml_is_not_read_unless_packages_is_enabled(lint: Run,
                                                            sources_repo: Repo) -> None:
    status, findings, _out = lint(sources_repo, "PackagesSources", "Validate",
                                  plugins=BASE + ",GroupPatterns")
    assert (status, findings) == (0, [])


def test_sources_xml_groups_are_checked_by_group_names(lint: Run, sources_repo: Repo) -> None:
    sources_repo.write("Packages/sources.xml", """\
        <Sources>
          <Group name="no-such-group">
            <Source type="apt" rawurl="http://local/"><Arch>amd64</Arch></Source>
          </Group>
        </Sources>
        """)
    _status, findings, _out = lint(sources_repo, "GroupNames", plugins=BASE + ",Packages")
    assert keys(findings) == {("Packages/sources.xml", 2, "undefined-group", "warning")}


def test_schemas_check_sources_xml_and_package_lists(lint: Run, sources_repo: Repo) -> None:
    sources_repo.write("Packages/extra.xml", """\
        <Sources>

          <Source type="zypper" rawurl="http://local/"><Arch>amd64</Arch></Source>
        </Sources>
        """)
    sources_repo.write("Pkgmgr/good.xml", """\
        <PackageList priority="0" type="deb" uri="http://mirror/pool/">
          <Group name="linux"><Package name="vim" version="9.0" file="v/vim_9.0.deb"/></Group>
        </PackageList>
        """)
    sources_repo.write("Pkgmgr/sub/bad.xml", """\
        <PackageList>
          <Package name="vim" type="debian" version="9.0"/>
        </PackageList>
        """)
    _status, findings, out = lint(sources_repo, "Validate",
                                  plugins=BASE + ",Packages,Pkgmgr")
    # Packages and Pkgmgr cannot be loaded together, but lint reads both directories
    assert keys(findings) == {
        ("Packages/extra.xml", 3, "xml-failed-to-verify", "error"),
        ("Pkgmgr/sub/bad.xml", 2, "xml-failed-to-verify", "error"),
    }
    assert "Invalid attribute type for element Source" in out
    assert "Invalid attribute type for element Package" in out


@pytest.mark.parametrize(("schema", "document"), [
    ("packages-sources.rng", '<Sources><Source type="apt" rawurl="x" priority="high"/></Sources>'),
    ("packages-sources.rng", '<Sources><Source rawurl="x"/></Sources>'),
    ("packages-sources.rng", '<Sources><Source type="apt" rawurl="x"><Options><Arch/></Options>'
                             '</Source></Sources>'),
    ("packages-sources.rng", '<Sources><Source type="apt" rawurl="x"><Arch> </Arch>'
                             '</Source></Sources>'),
    ("packages-sources.rng", '<Sources><Package name="x"/></Sources>'),
    ("pkgmgr.rng", '<PackageList priority="0"><Package name="x" type="zypper"/></PackageList>'),
    ("pkgmgr.rng", '<PackageList priority="0"><Service name="x"/></PackageList>'),
    ("pkgmgr.rng", '<PackageList priority="0"><PackageList priority="1"/></PackageList>'),
    ("pkgmgr.rng", '<PackageList priority="0" version="1"/>'),
    ("pkgmgr.rng", '<PackageList priority="low"/>'),
])
def test_schemas_refuse(schema: str, document: str) -> None:
    assert not schemas.load(schema).validate(
        lxml.etree.ElementTree(lxml.etree.fromstring(textwrap.dedent(document))))


# -- packages no source offers ----------------------------------------------------

@pytest.fixture
def bundle_repo(repo: Repo) -> Repo:
    """Both clients get bundle base; Rules binds some packages, Pkgmgr one."""
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Bundler/base.xml", """\
        <Bundle>
          <Package name="vim"/>
          <Package name="nosuch"/>
          <Package name="from-rules"/>
          <Package name="from-pkgmgr"/>
          <Package name="editor" altsrc="vim"/>
          <Package name="rules-for-client1"/>
          <Group name="other"><Package name="other-only"/></Group>
          <Package group="desktop"/>
          <BoundPackage name="bound" type="deb" version="1"/>
          <Path name="/etc/motd"/>
        </Bundle>
        """)
    repo.write("Rules/r.xml", """\
        <Rules priority="0">
          <Package name="from-rules" type="deb" version="1"/>
          <Client name="client1"><Package name="rules-for-client1" type="deb" version="1"/></Client>
        </Rules>
        """)
    repo.write("Pkgmgr/p.xml", '<PackageList priority="0" type="deb">'
                               '<Package name="from-pkgmgr" version="1"/></PackageList>\n')
    return repo


def test_packages_no_source_offers_are_warnings_at_their_bundle_line(
        lint: Run, bundle_repo: Repo) -> None:
    status, findings, out = lint(bundle_repo, "PackagesSources",
                                 plugins=BASE + ",Pkgmgr,FakeSources")
    assert keys(findings) == {
        ("Bundler/base.xml", 3, "unknown-package", "warning"),
        ("Bundler/base.xml", 7, "unknown-package", "warning"),
        ("Bundler/base.xml", 8, "unknown-package", "warning"),
    }
    assert status == 3
    assert "Package nosuch is offered by no package source" in out
    assert "Package other-only is offered by no package source" in out


def test_an_altsrc_name_no_source_offers_is_named(lint: Run, bundle_repo: Repo) -> None:
    bundle_repo.write("Bundler/base.xml", '<Bundle>\n<Package name="vim" altsrc="vim-nox"/>\n'
                                          '<Package name="libc6" altsrc="libc6-i386"/>\n'
                                          '</Bundle>\n')
    _status, findings, out = lint(bundle_repo, "PackagesSources",
                                  plugins=BASE + ",FakeSources")
    # the core binds under the entry's own name when the altsrc fails: vim is offered
    assert findings == []
    bundle_repo.write("Bundler/base.xml", '<Bundle>\n<Package name="gone" altsrc="gone-too"/>\n'
                                          '</Bundle>\n')
    _status, findings, out = lint(bundle_repo, "PackagesSources",
                                  plugins=BASE + ",FakeSources")
    assert keys(findings) == {("Bundler/base.xml", 2, "unknown-package", "warning")}
    assert "Package gone (bound as gone-too) is offered by no package source" in out


@pytest.mark.parametrize("plugins", [BASE + ",Pkgmgr,NoIndex", BASE + ",Pkgmgr",
                                     BASE + ",Pkgmgr,NoIndex,FakeSources"])
def test_without_a_loaded_index_nothing_is_said(lint: Run, bundle_repo: Repo,
                                                plugins: str) -> None:
    status, findings, _out = lint(bundle_repo, "PackagesSources", plugins=plugins)
    assert (status, findings) == (0, [])


def test_what_keeps_the_server_from_using_a_source_is_an_invalid_source(
        lint: Run, sources_repo: Repo) -> None:
    sources_repo.write("Packages/sources.xml", """\
        <Sources>
          <Group name="linux">
            <Source type="zypper" url="http://x/" version="1"><Arch>amd64</Arch></Source>
            <Source type="apt" url="http://x/" version="1"><Arch>amd64</Arch></Source>
            <Source type="apt" rawurl="http://x/" priority="high"><Arch>amd64</Arch></Source>
            <Source type="yum" rawurl="http://x/"><Arch>amd64</Arch><Mirror>y</Mirror></Source>
          </Group>
        </Sources>
        """)
    status, findings, out = lint(sources_repo, "PackagesSources", plugins=BASE + ",Packages")
    assert keys(findings) == {("Packages/sources.xml", line, "invalid-source", "error")
                              for line in (3, 4, 5, 6)}
    for reason in ("<Source type='zypper'> is not one of", "needs a <Component>",
                   "priority 'high' is not an integer", "<Mirror> is not part of a <Source>"):
        assert reason in out

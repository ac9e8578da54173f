"""bcfg2-lint on Packages and Pkgmgr: sources.xml mistakes, schemas, packages no source offers."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo

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

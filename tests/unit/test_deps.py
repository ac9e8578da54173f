"""Deps: prerequisites of the client's entries are added to its configuration."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Deps"

RULES = """\
    <Rules priority="0">
      <Package name="bcfg2" type="deb"/>
      <Package name="python-lxml" type="deb"/>
      <Package name="libxml2" type="deb"/>
      <Package name="isprelink" type="deb"/>
      <Package name="vim" type="deb"/>
      <Service name="sshd" status="on" type="systemd"/>
    </Rules>
"""


GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
  </Group>
  <Group name="other" profile="true"/>
  <Bundle name="base"/>
</Groups>
"""


def setup_repo(repo: Repo, *entries: str) -> None:
    """Give both clients the bundle "base" holding the entries."""
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "\n".join(entries) + "\n</Bundle>\n")
    repo.write("Rules/rules.xml", RULES)


def independent(config: lxml.etree._Element) -> list[tuple[str, str]]:
    """The entries of the Independent structure Deps added (the core sorts them)."""
    found = config.findall("Independent[@name='Deps']")
    assert len(found) <= 1
    return sorted((el.tag, el.get("name")) for el in found[0]) if found else []


def test_prerequisites_are_added_transitively_once(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Package name="bcfg2"/>', '<Package name="isprelink"/>')
    repo.write("Deps/bcfg2.xml", """\
        <Dependencies priority="0">
          <Package name="bcfg2">
            <Package name="python-lxml"/>
            <Package name="isprelink"/>
          </Package>
          <Package name="python-lxml">
            <Package name="libxml2"/>
            <Package name="bcfg2"/>
          </Package>
        </Dependencies>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    config = core.BuildConfiguration("client1")
    assert independent(config) == [("Package", "libxml2"), ("Package", "python-lxml")]
    libxml2 = config.find("Independent/Package[@name='libxml2']")
    assert libxml2.get("type") == "deb" and "failure" not in libxml2.attrib


def test_any_entry_type_and_conditionals(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Package name="bcfg2"/>')
    repo.write("Deps/ssh.xml", """\
        <Dependencies>
          <Package name="bcfg2">
            <Group name="linux"><Service name="sshd"/></Group>
          </Package>
          <Client name="client2">
            <Package name="bcfg2"><Package name="vim"/></Package>
          </Client>
        </Dependencies>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    assert independent(core.BuildConfiguration("client1")) == [("Service", "sshd")]
    assert independent(core.BuildConfiguration("client2")) == [("Package", "vim")]


def test_no_structure_when_nothing_is_needed(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo, '<Package name="vim"/>')
    repo.write("Deps/bcfg2.xml", """\
        <Dependencies><Package name="bcfg2"><Package name="libxml2"/></Package></Dependencies>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    config = core.BuildConfiguration("client1")
    assert config.find("Independent") is None
    assert [el.get("name") for el in config.iter("Package")] == ["vim"]


def test_priorities_and_ties(repo: Repo, local_core: Factory,
                             caplog: pytest.LogCaptureFixture) -> None:
    setup_repo(repo, '<Package name="bcfg2"/>')
    repo.write("Deps/low.xml", """\
        <Dependencies priority="1"><Package name="bcfg2"><Package name="vim"/></Package>
        </Dependencies>
    """)
    high = repo.write("Deps/high.xml", """\
        <Dependencies priority="5"><Package name="bcfg2"><Package name="libxml2"/></Package>
        </Dependencies>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    assert independent(core.BuildConfiguration("client1")) == [("Package", "libxml2")]
    rewrite(high, '<Dependencies priority="1"><Package name="bcfg2">'
                  '<Package name="libxml2"/></Package></Dependencies>')
    core.refresh()
    caplog.set_level(logging.ERROR)
    config = core.BuildConfiguration("client1")
    assert independent(config) == []
    assert config.find("Bundle/Package[@name='bcfg2']") is not None
    assert "several files with priority 1" in caplog.text


def test_reload_keeps_last_good_version(repo: Repo, local_core: Factory,
                                        caplog: pytest.LogCaptureFixture) -> None:
    setup_repo(repo, '<Package name="bcfg2"/>')
    path = repo.write("Deps/bcfg2.xml", """\
        <Dependencies><Package name="bcfg2"><Package name="vim"/></Package></Dependencies>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    assert independent(core.BuildConfiguration("client1")) == [("Package", "vim")]
    rewrite(path, '<Dependencies><Package name="bcfg2"><Package name="libxml2"/>'
                  '</Package></Dependencies>')
    core.refresh()
    assert independent(core.BuildConfiguration("client1")) == [("Package", "libxml2")]
    caplog.set_level(logging.ERROR)
    rewrite(path, '<Dependencies><Package name="bcfg2"><Package/></Package></Dependencies>')
    core.refresh()
    assert independent(core.BuildConfiguration("client1")) == [("Package", "libxml2")]
    assert "needs a name" in caplog.text

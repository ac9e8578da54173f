"""ServiceCompat and POSIXCompat: entries in the old form for agents older than 1.3 only."""

from __future__ import annotations

from collections.abc import Callable

import lxml.etree
import pytest
from conftest import Repo

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,ServiceCompat,POSIXCompat"

RULES = """\
<Rules priority="1">
  <Service name="cron" type="systemd" status="on"/>
  <Service name="ssh" type="systemd" status="on" restart="interactive"/>
  <Service name="ntp" type="systemd" status="off" restart="false" install="false"/>
  <Service name="odd" type="systemd" status="on" restart="false" install="true"/>
  <Path name="/etc/app" type="directory" owner="root" group="root" mode="0750"/>
  <Path name="/etc/legacy" type="symlink" to="/etc/app"/>
</Rules>
"""
BUNDLE = """\
<Bundle>
  <Service name="cron"/><Service name="ssh"/><Service name="ntp"/><Service name="odd"/>
  <Path name="/etc/app"/><Path name="/etc/legacy"/><Path name="/etc/motd"/>
</Bundle>
"""
#: what an agent before 1.3 is sent, besides the entries as they are
OLD_MODES = {"cron": "default", "ssh": "interactive_only", "ntp": "manual", "odd": "manual"}


@pytest.fixture
def compat_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true"><Bundle name="base"/></Group>
          <Group name="other" profile="true"><Bundle name="base"/></Group>
        </Groups>""")
    repo.write("Bundler/base.xml", BUNDLE)
    repo.write("Rules/rules.xml", RULES)
    repo.write("Cfg/etc/motd/motd", "hello\n")
    repo.write("Cfg/etc/motd/info.xml", '<FileInfo><Info mode="0640"/></FileInfo>')
    return repo


def services(config: lxml.etree._Element) -> dict[str, str | None]:
    return {s.get("name"): s.get("mode") for s in config.iter("Service")}


def perms(config: lxml.etree._Element) -> dict[str, tuple[str | None, str | None]]:
    return {p.get("name"): (p.get("mode"), p.get("perms")) for p in config.iter("Path")}


def built(core: LocalCore, version: str | None) -> lxml.etree._Element:
    if version is not None:
        core.metadata.set_version("client1", version)
    return core.BuildConfiguration("client1")


@pytest.mark.parametrize("version", [None, "1.2.4", "1.2.99", "1.0"])
def test_an_older_agent_gets_old_service_modes_and_perms(compat_repo: Repo, local_core: Factory,
                                                        version: str | None) -> None:
    config = built(local_core(compat_repo, server__plugins=PLUGINS), version)
    assert services(config) == OLD_MODES
    assert perms(config) == {"/etc/app": ("0750", "0750"), "/etc/legacy": (None, None),
                             "/etc/motd": ("0640", "0640")}
    ssh = config.find(".//Service[@name='ssh']")
    assert (ssh.get("restart"), ssh.get("status")) == ("interactive", "on")  # kept as well


@pytest.mark.parametrize("version", ["1.3.0", "1.3.0pre1", "1.3.0rc2", "1.4.0", "1.4.0pre2"])
def test_an_agent_of_13_or_later_gets_the_entries_unchanged(compat_repo: Repo,
                                                            local_core: Factory,
                                                            version: str) -> None:
    config = built(local_core(compat_repo, server__plugins=PLUGINS), version)
    assert set(services(config).values()) == {None}
    assert all(old is None for _, old in perms(config).values())


def test_each_plugin_does_only_its_own_rewrite(compat_repo: Repo, local_core: Factory) -> None:
    service_only = built(local_core(compat_repo, server__plugins=PLUGINS.replace(
        ",POSIXCompat", "")), "1.2.0")
    assert services(service_only) == OLD_MODES
    assert all(old is None for _, old in perms(service_only).values())
    posix_only = built(local_core(compat_repo, server__plugins=PLUGINS.replace(
        ",ServiceCompat", "")), "1.2.0")
    assert set(services(posix_only).values()) == {None}
    assert perms(posix_only)["/etc/app"] == ("0750", "0750")


def test_agents_declaring_12_and_14_get_what_each_understands(compat_repo: Repo,
                                                              network_server) -> None:
    server = network_server(compat_repo, server__plugins=PLUGINS)
    old = server.proxy("uuid-client1", "pw1")
    new = server.proxy("uuid-client2", "pw2")
    assert old.DeclareVersion("1.2.4") is True
    assert new.DeclareVersion("1.4.0") is True
    old_config = lxml.etree.fromstring(old.GetConfig().encode())
    new_config = lxml.etree.fromstring(new.GetConfig().encode())
    assert services(old_config) == OLD_MODES
    assert perms(old_config)["/etc/app"] == ("0750", "0750")
    assert set(services(new_config).values()) == {None}
    assert all(old is None for _, old in perms(new_config).values())
    # the same agent upgraded: it declares 1.4 and gets the new form from then on
    assert old.DeclareVersion("1.4.1") is True
    assert set(services(lxml.etree.fromstring(old.GetConfig().encode())).values()) == {None}

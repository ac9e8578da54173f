"""Decisions: whitelists and blacklists per client, with conditionals and variants."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from conftest import Repo, RunningServer, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Decisions"

WHITELIST = """\
    <Decisions>
      <Decision type="Service" name="*"/>
      <Group name="linux">
        <Decision type="Path" name="/etc/apt/apt.conf"/>
      </Group>
      <Client name="client2">
        <Decision type="Package" name="openssh-server"/>
      </Client>
      <Group name="linux" negate="true">
        <Decision type="Path" name="/etc/motd"/>
      </Group>
    </Decisions>
"""


def decisions(core: LocalCore, client: str, mode: str) -> list[tuple[str, str]]:
    return core.GetDecisions(core.build_metadata(client), mode)


def test_whitelist_and_blacklist_follow_conditionals(repo: Repo, local_core: Factory) -> None:
    repo.write("Decisions/whitelist.xml", WHITELIST)
    repo.write("Decisions/blacklist.xml", """\
        <Decisions><Decision type="Path" name="/etc/shadow"/></Decisions>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    assert decisions(core, "client1", "whitelist") == [
        ("Service", "*"), ("Path", "/etc/apt/apt.conf")]
    assert decisions(core, "client2", "whitelist") == [
        ("Service", "*"), ("Package", "openssh-server"), ("Path", "/etc/motd")]
    assert decisions(core, "client1", "blacklist") == [("Path", "/etc/shadow")]


def test_group_and_host_variants_are_merged(repo: Repo, local_core: Factory) -> None:
    repo.write("Decisions/whitelist.xml",
               '<Decisions><Decision type="Service" name="sshd"/></Decisions>')
    repo.write("Decisions/whitelist.xml.G10_linux",
               '<Decisions><Decision type="Path" name="/etc/fstab"/>'
               '<Decision type="Service" name="sshd"/></Decisions>')
    repo.write("Decisions/whitelist.xml.H_client2",
               '<Decisions><Decision type="Package" name="vim"/></Decisions>')
    repo.write("Decisions/whitelist.xml.bogus",
               '<Decisions><Decision type="Package" name="never"/></Decisions>')
    core = local_core(repo, server__plugins=PLUGINS)
    assert decisions(core, "client1", "whitelist") == [
        ("Service", "sshd"), ("Path", "/etc/fstab")]
    assert decisions(core, "client2", "whitelist") == [
        ("Service", "sshd"), ("Package", "vim")]
    assert decisions(core, "client2", "blacklist") == []


def test_reload_and_last_good_version(repo: Repo, local_core: Factory,
                                      caplog: pytest.LogCaptureFixture) -> None:
    path = repo.write("Decisions/blacklist.xml",
                      '<Decisions><Decision type="Path" name="/a"/></Decisions>')
    core = local_core(repo, server__plugins=PLUGINS)
    assert decisions(core, "client1", "blacklist") == [("Path", "/a")]
    rewrite(path, '<Decisions><Decision type="Path" name="/b"/></Decisions>')
    core.refresh()
    assert decisions(core, "client1", "blacklist") == [("Path", "/b")]
    caplog.set_level(logging.ERROR)
    rewrite(path, '<Decisions><Decision type="Path" name="/c"></Decisions>')
    core.refresh()
    assert decisions(core, "client1", "blacklist") == [("Path", "/b")]
    assert "blacklist.xml" in caplog.text
    rewrite(path, '<Decisions><Decision type="Path"/></Decisions>')
    core.refresh()
    assert decisions(core, "client1", "blacklist") == [("Path", "/b")]
    path.unlink()
    core.refresh()
    assert decisions(core, "client1", "blacklist") == []


def test_unknown_mode_gives_no_decisions(repo: Repo, local_core: Factory) -> None:
    repo.write("Decisions/whitelist.xml", WHITELIST)
    core = local_core(repo, server__plugins=PLUGINS)
    assert decisions(core, "client1", "../whitelist") == []


def test_get_decision_list_over_xmlrpc(repo: Repo,
                                       builtin_server: Callable[..., RunningServer]) -> None:
    repo.write("Decisions/whitelist.xml", WHITELIST)
    server = builtin_server(repo, server__plugins=PLUGINS)
    proxy = server.proxy("uuid-client1", "pw1")
    assert proxy.GetDecisionList("whitelist") == [
        ["Service", "*"], ["Path", "/etc/apt/apt.conf"]]

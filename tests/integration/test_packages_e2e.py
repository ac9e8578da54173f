"""Packages through every network core: a mirror on 127.0.0.1, agents pulling configurations."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import lxml.etree
import pytest
from conftest import CORES, Repo, RunningServer, wait_until
from packages_repos import make_apt_repo, serve

#: seconds an agent call may take while a source hangs (the hostile tests' bound)
AGENT_DEADLINE = 10.0
APT_CONFIG = "/etc/apt/sources.list.d/bcfg2-packages-generated-sources.list"
MIRROR = [
    {"Package": "base-files", "Essential": "yes", "Depends": "awk"},
    {"Package": "mawk", "Provides": "awk"},
    {"Package": "gawk", "Provides": "awk"},
    {"Package": "openssh-server", "Depends": "openssh-client (= 1:9.2), libssl3 | libssl1.1"},
    {"Package": "openssh-client", "Depends": "libc6"},
    {"Package": "libssl3"},
    {"Package": "libc6"},
]


def repository(root: Path, mirror_url: str, extra_source: str = "") -> Repo:
    repo = Repo(root)
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="server" profile="true" default="true">
            <Group name="debian"/><Group name="amd64"/><Bundle name="base"/>
          </Group>
        </Groups>""")
    repo.write("Metadata/clients.xml", """\
        <Clients><Client name="agent1.example.com" profile="server" uuid="agent1"
                         password="agent1-pw"/></Clients>""")
    repo.write("Bundler/base.xml", f"""\
        <Bundle>
          <Package name="openssh-server"/>
          <Path name="{APT_CONFIG}"/>
        </Bundle>""")
    repo.write("Packages/sources.xml", f"""\
        <Sources><Group name="debian">
          <Source type="apt" url="{mirror_url}" version="bookworm">
            <Component>main</Component><Arch>amd64</Arch>
          </Source>
          {extra_source}
        </Group></Sources>""")
    for name in ("Cfg", "Rules"):
        repo.mkdir(name)
    return repo


def get_config(server: RunningServer) -> str:
    return server.proxy("agent1", "agent1-pw").GetConfig()


def resolved(server: RunningServer) -> str | None:
    """The configuration once it holds the resolved packages (None before the index is in)."""
    config = get_config(server)
    return config if "Independent" in config else None


@pytest.fixture
def mirror(tmp_path: Path):
    make_apt_repo(tmp_path / "mirror", MIRROR)
    with serve(tmp_path / "mirror") as served:
        yield served


def start(network_server: Callable[..., RunningServer], repo: Repo, core: str) -> RunningServer:
    return network_server(repo, core=core,
                          server__plugins="Metadata,Bundler,Cfg,Rules,Packages")


@pytest.mark.parametrize("core", CORES)
def test_an_agent_run_gets_bound_packages_the_structure_and_the_sources_file(
        tmp_path: Path, network_server: Callable[..., RunningServer], mirror, core: str) -> None:
    repo = repository(tmp_path / "repo", mirror.url)
    server = start(network_server, repo, core)
    text = wait_until(lambda: resolved(server), 60, "the index in service")
    config = lxml.etree.fromstring(text.encode())
    bound = config.find("Bundle/Package[@name='openssh-server']")
    assert (bound.get("type"), bound.get("version")) == ("deb", "auto")
    added = {el.get("name"): el for el in config.find("Independent[@name='Packages']")}
    assert set(added) == {"base-files", "mawk", "openssh-client", "libssl3", "libc6"}
    assert all(el.tag == "Package" and el.get("type") == "deb" and el.get("origin") == "Packages"
               for el in added.values())
    sources = config.find(f"Bundle/Path[@name='{APT_CONFIG}']")
    assert f"deb [arch=amd64] {mirror.url} bookworm main" in sources.text
    assert "failure" not in lxml.etree.tostring(config).decode()


def test_the_configuration_is_the_same_from_every_core(
        tmp_path: Path, network_server: Callable[..., RunningServer], mirror) -> None:
    texts = {}
    for core in CORES:
        repo = repository(tmp_path / f"repo-{core}", mirror.url)
        server = start(network_server, repo, core)
        texts[core] = wait_until(lambda s=server: resolved(s), 60, f"the index on {core}")
        server.stop()
    assert len(set(texts.values())) == 1, "configurations differ between cores"


def test_a_source_that_hangs_does_not_delay_get_config(
        tmp_path: Path, network_server: Callable[..., RunningServer], mirror) -> None:
    hanging = ('<Source type="apt" url="' + mirror.url + '/stuck" version="bookworm">'
               '<Component>main</Component><Arch>amd64</Arch></Source>')
    mirror.hang.update({"/stuck/dists/bookworm/InRelease", "/stuck/dists/bookworm/Release"})
    repo = repository(tmp_path / "repo", mirror.url, hanging)
    server = start(network_server, repo, "builtin")
    wait_until(lambda: mirror.requests["/stuck/dists/bookworm/InRelease"], 30,
               "the fetch of the hanging source")
    started = time.monotonic()
    config = get_config(server)
    assert time.monotonic() - started < AGENT_DEADLINE
    assert "openssh-server" in config


def test_refresh_and_reload_over_xml_rpc(tmp_path: Path,
                                         network_server: Callable[..., RunningServer],
                                         mirror) -> None:
    repo = repository(tmp_path / "repo", mirror.url)
    server = start(network_server, repo, "multiprocessing")
    wait_until(lambda: resolved(server), 60, "the index in service")
    in_parent = server.core.plugins["Packages"].loaded.values()
    assert in_parent and all(item.index is None for item in in_parent)  # only children hold it
    make_apt_repo(tmp_path / "mirror", MIRROR + [
        {"Package": "openssh-server", "Depends": "openssh-client, libssl3, ucf"},
        {"Package": "ucf"}])
    assert server.admin().Packages.Refresh() is True
    config = get_config(server)
    assert 'name="ucf"' in config
    assert server.admin().Packages.Reload() is True
    with pytest.raises(Exception, match="may not call|401|Unauthorized"):
        server.proxy("agent1", "agent1-pw").Packages.Refresh()

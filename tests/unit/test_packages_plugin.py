"""The Packages plugin over a LocalCore, with the fetching seam (drivers.load) replaced.

The formats themselves are tested in test_packages_formats.py, and whole
agent runs against real repositories served on 127.0.0.1 in
test_packages_e2e.py; here the index a source gives is whatever the test
says, so what the plugin makes of it is checked exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from conftest import Repo, rewrite
from packages_repos import ED25519_KEY

from bcfg2.core import LocalCore
from bcfg2.errors import PluginExecutionError
from bcfg2.plugins.packages import drivers
from bcfg2.plugins.packages.index import Index

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Rules,Packages"

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="debian"/>
    <Group name="amd64"/>
  </Group>
  <Group name="other" profile="true">
    <Group name="redhat"/>
    <Group name="x86_64"/>
  </Group>
  <Bundle name="base"/>
</Groups>
"""

SOURCES = """\
<Sources>
  <Group name="debian">
    <Source type="apt" url="http://mirror.invalid/debian" version="bookworm">
      <Component>main</Component>
      <Arch>amd64</Arch>
      <Arch>arm64</Arch>
    </Source>
  </Group>
  <Group name="redhat">
    <Source type="yum" rawurl="http://mirror.invalid/el9/$basearch/os" name="el9-os">
      <Arch>x86_64</Arch>
      <GPGKey>http://mirror.invalid/RPM-GPG-KEY-el9</GPGKey>
      <Blacklist>badpkg</Blacklist>
      <Options gpgcheck="1" metadata_expire="0" clientonly="true"/>
      <Options serveronly="true" proxy="http://proxy.invalid"/>
    </Source>
  </Group>
</Sources>
"""


def apt_index() -> Index:
    idx = Index("deb")
    idx.add("base-files", version="12", essential=True)
    idx.add("openssh-server", version="9.2", depends=[["openssh-client"], ["libc6"]])
    idx.add("openssh-client", version="9.2", depends=[["libc6"]])
    idx.add("libc6", version="2.36")
    idx.add("mailer", depends=[["mail-transport-agent"]])
    idx.add("exim4", provides=["mail-transport-agent"])
    idx.add("postfix", provides=["mail-transport-agent"])
    return idx


def yum_index() -> Index:
    idx = Index("yum")
    idx.add("httpd", depends=[["/bin/sh"]])
    idx.add("bash", provides=["/bin/sh"])
    idx.groups["web"] = {"mandatory": ["httpd"], "default": [], "optional": []}
    return idx


class FakeUpstream:
    """What drivers.load answers: an index per source type, or an error; with a call log."""

    def __init__(self) -> None:
        self.indices: dict[str, Index] = {"apt": apt_index(), "yum": yum_index()}
        self.keys: dict[str, str] = {"apt": "k1", "yum": "y1"}
        self.fail: dict[str, str] = {}
        self.calls: list[tuple[str, str, str | None]] = []

    def load(self, source: Any, arch: str, fetcher: Any,
             known_key: str | None = None) -> drivers.Loaded | None:
        self.calls.append((source.type, arch, known_key))
        if source.type in self.fail:
            raise drivers.SourceError(f"{source.base_url}: {self.fail[source.type]}")
        key = self.keys[source.type]
        if known_key == key:
            return None
        return drivers.Loaded(key=key, index=self.indices[source.type], files=[source.base_url])

    def get(self, url: str) -> bytes:
        return ED25519_KEY


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> FakeUpstream:
    fake = FakeUpstream()
    monkeypatch.setattr(drivers, "load", fake.load)
    from bcfg2.plugins.packages.fetch import Fetcher
    monkeypatch.setattr(Fetcher, "get", lambda self, url: fake.get(url))
    return fake


def setup_repo(repo: Repo, *entries: str, sources: str = SOURCES) -> None:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "\n".join(entries) + "\n</Bundle>\n")
    repo.write("Packages/sources.xml", sources)


def independent(config: lxml.etree._Element) -> dict[str, dict[str, str]]:
    found = config.findall("Independent[@name='Packages']")
    assert len(found) <= 1
    return {el.get("name"): dict(el.attrib) for el in found[0]} if found else {}


def test_bundle_packages_are_bound_and_dependencies_added(repo: Repo, local_core: Factory,
                                                          upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    config = core.BuildConfiguration("client1")
    bound = config.find("Bundle/Package[@name='openssh-server']")
    assert bound.get("type") == "deb" and bound.get("version") == "auto"
    assert "failure" not in bound.attrib
    added = independent(config)
    assert set(added) == {"openssh-client", "libc6", "base-files"}
    assert added["libc6"] == {"name": "libc6", "type": "deb", "version": "auto",
                              "origin": "Packages"}


def test_a_choice_among_providers_is_made_and_listed(repo: Repo, local_core: Factory,
                                                     upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="mailer"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    assert "exim4" in independent(core.BuildConfiguration("client1"))
    setup_repo(repo, '<Package name="mailer"/>', '<Package name="postfix"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    added = independent(core.BuildConfiguration("client1"))
    assert "exim4" not in added and "postfix" not in added  # postfix is in the bundle


def test_resolver_off_binds_but_adds_nothing(repo: Repo, local_core: Factory,
                                             upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS, packages__resolver="disabled")
    config = core.BuildConfiguration("client1")
    assert config.find("Bundle/Package[@name='openssh-server']").get("type") == "deb"
    assert independent(config) == {}


def test_version_any_and_an_entry_s_own_attributes_stay(repo: Repo, local_core: Factory,
                                                        upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>',
               '<Package name="libc6" version="2.36-9" type="deb"/>')
    core = local_core(repo, server__plugins=PLUGINS, packages__version="any")
    config = core.BuildConfiguration("client1")
    assert config.find("Bundle/Package[@name='openssh-server']").get("version") == "any"
    assert config.find("Bundle/Package[@name='libc6']").get("version") == "2.36-9"
    assert "libc6" not in independent(config)


def test_unknown_packages_are_logged_and_shown(repo: Repo, local_core: Factory,
                                               upstream: FakeUpstream,
                                               caplog: pytest.LogCaptureFixture) -> None:
    setup_repo(repo, '<Package name="no-such-thing"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    with caplog.at_level(logging.WARNING, logger="bcfg2"):
        core.BuildConfiguration("client1")
        core.BuildConfiguration("client1")
    lines = [r.getMessage() for r in caplog.records if "unknown package" in r.getMessage()]
    assert lines == ["Packages: client1: 1 unknown package(s): no-such-thing"]
    plugin = core.plugins["Packages"]
    result = plugin.resolve_packages(core.build_metadata("client1"))
    assert result.unknown == ("no-such-thing",)
    assert "base-files" in result.initial


def test_yum_groups_file_requires_blacklist_and_gpg_keys(repo: Repo, local_core: Factory,
                                                         upstream: FakeUpstream) -> None:
    upstream.indices["yum"].add("badpkg", provides=["/bin/sh"])
    setup_repo(repo, '<Package group="web" type="mandatory"/>',
               '<Path name="/etc/yum.repos.d/bcfg2.repo"/>')
    repo.write("Metadata/clients.xml", """\
        <Clients><Client name="client1" profile="other"/></Clients>
    """)
    core = local_core(repo, server__plugins=PLUGINS)
    config = core.BuildConfiguration("client1")
    added = independent(config)
    assert {"httpd", "bash"} <= set(added) and "badpkg" not in added
    assert added["httpd"]["type"] == "yum"
    assert config.find("Bundle/Package") is None  # the group entry itself is gone
    key = config.find("Independent/Path[@name='/etc/pki/rpm-gpg/RPM-GPG-KEY-el9']")
    assert key is not None and key.text == ED25519_KEY.decode() and key.get("important") == "true"
    pubkey = config.find("Independent/Package[@name='gpg-pubkey']")
    assert (pubkey.get("type"), pubkey.get("origin")) == ("yum", "Packages")
    assert [dict(i.attrib) for i in pubkey] == [{
        "simplefile": "/etc/pki/rpm-gpg/RPM-GPG-KEY-el9", "version": "e93e6bf2",
        "release": "6b112c7f"}]
    repo_file = config.find("Bundle/Path[@name='/etc/yum.repos.d/bcfg2.repo']")
    assert repo_file.get("type") == "file" and "failure" not in repo_file.attrib
    text = repo_file.text
    assert "[el9-os]" in text and "baseurl=http://mirror.invalid/el9/x86_64/os/" in text
    assert "gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-el9" in text
    assert "exclude=badpkg" in text and "metadata_expire=0" in text
    assert "proxy" not in text


def test_the_apt_sources_file(repo: Repo, local_core: Factory, upstream: FakeUpstream) -> None:
    path = "/etc/apt/sources.list.d/bcfg2-packages-generated-sources.list"
    setup_repo(repo, f'<Path name="{path}"/>', '<Path name="/etc/yum.repos.d/bcfg2.repo"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    config = core.BuildConfiguration("client1")
    text = config.find(f"Bundle/Path[@name='{path}']").text
    assert "deb [arch=amd64] http://mirror.invalid/debian bookworm main\n" in text
    yum = config.find("Bundle/Path[@name='/etc/yum.repos.d/bcfg2.repo']")
    assert "no yum source" in yum.get("failure")


def test_a_client_no_source_applies_to_is_left_alone(repo: Repo, local_core: Factory,
                                                     upstream: FakeUpstream) -> None:
    sources = SOURCES.replace("<Arch>amd64</Arch>", "")
    setup_repo(repo, '<Package name="openssh-server"/>', sources=sources)
    core = local_core(repo, server__plugins=PLUGINS)
    config = core.BuildConfiguration("client1")
    assert config.find("Bundle/Package").get("failure") == "no matching generator"
    assert independent(config) == {}


def test_the_index_is_cached_and_read_at_start_without_fetching(
        repo: Repo, local_core: Factory, upstream: FakeUpstream, tmp_path: Path) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    first = local_core(repo, server__plugins=PLUGINS)
    first.BuildConfiguration("client1")
    assert upstream.calls  # the local tool fetched what no cache had
    cached = list((tmp_path / "state" / "Packages" / "cache").glob("*.json"))
    assert cached and not any(p.read_bytes().startswith(b"\x80") for p in cached)  # no pickle
    upstream.calls.clear()
    upstream.fail["apt"] = "unreachable"
    second = local_core(repo, server__plugins=PLUGINS)
    assert "openssh-client" in independent(second.BuildConfiguration("client1"))
    assert upstream.calls == []


def test_a_failing_source_keeps_its_last_good_index_and_is_logged_once(
        repo: Repo, local_core: Factory, upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    plugin = core.plugins["Packages"]
    plugin.update()
    upstream.fail["apt"] = "checksum mismatch of main/binary-amd64/Packages.xz"
    with caplog.at_level(logging.ERROR, logger="bcfg2"):
        for _ in range(3):
            with pytest.raises(PluginExecutionError, match="checksum mismatch"):
                plugin.Refresh()
    errors = [r for r in caplog.records if "checksum mismatch" in r.getMessage()
              and "(amd64)" in r.getMessage()]
    assert len(errors) == 1 and "last good index stays in service" in errors[0].getMessage()
    assert "openssh-client" in independent(core.BuildConfiguration("client1"))
    info = plugin.package_sources(core.build_metadata("client1"))
    assert info[0].packages == len(apt_index()) and "checksum" in info[0].error
    del upstream.fail["apt"]
    assert plugin.Refresh() is True
    assert plugin.package_sources(core.build_metadata("client1"))[0].error is None


def test_refresh_downloads_again_and_a_check_only_asks_what_changed(
        repo: Repo, local_core: Factory, upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    plugin = core.plugins["Packages"]
    plugin.update()
    upstream.calls.clear()
    plugin.update(check=True)
    assert ("apt", "amd64", "k1") in upstream.calls  # unchanged: nothing more is read
    upstream.calls.clear()
    plugin.Refresh()
    assert ("apt", "amd64", None) in upstream.calls


def test_a_new_index_changes_the_resolution(repo: Repo, local_core: Factory,
                                            upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    assert "libssl3" not in independent(core.BuildConfiguration("client1"))
    newer = apt_index()
    newer.add("openssh-server", depends=[["openssh-client"], ["libssl3"]])
    newer.add("libssl3")
    upstream.indices["apt"], upstream.keys["apt"] = newer, "k2"
    core.plugins["Packages"].Refresh()
    assert "libssl3" in independent(core.BuildConfiguration("client1"))


def test_sources_xml_changes_and_errors(repo: Repo, local_core: Factory,
                                        upstream: FakeUpstream) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS)
    assert independent(core.BuildConfiguration("client1"))
    path = repo.path / "Packages" / "sources.xml"
    rewrite(path, "<Sources><Source type='apt'>")  # malformed: the last good stays
    core.refresh()
    assert independent(core.BuildConfiguration("client1"))
    rewrite(path, "<Sources><Source type='zypper' url='x'><Arch>amd64</Arch></Source></Sources>")
    core.refresh()
    plugin = core.plugins["Packages"]
    assert "zypper" in plugin.sources_file.error
    assert independent(core.BuildConfiguration("client1"))
    rewrite(path, "<Sources/>")
    core.refresh()
    assert independent(core.BuildConfiguration("client1")) == {}


def test_a_worker_reads_what_the_parent_cached(repo: Repo, local_core: Factory,
                                               upstream: FakeUpstream,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bcfg2.cache import relayed

    setup_repo(repo, '<Package name="openssh-server"/>')
    parent = local_core(repo, server__plugins=PLUGINS)
    parent.plugins["Packages"].update()
    monkeypatch.setattr(LocalCore, "worker", True)
    monkeypatch.setattr(LocalCore, "local", False)
    child = local_core(repo, server__plugins=PLUGINS)
    child.BuildConfiguration("client1")
    upstream.calls.clear()
    newer = apt_index()
    newer.add("openssh-server", depends=[["libssl3"]])
    newer.add("libssl3")
    upstream.indices["apt"], upstream.keys["apt"] = newer, "k2"
    parent.plugins["Packages"].Refresh()
    assert "libssl3" not in independent(child.BuildConfiguration("client1"))
    child.metadata_cache.expire(tag=relayed("Packages"))
    assert "libssl3" in independent(child.BuildConfiguration("client1"))
    assert {c for c in upstream.calls if c[0] == "apt"} == {("apt", "amd64", None),
                                                          ("apt", "arm64", None)}  # parent
    child.plugins["Packages"].start_threads()  # a worker starts no fetching thread
    assert child.plugins["Packages"]._thread is None



def test_a_core_that_renders_nothing_keeps_no_index_in_memory(
        repo: Repo, local_core: Factory, upstream: FakeUpstream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The multiprocessing core's parent fetches and caches; only its children hold indices."""
    setup_repo(repo, '<Package name="openssh-server"/>')
    monkeypatch.setattr(LocalCore, "renders", False)
    parent = local_core(repo, server__plugins=PLUGINS)
    plugin = parent.plugins["Packages"]
    plugin.update()
    assert plugin.loaded and all(item.index is None for item in plugin.loaded.values())
    sizes = {info.arch: info.packages for info in plugin.package_sources(
        parent.build_metadata("client1"))}
    assert sizes == {"amd64": len(apt_index())}
    restarted = local_core(repo, server__plugins=PLUGINS)  # reads the cache's header lines
    assert sorted((item.index, item.size) for item in
                  restarted.plugins["Packages"].loaded.values()) == [
        (None, len(yum_index())), (None, len(apt_index())), (None, len(apt_index()))]
    monkeypatch.setattr(LocalCore, "renders", True)
    upstream.fail["apt"] = "unreachable"
    child = local_core(repo, server__plugins=PLUGINS)  # what a child reads: the whole index
    assert "openssh-client" in independent(child.BuildConfiguration("client1"))


def test_a_cache_file_of_another_layout_or_damaged_is_parsed_again(
        repo: Repo, local_core: Factory, upstream: FakeUpstream, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    setup_repo(repo, '<Package name="openssh-server"/>')
    local_core(repo, server__plugins=PLUGINS).BuildConfiguration("client1")
    cache_dir = tmp_path / "state" / "Packages" / "cache"
    files = sorted(cache_dir.glob("*.json"))
    assert files
    files[0].write_text('{"format": 1, "key": "k1", "index": {}}')  # the first layout
    for damaged in files[1:]:
        damaged.write_text(damaged.read_text()[:40])  # a header cut short
    upstream.calls.clear()
    with caplog.at_level(logging.WARNING, logger="bcfg2.plugins.Packages"):
        core = local_core(repo, server__plugins=PLUGINS)
        assert "openssh-client" in independent(core.BuildConfiguration("client1"))
    assert len(upstream.calls) == len(files)  # each fetched again, none served empty
    assert len([r for r in caplog.records if "ignoring the cache file" in r.message]) == \
        len(files) - 1


YUM_CLIENT = '<Clients><Client name="client1" profile="other"/></Clients>'
KEY_PATH = "/etc/pki/rpm-gpg/RPM-GPG-KEY-el9"


def test_a_gpg_key_that_cannot_be_fetched_is_reported_logged_once_and_served_once_fetched(
        repo: Repo, local_core: Factory, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from bcfg2.plugins.packages.fetch import Fetcher, FetchError

    def unreachable(self: Fetcher, url: str) -> bytes:
        raise FetchError(f"{url}: connection refused")

    setup_repo(repo, '<Package name="httpd"/>')
    repo.write("Metadata/clients.xml", YUM_CLIENT)
    monkeypatch.setattr(Fetcher, "get", unreachable)
    core = local_core(repo, server__plugins=PLUGINS)
    plugin = core.plugins["Packages"]
    with caplog.at_level(logging.ERROR, logger="bcfg2"):
        for _ in range(2):
            with pytest.raises(PluginExecutionError, match="GPG key .*RPM-GPG-KEY-el9"):
                plugin.Refresh()
    assert len([r for r in caplog.records if "cannot fetch the GPG key" in r.message]) == 1
    config = core.BuildConfiguration("client1")
    assert config.find("Bundle/Package[@name='httpd']").get("type") == "yum"  # bound all the same
    assert config.find(f"Independent/Path[@name='{KEY_PATH}']") is None
    assert config.find("Independent/Package[@name='gpg-pubkey']") is None
    monkeypatch.setattr(Fetcher, "get", lambda self, url: upstream.get(url))
    assert plugin.Refresh() is True
    config = core.BuildConfiguration("client1")
    assert config.find(f"Independent/Path[@name='{KEY_PATH}']") is not None
    assert config.find("Independent/Package[@name='gpg-pubkey']/Instance") is not None


def test_a_key_file_that_is_no_key_is_served_without_an_rpm_name(
        repo: Repo, local_core: Factory, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from bcfg2.plugins.packages.fetch import Fetcher

    setup_repo(repo, '<Package name="httpd"/>')
    repo.write("Metadata/clients.xml", YUM_CLIENT)
    monkeypatch.setattr(Fetcher, "get", lambda self, url: b"not a key\n")
    with caplog.at_level(logging.ERROR, logger="bcfg2"):
        core = local_core(repo, server__plugins=PLUGINS)
        config = core.BuildConfiguration("client1")
    assert config.find(f"Independent/Path[@name='{KEY_PATH}']").text == "not a key\n"
    assert config.find("Independent/Package[@name='gpg-pubkey']") is None
    assert any("served as a file only" in r.message for r in caplog.records)


def test_refresh_answers_while_a_slow_fetch_goes_on_in_the_background(
        repo: Repo, local_core: Factory, upstream: FakeUpstream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import bcfg2.plugins.packages as packages_plugin

    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS, packages__refresh_interval="0")
    plugin = core.plugins["Packages"]
    plugin.update()
    release, fetching = threading.Event(), threading.Event()
    quick = upstream.load

    def slow(*args: Any, **kwargs: Any) -> drivers.Loaded | None:
        fetching.set()
        release.wait(60)
        return quick(*args, **kwargs)

    monkeypatch.setattr(drivers, "load", slow)
    monkeypatch.setattr(packages_plugin, "RMI_WAIT", 0.2)
    plugin.start_threads()  # the refresher's first pass blocks in the fetch
    try:
        assert fetching.wait(30)
        with pytest.raises(PluginExecutionError, match="still running after 0 s"):
            plugin.Refresh()
        assert "openssh-client" in independent(core.BuildConfiguration("client1"))
    finally:
        release.set()
    monkeypatch.setattr(packages_plugin, "RMI_WAIT", 30.0)
    assert plugin.Refresh() is True  # once the fetch is done, the next one answers


def test_the_refresher_checks_every_source_each_interval(
        repo: Repo, local_core: Factory, upstream: FakeUpstream) -> None:
    from conftest import wait_until

    setup_repo(repo, '<Package name="openssh-server"/>')
    core = local_core(repo, server__plugins=PLUGINS, packages__refresh_interval="1")
    plugin = core.plugins["Packages"]
    plugin.update()
    upstream.calls.clear()
    plugin.start_threads()
    wait_until(lambda: upstream.calls.count(("apt", "amd64", "k1")) >= 2, 30,
               "two interval checks of the unchanged source")
    assert ("apt", "amd64", None) not in upstream.calls  # checks, never downloads again


def test_servers_sharing_postgresql_share_the_index_cache(
        repo: Repo, local_core: Factory, upstream: FakeUpstream, pg_database,
        tmp_path: Path) -> None:
    """An index one server fetched is what another reads at start-up, with no cache file."""
    setup_repo(repo, '<Package name="openssh-server"/>')
    first = local_core(repo, server__plugins=PLUGINS, server__state_dir=str(tmp_path / "one"),
                       **pg_database.overrides)
    assert "openssh-client" in independent(first.BuildConfiguration("client1"))
    assert upstream.calls
    upstream.calls.clear()
    upstream.fail["apt"] = upstream.fail["yum"] = "unreachable"
    second = local_core(repo, server__plugins=PLUGINS, server__state_dir=str(tmp_path / "two"),
                        **pg_database.overrides)
    assert "openssh-client" in independent(second.BuildConfiguration("client1"))
    assert upstream.calls == []  # read from the database, not fetched again
    assert not list(tmp_path.glob("*/Packages/cache/*.json"))
    names = {row[0] for row in pg_database.query("SELECT name FROM packages_cache")}
    assert len(names) == 4  # apt amd64 and arm64, yum x86_64, and the yum source's GPG key

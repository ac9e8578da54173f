"""Edits to the repository take effect while the builtin core serves, for both monitors.

Each test changes files the way admins do (in place, editor-style rename,
whole directories, bursts) and waits on the file monitor's explicit "events
handled" signal for the changed path before it asks for a configuration.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo, RunningServer

WEB1 = ("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret", "web1.example.com")
DB1 = ("5c3f7a62-9d0e-4c1b-8f53-db1", "db1-secret", "db1.example.com")
TIMEOUT = 30


class Live:
    """A running server over a private repository, and ways to change it."""

    def __init__(self, server: RunningServer, repo: Repo) -> None:
        self.server = server
        self.repo = repo
        self.fam = server.core.fam

    def change(self, path: Path | str, action: Callable[[], object]) -> None:
        """Do ``action`` and wait until the monitor has handled an event for ``path``."""
        mark = self.fam.handled
        action()
        assert self.fam.wait_handled(str(path), mark, TIMEOUT), f"no event handled for {path}"

    def write(self, relative: str, text: str) -> Path:
        path = self.repo.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        self.change(path, lambda: path.write_text(text))
        return path

    def replace(self, relative: str, text: str) -> Path:
        """Write a file whole, as an editor saves it (a temporary file renamed over it):
        the monitor never sees it half written."""
        path = self.repo.path / relative
        temporary = path.with_name(path.name + "~")  # ignored by [server] ignore_files
        temporary.write_text(text)
        self.change(path, lambda: os.replace(temporary, path))
        return path

    def config(self, who: tuple[str, str, str] = WEB1) -> lxml.etree._Element:
        uuid, password, _name = who
        return lxml.etree.fromstring(self.server.proxy(uuid, password).GetConfig().encode())


def path_entry(config: lxml.etree._Element, name: str) -> lxml.etree._Element | None:
    found = config.xpath("//Path[@name=$name]", name=name)
    return found[0] if found else None


@pytest.fixture(params=["inotify", "pseudo"])
def live(request: pytest.FixtureRequest, example_repo: Repo, builtin_server) -> Live:
    server = builtin_server(example_repo, server__filemonitor=request.param)
    assert server.core.fam.name == request.param
    if request.param == "pseudo":
        server.core.fam.interval = 0.05  # scan often: these tests wait for each change
        server.core.fam.wake()
    return Live(server, example_repo)


def test_a_cfg_edit_is_served_on_the_next_run(live: Live) -> None:
    assert "Web server" in path_entry(live.config(), "/etc/motd").text
    live.write("Cfg/etc/motd/motd.G10_web", "Web server, edited while serving.\n")
    assert path_entry(live.config(), "/etc/motd").text == "Web server, edited while serving.\n"


def test_an_editor_style_save_is_served(live: Live) -> None:
    target = live.repo.path / "Cfg/etc/motd/motd.G10_web"
    backup = target.with_name(target.name + "~")  # an editor's temporary file: ignored

    def save() -> None:
        backup.write_text("Saved by an editor.\n")
        os.replace(backup, target)

    live.change(target, save)
    assert path_entry(live.config(), "/etc/motd").text == "Saved by an editor.\n"


def test_a_directory_deleted_and_recreated_is_watched_again(live: Live) -> None:
    directory = live.repo.path / "Cfg/etc/motd"
    live.change(directory, lambda: shutil.rmtree(directory))
    gone = path_entry(live.config(), "/etc/motd")
    assert gone is not None and gone.get("failure")

    live.change(directory / "motd", lambda: (directory.mkdir(),
                                             (directory / "motd").write_text("Back again.\n")))
    assert path_entry(live.config(), "/etc/motd").text == "Back again.\n"
    # the new directory is watched: a later edit in it is seen too
    live.write("Cfg/etc/motd/motd.G10_web", "And edited.\n")
    assert path_entry(live.config(), "/etc/motd").text == "And edited.\n"


def test_a_whole_new_cfg_tree_and_a_new_bundle(live: Live) -> None:
    live.write("Cfg/etc/app/conf.d/app.conf/app.conf", "setting = 1\n")
    live.write("Cfg/etc/app/conf.d/app.conf/info.xml",
               '<FileInfo><Info owner="app" group="app" mode="0640"/></FileInfo>')
    live.write("Bundler/motd.xml", '<Bundle independent="true"><Path name="/etc/motd"/>'
                                   '<Path name="/etc/app/conf.d/app.conf"/></Bundle>')
    entry = path_entry(live.config(), "/etc/app/conf.d/app.conf")
    assert entry.text == "setting = 1\n"
    assert (entry.get("owner"), entry.get("mode")) == ("app", "0640")
    assert "failure" not in entry.attrib


def test_a_burst_of_2000_files_is_all_reflected(live: Live,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    names = [f"/etc/burst/f{n:04d}" for n in range(2000)]

    def burst() -> None:
        for n, name in enumerate(names):
            directory = live.repo.path / "Cfg" / name.lstrip("/")
            directory.mkdir(parents=True)
            (directory / directory.name).write_text(f"content {n}\n")
        paths = "".join(f'<Path name="{name}"/>' for name in names)
        (live.repo.path / "Bundler/motd.xml").write_text(
            f'<Bundle independent="true"><Path name="/etc/motd"/>{paths}</Bundle>')

    live.change(live.repo.path / "Bundler/motd.xml", burst)
    config = live.config()
    for n, name in enumerate(names):
        entry = path_entry(config, name)
        assert entry is not None and entry.text == f"content {n}\n", name
    assert not config.xpath("//*[@failure]")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_bundles_and_rules_added_and_removed(live: Live) -> None:
    live.write("Rules/extra.xml", '<Rules priority="0"><Service name="htop" type="systemd" '
                                  'status="on"/></Rules>')
    live.write("Bundler/tools.xml", '<Bundle><Service name="htop"/></Bundle>')
    live.write("Metadata/groups.xml", (live.repo.path / "Metadata/groups.xml").read_text()
               .replace('<Bundle name="motd"/>', '<Bundle name="motd"/><Bundle name="tools"/>'))
    package = live.config().xpath("//Bundle[@name='tools']/Service[@name='htop']")
    assert package and package[0].get("type") == "systemd" and "failure" not in package[0].attrib

    rules = live.repo.path / "Rules/extra.xml"
    live.change(rules, rules.unlink)
    package = live.config().xpath("//Bundle[@name='tools']/Service[@name='htop']")
    assert package[0].get("failure")

    bundle = live.repo.path / "Bundler/tools.xml"
    live.change(bundle, bundle.unlink)
    assert not live.config().xpath("//Bundle[@name='tools']")


def test_a_change_to_an_xincluded_file_is_served(live: Live) -> None:
    groups = live.repo.path / "Metadata/groups.xml"
    original = groups.read_text()
    (live.repo.path / "Metadata/web-extra.xml").write_text("<Groups/>")  # not watched yet
    live.write("Metadata/groups.xml", original.replace(
        "<Groups>", '<Groups xmlns:xi="http://www.w3.org/2001/XInclude">'
                    '<xi:include href="web-extra.xml"/>'))
    assert "# Managed by Bcfg2: clients follow" in path_entry(live.config(), "/etc/ntp.conf").text
    live.write("Metadata/web-extra.xml",
               '<Groups><Group name="web"><Group name="ntp-server"/></Group></Groups>')
    assert "this host serves time" in path_entry(live.config(), "/etc/ntp.conf").text


def test_a_malformed_groups_xml_keeps_the_last_good_one(live: Live,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    groups = live.repo.path / "Metadata/groups.xml"
    good = groups.read_text()
    before = live.config()
    # whole, so that the one bad version is reported once (an in-place write may be read
    # half done, a second bad version)
    live.replace("Metadata/groups.xml", good.replace("</Groups>", "<Group name='broken'>"))
    for _ in range(3):  # served from the last good groups.xml, every time
        served = live.config()
        assert [b.get("name") for b in served] == [b.get("name") for b in before]
        assert not served.xpath("//*[@failure]")
    reports = [r for r in caplog.records if str(groups) in r.getMessage()]
    assert len(reports) == 1, [r.getMessage() for r in reports]
    assert f"{groups}:" in reports[0].getMessage()  # path and line

    live.write("Metadata/groups.xml", good.replace(
        '<Group name="db">', '<Group name="web"><Group name="ntp-server"/></Group>'
                             '<Group name="db">'))
    assert "this host serves time" in path_entry(live.config(), "/etc/ntp.conf").text


@pytest.fixture(params=["inotify", "pseudo"])
def cached(request: pytest.FixtureRequest, example_repo: Repo, builtin_server) -> Live:
    server = builtin_server(example_repo, server__filemonitor=request.param,
                            caching__client_metadata="aggressive")
    if request.param == "pseudo":
        server.core.fam.interval = 0.05
        server.core.fam.wake()
    return Live(server, example_repo)


def test_aggressive_caching_expires_a_client_whose_profile_changes(cached: Live) -> None:
    cache = cached.server.core.metadata_cache
    cached.config(WEB1)
    cached.config(DB1)
    db1 = cache.get(DB1[2])
    assert cache.get(WEB1[2]) is not None and db1 is not None

    clients = cached.repo.path / "Metadata/clients.xml"
    cached.write("Metadata/clients.xml", clients.read_text().replace(
        'name="web1.example.com" profile="webserver"', 'name="web1.example.com" profile="dbserver"'))
    assert cache.get(WEB1[2]) is None
    assert cache.get(DB1[2]) is db1  # untouched clients stay cached
    assert "RHEL flavour" in path_entry(cached.config(WEB1), "/etc/ssh/sshd_config").text


def test_aggressive_caching_expires_clients_whose_groups_change(cached: Live) -> None:
    cache = cached.server.core.metadata_cache
    assert "clients follow" in path_entry(cached.config(WEB1), "/etc/ntp.conf").text
    cached.config(DB1)
    db1 = cache.get(DB1[2])
    groups = cached.repo.path / "Metadata/groups.xml"
    # web servers now serve time too; db1 already does: its groups do not change
    cached.write("Metadata/groups.xml", groups.read_text().replace(
        '<Group name="db">', '<Group name="web"><Group name="ntp-server"/></Group>'
                             '<Group name="db">'))
    assert cache.get(WEB1[2]) is None
    assert cache.get(DB1[2]) is db1
    assert "this host serves time" in path_entry(cached.config(WEB1), "/etc/ntp.conf").text


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("backend", ["inotify", "pseudo"])
def test_the_git_revision_follows_commits(backend: str, example_repo: Repo,
                                          builtin_server) -> None:
    path = example_repo.path
    git(path, "init", "-q", "-b", "main")
    git(path, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    server = builtin_server(example_repo, server__filemonitor=backend,
                            server__plugins="Metadata,Bundler,Cfg,Rules,Defaults,Git")
    if backend == "pseudo":
        server.core.fam.interval = 0.05
        server.core.fam.wake()
    live = Live(server, example_repo)
    assert live.config().get("revision") == git(path, "rev-parse", "HEAD")

    (path / "Cfg/etc/motd/motd").write_text("Committed.\n")
    ref = path / ".git/refs/heads/main"
    live.change(ref, lambda: git(path, "-c", "user.name=t", "-c", "user.email=t@example.com",
                                 "commit", "-qam", "two"))
    assert live.config().get("revision") == git(path, "rev-parse", "HEAD")


@pytest.mark.parametrize("backend", ["inotify", "pseudo"])
def test_a_file_replaced_the_way_git_does_it_is_never_missing(backend: str, example_repo: Repo,
                                                              local_core) -> None:
    core = local_core(example_repo, server__filemonitor=backend)
    metadata = core.metadata
    sizes: list[int] = []
    rebuild = metadata.rebuild_clients

    def recording_rebuild() -> None:
        rebuild()
        sizes.append(len(metadata.clients_model.clients))

    metadata.rebuild_clients = recording_rebuild
    clients = example_repo.path / "Metadata/clients.xml"
    text = clients.read_text().replace("desk1-secret", "desk1-changed")
    clients.unlink()  # git checkout: unlink, then write the new version
    clients.write_text(text)
    core.refresh()
    assert sizes and all(size == len(metadata.list_clients()) == 4 for size in sizes)
    assert core.build_metadata("desk1.example.com").password == "desk1-changed"


def test_a_change_to_a_file_included_by_an_included_file_is_served(live: Live) -> None:
    groups = live.repo.path / "Metadata/groups.xml"
    xi = 'xmlns:xi="http://www.w3.org/2001/XInclude"'
    (live.repo.path / "Metadata/inner.xml").write_text("<Groups/>")
    (live.repo.path / "Metadata/outer.xml").write_text(
        f'<Groups {xi}><xi:include href="inner.xml"/></Groups>')
    live.write("Metadata/groups.xml", groups.read_text().replace(
        "<Groups>", f'<Groups {xi}><xi:include href="outer.xml"/>'))
    assert "clients follow" in path_entry(live.config(), "/etc/ntp.conf").text
    live.write("Metadata/inner.xml",
               '<Groups><Group name="web"><Group name="ntp-server"/></Group></Groups>')
    assert "this host serves time" in path_entry(live.config(), "/etc/ntp.conf").text

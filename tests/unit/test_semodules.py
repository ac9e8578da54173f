"""SEModules: SELinux modules served from SEModules/<name>.pp/, most specific version first."""

from __future__ import annotations

import base64
import logging
import shutil
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS, PLUGINS, Repo

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]
#: bytes no text decoding keeps: a module file is binary
MODULE = b"\x8f\xff|\xf9\x00\x01policy module foo\x00"


def bundle(repo: Repo, *entries: str) -> None:
    """Both clients get bundle "base" with these entries."""
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>" + "".join(entries) + "</Bundle>")


def make(local_core: Factory, repo: Repo) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",SEModules")


def modules(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    config = core.BuildConfiguration(client)
    assert config.tag == "Configuration"
    return {el.get("name"): el for el in config.iter("SEModule")}


def content(entry: lxml.etree._Element) -> bytes:
    assert entry.get("encoding") == "base64", lxml.etree.tostring(entry)
    return base64.b64decode(entry.text)


def test_a_module_is_sent_base64_under_its_name_without_pp(repo: Repo, local_core) -> None:
    bundle(repo, '<SEModule name="foo.pp"/>', '<SEModule name="bar" disabled="true"/>')
    repo.write("SEModules/foo.pp/foo.pp", MODULE)
    repo.write("SEModules/bar.pp/bar.pp", b"bar module")
    served = modules(make(local_core, repo), "client1")
    assert set(served) == {"foo", "bar"}
    assert "failure" not in served["foo"].attrib
    assert content(served["foo"]) == MODULE
    assert content(served["bar"]) == b"bar module"
    assert served["bar"].get("disabled") == "true"
    assert served["foo"].get("disabled") is None


def test_host_and_group_versions_win_as_in_cfg(repo: Repo, local_core) -> None:
    bundle(repo, '<SEModule name="foo"/>')
    repo.write("SEModules/foo.pp/foo.pp", b"everyone")
    repo.write("SEModules/foo.pp/foo.pp.G10_basic", b"basic, priority 10")
    repo.write("SEModules/foo.pp/foo.pp.G50_linux", b"linux, priority 50")
    repo.write("SEModules/foo.pp/foo.pp.H_client2", b"client2 alone")
    core = make(local_core, repo)
    # client1 is in basic and linux (BASIC_GROUPS): the higher priority wins
    assert content(modules(core, "client1")["foo"]) == b"linux, priority 50"
    assert content(modules(core, "client2")["foo"]) == b"client2 alone"
    (repo.path / "SEModules/foo.pp/foo.pp.G50_linux").unlink()
    core.refresh()
    assert content(modules(core, "client1")["foo"]) == b"basic, priority 10"


def test_a_module_with_no_version_for_a_client_fails_only_there(repo: Repo, local_core) -> None:
    bundle(repo, '<SEModule name="foo"/>', '<SEModule name="other"/>')
    repo.write("SEModules/foo.pp/foo.pp.H_client1", MODULE)
    core = make(local_core, repo)
    assert content(modules(core, "client1")["foo"]) == MODULE
    client2 = modules(core, "client2")
    assert "no version" in client2["foo"].get("failure")
    assert client2["other"].get("failure") == "no matching generator"


def test_modules_come_and_go_with_their_directories(repo: Repo, local_core) -> None:
    bundle(repo, '<SEModule name="foo"/>')
    repo.mkdir("SEModules")
    core = make(local_core, repo)
    assert modules(core, "client1")["foo"].get("failure") == "no matching generator"
    repo.write("SEModules/foo.pp/foo.pp", MODULE)
    core.refresh()
    assert content(modules(core, "client1")["foo"]) == MODULE
    repo.write("SEModules/foo.pp/foo.pp", b"version 2")
    core.refresh()
    assert content(modules(core, "client1")["foo"]) == b"version 2"
    shutil.rmtree(repo.path / "SEModules/foo.pp")
    core.refresh()
    assert modules(core, "client1")["foo"].get("failure") == "no matching generator"


def test_a_directory_not_named_like_a_module_file_is_ignored(repo: Repo, local_core,
                                                             caplog) -> None:
    bundle(repo, '<SEModule name="foo"/>')
    repo.write("SEModules/foo/foo", MODULE)
    with caplog.at_level(logging.WARNING):
        core = make(local_core, repo)
    assert "SEModules/foo: a module directory is named like the module file" in caplog.text
    assert modules(core, "client1")["foo"].get("failure") == "no matching generator"


def test_a_bound_module_is_left_as_written(repo: Repo, local_core) -> None:
    text = base64.b64encode(b"inline").decode()
    bundle(repo, f'<BoundSEModule name="inline" encoding="base64">{text}</BoundSEModule>')
    repo.mkdir("SEModules")
    served = modules(make(local_core, repo), "client1")
    assert content(served["inline"]) == b"inline"


@pytest.mark.parametrize("name", ["foo", "foo.pp"])
def test_an_agent_gets_the_module_in_its_configuration(repo: Repo, network_server,
                                                       name: str) -> None:
    bundle(repo, f'<SEModule name="{name}"/>')
    repo.write("SEModules/foo.pp/foo.pp", MODULE)
    repo.write("SEModules/foo.pp/foo.pp.H_client2", b"for client2")
    server = network_server(repo, server__plugins=PLUGINS + ",SEModules")
    for (uuid, password), expected in ((("uuid-client1", "pw1"), MODULE),
                                       (("uuid-client2", "pw2"), b"for client2")):
        config = lxml.etree.fromstring(server.proxy(uuid, password).GetConfig().encode())
        (entry,) = config.iter("SEModule")
        assert entry.get("name") == "foo"
        assert content(entry) == expected


def test_configurations_are_kept_until_a_version_of_their_modules_changes(
        repo: Repo, local_core) -> None:
    from cache_world import from_scratch

    bundle(repo, '<SEModule name="foo"/>', '<SEModule name="bar"/>')
    repo.mkdir("SEModules")
    repo.write("SEModules/foo.pp/foo.pp", MODULE)
    core = local_core(repo, server__plugins=PLUGINS + ",SEModules",
                      server__filemonitor="inotify")
    counts = core.config_cache.counts

    def served(client: str) -> str:
        return core.serve_configuration(client, core.build_metadata(client))

    served("client1")  # bar fails: not kept
    assert "client1" not in core.config_cache
    steps = [
        lambda: repo.write("SEModules/bar.pp/bar.pp", b"bar module"),  # the missing one comes
        lambda: repo.write("SEModules/foo.pp/foo.pp.H_client1", b"client1's own"),
        lambda: repo.write("SEModules/foo.pp/foo.pp", b"version 2"),  # client2's changes
        lambda: (repo.path / "SEModules/foo.pp/foo.pp.H_client1").unlink(),
    ]
    for number, step in enumerate(steps):
        step()
        core.refresh()
        for client in ("client1", "client2"):
            assert served(client) == from_scratch(core, client), f"step {number}: {client}"
    hits = counts["hits"]
    assert [served(c) for c in ("client1", "client2")] == [
        from_scratch(core, c) for c in ("client1", "client2")]
    assert counts["hits"] == hits + 2

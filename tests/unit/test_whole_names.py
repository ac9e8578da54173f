"""Whole-string name checks: a name with a trailing newline never passes for the name.

``re.match(r"...$")`` accepts ``"victim.example.com\\n"``, since ``$`` also
matches before a final newline. Client names, probe and group names and the
``.H_host`` / ``.G50_group`` suffixes of repository file names are all
checked against the whole string.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest
from conftest import Repo, make_setup

from bcfg2.admin.pull import target
from bcfg2.core import LocalCore
from bcfg2.identity import valid_client_name
from bcfg2.plugin import SPECIFIC_SUFFIX, EntrySet, XMLDirectoryBacked
from bcfg2.tools import ToolError

Factory = Callable[..., LocalCore]


@pytest.mark.parametrize("name", ["victim.example.com\n", "victim.example.com\r",
                                  "victim.example.com\n\n", "victim\x7f", "a..b", "",
                                  ".hidden", "x" * 254, "victim.example.com/x"])
def test_client_names_that_only_look_valid_are_refused(name: str) -> None:
    assert not valid_client_name(name)


@pytest.mark.parametrize("name", ["victim.example.com", "web_1:8@x", "x" * 253])
def test_client_names_are_accepted(name: str) -> None:
    assert valid_client_name(name)


@pytest.mark.parametrize("fname", ["motd.H_client1\n", "motd.G50_linux\n", "motd.H_client1\r\n"])
def test_a_specificity_suffix_with_a_line_end_is_none(fname: str) -> None:
    assert SPECIFIC_SUFFIX.fullmatch(fname, len("motd")) is None
    assert SPECIFIC_SUFFIX.search(fname) is None
    assert SPECIFIC_SUFFIX.sub("", fname) == fname


def test_public_file_name_patterns_look_at_the_whole_name_even_with_match() -> None:
    """Third-party code may still call match(): the patterns end in \\Z themselves."""
    assert EntrySet.ignore.match("motd~") and EntrySet.ignore.match(".motd.swp")
    for fname in ("motd~\n", "motd~x", ".motd.swp\n"):
        assert EntrySet.ignore.match(fname) is None
    assert XMLDirectoryBacked.patterns.match("a.xml")
    assert XMLDirectoryBacked.patterns.match("a.xml\n") is None
    assert XMLDirectoryBacked.patterns.match("a.xmlx") is None


def test_no_repository_file_with_a_line_end_in_its_name_is_a_version_for_anyone(
        repo: Repo, local_core: Factory) -> None:
    """Such files exist on Linux; none is taken for client1's or group linux's version."""
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    repo.write("Bundler/base.xml\n", '<Bundle><Path name="/etc/evil"/></Bundle>')
    repo.write("Cfg/etc/motd/motd", "everyone\n")
    repo.write("Cfg/etc/motd/motd.H_client1\n", "impostor\n")
    repo.write("Cfg/etc/motd/motd.G99_linux\n", "impostor group\n")
    repo.write("Decisions/whitelist.xml",
               '<Decisions><Decision type="Service" name="sshd"/></Decisions>')
    repo.write("Decisions/whitelist.xml.H_client1\n",
               '<Decisions><Decision type="Path" name="/etc/shadow"/></Decisions>')
    repo.write("TemplateHelper/evil.py\n", "X = 1\n")
    repo.write("Probes/os", "uname -s\n")
    repo.write("Probes/os.H_client1\n", "echo impostor\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults,Decisions,"
                                            "TemplateHelper,Probes")
    config = core.BuildConfiguration("client1")
    paths = {el.get("name"): el for el in config.iter("Path")}
    assert set(paths) == {"/etc/motd"}
    assert paths["/etc/motd"].text == "everyone\n"
    assert "failure" not in paths["/etc/motd"].attrib
    meta = core.build_metadata("client1")
    assert core.GetDecisions(meta, "whitelist") == [("Service", "sshd")]
    assert dict(meta.TemplateHelper) == {}
    [probe] = core.plugins["Probes"].GetProbes(meta)
    assert (probe.get("name"), probe.text) == ("os", "uname -s\n")


@pytest.mark.parametrize("client, group", [("web1.example.com\n", None),
                                           ("web1.example.com", "web\n")])
def test_pull_refuses_names_with_a_line_end(repo: Repo, client: str, group: str | None) -> None:
    args = argparse.Namespace(name="/etc/motd", all=False, group=group, priority=50,
                              client=client)
    with pytest.raises(ToolError, match="is not a valid"):
        target(make_setup(repo), args)

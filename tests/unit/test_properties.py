"""Properties: XML/JSON property files as metadata.Properties, conditionals, automatch, reloads."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import PLUGINS, Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]

NTP = """\
<Properties>
  <Server>ntp0.example.com</Server>
  <Group name="linux">
    <Server>ntp-linux.example.com</Server>
  </Group>
  <Group name="linux" negate="true">
    <Server>ntp-other.example.com</Server>
  </Group>
  <Client name="client2">
    <Setting name="burst">true</Setting>
  </Client>
</Properties>
"""

PEOPLE = '{"admins": ["alice", "bob"], "port": 123}\n'


@pytest.fixture
def prop_repo(repo: Repo) -> Repo:
    repo.write("Properties/ntp.xml", NTP)
    repo.write("Properties/people.json", PEOPLE)
    repo.write("Properties/ntp.xsd", "<not-a-property-file/>")
    return repo


def make(local_core: Factory, repo: Repo, **overrides: str) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",Properties", **overrides)


def props(core: LocalCore, client: str) -> dict:
    return core.build_metadata(client).Properties


def servers(elements: list[lxml.etree._Element]) -> list[str]:
    return [el.text for el in elements if el.tag == "Server"]


def test_files_by_name_other_files_ignored(local_core: Factory, prop_repo: Repo) -> None:
    core = make(local_core, prop_repo)
    assert sorted(props(core, "client1")) == ["ntp.xml", "people.json"]


def test_match_resolves_conditionals_per_client(local_core: Factory, prop_repo: Repo) -> None:
    core = make(local_core, prop_repo)
    ntp1 = props(core, "client1")["ntp.xml"]
    ntp2 = props(core, "client2")["ntp.xml"]
    assert servers(ntp1.Match(core.build_metadata("client1"))) == [
        "ntp0.example.com", "ntp-linux.example.com"]
    md2 = core.build_metadata("client2")
    assert servers(ntp2.Match(md2)) == ["ntp0.example.com", "ntp-other.example.com"]
    matched = ntp2.XMLMatch(md2)
    assert matched.tag == "Properties"
    assert matched.find("Group") is None and matched.find("Client") is None
    assert matched.findtext("Setting") == "true"
    assert props(core, "client1")["ntp.xml"].XMLMatch(
        core.build_metadata("client1")).find("Setting") is None


def test_xml_raw_access_and_xpath(local_core: Factory, prop_repo: Repo) -> None:
    ntp = props(make(local_core, prop_repo), "client1")["ntp.xml"]
    assert ntp.xdata.tag == "Properties"
    assert [el.tag for el in ntp.entries] == ["Server", "Group", "Group", "Client"]
    assert ntp.xpath("//Server/text()") == [
        "ntp0.example.com", "ntp-linux.example.com", "ntp-other.example.com"]
    assert ntp.xdata.xpath("count(//Setting)") == 1.0
    assert ntp.xpath("//Setting[@name=$n]", n="burst")[0].text == "true"
    assert ntp.data == NTP


def test_automatch_attribute(local_core: Factory, prop_repo: Repo) -> None:
    prop_repo.write("Properties/ntp.xml", NTP.replace("<Properties>",
                                                      '<Properties automatch="true">'))
    core = make(local_core, prop_repo)
    ntp = props(core, "client1")["ntp.xml"]
    assert isinstance(ntp, lxml.etree._Element)
    assert [el.text for el in ntp.findall("Server")] == [
        "ntp0.example.com", "ntp-linux.example.com"]
    assert [el.text for el in props(core, "client2")["ntp.xml"].findall("Server")] == [
        "ntp0.example.com", "ntp-other.example.com"]


def test_automatch_option_and_per_file_opt_out(local_core: Factory, prop_repo: Repo) -> None:
    prop_repo.write("Properties/raw.xml", NTP.replace("<Properties>",
                                                      '<Properties automatch="false">'))
    core = make(local_core, prop_repo, properties__automatch="true")
    data = props(core, "client2")
    assert data["ntp.xml"].findtext("Setting") == "true"
    assert data["ntp.xml"].find("Client") is None
    assert not isinstance(data["raw.xml"], lxml.etree._Element)
    assert data["raw.xml"].xdata.find("Client") is not None


def test_json(local_core: Factory, prop_repo: Repo) -> None:
    people = props(make(local_core, prop_repo), "client1")["people.json"]
    assert people.json == {"admins": ["alice", "bob"], "port": 123}
    assert people.data == PEOPLE


def test_yaml(local_core: Factory, prop_repo: Repo) -> None:
    prop_repo.write("Properties/web.yml", "ports:\n  - 80\n  - 443\n")
    web = props(make(local_core, prop_repo), "client1")["web.yml"]
    assert web.yaml == {"ports": [80, 443]}


def test_live_edits_add_and_remove(local_core: Factory, prop_repo: Repo) -> None:
    core = make(local_core, prop_repo, caching__client_metadata="aggressive")
    assert props(core, "client1")["people.json"].json["port"] == 123
    rewrite(prop_repo.path / "Properties/people.json", '{"port": 456}')
    rewrite(prop_repo.path / "Properties/ntp.xml",
            NTP.replace("ntp0.example.com", "ntp9.example.com"))
    prop_repo.write("Properties/new.json", "[1, 2]")
    core.refresh()
    data = props(core, "client1")
    assert data["people.json"].json == {"port": 456}
    assert data["ntp.xml"].xpath("//Server/text()")[0] == "ntp9.example.com"
    assert data["new.json"].json == [1, 2]
    (prop_repo.path / "Properties/new.json").unlink()
    core.refresh()
    assert "new.json" not in props(core, "client1")


@pytest.mark.parametrize(("fname", "broken", "line"), [
    ("people.json", '{\n  "port": 1,\n  oops\n}', 3),
    ("ntp.xml", "<Properties>\n  <Server>\n</Properties>", 3),
])
def test_broken_file_keeps_last_good(local_core: Factory, prop_repo: Repo,
                                     caplog: pytest.LogCaptureFixture,
                                     fname: str, broken: str, line: int) -> None:
    core = make(local_core, prop_repo)
    path = prop_repo.path / "Properties" / fname
    rewrite(path, broken)
    with caplog.at_level(logging.ERROR):
        core.refresh()
    assert f"{path}:{line}" in caplog.text
    data = props(core, "client1")
    assert data["people.json"].json["port"] == 123
    assert data["ntp.xml"].xpath("//Server/text()")[0] == "ntp0.example.com"


def test_broken_from_the_start_is_left_out(local_core: Factory, prop_repo: Repo) -> None:
    prop_repo.write("Properties/bad.json", "{")
    assert sorted(props(make(local_core, prop_repo), "client1")) == ["ntp.xml", "people.json"]


def test_changes_by_one_client_do_not_leak(local_core: Factory, prop_repo: Repo) -> None:
    core = make(local_core, prop_repo)
    first = props(core, "client1")
    first["people.json"].json["admins"].append("mallory")
    first["ntp.xml"].xdata.find("Server").text = "evil.example.com"
    first["ntp.xml"].xdata.append(lxml.etree.Element("Server"))
    first["ntp.xml"].Match(core.build_metadata("client1"))[0].text = "evil2"
    second = props(core, "client2")
    assert second["people.json"].json["admins"] == ["alice", "bob"]
    assert second["ntp.xml"].xpath("//Server/text()") == [
        "ntp0.example.com", "ntp-linux.example.com", "ntp-other.example.com"]
    assert servers(second["ntp.xml"].Match(core.build_metadata("client2")))[0] == \
        "ntp0.example.com"
    assert props(core, "client1")["people.json"].json["admins"] == ["alice", "bob"]


def test_automatch_results_are_per_client(local_core: Factory, prop_repo: Repo) -> None:
    core = make(local_core, prop_repo, properties__automatch="true")
    props(core, "client1")["ntp.xml"].find("Server").text = "evil.example.com"
    assert props(core, "client1")["ntp.xml"].findtext("Server") == "ntp0.example.com"

"""Ohai: the probe sent, the JSON kept per client, ``metadata.Ohai`` in templates."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import lxml.etree
import pytest
from conftest import Repo

from bcfg2.core import LocalCore
from bcfg2.plugins.ohai import PROBE_SCRIPT

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Ohai"
OHAI = {"platform": "debian", "platform_version": "12.5",
        "network": {"interfaces": {"eth0": {"mtu": "1500"}}}}


def upload(data: str, source: str = "Ohai", name: str = "Ohai") -> str:
    """A RecvProbeData document carrying one probe's output."""
    return (f'<ProbeData><probe-data name="{name}" source="{source}">{escape(data)}'
            f"</probe-data></ProbeData>")


def receive(core: LocalCore, client: str, text: str) -> None:
    meta = core.build_metadata(client)
    item = lxml.etree.Element("probe-data", name="Ohai", source="Ohai")
    item.text = text
    core.plugins["Ohai"].ReceiveData(meta, [item])


def test_every_client_gets_the_ohai_probe(repo: Repo, local_core: Factory) -> None:
    core = local_core(repo, server__plugins=PLUGINS)
    probes = core.plugins["Ohai"].GetProbes(core.build_metadata("client1"))
    assert [(p.get("name"), p.get("source"), p.get("interpreter")) for p in probes] == [
        ("Ohai", "Ohai", "/bin/sh")]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no /bin/sh")
def test_the_probe_prints_an_empty_object_where_ohai_is_missing(tmp_path: Path) -> None:
    script = tmp_path / "probe"
    script.write_text(PROBE_SCRIPT)
    out = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, timeout=30,
                         env={"PATH": str(tmp_path)}, check=True)
    assert json.loads(out.stdout) == {}


def test_the_json_is_kept_in_the_ohai_directory_and_seen_by_templates(
        repo: Repo, local_core: Factory) -> None:
    core = local_core(repo, server__plugins=PLUGINS)
    assert core.build_metadata("client1").Ohai == {}
    receive(core, "client1", json.dumps(OHAI))
    assert core.build_metadata("client1").Ohai == OHAI
    assert core.build_metadata("client2").Ohai == {}
    stored = repo.path / "Ohai/client1.json"
    assert json.loads(stored.read_text()) == OHAI
    assert stored.stat().st_mode & 0o777 == 0o600
    # another server process (or a restart) reads what this one stored
    again = local_core(repo, server__plugins=PLUGINS)
    assert again.build_metadata("client1").Ohai == OHAI


def test_with_state_storage_the_json_goes_to_the_state_directory(
        repo: Repo, local_core: Factory, tmp_path: Path) -> None:
    core = local_core(repo, server__plugins=PLUGINS, ohai__storage="state",
                      server__state_dir=str(tmp_path / "state"))
    receive(core, "client1", json.dumps(OHAI))
    assert json.loads((tmp_path / "state/Ohai/client1.json").read_text()) == OHAI
    assert not (repo.path / "Ohai/client1.json").exists()


def test_new_data_expires_the_cached_metadata(repo: Repo, local_core: Factory) -> None:
    core = local_core(repo, server__plugins=PLUGINS, caching__client_metadata="aggressive")
    receive(core, "client1", json.dumps({"platform": "debian"}))
    assert core.build_metadata("client1").Ohai == {"platform": "debian"}
    receive(core, "client1", json.dumps({"platform": "ubuntu"}))
    assert core.build_metadata("client1").Ohai == {"platform": "ubuntu"}


def test_a_file_replaced_by_another_process_is_read_again(repo: Repo, local_core: Factory) -> None:
    core = local_core(repo, server__plugins=PLUGINS)
    receive(core, "client1", json.dumps({"n": 1}))
    assert core.build_metadata("client1").Ohai == {"n": 1}
    writer = local_core(repo, server__plugins=PLUGINS)
    receive(writer, "client1", json.dumps({"n": 2, "padding": "x" * 10}))
    assert core.build_metadata("client1").Ohai["n"] == 2


@pytest.mark.parametrize("text, reason", [
    ("this is not json", "not JSON"),
    ('{"open": [1, 2', "not JSON"),
    ("[1, 2, 3]", "a JSON list, not an object"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ("", "not JSON"),
])
def test_an_upload_that_is_no_json_object_is_refused_and_the_old_data_stays(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture,
        text: str, reason: str) -> None:
    core = local_core(repo, server__plugins=PLUGINS)
    receive(core, "client1", json.dumps(OHAI))
    caplog.set_level(logging.WARNING)
    receive(core, "client1", text)
    assert core.build_metadata("client1").Ohai == OHAI
    assert "Ohai data from client1 refused" in caplog.text and reason in caplog.text


def test_an_upload_over_the_size_limit_is_refused(repo: Repo, local_core: Factory,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    core = local_core(repo, server__plugins=PLUGINS, ohai__max_size="4096")
    receive(core, "client1", json.dumps(OHAI))
    caplog.set_level(logging.WARNING)
    receive(core, "client1", json.dumps({"big": "x" * 5000}))
    assert core.build_metadata("client1").Ohai == OHAI
    assert "more than [ohai] max_size (4096)" in caplog.text


def test_a_broken_stored_file_gives_nothing_and_is_logged_once(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("Ohai/client1.json", "{broken")
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.ERROR)
    for _ in range(3):
        assert core.build_metadata("client1").Ohai == {}
    assert caplog.text.count("Ohai data of client1 cannot be used") == 1


def test_a_client_name_that_is_no_file_name_touches_no_file(repo: Repo, local_core: Factory,
                                                            tmp_path: Path) -> None:
    core = local_core(repo, server__plugins=PLUGINS)
    meta = core.build_metadata("client1")
    meta.hostname = "../../escape"
    item = lxml.etree.Element("probe-data", name="Ohai", source="Ohai")
    item.text = "{}"
    core.plugins["Ohai"].ReceiveData(meta, [item])
    assert not list(tmp_path.rglob("escape.json"))
    assert core.plugins["Ohai"].get_additional_data(meta) == {}


def test_an_agent_run_sends_ohai_data_that_its_configuration_uses(
        repo: Repo, network_server) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true"><Bundle name="base"/></Group>
          <Group name="other" profile="true"/>
        </Groups>""")
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/platform"/></Bundle>')
    repo.write("Cfg/etc/platform/platform.genshi",
               "${metadata.Ohai.get('platform', 'unknown')} "
               "${metadata.Ohai.get('platform_version', '')}\n")
    server = network_server(repo, server__plugins=PLUGINS + ",Probes")
    agent = server.proxy("uuid-client1", "pw1")

    def platform() -> str:
        config = lxml.etree.fromstring(agent.GetConfig().encode())
        return config.find(".//Path[@name='/etc/platform']").text

    probes = lxml.etree.fromstring(agent.GetProbes().encode())
    assert [p.get("name") for p in probes.iter("probe")] == ["Ohai"]
    assert platform() == "unknown \n"
    assert agent.RecvProbeData(upload(json.dumps(OHAI))) is True
    assert platform() == "debian 12.5\n"
    # a hostile upload is refused; the agent's earlier data still serves it
    assert agent.RecvProbeData(upload("<not json>" * 10)) is True
    assert platform() == "debian 12.5\n"
    assert os.path.exists(repo.path / "Ohai/client1.json")


def test_configurations_are_kept_until_the_clients_ohai_data_changes(
        repo: Repo, local_core: Factory) -> None:
    """Ohai says what its part depends on: the client's stored file, however replaced."""
    from cache_world import from_scratch

    repo.write("Cfg/etc/platform/platform.jinja2", "{{ metadata.Ohai.get('platform') }}\n")
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/platform"/></Bundle>')
    core = local_core(repo, server__plugins=PLUGINS)  # metadata built for every request

    def served(client: str) -> str:
        return core.serve_configuration(client, core.build_metadata(client))

    receive(core, "client1", json.dumps({"platform": "debian"}))
    first = served("client1")
    assert ">debian\n<" in first and served("client1") == first
    assert core.config_cache.counts["hits"] == 1
    receive(core, "client1", json.dumps({"platform": "ubuntu"}))  # an upload
    assert served("client1") == from_scratch(core, "client1")
    assert ">ubuntu\n<" in served("client1")
    writer = local_core(repo, server__plugins=PLUGINS)  # another process replaces the file
    receive(writer, "client1", json.dumps({"platform": "alpine", "padding": "x" * 10}))
    assert ">alpine\n<" in served("client1")  # no expiry reached this one: the file tells

"""The Probes plugin: scripts per client, probe output, dynamic groups, storage."""

from __future__ import annotations

import threading
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo

from bcfg2.errors import PluginExecutionError

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes"
STORAGES = ("sqlite", "xml")


def probe_data(**outputs: str) -> list[lxml.etree._Element]:
    """``<probe-data>`` elements as RecvProbeData hands them to the plugin."""
    items = []
    for name, text in outputs.items():
        item = lxml.etree.Element("probe-data", name=name, source="Probes")
        item.text = text
        items.append(item)
    return items


def make(local_core, repo: Repo, storage: str = "sqlite", **overrides):
    core = local_core(repo, server__plugins=PLUGINS, probes__storage=storage, **overrides)
    return core, core.plugins["Probes"]


def probes_for(core, client: str) -> dict[str, lxml.etree._Element]:
    return {p.get("name"): p for p in core.plugins["Probes"].GetProbes(
        core.build_metadata(client))}


def test_most_specific_probe_and_interpreter_from_shebang(local_core, repo: Repo) -> None:
    repo.write("Probes/os", "uname -s\n")
    repo.write("Probes/os.G50_linux", "#!/usr/bin/env python3\nprint('linux')\n")
    repo.write("Probes/os.H_client2", "#!/bin/bash\necho two\n")
    repo.write("Probes/arch.G10_other", "uname -m\n")
    core, _ = make(local_core, repo)
    client1 = probes_for(core, "client1")  # profile basic -> group linux
    assert sorted(client1) == ["os"]
    assert client1["os"].get("interpreter") == "/usr/bin/env python3"
    assert client1["os"].get("source") == "Probes"
    assert client1["os"].text == "#!/usr/bin/env python3\nprint('linux')\n"
    client2 = probes_for(core, "client2")
    assert sorted(client2) == ["arch", "os"]
    assert client2["os"].text == "#!/bin/bash\necho two\n"
    assert client2["arch"].get("interpreter") == "/bin/sh"


def test_probe_edits_take_effect_live(local_core, repo: Repo) -> None:
    repo.write("Probes/os", "uname -s\n")
    core, _ = make(local_core, repo, server__filemonitor="inotify")
    assert probes_for(core, "client1")["os"].text == "uname -s\n"
    (repo.path / "Probes/os").write_text("#!/bin/dash\nuname -a\n")
    repo.write("Probes/new", "true\n")
    core.refresh()
    probes = probes_for(core, "client1")
    assert probes["os"].get("interpreter") == "/bin/dash"
    assert "new" in probes
    (repo.path / "Probes/new").unlink()
    core.refresh()
    assert "new" not in probes_for(core, "client1")


@pytest.mark.parametrize("storage", STORAGES)
def test_group_lines_become_groups_and_are_removed_from_the_value(local_core, repo: Repo,
                                                                   storage: str) -> None:
    core, plugin = make(local_core, repo, storage)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        os="group:debian\n  group: amd64  \nDebian 12\n", empty=""))
    meta = core.build_metadata("client1")
    assert {"debian", "amd64"} <= meta.groups
    assert meta.Probes["os"] == "Debian 12\n"
    assert meta.Probes["empty"] == ""
    assert "debian" not in core.build_metadata("client2").groups


def test_allowed_groups_filters_dynamic_groups(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo,
                        probes__allowed_groups="debian-(wheezy|sid) i386")
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        os="group:debian-wheezy\ngroup:amd64\ngroup:debian-wheezyx\ngroup:i386\n"))
    groups = core.build_metadata("client1").groups
    assert {"debian-wheezy", "i386"} <= groups
    assert not {"amd64", "debian-wheezyx"} & groups


def test_new_groups_expire_the_cached_metadata_of_that_client_only(local_core,
                                                                   repo: Repo) -> None:
    core, plugin = make(local_core, repo, caching__client_metadata="aggressive")
    first = core.build_metadata("client1")
    core.build_metadata("client2")
    plugin.ReceiveData(first, probe_data(os="group:dyn\n"))
    assert "dyn" in core.build_metadata("client1").groups
    assert "client2" in core.metadata_cache


def test_json_yaml_and_xml_output_is_available_parsed(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        js='{"disks": [1, 2]}\n', xml="<disks><disk name='sda'/></disks>\n",
        text="just words: here\n"))
    probes = core.build_metadata("client1").Probes
    assert probes["js"].json == {"disks": [1, 2]}
    assert probes["xml"].xml.find("disk").get("name") == "sda"
    assert probes["xml"].json is None
    assert probes["text"].json is None and probes["text"].xml is None
    assert probes["text"].yaml == {"just words": "here"}


def test_entities_in_probe_output_are_never_expanded(local_core, repo: Repo,
                                                     tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET")
    core, plugin = make(local_core, repo)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        x=f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{secret}">]><r>&e;</r>'))
    value = core.build_metadata("client1").Probes["x"]
    assert value.xml is None
    assert "TOPSECRET" not in value


def test_hostile_names_and_oversized_uploads_are_refused(local_core, repo: Repo,
                                                         caplog) -> None:
    core, plugin = make(local_core, repo, probes__max_data_size="1000")
    meta = core.build_metadata("client1")
    items = probe_data(ok="group:../../etc\ngroup:a;rm -rf /\ngroup:$(id)\ngroup:good\n")
    bad = lxml.etree.Element("probe-data", name="../evil", source="Probes")
    bad.text = "x"
    plugin.ReceiveData(meta, [*items, bad])
    meta = core.build_metadata("client1")
    assert set(meta.Probes) == {"ok"}
    assert "good" in meta.groups
    assert not {"../../etc", "a;rm -rf /", "$(id)"} & meta.groups
    assert "unsafe group name" in caplog.text and "unsafe probe name" in caplog.text
    with pytest.raises(PluginExecutionError):
        plugin.ReceiveData(meta, probe_data(big="x" * 2000))
    assert core.build_metadata("client1").Probes == {"ok": ""}  # the old data stays
    assert "max_data_size" in caplog.text


@pytest.mark.parametrize("storage", STORAGES)
def test_data_survives_a_new_core_on_the_same_state(local_core, repo: Repo,
                                                    storage: str) -> None:
    core, plugin = make(local_core, repo, storage)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(os="group:dyn\nDebian\n"))
    core.shutdown()
    again, _ = make(local_core, repo, storage)
    meta = again.build_metadata("client1")
    assert "dyn" in meta.groups
    assert meta.Probes["os"] == "Debian\n"
    if storage == "xml":
        stored = lxml.etree.parse(str(repo.path / "Probes/probed.xml")).getroot()
        client = stored.find("Client[@name='client1']")
        assert client.find("Probe[@name='os']").get("value") == "Debian\n"
        assert client.find("Group").get("name") == "dyn"
    else:
        assert (repo.path.parent / "state/Probes/probes.sqlite").is_file()


def test_a_new_upload_replaces_the_previous_one(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(a="group:g1\n", b="1"))
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(a="group:g2\n"))
    meta = core.build_metadata("client1")
    assert "g2" in meta.groups and "g1" not in meta.groups
    assert set(meta.Probes) == {"a"}


@pytest.mark.parametrize("storage", STORAGES)
def test_concurrent_uploads_from_50_threads_are_all_stored_unmixed(local_core, repo: Repo,
                                                                   storage: str) -> None:
    clients = "".join(f'<Client name="host{n}" profile="basic"/>' for n in range(50))
    repo.write("Metadata/clients.xml", f'<Clients version="3.0">{clients}</Clients>')
    core, plugin = make(local_core, repo, storage)
    metas = [core.build_metadata(f"host{n}") for n in range(50)]
    barrier = threading.Barrier(50)
    errors: list[BaseException] = []

    def upload(n: int) -> None:
        try:
            barrier.wait()
            plugin.ReceiveData(metas[n], probe_data(
                who=f"group:g{n}\nhost{n}\n", size=str(n) * n))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    core.shutdown()
    again, _ = make(local_core, repo, storage)
    for n in range(50):
        meta = again.build_metadata(f"host{n}")
        assert meta.Probes["who"] == f"host{n}\n"
        assert meta.Probes["size"] == str(n) * n
        assert {g for g in meta.groups if g.startswith("g")} == {f"g{n}"}

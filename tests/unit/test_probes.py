"""The Probes plugin: scripts per client, probe output, dynamic groups, storage."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo

from bcfg2.errors import CoreInitError, UntrustedInputError
from bcfg2.plugins.probes import GROUP_LINE, MAX_NAME, safe_name

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


def make(local_core, repo: Repo, storage: str = "sqlite", offer: tuple[str, ...] = (),
         **overrides):
    """A core with Probes; ``offer`` names probes (``true``) to write into Probes/ first.

    ``storage`` "postgresql" is the database storage on PostgreSQL: the
    ``[database]`` options must be among the overrides (``pg_overrides``).
    """
    for name in offer:
        repo.write(f"Probes/{name}", "true\n")
    if storage == "postgresql":
        assert overrides.get("database__engine") == "postgresql"
        storage = "sqlite"
    core = local_core(repo, server__plugins=PLUGINS, probes__storage=storage, **overrides)
    return core, core.plugins["Probes"]


def pg_overrides(request: pytest.FixtureRequest, storage: str) -> dict[str, str]:
    """The ``[database]`` options of the test's PostgreSQL database, for that storage."""
    return request.getfixturevalue("pg_database").overrides if storage == "postgresql" else {}


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
    core, plugin = make(local_core, repo, storage, offer=("os", "empty"),
                        probes__allowed_groups="debian amd64")
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        os="group:debian\n  group: amd64  \nDebian 12\n", empty=""))
    meta = core.build_metadata("client1")
    assert {"debian", "amd64"} <= meta.groups
    assert meta.Probes["os"] == "Debian 12\n"
    assert meta.Probes["empty"] == ""
    assert "debian" not in core.build_metadata("client2").groups


def test_allowed_groups_filters_dynamic_groups(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo, offer=("os",),
                        probes__allowed_groups="debian-(wheezy|sid) i386")
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        os="group:debian-wheezy\ngroup:amd64\ngroup:debian-wheezyx\ngroup:i386\n"))
    groups = core.build_metadata("client1").groups
    assert {"debian-wheezy", "i386"} <= groups
    assert not {"amd64", "debian-wheezyx"} & groups


def test_new_groups_expire_the_cached_metadata_of_that_client_only(local_core,
                                                                   repo: Repo) -> None:
    core, plugin = make(local_core, repo, offer=("os",), probes__allowed_groups="dyn",
                        caching__client_metadata="aggressive")
    first = core.build_metadata("client1")
    core.build_metadata("client2")
    plugin.ReceiveData(first, probe_data(os="group:dyn\n"))
    assert "dyn" in core.build_metadata("client1").groups
    assert "client2" in core.metadata_cache


def test_json_yaml_and_xml_output_is_available_parsed(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo, offer=("js", "xml", "text"))
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
    core, plugin = make(local_core, repo, offer=("x",))
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        x=f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{secret}">]><r>&e;</r>'))
    value = core.build_metadata("client1").Probes["x"]
    assert value.xml is None
    assert "TOPSECRET" not in value


def test_hostile_names_and_oversized_uploads_are_refused(local_core, repo: Repo,
                                                         caplog) -> None:
    core, plugin = make(local_core, repo, offer=("ok", "big"), probes__max_data_size="1000",
                        probes__allowed_groups=".*")
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
    with pytest.raises(UntrustedInputError):
        plugin.ReceiveData(meta, probe_data(big="x" * 2000))
    assert core.build_metadata("client1").Probes == {"ok": ""}  # the old data stays
    assert "max_data_size" in caplog.text


@pytest.mark.parametrize("storage", (*STORAGES, "postgresql"))
def test_data_survives_a_new_core_on_the_same_state(local_core, repo: Repo, storage: str,
                                                    request) -> None:
    db = pg_overrides(request, storage)
    core, plugin = make(local_core, repo, storage, offer=("os",), probes__allowed_groups="dyn",
                        **db)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(os="group:dyn\nDebian\n"))
    core.shutdown()
    again, _ = make(local_core, repo, storage, probes__allowed_groups="dyn", **db)
    meta = again.build_metadata("client1")
    assert "dyn" in meta.groups
    assert meta.Probes["os"] == "Debian\n"
    if storage == "xml":
        stored = lxml.etree.parse(str(repo.path / "Probes/probed.xml")).getroot()
        client = stored.find("Client[@name='client1']")
        assert client.find("Probe[@name='os']").get("value") == "Debian\n"
        assert client.find("Group").get("name") == "dyn"
    elif storage == "sqlite":
        assert (repo.path.parent / "state/Probes/probes.sqlite").is_file()
    else:
        assert not (repo.path.parent / "state/Probes").exists()
        assert request.getfixturevalue("pg_database").query(
            "SELECT client, name, value FROM probes") == [("client1", "os", "Debian\n")]


def test_a_new_upload_replaces_the_previous_one(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo, offer=("a", "b"), probes__allowed_groups="g[0-9]")
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(a="group:g1\n", b="1"))
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(a="group:g2\n"))
    meta = core.build_metadata("client1")
    assert "g2" in meta.groups and "g1" not in meta.groups
    assert set(meta.Probes) == {"a"}


@pytest.mark.parametrize("storage", (*STORAGES, "postgresql"))
def test_concurrent_uploads_from_50_threads_are_all_stored_unmixed(local_core, repo: Repo,
                                                                   storage: str,
                                                                   request) -> None:
    db = pg_overrides(request, storage)
    clients = "".join(f'<Client name="host{n}" profile="basic"/>' for n in range(50))
    repo.write("Metadata/clients.xml", f'<Clients version="3.0">{clients}</Clients>')
    core, plugin = make(local_core, repo, storage, offer=("who", "size"),
                        probes__allowed_groups="g[0-9]+", **db)
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
    again, _ = make(local_core, repo, storage, probes__allowed_groups="g[0-9]+", **db)
    for n in range(50):
        meta = again.build_metadata(f"host{n}")
        assert meta.Probes["who"] == f"host{n}\n"
        assert meta.Probes["size"] == str(n) * n
        assert {g for g in meta.groups if g.startswith("g")} == {f"g{n}"}


# -- bounds on what a client sends ----------------------------------------------


@pytest.mark.parametrize("name", ["os\n", "os\r", "x" * (MAX_NAME + 1), "a..b", "a/b",
                                  "a b", "<x>", ""])
def test_probe_and_group_names_must_be_whole_and_short(name: str) -> None:
    assert not safe_name(name)
    assert safe_name("x" * MAX_NAME) and safe_name("debian-12:amd64@site+1")


def test_a_group_line_is_one_whole_line() -> None:
    assert GROUP_LINE.fullmatch("  group: web \n").group(1) == "web"
    assert GROUP_LINE.fullmatch("group:web\r\n").group(1) == "web"
    assert GROUP_LINE.fullmatch("say group:web\n") is None


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.endswith("Probes")
            and r.levelname == "WARNING"]


def test_by_default_probes_assign_no_groups(local_core, repo: Repo, caplog) -> None:
    core, plugin = make(local_core, repo, offer=("os",))
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        os="group:admins\ngroup:other\nDebian\n"))
    meta = core.build_metadata("client1")
    assert meta.groups == {"basic", "linux"}
    assert meta.Probes["os"] == "Debian\n"
    [warning] = warnings_of(caplog)
    assert "2 group(s) not in [probes] allowed_groups" in warning and "'admins'" in warning


@pytest.mark.parametrize("pattern", [".*", ".+", r"\S+", "x admins|.*"])
def test_a_pattern_admitting_any_group_is_accepted_with_a_warning(local_core, repo: Repo,
                                                                 caplog, pattern: str) -> None:
    core, plugin = make(local_core, repo, offer=("os",), probes__allowed_groups=pattern)
    assert any("admits any group" in w for w in warnings_of(caplog))
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(os="group:admins\n"))
    assert "admins" in core.build_metadata("client1").groups


def test_a_specific_pattern_gives_no_start_up_warning(local_core, repo: Repo, caplog) -> None:
    make(local_core, repo, probes__allowed_groups="debian-.* i386 [a-z]+")
    assert warnings_of(caplog) == []


def test_data_only_for_probes_offered_to_the_client(local_core, repo: Repo, caplog) -> None:
    repo.write("Probes/os", "uname -s\n")
    repo.write("Probes/only2.H_client2", "true\n")
    core, plugin = make(local_core, repo)
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        os="Debian\n", only2="x", **{f"extra{n}": "y" for n in range(500)}))
    assert core.build_metadata("client1").Probes == {"os": "Debian\n"}
    [warning] = warnings_of(caplog)
    assert "501 probe(s) not offered to this client ignored (the first: 'only2')" in warning


def test_probe_names_over_the_length_or_with_a_line_end_are_refused(local_core, repo: Repo,
                                                                    caplog) -> None:
    core, plugin = make(local_core, repo, offer=("x" * MAX_NAME, "os"))
    items = probe_data(**{"x" * MAX_NAME: "kept", "os": "Debian"})
    for name in ("x" * (MAX_NAME + 1), "os\n", "y" * 100_000 + "\n"):
        item = lxml.etree.Element("probe-data", name=name, source="Probes")
        item.text = "refused"
        items.append(item)
    plugin.ReceiveData(core.build_metadata("client1"), items)
    assert core.build_metadata("client1").Probes == {"x" * MAX_NAME: "kept", "os": "Debian"}
    [warning] = warnings_of(caplog)
    assert "3 unsafe probe name(s) refused" in warning
    assert "\n" not in warning and len(warning) < 300  # one bounded line


def test_one_probe_over_max_probe_size_is_dropped_with_its_groups(local_core, repo: Repo,
                                                                  caplog) -> None:
    core, plugin = make(local_core, repo, offer=("big", "small"), probes__max_probe_size="100",
                        probes__allowed_groups="g[0-9]")
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        big="group:g1\n" + "x" * 100, small="group:g2\n" + "y" * 90))
    meta = core.build_metadata("client1")
    assert meta.Probes == {"small": "y" * 90}
    assert "g2" in meta.groups and "g1" not in meta.groups
    assert "1 probe output(s) over [probes] max_probe_size (100 bytes) dropped" in \
        " ".join(warnings_of(caplog))


def test_70000_group_lines_are_capped_with_one_warning(local_core, repo: Repo, caplog) -> None:
    core, plugin = make(local_core, repo, offer=("many",), probes__allowed_groups="g[0-9]+",
                        probes__max_probe_size=str(1024 * 1024))
    plugin.ReceiveData(core.build_metadata("client1"), probe_data(
        many="".join(f"group:g{n}\n" for n in range(70_000))))
    groups = core.build_metadata("client1").groups
    assert groups - {"basic", "linux"} == {f"g{n}" for n in range(100)}  # the first 100 sent
    [warning] = warnings_of(caplog)
    assert "69900 group(s) over [probes] max_groups (100) dropped (the first: 'g100')" in warning


def test_groups_stored_before_the_cap_are_capped_when_read(local_core, repo: Repo) -> None:
    core, plugin = make(local_core, repo, probes__max_groups="10")
    plugin.store.save("client1", {}, [f"g{n:03d}" for n in range(500)])
    assert len(core.build_metadata("client1").groups - {"basic", "linux"}) == 10


@pytest.mark.parametrize("option", ["max_groups", "max_probe_size", "max_data_size"])
def test_negative_bounds_stop_start_up(local_core, repo: Repo, option: str) -> None:
    with pytest.raises(CoreInitError, match=option):
        make(local_core, repo, **{f"probes__{option}": "-1"})


def test_probe_groups_are_marked_as_client_supplied(local_core, repo: Repo) -> None:
    _, plugin = make(local_core, repo)
    assert plugin.client_supplied is True


def test_a_probe_database_of_the_layout_before_schema_versions_is_kept(local_core,
                                                                       repo: Repo) -> None:
    path = repo.path.parent / "state" / "Probes" / "probes.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS probes (client TEXT NOT NULL, name TEXT NOT NULL, "
            "value TEXT NOT NULL, PRIMARY KEY (client, name));"
            "CREATE TABLE IF NOT EXISTS groups (client TEXT NOT NULL, name TEXT NOT NULL, "
            "PRIMARY KEY (client, name));"
            "INSERT INTO probes VALUES ('client1', 'os', 'Debian');"
            "INSERT INTO groups VALUES ('client1', 'dyn');")
    core, _ = make(local_core, repo, offer=("os",), probes__allowed_groups="dyn")
    meta = core.build_metadata("client1")
    assert "dyn" in meta.groups and meta.Probes["os"] == "Debian"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM schema_versions").fetchall() == [("probes", 1)]

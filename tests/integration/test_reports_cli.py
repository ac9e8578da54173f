"""Client runs through a real server into the run database, read back with bcfg2-admin.

Simulated agents do what a Bcfg2 1.4 agent does (DeclareVersion, GetProbes,
GetConfig, RecvStats over TLS); some report dirty runs. ``bcfg2-admin
reports``, ``minestruct`` and ``pull`` then answer from what was stored.
"""

from __future__ import annotations

import base64
import difflib
import json
import subprocess
import sys
import threading
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo, genrepo

import bcfg2.admin
from bcfg2.errors import StorageError
from bcfg2.reportdb import RunStore

ENTRY_TAGS = {"Path", "Package", "Service", "Action", "User", "Group", "POSIXUser",
              "POSIXGroup"}
#: what "the host" has instead of the served /etc/motd on a dirty client
HOST_MOTD = "Welcome, stranger.\nUnauthorised access is fine.\n"


def statistics(config: lxml.etree._Element, bad: dict[tuple[str, str], dict[str, str]],
               extra: list[tuple[str, dict[str, str]]] = ()) -> str:
    """The <upload-statistics> an agent sends after applying ``config``."""
    upload = lxml.etree.Element("upload-statistics")
    stats = lxml.etree.SubElement(upload, "Statistics", version="2.0",
                                  revision=config.get("revision", "-1"))
    flags = lxml.etree.SubElement(stats, "Flags")
    lxml.etree.SubElement(flags, "Flag", name="dry_run", value="False")
    sections = {name: lxml.etree.SubElement(stats, name)
                for name in ("Modified", "Extra", "Good", "Bad")}
    total = 0
    for bundle in config.iter("Bundle", "Independent"):
        for entry in bundle:
            if entry.tag not in ENTRY_TAGS:
                continue
            total += 1
            copy = lxml.etree.Element(entry.tag, dict(entry.attrib), qtext="")
            key = (entry.tag, entry.get("name"))
            if key in bad:
                copy.attrib.update(bad[key])
                sections["Bad"].append(copy)
            else:
                sections["Good"].append(copy)
    for tag, attrs in extra:
        lxml.etree.SubElement(sections["Extra"], tag, attrs)
    stats.set("total", str(total))
    stats.set("good", str(len(sections["Good"])))
    stats.set("state", "dirty" if len(sections["Bad"]) else "clean")
    lxml.etree.SubElement(stats, "OpStamps", start="1.0", finished="2.0")
    return lxml.etree.tostring(upload, encoding="unicode")


def agent_run(server, user: str, password: str, bad=None, extra=()) -> lxml.etree._Element:
    """One agent run; the configuration it got."""
    agent = server.proxy(user, password)
    assert agent.DeclareVersion("1.4.0") is True
    agent.GetProbes()
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    assert agent.RecvStats(statistics(config, bad or {}, list(extra))) is True
    return config


def admin(capsys, repo: Path, state: Path, *args: str) -> tuple[int, str, str]:
    status = bcfg2.admin.main(["-C", "/dev/null", "-Q", str(repo), "--state-dir", str(state),
                               *args])
    out, err = capsys.readouterr()
    return status, out, err


def motd_diff(served: str) -> str:
    """What an agent reports for a text file that differs: an ndiff, base64."""
    delta = difflib.ndiff(HOST_MOTD.split("\n"), served.split("\n"))
    return base64.b64encode("\n".join(delta).encode()).decode()


@pytest.fixture
def example_runs(example_repo: Repo, network_server, tmp_path: Path):
    """repo-example served by the builtin core; web2 and db1 report dirty runs."""
    server = network_server(example_repo)

    def uuid(short: str) -> tuple[str, str]:
        return f"5c3f7a62-9d0e-4c1b-8f53-{short}", f"{short}-secret"

    agent_run(server, *uuid("web1"))
    config = agent_run(server, *uuid("web2"))  # first a clean run, then a dirty one
    motd = next(e for e in config.iter("Path") if e.get("name") == "/etc/motd")
    agent_run(server, *uuid("web2"), bad={
        ("Path", "/etc/motd"): {"current_mode": "0600", "current_bdiff": motd_diff(motd.text)},
        ("Service", "ssh"): {"current_status": "off"}})
    agent_run(server, *uuid("db1"), bad={("Package", "chrony"): {"current_version": "3.5"}},
              extra=[("Package", {"name": "telnetd", "type": "deb", "current_version": "1"}),
                     ("Service", {"name": "cups", "type": "systemd", "status": "on"}),
                     ("Path", {"name": "/etc/cron.d/legacy", "type": "file",
                               "current_owner": "root"})])
    # desk1 never runs
    return example_repo.path, tmp_path / "state", motd.text


def test_reports_lists_every_client_with_its_last_run_and_state(example_runs, capsys) -> None:
    repo, state, _ = example_runs
    status, out, _ = admin(capsys, repo, state, "reports")
    assert status == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert rows["web1.example.com"][3] == "clean"
    assert rows["web2.example.com"][3] == "dirty"  # the latest of its two runs
    assert rows["db1.example.com"][3:5] == ["dirty", rows["db1.example.com"][4]]
    assert rows["desk1.example.com"][1] == "never"
    assert out.splitlines()[-1] == "4 clients: 1 clean, 2 dirty, 1 never reported"


def test_dirty_report_names_exactly_the_dirty_clients_and_their_bad_entries(
        example_runs, capsys) -> None:
    repo, state, _ = example_runs
    status, out, _ = admin(capsys, repo, state, "reports", "--dirty", "--json")
    assert status == 0
    dirty = {run["client"]: run for run in json.loads(out)}
    assert set(dirty) == {"web2.example.com", "db1.example.com"}
    bad = {c: {(e["tag"], e["name"]): e["reason"] for e in run["entries"]
               if e["kind"] == "bad"} for c, run in dirty.items()}
    assert bad["web2.example.com"] == {
        ("Path", "/etc/motd"): "mode is '0600', should be '644'; content differs",
        ("Service", "ssh"): "status is 'off', should be 'on'"}
    assert bad["db1.example.com"] == {
        ("Package", "chrony"): "version is '3.5', should be 'auto'"}
    assert dirty["db1.example.com"]["extra"] == 3
    # the plain text report says the same, one entry per line under its client
    status, out, _ = admin(capsys, repo, state, "reports", "--dirty")
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == \
        ["db1.example.com", "web2.example.com"]
    assert "  bad       Path:/etc/motd: mode is '0600', should be '644'; content differs" \
        in lines
    assert "  extra     Package:telnetd: on the host but not in its configuration" in lines


def test_stale_report_finds_clients_that_have_not_checked_in(example_runs, capsys) -> None:
    repo, state, _ = example_runs
    store = RunStore(str(state / "Reporting" / "reporting.sqlite"))
    stats = lxml.etree.fromstring(statistics(lxml.etree.Element("Configuration"), {}).encode())
    store.record("gone.example.com", stats, timestamp=1_000_000.0)  # 1970: long ago
    store.close()
    status, out, _ = admin(capsys, repo, state, "reports", "--stale", "24")
    assert status == 0
    names = {line.split()[0]: line for line in out.splitlines()}
    assert set(names) == {"desk1.example.com", "gone.example.com"}
    assert "never reported" in names["desk1.example.com"]
    assert "hours ago" in names["gone.example.com"]


def test_one_clients_history_and_its_latest_problems(example_runs, capsys) -> None:
    repo, state, _ = example_runs
    status, out, _ = admin(capsys, repo, state, "reports", "--client", "web2.example.com")
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[2] for line in lines[:2]] == ["dirty", "clean"]  # newest first
    assert "  bad       Service:ssh: status is 'off', should be 'on'" in lines
    status, _, err = admin(capsys, repo, state, "reports", "--client", "nobody.example.com")
    assert status == 1 and err.strip() == "bcfg2-admin: unknown client nobody.example.com"


def test_minestruct_turns_extra_entries_into_a_bundle(example_runs, capsys,
                                                      tmp_path: Path) -> None:
    repo, state, _ = example_runs
    out_file = tmp_path / "extra.xml"
    status, _, err = admin(capsys, repo, state, "minestruct", "db1.example.com", "-g",
                           "dbserver,legacy", "-f", str(out_file))
    assert status == 0, err
    bundle = lxml.etree.parse(str(out_file)).getroot()
    assert bundle.tag == "Bundle" and bundle.get("name") == "db1.example.com-extra"
    outer = bundle.find("Group")
    assert outer.get("name") == "dbserver" and outer.find("Group").get("name") == "legacy"
    entries = [(e.tag, dict(e.attrib)) for e in outer.find("Group")]
    assert entries == [("Package", {"name": "telnetd", "type": "deb"}),
                       ("Path", {"name": "/etc/cron.d/legacy", "type": "file"}),
                       ("Service", {"name": "cups", "type": "systemd"})]
    # an existing file is kept unless --force
    status, _, err = admin(capsys, repo, state, "minestruct", "db1.example.com", "-f",
                           str(out_file))
    assert status == 1 and "exists" in err
    status, _, err = admin(capsys, repo, state, "minestruct", "nobody.example.com")
    assert status == 1 and "no run recorded for nobody.example.com" in err


def test_pull_brings_the_clients_copy_into_cfg_and_the_server_serves_it(
        example_runs, capsys, local_core) -> None:
    repo, state, served = example_runs
    status, out, err = admin(capsys, repo, state, "pull", "web2.example.com", "Path",
                             "/etc/motd")
    assert status == 0, err
    written = repo / "Cfg/etc/motd/motd.H_web2.example.com"
    assert out.strip() == f"wrote {len(HOST_MOTD)} bytes to Cfg/etc/motd/motd.H_web2.example.com"
    assert written.read_text() == HOST_MOTD
    assert "mode '0600'" in err  # permissions are info.xml's business: said, not changed
    core = local_core(repo, server__state_dir=str(state))
    config = core.BuildConfiguration("web2.example.com")
    motd = next(e for e in config.iter("Path") if e.get("name") == "/etc/motd")
    assert motd.text == HOST_MOTD
    other = core.BuildConfiguration("web1.example.com")
    assert next(e for e in other.iter("Path") if e.get("name") == "/etc/motd").text == served


def test_pull_group_and_dry_run_and_its_errors(example_runs, capsys) -> None:
    repo, state, _ = example_runs
    status, out, err = admin(capsys, repo, state, "pull", "-n", "--group", "webserver",
                             "--priority", "30", "web2.example.com", "Path", "/etc/motd")
    assert status == 0 and out == HOST_MOTD
    assert "Cfg/etc/motd/motd.G30_webserver" in err
    assert not (repo / "Cfg/etc/motd/motd.G30_webserver").exists()
    cases = [
        (("web2.example.com", "Path", "/etc/ntp.conf"), "not among the bad or modified"),
        (("web2.example.com", "Service", "sshd"), "only Path entries"),
        (("web2.example.com", "Path", "../etc/motd"), "not a normalised absolute path"),
        (("web1.example.com", "Path", "/etc/motd"), "not among the bad"),
        (("nobody.example.com", "Path", "/etc/motd"), "no run recorded for nobody"),
    ]
    for args, message in cases:
        status, _, err = admin(capsys, repo, state, "pull", *args)
        assert status == 1 and message in err and len(err.splitlines()) == 1, (args, err)


def test_errors_without_a_repository_or_any_run(tmp_path: Path, capsys) -> None:
    status, _, err = admin(capsys, tmp_path / "missing", tmp_path / "state", "reports")
    assert status == 1 and "does not exist" in err and len(err.splitlines()) == 1
    status, _, err = admin(capsys, tmp_path / "missing", tmp_path / "state", "minestruct", "x")
    assert status == 1 and "no run recorded" in err


def test_many_agents_at_once_each_recorded_once(tmp_path: Path, network_server,
                                                capsys) -> None:
    """Thirty agents of a generated repository run concurrently; every third is dirty."""
    spec = genrepo.RepoSpec(clients=30, profiles=3, groups=3, bundles=3, entries=12)
    generated = genrepo.generate(str(tmp_path / "repo"), spec)
    server = network_server(generated.root, core="multiprocessing", server__children="2",
                            server__plugins="Metadata,Bundler,Cfg,Rules,Defaults,Reporting")
    failures: list[BaseException] = []

    def run_agent(index: int, client) -> None:
        try:
            config = agent_run(server, client.uuid, client.password)
            if index % 3 == 0:
                first = next(config.iter("Path"))
                agent_run(server, client.uuid, client.password,
                          bad={("Path", first.get("name")): {"current_owner": "nobody"}})
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            failures.append(err)

    threads = [threading.Thread(target=run_agent, args=(i, c))
               for i, c in enumerate(generated.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    status, out, _ = admin(capsys, Path(generated.root), tmp_path / "state", "reports",
                           "--dirty", "--json")
    assert status == 0
    dirty = {run["client"] for run in json.loads(out)}
    assert dirty == {c.name for i, c in enumerate(generated.clients) if i % 3 == 0}
    store = RunStore(str(tmp_path / "state" / "Reporting" / "reporting.sqlite"))
    assert store.count() == 30 + 10
    store.close()


def test_the_console_script_reports_too(example_runs) -> None:
    repo, state, _ = example_runs
    result = subprocess.run(
        [str(Path(sys.executable).parent / "bcfg2-admin"), "-C", "/dev/null", "-Q", str(repo),
         "--state-dir", str(state), "reports", "--dirty"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "web2.example.com: dirty" in result.stdout


def test_old_runs_are_pruned_at_the_first_run_and_on_demand(repo: Repo, local_core, capsys,
                                                      tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = RunStore(str(state / "Reporting" / "reporting.sqlite"))
    stats = lxml.etree.fromstring(statistics(lxml.etree.Element("Configuration"), {}).encode())
    for when in (1_000.0, 2_000.0, 3_000.0):  # 1970: far older than any keep_days
        store.record("client1", stats, timestamp=when)
    store.record("client2", stats, timestamp=1_000.0)
    store.record("client2", stats)  # now
    assert store.count() == 5
    core = local_core(repo.path, server__state_dir=str(state), reporting__keep_days="30")
    assert store.count() == 5  # loading the plugin touches nothing
    core.process_statistics("client1", stats)
    # the old runs go; each client's latest stays, however old
    assert {r.client for r in store.latest_runs()} == {"client1", "client2"}
    assert store.count() == 2
    store.record("client3", stats, timestamp=3_000.0)
    store.record("client3", stats, timestamp=3_500.0)
    status, out, _ = admin(capsys, repo.path, state, "reports", "--prune", "--days", "30")
    assert status == 0 and out.strip() == "pruned 1 runs older than 30 days; 3 left"
    assert store.latest("client3").timestamp == 3_500.0
    store.close()


def test_a_run_database_that_cannot_be_opened_is_logged_and_fails_only_the_upload(
        repo: Repo, local_core, caplog, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "Reporting").write_text("a file where the database directory should be")
    core = local_core(repo.path, server__state_dir=str(state))
    stats = lxml.etree.fromstring(statistics(lxml.etree.Element("Configuration"), {}).encode())
    with pytest.raises(StorageError):  # the agent is told its run was not stored
        core.process_statistics("client1", stats)
    assert "cannot open the run database" in caplog.text
    assert core.BuildConfiguration("client1").tag == "Configuration"

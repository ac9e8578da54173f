"""Run provenance: each stored run says which server stored it and the revision it served.

Two builtin servers on one PostgreSQL database serve two Git checkouts of one
repository at different commits; an agent runs once through each, and
``bcfg2-admin reports`` tells the runs apart by server and revision.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from conftest import PLUGINS, Repo, make_setup
from test_reports_cli import agent_run, statistics

import bcfg2.admin
from bcfg2.options import server_name
from bcfg2.reportdb import MARKER, MAX_SERVER, RunStore

IDENTITY = ("-c", "user.name=Admin", "-c", "user.email=admin@example.com")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *IDENTITY, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def admin(capsys: Any, conf: Path, *args: str) -> tuple[int, str]:
    status = bcfg2.admin.main(["-C", str(conf), *args])
    return status, capsys.readouterr().out


def test_the_server_name_is_the_option_else_host_and_port(repo: Repo) -> None:
    assert server_name(make_setup(repo, server__name="east")) == "east"
    assert server_name(make_setup(repo)) == f"{socket.gethostname()}:6789"
    assert server_name(make_setup(repo, components__bcfg2="https://bcfg2.example.com:7000")) \
        == f"{socket.gethostname()}:7000"


def test_provenance_is_stored_bounded_and_read_back(tmp_path: Path, store_database) -> None:
    store = RunStore(str(tmp_path / "runs.sqlite"), database=store_database())
    stats = lxml.etree.fromstring(statistics(lxml.etree.Element("Configuration"), {}).encode())
    store.record("web1", stats, server="east:6789", served_revision="0123abc")
    store.record("web1", stats, server="x" * 1000, served_revision="")
    newest, oldest = store.runs("web1")
    assert (oldest.server, oldest.served_revision) == ("east:6789", "0123abc")
    assert newest.server == "x" * MAX_SERVER + MARKER and newest.served_revision == ""
    assert store.latest_runs()[0].server == newest.server
    store.close()


@needs_git
def test_reports_show_which_server_and_revision_served_each_run(
        repo: Repo, tmp_path: Path, network_server, pg_database: Any, capsys) -> None:
    git(repo.path, "init", "-q", "-b", "main")
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-qm", "first")
    first_revision = git(repo.path, "rev-parse", "HEAD")
    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(repo.path), str(second)], check=True)
    (second / "Cfg/etc/motd").mkdir(parents=True)
    (second / "Cfg/etc/motd/motd").write_text("second\n")
    git(second, "add", "-A")
    git(second, "commit", "-qm", "second")
    second_revision = git(second, "rev-parse", "HEAD")
    options = dict(server__plugins=PLUGINS + ",Git", **pg_database.overrides)
    east = network_server(repo, server__name="east", server__state_dir=str(tmp_path / "s1"),
                          **options)
    west = network_server(second, server__name="west", server__state_dir=str(tmp_path / "s2"),
                          **options)
    assert agent_run(east, "client1", "pw1").get("revision") == first_revision
    assert agent_run(west, "client1", "pw1").get("revision") == second_revision

    conf = tmp_path / "admin.conf"
    conf.write_text(f"[server]\nrepository = {repo.path}\nstate_dir = {tmp_path / 's3'}\n"
                    "[database]\n" + "".join(f"{key.removeprefix('database__')} = {value}\n"
                                             for key, value in pg_database.overrides.items()))
    status, out = admin(capsys, conf, "reports", "--client", "client1", "--json")
    assert status == 0
    assert [(run["server"], run["served_revision"]) for run in json.loads(out)] == [
        ("west", second_revision), ("east", first_revision)]  # newest first
    status, out = admin(capsys, conf, "reports", "--client", "client1")
    lines = out.splitlines()
    assert lines[0].endswith(f"served by west at revision {second_revision}")
    assert lines[1].endswith(f"served by east at revision {first_revision}")
    status, out = admin(capsys, conf, "reports")
    header, *rows = out.splitlines()
    assert header.split()[-4:] == ["Server", "Revision", "Over", "cap"]
    row = next(line.split() for line in rows if line.startswith("client1 "))
    assert row[-3:-1] == ["west", second_revision[:12]]

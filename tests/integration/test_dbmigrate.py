"""bcfg2-admin dbmigrate: pending migrations applied by hand, or found with --check."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import PLUGINS, Repo
from test_admin_cli import admin_run, one_error_line


def conf(tmp_path: Path, repo: Repo, database: dict[str, str] | None = None) -> list[str]:
    """bcfg2-admin's global options: a bcfg2.conf with ``database`` as its [database]."""
    path = tmp_path / "bcfg2.conf"
    lines = ["[server]", f"repository = {repo.path}", f"plugins = {PLUGINS}",
             f"state_dir = {tmp_path / 'state'}"]
    if database:
        lines.append("[database]")
        lines += [f"{key.removeprefix('database__')} = {value}"
                  for key, value in database.items()]
    path.write_text("\n".join(lines) + "\n")
    return ["-C", str(path)]


def test_sqlite_files_of_the_old_layout_are_stamped_and_missing_ones_left_alone(
        repo: Repo, tmp_path: Path, capsys) -> None:
    state = tmp_path / "state" / "Metadata" / "state.sqlite"
    state.parent.mkdir(parents=True)
    with sqlite3.connect(state) as conn:
        conn.execute("CREATE TABLE clients (name TEXT PRIMARY KEY, profile TEXT, "
                     "trusted_profile TEXT, repository_profile TEXT, version TEXT, auth TEXT, "
                     "registered REAL NOT NULL)")
    args = conf(tmp_path, repo)
    status, out, _ = admin_run(capsys, *args, "dbmigrate", "--check")
    assert status == 1
    assert "clients: version 0 of 2, 2 migration(s) pending" in out
    assert "reporting:" in out and "not created yet" in out
    assert "version" not in sqlite3.connect(state).execute(
        "SELECT group_concat(name) FROM sqlite_master").fetchone()[0]  # --check changed nothing
    status, out, _ = admin_run(capsys, *args, "dbmigrate")
    assert status == 0 and "clients: migrated from version 0 to 2" in out
    assert admin_run(capsys, *args, "dbmigrate", "--check")[0] == 0
    assert not (tmp_path / "state" / "Reporting").exists()


def test_postgresql_is_migrated_once_and_a_newer_schema_is_refused(
        repo: Repo, tmp_path: Path, capsys, pg_database) -> None:
    args = conf(tmp_path, repo, pg_database.overrides)
    status, out, _ = admin_run(capsys, *args, "dbmigrate", "--check")
    assert status == 1 and out.count("1 migration(s) pending") == 5
    assert "reporting: version 0 of 3, 3 migration(s) pending" in out
    assert "clients: version 0 of 2, 2 migration(s) pending" in out
    assert pg_database.cluster.password not in out
    status, out, _ = admin_run(capsys, *args, "dbmigrate")
    assert status == 0 and out.count("migrated from version 0 to 1") == 5
    assert "reporting: migrated from version 0 to 3" in out
    assert "clients: migrated from version 0 to 2" in out
    assert sorted(pg_database.query("SELECT store, version FROM schema_versions")) == [
        ("cache_events", 1), ("clients", 2), ("generated", 1), ("packages", 1),
        ("probes", 1), ("reporting", 3), ("web_audit", 1)]
    status, out, _ = admin_run(capsys, *args, "dbmigrate", "--check")
    assert status == 0 and out.count("up to date") == 7
    pg_database.query("UPDATE schema_versions SET version = 7 WHERE store = 'reporting'")
    status, _, err = admin_run(capsys, *args, "dbmigrate", "--check")
    assert status != 0
    assert "version 7" in one_error_line(err) and "newer server" in one_error_line(err)


@pytest.mark.parametrize("value", ["sqlite", "sqlite3"])
def test_upstreams_engine_names_are_the_embedded_default(repo: Repo, tmp_path: Path, capsys,
                                                         value: str) -> None:
    status, out, _ = admin_run(capsys, *conf(tmp_path, repo, {"engine": value}), "dbmigrate")
    assert status == 0 and out.count("not created yet") == 4

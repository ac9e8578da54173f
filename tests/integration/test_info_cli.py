"""bcfg2-info through its command line: buildall, buildallfile and the other new commands."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import lxml.etree
import pytest
from conftest import GEN_PLUGINS, ROOT, Repo, genrepo
from conftest import SMALL_SPEC as SMALL
from conftest import tool_argv as argv

from bcfg2.info import main

MISSING = "/etc/bench/missing.conf"


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def errors(err: str) -> list[str]:
    """The lines bcfg2-info itself wrote on stderr (not the core's log)."""
    return [line for line in err.splitlines() if line.startswith("bcfg2-info: ")]


def canonical(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return lxml.etree.tostring(lxml.etree.fromstring(raw), method="c14n")


def clients_of(repo: Repo) -> list[str]:
    return sorted(lxml.etree.parse(str(repo.path / "Metadata/clients.xml")).xpath(
        "//Client/@name"))


@pytest.fixture
def generated(tmp_path: Path) -> genrepo.Repository:
    return genrepo.generate(str(tmp_path / "gen"), SMALL)


def break_for_profile(repo: genrepo.Repository, profile: str) -> list[str]:
    """Make bundle bench-b0 name a file nobody has for one profile; the clients hit."""
    bundle = Path(repo.root) / "Bundler" / "bench-b0.xml"
    bundle.write_text(bundle.read_text().replace(
        "</Bundle>", f'<Group name="{profile}"><Path name="{MISSING}"/></Group></Bundle>'))
    return sorted(c.name for c in repo.clients if c.profile == profile)


# -- buildall ------------------------------------------------------------------------------


def test_buildall_writes_what_build_prints_for_every_client(example_repo, tmp_path, capsys):
    out_dir = tmp_path / "configs"
    status, out, err = run(capsys, argv(example_repo, tmp_path, "buildall", str(out_dir)))
    assert status == 0, err
    clients = clients_of(example_repo)
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{c}.xml" for c in clients]
    assert f"built {len(clients)} clients" in out and "0 failed" in out
    assert err == ""  # stderr is no terminal here: no progress bar
    for client in clients:
        status, built, _ = run(capsys, argv(example_repo, tmp_path, "build", client))
        assert status == 0
        assert canonical((out_dir / f"{client}.xml").read_bytes()) == canonical(built)


def test_buildall_of_a_group_builds_only_its_members(example_repo, tmp_path, capsys):
    out_dir = tmp_path / "configs"
    status, out, err = run(capsys, argv(example_repo, tmp_path, "buildall", str(out_dir),
                                        "webserver", "db1.example.com"))
    assert status == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "db1.example.com.xml", "web1.example.com.xml", "web2.example.com.xml"]


def test_buildall_serves_a_generated_repository(generated, tmp_path, capsys):
    out_dir = tmp_path / "configs"
    status, out, err = run(capsys, argv(generated.root, tmp_path, "buildall", str(out_dir),
                                        plugins=GEN_PLUGINS))
    assert status == 0, err
    for client in generated.clients:
        config = lxml.etree.parse(str(out_dir / f"{client.name}.xml")).getroot()
        paths = {e.get("name"): e.text for e in config.iter("Path")}
        expected = generated.entries_of(client)
        assert sorted(paths) == sorted(generated.entry_name(e) for e in expected)
        for entry in expected:
            served = Path(generated.served_file(entry, client)).read_text()
            assert paths[generated.entry_name(entry)] == served
        assert len(config.xpath("//Package")) == len(generated.packages_of(client))


def test_buildall_lists_failed_clients_one_line_each(generated, tmp_path, capsys):
    failing = break_for_profile(generated, "bench-p1")
    out_dir = tmp_path / "configs"
    status, out, err = run(capsys, argv(generated.root, tmp_path, "buildall", str(out_dir),
                                        plugins=GEN_PLUGINS))
    assert status == 1
    assert len(list(out_dir.iterdir())) == len(generated.clients)  # written all the same
    lines = errors(err)
    assert [line.split(": ")[1] for line in lines] == failing
    assert all(f"Path:{MISSING}" in line for line in lines)
    assert f"{len(failing)} failed" in out
    assert "Traceback" not in err


def test_buildall_draws_a_progress_bar_on_a_terminal(example_repo, tmp_path, capsys,
                                                     monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status = main(argv(example_repo, tmp_path, "buildall", str(tmp_path / "configs")))
    assert status == 0
    total = len(clients_of(example_repo))
    drawn = terminal.getvalue()
    assert drawn.startswith("\r[")
    assert drawn.rstrip("\n").endswith(f"] {total}/{total} clients")
    assert "=" * 30 in drawn


@pytest.mark.parametrize("words, message", [
    (["buildall"], "usage: buildall"),
    (["buildall", "{tmp}/x", "nosuch"], "nosuch"),
])
def test_buildall_errors(example_repo, tmp_path, capsys, words, message):
    words = [w.format(tmp=tmp_path) for w in words]
    status, out, err = run(capsys, argv(example_repo, tmp_path, *words))
    assert status == 1
    assert errors(err) == err.strip().splitlines()
    assert len(errors(err)) == 1 and message in err
    assert not (tmp_path / "x").exists()


# -- buildallfile ----------------------------------------------------------------------------


def test_buildallfile_matches_buildfile_for_every_client(example_repo, tmp_path, capsys):
    out_dir = tmp_path / "files"
    status, out, err = run(capsys, argv(example_repo, tmp_path, "buildallfile", str(out_dir),
                                        "/etc/motd"))
    assert status == 0, err
    for client in clients_of(example_repo):
        written = out_dir / client / "etc" / "motd"
        _, single, _ = run(capsys, argv(example_repo, tmp_path, "buildfile", "/etc/motd", client))
        assert canonical(written.read_bytes()) == canonical(single)


def test_buildallfile_altsrc_and_chosen_clients(example_repo, tmp_path, capsys):
    out_dir = tmp_path / "files"
    status, out, err = run(capsys, argv(example_repo, tmp_path, "buildallfile", str(out_dir),
                                        "/etc/issue", "--altsrc=/etc/motd", "web1.example.com"))
    assert status == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["web1.example.com"]
    entry = lxml.etree.parse(str(out_dir / "web1.example.com/etc/issue")).getroot()
    motd = (example_repo.path / "Cfg/etc/motd/motd.G10_web").read_text()
    assert entry.get("name") == "/etc/issue" and entry.text == motd


def test_buildallfile_reports_clients_it_cannot_bind_for(example_repo, tmp_path, capsys):
    status, out, err = run(capsys, argv(example_repo, tmp_path, "buildallfile",
                                        str(tmp_path / "files"), "/etc/nothing"))
    assert status == 1
    assert len(errors(err)) == len(clients_of(example_repo))
    assert all("Path:/etc/nothing" in line for line in errors(err))


# -- the other commands, one-shot ------------------------------------------------------------


def test_buildbundle_renders_without_binding(example_repo, tmp_path, capsys):
    status, out, err = run(capsys, argv(example_repo, tmp_path, "buildbundle", "sshd",
                                        "db1.example.com"))
    assert status == 0, err
    bundle = lxml.etree.fromstring(out.encode())
    assert bundle.xpath("//Path/@name") == ["/etc/ssh/sshd_config"]
    assert bundle.xpath("//Path/text()") == []  # not bound
    assert not bundle.xpath("//Group")  # conditionals applied


def test_automatch_and_config_and_expirecache(example_repo, tmp_path, capsys):
    status, out, err = run(capsys, argv(example_repo, tmp_path, "automatch", "-f", "ntp.xml",
                                        "web1.example.com"))
    assert status == 0, err
    assert lxml.etree.fromstring(out.encode()).xpath("Server/text()") == ["db1.example.com"]
    status, out, err = run(capsys, argv(example_repo, tmp_path, "-x", "s3cret", "config"))
    assert status == 0, err
    table = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()[2:]}
    assert table[("server", "repository")] == [str(example_repo.path)]
    assert table[("communication", "password")] == ["********"]
    assert "s3cret" not in out
    status, out, err = run(capsys, argv(example_repo, tmp_path, "expirecache",
                                        "web1.example.com"))
    assert status == 0 and "web1.example.com" in out


def test_debug_file_runs_in_the_core_namespace(example_repo, tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text("print('clients:', len(self.metadata.list_clients()))\n")
    status, out, err = run(capsys, argv(example_repo, tmp_path, "debug", "-f", str(script)))
    assert status == 0, err
    assert f"clients: {len(clients_of(example_repo))}" in out
    script.write_text("x = 1\nraise ValueError('boom')\n")
    status, out, err = run(capsys, argv(example_repo, tmp_path, "debug", "-f", str(script)))
    assert status == 1
    assert errors(err) == [f"bcfg2-info: {script}:2: ValueError: boom"]


def test_profile_option_times_start_up_and_command(example_repo, tmp_path, capsys):
    status, out, err = run(capsys, argv(example_repo, tmp_path, "--profile", "clients"))
    assert status == 0
    assert "web1.example.com" in out
    assert "core start-up" in err and "command" in err
    assert "function calls" in err and "cumulative" in err


def test_one_shot_mode_leaves_the_history_file_alone(example_repo, tmp_path, capsys):
    history = tmp_path / "history"
    assert run(capsys, argv(example_repo, tmp_path, "--history", str(history), "clients"))[0] == 0
    assert not history.exists()


def test_interactive_mode_saves_history_where_the_variable_says(example_repo, tmp_path,
                                                                capsys, monkeypatch):
    history = tmp_path / "hist"
    monkeypatch.setenv("BCFG2_INFO_HISTORY", str(history))
    monkeypatch.setattr(sys, "stdin", io.StringIO("clients\n"))
    assert main(argv(example_repo, tmp_path)) == 0
    assert history.exists()
    monkeypatch.setenv("BCFG2_INFO_HISTORY", str(tmp_path / "no" / "such" / "dir" / "hist"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("clients\n"))
    assert main(argv(example_repo, tmp_path)) == 0  # an unwritable history is no failure
    assert "Traceback" not in capsys.readouterr().err


# -- errors ---------------------------------------------------------------------------------


def test_malformed_bundle_is_named_in_one_line(example_repo, tmp_path, capsys):
    (example_repo.path / "Bundler/motd.xml").write_text('<Bundle><Path name="/etc/motd"\n')
    for words in (["build", "web1.example.com"], ["showentries", "web1.example.com"],
                  ["buildbundle", "motd", "web1.example.com"]):
        status, out, err = run(capsys, argv(example_repo, tmp_path, *words))
        assert status == 1, words
        assert len(errors(err)) == 1, err
        assert "motd.xml" in errors(err)[0]
        assert "Traceback" not in err


def test_malformed_groups_xml_is_an_error_for_clients(example_repo, tmp_path, capsys):
    (example_repo.path / "Metadata/groups.xml").write_text("<Groups><Group name=\n")
    status, out, err = run(capsys, argv(example_repo, tmp_path, "clients"))
    assert status == 1
    assert len(errors(err)) == 1 and "groups.xml" in errors(err)[0]
    status, out, err = run(capsys, argv(example_repo, tmp_path, "build", "web1.example.com"))
    assert status == 1
    assert len(errors(err)) == 1 and "groups.xml" in errors(err)[0]


@pytest.mark.parametrize("words, status, message", [
    (["showclient", "nosuch.example.com"], 1, "nosuch.example.com"),
    (["buildbundle", "nosuch", "web1.example.com"], 1, "unknown bundle"),
    (["buildbundle", "sshd", "nosuch.example.com"], 1, "unknown client"),
    (["frobnicate"], 1, "frobnicate"),
    (["automatch", "ntp.xml"], 1, "usage: automatch"),
    (["automatch", "ntp.xml", "web1.example.com"], 1, "automatch is off"),
    (["automatch", "nosuch.xml", "web1.example.com"], 1, "nosuch.xml"),
    (["expirecache", "nosuch.example.com"], 1, "nosuch.example.com"),
    (["debug", "-x"], 1, "usage: debug"),
    (["config", "nosuch"], 1, "nosuch"),
    (["profile", "profile", "clients"], 1, "itself"),
])
def test_command_errors_are_one_line(example_repo, tmp_path, capsys, words, status, message):
    got, out, err = run(capsys, argv(example_repo, tmp_path, *words))
    assert got == status
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bcfg2-info: ") and message in lines[0]


def test_missing_repository_and_bad_options(tmp_path, capsys):
    status, _, err = run(capsys, argv(tmp_path / "nowhere", tmp_path, "buildall", str(tmp_path)))
    assert status == 1
    assert err.startswith("bcfg2-info: ") and len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, ["--no-such-option", "clients"])
    assert status == 2


def test_console_script_buildall_and_debug(tmp_path):
    """The installed program: buildall into a directory, then a debug script."""
    out_dir = tmp_path / "configs"
    result = subprocess.run(
        [str(ROOT / ".venv/bin/bcfg2-info"), *argv(ROOT / "repo-example", tmp_path, "buildall",
                                                   str(out_dir))],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert len(list(out_dir.glob("*.xml"))) == len(clients_of(Repo(ROOT / "repo-example")))
    assert "\r" not in result.stderr
    script = tmp_path / "s.py"
    script.write_text("print(sorted(self.plugins)[0])\n")
    result = subprocess.run(
        [str(ROOT / ".venv/bin/bcfg2-info"), *argv(ROOT / "repo-example", tmp_path, "debug",
                                                   "-f", str(script))],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Bundler"

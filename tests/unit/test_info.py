"""bcfg2-info: the shell's commands, one-shot use through main(), the console script."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lxml.etree
import pytest
from conftest import PLUGINS, REPO_EXAMPLE, Repo

from bcfg2.info import InfoShell, main

Run = Callable[[str], tuple[int, str, str]]


def cfg_text(repo: Repo | Path, path: str, variant: str) -> str:
    """The content of one version of a Cfg file, read from the repository."""
    return (Path(str(repo)) / "Cfg" / path.lstrip("/") / variant).read_text()


def xml(repo: Repo | Path, relative: str) -> lxml.etree._Element:
    return lxml.etree.parse(str(Path(str(repo)) / relative)).getroot()


def rows(out: str) -> list[list[str]]:
    """The body rows of a table the shell printed, split on whitespace."""
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def fields(out: str) -> dict[str, str]:
    """``Label: value`` lines of showclient, as a dict."""
    result = {}
    for line in out.splitlines():
        label, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            result[label] = value.strip()
    return result


@pytest.fixture
def shell_for(local_core, capsys) -> Callable[[Repo], tuple[InfoShell, Run]]:
    """A shell over a repository and a runner: line -> (status, stdout, stderr)."""
    def factory(repository: Repo) -> tuple[InfoShell, Run]:
        shell = InfoShell(local_core(repository))
        capsys.readouterr()

        def run(line: str) -> tuple[int, str, str]:
            shell.stdout = sys.stdout  # capsys swaps sys.stdout between setup and test
            stop = shell.onecmd(line)
            assert stop is False, f"{line!r} left the shell"
            captured = capsys.readouterr()
            return shell.status, captured.out, captured.err
        return shell, run
    return factory


@pytest.fixture
def example(shell_for, example_repo) -> Run:
    return shell_for(example_repo)[1]


def assert_one_error(status: int, out: str, err: str, *words: str) -> None:
    """A failed command: status 1, exactly one line on stderr naming the problem."""
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


# -- build -------------------------------------------------------------------


def test_build_db1_gets_rhel_sshd_config_and_binds_everything(example, example_repo):
    status, out, err = example("build db1.example.com")
    assert status == 0, err
    config = lxml.etree.fromstring(out.encode())
    assert config.tag == "Configuration"
    sshd = config.xpath("//Path[@name='/etc/ssh/sshd_config']")
    assert len(sshd) == 1
    assert sshd[0].text == cfg_text(example_repo, "/etc/ssh/sshd_config", "sshd_config.G50_rhel")
    assert config.xpath("//Package[@name='openssh-server']/@type") == ["yum"]
    assert not config.xpath("//*[@failure]")
    linux = xml(example_repo, "Metadata/groups.xml").xpath("Group[@name='linux']/Bundle/@name")
    assert {s.get("name") for s in config} == set(linux)


def test_build_writes_the_configuration_to_a_file(example, example_repo, tmp_path):
    target = tmp_path / "web1.xml"
    status, out, err = example(f"build web1.example.com {target}")
    assert status == 0, err
    assert str(target) in out
    assert "<Configuration" not in out
    config = lxml.etree.parse(str(target)).getroot()
    sshd = config.xpath("//Path[@name='/etc/ssh/sshd_config']")[0]
    assert sshd.text == cfg_text(example_repo, "/etc/ssh/sshd_config", "sshd_config")


def test_build_into_a_missing_directory_is_an_error(example, tmp_path):
    assert_one_error(*example(f"build web1.example.com {tmp_path}/no/such/dir.xml"),
                     "cannot write")


def test_build_names_entries_that_fail_to_bind(shell_for, repo):
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/orphan"/>'
                                   '<Path name="/etc/hello"/></Bundle>')
    repo.write("Cfg/etc/hello/hello", "hello\n")
    status, out, err = shell_for(repo)[1]("build client1")
    assert_one_error(status, out, err, "Path:/etc/orphan")
    assert "/etc/hello" not in err
    config = lxml.etree.fromstring(out.encode())
    assert config.xpath("//Path[@name='/etc/hello']/text()") == ["hello\n"]
    assert config.xpath("//Path[@name='/etc/orphan']/@failure")


@pytest.mark.parametrize("line", ["build", "build a b c"])
def test_build_with_wrong_arguments_shows_usage(example, line):
    assert_one_error(*example(line), "usage: build <client>")


def test_unknown_client_is_an_error_and_is_not_registered(shell_for, example_repo, tmp_path):
    shell, run = shell_for(example_repo)
    before = shell.core.metadata.list_clients()
    assert_one_error(*run("build nosuch.example.com"), "unknown client", "nosuch.example.com")
    assert_one_error(*run("showclient nosuch.example.com"), "nosuch.example.com")
    assert shell.core.metadata.list_clients() == before
    assert not list((tmp_path / "state").rglob("clients.xml"))


# -- buildfile ---------------------------------------------------------------


@pytest.mark.parametrize("client, variant", [
    ("db1.example.com", "motd.H_db1.example.com"),
    ("web1.example.com", "motd.G10_web"),
    ("desk1.example.com", "motd"),
])
def test_buildfile_gives_each_client_its_version(example, example_repo, client, variant):
    status, out, err = example(f"buildfile /etc/motd {client}")
    assert status == 0, err
    entry = lxml.etree.fromstring(out.encode())
    assert (entry.tag, entry.get("name")) == ("Path", "/etc/motd")
    assert entry.text == cfg_text(example_repo, "/etc/motd", variant)


def test_buildfile_applies_info_xml_per_group(example, example_repo):
    keys = "/home/admin/.ssh/authorized_keys"
    info = xml(example_repo, f"Cfg{keys}/info.xml")
    rhel = info.xpath("Group[@name='rhel']/Info")[0]
    status, out, err = example(f"buildfile {keys} db1.example.com")
    assert status == 0, err
    entry = lxml.etree.fromstring(out.encode())
    assert entry.get("secontext") == rhel.get("secontext")
    assert entry.get("owner") == rhel.get("owner")
    entry = lxml.etree.fromstring(example(f"buildfile {keys} web1.example.com")[1].encode())
    assert entry.get("secontext") != rhel.get("secontext")


@pytest.mark.parametrize("option", ["--altsrc=/etc/motd", "--altsrc /etc/motd"])
def test_buildfile_altsrc_binds_another_entrys_content(example, example_repo, option):
    status, out, err = example(f"buildfile {option} /etc/issue web1.example.com")
    assert status == 0, err
    entry = lxml.etree.fromstring(out.encode())
    assert entry.get("name") == "/etc/issue"
    assert entry.text == cfg_text(example_repo, "/etc/motd", "motd.G10_web")


def test_buildfile_of_a_path_nobody_handles_is_an_error(example):
    assert_one_error(*example("buildfile /etc/nothing db1.example.com"), "/etc/nothing")


@pytest.mark.parametrize("line", [
    "buildfile /etc/motd",
    "buildfile /etc/motd db1.example.com extra",
    "buildfile --force /etc/motd db1.example.com",
    "buildfile --altsrc= /etc/motd db1.example.com",
])
def test_buildfile_with_bad_arguments_shows_usage(example, line):
    assert_one_error(*example(line), "usage: buildfile")


# -- metadata ----------------------------------------------------------------


def test_showclient_shows_profile_groups_and_bundles(example, example_repo):
    groups = xml(example_repo, "Metadata/groups.xml")
    status, out, err = example("showclient db1.example.com")
    assert status == 0, err
    shown = fields(out)
    assert shown["Hostname"] == "db1.example.com"
    assert shown["Profile"] == "dbserver"
    member = set(shown["Groups"].split(", "))
    assert {"dbserver", *groups.xpath("Group[@name='dbserver']/Group/@name")} <= member
    assert set(groups.xpath("Group[@name='db']/Group/@name")) <= member  # conditional
    assert "debian" not in member
    assert set(shown["Bundles"].split(", ")) == set(
        groups.xpath("Group[@name='linux']/Bundle/@name"))
    assert shown["Aliases"] == "db1-mgmt.example.com"
    assert shown["Categories"] == "os=rhel"
    clients = xml(example_repo, "Metadata/clients.xml")
    assert shown["UUID"] == clients.xpath("Client[@name='db1.example.com']/@uuid")[0]
    assert "db1-secret" not in out


def test_showclient_accepts_an_alias_and_several_clients(example):
    status, out, err = example("showclient db1-mgmt.example.com web2.example.com")
    assert status == 0, err
    hostnames = [line.split()[1] for line in out.splitlines() if line.startswith("Hostname:")]
    assert hostnames == ["db1.example.com", "web2.example.com"]
    assert "no-admin" in out.split("Hostname:")[2]


def test_showclient_shows_connector_data(shell_for, example_repo):
    shell, run = shell_for(example_repo)
    build_metadata = shell.core.build_metadata

    def with_probes(name: str):
        meta = build_metadata(name)
        shell.core.metadata.merge_additional_data(meta, "Probes", {"arch": "x86_64"})
        return meta

    shell.core.build_metadata = with_probes
    status, out, err = run("showclient web1.example.com")
    assert status == 0, err
    assert "Probes" in fields(out)["Connectors"].split(", ")
    assert "arch=x86_64" in out


def test_clients_lists_every_client_with_its_profile(example, example_repo):
    status, out, err = example("clients")
    assert status == 0, err
    expected = [[c.get("name"), c.get("profile")]
                for c in xml(example_repo, "Metadata/clients.xml").iter("Client")]
    assert rows(out) == sorted(expected)


def test_groups_shows_each_groups_flags(example, example_repo):
    status, out, err = example("groups")
    assert status == 0, err
    table = {row[0]: row[1:] for row in rows(out)}
    declared = xml(example_repo, "Metadata/groups.xml").xpath("//Group/@name")
    assert set(table) == set(declared)
    assert table["workstation"] == ["yes", "no", "yes"]
    assert table["webserver"] == ["yes", "yes", "no"]
    assert table["rhel"] == ["no", "no", "no", "os"]
    assert table["linux"] == ["no", "no", "no"]


def test_bundles_lists_every_bundle_file(example, example_repo):
    status, out, err = example("bundles")
    assert status == 0, err
    files = sorted((example_repo.path / "Bundler").glob("*.xml"))
    assert rows(out) == [[f.stem, "Bundler", f"Bundler/{f.name}"] for f in files]


# -- entries and mappings -----------------------------------------------------


def test_showentries_lists_a_clients_paths_and_who_binds_them(example):
    status, out, err = example("showentries web2.example.com Path")
    assert status == 0, err
    table = {row[1]: row for row in rows(out)}
    assert table["/etc/motd"] == ["Path", "/etc/motd", "motd", "Cfg"]
    assert table["/etc/ssh/sshd_config"][3] == "Cfg"
    assert not any(name.startswith("/home/admin") for name in table)  # web2 is no-admin
    assert {row[0] for row in table.values()} == {"Path"}


def test_showentries_without_type_shows_every_tag(example):
    status, out, err = example("showentries db1.example.com")
    assert status == 0, err
    table = {(row[0], row[1]): row[3] for row in rows(out)}
    assert table[("Package", "openssh-server")] == "Rules"
    assert table[("Service", "sshd")] == "Rules"
    assert ("Service", "ssh") not in table  # sshd.xml: ssh is for debian only
    assert table[("Path", "/home/admin/.ssh")] == "Rules"


def test_showentries_marks_entries_no_generator_handles(shell_for, repo):
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/orphan"/></Bundle>')
    run = shell_for(repo)[1]
    status, out, err = run("showentries client1")
    assert status == 0, err
    assert "/etc/orphan" in out and "none" in out
    status, out, err = run("showentries client1 Package")
    assert status == 0 and "no Package entries" in out


def test_mappings_lists_cfg_files_and_rules(example, example_repo):
    status, out, err = example("mappings")
    assert status == 0, err
    table = {(row[0], row[1]): row[2] for row in rows(out)}
    cfg = example_repo.path / "Cfg"
    files = {"/" + str(d.relative_to(cfg)) for d in cfg.rglob("*")
             if d.is_dir() and any(f.is_file() for f in d.iterdir())}
    assert {name for (tag, name), gen in table.items() if gen == "Cfg"} == files
    for package in xml(example_repo, "Rules/packages.xml").iter("Package"):
        assert table[("Package", package.get("name"))] == "Rules"


def test_mappings_filters_by_type_and_name(example):
    status, out, err = example("mappings Path /etc/motd")
    assert status == 0, err
    assert rows(out) == [["Path", "/etc/motd", "Cfg"]]
    status, out, err = example("mappings Service")
    assert status == 0, err
    assert {row[0] for row in rows(out)} == {"Service"}


def test_mappings_of_an_unhandled_entry_is_an_error(example):
    assert_one_error(*example("mappings Path /etc/nothing"), "Path:/etc/nothing")


# -- the shell itself ----------------------------------------------------------


def test_update_reads_repository_changes(example, example_repo):
    motd = example_repo.path / "Cfg/etc/motd/motd.G10_web"
    old = motd.read_text()
    motd.write_text("a different web motd, longer than the first one\n")
    assert lxml.etree.fromstring(example("buildfile /etc/motd web1.example.com")[1]).text == old
    status, out, err = example("update")
    assert status == 0 and "handled" in out
    entry = lxml.etree.fromstring(example("buildfile /etc/motd web1.example.com")[1])
    assert entry.text == motd.read_text()


def test_unknown_command_is_an_error_and_the_shell_goes_on(example):
    assert_one_error(*example("frobnicate web1"), "frobnicate")
    status, out, err = example("clients")
    assert status == 0 and "web1.example.com" in out


def test_unbalanced_quotes_are_an_error(example):
    assert_one_error(*example("showclient 'web1.example.com"), "usage: showclient")


def test_empty_line_does_not_repeat_the_last_command(example):
    example("clients")
    assert example("") == (0, "", "")


def test_help_lists_the_commands_and_explains_one(example):
    status, out, err = example("help")
    assert status == 0
    for name in ("build", "buildfile", "bundles", "clients", "groups", "showclient",
                 "showentries", "mappings", "quit", "exit"):
        assert name in out.split()
    assert "EOF" not in out
    status, out, err = example("help buildfile")
    assert out.splitlines()[0] == "usage: buildfile [--altsrc=<name>] <path> <client>"
    assert_one_error(*example("help nosuch"), "nosuch")


class Keyboard(io.StringIO):
    """Typed lines; the marker ^C stands for Ctrl-C pressed at the prompt."""

    def readline(self, *args: object) -> str:
        line = super().readline(*args)
        if line == "^C\n":
            raise KeyboardInterrupt
        return line


def test_ctrl_c_abandons_the_line_and_the_shell_goes_on(shell_for, example_repo, capsys,
                                                       monkeypatch):
    shell = shell_for(example_repo)[0]
    monkeypatch.setattr(sys, "stdin", Keyboard("^C\nclients\n"))
    shell.stdout = sys.stdout
    try:
        shell.interact()
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left the shell")
    assert "desk1.example.com" in capsys.readouterr().out


@pytest.mark.parametrize("line", ["quit", "exit", "EOF"])
def test_quit_exit_and_ctrl_d_leave(shell_for, example_repo, line):
    shell = shell_for(example_repo)[0]
    assert shell.onecmd(line) is True


def test_client_names_complete(shell_for, example_repo):
    shell = shell_for(example_repo)[0]
    assert shell.complete_showclient("web", "showclient web", 11, 14) == [
        "web1.example.com", "web2.example.com"]


# -- main() and the console script ---------------------------------------------


def argv(repository: Repo | Path, tmp_path: Path, *words: str) -> list[str]:
    return ["-C", "/dev/null", "-Q", str(repository), "--state-dir", str(tmp_path / "state"),
            "--plugins", PLUGINS, *words]


def test_main_runs_one_command(example_repo, tmp_path, capsys):
    assert main(argv(example_repo, tmp_path, "showclient", "web1.example.com")) == 0
    assert fields(capsys.readouterr().out)["Profile"] == "webserver"


def test_main_exits_non_zero_on_a_bad_command(example_repo, tmp_path, capsys):
    assert main(argv(example_repo, tmp_path, "build", "nosuch.example.com")) == 1
    captured = capsys.readouterr()
    assert_one_error(1, captured.out, captured.err, "bcfg2-info:", "nosuch.example.com")


def test_main_reports_a_config_error_in_one_line(tmp_path, capsys):
    assert main(["-C", str(tmp_path / "missing.conf"), "clients"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bcfg2-info: ") and "missing.conf" in err
    assert len(err.strip().splitlines()) == 1


def test_main_reports_a_core_init_error_in_one_line(tmp_path, capsys):
    assert main(argv(tmp_path / "nowhere", tmp_path, "clients")) == 1
    err = capsys.readouterr().err
    assert err.startswith("bcfg2-info: ") and "nowhere" in err
    assert len(err.strip().splitlines()) == 1


def test_main_without_a_command_reads_commands_until_eof(example_repo, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("clients\nbogus\n"))
    assert main(argv(example_repo, tmp_path)) == 0
    captured = capsys.readouterr()
    assert "db1.example.com" in captured.out
    assert "bogus" in captured.err


def test_console_script_builds_a_client(tmp_path):
    """The real program, as an admin runs it against repo-example."""
    before = sorted(str(p) for p in REPO_EXAMPLE.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "bcfg2.info", *argv(REPO_EXAMPLE, tmp_path),
         "build", "web1.example.com"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = lxml.etree.fromstring(result.stdout.encode())
    assert config.xpath("//Path[@name='/etc/motd']/text()") == [
        cfg_text(REPO_EXAMPLE, "/etc/motd", "motd.G10_web")]
    assert not config.xpath("//*[@failure]")
    assert sorted(str(p) for p in REPO_EXAMPLE.rglob("*")) == before

    result = subprocess.run(
        [sys.executable, "-m", "bcfg2.info", *argv(REPO_EXAMPLE, tmp_path),
         "showclient", "nosuch.example.com"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert_one_error(1 if result.returncode else 0, result.stdout, result.stderr,
                     "bcfg2-info:", "nosuch.example.com")


# -- the commands added with buildall ------------------------------------------


def test_help_lists_every_command_and_the_package_commands(example):
    status, out, err = example("help")
    assert status == 0
    listed = set(out.split())
    for name in ("buildall", "buildallfile", "buildbundle", "automatch", "config", "debug",
                 "event_debug", "expirecache", "caches", "profile", "update", "packageresolve",
                 "packagesources"):
        assert name in listed


def test_buildbundle_applies_the_clients_conditionals(example):
    db1 = lxml.etree.fromstring(example("buildbundle sshd db1.example.com")[1].encode())
    web1 = lxml.etree.fromstring(example("buildbundle sshd web1.example.com")[1].encode())
    assert db1.xpath("Service/@name") == ["sshd"]
    assert web1.xpath("Service/@name") == ["ssh"]
    assert db1.xpath("Path/@name") == web1.xpath("Path/@name") == ["/etc/ssh/sshd_config"]


def test_buildbundle_renders_a_template(shell_for, repo):
    repo.write("Bundler/base.xml.jinja2",
               '<Bundle><Path name="/etc/{{ metadata.hostname }}.conf"/></Bundle>\n')
    status, out, err = shell_for(repo)[1]("buildbundle base client1")
    assert status == 0, err
    assert lxml.etree.fromstring(out.encode()).xpath("Path/@name") == ["/etc/client1.conf"]


def test_automatch_follows_the_option_and_the_file(local_core, example_repo, capsys):
    shell = InfoShell(local_core(example_repo, properties__automatch="true"))
    shell.stdout = sys.stdout
    shell.onecmd("automatch ntp.xml db1.example.com")
    out = capsys.readouterr().out
    assert shell.status == 0
    assert lxml.etree.fromstring(out.encode()).xpath("Server/text()") == [
        "0.pool.ntp.org", "1.pool.ntp.org"]
    props = example_repo.path / "Properties/ntp.xml"
    props.write_text(props.read_text().replace("<Properties>", '<Properties automatch="false">'))
    shell.onecmd("update")
    capsys.readouterr()
    shell.onecmd("automatch ntp.xml db1.example.com")
    assert shell.status == 1 and "automatch is off" in capsys.readouterr().err


def test_expirecache_empties_the_metadata_cache(local_core, example_repo, capsys):
    core = local_core(example_repo, caching__client_metadata="aggressive")
    shell = InfoShell(core)
    shell.stdout = sys.stdout
    core.build_metadata("web1.example.com")
    core.build_metadata("db1.example.com")
    assert "web1.example.com" in core.metadata_cache
    shell.onecmd("expirecache web1.example.com")
    assert shell.status == 0
    assert "web1.example.com" not in core.metadata_cache
    assert "db1.example.com" in core.metadata_cache
    shell.onecmd("expirecache")
    assert len(core.metadata_cache) == 0


def test_event_debug_shows_events_on_update(shell_for, example_repo):
    shell, run = shell_for(example_repo)
    try:
        status, out, err = run("event_debug")
        assert status == 0 and "shown" in out
        motd = example_repo.path / "Cfg/etc/motd/motd"
        motd.write_text("changed, and longer than it was before the edit\n")
        status, out, err = run("update")
        assert status == 0
        assert any(line.startswith("event: ") and str(motd) in line for line in out.splitlines())
        run("event_debug off")
        motd.write_text("changed again, and longer still than the last time it was\n")
        status, out, err = run("update")
        assert "event:" not in out
    finally:
        shell.onecmd("event_debug off")


def test_debug_console_gets_the_core_as_self(shell_for, example_repo, monkeypatch):
    shell, run = shell_for(example_repo)
    monkeypatch.setattr(sys, "stdin", io.StringIO("print('rev', self.revision)\n"))
    status, out, err = run("debug -n")
    assert status == 0
    assert f"rev {shell.core.revision}" in out + err


def test_debug_file_errors(shell_for, example_repo, tmp_path):
    run = shell_for(example_repo)[1]
    assert_one_error(*run(f"debug -f {tmp_path}/none.py"), "cannot read")
    bad = tmp_path / "bad.py"
    bad.write_text("x = (\n")
    assert_one_error(*run(f"debug -f {bad}"), f"{bad}:")
    bye = tmp_path / "bye.py"
    bye.write_text("print('before'); raise SystemExit(3)\n")
    status, out, err = run(f"debug -f {bye}")
    assert status == 0 and "before" in out


def test_profile_shows_the_command_and_its_profile(example):
    status, out, err = example("profile showclient web1.example.com")
    assert status == 0, err
    assert "Hostname:" in out and "function calls" in out
    status, out, err = example("profile showclient nosuch.example.com")
    assert status == 1 and "function calls" in out and "nosuch.example.com" in err


def test_config_shows_sections_and_masks_passwords(local_core, example_repo, capsys):
    shell = InfoShell(local_core(example_repo, communication__password="hunter2"))
    shell.stdout = sys.stdout
    shell.onecmd("config communication")
    out = capsys.readouterr().out
    assert shell.status == 0
    assert {row[0] for row in rows(out)[1:]} == {"communication"}
    assert "hunter2" not in out and "********" in out


# -- completion and history ------------------------------------------------------


def test_command_names_complete(shell_for, example_repo):
    shell = shell_for(example_repo)[0]
    assert shell.completenames("build", "build", 0, 5) == [
        "build", "buildall", "buildallfile", "buildbundle", "buildfile"]
    assert "EOF" not in shell.completenames("", "", 0, 0)


def test_arguments_complete_by_what_they_are(shell_for, example_repo):
    shell = shell_for(example_repo)[0]
    line = "buildbundle ss"
    assert shell.complete_buildbundle("ss", line, 12, len(line)) == ["sshd"]
    line = "buildbundle sshd de"
    assert shell.complete_buildbundle("de", line, 17, len(line)) == ["desk1.example.com"]
    line = "buildfile /etc/mo"
    assert shell.complete_buildfile("/etc/mo", line, 10, len(line)) == ["/etc/motd"]
    line = "buildfile /etc/motd db"
    assert shell.complete_buildfile("db", line, 20, len(line)) == ["db1.example.com"]
    line = "showentries web1.example.com Pa"
    assert shell.complete_showentries("Pa", line, 29, len(line)) == ["Package", "Path"]
    line = "mappings Service s"
    assert "sshd" in shell.complete_mappings("s", line, 17, len(line))
    line = "buildall /tmp/x web"
    assert shell.complete_buildall("web", line, 16, len(line)) == [
        "web1.example.com", "web2.example.com", "webserver"]
    line = "automatch -f nt"
    assert shell.complete_automatch("nt", line, 13, len(line)) == ["ntp.xml"]
    line = "expirecache db1.example.com w"
    assert shell.complete_expirecache("w", line, 28, len(line)) == [
        "web1.example.com", "web2.example.com"]
    assert shell.complete_build("", "build db1.example.com ", 22, 22) == []


def test_profile_completes_the_profiled_command(shell_for, example_repo):
    shell = shell_for(example_repo)[0]
    assert shell.complete_profile("showc", "profile showc", 8, 13) == ["showclient"]
    line = "profile showclient we"
    assert shell.complete_profile("we", line, 19, len(line)) == [
        "web1.example.com", "web2.example.com"]


@pytest.fixture
def readline_module():
    readline = pytest.importorskip("readline")
    readline.clear_history()
    yield readline
    readline.clear_history()


def test_history_is_loaded_and_saved(shell_for, example_repo, tmp_path, readline_module):
    history = tmp_path / "history"
    history.write_text("clients\nshowclient web1.example.com\n")
    shell = shell_for(example_repo)[0]
    shell.history = str(history)
    assert shell.load_history()
    items = [readline_module.get_history_item(i)
             for i in range(1, readline_module.get_current_history_length() + 1)]
    assert items[-2:] == ["clients", "showclient web1.example.com"]
    readline_module.add_history("groups")
    assert shell.save_history()
    assert history.read_text().splitlines()[-1] == "groups"


def test_history_problems_are_not_errors(shell_for, example_repo, tmp_path, readline_module,
                                         monkeypatch):
    shell = shell_for(example_repo)[0]
    shell.history = str(tmp_path / "missing" / "history")
    assert shell.load_history() is False
    assert shell.save_history() is False
    monkeypatch.setitem(sys.modules, "readline", None)  # a Python without readline
    assert shell.load_history() is False and shell.save_history() is False


def test_build_reports_once_but_update_shows_parse_errors(shell_for, repo, caplog):
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/orphan"/></Bundle>')
    run = shell_for(repo)[1]
    caplog.clear()
    assert_one_error(*run("build client1"), "Path:/etc/orphan")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/orphan"\n')
    status, out, err = run("update")
    assert status == 0
    assert any("base.xml" in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)
    assert_one_error(*run("build client1"), "Path:/etc/orphan")  # the last good version


def test_caches_shows_the_bound_entries_a_build_kept(example):
    status, out, _ = example("caches")
    assert status == 0 and "bound entries:    0 kept" in out
    example("build db1.example.com")
    example("build db1.example.com")
    _, out, _ = example("caches")
    line = next(line for line in out.splitlines() if line.startswith("bound entries:"))
    kept = int(line.split()[2])
    hits = int(line.split("hits ")[1].split(",")[0])
    assert kept > 0 and hits > 0, out
    assert "configurations:   0 kept" in out  # bcfg2-info builds, it serves nothing

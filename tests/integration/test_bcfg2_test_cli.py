"""bcfg2-test through its command line: which clients fail, why, and the exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lxml.etree
import pytest
from conftest import GEN_PLUGINS, ROOT, genrepo
from conftest import SMALL_SPEC as SMALL
from conftest import tool_argv as argv

from bcfg2.testrun import main

MISSING = "/etc/bench/missing.conf"


@pytest.fixture
def generated(tmp_path: Path) -> genrepo.Repository:
    return genrepo.generate(str(tmp_path / "gen"), SMALL)


@pytest.fixture
def broken(generated: genrepo.Repository) -> tuple[genrepo.Repository, list[str]]:
    """Bundle bench-b0 names a file no generator has, for the members of bench-p1 only.

    Returns the repository and the names of the clients that must fail.
    """
    bundle = Path(generated.root) / "Bundler" / "bench-b0.xml"
    text = bundle.read_text()
    bundle.write_text(text.replace("</Bundle>", f'  <Group name="bench-p1">\n'
                                                f'    <Path name="{MISSING}"/>\n'
                                                f'  </Group>\n</Bundle>'))
    failing = sorted(c.name for c in generated.clients if c.profile == "bench-p1")
    assert 0 < len(failing) < len(generated.clients)
    return generated, failing


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_repo_example_builds_cleanly(example_repo, tmp_path, capsys):
    status, out, err = run(capsys, argv(example_repo, tmp_path, "-j", "1"))
    assert status == 0, err
    clients = lxml.etree.parse(str(example_repo.path / "Metadata/clients.xml")).xpath(
        "//Client/@name")
    assert out.strip().splitlines() == [f"{len(clients)} clients, 0 failed"]


def test_reports_exactly_the_broken_clients_and_entries(broken, tmp_path, capsys):
    repo, failing = broken
    status, out, err = run(capsys, argv(repo.root, tmp_path, "-j", "1", plugins=GEN_PLUGINS))
    assert status == 1
    lines = out.strip().splitlines()
    assert lines[:-1] == [f"{name}: Path:{MISSING}: no matching generator" for name in failing]
    assert lines[-1] == f"{len(repo.clients)} clients, {len(failing)} failed"
    assert "Traceback" not in err


def test_two_jobs_give_the_same_output_as_one(broken, tmp_path, capsys):
    repo, _failing = broken
    one = run(capsys, argv(repo.root, tmp_path, "-j", "1", plugins=GEN_PLUGINS))
    two = run(capsys, argv(repo.root, tmp_path, "-j", "2", plugins=GEN_PLUGINS))
    assert one[:2] == two[:2]
    assert one[0] == 1


def test_clients_chosen_by_name_glob_and_group(broken, tmp_path, capsys):
    repo, failing = broken
    names = sorted(c.name for c in repo.clients)
    status, out, _ = run(capsys, argv(repo.root, tmp_path, "-j", "1", names[0], "c1?.bench.*",
                                      plugins=GEN_PLUGINS))
    tested = {names[0], *(n for n in names if n.startswith("c1") and len(n) == len("c10.bench.example"))}
    assert out.strip().splitlines()[-1].startswith(f"{len(tested)} clients")
    assert {line.split(":")[0] for line in out.splitlines()[:-1]} == set(failing) & tested
    status, out, _ = run(capsys, argv(repo.root, tmp_path, "--group", "bench-p1", "-j", "1",
                                      plugins=GEN_PLUGINS))
    assert status == 1
    assert out.strip().splitlines()[-1] == f"{len(failing)} clients, {len(failing)} failed"
    status, out, _ = run(capsys, argv(repo.root, tmp_path, "--group", "bench-p2", "-j", "1",
                                      plugins=GEN_PLUGINS))
    assert status == 0


def test_quiet_prints_only_failures(broken, tmp_path, capsys):
    repo, failing = broken
    status, out, _ = run(capsys, argv(repo.root, tmp_path, "--quiet", plugins=GEN_PLUGINS))
    assert status == 1
    assert sorted(line.split(":")[0] for line in out.splitlines()) == failing


def test_junit_report_has_one_testcase_per_client(broken, tmp_path, capsys):
    repo, failing = broken
    report = tmp_path / "report.xml"
    status, _, _ = run(capsys, argv(repo.root, tmp_path, "--junit", str(report),
                                    plugins=GEN_PLUGINS))
    assert status == 1
    suite = lxml.etree.parse(str(report)).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert sorted(c.get("name") for c in cases) == sorted(c.name for c in repo.clients)
    assert suite.get("tests") == str(len(repo.clients))
    assert suite.get("failures") == str(len(failing))
    failed = {c.get("name"): c.find("failure").text for c in cases if c.find("failure") is not None}
    assert sorted(failed) == failing
    assert all(MISSING in text for text in failed.values())


def test_malformed_bundle_fails_the_clients_that_get_it(example_repo, tmp_path, capsys):
    (example_repo.path / "Bundler/motd.xml").write_text('<Bundle><Path name="/etc/motd"\n')
    status, out, err = run(capsys, argv(example_repo, tmp_path, "-j", "1"))
    assert status == 1
    failures = out.strip().splitlines()[:-1]
    assert failures
    for line in failures:
        client, tag, reason = line.split(": ", 2)
        assert tag == "Bundle:motd"
        assert "motd.xml" in reason
    assert "Traceback" not in err


def test_template_error_is_reported_with_the_bundle(example_repo, tmp_path, capsys):
    (example_repo.path / "Bundler/ntp.xml").unlink(missing_ok=True)
    example_repo.write("Bundler/ntp.xml.jinja2", '<Bundle>{{ metadata.nosuch.attr }}</Bundle>\n')
    status, out, err = run(capsys, argv(example_repo, tmp_path, "-j", "1"))
    lines = [line for line in out.splitlines() if "Bundle:ntp" in line]
    assert status == 1 and lines
    assert all("ntp.xml.jinja2" in line and "Undefined" in line for line in lines), lines


@pytest.mark.parametrize("words, message", [
    (["nosuch.example.com"], "nosuch.example.com"),
    (["--group", "nosuch"], "nosuch"),
    (["-j", "0"], "-j 0"),
])
def test_usage_errors_exit_2_in_one_line(example_repo, tmp_path, capsys, words, message):
    status, out, err = run(capsys, argv(example_repo, tmp_path, *words))
    assert status == 2
    assert err.startswith("bcfg2-test: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_repository_and_bad_options_exit_2(tmp_path, capsys):
    status, _, err = run(capsys, argv(tmp_path / "nowhere", tmp_path))
    assert status == 2
    assert err.startswith("bcfg2-test: ") and "nowhere" in err
    assert len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, ["-C", str(tmp_path / "missing.conf")])
    assert status == 2 and "missing.conf" in err
    assert run(capsys, ["--no-such-option"])[0] == 2


def test_console_script_runs_parallel(broken, tmp_path):
    """The real program with two workers: same report, exit status 1."""
    repo, failing = broken
    result = subprocess.run(
        [str(ROOT / ".venv/bin/bcfg2-test"), *argv(repo.root, tmp_path, "-j", "2",
                                                   plugins=GEN_PLUGINS)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[:-1] == [f"{name}: Path:{MISSING}: no matching generator" for name in failing]
    assert "Traceback" not in result.stderr

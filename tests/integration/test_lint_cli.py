"""bcfg2-lint as an admin runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PLUGINS, REPO_EXAMPLE, Repo

SCRIPT = Path(sys.executable).parent / "bcfg2-lint"


def run(repository: Path | str, state: Path, *args: str,
        stdin: str = "") -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed")
    return subprocess.run(
        [str(SCRIPT), "-C", "/dev/null", "-Q", str(repository), "--plugins", PLUGINS,
         "--state-dir", str(state), *args],
        input=stdin, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_repo_example_is_clean(tmp_path: Path) -> None:
    proc = run(REPO_EXAMPLE, tmp_path / "state")
    assert proc.stdout == ""
    assert proc.stderr.strip() == "bcfg2-lint: 0 errors, 0 warnings"
    assert proc.returncode == 0


def test_broken_repository_reports_findings_and_exits_2(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true"><Bundle name="web"/></Group>
        </Groups>
        """)
    repo.write("Metadata/clients.xml", """\
        <Clients>
          <Client name="web1" profile="basic"/>
        </Clients>
        """)
    repo.write("Bundler/web.xml", """\
        <Bundle>
          <Path name="/etc/nothing"/>
          <Service name="httpd"
        </Bundle>
        """)
    proc = run(repo, tmp_path / "state")
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "Bundler/web.xml:4: error: XML does not parse: "
        + proc.stdout.split("XML does not parse: ", 1)[1].splitlines()[0],
    ]
    assert "[xml-failed-to-parse]" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "bcfg2-lint: 1 error, 0 warnings"
    repo.write("Bundler/web.xml", '<Bundle>\n  <Path name="/etc/nothing"/>\n</Bundle>\n')
    proc = run(repo, tmp_path / "state")
    assert proc.stdout == ("Bundler/web.xml:2: error: Path /etc/nothing has no generator "
                           "for clients web1 [unbound-entry]\n")
    assert proc.returncode == 2


def test_missing_repository_exits_1_with_one_line(tmp_path: Path) -> None:
    proc = run(tmp_path / "missing", tmp_path / "state")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("bcfg2-lint: ")

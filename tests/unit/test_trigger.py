"""Trigger: scripts run in the background after a client run."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Repo

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Trigger"

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
    <Group name="$(touch INJECTED);x"/>
  </Group>
  <Group name="other" profile="true"/>
</Groups>
"""


def script(repo: Repo, name: str, body: str, executable: bool = True) -> Path:
    path = repo.write(f"Trigger/{name}", "#!/bin/sh\n" + body)
    path.chmod(0o755 if executable else 0o644)
    return path


def test_scripts_get_hostname_profile_and_groups(repo: Repo, local_core: Factory,
                                                 tmp_path: Path) -> None:
    repo.write("Metadata/groups.xml", GROUPS)
    out = tmp_path / "args"
    script(repo, "record.sh", f'for a in "$@"; do echo "$a"; done > {out}\n')
    script(repo, "not-executable.sh", f"touch {tmp_path / 'ran'}\n", executable=False)
    script(repo, "record.sh~", f"touch {tmp_path / 'ran'}\n")
    core = local_core(repo, server__plugins=PLUGINS)
    trigger = core.plugins["Trigger"]
    core.BuildConfiguration("client1")
    assert trigger.wait(30)
    assert out.read_text().splitlines() == [
        "client1", "-p", "basic", "-g", "$(touch INJECTED);x:basic:linux"]
    assert not (tmp_path / "ran").exists()
    assert not list(tmp_path.rglob("INJECTED"))


def test_hanging_script_is_killed_without_delaying_the_build(
        repo: Repo, local_core: Factory, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    pidfile = tmp_path / "pid"
    script(repo, "hang.sh", f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}\n"
                            "exec sleep 300\n")
    core = local_core(repo, server__plugins=PLUGINS)
    trigger = core.plugins["Trigger"]
    trigger.timeout = 2
    caplog.set_level(logging.ERROR)
    config = core.BuildConfiguration("client1")
    assert config.tag == "Configuration"
    assert not trigger.wait(0), "the build waited for the script"
    assert trigger.wait(30), "the hanging script was not killed"
    assert "was killed" in caplog.text
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failures_are_logged(repo: Repo, local_core: Factory,
                             caplog: pytest.LogCaptureFixture) -> None:
    script(repo, "fail.sh", "echo broken >&2\nexit 3\n")
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.ERROR)
    core.BuildConfiguration("client2")
    assert core.plugins["Trigger"].wait(30)
    assert "exited with status 3: broken" in caplog.text


def test_shutdown_kills_running_scripts(repo: Repo, local_core: Factory) -> None:
    script(repo, "hang.sh", "exec sleep 300\n")
    core = local_core(repo, server__plugins=PLUGINS)
    trigger = core.plugins["Trigger"]
    core.BuildConfiguration("client1")
    assert not trigger.wait(0)
    core.shutdown()
    assert trigger.wait(0)

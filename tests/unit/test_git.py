"""Git: the revision sent in each Configuration follows the checkout."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import PLUGINS

from bcfg2.errors import CoreInitError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
IDENTITY = ("-c", "user.name=Admin", "-c", "user.email=admin@example.com")


def git(path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *IDENTITY, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(repo):
    git(repo.path, "init", "-q", "-b", "main")
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-qm", "first")
    return repo


def test_the_configuration_carries_the_head_revision(checkout, local_core):
    core = local_core(checkout, server__plugins=PLUGINS + ",Git")
    head = git(checkout.path, "rev-parse", "HEAD")
    assert core.BuildConfiguration("client1").get("revision") == head


def test_a_commit_and_a_branch_switch_update_the_revision(checkout, local_core):
    core = local_core(checkout, server__plugins=PLUGINS + ",Git")
    (checkout.path / "Cfg/etc/motd").mkdir(parents=True)
    (checkout.path / "Cfg/etc/motd/motd").write_text("second\n")
    git(checkout.path, "add", "-A")
    git(checkout.path, "commit", "-qm", "second")
    core.refresh()
    assert core.BuildConfiguration("client1").get("revision") == git(checkout.path,
                                                                     "rev-parse", "HEAD")
    git(checkout.path, "checkout", "-q", "-b", "topic", "HEAD~1")
    core.refresh()
    topic = git(checkout.path, "rev-parse", "HEAD")
    assert core.revision == topic
    # the plugin now follows the new branch: a commit there is seen too
    (checkout.path / "Rules/extra.xml").write_text('<Rules priority="1"/>')
    git(checkout.path, "add", "-A")
    git(checkout.path, "commit", "-qm", "on topic")
    core.refresh()
    assert core.revision == git(checkout.path, "rev-parse", "HEAD") != topic


def test_a_detached_head_is_followed(checkout, local_core):
    git(checkout.path, "commit", "-q", "--allow-empty", "-m", "second")
    core = local_core(checkout, server__plugins=PLUGINS + ",Git")
    git(checkout.path, "checkout", "-q", "--detach", "HEAD~1")
    core.refresh()
    assert core.revision == git(checkout.path, "rev-parse", "HEAD")


def test_a_repository_outside_git_stops_start_up_clearly(repo, local_core):
    with pytest.raises(CoreInitError, match="Git.*not in a git checkout"):
        local_core(repo, server__plugins=PLUGINS + ",Git")

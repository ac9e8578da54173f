"""Cfg ``:test`` verifiers: content a script refuses is never served."""

from __future__ import annotations

import os
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS as GROUPS
from conftest import Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]

#: accepts content that has no line "bad", and says which line it refused
CHECKER = """\
#!/bin/sh
if grep -qx bad; then
    echo "line 'bad' is not allowed" >&2
    exit 3
fi
"""


def setup_repo(repo: Repo) -> None:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/sudoers"/>'
                                   '<Path name="/etc/motd"/></Bundle>')
    repo.write("Cfg/etc/motd/motd", "hello\n")


def built(core: LocalCore, client: str = "client1") -> dict[str, lxml.etree._Element]:
    return {el.get("name"): el for el in core.BuildConfiguration(client).iter("Path")}


def test_content_the_verifier_refuses_fails_only_that_entry(repo: Repo,
                                                             local_core: Factory) -> None:
    setup_repo(repo)
    sudoers = repo.write("Cfg/etc/sudoers/sudoers", "root ALL=(ALL) ALL\n")
    test = repo.write("Cfg/etc/sudoers/:test", CHECKER)
    os.chmod(test, 0o755)
    core = local_core(repo)
    assert built(core)["/etc/sudoers"].text == "root ALL=(ALL) ALL\n"
    rewrite(sudoers, "root ALL=(ALL) ALL\nbad\n")
    core.refresh()
    got = built(core)
    failure = got["/etc/sudoers"].get("failure")
    assert "fails the verifier" in failure and "exit status 3" in failure
    assert "line 'bad' is not allowed" in failure and got["/etc/sudoers"].text is None
    assert got["/etc/motd"].text == "hello\n"


def test_a_script_that_is_not_executable_runs_through_its_interpreter_line(
        repo: Repo, local_core: Factory) -> None:
    setup_repo(repo)
    repo.write("Cfg/etc/sudoers/sudoers", "bad\n")
    os.chmod(repo.write("Cfg/etc/sudoers/:test", CHECKER), 0o644)
    assert "exit status 3" in built(local_core(repo))["/etc/sudoers"].get("failure")
    os.chmod(repo.write("Cfg/etc/sudoers/:test", "grep -qx bad && exit 1\n"), 0o644)
    failure = built(local_core(repo))["/etc/sudoers"].get("failure")
    assert "must be executable or start with a #! line" in failure


def test_verifiers_are_chosen_per_client_by_specificity(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo)
    repo.write("Cfg/etc/sudoers/sudoers", "bad\n")
    os.chmod(repo.write("Cfg/etc/sudoers/:test.H_client1", CHECKER), 0o755)
    os.chmod(repo.write("Cfg/etc/sudoers/:test", "#!/bin/sh\nexit 0\n"), 0o755)
    core = local_core(repo)
    assert "fails the verifier" in built(core, "client1")["/etc/sudoers"].get("failure")
    assert built(core, "client2")["/etc/sudoers"].text == "bad\n"


def test_templates_are_verified_after_rendering(repo: Repo, local_core: Factory) -> None:
    setup_repo(repo)
    repo.write("Cfg/etc/sudoers/sudoers.jinja2",
               "{% if metadata.hostname == 'client1' %}bad{% else %}good{% endif %}\n")
    os.chmod(repo.write("Cfg/etc/sudoers/:test", CHECKER), 0o755)
    core = local_core(repo)
    assert "fails the verifier" in built(core, "client1")["/etc/sudoers"].get("failure")
    assert built(core, "client2")["/etc/sudoers"].text == "good\n"


def test_validation_off_serves_without_running_the_script(repo: Repo,
                                                           local_core: Factory) -> None:
    setup_repo(repo)
    repo.write("Cfg/etc/sudoers/sudoers", "bad\n")
    os.chmod(repo.write("Cfg/etc/sudoers/:test", CHECKER), 0o755)
    assert built(local_core(repo, cfg__validation="false"))["/etc/sudoers"].text == "bad\n"


@pytest.mark.parametrize("script, why", [
    ("#!/bin/sh\nexec sleep 30\n", "did not finish within 0.5 s"),
    ("#!/nonexistent/interpreter\n", "cannot run"),
])
def test_a_verifier_that_hangs_or_cannot_run_fails_its_entry(
        repo: Repo, local_core: Factory, script: str, why: str) -> None:
    setup_repo(repo)
    repo.write("Cfg/etc/sudoers/sudoers", "fine\n")
    os.chmod(repo.write("Cfg/etc/sudoers/:test", script), 0o755)
    core = local_core(repo, cfg__validation_timeout="0.5")
    assert why in built(core)["/etc/sudoers"].get("failure")

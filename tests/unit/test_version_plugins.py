"""Version plugins: the revision a configuration carries is the one the tool itself gives,
it follows new commits, and Git.Update / Svn.Update are for admins, with checked arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import xmlrpc.client
from pathlib import Path

import lxml.etree
import pytest
from conftest import PLUGINS

from bcfg2.errors import ACCESS_DENIED, INVALID_PARAMS, CoreInitError
from bcfg2.plugin import VcsCommandError, run_vcs

HERE_ENV = {"LC_ALL": "C"}


def run(cwd: Path, *argv: str) -> str:
    """Run a tool as a user would, in ``cwd``; its standard output."""
    return subprocess.run(list(argv), cwd=cwd, check=True, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, **HERE_ENV},
                          timeout=60).stdout


@pytest.fixture(autouse=True)
def identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Who commits, and a home of the test's own (fossil and brz keep files there)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USER", "admin")
    monkeypatch.setenv("BRZ_EMAIL", "Admin <admin@example.com>")
    monkeypatch.setenv("HGUSER", "Admin <admin@example.com>")
    monkeypatch.setenv("DARCS_EMAIL", "Admin <admin@example.com>")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Admin")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "admin@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Admin")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "admin@example.com")


class Tool:
    """One version-control tool as a test drives it: make a checkout of the
    repository, commit everything in it, and say what the revision is."""

    plugin = ""
    command = ""

    def create(self, path: Path) -> None:
        raise NotImplementedError

    def commit(self, path: Path, message: str) -> None:
        raise NotImplementedError

    def revision(self, path: Path) -> str:
        raise NotImplementedError


class SvnTool(Tool):
    plugin, command = "Svn", "svn"

    def create(self, path: Path) -> None:
        server = path.parent / "svn-server"
        run(path.parent, "svnadmin", "create", str(server))
        moved = path.parent / "unversioned"
        path.rename(moved)
        run(path.parent, "svn", "import", "-q", "-m", "import", str(moved),
            f"file://{server}/trunk")
        run(path.parent, "svn", "checkout", "-q", f"file://{server}/trunk", str(path))
        shutil.rmtree(moved)

    def commit(self, path: Path, message: str) -> None:
        run(path, "svn", "add", "-q", "--force", ".")
        run(path, "svn", "commit", "-q", "-m", message)
        run(path, "svn", "update", "-q")  # the working copy's root follows only now

    def revision(self, path: Path) -> str:
        return run(path, "svnversion", "-n", ".")


class HgTool(Tool):
    plugin, command = "Hg", "hg"

    def create(self, path: Path) -> None:
        run(path, "hg", "init")

    def commit(self, path: Path, message: str) -> None:
        run(path, "hg", "commit", "-q", "-A", "-m", message)

    def revision(self, path: Path) -> str:
        return run(path, "hg", "identify", "--num", "-r", "tip").strip()


class BzrTool(Tool):
    plugin, command = "Bzr", "brz"

    def create(self, path: Path) -> None:
        run(path, "brz", "init", "-q")

    def commit(self, path: Path, message: str) -> None:
        run(path, "brz", "add", "-q")
        run(path, "brz", "commit", "-q", "-m", message)

    def revision(self, path: Path) -> str:
        return run(path, "brz", "revno").strip()


class CvsTool(Tool):
    """CVS numbers files: the test keeps a file at the top, which ``cvs log`` lists first."""

    plugin, command = "Cvs", "cvs"

    def create(self, path: Path) -> None:
        root = path.parent / "cvsroot"
        run(path.parent, "cvs", "-d", str(root), "init")
        (path / "README").write_text("a Bcfg2 repository\n")
        run(path, "cvs", "-Q", "-d", str(root), "import", "-m", "import", "repo", "vendor",
            "start")
        moved = path.parent / "unversioned"
        path.rename(moved)
        run(path.parent, "cvs", "-Q", "-d", str(root), "checkout", "repo")
        shutil.rmtree(moved)

    def commit(self, path: Path, message: str) -> None:
        with (path / "README").open("a") as readme:
            readme.write(f"{message}\n")
        run(path, "cvs", "-Q", "commit", "-m", message)

    def revision(self, path: Path) -> str:
        status = run(path, "cvs", "status", "README")
        line = next(line for line in status.splitlines() if "Repository revision:" in line)
        return line.split()[2]


class DarcsTool(Tool):
    plugin, command = "Darcs", "darcs"

    def create(self, path: Path) -> None:
        run(path, "darcs", "init", "-q")

    def commit(self, path: Path, message: str) -> None:
        run(path, "darcs", "add", "-q", "-r", ".")
        run(path, "darcs", "record", "-q", "-a", "-m", message, "--skip-long-comment")

    def revision(self, path: Path) -> str:
        log = run(path, "darcs", "log", "--last", "1", "--xml-output")
        return lxml.etree.fromstring(log.encode()).find("patch").get("hash")


class FossilTool(Tool):
    plugin, command = "Fossil", "fossil"

    def create(self, path: Path) -> None:
        store = path.parent / "repo.fossil"
        run(path.parent, "fossil", "init", "-A", "admin", str(store))
        run(path, "fossil", "open", "--force", str(store))

    def commit(self, path: Path, message: str) -> None:
        run(path, "fossil", "addremove")
        run(path, "fossil", "commit", "-m", message, "--no-warnings")

    def revision(self, path: Path) -> str:
        status = run(path, "fossil", "status")
        return next(line.split()[1] for line in status.splitlines()
                    if line.startswith("checkout:"))


TOOLS = [SvnTool(), HgTool(), BzrTool(), CvsTool(), DarcsTool(), FossilTool()]
PACKAGES = {"Svn": "subversion", "Hg": "mercurial", "Bzr": "brz", "Cvs": "cvs",
            "Darcs": "darcs", "Fossil": "fossil"}


def installed(tool: Tool) -> pytest.param:
    return pytest.param(tool, id=tool.plugin, marks=pytest.mark.skipif(
        shutil.which(tool.command) is None,
        reason=f"{tool.command} is not installed (Debian package {PACKAGES[tool.plugin]})"))


@pytest.mark.parametrize("tool", [installed(t) for t in TOOLS])
def test_the_revision_is_the_tools_and_follows_a_commit(tool, repo, local_core, caplog):
    tool.create(repo.path)
    tool.commit(repo.path, "first")
    core = local_core(repo, server__plugins=f"{PLUGINS},{tool.plugin}")
    first = tool.revision(repo.path)
    assert core.BuildConfiguration("client1").get("revision") == first

    repo.write("Rules/extra.xml", '<Rules priority="1"/>')
    tool.commit(repo.path, "second")
    assert core.refresh()  # the change and the tool's own files are noticed
    second = tool.revision(repo.path)
    assert second != first
    assert core.BuildConfiguration("client1").get("revision") == second
    # the tool's own directories (CVS/ in every directory) are no repository entries
    assert not [r for r in caplog.records if "/CVS/" in r.getMessage()]


@pytest.mark.parametrize("tool", [installed(t) for t in TOOLS])
def test_a_repository_outside_the_tool_stops_start_up_clearly(tool, repo, local_core):
    with pytest.raises(CoreInitError, match=f"plugin {tool.plugin} failed to start: .*"
                                            f"is not in a"):
        local_core(repo, server__plugins=f"{PLUGINS},{tool.plugin}")


@pytest.mark.parametrize("plugin", sorted(PACKAGES))
def test_a_missing_tool_names_the_package_to_install(plugin, repo, local_core, tmp_path,
                                                     monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CoreInitError) as caught:
        local_core(repo, server__plugins=f"{PLUGINS},{plugin}")
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(f"install the {PACKAGES[plugin]} package")


@pytest.mark.skipif(shutil.which("brz") is None, reason="brz is not installed (package brz)")
def test_bzr_marks_changes_not_committed_with_a_plus(repo, local_core):
    tool = BzrTool()
    tool.create(repo.path)
    tool.commit(repo.path, "first")
    core = local_core(repo, server__plugins=f"{PLUGINS},Bzr")
    revno = tool.revision(repo.path)
    assert core.revision == revno
    repo.write("Rules/extra.xml", '<Rules priority="1"/>')  # not added: a local change
    core.refresh()
    assert core.revision == revno + "+"
    tool.commit(repo.path, "second")
    core.refresh()
    assert core.revision == tool.revision(repo.path) != revno


# -- the command runner ---------------------------------------------------------


def test_run_vcs_has_no_terminal_and_no_input(tmp_path):
    # a tool that asks for a password reads end-of-file and has no terminal to open
    script = "read -r answer || echo no-input; tty -s || echo no-terminal"
    assert run_vcs(["sh", "-c", script], str(tmp_path)).split() == ["no-input", "no-terminal"]


def test_run_vcs_kills_a_command_that_hangs(tmp_path):
    with pytest.raises(VcsCommandError, match="no answer within 0.5 s"):
        run_vcs(["sleep", "30"], str(tmp_path), timeout=0.5)


def test_run_vcs_bounds_the_output(tmp_path):
    flood = ["sh", "-c", "yes revision"]
    with pytest.raises(VcsCommandError, match="printed more than 1000 bytes"):
        run_vcs(flood, str(tmp_path), limit=1000)
    assert run_vcs(flood, str(tmp_path), limit=1000, truncate=True) == "revision\n" * 111 + "r"


def test_run_vcs_reports_the_tools_message(tmp_path):
    with pytest.raises(VcsCommandError, match=r"exit status 3\): bad\\nthing"):
        run_vcs(["sh", "-c", "printf 'bad\\nthing' >&2; exit 3"], str(tmp_path))


# -- Update over XML-RPC ------------------------------------------------------------

HOSTILE = ["--upload-pack=touch {marker}", ";rm -rf {marker}", "1" * 300, "-1", "HEAD\n",
           "abc def", ""]


def config_revision(server) -> str:
    config = server.proxy("uuid-client1", "pw1").GetConfig()
    return lxml.etree.fromstring(config.encode()).get("revision")


def refused(call, code: int) -> str:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        call()
    assert caught.value.faultCode == code, caught.value.faultString
    return caught.value.faultString


def git(path: Path, *args: str) -> str:
    return run(path, "git", *args).strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed (package git)")
def test_git_update_for_admins_only(repo, network_server, tmp_path):
    git(repo.path, "init", "-q", "-b", "main")
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-qm", "first")
    first = git(repo.path, "rev-parse", "HEAD")
    served = tmp_path / "served"
    git(tmp_path, "clone", "-q", str(repo.path), str(served))
    server = network_server(served, server__plugins=f"{PLUGINS},Git")
    assert config_revision(server) == first

    repo.write("Rules/extra.xml", '<Rules priority="1"/>')
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-qm", "second")
    second = git(repo.path, "rev-parse", "HEAD")
    client = server.proxy("uuid-client1", "pw1")
    refused(lambda: client.Git.Update(), ACCESS_DENIED)
    assert git(served, "rev-parse", "HEAD") == first

    assert server.admin().Git.Update() is True  # pulls the upstream branch
    assert git(served, "rev-parse", "HEAD") == second
    assert config_revision(server) == second

    assert server.admin().Git.Update(first[:12]) is True  # a commit: detached there
    assert config_revision(server) == first
    assert server.admin().Git.Update() is True  # detached: nothing to pull
    assert config_revision(server) == first

    message = refused(lambda: server.admin().Git.Update("deadbeef"), 1)
    assert "names no commit" in message
    marker = tmp_path / "marker"
    for hostile in HOSTILE + ["HEAD", "main", "a" * 65]:
        text = hostile.format(marker=marker)
        message = refused(lambda text=text: server.admin().Git.Update(text), INVALID_PARAMS)
        assert "git commit" in message and "\n" not in message
    refused(lambda: server.admin().Git.Update(["main"]), INVALID_PARAMS)
    assert not marker.exists()
    assert config_revision(server) == first == git(served, "rev-parse", "HEAD")


@pytest.mark.skipif(shutil.which("svn") is None, reason="svn is not installed (package subversion)")
def test_svn_update_for_admins_only(repo, network_server, tmp_path):
    served = repo.path
    SvnTool().create(served)
    work = tmp_path / "work"
    url = run(served, "svn", "info", "--show-item", "url").strip()
    run(tmp_path, "svn", "checkout", "-q", url, str(work))
    server = network_server(served, server__plugins=f"{PLUGINS},Svn")
    assert config_revision(server) == "1"

    (work / "Rules" / "extra.xml").write_text('<Rules priority="1"/>')
    run(work, "svn", "add", "-q", "Rules/extra.xml")
    run(work, "svn", "commit", "-q", "-m", "second")
    client = server.proxy("uuid-client1", "pw1")
    refused(lambda: client.Svn.Update(), ACCESS_DENIED)
    assert run(served, "svnversion", "-n", ".") == "1"

    assert server.admin().Svn.Update() is True
    assert run(served, "svnversion", "-n", ".") == "2"
    assert (served / "Rules" / "extra.xml").exists()
    assert config_revision(server) == "2"

    assert server.admin().Svn.Update("1") is True
    assert config_revision(server) == "1"
    assert not (served / "Rules" / "extra.xml").exists()
    assert server.admin().Svn.Update("HEAD") is True
    assert config_revision(server) == "2"

    marker = tmp_path / "marker"
    for hostile in HOSTILE + ["head", "PREV", "12345678901"]:
        text = hostile.format(marker=marker)
        message = refused(lambda text=text: server.admin().Svn.Update(text), INVALID_PARAMS)
        assert "Subversion revision" in message and "\n" not in message
    refused(lambda: server.admin().Svn.Update(2), INVALID_PARAMS)
    assert not marker.exists()
    assert config_revision(server) == "2"

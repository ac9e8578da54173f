"""The agent (the installed ``bcfg2`` script) against our server, into a throwaway root.

A generated repository plus a bundle of directories, a symlink, permissions,
a path that must not exist and an Action, and a probe whose group brings a
bundle of its own. Each client runs a dry run (everything reported, nothing
changed), a real run (everything applied under ``--root``) and a second run
that finds nothing to do; ``bcfg2-admin reports`` shows what they uploaded.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from conftest import genrepo

import bcfg2.admin

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes,Reporting"
SPEC = genrepo.RepoSpec(clients=2, profiles=1, groups=1, groups_per_profile=1, bundles=2,
                        entries=6, files_per_entry=3, file_size=300)
AGENT = shutil.which("bcfg2", path=os.path.dirname(sys.executable))
ERROR_LINE = re.compile(r"\S+ \S+ ERROR (.*)")


def extra_bundles(repo: genrepo.Repository, marker: Path) -> None:
    """Bundle "agent" (for every client) and "probed" (for the probe's group)."""
    root = Path(repo.root)
    groups = root / "Metadata/groups.xml"
    groups.write_text(groups.read_text().replace(
        '<Group name="bench-g0">', '<Group name="bench-g0">\n    <Bundle name="agent"/>').replace(
        "</Groups>", '  <Group name="agent-probed"><Bundle name="probed"/></Group>\n</Groups>'))
    (root / "Bundler/agent.xml").write_text("""<Bundle>
  <Path name="/etc/agent-test/hello.conf"/>
  <Path name="/etc/agent-test/link"/>
  <Path name="/var/lib/agent-test"/>
  <Path name="/srv/data"/>
  <Path name="/etc/obsolete.conf"/>
  <Action name="agent-post"/>
</Bundle>
""")
    (root / "Bundler/probed.xml").write_text(
        '<Bundle><Path name="/etc/agent-test/probed"/></Bundle>\n')
    (root / "Rules/agent.xml").write_text(f"""<Rules priority="1">
  <Path name="/etc/agent-test/link" type="symlink" to="hello.conf"/>
  <Path name="/var/lib/agent-test" type="directory" owner="root" group="root" mode="0750"/>
  <Path name="/srv/data" type="permissions" owner="root" group="root" mode="0700"/>
  <Path name="/etc/obsolete.conf" type="nonexistent"/>
  <Action name="agent-post" timing="post" when="modified" status="check" shell="true"
          command="echo ran >> {marker}"/>
</Rules>
""")
    hello = root / "Cfg/etc/agent-test/hello.conf"
    hello.mkdir(parents=True)
    (hello / "hello.conf").write_text("greeting = hello\n")
    (hello / "info.xml").write_text('<FileInfo><Info owner="root" group="root" mode="0600"/>'
                                    "</FileInfo>\n")
    probed = root / "Cfg/etc/agent-test/probed"
    probed.mkdir(parents=True)
    (probed / "probed").write_text("the probe said so\n")
    (root / "Probes").mkdir()
    (root / "Probes/role").write_text("#!/bin/sh\necho group:agent-probed\n")


def machine(path: Path) -> Path:
    """A throwaway root as a machine has it before the agent: some paths already there."""
    (path / "srv/data").mkdir(parents=True)
    os.chmod(path / "srv/data", 0o755)
    (path / "etc").mkdir()
    (path / "etc/obsolete.conf").write_text("left over\n")
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every path under a root: its mode, inode and content or link target."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: bytes | str | None = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = path.read_bytes()
            else:
                what = None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_ino, what)
    return out


def agent_conf(path: Path, url: str, client: genrepo.Client, ca: str, lockfile: Path,
               password: str | None = None) -> Path:
    path.write_text(
        "[components]\n"
        f"bcfg2 = {url}\n"
        f"lockfile = {lockfile}\n"
        "\n[communication]\n"
        f"user = {client.uuid}\n"
        f"password = {password or client.password}\n"
        f"ca = {ca}\n"
        "retries = 2\n"
        "retry_delay = 0.05\n"
        "\n[logging]\n"
        "syslog = false\n")
    return path


def run_agent(conf: Path, root: Path, *args: str, answers: str | None = None
              ) -> subprocess.CompletedProcess:
    """The installed bcfg2 script; ``answers`` are typed at its questions (-I)."""
    assert AGENT is not None, "the bcfg2 console script is not installed"
    return subprocess.run([AGENT, "-C", str(conf), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          input=answers, stdin=None if answers is not None else subprocess.DEVNULL)


def errors(stderr: str) -> list[str]:
    return [m.group(1) for line in stderr.splitlines() if (m := ERROR_LINE.fullmatch(line))]


def reports(capsys, repo: str, state: Path, *args: str) -> str:
    capsys.readouterr()
    status = bcfg2.admin.main(["-C", "/dev/null", "-Q", repo, "--state-dir", str(state),
                               "reports", *args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def serve(tmp_path: Path, network_server, core: str = "builtin"):
    """The generated repository served by a core, and the marker its Action writes."""
    marker = tmp_path / "action-ran"
    repo = genrepo.generate(str(tmp_path / "repo"), SPEC)
    extra_bundles(repo, marker)
    server = network_server(repo.root, core=core, server__plugins=PLUGINS,
                            probes__allowed_groups="agent-probed", server__children="2")
    return repo, server, marker


@pytest.fixture
def site(tmp_path: Path, network_server):
    """The generated repository served by the builtin core, and what an agent needs."""
    return serve(tmp_path, network_server)


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_dry_run_then_real_run_then_nothing_to_do(tmp_path: Path, network_server, capsys,
                                                  core: str) -> None:
    repo, server, marker = serve(tmp_path, network_server, core)
    state = tmp_path / "state"
    for client in repo.clients:
        root = machine(tmp_path / f"root-{client.name}")
        conf = agent_conf(tmp_path / f"{client.name}.conf",
                          f"https://127.0.0.1:{server.port}", client, server.tls.ca_cert,
                          tmp_path / "bcfg2.lock")
        files = [repo.entry_name(e) for e in repo.entries_of(client)]
        files += ["/etc/agent-test/hello.conf", "/etc/agent-test/probed"]
        total = len(files) + 5  # symlink, directory, permissions, nonexistent, action

        before = snapshot(root)
        dry = run_agent(conf, root, "-n")
        assert dry.returncode == 0, dry.stderr
        assert snapshot(root) == before  # nothing changed
        assert not marker.exists()
        for name in files:
            assert f"Would install Path:file:{name}: does not exist\n" in dry.stdout
        served = Path(repo.served_file(repo.entries_of(client)[0], client)).read_text()
        assert f"+{served.splitlines()[1]}\n" in dry.stdout  # the diff of a new file
        assert "Would install Path:symlink:/etc/agent-test/link: does not exist" in dry.stdout
        assert "Would install Path:directory:/var/lib/agent-test: does not exist" in dry.stdout
        assert ("Would install Path:permissions:/srv/data: mode is 0755, should be 0700"
                in dry.stdout)
        assert ("Would install Path:nonexistent:/etc/obsolete.conf: exists, should not"
                in dry.stdout)
        assert f"Would run Action:agent-post: echo ran >> {marker}" in dry.stdout
        assert (f"Dry run: {total - 1} of {total} entries are not as the configuration says"
                in dry.stdout)
        dirty = reports(capsys, repo.root, state, "--client", client.name)
        assert "dirty" in dirty

        real = run_agent(conf, root)
        assert real.returncode == 0, real.stderr
        assert errors(real.stderr) == []
        for entry in repo.entries_of(client):
            written = root / repo.entry_name(entry).lstrip("/")
            assert written.read_bytes() == Path(repo.served_file(entry, client)).read_bytes()
            assert stat.S_IMODE(written.stat().st_mode) == 0o644
        hello = root / "etc/agent-test/hello.conf"
        assert hello.read_text() == "greeting = hello\n"
        assert stat.S_IMODE(hello.stat().st_mode) == 0o600
        assert (root / "etc/agent-test/probed").read_text() == "the probe said so\n"
        assert os.readlink(root / "etc/agent-test/link") == "hello.conf"
        assert stat.S_IMODE((root / "var/lib/agent-test").stat().st_mode) == 0o750
        assert stat.S_IMODE((root / "srv/data").stat().st_mode) == 0o700
        assert not (root / "etc/obsolete.conf").exists()
        assert marker.read_text() == "ran\n"
        assert not [p for p in (root / "etc/agent-test").iterdir() if p.name.startswith(".")]

        applied = snapshot(root)
        again = run_agent(conf, root, "-v")
        assert again.returncode == 0, again.stderr
        assert "Incorrect entries:      0" in again.stderr
        assert "All entries correct." in again.stderr
        assert snapshot(root) == applied  # not even rewritten: the same inodes
        assert marker.read_text() == "ran\n"  # when="modified": nothing was modified
        marker.unlink()

        latest = reports(capsys, repo.root, state, "--client", client.name)
        assert "clean" in latest.splitlines()[1]
    table = reports(capsys, repo.root, state)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:-1]}
    assert all(rows[c.name][3] == "clean" for c in repo.clients)


def test_a_changed_file_is_shown_as_a_diff_and_put_back(site, tmp_path: Path) -> None:
    repo, server, marker = site
    client = repo.clients[0]
    root = machine(tmp_path / "root")
    conf = agent_conf(tmp_path / "agent.conf", f"https://127.0.0.1:{server.port}", client,
                      server.tls.ca_cert, tmp_path / "bcfg2.lock")
    assert run_agent(conf, root).returncode == 0
    hello = root / "etc/agent-test/hello.conf"
    hello.write_text("greeting = bonjour\n")
    dry = run_agent(conf, root, "-n")
    assert ("Would install Path:file:/etc/agent-test/hello.conf: content differs\n"
            "--- /etc/agent-test/hello.conf (on the host)\n"
            "+++ /etc/agent-test/hello.conf (from the server)\n"
            "@@ -1 +1 @@\n"
            "-greeting = bonjour\n"
            "+greeting = hello\n") in dry.stdout
    assert "Dry run: 1 of" in dry.stdout
    marker.unlink()
    assert run_agent(conf, root).returncode == 0
    assert hello.read_text() == "greeting = hello\n"
    assert marker.read_text() == "ran\n"  # its bundle was modified


def test_wrong_password_is_one_line_and_fails(site, tmp_path: Path) -> None:
    repo, server, _ = site
    root = machine(tmp_path / "root")
    conf = agent_conf(tmp_path / "agent.conf", f"https://127.0.0.1:{server.port}",
                      repo.clients[0], server.tls.ca_cert, tmp_path / "bcfg2.lock",
                      password="not-the-password")
    before = snapshot(root)
    result = run_agent(conf, root)
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"the server at 127.0.0.1:{server.port} refused authentication as "
        f"'{repo.clients[0].uuid}' (wrong password, unknown client or a certificate needed)"]
    assert snapshot(root) == before


def test_unreachable_server_is_one_line_after_the_retries(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = genrepo.Client("c", "uuid-c", "pw", "p", frozenset())
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    conf = agent_conf(tmp_path / "agent.conf", f"https://127.0.0.1:{port}", client,
                      str(tmp_path / "ca.pem"), tmp_path / "bcfg2.lock")
    result = run_agent(conf, machine(tmp_path / "root"))
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"cannot reach the server at 127.0.0.1:{port}: Connection refused (tried 3 times)"]
    assert result.stderr.count("trying again") == 2


def test_a_server_certificate_of_another_ca_is_refused(site, tmp_path: Path) -> None:
    repo, server, _ = site
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    conf = agent_conf(tmp_path / "agent.conf", f"https://127.0.0.1:{server.port}",
                      repo.clients[0], str(tmp_path / "other-ca.pem"), tmp_path / "bcfg2.lock")
    result = run_agent(conf, machine(tmp_path / "root"))
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"the certificate of 127.0.0.1:{server.port} is not trusted: "
        "unable to get local issuer certificate"]
    assert "trying again" not in result.stderr


def test_a_server_certificate_of_another_name_is_refused(site, tmp_path: Path) -> None:
    repo, server, _ = site
    conf = agent_conf(tmp_path / "agent.conf", f"https://127.0.0.1:{server.port}",
                      repo.clients[0], server.tls.ca_cert, tmp_path / "bcfg2.lock")
    result = run_agent(conf, machine(tmp_path / "root"), "--ssl-cns", "bcfg2.example.com")
    assert result.returncode == 1
    [line] = errors(result.stderr)
    assert line.startswith(f"the certificate of 127.0.0.1:{server.port} is for ")
    assert line.endswith("not one of [communication] serverCommonNames (bcfg2.example.com)")
    # by its host name: localhost is on the certificate, another name is not
    conf = agent_conf(tmp_path / "agent.conf", f"https://localhost:{server.port}",
                      repo.clients[0], server.tls.ca_cert, tmp_path / "bcfg2.lock")
    assert run_agent(conf, machine(tmp_path / "root2"), "-n").returncode == 0


def test_interactive_mode_asks_at_the_terminal(site, tmp_path: Path) -> None:
    repo, server, marker = site
    root = machine(tmp_path / "root")
    conf = agent_conf(tmp_path / "agent.conf", f"https://127.0.0.1:{server.port}",
                      repo.clients[0], server.tls.ca_cert, tmp_path / "bcfg2.lock")
    before = snapshot(root)
    declined = run_agent(conf, root, "-I", answers="n\n" * 100)
    assert declined.returncode == 0, declined.stderr
    assert "Install Path:file:/etc/agent-test/hello.conf (does not exist)? (y/N): " \
        in declined.stdout
    assert "+greeting = hello" in declined.stdout  # the diff, before the question
    assert snapshot(root) == before and not marker.exists()
    accepted = run_agent(conf, root, "-I", answers="y\n" * 100)
    assert accepted.returncode == 0, accepted.stderr
    assert (root / "etc/agent-test/hello.conf").read_text() == "greeting = hello\n"
    assert f"Run Action agent-post: echo ran >> {marker}? (y/N): " in accepted.stdout
    assert marker.read_text() == "ran\n"

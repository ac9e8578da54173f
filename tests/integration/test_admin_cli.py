"""bcfg2-admin init, client, compare, perf, xcmd and viz, through the command line."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import lxml.etree
import pytest
from conftest import PLUGINS, ROOT, Repo, make_setup, state_clients

from bcfg2 import admin
from bcfg2.core import LocalCore

ADMIN = str(Path(sys.executable).parent / "bcfg2-admin")
WEB1 = ("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret")


def repo_args(repo: Repo | Path, tmp_path: Path) -> list[str]:
    """Global options for a repository with the example plugin list and a private state dir."""
    return ["-C", "/dev/null", "-Q", str(repo), "--plugins", PLUGINS,
            "--state-dir", str(tmp_path / "state")]


def admin_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run bcfg2-admin in-process: (status, stdout, stderr)."""
    status = admin.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err: str) -> str:
    """The tool's one error line (an in-process server may log lines of its own)."""
    lines = [line for line in err.strip().splitlines() if line.startswith("bcfg2-admin")]
    assert len(lines) == 1, err
    assert lines[0].startswith("bcfg2-admin: ")
    assert "Traceback" not in err
    return lines[0]


# -- client ------------------------------------------------------------------------------

def test_client_list_on_repo_example(example_repo, tmp_path, capsys):
    status, out, err = admin_run(capsys, *repo_args(example_repo, tmp_path), "client", "list")
    assert status == 0, err
    assert out.split() == ["db1.example.com", "desk1.example.com", "web1.example.com",
                           "web2.example.com"]


def test_client_add_keeps_comments_and_loads(example_repo, tmp_path, capsys):
    args = repo_args(example_repo, tmp_path)
    status, _, err = admin_run(capsys, *args, "client", "add", "new1.example.com",
                               "profile=dbserver", "address=10.0.0.7", "uuid=u-new1",
                               "password=s3cret", "secure=true", "auth=cert+password")
    assert status == 0, err
    path = example_repo.path / "Metadata/clients.xml"
    text = path.read_text()
    assert "Agents on 127.0.0.1 identify themselves by uuid" in text
    node = lxml.etree.parse(str(path)).getroot().find("Client[@name='new1.example.com']")
    assert dict(node.attrib) == {"name": "new1.example.com", "profile": "dbserver",
                                 "uuid": "u-new1", "password": "s3cret",
                                 "address": "10.0.0.7", "secure": "true",
                                 "auth": "cert+password"}
    core = LocalCore(make_setup(example_repo, state_dir=tmp_path / "state"))
    try:
        meta = core.build_metadata("new1.example.com")
        assert meta.profile == "dbserver"
        assert "db" in meta.groups
    finally:
        core.shutdown()
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert "new1.example.com" in out.split()


def test_client_add_uses_the_default_profile(example_repo, tmp_path, capsys):
    status, _, err = admin_run(capsys, *repo_args(example_repo, tmp_path), "client", "add",
                               "laptop.example.com")
    assert status == 0, err
    root = lxml.etree.parse(str(example_repo.path / "Metadata/clients.xml")).getroot()
    assert root.find("Client[@name='laptop.example.com']").get("profile") == "workstation"


@pytest.mark.parametrize("words, message", [
    (["web1.example.com", "profile=webserver"], "already exists"),
    (["WEB1.example.com"], "already exists"),
    (["db1-mgmt.example.com"], "alias of client db1.example.com"),
    (["x.example.com", "colour=blue"], "unknown attribute 'colour'"),
    (["x.example.com", "profile"], "not of the form attribute=value"),
    (["x.example.com", "profile=linux"], "'linux' is not a profile group"),
    (["x.example.com", "profile=nosuch"], "'nosuch' is not a profile group"),
    (["x.example.com", "secure=maybe"], "secure='maybe'"),
    (["x.example.com", "auth=token"], "auth='token'"),
    (["x.example.com", "address=not-an-ip"], "not an IP address"),
    (["x.example.com", "uuid=5c3f7a62-9d0e-4c1b-8f53-web1"], "already used by client"),
    (["../etc"], "invalid client name"),
])
def test_client_add_errors_leave_the_file_alone(example_repo, tmp_path, capsys, words,
                                                message):
    path = example_repo.path / "Metadata/clients.xml"
    before = path.read_bytes()
    status, out, err = admin_run(capsys, *repo_args(example_repo, tmp_path), "client", "add",
                                 *words)
    assert status == 1
    assert message in one_error_line(err)
    assert path.read_bytes() == before


def test_client_del_removes_only_that_client(example_repo, tmp_path, capsys):
    args = repo_args(example_repo, tmp_path)
    path = example_repo.path / "Metadata/clients.xml"
    status, _, err = admin_run(capsys, *args, "client", "del", "web2.example.com")
    assert status == 0, err
    text = path.read_text()
    assert "web2.example.com" not in text
    assert "<!-- Agents on 127.0.0.1" in text
    assert 'name="db1-mgmt.example.com"' in text
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert out.split() == ["db1.example.com", "desk1.example.com", "web1.example.com"]


def test_client_del_errors(example_repo, tmp_path, capsys):
    args = repo_args(example_repo, tmp_path)
    status, _, err = admin_run(capsys, *args, "client", "del", "nosuch.example.com")
    assert status == 1
    assert "no such client: nosuch.example.com" in one_error_line(err)
    status, _, err = admin_run(capsys, *args, "client", "del", "db1-mgmt.example.com")
    assert status == 1
    assert "alias of client db1.example.com" in one_error_line(err)


def test_client_del_and_list_see_the_runtime_overlay(example_repo, tmp_path, capsys):
    """A client registered at first contact lives in the state dir: list shows it, del removes it."""
    state = tmp_path / "state"
    core = LocalCore(make_setup(example_repo, state_dir=state))
    try:
        core.build_metadata("fresh.example.com")  # registered with the default profile
        core.metadata.set_version("web1.example.com", "1.4.0")
    finally:
        core.shutdown()
    assert "fresh.example.com" in state_clients(state)
    args = repo_args(example_repo, tmp_path)
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert "fresh.example.com" in out.split()
    repo_before = (example_repo.path / "Metadata/clients.xml").read_bytes()
    status, _, err = admin_run(capsys, *args, "client", "del", "fresh.example.com")
    assert status == 0, err
    assert "fresh.example.com" not in state_clients(state)
    assert (example_repo.path / "Metadata/clients.xml").read_bytes() == repo_before
    status, _, err = admin_run(capsys, *args, "client", "del", "web1.example.com")
    assert status == 0, err
    assert "web1.example.com" not in state_clients(state)
    assert "web1.example.com" not in (example_repo.path / "Metadata/clients.xml").read_text()
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert out.split() == ["db1.example.com", "desk1.example.com", "web2.example.com"]


def test_client_with_xincluded_files(repo, tmp_path, capsys):
    repo.write("Metadata/clients.xml", """\
        <Clients version="3.0" xmlns:xi="http://www.w3.org/2001/XInclude">
          <Client name="client1" profile="basic"/>
          <xi:include href="more-clients.xml"/>
        </Clients>
        """)
    repo.write("Metadata/more-clients.xml", """\
        <Clients>
          <!-- kept -->
          <Client name="client2" profile="other"/>
          <Client name="client3" profile="other"/>
        </Clients>
        """)
    args = repo_args(repo, tmp_path)
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert out.split() == ["client1", "client2", "client3"]
    status, _, err = admin_run(capsys, *args, "client", "add", "client3")
    assert status == 1 and "already exists" in err
    status, _, err = admin_run(capsys, *args, "client", "del", "client2")
    assert status == 0, err
    included = (repo.path / "Metadata/more-clients.xml").read_text()
    assert "client2" not in included and "<!-- kept -->" in included and "client3" in included
    status, _, err = admin_run(capsys, *args, "client", "add", "client4", "profile=basic")
    assert status == 0, err
    assert "client4" in (repo.path / "Metadata/clients.xml").read_text()
    assert "xi:include" in (repo.path / "Metadata/clients.xml").read_text()
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert out.split() == ["client1", "client3", "client4"]


def test_client_state_dir_in_the_repository(repo, tmp_path, capsys):
    """With state_dir = the repository, the server writes clients.xml itself: one file."""
    args = ["-C", "/dev/null", "-Q", str(repo), "--plugins", PLUGINS, "--state-dir", str(repo)]
    status, _, err = admin_run(capsys, *args, "client", "del", "client1")
    assert status == 0, err
    status, out, _ = admin_run(capsys, *args, "client", "list")
    assert out.split() == ["client2"]


def test_client_keeps_file_mode_and_declaration(repo, tmp_path, capsys):
    path = repo.write("Metadata/clients.xml",
                      '<?xml version="1.0" encoding="UTF-8"?>\n<Clients version="3.0">\n'
                      '</Clients>\n', dedent=False)
    path.chmod(0o640)
    status, _, err = admin_run(capsys, *repo_args(repo, tmp_path), "client", "add", "c9",
                               "profile=basic")
    assert status == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text().startswith("<?xml")
    assert '<Client name="c9" profile="basic"/>' in path.read_text()


def test_client_malformed_clients_xml(repo, tmp_path, capsys):
    repo.write("Metadata/clients.xml", "<Clients>\n  <Client name='a'\n</Clients>\n")
    for words in (["list"], ["add", "x", "profile=basic"], ["del", "a"]):
        status, _, err = admin_run(capsys, *repo_args(repo, tmp_path), "client", *words)
        assert status == 1
        assert "clients.xml:" in one_error_line(err)


def test_client_missing_repository(tmp_path, capsys):
    status, _, err = admin_run(capsys, *repo_args(tmp_path / "nothing", tmp_path),
                               "client", "list")
    assert status == 1
    assert "does not exist" in one_error_line(err)


def test_client_bad_arguments(repo, tmp_path, capsys):
    status, _, err = admin_run(capsys, *repo_args(repo, tmp_path), "client", "rename", "a")
    assert status == 2
    assert "invalid choice" in err
    status, _, err = admin_run(capsys, *repo_args(repo, tmp_path), "client", "del")
    assert status == 2


def test_client_subprocess(example_repo, tmp_path):
    args = [ADMIN, *repo_args(example_repo, tmp_path), "client"]
    done = subprocess.run([*args, "add", "sub.example.com", "profile=webserver"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*args, "list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "sub.example.com\n" in done.stdout
    done = subprocess.run([*args, "del", "nosuch"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr == "bcfg2-admin: no such client: nosuch\n"


# -- compare -------------------------------------------------------------------------------

@pytest.fixture
def built(example_repo, tmp_path) -> Path:
    """Configurations of two repo-example clients, as bcfg2-info build writes them."""
    from bcfg2.xml import tostring

    out = tmp_path / "built"
    out.mkdir()
    core = LocalCore(make_setup(example_repo, state_dir=tmp_path / "state"))
    try:
        for name in ("web1.example.com", "web2.example.com", "db1.example.com"):
            (out / f"{name}.xml").write_text(tostring(core.BuildConfiguration(name),
                                                      pretty=True))
    finally:
        core.shutdown()
    return out


def compare(capsys, *words: str) -> tuple[int, str, str]:
    return admin_run(capsys, "-C", "/dev/null", "compare", *words)


def test_compare_identical_files(built, capsys):
    path = str(built / "web1.example.com.xml")
    status, out, err = compare(capsys, path, path)
    assert (status, out, err) == (0, "", "")


def test_compare_entries_only_on_one_side(built, capsys):
    status, out, _ = compare(capsys, str(built / "web1.example.com.xml"),
                             str(built / "web2.example.com.xml"))
    assert status == 1
    assert "POSIXUser:admin only in old" in out
    assert "Path:/home/admin/.ssh/authorized_keys only in old" in out
    status, out, _ = compare(capsys, str(built / "web2.example.com.xml"),
                             str(built / "web1.example.com.xml"))
    assert "POSIXUser:admin only in new" in out


def test_compare_attributes_and_content(built, tmp_path, capsys):
    old = built / "web1.example.com.xml"
    new = tmp_path / "changed.xml"
    text = old.read_text().replace("Port 22\n", "Port 2222\n")
    text = text.replace('name="chrony" type="deb" version="auto"',
                        'name="chrony" type="deb" version="4.3"')
    new.write_text(text)
    status, out, _ = compare(capsys, str(old), str(new))
    assert status == 1
    assert "Package:chrony:" in out
    assert "version: 'auto' -> '4.3'" in out
    assert "Path:/etc/ssh/sshd_config:" in out
    assert "-Port 22\n" in out.replace("      ", "")
    assert "+Port 2222\n" in out.replace("      ", "")
    assert "\033[" not in out  # not a terminal, no --color
    status, quiet, _ = compare(capsys, "-q", str(old), str(new))
    assert status == 1
    assert "Path:/etc/ssh/sshd_config differs" in quiet
    assert "Port" not in quiet and "version" not in quiet
    status, coloured, _ = compare(capsys, "-c", str(old), str(new))
    assert "\033[31m-Port 22\033[0m" in coloured


def test_compare_base64_content_and_diff_lines(tmp_path, capsys):
    def doc(lines: list[str]) -> str:
        data = base64.b64encode("\n".join(lines).encode()).decode()
        return (f'<Configuration><Bundle name="b"><Path name="/f" type="file" '
                f'encoding="base64">{data}</Path></Bundle></Configuration>')

    old_lines = [f"line {i}" for i in range(40)]
    new_lines = [f"LINE {i}" if i % 2 else f"line {i}" for i in range(40)]
    (tmp_path / "a.xml").write_text(doc(old_lines))
    (tmp_path / "b.xml").write_text(doc(new_lines))
    status, out, _ = compare(capsys, str(tmp_path / "a.xml"), str(tmp_path / "b.xml"))
    assert status == 1
    assert "-line 1\n" in out.replace("      ", "") and "+LINE 1\n" in out.replace("      ", "")
    status, short, _ = compare(capsys, "-d", "5", str(tmp_path / "a.xml"),
                               str(tmp_path / "b.xml"))
    diff = [line for line in short.splitlines() if line.startswith("      ")]
    assert len(diff) == 6
    assert "more lines)" in diff[-1]
    (tmp_path / "c.xml").write_text(doc(old_lines).replace('encoding="base64"', ""))
    status, out, _ = compare(capsys, str(tmp_path / "a.xml"), str(tmp_path / "c.xml"))
    assert status == 1
    assert "encoding: 'base64' -> (none)" in out


def test_compare_directories(built, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(built, other)
    status, out, _ = compare(capsys, str(built), str(other))
    assert (status, out) == (0, "")
    (other / "db1.example.com.xml").unlink()
    (other / "new.example.com.xml").write_text((built / "web1.example.com.xml").read_text())
    web2 = other / "web2.example.com.xml"
    web2.write_text(web2.read_text().replace('mode="0600"', 'mode="0644"'))
    status, out, _ = compare(capsys, str(built), str(other))
    assert status == 1
    assert f"db1.example.com.xml only in {built}" in out
    assert f"new.example.com.xml only in {other}" in out
    assert "web2.example.com.xml:" in out and "mode: '0600' -> '0644'" in out
    assert "web1.example.com.xml" not in out


def test_compare_binary_content_and_moved_entries(tmp_path, capsys):
    def doc(data: bytes, bundle: str = "b") -> str:
        encoded = base64.b64encode(data).decode()
        return (f'<Configuration><Bundle name="{bundle}"><Path name="/bin/x" type="file" '
                f'encoding="base64">{encoded}</Path></Bundle></Configuration>')

    (tmp_path / "a.xml").write_text(doc(b"\x00\xff\x01"))
    (tmp_path / "b.xml").write_text(doc(b"\x00\xfe\x01\x02"))
    (tmp_path / "c.xml").write_text(doc(b"\x00\xff\x01", bundle="other"))
    status, out, _ = compare(capsys, str(tmp_path / "a.xml"), str(tmp_path / "b.xml"))
    assert status == 1
    assert "binary content differs (3 -> 4 bytes)" in out
    status, out, _ = compare(capsys, str(tmp_path / "a.xml"), str(tmp_path / "c.xml"))
    assert status == 1
    assert "moved from Bundle:b to Bundle:other" in out
    assert "Bundle:b only in old" in out and "Bundle:other only in new" in out


def test_compare_subprocess(built):
    path = str(built / "web1.example.com.xml")
    done = subprocess.run([ADMIN, "-C", "/dev/null", "compare", path, path],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    done = subprocess.run([ADMIN, "-C", "/dev/null", "compare", path,
                           str(built / "web2.example.com.xml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "\033[" not in done.stdout  # a pipe is not a terminal


@pytest.mark.parametrize("case", ["missing", "malformed", "mixed", "negative"])
def test_compare_errors(built, tmp_path, capsys, case):
    good = str(built / "web1.example.com.xml")
    if case == "missing":
        words = [good, str(tmp_path / "nothing.xml")]
        message = "nothing.xml: no such file or directory"
    elif case == "malformed":
        (tmp_path / "bad.xml").write_text("<Configuration><Bundle>\n")
        words = [good, str(tmp_path / "bad.xml")]
        message = "bad.xml:"
    elif case == "mixed":
        words = [good, str(built)]
        message = "two files or two directories"
    else:
        words = ["-d", "-1", good, good]
        message = "must not be negative"
    status, out, err = compare(capsys, *words)
    assert status == 2
    assert out == ""
    assert message in one_error_line(err)


# -- xcmd and perf against a running server -------------------------------------------------

def server_args(server, *identity: str, config: str = "/dev/null") -> list[str]:
    return ["-C", config, "-S", f"https://127.0.0.1:{server.port}",
            "--ssl-ca", server.tls.ca_cert, *identity]


@pytest.fixture
def admin_conf(tmp_path) -> str:
    """A bcfg2.conf holding the test servers' admin identity, as an admin's tools read it."""
    from conftest import ADMIN_PASSWORD, ADMIN_USER

    conf = tmp_path / "admin-bcfg2.conf"
    conf.write_text(f"[communication]\nadmin_user = {ADMIN_USER}\n"
                    f"admin_password = {ADMIN_PASSWORD}\n")
    return str(conf)


@pytest.fixture
def served(example_repo, builtin_server):
    """repo-example served by the builtin core, with a client at 127.0.0.1 for "root"."""
    example_repo.write("Metadata/clients.xml", (example_repo.path / "Metadata/clients.xml")
                       .read_text().replace(
                           "</Clients>",
                           '  <Client name="admin.example.com" profile="workstation" '
                           'address="127.0.0.1"/>\n</Clients>'))
    return builtin_server(example_repo, password="globalpw")


def test_xcmd_with_the_admin_identity_from_bcfg2_conf(served, admin_conf, capsys):
    status, out, err = admin_run(capsys, *server_args(served, config=admin_conf),
                                 "xcmd", "listMethods")
    assert status == 0, err
    assert "'GetConfig'" in out and "'get_statistics'" in out
    status, out, err = admin_run(capsys, *server_args(served, config=admin_conf),
                                 "xcmd", "methodHelp", "get_statistics")
    assert status == 0, err
    assert out.startswith("Execution-time statistics")
    status, out, err = admin_run(capsys, *server_args(served, config=admin_conf),
                                 "xcmd", "Metadata.list_clients")
    assert status == 0, err
    assert "'web1.example.com'" in out


@pytest.mark.parametrize("identity", [("-x", "globalpw"), ("-u", WEB1[0], "-x", WEB1[1])])
def test_xcmd_as_an_agent_may_call_only_agent_methods(served, capsys, identity):
    status, out, err = admin_run(capsys, *server_args(served, *identity),
                                 "xcmd", "Metadata.list_clients")
    assert status == 1
    assert "may not call Metadata.list_clients" in one_error_line(err)
    status, out, err = admin_run(capsys, *server_args(served, "-u", WEB1[0], "-x", WEB1[1]),
                                 "xcmd", "GetDecisionList", "whitelist")
    assert status == 0, err


def test_xcmd_literal_arguments(served, admin_conf, capsys):
    args = server_args(served, config=admin_conf)
    status, out, err = admin_run(capsys, *args, "xcmd", "--literal", "ping", "1", "[2, 'x']",
                                 "{'k': True}")
    assert status == 0, err
    assert out.strip() == "[1, [2, 'x'], {'k': True}]"
    status, out, _ = admin_run(capsys, *args, "xcmd", "ping", "1", "True")
    assert out.strip() == "['1', 'True']"
    status, _, err = admin_run(capsys, *args, "xcmd", "--literal", "ping", "not literal")
    assert status == 1
    assert "not a Python literal" in one_error_line(err)


def test_xcmd_fault_is_one_line(served, admin_conf, capsys):
    status, out, err = admin_run(capsys, *server_args(served, config=admin_conf),
                                 "xcmd", "NoSuchMethod")
    assert status == 1
    assert out == ""
    assert one_error_line(err).startswith("bcfg2-admin: Fault ")
    assert "NoSuchMethod" in err


def test_xcmd_wrong_password_is_one_line(served, capsys):
    status, _, err = admin_run(capsys, *server_args(served, "-u", WEB1[0], "-x", "wrong"),
                               "xcmd", "listMethods")
    assert status == 1
    assert "authentication refused" in one_error_line(err)


def test_xcmd_untrusted_certificate_is_one_line(served, tmp_path, capsys):
    from conftest import TLSMaterial

    other = TLSMaterial(tmp_path)
    status, _, err = admin_run(capsys, "-C", "/dev/null", "-S",
                               f"https://127.0.0.1:{served.port}", "--ssl-ca", other.ca_cert,
                               "-x", "globalpw", "xcmd", "listMethods")
    assert status == 1
    assert "certificate verification failed" in one_error_line(err)


def test_xcmd_connection_refused_and_no_password(tmp_path, tls, capsys):
    import socket

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, _, err = admin_run(capsys, "-C", "/dev/null", "-S", f"https://127.0.0.1:{port}",
                               "--ssl-ca", tls.ca_cert, "-x", "pw", "xcmd", "listMethods")
    assert status == 1
    assert "cannot connect" in one_error_line(err)
    status, _, err = admin_run(capsys, "-C", "/dev/null", "-S", f"https://127.0.0.1:{port}",
                               "xcmd", "listMethods")
    assert status == 1
    assert "no password" in one_error_line(err)


def test_perf_prints_a_sorted_table(served, admin_conf, capsys):
    args = server_args(served, config=admin_conf)
    agent = served.proxy(*WEB1)
    agent.DeclareVersion("1.4.0")
    agent.GetConfig()
    status, out, err = admin_run(capsys, *args, "perf")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["Name", "Min", "(ms)", "Max", "(ms)", "Mean", "(ms)", "Count"]
    assert set(lines[1]) <= {"-", " "}
    names = [line.split()[0] for line in lines[2:]]
    assert names == sorted(names)
    assert "BuildConfiguration" in names, names
    for line in lines[2:]:
        low, high, mean, count = line.split()[1:]
        assert float(low) <= float(mean) <= float(high)
        assert int(count) >= 1


def test_perf_subprocess_refused_without_the_right_identity(served):
    done = subprocess.run([ADMIN, *server_args(served, "-u", WEB1[0], "-x", "nope"), "perf"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "authentication refused" in done.stderr


def test_perf_format_table_without_statistics():
    from bcfg2.admin.perf import format_table

    assert "(no statistics yet)" in format_table({})
    table = format_table({"b": (0.001, 0.003, 0.002, 2), "a": (0.5, 0.5, 0.5, 1)})
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["a", "b"]
    assert "500.000" in table and "3.000" in table




# -- init ------------------------------------------------------------------------------------

def init_args(tmp_path: Path, *extra: str, plugins: str = PLUGINS) -> list[str]:
    return ["-C", "/dev/null", "-Q", str(tmp_path / "new/repo"), "--plugins", plugins,
            "--state-dir", str(tmp_path / "new/state"), "-S", "https://127.0.0.1:6789",
            *extra, "init", "--conf", str(tmp_path / "new/etc/bcfg2.conf"), "--yes"]


def test_init_writes_a_repository_that_loads(tmp_path, capsys, caplog):
    status, out, err = admin_run(capsys, *init_args(tmp_path))
    assert status == 0, err
    conf = tmp_path / "new/etc/bcfg2.conf"
    repo = tmp_path / "new/repo"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    setup = options_build(conf)
    assert setup.server.repository == str(repo)
    assert setup.server.plugins == PLUGINS.split(",")
    assert setup.server.state_dir == str(tmp_path / "new/state")
    assert setup.components.bcfg2 == "https://127.0.0.1:6789"
    password = setup.communication.password
    assert password and len(password) >= 24
    assert password not in out
    # an admin identity for the tools, with a random password of its own
    assert setup.communication.admin_user == "admin"
    admin_password = setup.communication.admin_password
    assert admin_password and len(admin_password) >= 24 and admin_password != password
    assert admin_password not in out
    assert setup.communication.key == str(tmp_path / "new/etc/bcfg2.key")
    assert setup.communication.certificate == str(tmp_path / "new/etc/bcfg2.crt")
    for name in PLUGINS.split(","):
        assert (repo / name).is_dir()
    assert lxml.etree.parse(str(repo / "Metadata/clients.xml")).getroot().get("version") == "3.0"
    caplog.clear()
    setup.set("server", "filemonitor", "pseudo")
    core = LocalCore(setup)
    try:
        assert core.metadata.groups_model.default == "basic"
        assert core.metadata.list_clients() == []
        meta = core.build_metadata("first.example.com")  # registered with the default profile
        assert meta.profile == "basic"
        core.BuildConfiguration("first.example.com")
    finally:
        core.shutdown()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    # the new repository works with the other modes, and with a second, different password
    status, _, err = admin_run(capsys, "-C", str(conf), "client", "add", "c1.example.com")
    assert status == 0, err
    status, out, _ = admin_run(capsys, "-C", str(conf), "client", "list")
    assert out.split() == ["c1.example.com", "first.example.com"]


def test_init_then_bcfg2_info_clients(tmp_path):
    done = subprocess.run([ADMIN, *init_args(tmp_path, "-x", "given-pw", plugins=
                                             "Metadata,Bundler,Cfg,Rules,Defaults")],
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    conf = tmp_path / "new/etc/bcfg2.conf"
    assert "password = given-pw\n" in conf.read_text()
    assert "random" not in done.stdout
    info = str(Path(ADMIN).parent / "bcfg2-info")
    done = subprocess.run([info, "-C", str(conf), "clients"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Client", "Profile"]


def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    status, _, err = admin_run(capsys, *init_args(tmp_path))
    assert status == 0, err
    conf = tmp_path / "new/etc/bcfg2.conf"
    before = conf.read_text()
    status, out, err = admin_run(capsys, *init_args(tmp_path))
    assert status == 1
    assert "bcfg2.conf exists; use --force" in one_error_line(err)
    assert conf.read_text() == before
    conf.unlink()
    status, out, err = admin_run(capsys, *init_args(tmp_path))
    assert status == 1
    assert "repo is not empty; use --force" in one_error_line(err)
    assert not conf.exists()
    (tmp_path / "new/repo/Metadata/groups.xml").write_text("<Groups/>")
    (tmp_path / "new/repo/Bundler/keep.xml").write_text("<Bundle/>")
    status, out, err = admin_run(capsys, *init_args(tmp_path), "--force")
    assert status == 0, err
    assert conf.exists() and conf.read_text() != before  # a new random password
    assert 'name="basic"' in (tmp_path / "new/repo/Metadata/groups.xml").read_text()
    assert (tmp_path / "new/repo/Bundler/keep.xml").exists()


@pytest.mark.parametrize("extra, message", [
    ((), "not a regular file"),
    (("--plugins", "Bundler,Cfg"), "needs Metadata"),
    (("--plugins", "Metadata,NoSuchPlugin"), "no plugin named 'NoSuchPlugin'"),
    (("-x", "two\nlines"), "line breaks"),
])
def test_init_errors(tmp_path, capsys, extra, message):
    args = init_args(tmp_path)
    if not extra:  # never replace something that is not a file
        args[args.index("--conf") + 1] = str(tmp_path)
    args[-4:-4] = list(extra)
    status, _, err = admin_run(capsys, *args)
    assert status == 1
    assert message in one_error_line(err)
    assert not (tmp_path / "new").exists()


def test_init_bad_server_url(tmp_path, capsys):
    args = init_args(tmp_path)
    args[args.index("-S") + 1] = "http://nowhere"
    status, _, err = admin_run(capsys, *args)
    assert status == 2
    assert "https://host:port" in one_error_line(err)


def test_init_make_cert_with_cryptography(tmp_path, capsys):
    import ssl

    status, out, err = admin_run(capsys, *init_args(tmp_path), "--make-cert")
    assert status == 0, err
    key, cert = tmp_path / "new/etc/bcfg2.key", tmp_path / "new/etc/bcfg2.crt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    status, _, err = admin_run(capsys, *init_args(tmp_path), "--make-cert")
    assert status == 1
    assert "exists; use --force" in one_error_line(err)


@pytest.mark.parametrize("cryptography", [True, False])
def test_init_certificate_names_the_servers_host(tmp_path, capsys, monkeypatch, cryptography):
    from cryptography import x509

    from bcfg2.admin import init

    if not cryptography:
        if shutil.which("openssl") is None:
            pytest.skip("no openssl program")
        monkeypatch.setattr(init, "have_cryptography", lambda: False)
    args = init_args(tmp_path)
    args[args.index("-S") + 1] = "https://conf01.example.com:6789"
    status, _, err = admin_run(capsys, *args, "--make-cert")
    assert status == 0, err
    cert = x509.load_pem_x509_certificate((tmp_path / "new/etc/bcfg2.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["conf01.example.com", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_init_make_cert_with_openssl(tmp_path, capsys, monkeypatch):
    import ssl

    from bcfg2.admin import init

    if shutil.which("openssl") is None:
        pytest.skip("no openssl program")
    monkeypatch.setattr(init, "have_cryptography", lambda: False)
    status, _, err = admin_run(capsys, *init_args(tmp_path), "--make-cert")
    assert status == 0, err
    key, cert = tmp_path / "new/etc/bcfg2.key", tmp_path / "new/etc/bcfg2.crt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))


def test_init_make_cert_without_any_tool(tmp_path, capsys, monkeypatch):
    from bcfg2.admin import init

    monkeypatch.setattr(init, "have_cryptography", lambda: False)
    monkeypatch.setattr(init.shutil, "which", lambda name: None)
    status, _, err = admin_run(capsys, *init_args(tmp_path), "--make-cert")
    assert status == 1
    assert "install the Python package cryptography or the openssl program" in \
        one_error_line(err)
    assert not (tmp_path / "new").exists()


def test_init_asks_on_a_terminal(tmp_path, capsys, monkeypatch):
    class Terminal:
        def isatty(self) -> bool:
            return True

    answers = iter([str(tmp_path / "asked.conf"), str(tmp_path / "asked-repo"),
                    "https://conf.example.com:6789", "", str(tmp_path / "asked-state"), "n"])
    questions: list[str] = []

    def fake_input(prompt: str) -> str:
        questions.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed-pw")
    status, _, err = admin_run(capsys, "-C", "/dev/null", "init")
    assert status == 0, err
    assert questions[0].startswith("bcfg2.conf to write [/etc/bcfg2.conf]")
    assert questions[3].startswith("Plugins [")
    setup = options_build(tmp_path / "asked.conf")
    assert setup.server.repository == str(tmp_path / "asked-repo")
    assert setup.components.bcfg2 == "https://conf.example.com:6789"
    assert setup.communication.password == "typed-pw"
    assert "Metadata" in setup.server.plugins
    assert (tmp_path / "asked-repo/Metadata/groups.xml").exists()


def options_build(conf: Path):
    from bcfg2 import options

    return options.build(str(conf))


# -- viz -------------------------------------------------------------------------------------

def viz(capsys, repo: Repo | Path, tmp_path: Path, *words: str) -> tuple[int, str, str]:
    return admin_run(capsys, *repo_args(repo, tmp_path), "viz", *words)


def edges(source: str) -> set[tuple[str, str]]:
    out = set()
    for line in source.splitlines():
        if " -> " in line:
            left, right = line.strip().split(" -> ")
            out.add((left.strip('"'), right.split(" [")[0].rstrip(";").strip('"')))
    return out


def nodes(source: str) -> set[str]:
    return {line.strip().split('" [')[0].strip('"') for line in source.splitlines()
            if line.startswith('  "') and " -> " not in line}


def test_viz_groups_only(example_repo, tmp_path, capsys):
    status, out, err = viz(capsys, example_repo, tmp_path)
    assert status == 0, err
    assert out.startswith("digraph groups {") and out.rstrip().endswith("}")
    assert nodes(out) == {f"group:{g}" for g in (
        "webserver", "dbserver", "workstation", "debian", "rhel", "linux", "virtual", "db",
        "ntp-server", "no-admin", "amd64")}
    assert {("group:webserver", "group:linux"), ("group:dbserver", "group:db"),
            ("group:db", "group:ntp-server")} <= edges(out)
    assert not any(name.startswith(("bundle:", "client:")) for edge in edges(out)
                   for name in edge)
    assert 'fillcolor="lightblue"' in out  # profiles stand out
    assert "cluster_key" not in out


def test_viz_hosts_bundles_and_key(example_repo, tmp_path, capsys):
    status, out, err = viz(capsys, example_repo, tmp_path, "-H", "-b", "-k")
    assert status == 0, err
    found = edges(out)
    for bundle in ("sshd", "ntp", "motd", "admin-user"):
        assert ("group:linux", f"bundle:{bundle}") in found
    assert ("group:virtual", "bundle:guest-agent") in found
    for client, profile in (("web1", "webserver"), ("web2", "webserver"),
                            ("db1", "dbserver"), ("desk1", "workstation")):
        assert (f"client:{client}.example.com", f"group:{profile}") in found
    assert ("client:web2.example.com", "group:no-admin") in found
    assert "subgraph cluster_key" in out


def test_viz_only_one_client(example_repo, tmp_path, capsys):
    status, out, err = viz(capsys, example_repo, tmp_path, "-b", "-c", "WEB2.example.com")
    assert status == 0, err
    names = nodes(out)
    assert {"client:web2.example.com", "group:webserver", "group:linux", "group:no-admin",
            "group:web", "bundle:sshd"} <= names
    assert not {"group:dbserver", "group:rhel", "client:web1.example.com",
                "bundle:guest-agent"} & names
    assert ("client:web2.example.com", "group:webserver") in edges(out)


def test_viz_writes_dot_files_without_graphviz(example_repo, tmp_path, capsys, monkeypatch):
    from bcfg2.admin import viz as viz_mode

    monkeypatch.setattr(viz_mode.shutil, "which", lambda name: None)
    target = tmp_path / "groups.dot"
    status, out, err = viz(capsys, example_repo, tmp_path, "-H", "-o", str(target))
    assert status == 0, err
    assert out == ""
    assert ("client:db1.example.com", "group:dbserver") in edges(target.read_text())
    status, out, err = viz(capsys, example_repo, tmp_path, "--format", "dot", "-o",
                           str(tmp_path / "groups.txt"))
    assert status == 0, err
    assert (tmp_path / "groups.txt").read_text().startswith("digraph")
    for words in (["-o", str(tmp_path / "groups.png")], ["--format", "svg"]):
        status, out, err = viz(capsys, example_repo, tmp_path, *words)
        assert status == 1
        assert "needs graphviz" in one_error_line(err)
    assert not (tmp_path / "groups.png").exists()


def test_viz_renders_with_the_dot_program(example_repo, tmp_path, capsys, monkeypatch):
    """A stand-in dot on PATH: the source goes to its stdin, -T and -o follow the request."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "dot"
    fake.write_text(f"#!{sys.executable}\n"
                    "import sys\n"
                    "args = sys.argv[1:]\n"
                    "data = sys.stdin.read()\n"
                    "out = args[args.index('-o') + 1]\n"
                    "open(out, 'w').write(' '.join(args[:1]) + '\\n' + data)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    target = tmp_path / "groups.svg"
    status, _, err = viz(capsys, example_repo, tmp_path, "-b", "-o", str(target))
    assert status == 0, err
    first, source = target.read_text().split("\n", 1)
    assert first == "-Tsvg"
    assert ("group:linux", "bundle:ntp") in edges(source)
    fake.write_text("#!/bin/sh\necho 'Error: bad format' >&2\nexit 1\n")
    status, _, err = viz(capsys, example_repo, tmp_path, "-o", str(tmp_path / "x.nope"))
    assert status == 1
    assert "dot -Tnope: Error: bad format" in one_error_line(err)


def test_viz_errors(example_repo, tmp_path, capsys):
    status, _, err = viz(capsys, example_repo, tmp_path, "-c", "nosuch.example.com")
    assert status == 1
    assert "unknown client 'nosuch.example.com'" in one_error_line(err)
    status, _, err = viz(capsys, tmp_path / "missing", tmp_path)
    assert status == 1
    assert "does not exist" in one_error_line(err)
    status, _, err = viz(capsys, example_repo, tmp_path, "-o", str(tmp_path / "noext"))
    assert status == 1
    assert "no extension" in one_error_line(err)
    status, _, err = viz(capsys, example_repo, tmp_path, "--bogus")
    assert status == 2
    (example_repo.path / "Metadata/groups.xml").write_text("<Groups><Group name='x'\n")
    status, _, err = viz(capsys, example_repo, tmp_path)
    assert status == 1
    assert "groups.xml cannot be read" in one_error_line(err)


def test_viz_malformed_clients_xml(repo, tmp_path, capsys):
    repo.write("Metadata/clients.xml", "<Clients>\n<Client name='a' profile='basic'\n")
    status, _, err = viz(capsys, repo, tmp_path, "-H")
    assert status == 1
    assert "clients.xml cannot be read" in one_error_line(err)


def test_viz_subprocess_dot_source(example_repo, tmp_path):
    done = subprocess.run([ADMIN, *repo_args(example_repo, tmp_path), "viz", "-H", "-b"],
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert ("group:linux", "bundle:sshd") in edges(done.stdout)

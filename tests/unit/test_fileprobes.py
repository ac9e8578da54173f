"""FileProbes: files fetched from clients into Cfg, once, and only what config.xml asks for."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS, PLUGINS, Repo, wait_until

from bcfg2.core import LocalCore
from bcfg2.plugins import fileprobes

Factory = Callable[..., LocalCore]

CONFIG = """\
<FileProbes>
  <FileProbe name="/etc/foo.conf"/>
  <Group name="linux">
    <FileProbe name="/etc/blah.conf" update="true"/>
  </Group>
  <Client name="client2">
    <FileProbe name="/var/lib/bar.gz" encoding="base64"/>
  </Client>
</FileProbes>
"""
BUNDLE = """\
<Bundle>
  <Path name="/etc/foo.conf"/>
  <Path name="/etc/blah.conf"/>
  <Path name="/var/lib/bar.gz"/>
</Bundle>
"""
FOO = "# foo.conf as client1 has it\nkey = <value> & more\n"


@pytest.fixture
def probe_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)  # client1: basic, linux; client2: other
    repo.write("Bundler/base.xml", BUNDLE)
    repo.write("FileProbes/config.xml", CONFIG)
    return repo


def make(local_core: Factory, repo: Repo, **overrides: str) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",FileProbes", **overrides)


def answer(path: str, content: bytes | str, owner: str = "root", group: str = "root",
           mode: str = "0644", name: str | None = None, payload: str | None = None) -> str:
    """What the probe prints for a file (``payload`` replaces the base64 content)."""
    if isinstance(content, str):
        content = content.encode()
    body = base64.b64encode(content).decode() if payload is None else payload
    return (f"<ProbedFileData name={quoteattr(path if name is None else name)} "
            f"owner={quoteattr(owner)} group={quoteattr(group)} mode={quoteattr(mode)}>"
            f"{body}</ProbedFileData>\n")


def upload(*items: tuple[str, str]) -> str:
    """A RecvProbeData document: (probe name, probe output) pairs from FileProbes."""
    return "<ProbeData>" + "".join(
        f'<probe-data name={quoteattr(name)} source="FileProbes">{escape(text)}</probe-data>'
        for name, text in items) + "</ProbeData>"


def send(core: LocalCore, client: str, *items: tuple[str, str]) -> None:
    meta = core.build_metadata(client)
    data = lxml.etree.fromstring(upload(*items).encode())
    core.plugins["FileProbes"].ReceiveData(meta, list(data))
    core.refresh()


def probed(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    meta = core.build_metadata(client)
    return {p.get("name"): p for p in core.plugins["FileProbes"].GetProbes(meta)}


def served(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    config = core.BuildConfiguration(client)
    return {el.get("name"): el for el in config.iter("Path")}


def content(entry: lxml.etree._Element) -> bytes:
    assert "failure" not in entry.attrib, entry.get("failure")
    if entry.get("encoding") == "base64":
        return base64.b64decode(entry.text)
    return (entry.text or "").encode()


def tree(root: Path) -> dict[str, bytes]:
    """Every file below a directory with its content (what a refused upload must not change)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_each_client_is_probed_for_the_files_config_xml_gives_it(probe_repo: Repo,
                                                                 local_core) -> None:
    core = make(local_core, probe_repo)
    client1 = probed(core, "client1")
    assert sorted(client1) == ["/etc/blah.conf", "/etc/foo.conf"]
    assert sorted(probed(core, "client2")) == ["/etc/foo.conf", "/var/lib/bar.gz"]
    probe = client1["/etc/foo.conf"]
    assert (probe.get("source"), probe.get("interpreter")) == ("FileProbes", "/bin/sh")
    assert probe.text.startswith("#!/bin/sh\n") and "' /etc/foo.conf\n" in probe.text


def test_the_first_answer_is_written_with_its_info_xml(probe_repo: Repo, local_core) -> None:
    core = make(local_core, probe_repo)
    send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", FOO, owner="daemon",
                                                   group="adm", mode="0640")))
    written = probe_repo.path / "Cfg/etc/foo.conf/foo.conf.H_client1"
    assert written.read_text() == FOO
    info = lxml.etree.parse(str(probe_repo.path / "Cfg/etc/foo.conf/info.xml")).getroot()
    assert info.tag == "FileInfo"
    assert dict(info.find("Info").attrib) == {"owner": "daemon", "group": "adm", "mode": "0640"}
    entry = served(core, "client1")["/etc/foo.conf"]
    assert content(entry) == FOO.encode()
    assert (entry.get("owner"), entry.get("group"), entry.get("mode")) == ("daemon", "adm", "0640")
    # the file is served now and update is off: client1 is no longer probed for it
    assert "/etc/foo.conf" not in probed(core, "client1")
    assert "/etc/foo.conf" in probed(core, "client2")


def test_info_xml_is_written_once(probe_repo: Repo, local_core) -> None:
    core = make(local_core, probe_repo)
    send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", FOO, mode="0640")))
    infoxml = probe_repo.path / "Cfg/etc/foo.conf/info.xml"
    edited = '<FileInfo><Info owner="root" group="root" mode="0600"/></FileInfo>\n'
    infoxml.write_text(edited)  # the admin's change stands
    send(core, "client2", ("/etc/foo.conf", answer("/etc/foo.conf", "client2's\n",
                                                   owner="nobody", mode="0666")))
    assert (probe_repo.path / "Cfg/etc/foo.conf/foo.conf.H_client2").read_text() == "client2's\n"
    assert infoxml.read_text() == edited
    assert served(core, "client2")["/etc/foo.conf"].get("mode") == "0600"


def test_without_update_the_repository_copy_wins(probe_repo: Repo, local_core, caplog) -> None:
    core = make(local_core, probe_repo)
    send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", FOO)))
    with caplog.at_level(logging.INFO):
        send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", "changed\n")))
    assert "kept the repository's (update is off)" in caplog.text
    assert (probe_repo.path / "Cfg/etc/foo.conf/foo.conf.H_client1").read_text() == FOO


def test_an_answer_before_cfg_has_read_the_first_changes_nothing(probe_repo: Repo,
                                                                 local_core) -> None:
    core = make(local_core, probe_repo)
    plugin = core.plugins["FileProbes"]
    meta = core.build_metadata("client1")
    for text, mode in ((FOO, "0640"), ("second\n", "0600")):
        data = lxml.etree.fromstring(upload(("/etc/foo.conf", answer(
            "/etc/foo.conf", text, mode=mode))).encode())
        plugin.ReceiveData(meta, list(data))  # no refresh: Cfg has not seen the first file
    assert (probe_repo.path / "Cfg/etc/foo.conf/foo.conf.H_client1").read_text() == FOO
    assert 'mode="0640"' in (probe_repo.path / "Cfg/etc/foo.conf/info.xml").read_text()


def test_with_update_the_client_copy_is_written_again(probe_repo: Repo, local_core) -> None:
    core = make(local_core, probe_repo)
    send(core, "client1", ("/etc/blah.conf", answer("/etc/blah.conf", "v1\n", mode="0600")))
    assert content(served(core, "client1")["/etc/blah.conf"]) == b"v1\n"
    assert "/etc/blah.conf" in probed(core, "client1")  # still probed: update is on
    send(core, "client1", ("/etc/blah.conf", answer("/etc/blah.conf", "v2\n", mode="0644")))
    assert content(served(core, "client1")["/etc/blah.conf"]) == b"v2\n"
    info = (probe_repo.path / "Cfg/etc/blah.conf/info.xml").read_text()
    assert 'mode="0600"' in info  # info.xml is still the first one


def test_a_file_cfg_already_serves_is_neither_probed_nor_written(probe_repo: Repo,
                                                                 local_core) -> None:
    probe_repo.write("Cfg/etc/foo.conf/foo.conf", "the site's foo.conf\n")
    core = make(local_core, probe_repo)
    assert "/etc/foo.conf" not in probed(core, "client1")
    before = tree(probe_repo.path / "Cfg")
    send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", FOO)))
    assert tree(probe_repo.path / "Cfg") == before


def test_a_binary_file_with_encoding_base64(probe_repo: Repo, local_core) -> None:
    data = bytes(range(256)) * 4
    core = make(local_core, probe_repo)
    send(core, "client2", ("/var/lib/bar.gz", answer("/var/lib/bar.gz", data)))
    assert (probe_repo.path / "Cfg/var/lib/bar.gz/bar.gz.H_client2").read_bytes() == data
    info = (probe_repo.path / "Cfg/var/lib/bar.gz/info.xml").read_text()
    assert 'encoding="base64"' in info
    entry = served(core, "client2")["/var/lib/bar.gz"]
    assert entry.get("encoding") == "base64" and content(entry) == data


def test_no_file_on_the_client_writes_nothing(probe_repo: Repo, local_core) -> None:
    core = make(local_core, probe_repo)
    send(core, "client1", ("/etc/foo.conf", ""))
    assert not (probe_repo.path / "Cfg/etc").exists()


needs_python_on_path = pytest.mark.skipif(
    not any(shutil.which(p) for p in ("python3", "python", "python2")),
    reason="the probe needs a python on PATH")


@needs_python_on_path
def test_the_probe_script_reports_a_file_the_plugin_accepts(probe_repo: Repo, local_core,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "client root" / "foo's.conf"
    target.parent.mkdir()
    data = b"line <one> & \"two\"\n\x00\xff binary tail"
    target.write_bytes(data)
    target.chmod(0o640)
    script = fileprobes.probe_script(str(target))

    def run(script: str) -> str:
        done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout

    output = run(script)
    reported = lxml.etree.fromstring(output.encode())
    assert reported.tag == "ProbedFileData"
    assert reported.get("name") == str(target)
    assert reported.get("mode") == "0640"
    assert reported.get("owner") == __import__("pwd").getpwuid(os.getuid()).pw_name
    assert base64.b64decode(reported.text) == data
    assert run(fileprobes.probe_script(str(tmp_path / "missing"))) == ""
    # what the script printed for /etc/foo.conf is what the plugin stores
    core = make(local_core, probe_repo)
    conf = tmp_path / "foo.conf"
    conf.write_text(FOO)
    output = run(fileprobes.probe_script(str(conf))).replace(str(conf), "/etc/foo.conf")
    send(core, "client1", ("/etc/foo.conf", output))
    assert content(served(core, "client1")["/etc/foo.conf"]) == FOO.encode()


# -- hostile answers -------------------------------------------------------------------

HOSTILE = {
    "a path config.xml does not list": ("/etc/shadow", answer("/etc/shadow", "root:x\n"),
                                        "asks this client for no such file"),
    "a file of another client": ("/var/lib/bar.gz", answer("/var/lib/bar.gz", "x"),
                                 "asks this client for no such file"),
    "a path with ..": ("/etc/../etc/foo.conf", answer("/etc/../etc/foo.conf", "x"),
                       "not an absolute, normalised path"),
    "a relative path": ("etc/foo.conf", answer("etc/foo.conf", "x"),
                        "not an absolute, normalised path"),
    "an answer for another file": ("/etc/foo.conf", answer("/etc/foo.conf", "x",
                                                           name="/etc/blah.conf"),
                                   "not a <ProbedFileData> answer for this file"),
    "bad base64": ("/etc/foo.conf", answer("/etc/foo.conf", "", payload="not*base64!"),
                   "not valid base64"),
    "a newline in the owner": ("/etc/foo.conf", answer("/etc/foo.conf", "x", owner="root\nx"),
                               "owner 'root\\nx' is not valid"),
    "a path as the group": ("/etc/foo.conf", answer("/etc/foo.conf", "x", group="../adm"),
                            "group '../adm' is not valid"),
    "a mode that is no mode": ("/etc/foo.conf", answer("/etc/foo.conf", "x", mode="4755 "),
                               "mode '4755 ' is not valid"),
    "not XML": ("/etc/foo.conf", "cat: /etc/foo.conf: Permission denied", "malformed"),
    "an entity": ("/etc/foo.conf", '<!DOCTYPE x [<!ENTITY e "boom">]>'
                                   '<ProbedFileData name="/etc/foo.conf">&e;</ProbedFileData>',
                  "DTD"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_answer_is_refused_and_writes_nothing(probe_repo: Repo, local_core, caplog,
                                                        case: str) -> None:
    name, text, reason = HOSTILE[case]
    core = make(local_core, probe_repo)
    with caplog.at_level(logging.WARNING):
        send(core, "client1", (name, text))
    assert "file probe" in caplog.text and "from client1 refused" in caplog.text
    assert reason in caplog.text
    assert "\n" not in caplog.records[-1].getMessage()  # client text is escaped
    assert tree(probe_repo.path / "Cfg") == {}


@pytest.mark.parametrize("size, limit", [(101, 100), (3 * 1024 * 1024, 1024 * 1024)])
def test_an_oversized_file_is_refused(probe_repo: Repo, local_core, caplog, size: int,
                                      limit: int) -> None:
    core = make(local_core, probe_repo, fileprobes__max_file_size=str(limit))
    with caplog.at_level(logging.WARNING):
        send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", b"x" * size)))
    assert f"max_file_size ({limit}" in caplog.text
    assert tree(probe_repo.path / "Cfg") == {}


@pytest.mark.parametrize("hostname", ["../../evil", "a/b", "client1\n", "..", "x" * 300])
def test_a_host_name_unfit_for_a_file_name_is_refused(probe_repo: Repo, local_core, caplog,
                                                      hostname: str) -> None:
    core = make(local_core, probe_repo)
    meta = core.build_metadata("client1").copy()
    meta.hostname = hostname
    data = lxml.etree.fromstring(upload(("/etc/foo.conf", answer("/etc/foo.conf", FOO))).encode())
    before = tree(probe_repo.path.parent)
    with caplog.at_level(logging.WARNING):
        core.plugins["FileProbes"].ReceiveData(meta, list(data))
    assert "cannot be part of a file name" in caplog.text
    assert tree(probe_repo.path.parent) == before


def test_a_cfg_directory_leading_out_of_cfg_is_refused(probe_repo: Repo, local_core,
                                                       tmp_path: Path, caplog) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (probe_repo.path / "Cfg/etc").symlink_to(outside)
    core = make(local_core, probe_repo)
    with caplog.at_level(logging.WARNING):
        send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", FOO)))
    assert "leads out of Cfg" in caplog.text
    assert list(outside.iterdir()) == []


def test_a_repository_reached_through_a_symlink_is_written(probe_repo: Repo, local_core,
                                                           tmp_path: Path) -> None:
    link = tmp_path / "repo-link"
    link.symlink_to(probe_repo.path)
    core = make(local_core, link)
    send(core, "client1", ("/etc/foo.conf", answer("/etc/foo.conf", FOO)))
    assert (probe_repo.path / "Cfg/etc/foo.conf/foo.conf.H_client1").read_text() == FOO


def test_one_bad_answer_does_not_stop_the_good_ones(probe_repo: Repo, local_core) -> None:
    core = make(local_core, probe_repo)
    send(core, "client1", ("/etc/shadow", answer("/etc/shadow", "root:x\n")),
         ("/etc/foo.conf", answer("/etc/foo.conf", FOO)))
    assert sorted(tree(probe_repo.path / "Cfg")) == ["etc/foo.conf/foo.conf.H_client1",
                                                     "etc/foo.conf/info.xml"]


@pytest.mark.parametrize("name", ["foo.conf", "foo.conf\n", "/etc/", "a/../../b", "a/./b",
                                  "/etc/foo conf", "/etc//foo", "/" + "x" * 256, "/etc/\x00"])
def test_config_xml_names_must_be_clean_absolute_paths(probe_repo: Repo, local_core, caplog,
                                                       name: str) -> None:
    probe_repo.write("FileProbes/config.xml",
                     f"<FileProbes><FileProbe name={quoteattr(name)}/></FileProbes>"
                     if "\x00" not in name else "<FileProbes><FileProbe name='/etc/&#0;'/>"
                     "</FileProbes>")
    with caplog.at_level(logging.ERROR):
        core = make(local_core, probe_repo)
    assert "FileProbes/config.xml" in caplog.text
    assert probed(core, "client1") == {}


def test_write_file_never_replaces_unless_told(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f"
    assert fileprobes.write_file(str(target), b"first", replace=False) is True
    assert fileprobes.write_file(str(target), b"second", replace=False) is False
    assert target.read_bytes() == b"first"
    assert fileprobes.write_file(str(target), b"third", replace=True) is True
    assert target.read_bytes() == b"third"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(target.parent)) == ["f"]  # no temporary file left behind


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_an_agent_run_probes_stores_and_gets_the_file(probe_repo: Repo, network_server,
                                                     core: str) -> None:
    server = network_server(probe_repo, core=core, server__plugins=PLUGINS + ",FileProbes",
                            server__children="2")
    agent = server.proxy("uuid-client1", "pw1")
    probes = lxml.etree.fromstring(agent.GetProbes().encode())
    names = {p.get("name"): p.get("source") for p in probes.iter("probe")}
    assert names == {"/etc/foo.conf": "FileProbes", "/etc/blah.conf": "FileProbes"}
    assert agent.RecvProbeData(upload(("/etc/foo.conf", answer(
        "/etc/foo.conf", FOO, owner="daemon", mode="0600")))) is True
    assert (probe_repo.path / "Cfg/etc/foo.conf/foo.conf.H_client1").read_text() == FOO

    def foo() -> dict[str, str] | None:
        config = lxml.etree.fromstring(agent.GetConfig().encode())
        entry = config.find("Bundle/Path[@name='/etc/foo.conf']")
        if entry is None or "failure" in entry.attrib:
            return None
        return {"text": entry.text, **entry.attrib}

    entry = wait_until(foo, 30, "the probed file to be served")
    assert entry["text"] == FOO
    assert (entry["owner"], entry["mode"]) == ("daemon", "0600")

    def probed_for() -> list[str]:
        probes = lxml.etree.fromstring(agent.GetProbes().encode())
        return [p.get("name") for p in probes.iter("probe")]

    # (the multiprocessing parent, which answers GetProbes, notices the file on its own)
    wait_until(lambda: probed_for() == ["/etc/blah.conf"], 30, "foo.conf to be probed no more")

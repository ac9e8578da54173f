"""Cfg: file contents and metadata for Path entries."""

from __future__ import annotations

import base64
import logging
import os
import shutil
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import ALL_BASE_GROUPS as GROUPS
from conftest import Repo

from bcfg2.core import LocalCore
from bcfg2.filemonitor import Event
from bcfg2.xml import tostring

Factory = Callable[..., LocalCore]


MDATA_DEFAULTS = {"owner": "root", "group": "root", "mode": "644", "paranoid": "true",
                  "sensitive": "false", "important": "false", "secontext": "__default__"}


def bundle(repo: Repo, *paths: str, extra: str = "") -> None:
    """Both clients get the bundle "base" with these Path entries."""
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "".join(
        f'<Path name="{path}"/>\n' for path in paths) + extra + "</Bundle>\n")


def paths(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    config = core.BuildConfiguration(client)
    assert config.tag == "Configuration"
    return {el.get("name"): el for el in config.iter("Path")}


def content(entry: lxml.etree._Element) -> bytes:
    """What the agent writes to disk for a bound Path entry."""
    if entry.get("empty") == "true":
        assert not entry.text
        return b""
    if entry.get("encoding") == "base64":
        return base64.b64decode(entry.text)
    return entry.text.encode("utf-8")




def test_plain_file_with_default_metadata(repo: Repo, local_core: Factory) -> None:
    text = "Welcome to <this> host & enjoy\n"
    bundle(repo, "/etc/motd")
    repo.write("Cfg/etc/motd/motd", text)
    core = local_core(repo)
    motd = paths(core, "client1")["/etc/motd"]
    assert "failure" not in motd.attrib
    assert motd.get("type") == "file"
    assert motd.get("encoding") is None
    assert motd.text == text
    assert {key: motd.get(key) for key in MDATA_DEFAULTS} == MDATA_DEFAULTS
    # and on the wire, the text survives escaping
    wire = lxml.etree.fromstring(tostring(core.BuildConfiguration("client1")))
    assert wire.find(".//Path").text == text


@pytest.mark.parametrize("overrides", [
    {"owner": "bin", "group": "staff", "mode": "0600"},
    {"paranoid": "false", "sensitive": "true", "important": "true"},
    {"secontext": "system_u:object_r:etc_t:s0"},
])
def test_mdata_overrides_defaults(repo: Repo, local_core: Factory,
                                  overrides: dict[str, str]) -> None:
    bundle(repo, "/etc/motd")
    repo.write("Cfg/etc/motd/motd", "hi\n")
    core = local_core(repo, **{f"mdata__{key}": value for key, value in overrides.items()})
    motd = paths(core, "client1")["/etc/motd"]
    assert {key: motd.get(key) for key in MDATA_DEFAULTS} == {**MDATA_DEFAULTS, **overrides}


def test_group_and_host_specific_versions(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/fstab")
    versions = {"fstab": "all\n", "fstab.G10_linux": "linux\n", "fstab.G20_basic": "basic\n",
                "fstab.G99_nobody": "nobody\n", "fstab.H_client2": "client2 only\n"}
    for name, text in versions.items():
        repo.write(f"Cfg/etc/fstab/{name}", text)
    core = local_core(repo)
    # client1 is in basic (20) and linux (10): the higher priority wins
    assert paths(core, "client1")["/etc/fstab"].text == versions["fstab.G20_basic"]
    # a host-specific file beats everything
    assert paths(core, "client2")["/etc/fstab"].text == versions["fstab.H_client2"]


def test_group_beats_all_and_all_is_the_fallback(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/fstab")
    versions = {"fstab": "all\n", "fstab.G01_linux": "linux\n"}
    for name, text in versions.items():
        repo.write(f"Cfg/etc/fstab/{name}", text)
    core = local_core(repo)
    assert paths(core, "client1")["/etc/fstab"].text == versions["fstab.G01_linux"]
    assert paths(core, "client2")["/etc/fstab"].text == versions["fstab"]


def test_nested_paths(repo: Repo, local_core: Factory) -> None:
    files = {"/etc/ssh/sshd_config": "Port 22\n", "/etc/ssh/ssh_config": "Host *\n",
             "/usr/local/etc/deep/tool.conf": "x = 1\n"}
    bundle(repo, *files)
    for path, text in files.items():
        repo.write(f"Cfg{path}/{os.path.basename(path)}", text)
    core = local_core(repo)
    bound = paths(core, "client1")
    assert {name: el.text for name, el in bound.items()} == files
    assert sorted(core.plugins["Cfg"].Entries["Path"]) == sorted(files)


def test_info_xml_per_group_and_host(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/sudoers")
    repo.write("Cfg/etc/sudoers/sudoers", "root ALL=(ALL) ALL\n")
    repo.write("Cfg/etc/sudoers/info.xml", """\
        <FileInfo>
          <Client name="client2">
            <Info owner="root" group="wheel" mode="0400" paranoid="false" sensitive="true"/>
          </Client>
          <Group name="linux">
            <Info mode="0440" important="true">
              <ACL type="access" scope="group" group="admins" perms="r"/>
            </Info>
          </Group>
        </FileInfo>""")
    core = local_core(repo)
    one = paths(core, "client1")["/etc/sudoers"]
    assert {key: one.get(key) for key in MDATA_DEFAULTS} == {
        **MDATA_DEFAULTS, "mode": "0440", "important": "true"}
    assert [(acl.get("group"), acl.get("perms")) for acl in one.iter("ACL")] == [("admins", "r")]
    two = paths(core, "client2")["/etc/sudoers"]
    assert {key: two.get(key) for key in MDATA_DEFAULTS} == {
        **MDATA_DEFAULTS, "group": "wheel", "mode": "0400", "paranoid": "false",
        "sensitive": "true"}
    assert two.find("ACL") is None


def test_binary_content_is_base64(repo: Repo, local_core: Factory) -> None:
    data = bytes(range(256)) * 3
    bundle(repo, "/usr/share/blob")
    repo.write("Cfg/usr/share/blob/blob", data)
    core = local_core(repo)
    blob = paths(core, "client1")["/usr/share/blob"]
    assert blob.get("encoding") == "base64"
    assert content(blob) == data
    wire = lxml.etree.fromstring(tostring(core.BuildConfiguration("client1")))
    assert content(wire.find(".//Path")) == data


@pytest.mark.parametrize("data", [b"bell\x07 and \x01 start\n", b"nul\x00byte", b"\xff\xfe\n"])
def test_text_that_xml_cannot_carry_is_base64(repo: Repo, local_core: Factory,
                                              data: bytes) -> None:
    bundle(repo, "/etc/odd")
    repo.write("Cfg/etc/odd/odd", data)
    core = local_core(repo)
    odd = paths(core, "client1")["/etc/odd"]
    assert odd.get("encoding") == "base64"
    assert content(odd) == data


def test_utf8_text_is_sent_as_text(repo: Repo, local_core: Factory) -> None:
    text = "Grüße, 日本\n"
    bundle(repo, "/etc/greeting")
    repo.write("Cfg/etc/greeting/greeting", text.encode("utf-8"))
    core = local_core(repo)
    greeting = paths(core, "client1")["/etc/greeting"]
    assert greeting.get("encoding") is None
    assert greeting.text == text


def test_info_xml_can_force_base64(repo: Repo, local_core: Factory) -> None:
    text = "plain text\n"
    bundle(repo, "/etc/plain")
    repo.write("Cfg/etc/plain/plain", text)
    repo.write("Cfg/etc/plain/info.xml", '<FileInfo><Info encoding="base64"/></FileInfo>')
    core = local_core(repo)
    plain = paths(core, "client1")["/etc/plain"]
    assert plain.get("encoding") == "base64"
    assert content(plain) == text.encode()


def test_empty_file(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/empty")
    repo.write("Cfg/etc/empty/empty", b"")
    core = local_core(repo)
    empty = paths(core, "client1")["/etc/empty"]
    assert empty.get("empty") == "true"
    assert empty.text is None
    assert "failure" not in empty.attrib


def test_entry_no_version_applies_to_fails_alone(repo: Repo, local_core: Factory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    bundle(repo, "/etc/web.conf", "/etc/motd")
    repo.write("Cfg/etc/web.conf/web.conf.G50_web", "web\n")
    repo.write("Cfg/etc/motd/motd", "hi\n")
    core = local_core(repo)
    caplog.set_level(logging.ERROR)
    bound = paths(core, "client1")
    assert "/etc/web.conf" in bound["/etc/web.conf"].get("failure")
    assert bound["/etc/web.conf"].text is None
    assert bound["/etc/motd"].text == "hi\n"
    assert "failure" not in bound["/etc/motd"].attrib
    assert "/etc/web.conf" in caplog.text


def test_equally_specific_versions_fail_naming_both(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/motd", "/etc/issue")
    repo.write("Cfg/etc/motd/motd.G50_basic", "basic\n")
    repo.write("Cfg/etc/motd/motd.G50_linux", "linux\n")
    repo.write("Cfg/etc/issue/issue", "issue\n")
    core = local_core(repo)
    bound = paths(core, "client1")
    failure = bound["/etc/motd"].get("failure")
    assert "motd.G50_basic" in failure and "motd.G50_linux" in failure
    assert bound["/etc/issue"].text == "issue\n"
    # client2 is in neither group, so the tie does not exist for it
    assert "no version" in paths(core, "client2")["/etc/motd"].get("failure")


def test_altsrc_binds_from_another_entry_but_keeps_its_name(repo: Repo,
                                                            local_core: Factory) -> None:
    text = "127.0.0.1 localhost\n"
    bundle(repo, "/etc/hosts", extra='<Path name="/etc/inet/hosts" altsrc="/etc/hosts"/>\n')
    repo.write("Cfg/etc/hosts/hosts", text)
    repo.write("Cfg/etc/hosts/info.xml", """\
        <FileInfo>
          <Path name="/etc/inet/hosts"><Info mode="0444"/></Path>
          <Path name="/etc/inet/hosts" negate="true"><Info mode="0644"/></Path>
        </FileInfo>""")
    core = local_core(repo)
    bound = paths(core, "client1")
    assert sorted(bound) == ["/etc/hosts", "/etc/inet/hosts"]
    alt = bound["/etc/inet/hosts"]
    assert alt.text == text
    assert alt.get("mode") == "0444"
    assert "altsrc" not in alt.attrib and "realname" not in alt.attrib
    assert bound["/etc/hosts"].get("mode") == "0644"
    # there is no Cfg entry of that name: without altsrc it would fail
    assert "/etc/inet/hosts" not in core.plugins["Cfg"].Entries["Path"]


def test_changes_on_disk_are_picked_up(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/motd", "/etc/later")
    main = repo.write("Cfg/etc/motd/motd", "v1\n")
    core = local_core(repo)
    assert paths(core, "client1")["/etc/motd"].text == "v1\n"
    assert paths(core, "client1")["/etc/later"].get("failure") == "no matching generator"

    before = main.stat().st_mtime_ns
    main.write_text("v2\n")
    os.utime(main, ns=(before + 10**9, before + 10**9))
    repo.write("Cfg/etc/motd/motd.G50_linux", "linux\n")
    repo.write("Cfg/etc/later/later", "new\n")
    core.refresh()
    assert paths(core, "client1")["/etc/motd"].text == "linux\n"
    assert paths(core, "client2")["/etc/motd"].text == "v2\n"
    assert paths(core, "client1")["/etc/later"].text == "new\n"

    os.unlink(repo.path / "Cfg/etc/motd/motd.G50_linux")
    os.unlink(repo.path / "Cfg/etc/later/later")
    core.refresh()
    assert paths(core, "client1")["/etc/motd"].text == "v2\n"
    assert paths(core, "client1")["/etc/later"].get("failure") == "no matching generator"


def test_files_directly_in_cfg_and_odd_names_are_ignored(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    bundle(repo, "/etc/motd", "/stray")
    repo.write("Cfg/stray", "not in a directory\n")
    repo.write("Cfg/etc/motd/motd", "hi\n")
    repo.write("Cfg/etc/motd/motd.orig", "old\n")
    repo.write("Cfg/etc/motd/motd~", "editor backup\n")
    core = local_core(repo)
    bound = paths(core, "client1")
    assert bound["/etc/motd"].text == "hi\n"
    assert bound["/stray"].get("failure") == "no matching generator"
    assert "motd.orig" in caplog.text
    assert "stray" in caplog.text


def test_info_xml_edits_and_bad_edits(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/motd")
    repo.write("Cfg/etc/motd/motd", "hi\n")
    info = repo.write("Cfg/etc/motd/info.xml", '<FileInfo><Info mode="0600"/></FileInfo>')
    core = local_core(repo)
    assert paths(core, "client1")["/etc/motd"].get("mode") == "0600"

    def edit(text: str) -> None:
        before = info.stat().st_mtime_ns
        info.write_text(text)
        os.utime(info, ns=(before + 10**9, before + 10**9))
        core.refresh()

    edit('<FileInfo><Info mode="0640" owner="www"/></FileInfo>')
    motd = paths(core, "client1")["/etc/motd"]
    assert (motd.get("mode"), motd.get("owner")) == ("0640", "www")

    edit('<FileInfo><Info mode="0000"></FileInfo>')
    motd = paths(core, "client1")["/etc/motd"]
    assert (motd.get("mode"), motd.get("owner")) == ("0640", "www")

    info.unlink()
    core.refresh()
    motd = paths(core, "client1")["/etc/motd"]
    assert (motd.get("mode"), motd.get("owner")) == (MDATA_DEFAULTS["mode"],
                                                     MDATA_DEFAULTS["owner"])


def test_removed_directory_is_forgotten(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/motd", "/etc/app/app.conf")
    repo.write("Cfg/etc/motd/motd", "hi\n")
    repo.write("Cfg/etc/app/app.conf/app.conf", "x\n")
    core = local_core(repo)
    assert paths(core, "client1")["/etc/app/app.conf"].text == "x\n"
    shutil.rmtree(repo.path / "Cfg/etc/app")
    core.refresh()
    bound = paths(core, "client1")
    assert bound["/etc/app/app.conf"].get("failure") == "no matching generator"
    assert bound["/etc/motd"].text == "hi\n"
    assert sorted(core.plugins["Cfg"].Entries["Path"]) == ["/etc/motd"]

    repo.write("Cfg/etc/app/app.conf/app.conf", "back\n")
    core.refresh()
    assert paths(core, "client1")["/etc/app/app.conf"].text == "back\n"


def test_a_directory_that_appears_is_served_once_all_its_files_are_read(
        repo: Repo, local_core: Factory) -> None:
    """A directory written whole (FileProbes does: info.xml, then the content) is listed
    by the monitor in name order, content first: the entry must not be served with the
    default owner and mode in between."""
    bundle(repo, "/etc/new.conf")
    repo.write("Cfg/etc/motd/motd", "x\n")
    core = local_core(repo)
    repo.write("Cfg/etc/new.conf/info.xml", '<FileInfo><Info owner="daemon" mode="0600"/>'
                                            '</FileInfo>')
    repo.write("Cfg/etc/new.conf/new.conf.H_client1", "probed\n")
    directory = str(repo.path / "Cfg/etc/new.conf")
    core.plugins["Cfg"].HandleEvent(Event(0, directory, "created", directory))
    fam = core.fam
    listed = [fam.events.popleft() for _ in range(fam.pending())]
    assert sorted((e.action, os.path.basename(e.path)) for e in listed) == [
        ("endExist", "new.conf"), ("exists", "info.xml"), ("exists", "new.conf.H_client1")]
    assert listed[-1].action == "endExist"
    order = sorted(listed[:-1], key=lambda e: not e.path.endswith("H_client1"))  # content first
    for event in order:
        fam.handle_one_event(event)
        assert "failure" in paths(core, "client1")["/etc/new.conf"].attrib  # not yet served
    fam.handle_one_event(listed[-1])  # the end of the listing
    entry = paths(core, "client1")["/etc/new.conf"]
    assert (entry.text, entry.get("owner"), entry.get("mode")) == ("probed\n", "daemon", "0600")

"""The agent's POSIX driver, against a throwaway root under tmp_path."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import lxml.etree
import pytest

from bcfg2 import options
from bcfg2.client.drivers.base import Context, EntryState
from bcfg2.client.drivers.posix import POSIX, acl_perms

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
ACL_TOOLS = pytest.mark.skipif(not (shutil.which("getfacl") and shutil.which("setfacl")),
                               reason="getfacl/setfacl (Debian package acl) are not installed")


def path(name: str, kind: str = "file", text: str | None = None, **attrs: str) -> lxml.etree._Element:
    defaults = {"owner": "root", "group": "root", "mode": "0644"} \
        if kind in ("file", "directory", "permissions") else {}
    entry = lxml.etree.Element("Path", {"name": name, "type": kind, **defaults, **attrs})
    entry.text = text
    return entry


@pytest.fixture
def root(tmp_path: Path) -> Path:
    target = tmp_path / "root"
    target.mkdir()
    return target


def driver(root: Path, dry_run: bool = False, **cli: str) -> POSIX:
    setup = options.build_client("/dev/null", cli)
    return POSIX(Context(root=str(root), dry_run=dry_run, setup=setup))


def apply(posix: POSIX, entry: lxml.etree._Element, modlist: list[str] = ()) -> EntryState:
    """Verify, install, verify again: the state after."""
    first = posix.verify(entry, list(modlist) or [entry.get("name")])
    if not first.correct:
        assert posix.install([entry]) == {("Path", entry.get("name")): True}
    return posix.verify(entry, list(modlist) or [entry.get("name")])


def test_a_missing_file_is_written_with_its_mode_under_the_root(root: Path) -> None:
    posix = driver(root)
    entry = path("/etc/motd", text="hello\nworld\n", mode="0640")
    state = posix.verify(entry, ["/etc/motd"])
    assert not state.correct and state.reasons == ["does not exist"]
    assert entry.get("current_exists") == "false"
    assert "+hello" in state.diff and "+world" in state.diff
    assert posix.install([entry]) == {("Path", "/etc/motd"): True}
    written = root / "etc/motd"
    assert written.read_text() == "hello\nworld\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o755  # a created parent
    assert posix.verify(entry, ["/etc/motd"]).correct
    assert os.listdir(root / "etc") == ["motd"]  # no temporary file left


def test_a_changed_file_gets_a_diff_and_is_replaced_atomically(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.0.0.1 old\n")
    os.chmod(root / "etc/hosts", 0o644)
    reader = open(root / "etc/hosts")  # noqa: SIM115 - a reader holding the old file
    posix = driver(root)
    entry = path("/etc/hosts", text="127.0.0.1 localhost\n10.0.0.2 new\n")
    state = posix.verify(entry, [])
    assert state.reasons == ["content differs"]
    assert state.diff.splitlines() == [
        "--- /etc/hosts (on the host)", "+++ /etc/hosts (from the server)", "@@ -1,2 +1,2 @@",
        " 127.0.0.1 localhost", "-10.0.0.1 old", "+10.0.0.2 new"]
    assert base64.b64decode(entry.get("current_bdiff")).decode() == state.diff
    assert posix.install([entry])[("Path", "/etc/hosts")]
    assert (root / "etc/hosts").read_text().endswith("new\n")
    assert reader.read().endswith("old\n")  # the old file was renamed over, never rewritten
    reader.close()


def test_sensitive_contents_are_never_diffed_reported_or_logged(root: Path, caplog) -> None:
    (root / "etc").mkdir()
    (root / "etc/shadow").write_text("old-secret-hash\n")
    os.chmod(root / "etc/shadow", 0o600)
    posix = driver(root)
    entry = path("/etc/shadow", text="new-secret-hash\n", mode="0600", sensitive="true")
    with caplog.at_level(logging.DEBUG):
        state = posix.verify(entry, [])
        assert state.reasons == ["content differs"] and state.diff == ""
        assert posix.install([entry])[("Path", "/etc/shadow")]
    assert "current_bdiff" not in entry.attrib and "current_bfile" not in entry.attrib
    assert "secret-hash" not in caplog.text
    assert (root / "etc/shadow").read_text() == "new-secret-hash\n"


def test_base64_and_empty_files_and_one_without_content(root: Path) -> None:
    posix = driver(root)
    binary = path("/bin/blob", text=base64.b64encode(b"\x00\x01\xff").decode(),
                  encoding="base64")
    state = posix.verify(binary, [])
    assert state.diff == "(binary file, no diff)" or state.diff == ""
    assert apply(posix, binary).correct
    assert (root / "bin/blob").read_bytes() == b"\x00\x01\xff"
    empty = path("/etc/empty", empty="true")
    assert apply(posix, empty).correct and (root / "etc/empty").read_bytes() == b""
    nothing = path("/etc/nothing")
    assert posix.verify(nothing, []).reasons == [
        'has no content (give it empty="true" to mean an empty file)']
    assert posix.install([nothing]) == {("Path", "/etc/nothing"): False}
    assert not (root / "etc/nothing").exists()


def test_a_binary_file_that_differs_is_sent_whole_not_diffed(root: Path) -> None:
    (root / "blob").write_bytes(b"\x00old")
    entry = path("/blob", text=base64.b64encode(b"\x00new").decode(), encoding="base64")
    state = driver(root).verify(entry, [])
    assert state.diff == "(binary file, no diff)"
    assert base64.b64decode(entry.get("current_bfile")) == b"\x00old"


def test_paranoid_mode_keeps_max_copies_backups(root: Path, tmp_path: Path) -> None:
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[client]\nparanoid = true\n[paranoid]\npath = /var/cache/bcfg2\n"
                    "max_copies = 2\n")
    posix = POSIX(Context(root=str(root), setup=options.build_client(str(conf))))
    (root / "etc").mkdir()
    (root / "etc/app.conf").write_text("version 0\n")
    for version in (1, 2, 3):
        entry = path("/etc/app.conf", text=f"version {version}\n", paranoid="true")
        assert apply(posix, entry).correct
    backups = sorted((root / "var/cache/bcfg2").iterdir())
    assert [b.name.rsplit("_", 1)[0] for b in backups] == ["_etc_app.conf"] * 2
    assert [b.read_text() for b in backups] == ["version 1\n", "version 2\n"]
    # not paranoid="true" on the entry: no backup
    assert apply(posix, path("/etc/app.conf", text="version 4\n", paranoid="false")).correct
    assert len(list((root / "var/cache/bcfg2").iterdir())) == 2


def test_without_paranoid_mode_nothing_is_backed_up(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/app.conf").write_text("old\n")
    assert apply(driver(root), path("/etc/app.conf", text="new\n", paranoid="true")).correct
    assert not (root / "var").exists()


def test_directory_created_pruned_and_replacing_a_file(root: Path) -> None:
    posix = driver(root)
    assert apply(posix, path("/srv/www", "directory", mode="0750")).correct
    assert stat.S_IMODE((root / "srv/www").stat().st_mode) == 0o750
    (root / "srv/www/keep.html").write_text("kept")
    (root / "srv/www/stray.html").write_text("stray")
    (root / "srv/www/stray.d").mkdir()
    (root / "srv/www/stray.d/x").write_text("x")
    (root / "srv/www/holds/deep").mkdir(parents=True)  # holds a managed path: kept
    pruned = path("/srv/www", "directory", mode="0750", prune="true")
    modlist = ["/srv/www", "/srv/www/keep.html", "/srv/www/holds/deep/file"]
    state = posix.verify(pruned, modlist)
    assert state.reasons == ["holds 2 path(s) not in the configuration: "
                             "/srv/www/stray.d, /srv/www/stray.html"]
    assert [p.get("name") for p in pruned.findall("Prune")] == ["/srv/www/stray.d",
                                                                "/srv/www/stray.html"]
    assert posix.install([pruned])[("Path", "/srv/www")]
    assert sorted(os.listdir(root / "srv/www")) == ["holds", "keep.html"]
    assert posix.verify(pruned, modlist).correct
    (root / "srv/file").write_text("in the way")
    entry = path("/srv/file", "directory")
    assert posix.verify(entry, []).reasons == ["is a file, should be a directory"]
    assert apply(posix, entry).correct and (root / "srv/file").is_dir()


def test_symlinks_and_hardlinks(root: Path) -> None:
    posix = driver(root)
    link = lxml.etree.Element("Path", name="/etc/alternatives/editor", type="symlink",
                              to="/usr/bin/vim")
    assert apply(posix, link).correct
    assert os.readlink(root / "etc/alternatives/editor") == "/usr/bin/vim"
    other = lxml.etree.Element("Path", name="/etc/alternatives/editor", type="symlink",
                               to="/usr/bin/nano")
    assert posix.verify(other, []).reasons == [
        "points to '/usr/bin/vim', should point to '/usr/bin/nano'"]
    assert other.get("current_to") == "/usr/bin/vim"
    assert apply(posix, other).correct
    (root / "data").write_text("shared")
    hard = path("/data.link", "hardlink", to="/data", owner="root", group="root",
                mode="0644")
    assert posix.verify(hard, []).reasons == ["does not exist"]
    assert apply(posix, hard).correct
    assert (root / "data.link").stat().st_ino == (root / "data").stat().st_ino


def test_permissions_of_existing_paths_recursively(root: Path) -> None:
    posix = driver(root)
    missing = path("/nowhere", "permissions", mode="0700")
    assert posix.verify(missing, []).reasons == ["does not exist"]
    assert posix.install([missing]) == {("Path", "/nowhere"): False}
    (root / "tree/sub").mkdir(parents=True)
    (root / "tree/sub/file").write_text("x")
    os.symlink("/etc/passwd", root / "tree/link")  # never followed
    entry = path("/tree", "permissions", mode="0750", recursive="true")
    state = posix.verify(entry, [])
    assert "mode is 0755, should be 0750" in state.reasons
    assert "2 path(s) below have other permissions" in state.reasons
    assert apply(posix, entry).correct
    assert stat.S_IMODE((root / "tree/sub/file").stat().st_mode) == 0o750


@ROOT_ONLY
def test_owner_and_group_are_checked_and_set(root: Path) -> None:
    (root / "f").write_text("x")
    os.chmod(root / "f", 0o644)
    entry = path("/f", "permissions", owner="1234", group="4321")
    state = driver(root).verify(entry, [])
    assert state.reasons == ["owner is root, should be 1234", "group is root, should be 4321"]
    assert (entry.get("current_owner"), entry.get("current_group")) == ("root", "root")
    assert apply(driver(root), entry).correct
    assert ((root / "f").stat().st_uid, (root / "f").stat().st_gid) == (1234, 4321)
    unknown = path("/f", "permissions", owner="no-such-user-here", group="4321")
    assert driver(root).verify(unknown, []).reasons == [
        "owner 'no-such-user-here' is no user of this machine"]


@ROOT_ONLY
def test_under_a_root_with_its_own_accounts_names_are_the_roots(root: Path) -> None:
    """An image's users are not the host's: owner and group names are looked up in the
    root's /etc/passwd and /etc/group (read again when they change during the run)."""
    import pwd

    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("toor:x:0:0:root:/root:/bin/sh\n"
                                     "imageuser:x:2345:2345::/home/imageuser:/bin/sh\n")
    (root / "etc/group").write_text("wheel:x:0:\nimagegrp:x:3456:imageuser\n")
    (root / "f").write_text("x")
    os.chmod(root / "f", 0o644)
    posix = driver(root)
    entry = path("/f", "permissions", owner="imageuser", group="imagegrp")
    assert posix.verify(entry, []).reasons == [
        "owner is toor, should be imageuser", "group is wheel, should be imagegrp"]
    assert apply(posix, entry).correct
    assert ((root / "f").stat().st_uid, (root / "f").stat().st_gid) == (2345, 3456)
    host_user = pwd.getpwuid(os.getuid()).pw_name  # the host has it, the image not
    assert posix.verify(path("/f", "permissions", owner=host_user, group="imagegrp"),
                        []).reasons == [f"owner {host_user!r} is no user of this machine"]
    with open(root / "etc/passwd", "a") as fh:  # POSIXUsers adds a user meanwhile
        fh.write(f"{host_user}:x:2346:2345::/home/x:/bin/sh\n")
    assert posix.verify(path("/f", "permissions", owner=host_user, group="imagegrp"),
                        []).reasons == [f"owner is imageuser, should be {host_user}"]


def test_nonexistent_removes_files_and_directories_only_when_told(root: Path) -> None:
    posix = driver(root)
    (root / "old.conf").write_text("x")
    gone = path("/old.conf", "nonexistent")
    assert posix.verify(gone, []).reasons == ["exists, should not"]
    assert apply(posix, gone).correct and not (root / "old.conf").exists()
    (root / "olddir/sub").mkdir(parents=True)
    plain = path("/olddir", "nonexistent")
    assert posix.install([plain]) == {("Path", "/olddir"): False}
    assert (root / "olddir").exists()
    recursive = path("/olddir", "nonexistent", recursive="true")
    posix.verify(recursive, ["/olddir/sub/managed"])
    assert posix.install([recursive]) == {("Path", "/olddir"): False}  # manages a path below
    assert apply(posix, recursive, ["/olddir"]).correct and not (root / "olddir").exists()


def test_devices(root: Path) -> None:
    posix = driver(root)
    fifo = path("/run/ctl", "device", dev_type="fifo", owner="root", group="root", mode="0600")
    assert posix.verify(fifo, []).reasons == ["does not exist"]
    assert apply(posix, fifo).correct and stat.S_ISFIFO((root / "run/ctl").lstat().st_mode)
    char = path("/dev/null2", "device", dev_type="char", owner="root", group="root",
                mode="0666")
    assert posix.verify(char, []).reasons == ["missing required attribute(s) major, minor"]
    char.set("major", "1")
    char.set("minor", "3")
    try:
        state = apply(posix, char)
    except AssertionError:
        pytest.skip("this machine may not create device nodes (no CAP_MKNOD)")
    assert state.correct
    assert os.major((root / "dev/null2").lstat().st_rdev) == 1


def test_required_attributes_and_paths_that_try_to_leave_the_root(root: Path,
                                                                  tmp_path: Path) -> None:
    posix = driver(root)
    bare = lxml.etree.Element("Path", name="/etc/x", type="file")
    bare.text = "x"
    assert posix.verify(bare, []).reasons == [
        "missing required attribute(s) owner, group, mode"]
    assert posix.verify(path("relative", text="x"), []).reasons == [
        "the path 'relative' is not absolute"]
    escape = path("/../../outside", text="x")
    assert apply(posix, escape).correct
    assert (root / "outside").read_text() == "x"
    assert not (tmp_path / "outside").exists()


def test_dry_run_verification_changes_nothing(root: Path) -> None:
    posix = driver(root, dry_run=True)
    state = posix.verify(path("/etc/new", text="x\n"), [])
    assert not state.correct and state.diff.endswith("+x")
    assert os.listdir(root) == []


def test_acl_permissions_are_normalised() -> None:
    assert [acl_perms(p) for p in ("6", "rw", "r-x", "7", "0", "x", "8", "rwz")] == [
        "rw-", "rw-", "r-x", "rwx", "---", "--x", None, None]


@ACL_TOOLS
def test_acls_are_set_and_extra_ones_removed(root: Path) -> None:
    posix = driver(root)
    (root / "shared").mkdir()
    os.chmod(root / "shared", 0o755)
    entry = path("/shared", "directory", mode="0755")
    lxml.etree.SubElement(entry, "ACL", type="access", scope="user", user="1234", perms="rw")
    lxml.etree.SubElement(entry, "ACL", type="default", scope="group", group="4321",
                          perms="5")
    state = posix.verify(entry, [])
    if any("cannot be read" in r for r in state.reasons):
        pytest.skip("this file system has no ACLs")
    assert state.reasons == ["ACLs differ: default:group:4321 is unset, should be r-x, "
                             "user:1234 is unset, should be rw-"]
    try:
        after = apply(posix, entry)
    except AssertionError:
        pytest.skip("this file system refuses ACLs")
    assert after.correct
    # an ACL nobody asked for (-n: the mask, the mode's group bits, stays)
    subprocess.run(["setfacl", "-n", "-m", "u:999:r", str(root / "shared")], check=True)
    assert posix.verify(entry, []).reasons == ["ACLs differ: user:999 is r--, should be unset"]
    assert apply(posix, entry).correct


def test_one_bad_entry_fails_alone_and_incomplete_ones_are_never_written(root: Path) -> None:
    posix = driver(root)
    bare = lxml.etree.Element("Path", name="/etc/bare", type="file")
    bare.text = "no owner, group or mode\n"
    relative = path("/etc/hard", "hardlink", to="etc/target", owner="root", group="root",
                    mode="0644")
    (root / "etc").mkdir()
    (root / "etc/dir").write_text("a file where a file entry wants to go")
    in_the_way = path("/etc/dir/sub", text="x")  # its parent is a file: ENOTDIR
    good = path("/etc/good", text="fine\n")
    assert posix.install([bare, relative, in_the_way, good]) == {
        ("Path", "/etc/bare"): False, ("Path", "/etc/hard"): False,
        ("Path", "/etc/dir/sub"): False, ("Path", "/etc/good"): True}
    assert sorted(os.listdir(root / "etc")) == ["dir", "good"]
    assert posix.verify(relative, []).reasons == [
        "its target 'etc/target' is not an absolute path"]


class FakeSELinux:
    """The libselinux calls the driver makes, over the contexts of inodes (as a label is)."""

    def __init__(self) -> None:
        self.inodes: dict[int, str] = {}

    def context_of(self, path: Path) -> str:
        return self.inodes[path.lstat().st_ino]

    def label(self, path: Path, context: str) -> None:
        self.inodes[path.lstat().st_ino] = context

    def matchpathcon(self, name: str, mode: int) -> tuple[int, str]:
        if name.startswith("/srv/www/"):
            return 0, "system_u:object_r:httpd_sys_content_t:s0"
        return 0, "system_u:object_r:etc_t:s0" if name.startswith("/etc") else \
            "system_u:object_r:default_t:s0"

    def lgetfilecon(self, path: str) -> tuple[int, str]:
        return 0, self.inodes.get(os.lstat(path).st_ino, "system_u:object_r:unlabeled_t:s0")

    def lsetfilecon(self, path: str, context: str) -> None:
        self.inodes[os.lstat(path).st_ino] = context


def test_selinux_contexts_where_selinux_is_enabled(root: Path, monkeypatch) -> None:
    fake = FakeSELinux()
    monkeypatch.setattr("bcfg2.client.drivers.posix._selinux_module", lambda: fake)
    posix = driver(root)
    default = path("/etc/motd", text="x\n", secontext="__default__")
    assert posix.verify(default, []).reasons == ["does not exist"]
    assert apply(posix, default).correct
    assert fake.context_of(root / "etc/motd") == "system_u:object_r:etc_t:s0"
    fake.label(root / "etc/motd", "system_u:object_r:tmp_t:s0")
    assert posix.verify(default, []).reasons == [
        "SELinux context is system_u:object_r:tmp_t:s0, should be system_u:object_r:etc_t:s0"]
    assert default.get("current_secontext") == "system_u:object_r:tmp_t:s0"
    given = path("/etc/motd", text="x\n", secontext="system_u:object_r:httpd_config_t:s0")
    assert apply(posix, given).correct
    assert fake.context_of(root / "etc/motd") == "system_u:object_r:httpd_config_t:s0"
    # recursive permissions: each path below gets the policy's context for its own name
    (root / "srv/www").mkdir(parents=True)
    (root / "srv/www/index.html").write_text("x")
    tree = path("/srv", "permissions", mode="0755", recursive="true", secontext="__default__")
    assert apply(posix, tree).correct
    assert fake.context_of(root / "srv") == "system_u:object_r:default_t:s0"
    assert fake.context_of(root / "srv/www/index.html") == \
        "system_u:object_r:httpd_sys_content_t:s0"


def test_without_selinux_contexts_are_skipped_with_one_log_line(root: Path, monkeypatch,
                                                                caplog) -> None:
    monkeypatch.setattr("bcfg2.client.drivers.posix._selinux_module", lambda: None)
    posix = driver(root)
    with caplog.at_level(logging.INFO):
        for name in ("/a", "/b"):
            entry = path(name, text="x\n", secontext="system_u:object_r:etc_t:s0")
            assert apply(posix, entry).correct
        assert apply(posix, path("/c", text="x\n", secontext="__default__")).correct
    assert caplog.text.count("SELinux is not enabled here") == 1


def test_symlinks_in_the_tree_never_lead_writes_out_of_the_root(root: Path,
                                                                tmp_path: Path) -> None:
    outside = tmp_path / "real-machine"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    (root / "var").mkdir()
    os.symlink(str(outside), root / "var/run")  # as an image's /var/run -> /run
    posix = driver(root)
    entry = path("/var/run/passwd", text="owned\n")
    reason = f"its directory leads outside the root {root} through a symlink"
    assert posix.verify(entry, []).reasons == [reason]
    assert posix.install([entry]) == {("Path", "/var/run/passwd"): False}
    gone = path("/var/run/passwd", "nonexistent")
    assert posix.install([gone]) == {("Path", "/var/run/passwd"): False}
    hard = path("/stolen", "hardlink", to="/var/run/passwd", owner="root", group="root",
                mode="0644")
    assert posix.verify(hard, []).reasons == [
        f"its target leads outside the root {root} through a symlink"]
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    assert not (root / "stolen").exists()
    # a symlink that stays inside the root is followed as on the machine
    (root / "srv").mkdir()
    os.symlink("/srv", root / "data")  # absolute: outside the root (the machine's /srv)
    os.symlink("srv", root / "data2")  # relative: inside
    assert posix.verify(path("/data/file", text="x\n"), []).reasons == [reason]
    assert apply(posix, path("/data2/file", text="x\n")).correct
    assert (root / "srv/file").exists()

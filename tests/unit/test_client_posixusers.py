"""The POSIXUsers driver against passwd/group/shadow/gshadow files under a throwaway root,
changed by the real shadow tools (``--prefix``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lxml.etree
import pytest

from bcfg2 import options
from bcfg2.client.drivers import Context
from bcfg2.client.drivers.posixusers import TOOLS, POSIXUsers, parse_ranges
from bcfg2.errors import ConfigError

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the shadow tools edit passwd files only as root"),
    pytest.mark.skipif(not all(shutil.which(t, path="/usr/sbin:/sbin:/usr/bin:/bin")
                               for t in TOOLS),
                       reason="the shadow tools (useradd, groupadd...) are not installed"),
]

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bob:x:1000:1000:Bob:/home/bob:/bin/bash
"""
GROUP = """root:x:0:
daemon:x:1:
bob:x:1000:
users:x:100:bob
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "shadow").write_text("".join(f"{line.split(':')[0]}:*:19000:0:99999:7:::\n"
                                        for line in PASSWD.splitlines()))
    (etc / "gshadow").write_text("".join(f"{line.split(':')[0]}:*::\n"
                                         for line in GROUP.splitlines()))
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    return tmp_path / "root"


def driver(root: Path, conf: str = "", tmp: Path | None = None, dry_run: bool = False,
           calls: list[list[str]] | None = None) -> POSIXUsers:
    setup = None
    if conf:
        assert tmp is not None
        (tmp / "bcfg2.conf").write_text(conf)
        setup = options.build(str(tmp / "bcfg2.conf"))
    import subprocess

    def runner(argv, **kw):
        if calls is not None:
            calls.append(argv)
        return subprocess.run(argv, **kw)

    return POSIXUsers(Context(root=str(root), setup=setup, dry_run=dry_run, runner=runner))


def user(name: str, **attrs: str) -> lxml.etree._Element:
    groups = attrs.pop("member_of", "")
    entry = lxml.etree.Element("POSIXUser", name=name, **attrs)
    for group in filter(None, groups.split(" ")):
        lxml.etree.SubElement(entry, "MemberOf", group=group)
    return entry


def group(name: str, **attrs: str) -> lxml.etree._Element:
    return lxml.etree.Element("POSIXGroup", name=name, **attrs)


def passwd_line(root: Path, name: str) -> str | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line
    return None


def group_line(root: Path, name: str) -> str | None:
    for line in (root / "etc/group").read_text().splitlines():
        if line.split(":")[0] == name:
            return line
    return None


def test_missing_user_and_group_are_created_under_the_root_only(root: Path) -> None:
    drv = driver(root)
    web = group("web", gid="2000")
    alice = user("alice", uid="2001", group="web", gecos="Alice A", home="/srv/alice",
                 shell="/bin/sh", member_of="users")
    assert drv.verify(web, []).reasons == ["group web does not exist"]
    assert drv.verify(alice, []).reasons == ["user alice does not exist"]

    assert drv.install([alice, web]) == {("POSIXUser", "alice"): True,
                                         ("POSIXGroup", "web"): True}
    assert passwd_line(root, "alice") == "alice:x:2001:2000:Alice A:/srv/alice:/bin/sh"
    assert group_line(root, "web") == "web:x:2000:"
    assert group_line(root, "users") == "users:x:100:bob,alice"
    # the tools wrote the shadow files too, and nothing of the machine's own
    assert any(line.startswith("alice:") for line in (root / "etc/shadow").read_text().splitlines())
    assert "alice:x:2001" not in Path("/etc/passwd").read_text()
    fresh = driver(root)
    assert fresh.verify(alice, []).correct and fresh.verify(web, []).correct


def test_defaults_as_upstream_and_the_primary_group_made_with_the_user(root: Path) -> None:
    drv = driver(root)
    carol = user("carol")
    assert drv.install([carol]) == {("POSIXUser", "carol"): True}
    line = passwd_line(root, "carol")
    assert line is not None
    _, _, uid, gid, gecos, home, shell = line.split(":")
    assert (gecos, home, shell) == ("carol", "/home/carol", "/bin/bash")
    carol_group = group_line(root, "carol")
    assert carol_group is not None and carol_group.split(":")[2] == gid


def test_each_wrong_attribute_is_named_and_usermod_fixes_all(root: Path) -> None:
    drv = driver(root)
    bob = user("bob", uid="1005", gecos="Robert", shell="/bin/sh", member_of="")
    state = drv.verify(bob, [])
    assert not state.correct
    assert state.reasons == ["uid is 1000, should be 1005",
                             "gecos is 'Bob', should be 'Robert'",
                             "shell is '/bin/bash', should be '/bin/sh'",
                             "supplementary groups are users, should be none"]
    assert (bob.get("current_uid"), bob.get("current_shell"), bob.get("current_group")) == (
        "1000", "/bin/bash", "bob")
    assert drv.install([bob]) == {("POSIXUser", "bob"): True}
    assert passwd_line(root, "bob") == "bob:x:1005:1000:Robert:/home/bob:/bin/sh"
    assert group_line(root, "users") == "users:x:100:"


def test_wrong_primary_group_and_gid(root: Path) -> None:
    drv = driver(root)
    assert drv.verify(user("bob", group="users", gecos="Bob", member_of="users"), []).reasons == [
        "primary group is bob, should be users"]
    assert drv.verify(group("users", gid="150"), []).reasons == ["gid is 100, should be 150"]
    assert drv.install([group("users", gid="150")]) == {("POSIXGroup", "users"): True}
    assert group_line(root, "users") == "users:x:150:bob"


def test_extra_users_and_groups_within_the_managed_ranges_are_found_and_removed(
        root: Path, tmp_path: Path) -> None:
    before = (root / "etc/passwd").read_text()
    conf = "[POSIXUsers]\nuid_blacklist = 0-999\ngid_whitelist = 100-999, 1000\n"
    drv = driver(root, conf, tmp_path)
    drv.install([user("alice", uid="2001")])
    assert drv.verify(user("alice", uid="2001"), []).correct
    extra = drv.find_extra()
    # bob (uid 1000) is extra; root and daemon are blacklisted; alice is configured.
    # groups: users (100) and bob (1000) are in the whitelist; alice's gid is not
    assert sorted((e.tag, e.get("name")) for e in extra) == [
        ("POSIXGroup", "bob"), ("POSIXGroup", "users"), ("POSIXUser", "bob")]
    assert drv.remove(extra) == {("POSIXUser", "bob"): True, ("POSIXGroup", "bob"): True,
                                 ("POSIXGroup", "users"): True}
    assert passwd_line(root, "bob") is None and group_line(root, "users") is None
    assert passwd_line(root, "root") == before.splitlines()[0]


def test_an_explicit_id_outside_the_managed_ranges_is_an_error_and_never_applied(
        root: Path, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    drv = driver(root, "[POSIXUsers]\nuid_whitelist = 2000-2999\n", tmp_path, calls=calls)
    entry = user("mallory", uid="500")
    assert drv.verify(entry, []).reasons == [
        "uid 500 is outside the ranges [POSIXUsers] lets the agent manage"]
    assert drv.install([entry]) == {("POSIXUser", "mallory"): False}
    assert calls == [] and passwd_line(root, "mallory") is None
    bad = [user("eve", uid="12x"), user("-r"), user("eve", uid="2000", gecos="a:b"),
           user("eve", uid="2000", member_of="users,wheel"), group("x,y")]
    assert [drv.verify(e, []).reasons for e in bad] == [
        ["uid '12x' is not a number"], ["'-r' is not a user or group name"],
        ["gecos 'a:b' cannot go in passwd"], ["'users,wheel' is not a user or group name"],
        ["'x,y' is not a user or group name"]]
    assert not any(drv.install(bad).values()) and calls == []


def test_commands_get_the_prefix_and_dry_run_runs_nothing(root: Path) -> None:
    calls: list[list[str]] = []
    drv = driver(root, calls=calls)
    drv.install([group("web", gid="2000")])
    assert calls[0][1:] == ["--prefix", str(root), "-g", "2000", "--", "web"]
    calls.clear()
    dry = driver(root, dry_run=True, calls=calls)
    assert dry.install([user("zed")]) == {("POSIXUser", "zed"): False}
    assert dry.remove([user("bob")]) == {("POSIXUser", "bob"): False}
    assert calls == [] and passwd_line(root, "bob") is not None


def test_ranges_parse_and_bad_ones_are_named() -> None:
    assert parse_ranges(["0-500", "700", "1000-"], "x") == [(0, 500), (700, 700), (1000, None)]
    with pytest.raises(ConfigError, match=r"\[POSIXUsers\] uid_blacklist: 'a-b'"):
        parse_ranges(["a-b"], "uid_blacklist")


def test_a_users_primary_group_is_never_extra(root: Path) -> None:
    drv = driver(root)
    carol = user("carol")
    drv.verify(carol, [])
    drv.install([carol])
    names = {(e.tag, e.get("name")) for e in drv.find_extra()}
    assert ("POSIXGroup", "carol") not in names and ("POSIXUser", "carol") not in names
    assert ("POSIXUser", "bob") in names


def test_memberships_in_unmanaged_groups_are_neither_checked_nor_lost(
        root: Path, tmp_path: Path) -> None:
    drv = driver(root, "[POSIXUsers]\ngid_blacklist = 100\n", tmp_path)
    bob = user("bob", gecos="Bob")
    # bob is in users (gid 100), which the agent does not manage
    assert drv.verify(bob, []).correct
    staff = group("staff", gid="2000")
    bob_staff = user("bob", gecos="Bob", member_of="staff")
    assert drv.verify(bob_staff, []).reasons == [
        "supplementary groups are none, should be staff"]
    assert drv.install([staff, bob_staff]) == {("POSIXGroup", "staff"): True,
                                               ("POSIXUser", "bob"): True}
    assert group_line(root, "staff") == "staff:x:2000:bob"
    assert group_line(root, "users") == "users:x:100:bob"


def test_available_only_with_every_shadow_tool(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bcfg2.client.drivers import _common

    monkeypatch.setattr(_common, "FALLBACK_PATH", "")
    assert POSIXUsers.available(Context(env={"PATH": "/usr/sbin:/sbin"}))
    partial = tmp_path / "sbin"
    partial.mkdir()
    for tool in TOOLS[:-1]:  # no groupdel
        (partial / tool).symlink_to(shutil.which(tool, path="/usr/sbin:/sbin") or tool)
    assert not POSIXUsers.available(Context(env={"PATH": str(partial)}))

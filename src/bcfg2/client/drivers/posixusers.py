"""POSIXUser and POSIXGroup entries, through the shadow tools.

The machine's users and groups are read from ``/etc/passwd`` and ``/etc/group`` under
the context's root (never through NSS: a user from LDAP is not the machine's), and
changed with ``useradd``/``usermod``/``userdel`` and ``groupadd``/``groupmod``/``groupdel``,
given ``--prefix ROOT`` when the root is not ``/`` (they then edit the files under the
root, shadow and gshadow included, without chrooting).

Defaults are upstream's: a user's primary group is the group of its name, its GECOS its
name, its home ``/home/NAME`` (``/root`` for root), its shell ``/bin/bash``. A primary
group that does not exist and has no entry of its own is created with the user. The
``[POSIXUsers]`` uid/gid white- and blacklists bound what is managed: users and groups
outside them are never reported extra, and an entry with an explicit id outside them
is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import lxml.etree

from bcfg2.client.drivers._common import Accounts, setting, which
from bcfg2.client.drivers.base import Context, Driver, Element, EntryState, entry_key
from bcfg2.errors import ConfigError
from bcfg2.untrusted import escaped, one_line

TOOLS = ("useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel")
#: a user or group name the shadow tools and the files can take (no ":", ",", spaces,
#: no leading "-")
NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,255}")
#: a GECOS field, home or shell: one line, no ":" (the files' separator)
FIELD = re.compile(r"[^:\n\r\0]{0,1024}")
#: one range of a white- or blacklist: "N", "N-M" or "N-" (open upward)
RANGE = re.compile(r"(\d+)(?:(-)(\d*))?")


@dataclass(frozen=True)
class User:
    """One line of passwd."""

    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


@dataclass(frozen=True)
class Group:
    """One line of group."""

    name: str
    gid: int
    members: tuple[str, ...]


def parse_ranges(items: Sequence[str], where: str) -> list[tuple[int, int | None]]:
    """``["0-500", "1000-"]`` as inclusive ``(low, high)`` pairs (high None: no bound)."""
    ranges: list[tuple[int, int | None]] = []
    for item in items:
        match = RANGE.fullmatch(item.strip())
        if not match:
            raise ConfigError(f"[POSIXUsers] {where}: '{escaped(item, 64)}' is not a range like 100-200, "
                              f"100 or 100-")
        low = int(match.group(1))
        if match.group(2) is None:
            ranges.append((low, low))
        elif match.group(3):
            ranges.append((low, int(match.group(3))))
        else:
            ranges.append((low, None))
    return ranges


def _in(ranges: list[tuple[int, int | None]], number: int) -> bool:
    return any(low <= number and (high is None or number <= high) for low, high in ranges)


class POSIXUsers(Driver):
    """Users and groups in the passwd and group files, changed by the shadow tools."""

    name = "POSIXUsers"
    handles = frozenset({("POSIXUser", None), ("POSIXGroup", None)})

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.tools = {tool: which(context, tool) or tool for tool in TOOLS}
        self.managed = {
            "POSIXUser": self._managed_ranges("uid"),
            "POSIXGroup": self._managed_ranges("gid"),
        }
        #: the root's /etc/passwd and /etc/group, read again when they change
        self.accounts = Accounts(context)
        self._users: dict[str, User] | None = None
        self._groups: dict[str, Group] | None = None
        #: names of the entries of this run, per tag (what find_extra must not report)
        self.configured: dict[str, set[str]] = {"POSIXUser": set(), "POSIXGroup": set()}

    @classmethod
    def available(cls, context: Context) -> bool:
        return all(which(context, tool) for tool in TOOLS)

    def _managed_ranges(self, kind: str) -> tuple[bool, list[tuple[int, int | None]]]:
        """(is a whitelist, its ranges) for uids or gids, as upstream chooses: a whitelist
        when one is given, else the blacklist."""
        white = setting(self.context, "POSIXUsers", f"{kind}_whitelist")
        if white:
            return True, parse_ranges(white, f"{kind}_whitelist")
        return False, parse_ranges(setting(self.context, "POSIXUsers", f"{kind}_blacklist"),
                                   f"{kind}_blacklist")

    def in_managed_range(self, tag: str, number: int) -> bool:
        """Whether the agent manages the user (uid) or group (gid) of that number."""
        white, ranges = self.managed[tag]
        return _in(ranges, number) if white else not _in(ranges, number)

    # the machine's state

    @property
    def users(self) -> dict[str, User]:
        if self._users is None:
            self._users = {}
            for name, _pw, uid, gid, gecos, home, shell in self.accounts.rows("/etc/passwd"):
                if uid.isdigit() and gid.isdigit():
                    self._users.setdefault(name, User(name, int(uid), int(gid), gecos, home,
                                                      shell))
        return self._users

    @property
    def groups(self) -> dict[str, Group]:
        if self._groups is None:
            self._groups = {}
            for name, _pw, gid, members in self.accounts.rows("/etc/group"):
                if gid.isdigit():
                    self._groups.setdefault(name, Group(
                        name, int(gid), tuple(m for m in members.split(",") if m)))
        return self._groups

    def _forget(self) -> None:
        self._users = self._groups = None

    # what an entry asks for

    @staticmethod
    def wanted(entry: Element) -> dict[str, str]:
        """A POSIXUser's attributes with upstream's defaults filled in."""
        name = entry.get("name", "")
        return {
            "group": entry.get("group") or name,
            "gecos": entry.get("gecos") if entry.get("gecos") is not None else name,
            "home": entry.get("home") or ("/root" if name == "root" else f"/home/{name}"),
            "shell": entry.get("shell") or "/bin/bash",
        }

    @staticmethod
    def member_of(entry: Element) -> list[str]:
        """The supplementary groups of a POSIXUser (``group`` attribute, else the text)."""
        names = []
        for child in entry.findall("MemberOf"):
            group = (child.get("group") or child.text or "").strip()
            if group and group not in names:
                names.append(group)
        return names

    @staticmethod
    def _explicit_id(entry: Element) -> tuple[str, int | None] | None:
        """("uid"/"gid", the number or None when unset); None for a malformed number."""
        attr = "uid" if entry.tag == "POSIXUser" else "gid"
        raw = entry.get(attr)
        if raw is None or raw == "":
            return attr, None
        if not re.fullmatch(r"\d{1,10}", raw.strip()):
            return None
        return attr, int(raw)

    # the interface

    def malformed(self, entry: Element) -> str | None:
        """Why an entry may not be acted on (a bad name, field or id, an unmanaged id)."""
        explicit = self._explicit_id(entry)
        attr = "uid" if entry.tag == "POSIXUser" else "gid"
        if explicit is None:
            return f"{attr} '{escaped(entry.get(attr, ''), 64)}' is not a number"
        names = [entry.get("name", "")]
        if entry.tag == "POSIXUser":
            want = self.wanted(entry)
            names += [want["group"], *self.member_of(entry)]
            for field in ("gecos", "home", "shell"):
                if not FIELD.fullmatch(want[field]):
                    return f"{field} '{escaped(want[field], 64)}' cannot go in passwd"
        for name in names:
            if not NAME.fullmatch(name):
                return f"'{escaped(name, 64)}' is not a user or group name"
        if explicit[1] is not None and not self.in_managed_range(entry.tag, explicit[1]):
            return f"{attr} {explicit[1]} is outside the ranges [POSIXUsers] lets the agent manage"
        return None

    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        name = entry.get("name", "")
        self.configured.setdefault(entry.tag, set()).add(name)
        if entry.tag == "POSIXUser":
            # a user's primary group is configured with it (created with it if missing)
            self.configured["POSIXGroup"].add(self.wanted(entry)["group"])
        problem = self.malformed(entry)
        if problem:
            return EntryState(False, [problem])
        explicit = self._explicit_id(entry)
        number = explicit[1] if explicit else None
        if entry.tag == "POSIXGroup":
            return self._verify_group(entry, name, number)
        return self._verify_user(entry, name, number)

    def _verify_group(self, entry: Element, name: str, gid: int | None) -> EntryState:
        group = self.groups.get(name)
        if group is None:
            entry.set("current_exists", "false")
            return EntryState(False, [f"group {name} does not exist"])
        entry.set("current_gid", str(group.gid))
        if gid is not None and group.gid != gid:
            return EntryState(False, [f"gid is {group.gid}, should be {gid}"])
        return EntryState(True)

    def _verify_user(self, entry: Element, name: str, uid: int | None) -> EntryState:
        user = self.users.get(name)
        if user is None:
            entry.set("current_exists", "false")
            return EntryState(False, [f"user {name} does not exist"])
        want = self.wanted(entry)
        primary = next((g.name for g in self.groups.values() if g.gid == user.gid), None)
        # what is there, for the statistics (as upstream's current_ attributes)
        entry.set("current_uid", str(user.uid))
        entry.set("current_group", primary or str(user.gid))
        for attr in ("gecos", "home", "shell"):
            entry.set(f"current_{attr}", getattr(user, attr))
        reasons = []
        if uid is not None and user.uid != uid:
            reasons.append(f"uid is {user.uid}, should be {uid}")
        if primary != want["group"]:
            now = primary if primary is not None else f"gid {user.gid} (no such group)"
            reasons.append(f"primary group is {now}, should be {want['group']}")
        for attr in ("gecos", "home", "shell"):
            now = getattr(user, attr)
            if now != want[attr]:
                reasons.append(f"{attr} is '{one_line(now)}', should be '{one_line(want[attr])}'")
        current = sorted(self._supplementary(name, want["group"]))
        should = sorted(g for g in self.member_of(entry) if g != want["group"])
        if current != should:
            reasons.append(f"supplementary groups are {', '.join(current) or 'none'}, should "
                           f"be {', '.join(should) or 'none'}")
        return EntryState(not reasons, reasons)

    def _supplementary(self, user: str, primary: str, managed: bool = True) -> list[str]:
        """The groups listing ``user`` as a member, but its primary group, whose gids are
        in (``managed``) or out of the managed ranges."""
        return [g.name for g in self.groups.values()
                if user in g.members and g.name != primary
                and self.in_managed_range("POSIXGroup", g.gid) == managed]

    def _prefix(self) -> list[str]:
        return [] if self.context.root in ("", "/") else ["--prefix", self.context.root]

    def _command(self, entry: Element) -> list[str]:
        """The useradd/usermod/groupadd/groupmod command that makes ``entry`` true."""
        name = entry.get("name", "")
        explicit = self._explicit_id(entry)
        number = explicit[1] if explicit else None
        if entry.tag == "POSIXGroup":
            tool = "groupmod" if name in self.groups else "groupadd"
            argv = [self.tools[tool], *self._prefix()]
            if number is not None:
                argv += ["-g", str(number)]
            return [*argv, "--", name]
        exists = name in self.users
        want = self.wanted(entry)
        argv = [self.tools["usermod" if exists else "useradd"], *self._prefix()]
        if number is not None:
            argv += ["-u", str(number)]
        # the gid, not the name: usermod --prefix looks group names up outside the prefix
        primary = self.groups.get(want["group"])
        argv += ["-g", str(primary.gid) if primary else want["group"]]
        # usermod -G sets the whole list: memberships in unmanaged groups are kept
        groups = self.member_of(entry)
        groups += [g for g in self._supplementary(name, want["group"], managed=False)
                   if g not in groups]
        if groups or exists:
            argv += ["-G", ",".join(groups)]
        argv += ["-d", want["home"], "-s", want["shell"], "-c", want["gecos"]]
        return [*argv, "--", name]

    def _run(self, argv: list[str]) -> bool:
        result = self.context.run(argv)
        if result.returncode != 0:
            err = result.stderr.decode("utf-8", "replace").strip() if result.stderr else ""
            self.log.error("%s failed (exit %s): %s", one_line(" ".join(argv)),
                           result.returncode, one_line(err[-2000:]))
            return False
        return True

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """Groups first (users need them), each user's missing primary group with it."""
        results = {entry_key(e): False for e in entries}
        if self.context.dry_run:
            return results
        groups = [e for e in entries if e.tag == "POSIXGroup"]
        users = [e for e in entries if e.tag == "POSIXUser"]
        for entry in groups:
            if self._allowed(entry):
                self._run(self._command(entry))
        self._forget()
        for entry in users:
            if not self._allowed(entry):
                continue
            primary = self.wanted(entry)["group"]
            if primary not in self.groups:
                self.log.info("creating group %s, the primary group of user %s", primary,
                              entry.get("name"))
                self._run([self.tools["groupadd"], *self._prefix(), "--", primary])
                self._forget()
            self._run(self._command(entry))
            self._forget()
        for entry in entries:
            results[entry_key(entry)] = self.verify(entry, ()).correct
        return results

    def _allowed(self, entry: Element) -> bool:
        """Whether an entry may be installed at all (see ``malformed``)."""
        problem = self.malformed(entry)
        if problem:
            self.log.error("%s %s not installed: %s", entry.tag,
                           escaped(entry.get("name", ""), 64), problem)
            return False
        return True

    def find_extra(self) -> list[Element]:
        """Users and groups in managed ranges that no entry of this run names."""
        extra = []
        for user in self.users.values():
            if (user.name not in self.configured["POSIXUser"]
                    and self.in_managed_range("POSIXUser", user.uid)):
                extra.append(lxml.etree.Element("POSIXUser", name=user.name,
                                                current_uid=str(user.uid)))
        for group in self.groups.values():
            if (group.name not in self.configured["POSIXGroup"]
                    and self.in_managed_range("POSIXGroup", group.gid)):
                extra.append(lxml.etree.Element("POSIXGroup", name=group.name,
                                                current_gid=str(group.gid)))
        return extra

    def remove(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """Users first (a group cannot go while it is a user's primary group); homes stay."""
        results = {entry_key(e): False for e in entries}
        if self.context.dry_run:
            return results
        for entry in sorted(entries, key=lambda e: e.tag != "POSIXUser"):
            if entry.tag not in ("POSIXUser", "POSIXGroup"):
                continue
            if entry.tag == "POSIXGroup" and entry.get("name") not in self.groups:
                continue  # userdel removed it with its user (USERGROUPS_ENAB)
            tool = "userdel" if entry.tag == "POSIXUser" else "groupdel"
            self._run([self.tools[tool], *self._prefix(), "--", entry.get("name", "")])
            self._forget()
        for entry in entries:
            table = self.users if entry.tag == "POSIXUser" else self.groups
            results[entry_key(entry)] = entry.get("name") not in table
        return results

"""What the system drivers share: finding their tools, reading their options, and the
machine's users and groups."""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import shutil
from collections.abc import Callable
from typing import Any

from bcfg2 import options
from bcfg2.client.drivers.base import Context

#: where the system tools live when the agent's PATH (cron's, say) lacks the sbin directories
FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(context: Context, tool: str) -> str | None:
    """The full path of ``tool`` on the context's PATH (then the usual directories)."""
    env = context.env if context.env is not None else os.environ
    search = os.pathsep.join(p for p in (env.get("PATH", ""), FALLBACK_PATH) if p)
    return shutil.which(tool, path=search)


def setting(context: Context, section: str, name: str) -> Any:
    """A driver's option (one of ``options.DRIVER_OPTIONS``): as the run parsed it, else
    from its bcfg2.conf (``setup.raw``), else the default; a bad value is a ConfigError."""
    opt = next((o for o in options.DRIVER_OPTIONS if (o.section, o.name) == (section, name)),
               None)
    if opt is None:
        raise KeyError(f"no driver option [{section}] {name}")
    setup = context.setup
    value = getattr(getattr(setup, section, None), name, None)
    if value is not None:
        return value
    raw = getattr(setup, "raw", None)
    if isinstance(raw, configparser.RawConfigParser) and raw.has_option(section, name):
        where = getattr(setup, "config_file", None) or "bcfg2.conf"
        return options.convert(opt, raw.get(section, name), where)
    return options.convert(opt, opt.default, "default")


def client_option(context: Context, name: str, default: Any) -> Any:
    """One of the run's ``[client]`` settings (``quick``, ``interactive``, ``servicemode``),
    or ``default`` when the run has none."""
    value = getattr(getattr(context.setup, "client", None), name, None)
    return default if value is None else value


def truthy(value: str | None, default: bool) -> bool:
    """An XML boolean attribute (``true``/``false``, any case; absent: ``default``)."""
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes", "on")


def _fields(text: str, count: int) -> list[list[str]]:
    """The lines of a colon-separated database with exactly ``count`` fields (NIS
    ``+``/``-`` lines, comments and malformed lines skipped)."""
    rows = []
    for line in text.splitlines():
        if not line or line[0] in "+-#":
            continue
        parts = line.split(":")
        if len(parts) == count and parts[0]:
            rows.append(parts)
    return rows


#: the fields of a line of each account file
FIELDS = {"/etc/passwd": 7, "/etc/group": 4}


class Accounts:
    """User and group names as the machine being configured knows them.

    On the running system (root ``/``) the name service answers, so users from
    LDAP or NIS count; under ``--root`` the root's own ``/etc/passwd`` and
    ``/etc/group`` do (the host's users are not the image's), read again
    whenever they change (POSIXUsers may add to them during the run). A root
    that has no such file (a tree staged for this machine, not a system image)
    is given the name service's answers. ``rows`` is the files as they are
    under the root, whatever it is (what POSIXUsers manages).
    """

    def __init__(self, context: Context) -> None:
        self.context = context
        self.files = context.root not in ("", "/")
        #: path -> (its stamp, its rows, name -> id, id -> first name)
        self._read: dict[str, tuple[tuple[int, int, int], list[list[str]], dict[str, int],
                                    dict[int, str]]] = {}

    def _load(self, path: str) -> tuple[list[list[str]], dict[str, int], dict[int, str]] | None:
        """An account file under the root, read again when it changed; None if it is not
        there (an unreadable one is empty)."""
        real = self.context.path(path)
        try:
            st = os.stat(real)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return None
        except OSError:
            return [], {}, {}
        kept = self._read.get(path)
        if kept is not None and kept[0] == stamp:
            return kept[1:]
        try:
            with open(real, encoding="utf-8", errors="surrogateescape") as fh:
                rows = _fields(fh.read(), FIELDS[path])
        except OSError:
            rows = []
        ids: dict[str, int] = {}
        names: dict[int, str] = {}
        for row in rows:
            if row[2].isdigit():
                ids.setdefault(row[0], int(row[2]))
                names.setdefault(int(row[2]), row[0])
        self._read[path] = (stamp, rows, ids, names)
        return rows, ids, names

    def rows(self, path: str) -> list[list[str]]:
        """The lines of ``/etc/passwd`` or ``/etc/group`` under the root, split."""
        loaded = self._load(path)
        return [] if loaded is None else loaded[0]

    def _table(self, path: str) -> tuple[dict[str, int], dict[int, str]] | None:
        """The root's file as (name -> id, id -> name); None: the name service answers."""
        loaded = self._load(path) if self.files else None
        return None if loaded is None else loaded[1:]

    def _id(self, name: str, path: str, nss: Callable[[str], int]) -> int | None:
        if name.isdigit():
            return int(name)
        table = self._table(path)
        if table is not None:
            return table[0].get(name)
        try:
            return nss(name)
        except KeyError:
            return None

    def _name(self, number: int, path: str, nss: Callable[[int], str]) -> str:
        table = self._table(path)
        if table is not None:
            return table[1].get(number, str(number))
        try:
            return nss(number)
        except KeyError:
            return str(number)

    def uid(self, owner: str) -> int | None:
        """The user id of a name (or of a number), None if there is no such user."""
        return self._id(owner, "/etc/passwd", lambda name: pwd.getpwnam(name).pw_uid)

    def gid(self, group: str) -> int | None:
        """The group id of a name (or of a number), None if there is no such group."""
        return self._id(group, "/etc/group", lambda name: grp.getgrnam(name).gr_gid)

    def user_name(self, uid: int) -> str:
        """The name of a user id (the number, if it has none)."""
        return self._name(uid, "/etc/passwd", lambda number: pwd.getpwuid(number).pw_name)

    def group_name(self, gid: int) -> str:
        """The name of a group id (the number, if it has none)."""
        return self._name(gid, "/etc/group", lambda number: grp.getgrgid(number).gr_name)

"""The POSIX driver: Path entries (files, directories, links, permissions, devices).

Every path is reached through ``Context.path``, so a test (or ``--root``)
works under a throwaway root. Files are written to a temporary file in the
same directory, given their owner, group and mode, flushed and renamed over
the old one: a reader sees the old file or the new one, never half of one.
In paranoid mode (``-P`` and ``paranoid="true"`` on the entry) the old file
is first copied to ``[paranoid] path``, keeping ``max_copies`` per file.
Contents of ``sensitive="true"`` entries are never logged, diffed or sent.

ACLs are read and written with getfacl/setfacl, and SELinux contexts with
the libselinux bindings, where the machine has them; otherwise entries that
ask for them are handled without, with a log line saying so.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from bcfg2.client.drivers._common import Accounts, which
from bcfg2.client.drivers.base import Context, Driver, Element, EntryState, entry_key

TYPES = ("file", "directory", "symlink", "hardlink", "permissions", "nonexistent", "device",
         "ignore")
#: the attributes each type of entry must have, as upstream's driver requires them
REQUIRED = {
    "file": ("owner", "group", "mode"),
    "directory": ("owner", "group", "mode"),
    "permissions": ("owner", "group", "mode"),
    "symlink": ("to",),
    "hardlink": ("to",),
    "device": ("dev_type", "owner", "group", "mode"),
    "nonexistent": (),
    "ignore": (),
}
DEVICE_TYPES = {"block": stat.S_IFBLK, "char": stat.S_IFCHR, "fifo": stat.S_IFIFO}
#: files larger than this get no diff (dry run) and no current content in the statistics
MAX_DIFF = 1024 * 1024
MODE = re.compile(r"[0-7]{1,5}")
ACL_PERMS = re.compile(r"[0-7]|[rwx-]{1,3}")
#: created parent directories get this mode (and the entry's owner and group)
PARENT_MODE = 0o755


def _kind(st: os.stat_result) -> str:
    """What a path is, in the words of Path types."""
    mode = st.st_mode
    for name, test in (("directory", stat.S_ISDIR), ("symlink", stat.S_ISLNK),
                       ("file", stat.S_ISREG), ("block device", stat.S_ISBLK),
                       ("char device", stat.S_ISCHR), ("fifo", stat.S_ISFIFO)):
        if test(mode):
            return name
    return "special file"


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def acl_perms(text: str) -> str | None:
    """ACL permissions (``6``, ``rw``, ``r-x``) as getfacl writes them (``rw-``); None if
    they are not permissions."""
    text = text.strip()
    if not ACL_PERMS.fullmatch(text):
        return None
    if text.isdigit():
        bits = int(text)
        return "".join(c if bits & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
    return "".join(c if c in text else "-" for c in "rwx")


class POSIX(Driver):
    """Path entries of the types upstream's POSIX driver handles (not augeas and vcs)."""

    name = "POSIX"
    handles = frozenset(("Path", kind) for kind in TYPES)

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        #: owner and group names as the machine being configured knows them
        self.accounts = Accounts(context)
        self._modlist: set[str] = set()
        self._modlist_given: Sequence[str] | None = None
        #: the managed paths and their directories: what pruning a directory keeps
        self._kept: set[str] = set()
        self._said: set[str] = set()
        self._selinux = _selinux_module()
        #: the full paths of getfacl and setfacl, or None if either is missing
        found = {tool: which(self.context, tool) for tool in ("getfacl", "setfacl")}
        self._acl_tools = found if all(found.values()) else None

    # --- options ---------------------------------------------------------------------------
    def _option(self, section: str, name: str, default: Any) -> Any:
        return getattr(getattr(self.context.setup, section, None), name, default)

    def _once(self, what: str, message: str) -> None:
        if what not in self._said:
            self._said.add(what)
            self.log.info("%s", message)

    # --- the driver interface --------------------------------------------------------------
    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        if modlist is not self._modlist_given:  # the run gives the same list for every entry
            self._modlist_given = modlist
            self._modlist = {os.path.normpath(name) for name in modlist}
            self._kept = set(self._modlist)  # and every directory holding one of them
            for name in self._modlist:
                parent = os.path.dirname(name)
                while parent not in self._kept:
                    self._kept.add(parent)
                    parent = os.path.dirname(parent)
        return self._check(entry, record=True)

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        done: dict[tuple[str, str], bool] = {}
        for entry in entries:
            kind = entry.get("type", "")
            incomplete = self._incomplete(entry)
            if incomplete:
                self.log.error("Path %s is not installed: %s", entry.get("name"), incomplete)
                done[entry_key(entry)] = False
                continue
            try:
                ok = getattr(self, f"_install_{kind}")(entry, self.context.path(entry.get("name")))
                ok = ok and self._check(entry, record=False).correct
            except (OSError, ValueError) as err:  # ValueError: a NUL byte in a name
                self.log.error("Failed to install Path %s: %s", entry.get("name"),
                               getattr(err, "strerror", None) or err)
                ok = False
            done[entry_key(entry)] = ok
        return done

    def _incomplete(self, entry: Element) -> str:
        """Why an entry cannot be verified or installed as it is ("" when it can)."""
        name, kind = entry.get("name", ""), entry.get("type", "")
        if not os.path.isabs(name):
            return f"the path {name!r} is not absolute"
        missing = [attr for attr in REQUIRED.get(kind, ()) if entry.get(attr) is None]
        if kind == "device" and entry.get("dev_type") in ("block", "char"):
            missing += [attr for attr in ("major", "minor") if entry.get(attr) is None]
        if kind == "hardlink" and entry.get("to") and not os.path.isabs(entry.get("to")):
            return f"its target {entry.get('to')!r} is not an absolute path"
        if missing:
            return f"missing required attribute(s) {', '.join(missing)}"
        if self._outside_root(os.path.dirname(self.context.path(name))):
            return f"its directory leads outside the root {self.context.root} through a symlink"
        if kind == "hardlink" and self._outside_root(self.context.path(entry.get("to", "/"))):
            return f"its target leads outside the root {self.context.root} through a symlink"
        return ""

    def _outside_root(self, path: str) -> bool:
        """Whether a path under a root other than / resolves outside it (a symlink in the
        tree, such as an image's /var/run -> /run, would lead to the real machine's)."""
        if self.context.root in ("", "/"):
            return False
        root = os.path.realpath(self.context.root)
        real = os.path.realpath(path)
        return real != root and not real.startswith(root + os.sep)

    # --- verification ----------------------------------------------------------------------
    def _check(self, entry: Element, record: bool) -> EntryState:
        name = entry.get("name", "")
        kind = entry.get("type", "")
        incomplete = self._incomplete(entry)
        if incomplete:
            return EntryState(False, [incomplete])
        state = EntryState(True)
        getattr(self, f"_verify_{kind}")(entry, self.context.path(name), state, record)
        state.correct = not state.reasons
        return state

    def _current(self, entry: Element, record: bool, **attrs: str) -> None:
        if record:
            for attr, value in attrs.items():
                entry.set(f"current_{attr}", value)

    def _missing(self, entry: Element, state: EntryState, record: bool) -> None:
        state.reasons.append("does not exist")
        self._current(entry, record, exists="false")

    def _verify_ignore(self, entry: Element, path: str, state: EntryState, record: bool) -> None:
        """An ignored path: nothing to check (packages' verification skips it)."""

    def _verify_file(self, entry: Element, path: str, state: EntryState, record: bool) -> None:
        wanted = self._content(entry)
        st = _lstat(path)
        if wanted is None:
            state.reasons.append('has no content (give it empty="true" to mean an empty file)')
            return
        if st is None:
            self._missing(entry, state, record)
            self._diff(entry, b"", wanted, state, record, exists=False)
            return
        if not stat.S_ISREG(st.st_mode):
            state.reasons.append(f"is a {_kind(st)}, should be a file")
            return
        current = None
        if st.st_size == len(wanted):
            with open(path, "rb") as fh:
                current = fh.read()
        if current != wanted:
            state.reasons.append("content differs")
            if current is None and st.st_size <= MAX_DIFF:
                with open(path, "rb") as fh:
                    current = fh.read()
            self._diff(entry, current, wanted, state, record, exists=True)
        self._verify_metadata(entry, path, st, state, record)

    def _diff(self, entry: Element, current: bytes | None, wanted: bytes, state: EntryState,
              record: bool, exists: bool) -> None:
        """A unified diff for the dry run and current_bdiff/bfile for the statistics, except
        for sensitive entries and files too large or not text."""
        if entry.get("sensitive", "false").lower() == "true":
            return
        if current is None or len(current) > MAX_DIFF or len(wanted) > MAX_DIFF:
            state.diff = "" if current is None and not exists else "(file too large for a diff)"
            return
        encoding = self._option("components", "encoding", "utf-8")
        try:
            if b"\0" in current or b"\0" in wanted:
                raise UnicodeDecodeError(encoding, b"\0", 0, 1, "a NUL byte")
            old = current.decode(encoding)
            new = wanted.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            state.diff = "(binary file, no diff)"
            if exists:
                self._current(entry, record, bfile=base64.b64encode(current).decode("ascii"))
            return
        name = entry.get("name", "")
        lines = list(difflib.unified_diff(
            old.splitlines(), new.splitlines(), lineterm="",
            fromfile=f"{name} (on the host)" if exists else "/dev/null",
            tofile=f"{name} (from the server)"))
        state.diff = "\n".join(lines)
        if exists and lines:
            self._current(entry, record,
                          bdiff=base64.b64encode("\n".join(lines).encode()).decode("ascii"))

    def _verify_directory(self, entry: Element, path: str, state: EntryState,
                          record: bool) -> None:
        st = _lstat(path)
        if st is None:
            self._missing(entry, state, record)
            return
        if not stat.S_ISDIR(st.st_mode):
            state.reasons.append(f"is a {_kind(st)}, should be a directory")
            return
        self._verify_metadata(entry, path, st, state, record)
        if entry.get("prune", "false").lower() == "true":
            extra = self._prunable(entry, path)
            if extra:
                state.reasons.append(f"holds {len(extra)} path(s) not in the configuration: "
                                     + ", ".join(sorted(extra)[:10]))
                if record:
                    for name in extra:
                        prune = entry.makeelement("Prune", {"name": name})
                        entry.append(prune)

    def _prunable(self, entry: Element, path: str) -> list[str]:
        """The names (entry paths) in a pruned directory that no Path entry names or
        holds."""
        base = entry.get("name", "")
        return [os.path.join(base, child) for child in sorted(os.listdir(path))
                if os.path.normpath(os.path.join(base, child)) not in self._kept]

    def _verify_symlink(self, entry: Element, path: str, state: EntryState,
                        record: bool) -> None:
        st = _lstat(path)
        if st is None:
            self._missing(entry, state, record)
            return
        if not stat.S_ISLNK(st.st_mode):
            state.reasons.append(f"is a {_kind(st)}, should be a symlink")
            return
        target = os.readlink(path)
        if target != entry.get("to"):
            state.reasons.append(f"points to {target!r}, should point to {entry.get('to')!r}")
            self._current(entry, record, to=target)

    def _verify_hardlink(self, entry: Element, path: str, state: EntryState,
                         record: bool) -> None:
        st = _lstat(path)
        if st is None:
            self._missing(entry, state, record)
            return
        target = _lstat(self.context.path(entry.get("to", "")))
        if target is None:
            state.reasons.append(f"its target {entry.get('to')} does not exist")
            return
        if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
            state.reasons.append(f"is not a hard link of {entry.get('to')}")
        self._verify_metadata(entry, path, st, state, record)

    def _verify_permissions(self, entry: Element, path: str, state: EntryState,
                            record: bool) -> None:
        st = _lstat(path)
        if st is None:
            self._missing(entry, state, record)
            return
        self._verify_metadata(entry, path, st, state, record)
        if entry.get("recursive", "false").lower() == "true" and stat.S_ISDIR(st.st_mode):
            wrong = []
            for child in self._walk(path):
                sub = EntryState(True)
                self._verify_metadata(entry, child, os.lstat(child), sub, record=False)
                if sub.reasons:
                    wrong.append(child)
            if wrong:
                state.reasons.append(f"{len(wrong)} path(s) below have other permissions")

    @staticmethod
    def _walk(path: str) -> list[str]:
        """Every path below a directory, symlinks not followed (nor changed)."""
        out = []
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                child = os.path.join(top, name)
                if not os.path.islink(child):
                    out.append(child)
        return out

    def _verify_nonexistent(self, entry: Element, path: str, state: EntryState,
                            record: bool) -> None:
        if os.path.lexists(path):
            state.reasons.append("exists, should not")
            self._current(entry, record, exists="true")

    def _verify_device(self, entry: Element, path: str, state: EntryState,
                       record: bool) -> None:
        dev_type = entry.get("dev_type", "")
        if dev_type not in DEVICE_TYPES:
            state.reasons.append(f"dev_type {dev_type!r} is not block, char or fifo")
            return
        st = _lstat(path)
        if st is None:
            self._missing(entry, state, record)
            return
        if stat.S_IFMT(st.st_mode) != DEVICE_TYPES[dev_type]:
            state.reasons.append(f"is a {_kind(st)}, should be a {dev_type} device")
            return
        if dev_type != "fifo":
            try:
                major, minor = int(entry.get("major", "")), int(entry.get("minor", ""))
            except ValueError:
                state.reasons.append("major and minor must be numbers")
                return
            if (os.major(st.st_rdev), os.minor(st.st_rdev)) != (major, minor):
                state.reasons.append(f"is device {os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
                                     f", should be {major},{minor}")
                self._current(entry, record, major=str(os.major(st.st_rdev)),
                              minor=str(os.minor(st.st_rdev)))
        self._verify_metadata(entry, path, st, state, record)

    def _verify_metadata(self, entry: Element, path: str, st: os.stat_result,
                         state: EntryState, record: bool) -> None:
        """Owner, group, mode, SELinux context and ACLs."""
        owner, group, mode = entry.get("owner"), entry.get("group"), entry.get("mode")
        if owner is not None:
            uid = self.accounts.uid(owner)
            if uid is None:
                state.reasons.append(f"owner {owner!r} is no user of this machine")
            elif st.st_uid != uid:
                actual = self.accounts.user_name(st.st_uid)
                state.reasons.append(f"owner is {actual}, should be {owner}")
                self._current(entry, record, owner=actual)
        if group is not None:
            gid = self.accounts.gid(group)
            if gid is None:
                state.reasons.append(f"group {group!r} is no group of this machine")
            elif st.st_gid != gid:
                actual = self.accounts.group_name(st.st_gid)
                state.reasons.append(f"group is {actual}, should be {group}")
                self._current(entry, record, group=actual)
        if mode is not None:
            if not MODE.fullmatch(mode):
                state.reasons.append(f"mode {mode!r} is not an octal mode")
            elif stat.S_IMODE(st.st_mode) != int(mode, 8):
                current = f"{stat.S_IMODE(st.st_mode):04o}"
                state.reasons.append(f"mode is {current}, should be {int(mode, 8):04o}")
                self._current(entry, record, mode=current)
        self._verify_secontext(entry, path, state, record)
        self._verify_acls(entry, path, st, state, record)

    # --- SELinux ---------------------------------------------------------------------------
    def _wanted_context(self, entry: Element, path: str) -> str | None:
        wanted = entry.get("secontext")
        if not wanted or self._selinux is None:
            return None
        if wanted == "__default__":  # the policy's context for the path, a child's its own
            name = "/" + os.path.relpath(path, self.context.root or "/")
            try:
                return self._selinux.matchpathcon(name, os.lstat(path).st_mode)[1]
            except OSError:
                return None
        return wanted

    def _verify_secontext(self, entry: Element, path: str, state: EntryState,
                          record: bool) -> None:
        if entry.get("secontext") in (None, "") or (
                entry.get("secontext") == "__default__" and self._selinux is None):
            return  # the default context is every entry's: no log line for each
        if self._selinux is None:
            self._once("selinux", "SELinux is not enabled here: secontext attributes are "
                                  "not checked")
            return
        wanted = self._wanted_context(entry, path)
        if wanted is None:
            return
        current = self._selinux.lgetfilecon(path)[1]
        if current != wanted:
            state.reasons.append(f"SELinux context is {current}, should be {wanted}")
            self._current(entry, record, secontext=current)

    def _set_secontext(self, entry: Element, path: str) -> None:
        wanted = self._wanted_context(entry, path)
        if wanted is not None:
            self._selinux.lsetfilecon(path, wanted)

    # --- ACLs ------------------------------------------------------------------------------
    def _wanted_acls(self, entry: Element, state: EntryState) -> dict[str, str]:
        """The ACL entries asked for, as setfacl names them (``user:1000``,
        ``default:group:4``) with their permissions (``r-x``)."""
        wanted: dict[str, str] = {}
        for acl in entry.findall("ACL"):
            kind, scope = acl.get("type", "access"), acl.get("scope", "")
            perms = acl_perms(acl.get("perms", ""))
            if kind not in ("access", "default") or perms is None:
                state.reasons.append(f"ACL type={kind!r} perms={acl.get('perms')!r} is not "
                                     "an ACL")
                continue
            if scope == "user":
                qualifier = self.accounts.uid(acl.get("user", ""))
            elif scope == "group":
                qualifier = self.accounts.gid(acl.get("group", ""))
            elif scope == "other" or kind == "default" and not scope:
                scope, qualifier = "other", -1
            else:
                state.reasons.append(f"ACL scope {scope!r} is not user, group or other")
                continue
            if qualifier is None:
                state.reasons.append(f"ACL for {scope} {acl.get(scope)!r}: no such {scope}")
                continue
            key = f"{scope}:{'' if qualifier < 0 else qualifier}"
            wanted[f"default:{key}" if kind == "default" else key] = perms
        return wanted

    def _current_acls(self, path: str) -> dict[str, str]:
        assert self._acl_tools is not None
        done = self.context.run([self._acl_tools["getfacl"], "--absolute-names",
                                 "--omit-header", "--numeric", "--no-effective", path])
        if done.returncode != 0:
            raise OSError(errno.EIO, done.stderr.decode("utf-8", "replace").strip())
        acls: dict[str, str] = {}
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, _, perms = line.rpartition(":")
            parts = key.split(":")
            default = parts[0] == "default"
            scope, qualifier = ((parts[1:] if default else parts) + ["", ""])[:2]
            if scope in ("user", "group") and qualifier or default and scope == "other":
                acls[f"{'default:' if default else ''}{scope}:{qualifier}"] = perms
        return acls

    def _acl_applies(self, entry: Element, st: os.stat_result) -> bool:
        if not entry.findall("ACL"):
            return False
        if not self._acl_tools:
            self._once("acl", "getfacl/setfacl are not installed: ACLs are not checked")
            return False
        return not stat.S_ISLNK(st.st_mode)

    def _verify_acls(self, entry: Element, path: str, st: os.stat_result, state: EntryState,
                     record: bool) -> None:
        if not self._acl_applies(entry, st):
            return
        wanted = self._wanted_acls(entry, state)
        if not stat.S_ISDIR(st.st_mode):
            wanted = {k: v for k, v in wanted.items() if not k.startswith("default:")}
        try:
            current = self._current_acls(path)
        except OSError as err:
            state.reasons.append(f"its ACLs cannot be read: {err.strerror}")
            return
        # named entries, and the unnamed default:other: only when asked for (setfacl adds
        # it with the first default entry)
        relevant = set(wanted) | {k for k in current if not k.endswith(":")}
        wrong = sorted(k for k in relevant if wanted.get(k) != current.get(k))
        if wrong:
            state.reasons.append("ACLs differ: " + ", ".join(
                f"{k} is {current.get(k, 'unset')}, should be {wanted.get(k, 'unset')}"
                for k in wrong))
            self._current(entry, record, acls=",".join(f"{k}:{v}" for k, v in
                                                       sorted(current.items())))

    def _set_acls(self, entry: Element, path: str) -> bool:
        st = os.lstat(path)
        if not self._acl_applies(entry, st):
            return True
        wanted = self._wanted_acls(entry, EntryState(True))
        if not stat.S_ISDIR(st.st_mode):
            wanted = {k: v for k, v in wanted.items() if not k.startswith("default:")}
        extra = [k for k in self._current_acls(path) if k not in wanted and not k.endswith(":")]
        ok = True
        for flag, spec in (("-x", ",".join(extra)),
                           ("-m", ",".join(f"{k}:{v}" for k, v in sorted(wanted.items())))):
            if spec:
                done = self.context.run([self._acl_tools["setfacl"], flag, spec, path])
                if done.returncode != 0:
                    self.log.error("Failed to set the ACLs of %s: %s", entry.get("name"),
                                   done.stderr.decode("utf-8", "replace").strip())
                    ok = False
        return ok

    # --- installation ----------------------------------------------------------------------
    def _set_metadata(self, entry: Element, path: str, mode: int | None = None) -> bool:
        """Give a path its owner, group, mode, SELinux context and ACLs."""
        uid = self.accounts.uid(entry.get("owner", "")) if entry.get("owner") is not None else -1
        gid = self.accounts.gid(entry.get("group", "")) if entry.get("group") is not None else -1
        if uid is None or gid is None:
            self.log.error("Path %s: owner %r or group %r does not exist here",
                           entry.get("name"), entry.get("owner"), entry.get("group"))
            return False
        os.chown(path, uid, gid, follow_symlinks=False)
        if mode is None and entry.get("mode") is not None and MODE.fullmatch(entry.get("mode")):
            mode = int(entry.get("mode"), 8)
        self._set_secontext(entry, path)
        ok = self._set_acls(entry, path)
        if mode is not None and not os.path.islink(path):
            # last: with ACLs, the group bits are the ACL mask, which the mode decides
            os.chmod(path, mode)
        return ok

    def _make_parents(self, entry: Element, path: str) -> bool:
        """Create the missing parents of ``path`` with mode 0755 and the entry's owner and
        group, as upstream does (not its ACLs or SELinux context: a parent keeps the
        system's)."""
        missing = []
        name = os.path.dirname(os.path.normpath(entry.get("name", "/")))
        while name != "/" and not os.path.lexists(self.context.path(name)):
            missing.append(name)
            name = os.path.dirname(name)
        ok = True
        for name in reversed(missing):
            os.mkdir(self.context.path(name))
            parent = entry.makeelement("Path", {"name": name, "type": "directory"})
            for attr in ("owner", "group"):
                if entry.get(attr) is not None:
                    parent.set(attr, entry.get(attr))
            ok &= self._set_metadata(parent, self.context.path(name), PARENT_MODE)
        return ok

    def _remove(self, path: str) -> None:
        """Remove whatever is at ``path`` (a directory with all it holds)."""
        st = _lstat(path)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _install_ignore(self, entry: Element, path: str) -> bool:
        return True

    def _install_file(self, entry: Element, path: str) -> bool:
        wanted = self._content(entry)
        if wanted is None:
            self.log.error('Path %s has no content; give it empty="true" to mean an empty file',
                           entry.get("name"))
            return False
        st = _lstat(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.log.error("Path %s is a directory; it is not replaced by a file",
                           entry.get("name"))
            return False
        if not self._make_parents(entry, path):
            return False
        if st is not None and stat.S_ISREG(st.st_mode):
            self._paranoid_backup(entry, path)
        directory, base = os.path.split(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".bcfg2", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(wanted)
                fh.flush()
                os.fsync(fh.fileno())
            ok = self._set_metadata(entry, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        self.log.info("Installed file %s", entry.get("name"))
        return ok

    def _install_directory(self, entry: Element, path: str) -> bool:
        st = _lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self.log.info("Path %s is a %s; replacing it with a directory", entry.get("name"),
                          _kind(st))
            os.unlink(path)
            st = None
        if st is None:
            if not self._make_parents(entry, path):
                return False
            os.mkdir(path)
        ok = self._set_metadata(entry, path)
        if entry.get("prune", "false").lower() == "true":
            for name in self._prunable(entry, path):
                self.log.info("Pruning %s", name)
                self._remove(self.context.path(name))
        return ok

    def _replace_with(self, entry: Element, path: str, make: Callable[[str], None]) -> None:
        """Put a new link at ``path`` atomically (``make(tmp)`` creates it at a temporary
        name in the same directory, then it is renamed over what was there)."""
        st = _lstat(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.log.info("Path %s is a directory; removing it", entry.get("name"))
            shutil.rmtree(path)
        directory, base = os.path.split(path)
        tmp = os.path.join(directory, f".{base}.{os.getpid()}.bcfg2")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        make(tmp)
        try:
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def _install_symlink(self, entry: Element, path: str) -> bool:
        if not self._make_parents(entry, path):
            return False
        self._replace_with(entry, path, lambda tmp: os.symlink(entry.get("to"), tmp))
        self.log.info("Installed symlink %s -> %s", entry.get("name"), entry.get("to"))
        return True

    def _install_hardlink(self, entry: Element, path: str) -> bool:
        target = self.context.path(entry.get("to", ""))
        if not os.path.lexists(target):
            self.log.error("Hard link %s: its target %s does not exist", entry.get("name"),
                           entry.get("to"))
            return False
        if not self._make_parents(entry, path):
            return False
        self._replace_with(entry, path, lambda tmp: os.link(target, tmp))
        return self._set_metadata(entry, path)

    def _install_permissions(self, entry: Element, path: str) -> bool:
        if not os.path.lexists(path):
            self.log.error("Path %s does not exist: its permissions cannot be set",
                           entry.get("name"))
            return False
        ok = self._set_metadata(entry, path)
        if entry.get("recursive", "false").lower() == "true" and os.path.isdir(path):
            for child in self._walk(path):
                ok &= self._set_metadata(entry, child)
        return ok

    def _install_nonexistent(self, entry: Element, path: str) -> bool:
        st = _lstat(path)
        if st is None:
            return True
        if stat.S_ISDIR(st.st_mode):
            if entry.get("recursive", "false").lower() == "true":
                base = os.path.normpath(entry.get("name", "")) + os.sep
                kept = [name for name in self._modlist if name.startswith(base)]
                if kept:
                    self.log.error("Path %s is not removed: the configuration manages %s "
                                   "below it", entry.get("name"), kept[0])
                    return False
                shutil.rmtree(path)
            else:
                try:
                    os.rmdir(path)
                except OSError as err:
                    if err.errno != errno.ENOTEMPTY:
                        raise
                    self.log.error('Path %s is a directory that is not empty; '
                                   'recursive="true" removes it with all it holds',
                                   entry.get("name"))
                    return False
        else:
            os.unlink(path)
        self.log.info("Removed %s", entry.get("name"))
        return True

    def _install_device(self, entry: Element, path: str) -> bool:
        dev_type = entry.get("dev_type", "")
        if dev_type not in DEVICE_TYPES:
            return False
        mode = int(entry.get("mode", "0600"), 8) if MODE.fullmatch(entry.get("mode", "")) \
            else 0o600
        if not self._make_parents(entry, path):
            return False
        self._remove(path)
        if dev_type == "fifo":
            os.mkfifo(path, mode)
        else:
            device = os.makedev(int(entry.get("major", "0")), int(entry.get("minor", "0")))
            os.mknod(path, mode | DEVICE_TYPES[dev_type], device)
        return self._set_metadata(entry, path)

    # --- contents and backups --------------------------------------------------------------
    def _content(self, entry: Element) -> bytes | None:
        """What a file entry should hold; None when it has no content and is not empty."""
        if entry.get("empty", "false").lower() == "true":
            return b""
        if entry.text is None:
            return None
        if entry.get("encoding") == "base64":
            try:
                return base64.b64decode(entry.text, validate=False)
            except (binascii.Error, ValueError):
                self.log.error("Path %s: its base64 content cannot be decoded",
                               entry.get("name"))
                return None
        return entry.text.encode(self._option("components", "encoding", "utf-8"))

    def _paranoid_backup(self, entry: Element, path: str) -> None:
        """Copy a file about to be replaced to [paranoid] path, keeping max_copies."""
        if entry.get("paranoid", "false").lower() != "true" \
                or not self._option("client", "paranoid", False):
            return
        backups = self.context.path(self._option("paranoid", "path", "/var/cache/bcfg2"))
        if self._outside_root(backups):
            self.log.error("Not backing up %s: %s leads outside the root", entry.get("name"),
                           backups)
            return
        copies = max(int(self._option("paranoid", "max_copies", 1)), 1)
        stem = entry.get("name", "").replace("/", "_")
        pattern = re.compile(re.escape(stem) + r"_\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")
        try:
            os.makedirs(backups, mode=0o700, exist_ok=True)
            old = sorted(n for n in os.listdir(backups) if pattern.fullmatch(n))
            while len(old) >= copies:
                oldest = old.pop(0)
                self.log.info("Removing old backup %s", oldest)
                os.unlink(os.path.join(backups, oldest))
            stamp = datetime.datetime.now().isoformat(timespec="microseconds")
            shutil.copy2(path, os.path.join(backups, f"{stem}_{stamp}"))
            self.log.info("Backup of %s saved in %s", entry.get("name"), backups)
        except OSError as err:
            self.log.error("Failed to back up %s in %s: %s", entry.get("name"), backups,
                           err.strerror or err)


def _selinux_module() -> Any:
    """The libselinux bindings when SELinux is enabled here, else None."""
    try:
        import selinux  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return selinux if selinux.is_selinux_enabled() else None
    except OSError:
        return None

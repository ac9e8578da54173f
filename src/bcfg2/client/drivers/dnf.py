"""Package entries of type yum, rpm or dnf, verified with rpm and changed with dnf.

A Package names its instances in ``Instance`` children (``epoch``, ``version``,
``release``, ``arch``), or carries those attributes itself for one instance; an unset
attribute matches anything. ``version="any"`` accepts any installed instance and
``version="auto"`` also wants no update (``dnf check-update``). What is checked and done
follows upstream's ``[YUM]`` options and the same-named attributes of a Package or its
Instance: ``pkg_checks`` (versions), ``pkg_verify`` and ``verify_flags`` (files), and
what may be done, each in both of upstream's spellings (its YUM driver's and its
documentation's), which must both allow it: ``install_missing``/``install_action``,
``fix_version``/``version_fail_action``, ``reinstall_broken``/``verify_fail_action``. A
file that fails ``rpm -V`` counts unless it is a configuration file, a path the
configuration manages or an ``Ignore`` child's name.

Missing and wrong instances are installed in one ``dnf install`` of their exact NEVRAs
(dnf upgrades or downgrades to them), or of their package files where the entry names
one (Pkgmgr's ``url``, or ``uri`` and an Instance's ``simplefile``); ``auto`` packages
with an update go in one ``dnf upgrade`` and broken ones in one ``dnf reinstall``; extras
go in one ``dnf remove``.
Signing keys (``gpg-pubkey``, one instance per key) are imported with ``rpm --import``
from each Instance's ``simplefile`` and removed with ``rpm -e``, as upstream. Under a root
other than ``/`` rpm gets ``--root`` and dnf ``--installroot``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lxml.etree

from bcfg2.client.drivers._common import client_option, setting, truthy, which
from bcfg2.client.drivers.base import Context, Driver, Element, EntryState, entry_key
from bcfg2.options import DRIVER_OPTIONS
from bcfg2.untrusted import escaped, one_line

QUERY_FORMAT = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n"
#: what may appear in a package name and in each version field (no spaces, no shell)
NAME = re.compile(r"[A-Za-z0-9_+.-]+")
FIELD = re.compile(r"[A-Za-z0-9_+.~^]+")
VERIFY_FLAG = re.compile(r"no[a-z]+")
#: a package file dnf can install: a URL (http, https, ftp, file) or an absolute path
PACKAGE_URL = re.compile(r"(?:(?:https?|ftp|file)://|/)[^\s\0]+\.rpm")
#: the package rpm makes of each imported signing key: one instance per key, each
#: imported from its Instance's ``simplefile`` (a key file the configuration puts there)
#: with ``rpm --import``, removed with ``rpm -e``
GPG_PUBKEY = "gpg-pubkey"
#: what may be done to an instance: (the boolean option and attribute, the action option
#: and attribute, the action's value)
PERMISSIONS = {
    "install": ("install_missing", "install_action", "install"),
    "fix": ("fix_version", "version_fail_action", "upgrade"),
    "reinstall": ("reinstall_broken", "verify_fail_action", "reinstall"),
}


@dataclass(frozen=True)
class Rpm:
    """One installed package instance."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str

    def __str__(self) -> str:
        return f"{self.name}-{self.epoch}:{self.version}-{self.release}.{self.arch}"

    @property
    def nvra(self) -> str:
        """The name rpm and dnf take for this instance (no epoch)."""
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"


@dataclass(frozen=True)
class Wanted:
    """One instance an entry asks for; None fields match anything."""

    element: Element
    epoch: str | None
    version: str | None
    release: str | None
    arch: str | None

    def matches(self, rpm: Rpm, versions: bool = True) -> bool:
        if self.arch is not None and rpm.arch != self.arch:
            return False
        if not versions:
            return True
        return all(want is None or want == have for want, have in (
            (self.epoch, rpm.epoch), (self.version, rpm.version), (self.release, rpm.release)))

    def spec(self, name: str) -> str:
        """The NEVRA (as much as is given) dnf installs."""
        text = name
        if self.version is not None:
            epoch = f"{self.epoch}:" if self.epoch is not None else ""
            text += f"-{epoch}{self.version}"
            if self.release is not None:
                text += f"-{self.release}"
        if self.arch is not None:
            text += f".{self.arch}"
        return text

    def __str__(self) -> str:
        return self.spec("").lstrip("-.") or "any version"


class DNF(Driver):
    """RPM packages: the rpm database for verifying, dnf for changing."""

    name = "DNF"
    handles = frozenset({("Package", "yum"), ("Package", "rpm"), ("Package", "dnf")})

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.rpm = which(context, "rpm") or "rpm"
        self.dnf = which(context, "dnf") or "dnf"
        #: the [YUM] options, read once so that a bad value stops the driver's loading
        self.yum = {opt.name: setting(context, "YUM", opt.name)
                    for opt in DRIVER_OPTIONS if opt.section == "YUM"}
        self._installed: dict[str, list[Rpm]] | None = None
        #: per package name of this run's entries, the instances asked for (None: any)
        self.configured: dict[str, list[Wanted] | None] = {}
        #: what verify decided per entry: the dnf verb for each instance spec
        self.todo: dict[tuple[str, str], list[tuple[str, str]]] = {}
        #: the configuration's paths as the run gave them, for checking again after installing
        self.modlist: Sequence[str] = ()

    @classmethod
    def available(cls, context: Context) -> bool:
        return which(context, "rpm") is not None and which(context, "dnf") is not None

    @property
    def chrooted(self) -> bool:
        return self.context.root not in ("", "/")

    def _option(self, name: str) -> Any:
        return self.yum[name]

    # the rpm database

    def _rpm(self, *args: str) -> tuple[int, str]:
        root = ["--root", self.context.root] if self.chrooted else []
        result = self.context.run([self.rpm, *root, *args])
        return result.returncode, result.stdout.decode("utf-8", "replace")

    @property
    def installed(self) -> dict[str, list[Rpm]]:
        """Every installed instance, by name."""
        if self._installed is None:
            code, out = self._rpm("-qa", "--qf", QUERY_FORMAT)
            if code != 0:
                self.log.error("rpm -qa failed (exit %s)", code)
            self._installed = {}
            for line in out.splitlines():
                fields = line.split("\t")
                if len(fields) == 5 and fields[0]:
                    self._installed.setdefault(fields[0], []).append(Rpm(*fields))
        return self._installed

    def _forget(self) -> None:
        self._installed = None

    def changed_files(self, rpm: Rpm, flags: Sequence[str], ignore: Sequence[str],
                      modlist: Sequence[str]) -> list[str]:
        """Files of an instance that fail ``rpm -V``, except configuration files, managed
        paths and ignored ones."""
        _, out = self._rpm("-V", *(f"--{f}" for f in flags), rpm.nvra)
        managed = set(modlist)
        bad = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[-1].startswith("/"):
                continue
            path = parts[-1]
            if (len(parts) >= 3 and parts[-2] == "c") or path in managed \
                    or any(fnmatch.fnmatchcase(path, pattern) for pattern in ignore):
                continue
            bad.append(path)
        return bad

    def _has_update(self, name: str) -> bool:
        root = [f"--installroot={self.context.root}"] if self.chrooted else []
        result = self.context.run([self.dnf, "-q", *root, "check-update", name])
        if result.returncode not in (0, 100):
            self.log.error("dnf check-update %s failed (exit %s)", name, result.returncode)
        return result.returncode == 100

    # what an entry asks for

    @staticmethod
    def instances(entry: Element) -> list[Wanted] | None:
        """The instances of an entry (its Instance children, else itself); None for a
        Package of version any or auto without Instances (any instance will do). A field
        that is unset or ``any`` matches anything, as upstream."""
        elements = entry.findall("Instance")
        if not elements:
            if entry.get("version") in ("any", "auto"):
                return None
            elements = [entry]

        def field(element: Element, name: str) -> str | None:
            value = element.get(name)
            return None if value in (None, "", "any") else value

        wanted = []
        for element in elements:
            epoch = field(element, "epoch")
            wanted.append(Wanted(element, str(int(epoch)) if epoch and epoch.isdigit() else epoch,
                                 field(element, "version"), field(element, "release"),
                                 field(element, "arch")))
        return wanted

    @staticmethod
    def _malformed(entry: Element, wanted: list[Wanted] | None) -> str | None:
        if not NAME.fullmatch(entry.get("name", "")):
            return f"'{escaped(entry.get('name', ''), 64)}' is not a package name"
        for want in wanted or ():
            for field in ("epoch", "version", "release", "arch"):
                value = getattr(want, field)
                if value is not None and not FIELD.fullmatch(value):
                    return f"{field} '{escaped(value, 64)}' is not an rpm {field}"
        return None

    def _flag(self, element: Element, entry: Element, attr: str, option: str) -> bool:
        """A yes/no the [YUM] option and the entry (instance first, then package) both allow."""
        value = element.get(attr) if element.get(attr) is not None else entry.get(attr)
        return bool(self._option(option)) and truthy(value, True)

    # the interface

    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        self.modlist = modlist
        name = entry.get("name", "")
        wanted = self.instances(entry)
        self.configured[name] = wanted
        todo: list[tuple[str, str]] = []
        self.todo[entry_key(entry)] = todo
        problem = self._malformed(entry, wanted)
        if problem:
            return EntryState(False, [problem])
        present = self.installed.get(name, [])
        if not present:
            entry.set("current_exists", "false")
        if wanted is None:
            if not present:
                self._queue_missing(entry, entry, name, todo)
                return EntryState(False, ["is not installed"])
            if entry.get("version") == "auto" and self._has_update(name):
                todo.append(("upgrade", name))
                return EntryState(False, ["an update is available"])
            return EntryState(True)
        reasons: list[str] = []
        for want in wanted:
            checks = self._flag(want.element, entry, "pkg_checks", "pkg_checks")
            match = next((r for r in present if want.matches(r, versions=checks)), None)
            if match is None:
                same_arch = [] if name == GPG_PUBKEY else [
                    r for r in present if want.matches(r, versions=False)]
                if not same_arch:
                    reasons.append(f"instance {want} is not installed")
                    self._queue_missing(want.element, entry, self._source(want, entry), todo)
                    continue
                reasons.append(f"version is {', '.join(sorted(str(r) for r in same_arch))}, "
                               f"should be {want.spec(name)}")
                if self._may("fix", want.element, entry):
                    todo.append(("install", self._source(want, entry)))
                continue
            if checks and name != GPG_PUBKEY \
                    and self._flag(want.element, entry, "pkg_verify", "pkg_verify") \
                    and not client_option(self.context, "quick", False):
                flags = [*self._option("verify_flags"),
                         *[f.strip() for f in (want.element.get("verify_flags")
                                               or entry.get("verify_flags") or "").split(",")
                           if f.strip()]]
                flags = [f for f in flags if VERIFY_FLAG.fullmatch(f)]
                ignore = [i.get("name", "") for i in (*entry.findall("Ignore"),
                                                       *want.element.findall("Ignore"))]
                bad = self.changed_files(match, flags, ignore, modlist)
                if bad:
                    reasons.append(f"{match} has changed files: {', '.join(bad)}")
                    if self._may("reinstall", want.element, entry):
                        todo.append(("reinstall", match.nvra))
        return EntryState(not reasons, reasons)

    @staticmethod
    def _source(want: Wanted, entry: Element) -> str:
        """What dnf installs for an instance: its package file when the entry names one
        (Pkgmgr's ``url``, or ``uri`` and ``simplefile``), else its NEVRA."""
        url = want.element.get("url")
        if not url and want.element.get("simplefile"):
            base = want.element.get("uri") or entry.get("uri") or entry.get("url")
            if base:
                url = base.rstrip("/") + "/" + want.element.get("simplefile", "").lstrip("/")
        if url and PACKAGE_URL.fullmatch(url):
            return url
        return want.spec(entry.get("name", ""))

    def _may(self, what: str, element: Element, entry: Element) -> bool:
        """Whether [YUM], the instance and its package all allow ``what`` (see PERMISSIONS)."""
        flag, action, value = PERMISSIONS[what]
        if not self.yum[flag] or self.yum[action] != value:
            return False
        return all(truthy(e.get(flag), True) and e.get(action, value) == value
                   for e in (element, entry))

    def _queue_missing(self, element: Element, entry: Element, spec: str,
                       todo: list[tuple[str, str]]) -> None:
        """Install a missing instance (import a missing key), if [YUM] and the entry
        allow it."""
        if not self._may("install", element, entry):
            return
        if entry.get("name") != GPG_PUBKEY:
            todo.append(("install", spec))
            return
        keyfile = element.get("simplefile", "")
        if keyfile.startswith("/") and "\0" not in keyfile:
            todo.append(("import", self.context.path(keyfile)))
        else:
            self.log.error("gpg-pubkey %s: no key file (simplefile) to import", spec)

    def _dnf(self, verb: str, specs: Sequence[str]) -> bool:
        root = [f"--installroot={self.context.root}"] if self.chrooted else []
        result = self.context.run([self.dnf, "-y", *root, verb, "--", *specs])
        if result.returncode != 0:
            err = result.stderr.decode("utf-8", "replace").strip() if result.stderr else ""
            self.log.error("dnf %s failed (exit %s): %s", verb, result.returncode, one_line(err[-2000:]))
        return result.returncode == 0

    def _rpm_change(self, action: str, args: Sequence[str]) -> bool:
        """rpm --import or -e (for signing keys, which dnf does not handle)."""
        root = ["--root", self.context.root] if self.chrooted else []
        result = self.context.run([self.rpm, *root, action, "--", *args])
        if result.returncode != 0:
            err = result.stderr.decode("utf-8", "replace").strip() if result.stderr else ""
            self.log.error("rpm %s failed (exit %s): %s", action, result.returncode,
                           one_line(err[-2000:]))
        return result.returncode == 0

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """One dnf transaction per verb (install, upgrade, reinstall) that has work."""
        results = {entry_key(e): False for e in entries}
        by_verb: dict[str, list[str]] = {"import": [], "install": [], "upgrade": [],
                                         "reinstall": []}
        for entry in entries:
            if entry_key(entry) not in self.todo:
                self.verify(entry, self.modlist)
            for verb, spec in self.todo[entry_key(entry)]:
                if spec not in by_verb[verb]:
                    by_verb[verb].append(spec)
        if self.context.dry_run:
            return results
        keys = by_verb.pop("import")
        if keys:
            self._rpm_change("--import", keys)
        for verb, specs in by_verb.items():
            if specs:
                self._dnf(verb, specs)
        self._forget()
        for entry in entries:
            results[entry_key(entry)] = self.verify(entry, self.modlist).correct
        return results

    def find_extra(self) -> list[Element]:
        """Installed packages no entry names, and instances of named packages that the
        entries' exact instances leave out; each a Package with Instance children."""
        extra = []
        for name, rpms in sorted(self.installed.items()):
            if name in self.configured:
                wanted = self.configured[name]
                if wanted is None or not all(w.version for w in wanted):
                    continue
                rpms = [r for r in rpms if not any(w.matches(r) for w in wanted)]
            if not rpms:
                continue
            package = lxml.etree.Element("Package", name=name, type="yum")
            for rpm in rpms:
                instance = lxml.etree.SubElement(package, "Instance", epoch=rpm.epoch,
                                                 version=rpm.version, release=rpm.release)
                if rpm.arch != "(none)":  # gpg-pubkey
                    instance.set("arch", rpm.arch)
            extra.append(package)
        return extra

    def remove(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """Every extra instance (or package) in one dnf remove."""
        results = {entry_key(e): False for e in entries}
        specs, keys = [], []
        for entry in entries:
            name = entry.get("name", "")
            wanted = self.instances(entry)
            if self._malformed(entry, wanted):
                continue
            if name == GPG_PUBKEY:
                keys.extend(f"{name}-{w.version}-{w.release}" for w in wanted or ()
                            if w.version and w.release)
            elif entry.findall("Instance"):
                specs.extend(w.spec(name) for w in wanted or ())
            else:
                specs.append(name)
        if not (specs or keys) or self.context.dry_run:
            return results
        if keys:
            self._rpm_change("-e", keys)
        if specs:
            self._dnf("remove", specs)
        self._forget()
        for entry in entries:
            present = self.installed.get(entry.get("name", ""), [])
            wanted = self.instances(entry) if entry.findall("Instance") else None
            results[entry_key(entry)] = (not present if wanted is None else
                                         not any(w.matches(r) for w in wanted for r in present))
        return results

"""Package entries of type deb, through dpkg-query, dpkg and apt-get.

Verification reads dpkg's database (``dpkg-query --admindir``) once per run: a package is
right when it is installed at the entry's ``version``; ``any`` accepts every installed
version, ``auto`` wants APT's candidate (``apt-cache policy``), and an entry without a
version cannot be verified (as upstream). Unless the run is quick or the entry says
``verify="false"``, an installed package's files are checked too (``dpkg --verify``),
leaving out configuration files and the paths the configuration itself manages.

Everything wrong is installed in one ``apt-get install`` (``name=version``, upgrades,
downgrades and reinstalls alike), and extra packages removed in one ``apt-get remove
--purge``. Under a root other than ``/`` every tool gets the root's database and APT
directories (``-o Dir``, ``Dir::State::status``, dpkg's ``--root``). ``[APT]
install_path``, ``var_path`` and ``etc_path`` say where the tools and directories are.
In kevlar mode (``-k``), as upstream, the driver first finishes an interrupted dpkg run
(``dpkg --configure --pending``) and cleans and refreshes APT's lists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import lxml.etree

from bcfg2.client.drivers._common import client_option, setting, truthy
from bcfg2.client.drivers.base import Context, Driver, Element, EntryState, entry_key
from bcfg2.untrusted import escaped, one_line

#: dpkg states in which a package's files are all in place
INSTALLED = ("installed", "triggers-pending", "triggers-awaited")
QUERY_FORMAT = "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Status}\\n"
#: a package name, optionally with :arch, as Debian allows them
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*(?::[a-z0-9-]+)?")
#: a Debian version: [epoch:]upstream[-revision]
VERSION = re.compile(r"(?:\d+:)?[A-Za-z0-9.+~:-]+")


@dataclass(frozen=True)
class Installed:
    """One package of dpkg's database."""

    name: str
    arch: str
    version: str
    status: str


class APT(Driver):
    """Debian packages: dpkg's database for verifying, apt-get for changing."""

    name = "APT"
    handles = frozenset({("Package", "deb")})

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        bin_dir = os.path.join(setting(context, "APT", "install_path"), "bin")
        self.apt_get, self.apt_cache, self.dpkg, self.dpkg_query = (
            os.path.join(bin_dir, tool) for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-query"))
        var = setting(context, "APT", "var_path")
        self.var = var.strip("/")
        self.etc = setting(context, "APT", "etc_path").strip("/")
        self.admindir = context.path(os.path.join(var, "lib/dpkg"))
        self._packages: dict[str, list[Installed]] | None = None
        #: package names (without :arch) of this run's entries, for find_extra
        self.configured: set[str] = set()
        #: the configuration's paths as the run gave them, for checking again after installing
        self.modlist: Sequence[str] = ()
        if client_option(context, "kevlar", False) and not context.dry_run:
            self.recover()

    @classmethod
    def available(cls, context: Context) -> bool:
        bin_dir = os.path.join(setting(context, "APT", "install_path"), "bin")
        return all(os.access(os.path.join(bin_dir, tool), os.X_OK)
                   for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-query"))

    @property
    def chrooted(self) -> bool:
        return self.context.root not in ("", "/")

    def apt_options(self) -> list[str]:
        """What points APT at the root's (or the configured) directories and database."""
        if not self.chrooted and (self.var, self.etc) == ("var", "etc"):
            return []
        root = self.context.root if self.chrooted else "/"
        opts = {
            "Dir": root.rstrip("/") + "/",
            "Dir::State": f"{self.var}/lib/apt/",
            "Dir::Cache": f"{self.var}/cache/apt/",
            "Dir::Etc": f"{self.etc}/apt/",
            "Dir::State::status": os.path.join(self.admindir, "status"),
        }
        argv = [arg for key, value in opts.items() for arg in ("-o", f"{key}={value}")]
        argv += ["-o", f"DPkg::Options::=--admindir={self.admindir}"]
        if self.chrooted:
            argv += ["-o", f"DPkg::Options::=--root={self.context.root}"]
        return argv

    # dpkg's database

    @property
    def packages(self) -> dict[str, list[Installed]]:
        """Every package dpkg knows, by name (several for a multi-arch package)."""
        if self._packages is None:
            result = self.context.run([self.dpkg_query, f"--admindir={self.admindir}", "-W",
                                       "-f", QUERY_FORMAT])
            if result.returncode != 0:
                err = result.stderr.decode("utf-8", "replace").strip() if result.stderr else ""
                self.log.error("dpkg-query failed (exit %s): %s", result.returncode,
                           one_line(err[-2000:]))
            self._packages = {}
            for line in result.stdout.decode("utf-8", "replace").splitlines():
                fields = line.split("\t")
                if len(fields) == 4 and fields[0]:
                    self._packages.setdefault(fields[0], []).append(Installed(*fields))
        return self._packages

    def installed(self, spec: str) -> Installed | None:
        """The installed package ``name`` or ``name:arch``, or None."""
        name, _, arch = spec.partition(":")
        for pkg in self.packages.get(name, []):
            if pkg.status in INSTALLED and (not arch or pkg.arch == arch):
                return pkg
        return None

    def candidate(self, spec: str) -> str | None:
        """APT's candidate version of a package, or None when it has none."""
        result = self.context.run([self.apt_cache, *self.apt_options(), "policy", spec])
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "Candidate":
                value = value.strip()
                return None if value in ("", "(none)") else value
        return None

    def _dpkg(self) -> list[str]:
        """dpkg pointed at the root and the database."""
        root = [f"--root={self.context.root}"] if self.chrooted else []
        return [self.dpkg, *root, f"--admindir={self.admindir}"]

    def recover(self) -> None:
        """What upstream's kevlar mode (-k) does first: finish an interrupted dpkg run,
        clean APT's cache of downloaded packages and refresh its package lists."""
        for argv in ([*self._dpkg(), "--force-confold", "--configure", "--pending"],
                     [self.apt_get, *self.apt_options(), "-q", "clean"],
                     [self.apt_get, *self.apt_options(), "-q", "update"]):
            result = self.context.run(argv)
            if result.returncode != 0:
                err = result.stderr.decode("utf-8", "replace").strip() if result.stderr else ""
                self.log.error("%s failed (exit %s): %s", " ".join(argv[-2:]),
                               result.returncode, one_line(err[-2000:]))

    def changed_files(self, spec: str, modlist: Sequence[str]) -> list[str]:
        """Files of an installed package that ``dpkg --verify`` finds changed, except
        configuration files and the paths the configuration manages."""
        result = self.context.run([*self._dpkg(), "--verify", spec])
        managed = set(modlist)
        bad = []
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[-1].startswith("/"):
                continue
            if (len(parts) >= 3 and parts[-2] == "c") or parts[-1] in managed:
                continue
            bad.append(parts[-1])
        return bad

    def _forget(self) -> None:
        self._packages = None

    # the interface

    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        self.modlist = modlist
        spec = entry.get("name", "")
        self.configured.add(spec.partition(":")[0])
        if not PACKAGE_NAME.fullmatch(spec):
            return EntryState(False, [f"'{escaped(spec, 64)}' is not a Debian package name"])
        want = entry.get("version")
        if not want:
            return EntryState(False, ["has no version: cannot be verified"])
        pkg = self.installed(spec)
        if pkg is None:
            entry.set("current_exists", "false")
            leftovers = any(p.status == "config-files" for p in self.packages.get(
                spec.partition(":")[0], []))
            return EntryState(False, ["is removed, only its configuration files remain"
                                      if leftovers else "is not installed"])
        if want == "auto":
            want = self.candidate(spec) or pkg.version
        elif want == "any":
            want = pkg.version
        elif not VERSION.fullmatch(want):
            return EntryState(False, [f"version '{escaped(want, 64)}' is not a Debian version"])
        if pkg.version != want:
            entry.set("current_version", pkg.version)
            return EntryState(False, [f"version is {pkg.version}, should be {want}"])
        if truthy(entry.get("verify"), True) and not client_option(self.context, "quick", False):
            bad = self.changed_files(spec, modlist)
            if bad:
                return EntryState(False, [f"changed files: {', '.join(bad)}"])
        return EntryState(True)

    def _spec(self, entry: Element) -> str | None:
        """What apt-get installs for an entry (``name=version``, or ``name``), or None."""
        spec = entry.get("name", "")
        want = entry.get("version") or ""
        if not PACKAGE_NAME.fullmatch(spec) or not want:
            return None
        if want in ("auto", "any"):
            return spec
        return f"{spec}={want}" if VERSION.fullmatch(want) else None

    def _apt_get(self, *args: str) -> bool:
        argv = ["env", "DEBIAN_FRONTEND=noninteractive", self.apt_get, *self.apt_options(),
                "-q", "-y", "-o", "DPkg::Options::=--force-confold",
                "-o", "DPkg::Options::=--force-confmiss", *args]
        result = self.context.run(argv)
        if result.returncode != 0:
            err = result.stderr.decode("utf-8", "replace").strip() if result.stderr else ""
            self.log.error("apt-get %s failed (exit %s): %s", args[0], result.returncode,
                           one_line(err[-2000:]))
        return result.returncode == 0

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        results = {entry_key(e): False for e in entries}
        specs = []
        for entry in entries:
            spec = self._spec(entry)
            if spec is None:
                self.log.error("Package %s: no valid name and version, not installed",
                               escaped(entry.get("name", ""), 64))
            else:
                specs.append(spec)
        if not specs or self.context.dry_run:
            return results
        self._apt_get("--allow-downgrades", "--reinstall", "install", "--", *specs)
        self._forget()
        for entry in entries:
            results[entry_key(entry)] = self.verify(entry, self.modlist).correct
        return results

    def find_extra(self) -> list[Element]:
        """Installed packages that no entry of this run names."""
        extra = []
        for name, pkgs in sorted(self.packages.items()):
            present = [p for p in pkgs if p.status in INSTALLED]
            if name in self.configured or not present:
                continue
            for pkg in present:
                shown = f"{name}:{pkg.arch}" if len(present) > 1 else name
                extra.append(lxml.etree.Element("Package", name=shown, type="deb",
                                                current_version=pkg.version))
        return extra

    def remove(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        results = {entry_key(e): False for e in entries}
        names = [e.get("name", "") for e in entries if PACKAGE_NAME.fullmatch(e.get("name", ""))]
        if not names or self.context.dry_run:
            return results
        self._apt_get("remove", "--purge", "--", *names)
        self._forget()
        for entry in entries:
            results[entry_key(entry)] = self.installed(entry.get("name", "")) is None
        return results

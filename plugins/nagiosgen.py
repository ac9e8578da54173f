"""NagiosGen: Nagios host definitions built from client metadata.

Two Path entries:

- ``/etc/nagiosgen.status`` (any client): the client's own ``define host``
  block: host_name and alias are its name, address its address (clients.xml,
  else a DNS lookup bounded by ``[nagiosgen] resolve_timeout``), hostgroups
  the client's groups that have a ``NagiosGen/<group>-group.cfg`` (and its
  bundles that have a ``<bundle>-bundle.cfg``), then the ``<Option>``
  elements of ``NagiosGen/config.xml`` that apply to it (``<Group>`` and
  ``<Client>`` conditionals), and ``use default`` unless an option names
  another template. The block is also kept as ``NagiosGen/<host>-host.cfg``.
- ``/etc/nagios/conf.d/bcfg2.cfg`` (and the older ``/etc/nagios/nagiosgen.cfg``),
  for the Nagios server: the group and bundle files of every hostgroup in use,
  then every ``*-host.cfg``, sorted by name; also kept as
  ``NagiosGen/nagiosgen.cfg`` for a Nagios that reads the repository directly.

The ``parents`` of a host come from its options; the older
``NagiosGen/parents.xml`` (``<Depend name="host" on="parent"/>``) adds to
them, with a warning that config.xml replaces it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import lxml.etree

from bcfg2.filemonitor import FileMonitor
from bcfg2.identity import valid_client_name
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option
from bcfg2.plugin import (
    Generator,
    Plugin,
    PluginExecutionError,
    PluginInitError,
    RepositoryError,
    StructFile,
    XMLFileBacked,
    depends_on,
    not_cacheable,
    set_content,
)
from bcfg2.xml import atomic_write

__all__ = ["HOST_PATH", "SERVER_PATHS", "NagiosGen", "Resolver", "lookup_address"]

HOST_PATH = "/etc/nagiosgen.status"
SERVER_PATHS = ("/etc/nagios/conf.d/bcfg2.cfg", "/etc/nagios/nagiosgen.cfg")
SERVER_FILE = "nagiosgen.cfg"
#: a Nagios directive name (matched whole)
DIRECTIVE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VALUE = 4096
#: the files NagiosGen/ is read for, by their whole name
HOST_FILE = re.compile(r"(?P<name>[A-Za-z0-9_].*)-host\.cfg")
GROUP_FILE = re.compile(r"(?P<name>[A-Za-z0-9_].*)-(?P<kind>group|bundle)\.cfg")
#: lookups a hung resolver may hold at once before further ones fail at once
MAX_PENDING_LOOKUPS = 4

HOST_ATTRIBUTES = {"type": "file", "owner": "root", "group": "root", "mode": "0400"}
SERVER_ATTRIBUTES = {"type": "file", "owner": "nagios", "group": "nagios", "mode": "0440"}


def directive(name: str, value: str) -> str:
    """One line of an object definition, aligned as upstream's are."""
    return f"\t{name:<32} {value}"


def lookup_address(hostname: str) -> str:
    """The first address the system resolver gives for a host name (blocking)."""
    return str(socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)[0][4][0])


def address_key(address: str) -> tuple[int, int, str]:
    """Sort IPv4 before IPv6, numerically, and anything that is no IP address last."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0, address)
    return (ip.version, int(ip), address)


class Resolver:
    """Host name -> address through DNS, never blocking a build for longer than ``timeout``.

    Each lookup runs in a daemon thread; a lookup that is still hanging
    holds one of MAX_PENDING_LOOKUPS slots until it ends, so a dead resolver
    costs a bounded number of threads and every later lookup fails at once.
    """

    def __init__(self, timeout: float, lookup: Callable[[str], str] | None = None) -> None:
        self.timeout = timeout
        #: the blocking lookup (None: ``lookup_address``, read when called)
        self.lookup = lookup
        self.slots = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)

    def __call__(self, hostname: str) -> str:
        """The address of ``hostname``; PluginExecutionError when DNS fails or is too slow."""
        if not self.slots.acquire(blocking=False):
            raise PluginExecutionError(f"no address for {hostname}: {MAX_PENDING_LOOKUPS} "
                                       f"DNS lookups are still pending")
        lookup = self.lookup or lookup_address
        done = threading.Event()
        result: list[str] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.append(lookup(hostname))
            except (OSError, UnicodeError, IndexError) as err:
                errors.append(err)
            finally:
                self.slots.release()
                done.set()

        threading.Thread(target=run, name=f"nagiosgen-dns-{hostname}", daemon=True).start()
        if not done.wait(self.timeout):
            raise PluginExecutionError(f"no address for {hostname}: the DNS lookup took "
                                       f"more than {self.timeout:g}s")
        if errors or not result:
            reason = errors[0] if errors else "no answer"
            raise PluginExecutionError(f"no address for {hostname}: {reason}")
        return result[0]


class NagiosConfig(StructFile):
    """NagiosGen/config.xml: ``<Option name="directive">value</Option>`` under conditionals.

    Every option is checked when the file is read: a directive name, and a
    value on one line (a newline would end the definition early).
    """

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "NagiosGen":
            raise RepositoryError(f"{self.name}:{root.sourceline}: the root element must be "
                                  f"<NagiosGen>, not <{root.tag}>")
        for option in root.iter("Option"):
            name = option.get("name", "")
            value = (option.text or "").strip()
            where = f"{self.name}:{option.sourceline}"
            if DIRECTIVE.fullmatch(name) is None:
                raise RepositoryError(f"{where}: {name!r} is no Nagios directive name")
            if not value or len(value) > MAX_VALUE or "\n" in value or "\r" in value:
                raise RepositoryError(f"{where}: option {name} needs a value on one line "
                                      f"(at most {MAX_VALUE} characters)")

    def removed(self) -> None:
        self.xdata = None

    def options(self, metadata: ClientMetadata) -> dict[str, str]:
        """Directive -> value for a client; a later option of the same name wins."""
        found: dict[str, str] = {}
        for element in self.Match(metadata):
            if element.tag == "Option":
                found[element.get("name")] = (element.text or "").strip()
        return found


class ParentsFile(XMLFileBacked):
    """The older NagiosGen/parents.xml: host -> the parents ``<Depend>`` gives it."""

    def __init__(self, name: str, fam: FileMonitor | None) -> None:
        self.parents: dict[str, list[str]] = {}
        super().__init__(name, fam, should_monitor=True)

    def load_xml(self, root: lxml.etree._Element) -> None:
        parents: dict[str, list[str]] = {}
        for depend in root.iter("Depend"):
            host, parent = depend.get("name", ""), depend.get("on", "")
            if not valid_client_name(host) or not valid_client_name(parent):
                raise RepositoryError(f"{self.name}:{depend.sourceline}: <Depend> needs "
                                      f"host names in name and on")
            parents.setdefault(host, []).append(parent)
        self.parents = parents

    def removed(self) -> None:
        self.parents = {}


class NagiosGen(Plugin, Generator):
    """Serves each client's Nagios host definition and the Nagios server's aggregate."""

    options = (
        Option("nagiosgen", "resolve_timeout", 5.0,
               "Seconds a DNS lookup of a client without an address in clients.xml may take "
               "before its Nagios host definition fails.", type="float"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        timeout = float(core.setup.nagiosgen.resolve_timeout)
        if timeout <= 0:
            raise PluginInitError("[nagiosgen] resolve_timeout must be positive")
        self.resolver = Resolver(timeout)
        self.write_lock = threading.Lock()
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: no hostgroups, and host definitions "
                                "are not kept", self.data)
        self.config = NagiosConfig(os.path.join(self.data, "config.xml"), core.fam,
                                   should_monitor=True)
        self.legacy_parents = ParentsFile(os.path.join(self.data, "parents.xml"), core.fam)
        if os.path.exists(self.legacy_parents.name):
            self.logger.warning("%s: NagiosGen/config.xml replaces parents.xml (an <Option "
                                "name=\"parents\"> per host or group); it is still read",
                                self.legacy_parents.name)
        self.Entries["Path"] = {HOST_PATH: self.bind_host}
        for path in SERVER_PATHS:
            self.Entries["Path"][path] = self.bind_server
        if os.path.isdir(self.data):
            # no handling of its own: the events drop the configurations built from the
            # files (``bcfg2.configcache``), which are read afresh at each build
            core.fam.AddMonitor(self.data, self)

    def HandleEvent(self, event: Any = None) -> None:  # noqa: N802
        """The files of NagiosGen/ are read when a definition is built: nothing to do."""

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond what each build records: config.xml, parents.xml, the hostgroup
        files a host definition looks for and its kept file; the whole directory for the
        Nagios server's file. A host definition whose address DNS gave is not kept."""
        return ""

    # -- what NagiosGen/ holds -------------------------------------------------

    def _names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.data))
        except OSError:
            return []

    def _read(self, fname: str) -> str:
        path = os.path.join(self.data, fname)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError as err:
            raise PluginExecutionError(f"cannot read {path}: {err.strerror}") from None

    def _keep(self, fname: str, text: str) -> None:
        """Write a generated file into NagiosGen/ (atomically, only when it changed)."""
        if not os.path.isdir(self.data):
            return
        path = os.path.join(self.data, fname)
        with self.write_lock:
            try:
                with open(path, encoding="utf-8") as fh:
                    if fh.read() == text:
                        return
            except (OSError, UnicodeDecodeError):
                pass
            try:
                atomic_write(path, text, mode=0o644)
            except OSError as err:
                self.logger.error("cannot write %s: %s", path, err.strerror)

    # -- the client's host definition -----------------------------------------

    def address(self, metadata: ClientMetadata) -> str:
        """The client's address: from clients.xml (the lowest, with aliases), else DNS."""
        if metadata.addresses:
            return sorted(metadata.addresses, key=address_key)[0]
        return self.resolver(metadata.hostname)

    def host_config(self, metadata: ClientMetadata) -> str:
        """The client's ``define host`` block."""
        hostname = metadata.hostname
        if not valid_client_name(hostname):
            raise PluginExecutionError(f"{hostname!r} cannot be a Nagios host name")
        depends_on(self.config.name, *self.config.extras, self.legacy_parents.name,
                   *self.legacy_parents.extras)
        options = self.config.options(metadata)
        directives = {"host_name": hostname, "alias": hostname}
        if "address" not in options:
            if not metadata.addresses:
                not_cacheable(f"NagiosGen asks DNS for the address of {hostname}")
            directives["address"] = self.address(metadata)
        names = set(self._names())
        candidates = [f"{g}-group.cfg" for g in metadata.groups] + \
            [f"{b}-bundle.cfg" for b in metadata.bundles]
        depends_on(*(os.path.join(self.data, name) for name in candidates))
        hostgroups = sorted(
            [g for g in metadata.groups if f"{g}-group.cfg" in names]
            + [b for b in metadata.bundles if f"{b}-bundle.cfg" in names])
        if hostgroups:
            directives["hostgroups"] = ",".join(hostgroups)
        directives.update(options)
        legacy = self.legacy_parents.parents.get(hostname)
        if legacy:
            parents = [p for p in directives.get("parents", "").split(",") if p] + legacy
            directives["parents"] = ",".join(dict.fromkeys(parents))
        directives.setdefault("use", "default")
        lines = ["define host {"] + [directive(k, v) for k, v in directives.items()] + ["}"]
        return "\n".join(lines) + "\n"

    def bind_host(self, entry: lxml.etree._Element,
                  metadata: ClientMetadata) -> lxml.etree._Element:
        """/etc/nagiosgen.status: the client's host definition (kept as <host>-host.cfg)."""
        text = self.host_config(metadata)
        entry.attrib.update(HOST_ATTRIBUTES)
        set_content(entry, text)
        kept = f"{metadata.hostname}-host.cfg"
        depends_on(os.path.join(self.data, kept))  # written again if it goes away
        self._keep(kept, text)
        return entry

    # -- the Nagios server's file ------------------------------------------------

    def server_config(self) -> str:
        """Every kept host definition, after the group and bundle files their hostgroups use."""
        names = self._names()
        hosts = [self._read(n) for n in names if HOST_FILE.fullmatch(n)]
        used: set[str] = set()
        for text in hosts:
            for line in text.splitlines():
                words = line.split(None, 1)
                if len(words) == 2 and words[0] == "hostgroups":
                    used.update(g.strip() for g in words[1].split(","))
        groups = [self._read(n) for n in names
                  if (m := GROUP_FILE.fullmatch(n)) is not None and m.group("name") in used]
        return "\n".join(groups) + "\n\n" + "\n".join(hosts)

    def bind_server(self, entry: lxml.etree._Element,
                    metadata: ClientMetadata) -> lxml.etree._Element:
        """The Nagios server's aggregate (kept as NagiosGen/nagiosgen.cfg)."""
        depends_on(self.data)  # every host's kept definition and hostgroup file
        text = self.server_config()
        entry.attrib.update(SERVER_ATTRIBUTES)
        set_content(entry, text)
        self._keep(SERVER_FILE, text)
        return entry

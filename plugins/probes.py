"""Probes: scripts the agents run before a build, their output and the groups it assigns.

Probe scripts live in ``Probes/`` (``name``, ``name.G50_group``, ``name.H_host``,
most specific wins). Each client's latest output is stored per probe, either in
the database (``[server] state_dir``/Probes/probes.sqlite, the default, or the
shared PostgreSQL database with ``[database] engine = postgresql``) or in the
upstream ``Probes/probed.xml``; ``group:NAME`` lines become dynamic groups.
Templates see the output as ``metadata.Probes[name]``: a ``ProbeData`` string
whose ``.json``, ``.yaml`` and ``.xml`` (alias ``.xdata``) are the parsed
document, or None when the output is not one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import lxml.etree
import yaml

from bcfg2.errors import StorageError, UntrustedInputError
from bcfg2.options import Option
from bcfg2.plugin import (
    SPECIFIC_SUFFIX,
    Caching,
    Connector,
    EntrySet,
    Plugin,
    PluginInitError,
    Probing,
    RepositoryError,
    SpecificData,
    SpecificityError,
)
from bcfg2.storage import (
    Database,
    Migration,
    Schema,
    SQLiteDatabase,
    Transaction,
    events,
    migrated,
    open_database,
)
from bcfg2.untrusted import escaped
from bcfg2.xml import atomic_write, parse_untrusted, tostring

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event
    from bcfg2.metadata import ClientMetadata

#: the longest probe or group name a client may send
MAX_NAME = 128
#: probe and group names (matched whole): they may end up in file names and templates
SAFE_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{{0,{MAX_NAME - 1}}}")
#: one line of probe output that names a group (matched whole, with its line end)
GROUP_LINE = re.compile(r"\s*group\s*:\s*(.*?)\s*")
STORE_FILE = "probed.xml"
#: names of every shape a group can have; a pattern admitting all of them admits any group
ANY_GROUP_SAMPLES = ("a", "Z", "0", "admins", "web-01.example.com", "x_y:z@w+v", "x" * MAX_NAME)


def safe_name(name: str) -> bool:
    """All of it name characters, at most MAX_NAME: no slashes, '..', newlines or markup."""
    return SAFE_NAME.fullmatch(name) is not None and ".." not in name


def admits_any_group(pattern: re.Pattern[str]) -> bool:
    """Whether an allowed_groups pattern lets a client's probe join any group (like ``.*``)."""
    return all(pattern.fullmatch(name) for name in ANY_GROUP_SAMPLES)


class Refusals:
    """What one upload had refused, by reason: logged as one warning per reason, not per item."""

    def __init__(self, client: str) -> None:
        self.client = client
        #: reason -> (count, first example)
        self.found: dict[str, tuple[int, str]] = {}

    def add(self, reason: str, example: str) -> None:
        count, first = self.found.get(reason, (0, example))
        self.found[reason] = (count + 1, first)

    def log(self, logger: logging.Logger) -> None:
        """One warning per reason: how many, and the first name refused (escaped)."""
        for reason, (count, first) in self.found.items():
            logger.warning("probe data from %s: %d %s (the first: '%s')",
                           self.client, count, reason, escaped(first, 64))


class ProbeData(str):
    """One probe's output: a string, with the JSON/YAML/XML it parses as."""

    @cached_property
    def json(self) -> Any:
        """The output parsed as JSON, or None."""
        try:
            return json.loads(self)
        except ValueError:
            return None

    @cached_property
    def yaml(self) -> Any:
        """The output parsed as YAML, or None."""
        try:
            return yaml.safe_load(str(self))
        except yaml.YAMLError:
            return None

    @cached_property
    def xml(self) -> lxml.etree._Element | None:
        """The output parsed as XML (no entities, no DTD), or None."""
        if not self.lstrip().startswith("<"):
            return None
        try:
            return parse_untrusted(str(self), "probe output")
        except UntrustedInputError:
            return None

    @property
    def xdata(self) -> lxml.etree._Element | None:
        """Upstream's name for ``xml``."""
        return self.xml


class ProbeScript(SpecificData):
    """One version of a probe script; ``script`` is (interpreter, text)."""

    script: tuple[str, str] = ("/bin/sh", "")

    def Index(self) -> None:  # noqa: N802
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RepositoryError(f"{self.name}: not UTF-8: {err}") from None
        interpreter = "/bin/sh"
        if text.startswith("#!"):
            interpreter = text.splitlines()[0][2:].strip() or interpreter
        try:
            lxml.etree.Element("probe").text = text
        except ValueError as err:
            raise RepositoryError(f"{self.name}: cannot be sent in XML: {err}") from None
        self.script = (interpreter, text)

    def element(self, name: str) -> lxml.etree._Element:
        """The ``<probe>`` element the agent receives."""
        interpreter, text = self.script
        probe = lxml.etree.Element("probe", name=name, source="Probes",
                                   interpreter=interpreter)
        probe.text = text
        return probe


#: the probe store's tables; migration 1 is their layout before schema versions
SCHEMA = Schema("probes", (
    Migration(1, "probe output and groups per client", statements=(
        "CREATE TABLE IF NOT EXISTS probes (client TEXT NOT NULL, name TEXT NOT NULL, "
        "value TEXT NOT NULL, PRIMARY KEY (client, name))",
        "CREATE TABLE IF NOT EXISTS groups (client TEXT NOT NULL, name TEXT NOT NULL, "
        "PRIMARY KEY (client, name))",
    )),
))


class DatabaseStore:
    """Probe data in the database (``bcfg2.storage``): one transaction per client upload.

    ``path`` is the SQLite file; ``database``, if given, is where the tables
    are instead. Several processes and servers may use it at once.
    """

    def __init__(self, path: str, database: Database | None = None) -> None:
        self.path = path
        self.db = database if database is not None else SQLiteDatabase(
            path, SCHEMA.sqlite_pragmas)
        #: on PostgreSQL, what was read last per client (a read costs a round trip, and a
        #: metadata build reads twice); forgotten with every expiry naming the client (a
        #: write here, a relayed one, another server's or the generation check's)
        self.memoise = self.db.engine == "postgresql"
        self._memo: dict[str, tuple[dict[str, str], list[str]]] = {}
        self._memo_lock = threading.Lock()
        self._forgotten = 0
        # on PostgreSQL also the client generations other servers read
        migrated(self.db, SCHEMA, *([events.SCHEMA] if self.memoise else []))

    @staticmethod
    def _read(tx: Transaction, client: str) -> tuple[dict[str, str], list[str]]:
        # one statement (one round trip on PostgreSQL): probe rows carry their value,
        # group rows none; sorted here, not by the database (its collation is the site's)
        rows = tx.execute("SELECT name, value FROM probes WHERE client = ? UNION ALL "
                          "SELECT name, NULL FROM groups WHERE client = ?",
                          (client, client)).rows
        data = dict(sorted((name, value) for name, value in rows if value is not None))
        groups = sorted(name for name, value in rows if value is None)
        return data, groups

    def load(self, client: str, fresh: bool = False) -> tuple[dict[str, str], list[str]]:
        """The client's stored (probe name -> output, groups); ``fresh``: read from the
        database even if this process keeps what it read last."""
        if not self.memoise:
            return self.db.run(lambda tx: self._read(tx, client))
        with self._memo_lock:
            kept = None if fresh else self._memo.get(client)
            forgotten = self._forgotten
        if kept is None:
            kept = self.db.run(lambda tx: self._read(tx, client))
            with self._memo_lock:
                if forgotten == self._forgotten:  # nothing was forgotten while it was read
                    self._memo[client] = kept
        return dict(kept[0]), list(kept[1])

    def forget(self, clients: frozenset[str] | None) -> None:
        """Read these clients' data (None: everyone's) from the database next time."""
        with self._memo_lock:
            self._forgotten += 1
            if clients is None:
                self._memo.clear()
            else:
                for client in clients:
                    self._memo.pop(client, None)

    def save(self, client: str, data: dict[str, str], groups: list[str]) -> bool:
        """Replace the client's data in one transaction; True if anything changed.

        Most uploads repeat what is stored: one plain read finds that out (an
        upload equal to the stored data at that moment changes nothing, whatever
        comes after it), and only a change takes the lock and writes.
        """
        if self.load(client, fresh=True) == (data, groups):
            return False

        def write(tx: Transaction) -> bool:
            tx.lock(f"probes:{client}")  # two servers never replace one client's data at once
            if self._read(tx, client) == (data, groups):
                return False
            tx.execute("DELETE FROM probes WHERE client = ?", (client,))
            tx.execute("DELETE FROM groups WHERE client = ?", (client,))
            tx.executemany("INSERT INTO probes (client, name, value) VALUES (?, ?, ?)",
                           [(client, k, v) for k, v in data.items()])
            tx.executemany("INSERT INTO groups (client, name) VALUES (?, ?)",
                           [(client, g) for g in groups])
            if events.shared(tx):  # another server's next GetConfig sees it at once
                events.bump_generation(tx, client)
            return True

        try:
            return self.db.run(write, write=True)
        finally:
            self.forget(frozenset([client]))  # written, or maybe not: read it again

    def clients_with(self, name: str, value: str) -> list[str]:
        """The clients whose probe ``name`` gave ``value`` (surrounding blanks ignored),
        sorted (the tools' discovery)."""
        rows = self.db.run(lambda tx: tx.execute(
            "SELECT client, value FROM probes WHERE name = ?", (name,)).rows)
        return sorted(client for client, found in rows if found.strip() == value.strip())

    def invalidate(self) -> None:
        """Read every client's data from the database next time."""
        self.forget(None)

    def close(self) -> None:
        self.db.close()


class XMLStore:
    """Probe data in the upstream ``probed.xml``, rewritten atomically on each change.

    The file is reread whenever it was replaced, so every process reading it
    (the multiprocessing children) sees the parent's latest write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.clients: dict[str, tuple[dict[str, str], list[str]]] = {}
        self._stamp: tuple[int, int, int] | None = None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.clients, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with open(self.path, "rb") as fh:
            root = parse_untrusted(fh.read(), self.path)
        clients: dict[str, tuple[dict[str, str], list[str]]] = {}
        for node in root.findall("Client"):
            data = {p.get("name", ""): p.get("value", "") for p in node.findall("Probe")}
            groups = sorted(g.get("name", "") for g in node.findall("Group"))
            clients[node.get("name", "")] = (data, groups)
        self.clients, self._stamp = clients, stamp

    def load(self, client: str) -> tuple[dict[str, str], list[str]]:
        """The client's stored (probe name -> output, groups)."""
        with self.lock:
            self._refresh()
            data, groups = self.clients.get(client, ({}, []))
            return dict(data), list(groups)

    def save(self, client: str, data: dict[str, str], groups: list[str]) -> bool:
        """Replace the client's data and rewrite the file; True if anything changed."""
        with self.lock:
            self._refresh()
            if self.clients.get(client) == (data, groups):
                return False
            self.clients[client] = (dict(data), list(groups))
            root = lxml.etree.Element("Probed")
            for name in sorted(self.clients):
                cdata, cgroups = self.clients[name]
                node = lxml.etree.SubElement(root, "Client", name=name)
                for probe in sorted(cdata):
                    lxml.etree.SubElement(node, "Probe", name=probe, value=cdata[probe])
                for group in cgroups:
                    lxml.etree.SubElement(node, "Group", name=group)
            atomic_write(self.path, tostring(root, pretty=True), mode=0o600)
            st = os.stat(self.path)
            self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            return True

    def invalidate(self) -> None:
        """Reread the file on the next access."""
        with self.lock:
            self._stamp = None

    def close(self) -> None:
        """Nothing is held open."""


class Probes(Plugin, Probing, Connector, Caching):
    """Serves probe scripts and turns their output into groups and template data.

    Everything a client uploads is bounded: only the probes it was offered,
    names of at most MAX_NAME name characters, [probes] max_probe_size per
    probe and max_data_size in all (each upload replaces the last, so that is
    all a client keeps), at most max_groups groups, each one allowed_groups
    admits (none by default).
    """

    #: probe output is what the client says: its groups never decide an access check
    client_supplied = True

    options = (
        Option("probes", "allowed_groups", "",
               "Whitespace-separated regular expressions; a group a probe assigns must match "
               "one of them completely. Empty (the default): probes assign no groups. "
               "Upstream's default, .*, lets a client's probe put it in any group (and get "
               "that group's bundles and files); it is accepted with a warning at start-up."),
        Option("probes", "storage", "sqlite",
               "Where probe data is kept: sqlite, the database of [database] engine "
               "(state_dir/Probes/probes.sqlite, or PostgreSQL), or xml (the upstream "
               "Probes/probed.xml).",
               type="choice", choices=("sqlite", "xml")),
        Option("probes", "max_data_size", 1024 * 1024,
               "Largest probe upload accepted from one client (all its probes), in bytes; "
               "a larger one is refused whole and the client's previous data stays.",
               type="int"),
        Option("probes", "max_probe_size", 256 * 1024,
               "Largest output of one probe, in bytes; a larger one is dropped (with its "
               "group lines) and the rest of the upload is kept.", type="int"),
        Option("probes", "max_groups", 100,
               "Most groups the probes of one client may assign; the excess is dropped "
               "with a warning.", type="int"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        setup = core.setup
        try:
            self.allowed_groups = [re.compile(pattern) for pattern
                                   in str(setup.probes.allowed_groups).split()]
        except re.error as err:
            raise PluginInitError(f"[probes] allowed_groups: bad regex: {err}") from err
        for pattern in self.allowed_groups:
            if admits_any_group(pattern):
                self.logger.warning(
                    "[probes] allowed_groups = %s admits any group: a client's probe output "
                    "can put it in any group, with that group's bundles and files", pattern.pattern)
        self.max_data_size = int(setup.probes.max_data_size)
        self.max_probe_size = int(setup.probes.max_probe_size)
        self.max_groups = int(setup.probes.max_groups)
        for name in ("max_data_size", "max_probe_size", "max_groups"):
            if getattr(self, name) < 0:
                raise PluginInitError(f"[probes] {name} must not be negative")
        self.store: DatabaseStore | XMLStore
        if setup.probes.storage == "xml":
            self.store = XMLStore(os.path.join(self.data, STORE_FILE))
        else:
            path = os.path.join(setup.server.state_dir, "Probes", "probes.sqlite")
            try:
                self.store = DatabaseStore(path, open_database(setup, path, SCHEMA))
            except StorageError as err:
                raise PluginInitError(f"cannot open the probe database: {err}") from err
            if self.store.memoise:
                self.on_metadata_expiry(lambda expiry: self.store.forget(expiry.clients))
        self.probes: dict[str, EntrySet] = {}
        if os.path.isdir(self.data):
            core.fam.AddMonitor(self.data, self)
        else:
            self.logger.info("%s does not exist; no probes are sent", self.data)

    # -- probe scripts ----------------------------------------------------------

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        """Track the probe scripts in Probes/ as they are created, edited, deleted."""
        if event.action == "endExist" or os.path.dirname(event.path) != self.data:
            return
        fname = os.path.basename(event.path)
        if fname == STORE_FILE or fname.startswith(".") or EntrySet.ignore.fullmatch(fname) \
                or os.path.isdir(event.path):
            return
        name = SPECIFIC_SUFFIX.sub("", fname)
        if not safe_name(name):
            if event.action != "deleted":
                self.logger.warning("%s: %r is no probe name an agent could send data back "
                                    "for (at most %d letters, digits and _.:@+-); ignoring it",
                                    self.data, fname, MAX_NAME)
            return
        probes = dict(self.probes)
        entry_set = probes.get(name)
        if entry_set is None:
            if event.action == "deleted":
                return
            entry_set = EntrySet(name, self.data, ProbeScript, self.core.setup, self.core.fam)
        entry_set.handle_event(event)
        if entry_set.entries:
            probes[name] = entry_set
        else:
            probes.pop(name, None)
        self.probes = probes

    def offered(self, metadata: ClientMetadata) -> dict[str, ProbeScript]:
        """Probe name -> the most specific version of every probe that applies to the client."""
        result = {}
        for name, entry_set in sorted(self.probes.items()):
            matching = [m for m in entry_set.get_matching(metadata)
                        if isinstance(m, ProbeScript) and m.in_service]
            if not matching:
                continue
            try:
                best = entry_set.best_matching(metadata, matching)
            except SpecificityError as err:
                self.logger.error("probe %s not sent to %s: %s", name, metadata.hostname, err)
                continue
            assert isinstance(best, ProbeScript)
            result[name] = best
        return result

    def GetProbes(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """The ``<probe>`` elements of the probes the client is offered."""
        return [script.element(name) for name, script in self.offered(metadata).items()]

    # -- probe data -------------------------------------------------------------

    def group_allowed(self, group: str, refused: Refusals) -> bool:
        """Whether a group a probe names may be assigned; a refusal is noted in ``refused``."""
        if not safe_name(group):
            refused.add("unsafe group name(s) refused", group)
            return False
        if not any(p.fullmatch(group) for p in self.allowed_groups):
            refused.add("group(s) not in [probes] allowed_groups ignored", group)
            return False
        return True

    def parse(self, metadata: ClientMetadata, datalist: Iterable[lxml.etree._Element],
              refused: Refusals) -> tuple[dict[str, str], list[str]]:
        """(probe name -> output without group lines, allowed groups) of an upload.

        Only probes offered to the client count; everything refused is noted
        in ``refused``, to be logged once per reason.
        """
        offered = self.offered(metadata)
        data: dict[str, str] = {}
        groups: dict[str, None] = {}  # in the order the client names them
        for item in datalist:
            name = item.get("name", "")
            if not safe_name(name):
                refused.add("unsafe probe name(s) refused", name)
                continue
            if name not in offered:
                refused.add("probe(s) not offered to this client ignored", name)
                continue
            text = item.text or ""
            if len(text.encode("utf-8")) > self.max_probe_size:
                refused.add(f"probe output(s) over [probes] max_probe_size "
                            f"({self.max_probe_size} bytes) dropped", name)
                continue
            kept = []
            for line in text.splitlines(keepends=True):
                match = GROUP_LINE.fullmatch(line)
                if match is None:
                    kept.append(line)
                elif self.group_allowed(match.group(1), refused):
                    groups[match.group(1)] = None
            data[name] = "".join(kept)
        allowed = list(groups)
        for group in allowed[self.max_groups:]:
            refused.add(f"group(s) over [probes] max_groups ({self.max_groups}) dropped", group)
        return data, sorted(allowed[:self.max_groups])

    def ReceiveData(self, metadata: ClientMetadata,  # noqa: N802
                    datalist: list[lxml.etree._Element]) -> None:
        """Store the client's probe output; expire its metadata if it changed."""
        client = metadata.hostname
        size = sum(len((item.text or "").encode("utf-8")) + len(item.get("name", ""))
                   for item in datalist)
        if size > self.max_data_size:
            self.logger.warning("probe data from %s refused: %d bytes, more than "
                                "[probes] max_data_size (%d)", client, size,
                                self.max_data_size)
            raise UntrustedInputError(f"probe data from {client} is too large "
                                       f"({size} bytes)")
        refused = Refusals(client)
        data, groups = self.parse(metadata, datalist, refused)
        refused.log(self.logger)
        if self.store.save(client, data, groups):
            self.expire_metadata(client)

    # -- Connector --------------------------------------------------------------

    def get_additional_groups(self, metadata: ClientMetadata) -> list[Any]:
        """The groups the client's probes assigned (read from the store).

        Capped at max_groups here too: state an older version stored may hold more.
        """
        return self.store.load(metadata.hostname)[1][:self.max_groups]

    def get_additional_data(self, metadata: ClientMetadata) -> Any:
        """The client's probe output: probe name -> ProbeData."""
        data = self.store.load(metadata.hostname)[0]
        return {name: ProbeData(value) for name, value in data.items()}

    def cache_key(self, metadata: ClientMetadata) -> str:
        """The client's probe output, as its metadata holds it (its groups are keyed
        by the core already)."""
        data = getattr(metadata, self.name, None) or {}
        return repr(sorted((str(name), str(value)) for name, value in data.items()))

    def expire_cache(self, key: str | None = None) -> None:
        """Make the next read go to the stored data."""
        self.store.invalidate()

    def shutdown(self) -> None:
        super().shutdown()
        self.store.close()

"""Metadata: clients (clients.xml), groups and profiles (groups.xml), identity.

Each edit of groups.xml or clients.xml builds a new immutable model that is
swapped in whole; a file with an error keeps the last good model in service.

What the server learns at run time (declared versions, clients registered on
first contact, asserted profiles, ends of bootstraps) is kept in
``[server] state_dir``/Metadata/state.sqlite, or the PostgreSQL database of
``[database]`` (``bcfg2.clientstate``), one row per client, laid over the
repository's clients.xml. When ``state_dir`` is the repository itself, the
repository's clients.xml is rewritten in place (atomically), as upstream does.
"""

from __future__ import annotations

import hmac
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import lxml.etree

from bcfg2.cache import STORAGE
from bcfg2.clientstate import SCHEMA as STATE_SCHEMA
from bcfg2.clientstate import ClientState
from bcfg2.clientstate import database_path as state_database
from bcfg2.errors import (
    MetadataConsistencyError,
    MetadataRuntimeError,
    PluginInitError,
    RepositoryError,
    StorageError,
)
from bcfg2.identity import common_name, reserved_client_name, valid_client_name
from bcfg2.limits import BurstLog
from bcfg2.metadata import ClientMetadata, MetadataQuery
from bcfg2.options import Option
from bcfg2.plugin import (
    ClientRunHooks,
    ClientSummary,
    Connector,
    GroupInfo,
    Plugin,
    XMLFileBacked,
    as_bool,
    exposed,
)
from bcfg2.plugin import Metadata as MetadataInterface
from bcfg2.storage import open_database
from bcfg2.xml import atomic_write, included_files

#: the values of a client's ``auth`` attribute (and of [communication] authentication)
AUTH_MODES = ("cert+password", "cert", "bootstrap")

Condition = tuple[str, str, bool]

#: a group declared in groups.xml, as the Metadata interface describes groups to the tools
MetadataGroup = GroupInfo


@dataclass
class GroupsModel:
    """groups.xml, parsed into declarations and conditional rules."""

    groups: dict[str, MetadataGroup] = field(default_factory=dict)
    membership: list[tuple[tuple[Condition, ...], str]] = field(default_factory=list)
    negated: list[tuple[tuple[Condition, ...], str]] = field(default_factory=list)
    bundles: list[tuple[tuple[Condition, ...], str]] = field(default_factory=list)
    default: str | None = None
    #: what is wrong with the file but does not stop it being served (logged once per read)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_xml(cls, root: lxml.etree._Element, path: str) -> GroupsModel:
        model = cls()
        attrs: dict[str, dict[str, Any]] = {}
        seen = [0]  # elements read so far: document order, across included files

        def declare(node: lxml.etree._Element, top: bool) -> None:
            name = node.get("name")
            current = attrs.setdefault(name, {})
            for key in ("profile", "public", "default"):
                if key in node.attrib and (top or key not in current):
                    current[key] = as_bool(node.get(key))
                    if key == "default":
                        # Bcfg2 reads the top-level declarations first, then the nested ones
                        seen[0] += 1
                        where = f"{_source_file(node, path)}:{node.sourceline}"
                        current["default_at"] = (0 if top else 1, seen[0], where)
            if "category" in node.attrib and (top or "category" not in current):
                current["category"] = node.get("category")

        def walk(node: lxml.etree._Element, conds: tuple[Condition, ...], top: bool) -> None:
            for child in node:
                if not isinstance(child.tag, str):
                    continue
                if child.tag == "Groups":
                    walk(child, conds, top)
                    continue
                name = child.get("name")
                if child.tag in ("Group", "Client") and not name:
                    raise RepositoryError(f"{path}:{child.sourceline}: <{child.tag}> "
                                          f"without a name")
                negate = as_bool(child.get("negate", "false"))
                has_children = any(isinstance(c.tag, str) for c in child)
                if child.tag == "Group":
                    if top or not has_children:
                        declare(child, top)
                    if not top and not has_children:
                        (model.negated if negate else model.membership).append((conds, name))
                    if has_children:
                        walk(child, conds + (("Group", name, negate),), False)
                elif child.tag == "Client":
                    walk(child, conds + (("Client", name.lower(), negate),), False)
                elif child.tag == "Bundle":
                    if not name:
                        raise RepositoryError(f"{path}:{child.sourceline}: <Bundle> "
                                              f"without a name")
                    model.bundles.append((conds, name))

        walk(root, (), True)
        defaults: list[tuple[tuple[int, int, str], str]] = []
        for name, values in attrs.items():
            group = MetadataGroup(name, profile=values.get("profile", False),
                                  public=values.get("public", False),
                                  default=values.get("default", False),
                                  category=values.get("category"))
            model.groups[name] = group
            if group.default:
                defaults.append((values["default_at"], name))
        for _conds, name in model.membership + model.negated:
            model.groups.setdefault(name, MetadataGroup(name))
        defaults.sort()
        model.default = defaults[-1][1] if defaults else None
        if len(defaults) > 1:
            # Bcfg2 1.4 serves such a file with the last one it reads as the default
            (_nested, _order, where), chosen = defaults[-1]
            others = ", ".join(f"{name} ({at[2]})" for at, name in defaults[:-1])
            model.warnings.append(f"{where}: more than one group is marked "
                                  f"default=\"true\"; {chosen} is the default profile "
                                  f"(the last one, as in Bcfg2 1.4), not {others}")
        return model

    @staticmethod
    def _holds(conds: Iterable[Condition], client: str, groups: set[str]) -> bool:
        for tag, name, negate in conds:
            result = (name in groups) if tag == "Group" else (name == client)
            if result == negate:
                return False
        return True

    def resolve(self, client: str, initial: Iterable[str],
                categories: dict[str, str] | None = None,
                warn: Any = None) -> tuple[set[str], dict[str, str]]:
        """All groups of a client from its initial groups, then negations."""
        groups: set[str] = set()
        cats = dict(categories or {})

        def add(name: str) -> bool:
            if name in groups:
                return False
            group = self.groups.get(name)
            if group is not None and group.category:
                holder = cats.get(group.category)
                if holder is not None and holder != name:
                    if warn:
                        warn(f"{client}: group {name} suppressed by category "
                             f"{group.category}; already a member of {holder}")
                    return False
                cats[group.category] = name
            groups.add(name)
            return True

        for name in initial:
            add(name)
        changed = True
        while changed:
            changed = False
            for conds, name in self.membership:
                if name not in groups and self._holds(conds, client, groups) and add(name):
                    changed = True
        for conds, name in self.negated:
            if name in groups and self._holds(conds, client, groups):
                groups.discard(name)
                group = self.groups.get(name)
                if group is not None and group.category and cats.get(group.category) == name:
                    del cats[group.category]
        return groups, cats

    def bundles_for(self, client: str, groups: set[str]) -> set[str]:
        return {name for conds, name in self.bundles if self._holds(conds, client, groups)}


def _source_file(node: lxml.etree._Element, path: str) -> str:
    """The file an element was read from: ``path``, or the file XIncluded into it."""
    base = node.base
    if base and base.startswith("file://"):
        base = base[len("file://"):]
    return base if base and os.path.isabs(base) else path


@dataclass(frozen=True)
class ClientRecord:
    """One client of clients.xml (with the server's runtime state laid over it)."""

    name: str
    profile: str
    uuid: str | None = None
    password: str | None = None
    addresses: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str | None], ...] = ()
    floating: bool = False
    secure: bool = False
    auth: str | None = None
    version: str | None = None
    #: the profile the repository gave the client (clients.xml, or the default profile it
    #: was registered with), which a profile it asserted itself does not change
    trusted_profile: str = ""
    #: an admin pinned the client to its profile: AssertProfile leaves it as it is
    pinned: bool = False

    @property
    def acl_profile(self) -> str:
        """The profile access checks go by (``trusted_profile``, else ``profile``)."""
        return self.trusted_profile or self.profile


def record_from_xml(node: lxml.etree._Element) -> ClientRecord:
    """A clients.xml <Client> element as a ClientRecord."""
    aliases = tuple((a.get("name").lower(), a.get("address")) for a in node.iter("Alias")
                    if a.get("name"))
    floating = as_bool(node.get("floating", "false")) or node.get("location") == "floating"
    return ClientRecord(
        name=node.get("name").lower(),
        profile=node.get("profile", ""),
        uuid=node.get("uuid"),
        password=node.get("password"),
        addresses=tuple(a for a in [node.get("address")] if a),
        aliases=aliases,
        floating=floating,
        secure=as_bool(node.get("secure", "false")),
        auth=node.get("auth"),
        version=node.get("version"),
        pinned=as_bool(node.get("pinned", "false")),
    )


def client_nodes(root: lxml.etree._Element) -> list[lxml.etree._Element]:
    return [node for node in root.iter("Client") if node.get("name")]


@dataclass
class ClientsModel:
    """clients.xml with the runtime overlay: lookups by name, uuid, address, alias."""

    clients: dict[str, ClientRecord] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, records: Iterable[ClientRecord]) -> ClientsModel:
        model = cls()
        for rec in records:
            model.clients[rec.name] = rec
        for rec in model.clients.values():
            if rec.uuid:
                model.uuids[rec.uuid] = rec.name
            for addr in rec.addresses:
                model.addresses.setdefault(addr, []).append(rec.name)
            for alias, addr in rec.aliases:
                model.aliases[alias] = rec.name
                if addr:
                    model.addresses.setdefault(addr, []).append(rec.name)
        return model


def merge_records(repo: dict[str, ClientRecord], overlay: dict[str, dict[str, str]],
                  default_auth: str) -> list[ClientRecord]:
    """Lay the runtime overlay (profile, version, auth, new clients) over clients.xml.

    A profile in the state file carries ``repository_profile``, the client's
    profile in clients.xml when it was recorded ("" if the client was not
    there). Once an admin changes that profile in clients.xml, the recorded
    one no longer applies: the later change wins, as with upstream's single file.
    A profile a client asserted never becomes its ``trusted_profile``: that
    stays the one of clients.xml, or for a client the server registered, the
    one it was registered with (the state file's ``trusted_profile``).
    ``auth="cert"`` records the end of a bootstrap; it applies only while the
    client's mode (its ``auth`` in clients.xml, else ``default_auth``) is bootstrap.
    """
    out = dict(repo)
    for name, attrs in overlay.items():
        bootstrapped = attrs.get("auth") == "cert"
        if name in out:
            changes: dict[str, Any] = {"version": attrs["version"]} if attrs.get("version") else {}
            if "pinned" in attrs:
                changes["pinned"] = attrs["pinned"] == "true"
            base = attrs.get("repository_profile", out[name].profile)
            if attrs.get("profile") and base == out[name].profile:
                changes["profile"] = attrs["profile"]
                changes["trusted_profile"] = out[name].profile
            if bootstrapped and (out[name].auth or default_auth) == "bootstrap":
                changes["auth"] = "cert"
            out[name] = replace(out[name], **changes)
        elif attrs.get("profile"):
            out[name] = ClientRecord(
                name=name, profile=attrs["profile"], version=attrs.get("version"),
                auth="cert" if bootstrapped and default_auth == "bootstrap" else None,
                trusted_profile=attrs.get("trusted_profile", attrs["profile"]),
                pinned=attrs.get("pinned") == "true")
    return list(out.values())


class ClientsFile(XMLFileBacked):
    """The repository's clients.xml."""

    def __init__(self, name: str, plugin: Metadata) -> None:
        self.plugin = plugin
        self.records: dict[str, ClientRecord] | None = None
        super().__init__(name, plugin.core.fam, should_monitor=True)

    def removed(self) -> None:
        self.records = {}
        self.plugin.rebuild_clients()

    def load_xml(self, root: lxml.etree._Element) -> None:
        records = {}
        for node in client_nodes(root):
            rec = record_from_xml(node)
            if not rec.profile:
                raise RepositoryError(f"{self.name}:{node.sourceline}: client {rec.name} "
                                      f"has no profile")
            if rec.auth is not None and rec.auth not in AUTH_MODES:
                raise RepositoryError(f"{self.name}:{node.sourceline}: client {rec.name} "
                                      f"has auth={rec.auth!r}; expected one of "
                                      f"{', '.join(AUTH_MODES)}")
            records[rec.name] = rec
        self.records = records
        if self.plugin.state.name == self.name:
            self.plugin.state.overlay = {}
        self.plugin.rebuild_clients()


class GroupsFile(XMLFileBacked):
    """The repository's groups.xml."""

    def __init__(self, name: str, plugin: Metadata) -> None:
        self.plugin = plugin
        super().__init__(name, plugin.core.fam, should_monitor=True)

    def load_xml(self, root: lxml.etree._Element) -> None:
        model = GroupsModel.from_xml(root, self.name)
        for warning in model.warnings:
            self.plugin.logger.warning("%s", warning)
        self.plugin.set_groups(model)


def _read_for_update(path: str) -> lxml.etree._Element:
    """Parse a clients.xml to rewrite it: XIncludes stay as they are."""
    if not os.path.exists(path):
        return lxml.etree.Element("Clients", version="3.0")
    parser = lxml.etree.XMLParser(remove_blank_text=True, no_network=True)
    try:
        return lxml.etree.parse(path, parser).getroot()
    except lxml.etree.XMLSyntaxError as err:
        raise MetadataRuntimeError(f"{path}:{err.lineno}: cannot update it: {err.msg}") from None


class ClientsWriter:
    """Writes runtime changes (profile, version, new clients) to a clients.xml.

    ``overlay`` holds what was written, so it is served at once, before the
    file monitor rereads the file.
    """

    mode = 0o644

    def __init__(self, path: str, plugin: Metadata) -> None:
        self.name = path
        self.plugin = plugin
        self.overlay: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()

    #: attributes of the state file that the repository's clients.xml has no place for
    STATE_ONLY = ("trusted_profile",)

    def update(self, name: str, keep: bool = False, **attrs: str) -> None:
        """Set attributes of one client in the file, atomically (``keep``: see StateStore).

        Written into the repository's clients.xml (upstream's way), a
        profile carries no record of who chose it: from then on it is the
        repository's.
        """
        attrs = {key: value for key, value in attrs.items() if key not in self.STATE_ONLY}
        try:
            self._write(name, attrs)
        except MetadataRuntimeError:
            if keep:  # served from memory until a write goes through
                self.overlay = {**self.overlay, name: {**self.overlay.get(name, {}), **attrs}}
                self.plugin.rebuild_clients()
            raise

    def _write(self, name: str, attrs: dict[str, str]) -> None:
        with self.lock:
            path, root, node = self._locate(name)
            if node is None:
                node = lxml.etree.SubElement(root, "Client", name=name)
            for key, value in attrs.items():
                node.set(key, value)
            self._save(path, root)
            self.overlay = {**self.overlay, name: {**self.overlay.get(name, {}), **attrs}}
        self.plugin.rebuild_clients()

    def _save(self, path: str, root: lxml.etree._Element) -> None:
        """Write a clients.xml (this one or one it includes) atomically."""
        try:
            atomic_write(path, lxml.etree.tostring(
                root, pretty_print=True, xml_declaration=True, encoding="UTF-8"), self.mode)
        except OSError as err:
            raise MetadataRuntimeError(f"{path}: cannot write: {err}") from err

    def remove(self, name: str) -> bool:
        """Remove one client from the file (or a file it includes), atomically; False if absent."""
        with self.lock:
            path, root, node = self._locate(name)
            if node is None:
                return False
            node.getparent().remove(node)
            self._save(path, root)
            self.overlay = {key: value for key, value in self.overlay.items() if key != name}
            repo = self.plugin.clients_file
            if repo is not None and repo.name == self.name and repo.records:
                repo.records = {key: rec for key, rec in repo.records.items() if key != name}
        self.plugin.rebuild_clients()
        return True

    def _locate(self, name: str) -> tuple[str, lxml.etree._Element, lxml.etree._Element | None]:
        """The file holding the client (this one or one it XIncludes), its root and node.

        A client found nowhere is added to this file.
        """
        pending, seen = [self.name], set()
        top = None
        while pending:
            path = pending.pop(0)
            if path in seen:
                continue
            seen.add(path)
            root = _read_for_update(path)
            if top is None:
                top = root
            node = next((n for n in client_nodes(root) if n.get("name").lower() == name), None)
            if node is not None:
                return path, root, node
            pending.extend(included_files(root, os.path.dirname(path)))
        return self.name, top, None


class StateStore:
    """The server's own client state (``bcfg2.clientstate``), laid over the repository's
    clients.xml: one row written per change, never the whole file.

    A change is written, then served. A write that fails leaves the client
    as it was, except for a change made with ``keep`` (the end of a
    bootstrap): that one is served anyway, from memory, and written with the
    client's next change, so a failing disk never leaves a client's
    authentication weaker than it should be.
    """

    def __init__(self, path: str, plugin: Metadata) -> None:
        self.name = path
        self.plugin = plugin
        self.lock = threading.Lock()
        try:
            self.db = ClientState(path, open_database(plugin.core.setup, path, STATE_SCHEMA))
            self.overlay: dict[str, dict[str, str]] = self.db.load()
        except StorageError as err:
            raise PluginInitError(f"cannot open the client state {path}: {err}") from err
        #: changes not written yet, by client
        self.unsaved: dict[str, dict[str, str]] = {}
        if plugin.core.fam is not None:
            plugin.core.fam.AddMonitor(self.db.marker, self)

    def HandleEvent(self, event: Any = None) -> None:  # noqa: N802
        """A tool changed the state (``ClientState.mark_changed``): read all of it again."""
        if event is not None and event.action in ("created", "changed"):
            self.plugin.logger.info("%s changed outside the server: reading it again",
                                    self.name)
            self.reload(None)
            self.plugin.expire_metadata()

    def update(self, name: str, keep: bool = False, **attrs: str) -> None:
        """Record attributes of one client; a profile also records the repository's
        (see merge_records)."""
        if "profile" in attrs:
            records = self.plugin.clients_file.records if self.plugin.clients_file else None
            record = (records or {}).get(name)
            attrs["repository_profile"] = record.profile if record else ""
        try:
            with self.lock:
                kept = self.unsaved.pop(name, {})
                pending = {**kept, **attrs}
                try:
                    self.db.update(name, pending)
                except StorageError as err:
                    if keep or kept:
                        self.unsaved[name] = {**kept, **attrs} if keep else kept
                        self.overlay = {**self.overlay,
                                        name: {**self.overlay.get(name, {}), **self.unsaved[name]}}
                    raise MetadataRuntimeError(
                        f"{self.name}: cannot record the state of {name}: {err}") from err
                self.overlay = {**self.overlay, name: {**self.overlay.get(name, {}), **pending}}
        finally:
            self.plugin.rebuild_clients()

    def remove(self, name: str) -> bool:
        """Forget one client's state; False if it had none."""
        with self.lock:
            try:
                removed = self.db.remove(name)
            except StorageError as err:
                raise MetadataRuntimeError(
                    f"{self.name}: cannot remove the state of {name}: {err}") from err
            self.unsaved.pop(name, None)
            removed = removed or name in self.overlay
            self.overlay = {key: value for key, value in self.overlay.items() if key != name}
        self.plugin.rebuild_clients()
        return removed

    def reload(self, names: list[str] | None) -> None:
        """Read again what another process recorded about some clients (None: all)."""
        try:
            fresh = self.db.load(names)
        except StorageError as err:
            self.plugin.logger.error("%s: cannot read the client state: %s", self.name, err)
            return
        with self.lock:
            kept = {} if names is None else {k: v for k, v in self.overlay.items()
                                              if k not in names}
            self.overlay = {**kept, **fresh}
            for name, attrs in self.unsaved.items():
                self.overlay[name] = {**self.overlay.get(name, {}), **attrs}
        self.plugin.rebuild_clients(expire=False)

    def close(self) -> None:
        self.db.close()


class Registrations:
    """How many clients first contact may register: in all, and per minute (a token bucket).

    A refusal is a MetadataConsistencyError the client sees; the first of a
    burst is logged, and one line at its end says how many followed.
    """

    def __init__(self, limit: int, per_minute: float, logger: Any) -> None:
        self.limit = limit
        self.rate = per_minute / 60.0
        self.burst = max(1.0, per_minute)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.refusals = BurstLog(logger, "%s: %d more first contacts refused in %.0f s")
        self._lock = threading.Lock()

    def admit(self, client: str, registered: int) -> None:
        """Take one registration for ``client``, ``registered`` being how many there are."""
        with self._lock:
            now = time.monotonic()
            if self.rate > 0:
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.limit and registered >= self.limit:
                key = "max_registered"
                why = (f"the server has registered {registered} clients, its limit "
                       f"([metadata] max_registered); an admin must add {client} to clients.xml")
            elif self.rate > 0 and self.tokens < 1:
                key = "registrations_per_minute"
                why = ("too many new clients at once ([metadata] registrations_per_minute); "
                       "try again later")
            else:
                self.tokens -= 1
                return
        self.refusals.note(key, "Refusing to register %s: %s", client, why)
        raise MetadataConsistencyError(f"refusing to register {client}: {why}")


class Metadata(Plugin, MetadataInterface, ClientRunHooks):
    """Clients, groups and profiles from Metadata/clients.xml and groups.xml."""

    sort_order = 500
    __rmi__ = Plugin.__rmi__ + ["list_clients", "get_all_group_names", "remove_client"]
    options = (
        Option("metadata", "max_registered", 10000,
               "Most clients the server registers itself on first contact (clients.xml's own "
               "do not count); beyond it, an admin adds clients to clients.xml. 0: no limit.",
               type="int"),
        Option("metadata", "registrations_per_minute", 60.0,
               "First-contact registrations accepted per minute (in bursts of as many); a "
               "client refused meanwhile is registered at its next run. 0: no limit.",
               type="float"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        self.registrations = Registrations(int(core.setup.metadata.max_registered),
                                           float(core.setup.metadata.registrations_per_minute),
                                           self.logger)
        self.password = core.setup.communication.password
        self.default_auth = core.setup.communication.authentication
        self.groups_model: GroupsModel | None = None
        self.clients_model = ClientsModel()
        self._write_lock = threading.Lock()
        self.query = MetadataQuery(
            by_name=self.core_build_metadata,
            names_by_groups=self.get_client_names_by_groups,
            names_by_profiles=self.get_client_names_by_profiles,
            all_clients=self.list_clients,
            all_groups=self.get_all_group_names,
            all_groups_in_category=self.get_all_groups_in_category,
            all_connectors=self.connector_names,
        )
        repo_clients = os.path.join(self.data, "clients.xml")
        state_dir = core.setup.server.state_dir or self.core.repository
        self.clients_file: ClientsFile | None = None
        self.state: ClientsWriter | StateStore
        if os.path.realpath(state_dir) == os.path.realpath(self.core.repository):
            self.state = ClientsWriter(repo_clients, self)
        else:
            self.state = StateStore(state_database(state_dir), self)
            self.on_metadata_expiry(self._relayed_expiry)
        self.clients_file = ClientsFile(repo_clients, self)
        self.groups_file = GroupsFile(os.path.join(self.data, "groups.xml"), self)

    # -- models --------------------------------------------------------------

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing: all it gives a configuration is the client's metadata, which the
        configuration cache keys every configuration by already."""
        return ""

    def core_build_metadata(self, name: str) -> ClientMetadata:
        return self.core.build_metadata(name)

    def set_groups(self, model: GroupsModel) -> None:
        """Serve a new groups.xml; expire the cached clients whose groups change."""
        old = self.groups_model
        self.groups_model = model
        if old is None:
            self.expire_metadata()
        else:
            self.expire_metadata_if_groups_change()

    def _relayed_expiry(self, expiry: Any) -> None:
        """Another process or server changed client state: read it (the cache is expired
        already). ``STORAGE`` says the database changed behind this server's back."""
        if (expiry.relayed_from(self.name) or expiry.relayed_from(STORAGE)) \
                and isinstance(self.state, StateStore):
            self.state.reload(None if expiry.clients is None else sorted(expiry.clients))

    def shutdown(self) -> None:
        Plugin.shutdown(self)
        if isinstance(self.state, StateStore):
            self.state.close()

    def rebuild_clients(self, expire: bool = True) -> None:
        """Merge clients.xml and the runtime overlay into a new model.

        Only the clients whose record changed are expired from the cache
        (unless ``expire`` is false: they are already).
        """
        if self.clients_file is None:
            return
        with self._write_lock:
            old = self.clients_model
            repo = self.clients_file.records or {}
            self.clients_model = new = ClientsModel.build(
                merge_records(repo, self.state.overlay, self.default_auth))
        changed = [name for name in set(old.clients) | set(new.clients)
                   if old.clients.get(name) != new.clients.get(name)]
        if changed and expire:
            self.expire_metadata(changed)

    def _groups(self) -> GroupsModel:
        model = self.groups_model
        if model is None:
            raise MetadataRuntimeError("groups.xml has not been read successfully")
        return model

    # -- building metadata ---------------------------------------------------

    def _canonical(self, client: str) -> str:
        client = client.lower()
        return self.clients_model.aliases.get(client, client)

    def get_initial_metadata(self, client_name: str) -> ClientMetadata:
        return self._initial_metadata(client_name, trusted=False)

    def get_trusted_metadata(self, client_name: str) -> ClientMetadata:
        """As get_initial_metadata, with the profile the repository gave the client."""
        return self._initial_metadata(client_name, trusted=True)

    def _initial_metadata(self, client_name: str, trusted: bool) -> ClientMetadata:
        groups_model = self._groups()
        client = self._canonical(client_name)
        record = self.clients_model.clients.get(client)
        if record is None:
            record = self._register(client)
        profile = record.acl_profile if trusted else record.profile
        if profile not in groups_model.groups:
            self.logger.warning("client %s has profile %s, which groups.xml does not declare",
                                client, profile)
        groups, bundles, categories = self._resolve(groups_model, client, profile, (),
                                                    warn=self.logger.warning)
        return ClientMetadata(
            client, profile, groups, bundles,
            aliases=[alias for alias, _ in record.aliases],
            addresses=list(record.addresses) + [a for _, a in record.aliases if a],
            categories=categories, uuid=record.uuid, password=record.password,
            version=record.version, query=self.query,
        )

    @staticmethod
    def _resolve(model: GroupsModel, client: str, profile: str, additional: Iterable[str],
                 warn: Any = None) -> tuple[set[str], set[str], dict[str, str]]:
        """Groups, bundles and categories from the profile and connector groups.

        groups.xml's own groups come first (so they win a category), then the
        connectors' groups. The result depends on nothing else, so a cached
        client can be checked against a new groups.xml by resolving it again.
        """
        groups, categories = model.resolve(client, [profile], warn=warn)
        if additional:
            groups, categories = model.resolve(
                client, sorted(groups) + sorted(additional), categories, warn=warn)
        return groups, model.bundles_for(client, groups), categories

    def merge_additional_groups(self, imd: ClientMetadata, groups: list[str]) -> None:
        if set(groups) <= imd.additional_groups:
            return
        imd.additional_groups.update(groups)
        imd.groups, imd.bundles, imd.categories = self._resolve(
            self._groups(), imd.hostname, imd.profile, imd.additional_groups,
            warn=self.logger.warning)

    def merge_additional_data(self, imd: ClientMetadata, source: str, data: Any) -> None:
        setattr(imd, source, data)
        if source not in imd.connectors:
            imd.connectors.append(source)

    # -- runtime changes -----------------------------------------------------

    def _register(self, client: str, keep: bool = False, **attrs: str) -> ClientRecord:
        """Register a client on first contact with the default profile, or refuse it.

        Refused: without a default profile, a name that is not a client name
        or is reserved, and beyond ``[metadata] max_registered`` clients or
        ``registrations_per_minute``. ``attrs`` are recorded with it (``keep``:
        see StateStore.update). Returns the new client's record.
        """
        default = self._groups().default
        if not default:
            raise MetadataConsistencyError(
                f"client {client} is not in clients.xml and no default profile is set")
        if not valid_client_name(client):
            raise MetadataConsistencyError(f"refusing to register client name {client!r}")
        if reserved_client_name(client):
            raise MetadataConsistencyError(
                f"refusing to register the reserved name {client!r}: only an admin can "
                f"add it to clients.xml")
        repo = (self.clients_file.records if self.clients_file else None) or {}
        self.registrations.admit(client, len(set(self.clients_model.clients) - set(repo)))
        self.logger.info("Registering new client %s with profile %s", client, default)
        self.state.update(client, keep=keep, profile=default, trusted_profile=default, **attrs)
        record = self.clients_model.clients.get(client)
        if record is None:
            raise MetadataRuntimeError(f"client {client} could not be registered")
        return record

    def set_profile(self, client: str, profile: str, address: tuple[str, int] | None,
                    require_public: bool = True) -> None:
        """A client's AssertProfile (``address`` given: the group must be public, and a
        pinned client keeps its profile), or an admin's change (``address`` None)."""
        groups_model = self._groups()
        client = self._canonical(client)
        group = groups_model.groups.get(profile)
        if group is None:
            raise MetadataConsistencyError(f"profile group {profile} does not exist")
        pinned = self.clients_model.clients.get(client)
        if address is not None and pinned is not None and pinned.pinned:
            if pinned.profile != profile:
                self.logger.info("Client %s asserted profile %s; it is pinned to %s, which it "
                                 "keeps", client, profile, pinned.profile)
            return
        if require_public and address is not None and not group.public:
            raise MetadataConsistencyError(
                f"cannot set client {client} to private group {profile}")
        record = self.clients_model.clients.get(client)
        if record is None:
            # first contact asserting a profile: registered as any new client is (with the
            # default profile, which access checks keep going by), or refused
            record = self._register(client)
        if record.profile == profile:
            return
        self.logger.info("Changing profile of %s from %s to %s", client, record.profile, profile)
        self.state.update(client, profile=profile, trusted_profile=record.acl_profile)

    def set_version(self, client: str, version: str) -> None:
        client = self._canonical(client)
        if client not in self.clients_model.clients:
            # first contact: registers the client with the default profile, or refuses it
            self.get_initial_metadata(client)
        record = self.clients_model.clients[client]
        if record.version == version:
            return
        self.logger.info("Client %s declared version %s", client, version)
        self.state.update(client, version=version)

    def set_pinned(self, client: str, pinned: bool) -> None:
        """Pin a known client to its profile (AssertProfile then leaves it), or unpin it."""
        name = self._canonical(client)
        record = self.clients_model.clients.get(name)
        if record is None:
            raise MetadataConsistencyError(f"no such client: {name}")
        if record.pinned == pinned:
            return
        self.logger.info("%s client %s to profile %s", "Pinned" if pinned else "Unpinned",
                         name, record.profile)
        self.state.update(name, pinned="true" if pinned else "false")

    def is_pinned(self, client: str) -> bool:
        record = self.clients_model.clients.get(self._canonical(client))
        return record is not None and record.pinned

    def remove_client(self, client_name: str) -> bool:
        """Forget a client the server registered (an admin's RMI).

        Clients the server recorded (first contact, versions, profiles) are
        removed from its state; a client defined in the repository's
        clients.xml is removed there by the admin (bcfg2-admin client del),
        unless the server writes clients.xml in place, as upstream does.
        """
        name = self._canonical(str(client_name))
        if name not in self.clients_model.clients:
            raise MetadataConsistencyError(f"no such client: {name}")
        repo = self.clients_file
        in_repo = repo is not None and name in (repo.records or {})
        if in_repo and repo.name != self.state.name:
            raise MetadataConsistencyError(
                f"client {name} is defined in {repo.name}; remove it there "
                f"(bcfg2-admin client del {name})")
        if not self.state.remove(name):
            raise MetadataRuntimeError(f"client {name} could not be removed")
        self.logger.info("Removed client %s", name)
        return True

    # -- identity and authentication -------------------------------------------

    def resolve_client(self, address: tuple[str, int], cleanup_cache: bool = False) -> str:
        """The client calling: the one it authenticated as, else the one at its address."""
        client = getattr(address, "client", None)
        if client:
            return self._canonical(client)
        return self.resolve_address(address[0])

    def resolve_address(self, ip: str) -> str:
        """The client at an IP address: clients.xml addresses, then reverse DNS."""
        model = self.clients_model
        names = model.addresses.get(ip)
        if names:
            if len(set(names)) != 1:
                raise MetadataConsistencyError(
                    f"address {ip} belongs to several clients ({', '.join(sorted(set(names)))})"
                    f"; a uuid must be used")
            return names[0]
        try:
            name = socket.getnameinfo((ip, 0), socket.NI_NAMEREQD)[0].lower()
        except (OSError, UnicodeError):
            raise MetadataConsistencyError(f"address resolution error for {ip}") from None
        return model.aliases.get(name, name)

    def validate_client_address(self, client: str, address: tuple[str, int]) -> bool:
        record = self.clients_model.clients.get(client)
        if record is not None and record.floating:
            return True
        names = self.clients_model.addresses.get(address[0])
        if names:
            if client in names:
                return True
            self.logger.error("Got request for non-floating client %s from %s", client,
                              address[0])
            return False
        try:
            resolved = self.resolve_address(address[0])
        except MetadataConsistencyError as err:
            self.logger.error("Client %s at %s: %s", client, address[0], err)
            return False
        if resolved == client:
            return True
        self.logger.error("Got request for %s from incorrect address %s", client, address[0])
        return False

    def AuthenticateConnection(self, cert: dict | None, user: str, password: str,  # noqa: N802
                               address: tuple[str, int]) -> str | None:
        """Identify the client (certificate CN, address, or uuid) and authenticate it.

        Returns the client's canonical name, None if refused.

        The client's ``auth`` (else ``[communication] authentication``) decides:
        ``cert+password`` wants the password, with or without a certificate;
        ``cert`` wants a certificate and nothing else; ``bootstrap`` accepts a
        password until the client first presents its certificate, and is
        ``cert`` from then on (recorded in the server's state).
        """
        model = self.clients_model
        if cert:
            id_method = "cert"
            client = self._certificate_name(cert, address)
            claimed = self._name_for_user(user) if user and user != "root" else ""
            if client and claimed in model.clients and claimed != self._canonical(client):
                self.logger.error("Refused connection from %s: certificate of %s, user names "
                                  "client %s", address[0], client, claimed)
                return None
        elif user == "root":
            id_method = "address"
            try:
                client = self.resolve_client(address)
            except MetadataConsistencyError as err:
                self.logger.error("Client %s failed to resolve: %s", address[0], err)
                return None
        else:
            id_method = "uuid"
            client = self._name_for_user(user)
        if not client or not valid_client_name(client):
            self.logger.error("Refused connection from %s: invalid client name", address[0])
            return None
        client = model.aliases.get(client, client)
        record = model.clients.get(client)
        if record is None and reserved_client_name(client):
            self.logger.error("Refused connection from %s: %s is a reserved name that no "
                              "client in clients.xml has", address[0], client)
            return None
        auth = (record.auth if record and record.auth else self.default_auth)
        if id_method == "cert":
            if not self.validate_client_address(client, address):
                return None
            if auth == "bootstrap":
                self._end_bootstrap(client)
            if auth in ("cert", "bootstrap"):
                return client
        elif auth == "cert":
            self.logger.error("Client %s (%s) must authenticate with a certificate", client,
                              address[0])
            return None
        elif id_method == "address" and not self.validate_client_address(client, address):
            return None
        own = record.password if record else None
        secure = bool(record and record.secure)
        if secure and not own:
            self.logger.error("Client %s is secure but has no password", client)
            return None
        allowed = [own] if secure else [p for p in (self.password, own) if p]
        if not any(hmac.compare_digest(password.encode(), p.encode()) for p in allowed):
            # the door logs failures once per burst (bcfg2.limits.AuthThrottle)
            self.logger.debug("Client %s (%s) failed to authenticate: wrong password",
                              client, address[0])
            return None
        return client

    def _name_for_user(self, user: str) -> str:
        """The client a basic-auth user names: a uuid, else the user taken as a name."""
        name = self.clients_model.uuids.get(user, user).lower()
        return self.clients_model.aliases.get(name, name)

    def _certificate_name(self, cert: dict, address: tuple[str, int]) -> str:
        """The one commonName of a verified client certificate ("" if not exactly one)."""
        name = common_name(cert)
        if name is None:
            self.logger.error("Refused connection from %s: the client certificate has no "
                              "single common name", address[0])
            return ""
        return name

    def _end_bootstrap(self, client: str) -> None:
        """A bootstrap client presented its certificate: from now on it is ``cert``."""
        try:
            if client in self.clients_model.clients:
                self.state.update(client, keep=True, auth="cert")
            else:  # registered and switched in one write, kept even if the write fails
                self._register(client, keep=True, auth="cert")
        except (MetadataConsistencyError, MetadataRuntimeError) as err:
            self.logger.error("Client %s presented its certificate, but the end of its "
                              "bootstrap cannot be recorded: %s", client, err)
            return
        self.logger.info("Client %s presented its certificate: from now on it must "
                         "authenticate with it", client)

    # -- queries ---------------------------------------------------------------

    def resolve_name(self, name: str) -> str | None:
        """The canonical name of a known client or alias; None if unknown (never registers)."""
        client = self._canonical(name)
        return client if client in self.clients_model.clients else None

    @exposed
    def list_clients(self) -> list[str]:
        """Names of every known client."""
        return sorted(self.clients_model.clients)

    @exposed
    def get_all_group_names(self) -> list[str]:
        """Names of every group declared in groups.xml."""
        return sorted(self._groups().groups)

    def list_groups(self) -> list[GroupInfo]:
        """Every group declared in groups.xml with its flags, sorted by name."""
        groups = self._groups().groups
        return [groups[name] for name in sorted(groups)]

    def get_all_groups_in_category(self, category: str) -> list[str]:
        return sorted(g.name for g in self._groups().groups.values() if g.category == category)

    def get_client_names_by_profiles(self, profiles: Iterable[str]) -> list[str]:
        wanted = set(profiles)
        return sorted(n for n, r in self.clients_model.clients.items() if r.profile in wanted)

    def connector_names(self) -> list[str]:
        """Names of the Connector plugins the server runs (``metadata.<Name>``)."""
        return [plugin.name for plugin in self.core.plugins_by_type(Connector)]

    def client_summaries(self) -> dict[str, ClientSummary]:
        return {name: ClientSummary(rec.profile, rec.version, rec.pinned)
                for name, rec in self.clients_model.clients.items()}

    def clients_in_groups(self, groups: list[str]) -> list[str]:
        return self.get_client_names_by_groups(groups)

    def get_client_names_by_groups(self, groups: Iterable[str]) -> list[str]:
        wanted = set(groups)
        return [name for name in self.list_clients()
                if wanted <= self.core.build_metadata(name).groups]


__all__ = ["ClientsModel", "GroupsModel", "Metadata", "MetadataGroup"]

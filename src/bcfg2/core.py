"""The server core: builds each client's configuration through plugin interfaces.

``Core`` knows interfaces, never a concrete plugin. It loads the plugins named
in ``[server] plugins``, keeps them current through the file monitor, and
answers the exposed XML-RPC methods. ``NetworkCore`` adds what a core that
listens on the network needs (authentication, daemonization); the network
cores in ``bcfg2.cores`` implement ``_run``, ``_block`` and ``_daemonize``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
import select
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, ClassVar, NoReturn

import lxml.etree

from bcfg2 import bindmemo, configcache, metrics, statistics
from bcfg2.cache import RELAYED, Expiry, MetadataCache
from bcfg2.errors import (
    ConfigError,
    CoreInitError,
    CriticalError,
    MetadataConsistencyError,
    MetadataRuntimeError,
    NoExposedMethod,
    PluginExecutionError,
    PluginInitError,
    StorageError,
    UntrustedInputError,
    ValidationError,
)
from bcfg2.filemonitor import load_backend
from bcfg2.health import HealthServer, health_address
from bcfg2.identity import Caller, admin_identity, identity_allows, is_loopback
from bcfg2.logger import reopen_logs
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option, Setup, put_in_service, require
from bcfg2.plugin import interfaces
from bcfg2.plugin.base import Plugin, as_bool, exposed
from bcfg2.plugin.manager import check_plugin, find_plugin
from bcfg2.proxyprotocol import TrustedBalancers
from bcfg2.sdnotify import notify
from bcfg2.statsupload import UploadGate, read_statistics, statistics_element
from bcfg2.storage import engine_of, sqlite
from bcfg2.untrusted import GROUP_NAME, MAX_GROUP_NAME, MAX_VERSION, VERSION, client_text, escaped
from bcfg2.web import mount, web_address
from bcfg2.xml import parse_untrusted, tostring

__all__ = [
    "Core", "CoreInitError", "LocalCore", "NetworkCore", "NoExposedMethod", "exposed",
    "sort_xml",
]


#: errors about what a caller sent: their text goes back to the caller in the Fault
CLIENT_ERRORS = (MetadataConsistencyError, UntrustedInputError)

def sort_xml(node: lxml.etree._Element, key: Callable[[Any], Any] | None = None) -> None:
    """Sort an XML tree recursively and in place into a deterministic order.

    The default order is by the ``name`` attribute, then the tag, then the
    other attributes (two ``Package`` entries of one name but different
    ``arch`` must not keep their input order); the attributes are compared
    only to break such ties. Elements equal in all of these keep their
    document order.
    """
    children = list(node)
    for child in children:
        if len(child):
            sort_xml(child, key)
    if len(children) < 2:
        return
    if key is not None:
        order = sorted(children, key=lambda el: _none_first(key(el)))
    else:
        keyed = [((el.get("name") or "", tag if isinstance(tag := el.tag, str) else ""), el)
                 for el in children]
        keyed.sort(key=_first)
        if any(a[0] == b[0] for a, b in itertools.pairwise(keyed)):
            keyed.sort(key=lambda item: (item[0], sorted(item[1].attrib.items())))
        order = [el for _, el in keyed]
    if any(a is not b for a, b in zip(order, children, strict=True)):  # move only if needed
        node[:] = order


def _first(item: tuple[Any, Any]) -> Any:
    return item[0]


def _none_first(value: Any) -> Any:
    return ("",) if value is None else value


#: the calls whose answer follows from the client's stored state, so they first check
#: whether another server changed it (``check_stored``): the others (DeclareVersion,
#: RecvProbeData, RecvStats) record what the agent says and read nothing it must see
FRESH_METHODS = frozenset({"GetConfig", "GetProbes", "GetDecisionList"})


class Core:
    """The container of all server logic: plugins, metadata, configuration builds."""

    name = "Core"
    #: True for a core that renders for another process (a multiprocessing child): it
    #: runs none of the background work its parent does (fetching package indices),
    #: and reads what the parent writes to the state directory instead
    worker: ClassVar[bool] = False
    #: True for a core a local tool drives (bcfg2-info, bcfg2-lint): no network and no
    #: background threads, so a plugin does at first use what a server does in the
    #: background (fetching package indices)
    local: ClassVar[bool] = False
    #: False for a core whose configurations are built in other processes (the
    #: multiprocessing core's parent): plugins need not keep in memory what only a
    #: build reads (package indices)
    renders: ClassVar[bool] = True
    #: the core's own options (network cores), joining the options table
    options: ClassVar[tuple[Option, ...]] = ()
    #: this server's part among servers sharing a PostgreSQL database (network cores)
    fleet: Any = None

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        put_in_service(setup)
        self.logger = logging.getLogger("bcfg2.core")
        self.repository = setup.server.repository
        if not os.path.isdir(self.repository):
            raise CoreInitError(f"repository {self.repository} does not exist or is not a "
                                f"directory ([server] repository, -Q)")
        self.cfile = setup.config_file
        #: enabled plugins by name
        self.plugins: dict[str, Plugin] = {}
        #: plugins not loaded because they conflict with one loaded before them
        self.plugin_blacklist: dict[str, list[str]] = {}
        self.revision = "-1"
        self.terminate = threading.Event()
        #: held while file-monitor events are handled
        self.lock = threading.Lock()
        self.db_write_lock = threading.RLock()
        self.debug_flag = bool(setup.logging.debug) or setup.logging.level == "debug"
        self.metadata_cache = MetadataCache(setup.caching.client_metadata)
        self.metadata_cache.bind(self._initial_metadata, self._complete_metadata)
        self.config_cache = configcache.ConfigCache(setup.caching.configurations,
                                                    setup.caching.configuration_bytes)
        #: bound entries per client likeness (``bcfg2.bindmemo``)
        self.bind_memo = bindmemo.BindMemo(setup.caching.bound_entries,
                                           setup.caching.bound_bytes)
        self.metadata_cache.subscribe(self._metadata_expired)
        self.upload_gate = UploadGate.from_setup(setup)
        self.fam = load_backend(setup.server.filemonitor)(
            ignore=setup.server.ignore_files, debug=self.debug_flag)
        self.fam.listeners.append(self._file_changed)
        self.fam_thread: threading.Thread | None = None
        self.perflog_thread: threading.Thread | None = None
        self.metadata: Any = None
        self._by_type: dict[type, list[Plugin]] = {}
        self.rmi: dict[str, Callable[..., Any]] = {}
        try:
            self.load_plugins()
            self.block_for_fam_events(handle_events=True)
        except BaseException:
            self.shutdown()  # plugins loaded so far and the file monitor
            raise
        self.update_revision()

    # -- plugins -------------------------------------------------------------

    @property
    def metadata_cache_mode(self) -> str:
        """off, initial, cautious or aggressive (``on`` means cautious)."""
        return self.metadata_cache.mode

    def load_plugins(self) -> None:
        """Load the plugins of ``[server] plugins``; exactly one must be Metadata."""
        for name in dict.fromkeys(self.setup.server.plugins):
            self.init_plugin(find_plugin(name))
        meta = self.plugins_by_type(interfaces.Metadata)
        if not meta:
            raise CoreInitError("no Metadata plugin is loaded; add Metadata to "
                                "[server] plugins")
        if len(meta) > 1:
            raise CoreInitError("more than one Metadata plugin is loaded: "
                                + ", ".join(p.name for p in meta))
        self.metadata = meta[0]
        self.rmi = self._build_rmi()

    def init_plugin(self, plugin: type[Plugin]) -> None:
        """Instantiate one plugin class and store it in ``plugins``."""
        name = plugin.name
        conflicts = [p.name for p in self.plugins.values()
                     if name in p.conflicts or p.name in plugin.conflicts]
        if conflicts:
            self.plugin_blacklist[name] = conflicts
            self.logger.warning("Not loading plugin %s: it conflicts with %s", name,
                                ", ".join(conflicts))
            return
        check_plugin(plugin)
        if plugin.experimental:
            self.logger.warning("Loading experimental plugin %s", name)
        if plugin.deprecated:
            self.logger.warning("Loading deprecated plugin %s", name)
        try:
            self.plugins[name] = plugin(self)
        except PluginInitError as err:
            raise CoreInitError(f"plugin {name} failed to start: {err}") from err
        self._by_type.clear()

    def plugins_by_type(self, base_cls: type) -> list[Any]:
        """Loaded plugins implementing ``base_cls``, by sort_order then name."""
        cached = self._by_type.get(base_cls)
        if cached is None:
            cached = sorted((p for p in self.plugins.values() if isinstance(p, base_cls)),
                            key=lambda p: (p.sort_order, p.name))
            self._by_type[base_cls] = cached
        return list(cached)

    def _build_rmi(self) -> dict[str, Callable[..., Any]]:
        rmi: dict[str, Callable[..., Any]] = {}
        for pname, plugin in self.plugins.items():
            for mname, func in plugin.rmi().items():
                rmi[f"{pname}.{mname}"] = func
        return rmi

    def exposed_methods(self) -> dict[str, Callable[..., Any]]:
        """The core's own XML-RPC methods, by name (found once: looked up per request)."""
        methods = self.__dict__.get("_exposed")
        if methods is None:
            methods = self._exposed = {
                name: getattr(self, name) for name in dir(self.__class__)
                if not name.startswith("_")
                and getattr(getattr(self.__class__, name, None), "exposed", False)}
        return methods

    # -- the file monitor ----------------------------------------------------

    def update_revision(self) -> None:
        """Ask the Version plugins for the repository's revision."""
        for plugin in self.plugins_by_type(interfaces.Version):
            try:
                self.revision = str(plugin.get_revision())
            except Exception:
                self.logger.exception("%s failed to report the revision", plugin.name)
            break

    def _file_monitor_thread(self) -> None:
        """Handle file-monitor events, in order, until the core terminates.

        The thread sleeps in the monitor's ``wait`` (with inotify: until the
        kernel reports a change) and handles each burst of events together.
        """
        while not self.terminate.is_set():
            try:
                self.fam.wait()
                if self.terminate.is_set():
                    return
                if self.fam.handle_event_set(self.lock):
                    self.update_revision()
            except Exception:
                self.logger.exception("error in the file monitor thread")
                self.terminate.wait(1.0)  # do not spin on a persistent error

    def block_for_fam_events(self, handle_events: bool = False) -> None:
        """Wait until every queued file-monitor event is handled.

        With ``handle_events`` the events are handled here, in this thread
        (used at start-up and by local tools that run no monitor thread).
        """
        if handle_events:
            self.fam.handle_event_set(self.lock)
            return
        self.fam.wait_idle(self.terminate)

    def refresh(self) -> int:
        """Handle every repository change noticed so far; return how many events.

        For local tools, which run no file-monitor thread (bcfg2-info ``update``).
        """
        self.fam.wait(0)
        count = self.fam.handle_event_set(self.lock)
        if count:
            self.update_revision()
        return count

    def HandleEvent(self, event: Any) -> None:  # noqa: N802
        """Changes to bcfg2.conf itself are only noted: a restart applies them."""
        self.logger.warning("%s changed; restart the server to apply it", event.path)

    # -- running -------------------------------------------------------------

    def run(self) -> bool:
        """Start the server, then block until it is shut down."""
        if not self._run():
            self.shutdown()
            return False
        self.fam.start()
        self.fam_thread = threading.Thread(target=self._file_monitor_thread,
                                           name="file-monitor", daemon=True)
        self.fam_thread.start()
        for plugin in self.plugins.values():
            plugin.start_threads()
        try:
            self._block()
        finally:
            self.shutdown()
        return True

    def _run(self) -> bool:
        """Start up the server; return immediately. Overridden by cores."""
        raise NotImplementedError

    def _block(self) -> None:
        """Block until the server is stopped. Overridden by cores."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop threads and plugins; safe to call more than once."""
        if getattr(self, "_shut_down", False):
            return
        self._shut_down = True
        self.terminate.set()
        self.fam.wake()
        if self.fam_thread is not None and self.fam_thread is not threading.current_thread():
            self.fam_thread.join(timeout=10)
        for plugin in list(self.plugins.values()):
            try:
                plugin.shutdown()
            except Exception:
                self.logger.exception("plugin %s failed to shut down", plugin.name)
        self.fam.shutdown()

    # -- building configurations ---------------------------------------------

    def critical_error(self, message: str, err: BaseException | None = None) -> NoReturn:
        """Log the error with its traceback and raise it to the caller (a -32500 Fault).

        The caller learns what failed. How it failed reaches the caller only
        when it is about what the caller sent (``CLIENT_ERRORS``); a failure
        of the server's own (a state file it cannot write, a plugin's bug)
        stays in the log, with the paths and OS errors that say where.
        """
        if err is None:
            self.logger.error(message, exc_info=True)
            raise CriticalError(message)
        if isinstance(err, CLIENT_ERRORS):
            self.logger.error("%s: %s", message, err)
            raise CriticalError(f"{message}: {err}")
        self.logger.error("%s: %s", message, err, exc_info=True)
        raise CriticalError(f"{message}: a server-side error (see the server's log)")

    def build_metadata(self, client_name: str) -> ClientMetadata:
        """The full metadata of a client (Metadata plugin plus Connectors), as the cache allows."""
        if self.metadata is None:
            raise MetadataRuntimeError("metadata is not available yet")
        return self.metadata_cache.fetch(client_name)

    def _initial_metadata(self, client_name: str) -> ClientMetadata:
        return self.metadata.get_initial_metadata(client_name)

    def _complete_metadata(self, imd: ClientMetadata) -> ClientMetadata:
        """Add every Connector's groups, then their data, to the Metadata plugin's part."""
        start = time.monotonic()
        connectors = self.plugins_by_type(interfaces.Connector)
        self._add_connector_groups(imd, connectors)
        for conn in connectors:
            data = conn.get_additional_data(imd)
            self.metadata.merge_additional_data(imd, conn.name, data)
        imd.query.by_name = self.build_metadata
        statistics.stats.add_value("build_metadata", time.monotonic() - start)
        return imd

    def trusted_metadata(self, client_name: str) -> ClientMetadata:
        """A client's metadata from the repository alone: what access checks see.

        The Metadata plugin's part without a profile the client asserted,
        and the groups of every Connector that does not take them from the
        client (``Connector.client_supplied``: probe output); GroupLogic and
        the like then decide on those groups only. Built afresh each time:
        only ACL checks with a metadata phase ask for it.
        """
        start = time.monotonic()
        imd = self.metadata.get_trusted_metadata(client_name)
        self._add_connector_groups(imd, [conn for conn in self.plugins_by_type(interfaces.Connector)
                                         if not conn.client_supplied])
        statistics.stats.add_value("build_trusted_metadata", time.monotonic() - start)
        return imd

    def _add_connector_groups(self, imd: ClientMetadata, connectors: list[Any]) -> None:
        """Merge the groups each Connector gives, in order, into the metadata."""
        for conn in connectors:
            names = [getattr(group, "name", group) for group in conn.get_additional_groups(imd)]
            if names:
                self.metadata.merge_additional_groups(imd, names)

    def expire_caches_by_type(self, base_cls: type, key: str | None = None) -> None:
        """Expire the caches of every Caching plugin that is also a ``base_cls``."""
        for plugin in self.plugins_by_type(base_cls):
            if isinstance(plugin, interfaces.Caching):
                plugin.expire_cache(key)

    def client_run_hook(self, hook: str, metadata: ClientMetadata) -> None:
        """Run a ClientRunHooks stage (start_client_run, end_client_run, end_statistics)."""
        for plugin in self.plugins_by_type(interfaces.ClientRunHooks):
            try:
                getattr(plugin, hook)(metadata)
            except Exception:
                self.logger.exception("%s: %s failed for %s", plugin.name, hook,
                                      metadata.hostname)

    @metrics.phase("structures")
    def GetStructures(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """All structures (bundles) for the client from every Structure plugin."""
        structures = list(chain.from_iterable(
            plugin.BuildStructures(metadata)
            for plugin in self.plugins_by_type(interfaces.Structure)))
        names = {s.get("name") for s in structures if s.tag in ("Bundle", "Independent")}
        missing = sorted(b for b in metadata.bundles if b not in names)
        if missing:
            self.logger.error("Client %s configuration missing bundles: %s",
                              metadata.hostname, ":".join(missing))
        return structures

    @metrics.phase("validate")
    def validate_structures(self, metadata: ClientMetadata,
                            data: list[lxml.etree._Element]) -> None:
        """Let StructureValidator plugins check (and adjust) the structures."""
        for plugin in self.plugins_by_type(interfaces.StructureValidator):
            try:
                plugin.validate_structures(metadata, data)
            except ValidationError as err:
                self.logger.error("Plugin %s structure validation failed: %s",
                                  plugin.name, err)
                raise
            except Exception:
                self.logger.exception("Plugin %s: unexpected structure validation failure",
                                      plugin.name)

    @metrics.phase("goals")
    def validate_goals(self, metadata: ClientMetadata, data: lxml.etree._Element) -> None:
        """Let GoalValidator plugins check (and adjust) the bound configuration."""
        for plugin in self.plugins_by_type(interfaces.GoalValidator):
            try:
                plugin.validate_goals(metadata, data)
            except ValidationError as err:
                self.logger.error("Plugin %s goal validation failed: %s", plugin.name, err)
                raise
            except Exception:
                self.logger.exception("Plugin %s: unexpected goal validation failure",
                                      plugin.name)

    @metrics.phase("bind")
    def BindStructures(self, structures: list[lxml.etree._Element],  # noqa: N802
                       metadata: ClientMetadata, config: lxml.etree._Element) -> None:
        """Bind every structure and add it to the configuration."""
        for structure in structures:
            start = time.monotonic()
            try:
                config.append(self.BindStructure(structure, metadata))
                statistics.stats.add_value(f"{self.__class__.__name__}:BindStructure",
                                           time.monotonic() - start)
            except Exception:
                self.logger.exception("error binding structure %s for %s",
                                      structure.get("name"), metadata.hostname)

    def BindStructure(self, structure: lxml.etree._Element,  # noqa: N802
                      metadata: ClientMetadata) -> lxml.etree._Element:
        """Bind each entry of one structure; a failure marks only that entry. Returns the
        bound structure: this one, or a copy of one bound the same way before.

        An entry bound before for a client that looks alike to its generator's
        choices is a copy of that one (``bcfg2.bindmemo``), with the same tokens
        recorded for the configuration cache; so is a whole structure, when it is
        as it was (its serialised form the same) and every entry of it was, and
        every generator reports its choices.
        """
        memo = self.bind_memo if self.bind_memo.enabled else None
        unreported = self._unreported_generators
        whole: bytes | None = None
        if memo is not None and not unreported:
            generation = memo.generation
            whole = lxml.etree.tostring(structure, with_tail=False)
            found = memo.lookup(whole, metadata)
            if found is not None:
                kept = found[0].__copy__()
                kept.tail = structure.tail
                configcache.depends_on(*found[1])
                return kept
        #: what the structure was bound under, as long as every entry can be kept
        audiences: list[Any] | None = [] if whole is not None else None
        tokens: set[str] = set()
        for entry in list(structure):
            tag = entry.tag
            if not isinstance(tag, str):
                structure.remove(entry)
                audiences = None
                continue
            if tag.startswith("Bound"):
                entry.tag = tag[5:]  # bound already, by the structure
                continue
            if tag == "Bundle":
                continue
            try:
                key = memo.key(entry) if memo is not None else None
                if key is None:
                    audiences = None
                    self.Bind(entry, metadata)
                    continue
                found = memo.lookup(key, metadata)  # type: ignore[union-attr]
                if found is not None and (not unreported or
                                          self._unclaimed(entry, metadata, found[2])):
                    kept = found[0].__copy__()
                    kept.tail = entry.tail
                    structure.replace(entry, kept)
                    configcache.depends_on(*found[1])
                    if audiences is not None:
                        audiences.append(found[3])
                        tokens.update(found[1])
                    continue
                kept_as = self._bind_and_keep(entry, key, metadata, memo)  # type: ignore[arg-type]
                if kept_as is None:
                    audiences = None
                elif audiences is not None:
                    audiences.extend(kept_as[0])
                    tokens.update(kept_as[1])
            except Exception as err:
                audiences = None
                if "failure" not in entry.attrib:
                    entry.set("failure", f"bind error: {err}")
                self.logger.error("Failed to bind entry %s:%s for %s: %s", entry.tag,
                                  entry.get("name"), metadata.hostname, err)
        if audiences is not None and whole is not None:
            memo.keep(whole, audiences, metadata, structure,  # type: ignore[union-attr]
                      tuple(tokens), generation)
        return structure

    def _bind_and_keep(self, entry: lxml.etree._Element, key: tuple[Any, ...],
                       metadata: ClientMetadata, memo: bindmemo.BindMemo,
                       ) -> tuple[list[Any], set[str]] | None:
        """Bind an entry, recording its choices and tokens, and keep it if its generator
        promised that it holds for every client alike (``bcfg2.bindmemo``): then
        (the audiences of its choices, its tokens), else None."""
        generation = memo.generation
        with bindmemo.recording() as record, configcache.recording() as deps:
            self.Bind(entry, metadata)
        if deps.uncacheable is not None or "failure" in entry.attrib or not record.promised:
            return None
        memo.store(key, record, metadata, entry, tuple(deps.tokens), generation)
        return record.audiences, deps.tokens

    def _unclaimed(self, entry: lxml.etree._Element, metadata: ClientMetadata,
                   pattern: bool) -> bool:
        """Whether no generator that reports nothing of its choices claims the entry now
        (they are asked as ``generators_for`` would; the others' choices are in the key)."""
        for gen in self._unreported_generators:
            if gen.binder_for(entry, metadata) is not None or (
                    pattern and gen.HandlesEntry(entry, metadata)):
                return False
        return True

    @functools.cached_property
    def _reported_generators(self) -> frozenset[Any]:
        """The generators whose classes themselves declare ``binds_by_likeness``."""
        return frozenset(gen for gen in self.plugins_by_type(interfaces.Generator)
                         if type(gen).__dict__.get("binds_by_likeness", False))

    @functools.cached_property
    def _unreported_generators(self) -> list[Any]:
        return [gen for gen in self.plugins_by_type(interfaces.Generator)
                if gen not in self._reported_generators]

    def generators_for(self, entry: lxml.etree._Element,
                       metadata: ClientMetadata) -> list[tuple[Any, Callable[..., Any]]]:
        """The generators that would bind an entry for a client, with their bind functions.

        Generators that list the entry by name come first: only when none does
        are the generators that claim it by a pattern (HandlesEntry) asked.
        More than one result is a conflict.
        """
        generators = self.plugins_by_type(interfaces.Generator)
        listed = [(gen, func) for gen in generators
                  if (func := gen.binder_for(entry, metadata)) is not None]
        if listed:
            return listed
        record = bindmemo.current()
        if record is not None:
            record.pattern = True
        return [(gen, gen.HandleEntry) for gen in generators
                if gen.HandlesEntry(entry, metadata)]

    def Bind(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> Any:  # noqa: N802
        """Bind one entry with the one Generator that handles it."""
        if "altsrc" in entry.attrib:
            # bind under the other name; if that fails, under the entry's own
            oldname = entry.get("name")
            entry.set("name", entry.attrib.pop("altsrc"))
            entry.set("realname", oldname)
            try:
                return self.Bind(entry, metadata)
            except Exception as err:
                self.logger.error("Failed to bind %s:%s from altsrc %s (%s); falling back "
                                  "to %s", entry.tag, oldname, entry.get("name"), err, oldname)
                entry.attrib.pop("failure", None)
            finally:
                entry.set("name", oldname)
                entry.attrib.pop("realname", None)
        name = entry.get("name")
        handlers = self.generators_for(entry, metadata)
        if len(handlers) == 1:
            gen, bind = handlers[0]
            result = bind(entry, metadata)
            if gen not in self._reported_generators:
                record = bindmemo.current()
                if record is not None:
                    record.promised = False  # a promise its class does not make
            return result
        if handlers:
            names = ", ".join(gen.name for gen, _ in handlers)
            entry.set("failure", f"served by multiple generators: {names}")
            raise PluginExecutionError(f"{entry.tag}:{name} is served by multiple "
                                       f"generators: {names}")
        entry.set("failure", "no matching generator")
        raise PluginExecutionError(f"no generator handles {entry.tag}:{name}")

    def BuildConfiguration(self, client: str,  # noqa: N802
                           metadata: ClientMetadata | None = None) -> lxml.etree._Element:
        """The complete configuration document for a client (whose metadata may be given)."""
        start = time.monotonic()
        config = lxml.etree.Element("Configuration", version="2.0", revision=self.revision)
        try:
            meta = metadata if metadata is not None else self.build_metadata(client)
        except MetadataConsistencyError as err:
            self.logger.error("Metadata consistency error for client %s: %s", client, err)
            return lxml.etree.Element("error", type="metadata error")
        self.client_run_hook("start_client_run", meta)
        try:
            structures = self.GetStructures(meta)
        except Exception:
            self.logger.exception("error in GetStructures for %s", client)
            return lxml.etree.Element("error", type="structure error")
        try:
            self.validate_structures(meta, structures)
        except ValidationError:
            return lxml.etree.Element("error", type="structure validation error")
        sources: dict[tuple[str, str | None], str | None] = {}
        for struct in structures:
            for entry in struct:
                key = (entry.tag, entry.get("name"))
                if key in sources and sources[key] != entry.get("altsrc"):
                    self.logger.error("inconsistent altsrc mapping for entry %s:%s", *key)
                sources.setdefault(key, entry.get("altsrc"))
        self.BindStructures(structures, meta, config)
        try:
            self.validate_goals(meta, config)
        except ValidationError:
            return lxml.etree.Element("error", type="goal validation error")
        self.client_run_hook("end_client_run", meta)
        sort_xml(config)
        statistics.stats.add_value("BuildConfiguration", time.monotonic() - start)
        self.logger.info("Generated config for %s in %.3fs", client, time.monotonic() - start)
        return config

    def serve_configuration(self, client: str, metadata: ClientMetadata) -> str:
        """The client's configuration as a string: kept from an earlier build if nothing
        it depends on changed since (``bcfg2.configcache``), else built (and kept)."""
        return self.serve(client, metadata).text()

    def serve(self, client: str, metadata: ClientMetadata) -> configcache.Served:
        """The client's configuration as the cache has it or a build gives it, with the key
        and tokens it is kept under (``configcache.Served``)."""
        cache = self.config_cache
        if not cache.enabled:
            config = self.BuildConfiguration(client, metadata=metadata)
            with metrics.phase("serialise"):
                return configcache.Served(tostring(config))
        generation = cache.generation
        with configcache.recording() as deps:
            key, kept = self.kept_configuration(client, metadata)
            if kept is not None:
                return configcache.Served(None, kept[0], key, kept[1])
            config = self.BuildConfiguration(client, metadata=metadata)
        with metrics.phase("serialise"):
            text = tostring(config)
        if key is None or deps.uncacheable is not None:
            cache.counts["uncacheable"] += 1
            self.logger.debug("configuration of %s not kept: %s", client, deps.uncacheable)
        elif config.tag == "Configuration" and ' failure="' not in text:
            blob = configcache.compress(text)
            tokens = frozenset(deps.tokens)
            if cache.store(client, key, blob, tokens, generation):
                return configcache.Served(text, blob, key, tokens)
            return configcache.Served(text, blob)
        return configcache.Served(text)

    def kept_configuration(self, client: str, metadata: ClientMetadata
                           ) -> tuple[str | None, tuple[bytes, frozenset[str]] | None]:
        """The client's configuration key (None: it may not be kept) and, if the cache
        keeps a configuration built under it, that one (compressed) with its tokens; the
        run hooks then run, as a build runs them."""
        start = time.monotonic()
        key = configcache.configuration_key(self.revision, metadata, self._cache_participants)
        kept = None if key is None else self.config_cache.lookup_kept(client, key)
        if kept is not None:
            self.client_run_hook("start_client_run", metadata)
            self.client_run_hook("end_client_run", metadata)
            statistics.stats.add_value("GetConfig:cached", time.monotonic() - start)
        return key, kept

    @functools.cached_property
    def _cache_participants(self) -> list[Plugin]:
        """Every plugin whose output goes into a configuration (asked for its cache key)."""
        kinds = (interfaces.Metadata, interfaces.Connector, interfaces.Structure,
                 interfaces.StructureValidator, interfaces.Generator, interfaces.GoalValidator)
        return sorted((p for p in self.plugins.values() if isinstance(p, kinds)),
                      key=lambda p: p.name)

    def _file_changed(self, event: Any) -> None:
        """A repository change is in service: drop the configurations built from it and
        every bound entry kept (``bcfg2.bindmemo``)."""
        self.bind_memo.clear()
        self.config_cache.invalidate_path(event.path, listed=event.action != "changed")

    def _metadata_expired(self, expiry: Expiry) -> None:
        """Client metadata changed (here, in the parent, or on another server): drop the
        configurations of the clients it names (their keys would differ anyway)."""
        if expiry.tag.removeprefix(RELAYED) != "cautious":  # a run starting: keys tell
            self.config_cache.drop(expiry.clients)

    def GetDecisions(self, metadata: ClientMetadata, mode: str) -> list[tuple[str, str]]:  # noqa: N802
        """The decision list (whitelist or blacklist) for a client."""
        result: list[tuple[str, str]] = []
        for plugin in self.plugins_by_type(interfaces.Decision):
            try:
                result.extend(plugin.GetDecisions(metadata, mode))
            except Exception:
                self.logger.exception("plugin %s failed to generate decisions", plugin.name)
        return result

    def process_statistics(self, client_name: str, statistics_doc: lxml.etree._Element,
                           metadata: ClientMetadata | None = None) -> None:
        """Hand uploaded statistics to every Statistics plugin.

        A plugin that fails is logged and the others go on; if one could not
        store the run (StorageError), that error is raised once all have had
        their turn, so the agent is not told its run was stored.
        """
        meta = metadata if metadata is not None else self.build_metadata(client_name)
        state = statistics_element(statistics_doc)
        lost: StorageError | None = None
        for plugin in self.plugins_by_type(interfaces.Statistics):
            try:
                plugin.process_statistics(meta, statistics_doc)
            except StorageError as err:
                self.logger.error("plugin %s could not store the statistics of %s: %s",
                                  plugin.name, client_name, err)
                lost = lost or err
            except Exception:
                self.logger.exception("plugin %s failed to process statistics for %s",
                                      plugin.name, client_name)
        self.logger.info("Client %s reported state %s", client_name,
                         escaped(state.get("state", ""), 64))
        self.client_run_hook("end_statistics", meta)
        if lost is not None:
            raise lost

    # -- who is calling --------------------------------------------------------

    def authenticate(self, cert: dict | None, user: str, password: str,
                     address: tuple[str, int]) -> Caller | None:
        """Who the credentials identify: an admin, or a client (Metadata plugin); None if refused.

        A Metadata plugin's ``AuthenticateConnection`` returns the client's
        name; True (upstream's answer) leaves the client to be resolved by
        address. With ``[communication] trust_loopback`` a client calling from
        the loopback address is also an admin, as upstream had it.
        """
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        admin = admin_identity(self.setup, cert, user, password)
        if admin is False:
            # the door logs failures once per burst (bcfg2.limits.AuthThrottle)
            self.logger.debug("Admin %r at %s failed to authenticate: wrong password",
                              user[:64], address[0])
            return None
        if admin:
            return Caller(address, admin=admin)
        try:
            result = self.metadata.AuthenticateConnection(cert, user, password, address)
            if not result:
                return None
            client = result if isinstance(result, str) else self.metadata.resolve_client(address)
        except Exception:
            self.logger.exception("authentication of %s failed with an error", address[0])
            return None
        loopback = self.setup.communication.trust_loopback and is_loopback(address[0])
        return Caller(address, client=client, admin="loopback" if loopback else None)

    def client_for(self, address: tuple[str, int]) -> str:
        """The name of the client calling: the one it authenticated as.

        A plain address (a local tool, third-party code) is resolved by the
        Metadata plugin, as upstream did.
        """
        if isinstance(address, Caller):
            if address.client is None:
                raise CriticalError(f"{address.admin} is an admin, not a client: this method "
                                    f"is for agents")
            return address.client
        with self._metadata_errors(address):
            return self.metadata.resolve_client(address)

    def metadata_for(self, address: tuple[str, int], method: str = "") -> ClientMetadata:
        """The calling client's metadata, built at most once per request.

        The caching mode's rule for ``method`` (cautious: a run starts with
        fresh metadata) applies before the one build; the ACL check and the
        method then share it.
        """
        if isinstance(address, Caller) and address.metadata is not None:
            return address.metadata
        client = self.client_for(address)
        if method in FRESH_METHODS:
            self.check_stored(client)
        self.metadata_cache.before_call(method, client)
        with self._metadata_errors(address):
            meta = self.build_metadata(client)
        if isinstance(address, Caller):
            address.metadata = meta
        return meta

    def check_stored(self, client: str) -> None:
        """Expire the client first if another server changed it in the shared database
        since this one built its metadata (read-your-writes within one agent run)."""
        if self.fleet is not None:
            self.fleet.check(client)

    @contextlib.contextmanager
    def _metadata_errors(self, address: tuple[str, int]) -> Iterator[None]:
        """The Metadata plugin's errors about a caller, as the caller's Fault."""
        try:
            yield
        except MetadataConsistencyError as err:
            self.critical_error(f"Client metadata resolution error for {address[0]}", err)
        except MetadataRuntimeError as err:
            self.critical_error(f"Metadata system runtime failure for {address[0]}", err)

    def resolve_client(self, address: tuple[str, int], cleanup_cache: bool = False,
                       metadata: bool = True) -> tuple[str, ClientMetadata | None]:
        """The caller's client name and (unless ``metadata`` is false) its metadata."""
        client = self.client_for(address)
        return client, (self.metadata_for(address) if metadata else None)

    def check_acls(self, address: tuple[str, int], rmi: str) -> bool:
        """May the caller call ``rmi``? Its identity, then the ClientACLs plugins on top.

        Clients may call the agent methods, admins everything
        (``bcfg2.identity``). ClientACLs plugins are asked in two phases, by
        address and then by the client's metadata (built only if a plugin
        defers): any denial denies; a plugin's explicit allowance (True)
        grants the call even beyond what the identity permits; None is no
        opinion. The metadata phase applies to clients only, and sees the
        groups the repository gives the client (``trusted_metadata``), never
        those its probes or its own AssertProfile produce.
        """
        caller = address if isinstance(address, Caller) else Caller(address)
        plugins = self.plugins_by_type(interfaces.ClientACLs)
        try:
            verdicts = [p.check_acl_ip(caller, rmi) for p in plugins]
        except Exception:
            self.logger.exception("IP ACL check failed for %s calling %s", caller.ip, rmi)
            return False
        if any(v is False for v in verdicts):
            return False
        granted = bool(plugins) and all(v is True for v in verdicts)
        if not granted and caller.client is not None and any(v is None for v in verdicts):
            try:
                meta = self.trusted_metadata(caller.client)
                verdicts = [p.check_acl_metadata(meta, rmi) for p in plugins]
            except (MetadataConsistencyError, MetadataRuntimeError) as err:
                self.logger.error("metadata ACL check of %s calling %s: %s", caller.client, rmi,
                                  err)
                return False
            except Exception:
                self.logger.exception("metadata ACL check failed for %s calling %s",
                                      caller.ip, rmi)
                return False
            if any(v is False for v in verdicts):
                return False
            granted = any(v is True for v in verdicts)
        return granted or identity_allows(caller, rmi)

    # -- exposed XML-RPC methods ---------------------------------------------

    @exposed
    def DeclareVersion(self, address: tuple[str, int], version: str) -> bool:  # noqa: N802
        """Record the version of the client software."""
        version = client_text(version, "version", VERSION, MAX_VERSION)
        client = self.client_for(address)
        try:
            self.metadata.set_version(client, version)
        except (MetadataConsistencyError, MetadataRuntimeError) as err:
            self.critical_error(f"Unable to set version for {client}", err)
        return True

    @exposed
    def GetProbes(self, address: tuple[str, int]) -> str:  # noqa: N802
        """The probes the client should run, as a ``<probes>`` document."""
        meta = self.metadata_for(address, "GetProbes")
        try:
            probes = lxml.etree.Element("probes")
            for plugin in self.plugins_by_type(interfaces.Probing):
                for probe in plugin.GetProbes(meta):
                    probes.append(probe)
            return tostring(probes)
        except Exception as err:
            self.critical_error(f"Error determining probes for {meta.hostname}", err)

    @exposed
    def RecvProbeData(self, address: tuple[str, int], probedata: str) -> bool:  # noqa: N802
        """Store the probe output the client sends."""
        meta = self.metadata_for(address, "RecvProbeData")
        client = meta.hostname
        try:
            xpdata = parse_untrusted(probedata, "probe data")
        except UntrustedInputError as err:
            self.critical_error(f"Failed to parse probe data from client {client}", err)
        sources: dict[str, list[lxml.etree._Element]] = {}
        for data in xpdata:
            if isinstance(data.tag, str):
                sources.setdefault(data.get("source", ""), []).append(data)
        for source, items in sources.items():
            plugin = self.plugins.get(source)
            if not isinstance(plugin, interfaces.Probing):
                self.logger.warning("probe data from %s names unknown source %r; ignored",
                                    client, source[:64])
                continue
            try:
                plugin.ReceiveData(meta, items)
            except Exception as err:
                self.critical_error(f"Failed to process probe data from {client}", err)
        return True

    @exposed
    def AssertProfile(self, address: tuple[str, int], profile: str) -> bool:  # noqa: N802
        """Set the client's profile group (the group must be public)."""
        profile = client_text(profile, "profile", GROUP_NAME, MAX_GROUP_NAME)
        client = self.client_for(address)
        try:
            self.metadata.set_profile(client, profile, address)
        except (MetadataConsistencyError, MetadataRuntimeError) as err:
            self.critical_error(f"Unable to assert profile for {client}", err)
        return True

    def catch_up(self) -> None:
        """Handle the repository changes the kernel has already reported.

        With a monitor that is told of changes (inotify) this costs one
        non-blocking check, and a change made before a request is always
        seen by it; a polling monitor is left to its own schedule.
        """
        if self.fam.blocking:
            self.refresh()

    @exposed
    def GetConfig(self, address: tuple[str, int]) -> str | configcache.Packed:  # noqa: N802
        """The client's configuration as an XML string: as the cache keeps it, compressed
        (``configcache.Packed``), when it was kept."""
        self.catch_up()
        meta = self.metadata_for(address, "GetConfig")
        try:
            return self.serve(meta.hostname, meta).result()
        except Exception:
            self.critical_error(f"Error creating config for {meta.hostname}")

    @exposed
    def GetDecisionList(self, address: tuple[str, int], mode: str) -> list[tuple[str, str]]:  # noqa: N802
        """The client's decision list for ``mode`` (whitelist or blacklist)."""
        return self.GetDecisions(self.metadata_for(address, "GetDecisionList"), str(mode))

    @exposed
    def RecvStats(self, address: tuple[str, int], stats: str) -> bool:  # noqa: N802
        """Receive the statistics of a client run (read incrementally, a few large ones at once)."""
        meta = self.metadata_for(address, "RecvStats")
        try:
            with self.upload_gate.turn() as turn:
                sdata = read_statistics(stats, self.setup.reporting.max_entries, turn)
                self.process_statistics(meta.hostname, sdata, metadata=meta)
        except UntrustedInputError as err:
            self.critical_error(f"Refused statistics from {meta.hostname}", err)
        except StorageError as err:
            self.critical_error(f"The statistics of {meta.hostname} were not stored", err)
        return True

    @exposed
    def listMethods(self, address: tuple[str, int]) -> list[str]:  # noqa: N802
        """The names of every exposed method, plugin RMI included."""
        return sorted(list(self.exposed_methods()) + list(self.rmi))

    @exposed
    def methodHelp(self, address: tuple[str, int], method_name: str) -> str:  # noqa: N802
        """The documentation of an exposed method."""
        func = self.exposed_methods().get(str(method_name)) or self.rmi.get(str(method_name))
        if func is None:
            return ""
        return inspect.getdoc(func) or ""

    @exposed
    def methodSignature(self, address: tuple[str, int], method_name: str) -> str:  # noqa: N802
        """Signatures are not described (as with Python's own XML-RPC servers)."""
        return "signatures not supported"

    @exposed
    def get_statistics(self, address: tuple[str, int]) -> dict[str, Any]:
        """Execution-time statistics: name -> [min, max, mean, count]."""
        return statistics.stats.display()

    @exposed
    def expire_metadata_cache(self, address: tuple[str, int],
                              hostnames: list[str] | None = None) -> bool:
        """Expire the cached metadata of the named clients, or of all."""
        if hostnames is not None and not (isinstance(hostnames, list)
                                          and all(isinstance(h, str) for h in hostnames)):
            raise CriticalError("expire_metadata_cache takes a list of client names")
        self.metadata_cache.expire(hostnames, tag="expire_metadata_cache")
        self.expire_plugins(hostnames)
        return True

    def expire_plugins(self, hostnames: list[str] | None = None) -> None:
        """Expire the caches of every Caching plugin, for the named clients or all."""
        for plugin in self.plugins_by_type(interfaces.Caching):
            if hostnames is None:
                plugin.expire_cache()
            else:
                for host in hostnames:
                    plugin.expire_cache(host)

    @exposed
    def toggle_debug(self, address: tuple[str, int]) -> bool:
        """Toggle debug logging of the core, the file monitor and every plugin."""
        return self.set_debug(address, not self.debug_flag)

    @exposed
    def set_debug(self, address: tuple[str, int], debug: bool | str) -> bool:
        """Set debug logging of the core, the file monitor and every plugin."""
        flag = as_bool(debug)
        for plugin in self.plugins.values():
            plugin.set_debug(flag)
        self.set_core_debug(address, flag)
        self.set_fam_debug(address, flag)
        return flag

    @exposed
    def toggle_core_debug(self, address: tuple[str, int]) -> bool:
        """Toggle debug logging of the core."""
        return self.set_core_debug(address, not self.debug_flag)

    @exposed
    def set_core_debug(self, address: tuple[str, int], debug: bool | str) -> bool:
        """Set debug logging of the core."""
        self.debug_flag = as_bool(debug)
        logging.getLogger("bcfg2").setLevel(logging.DEBUG if self.debug_flag else logging.NOTSET)
        return self.debug_flag

    @exposed
    def toggle_fam_debug(self, address: tuple[str, int]) -> bool:
        """Toggle debug logging of the file monitor."""
        return self.set_fam_debug(address, not self.fam.debug)

    @exposed
    def set_fam_debug(self, address: tuple[str, int], debug: bool | str) -> bool:
        """Set debug logging of the file monitor."""
        return self.fam.set_debug(as_bool(debug))


class LocalCore(Core):
    """A core with no network, for bcfg2-info and the other local tools."""

    name = "local"
    local = True

    def _run(self) -> bool:
        return True

    def _block(self) -> None:
        """Nothing to wait for: local tools drive the core themselves."""


class NetworkCore(Core):
    """A core that listens on the network: authentication and daemonization."""

    def __init__(self, setup: Setup) -> None:
        try:
            require(setup, "communication", "password", "agents authenticate with it")
            require(setup, "communication", "key", "the server needs a TLS key")
            require(setup, "communication", "certificate", "the server needs a TLS certificate")
        except ConfigError as err:
            raise CoreInitError(str(err)) from None
        for option in ("key", "certificate", "ca"):
            path = setup.get("communication", option)
            if path and not os.path.isfile(path):
                raise CoreInitError(f"[communication] {option}: {path} does not exist")
        try:
            #: the load balancers whose PROXY protocol headers are believed (None: off)
            self.balancers = TrustedBalancers.from_list(setup.server.proxy_protocol)
            self.health_address = health_address(setup.server.health_port)
            #: /metrics: the web page mounts its app; [metrics] listen starts with the health
            self.metrics_endpoint = metrics.Endpoint(setup)
            self.web_address = web_address(setup.web.listen)
        except ConfigError as err:
            raise CoreInitError(str(err)) from None
        #: the health endpoint (``[server] health_port``), once started
        self.health: HealthServer | None = None
        #: the web page (``[web] listen``), once started
        self.web: Any = None
        #: set once the core listens for agents; a 503 of the health endpoint until then
        self.serving = False
        url = urllib.parse.urlsplit(setup.components.bcfg2)
        self.host = "" if setup.server.listen_all else (url.hostname or "localhost")
        self.port = url.port if url.port is not None else 6789
        #: the CA that verifies client certificates
        self.ca = setup.communication.ca
        # a signal handler only sets a flag and writes to this pipe: no locks
        self._stop_signal = 0
        self._hangup = False
        self._stop_r, self._stop_w = os.pipe()
        os.set_blocking(self._stop_w, False)
        if setup.communication.trust_loopback:
            logging.getLogger("bcfg2.core").warning(
                "[communication] trust_loopback is on: every client calling from the loopback "
                "address may call the admin methods and every plugin method")
        if engine_of(setup) == "postgresql":
            # before the plugins read their state: no event after it is missed
            from bcfg2.fleet import Fleet
            from bcfg2.options import server_name

            try:
                self.fleet = Fleet(setup, server_name(setup, self.port))
            except (ConfigError, StorageError) as err:
                raise CoreInitError(f"cannot join the servers sharing the database: "
                                    f"{err}") from None
        try:
            super().__init__(setup)
        except BaseException:
            if self.fleet is not None:
                self.fleet.close()
            raise
        if self.fleet is not None:
            self.fleet.attach(self.metadata_cache)

    def unavailable(self) -> str | None:
        """Why the core cannot serve agents now (the health endpoint's 503), None if it can."""
        if self.terminate.is_set():
            return "stopping"
        if not self.serving:
            return "starting"
        return None

    def _start_health(self) -> bool:
        """Start the health endpoint and the metrics listener, those configured; False
        (logged) if one cannot listen.

        Cores call it as they start, after daemonizing (its thread would not
        survive the fork); a second call does nothing.
        """
        if not self.metrics_endpoint.start():  # [metrics] listen, if set, logs why it cannot
            return False
        if self.health_address is None or self.health is not None:
            return True
        try:
            self.health = HealthServer(self.health_address, self.unavailable)
        except OSError as err:
            self.logger.error("Cannot listen on %s:%d for the health endpoint ([server] "
                              "health_port): %s", *self.health_address, err.strerror)
            return False
        self.health.start()
        self.logger.info("Health endpoint on http://%s:%d/healthz", *self.health.address)
        return True

    def _start_web(self) -> bool:
        """Start the web page if ``[web] listen`` is set; False (logged) if it cannot.

        Called as the health endpoint is, after daemonizing; a second call does nothing.
        """
        if self.web_address is None or self.web is not None:
            return True
        from bcfg2.web.server import WebServer

        # /metrics beside the pages, under its own access rule ([metrics] enabled, allow, token)
        mount("/metrics", lambda core: core.metrics_endpoint.app)

        try:
            self.web = WebServer(self, self.setup, self.web_address)
            self.web.start()
        except (OSError, ConfigError, StorageError) as err:
            self.logger.error("Cannot serve the web page on %s:%d ([web] listen): %s",
                              *self.web_address, getattr(err, "strerror", None) or err)
            if self.web is not None:
                self.web.stop()
                self.web = None
            return False
        self.logger.info("Web page on https://%s:%d/", *self.web.address)
        return True

    def _start_side_listeners(self) -> bool:
        """The health endpoint and the web page, where configured (cores call it as they
        start, after daemonizing)."""
        return self._start_health() and self._start_web()

    def _listening(self) -> None:
        """The core now listens for agents: log where, and turn the health check to 200."""
        self.logger.info("Listening on https://%s:%d", self.host or "*", self.port)
        if self.fleet is not None:
            from bcfg2.fleet import named
            from bcfg2.options import server_name

            if not named(self.setup):  # the port the kernel chose is known now
                self.fleet.name = server_name(self.setup, self.port)
            self.logger.info("Sharing cache expiries with the other servers of the database "
                             "as %s", self.fleet.name)
        if self.balancers is not None:
            self.logger.info("PROXY protocol v2 required from the balancers %s ([server] "
                             "proxy_protocol)", ", ".join(map(str, self.balancers.networks)))
        self.serving = True
        notify(f"READY=1\nSTATUS=Listening on https://{self.host or '*'}:{self.port}")

    @exposed
    def ping(self, address: tuple[str, int], *args: Any) -> list[Any]:
        """Return the arguments: a liveness check for monitoring."""
        return list(args)

    def _on_signal(self, signum: int, frame: Any = None) -> None:
        """SIGINT/SIGTERM: ask the core to stop. Safe in a signal handler: takes no lock."""
        self._stop_signal = signum
        self._wake(b"x")

    def _on_hangup(self, signum: int = signal.SIGHUP, frame: Any = None) -> None:
        """SIGHUP: have the main thread reopen the log files. Safe in a signal handler."""
        self._hangup = True
        self._wake(b"h")

    def _wake(self, byte: bytes) -> None:
        """Wake the main thread sleeping in ``_wait_for_stop`` (from a signal handler)."""
        if self._stop_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._stop_w, byte)

    def reopen_logs(self) -> None:
        """Reopen the log files (logrotate moved them away); cores with children tell them."""
        paths = reopen_logs()
        self.logger.info("Got SIGHUP: reopened the log files %s",
                         ", ".join(paths) if paths else "(none: logging to no file)")

    def fds(self) -> list[int]:
        """Descriptors the core needs after daemonizing (the rest are closed)."""
        return [*self.fam.fds(), self._stop_r, self._stop_w]

    def _wait_for_stop(self) -> None:
        """Sleep until a signal asks the core to stop (or terminate is set), then set terminate.

        A SIGHUP meanwhile reopens the log files.

        The main thread sleeps on a pipe the signal handler writes to, never
        inside a lock a signal handler could need; other threads (a core run
        by a test) wait on the terminate event.
        """
        if threading.current_thread() is threading.main_thread():
            while not self._stop_signal and not self.terminate.is_set():
                select.select([self._stop_r], [], [])
                os.read(self._stop_r, 512)
                if self._hangup:
                    self._hangup = False
                    self.reopen_logs()
        else:
            self.terminate.wait()
        if self._stop_signal:
            self.logger.info("Got signal %d, shutting down", self._stop_signal)
        self.terminate.set()

    def shutdown(self) -> None:
        if self.serving:  # once: shutdown may be called again
            self.serving = False
            notify("STOPPING=1")
        if getattr(self, "web", None) is not None:  # its actions use the plugins
            self.web.stop()
            self.web = None
        if self.fleet is not None:  # first: nothing more is applied while plugins stop
            self.fleet.close()
            self.fleet = None
        super().shutdown()
        if self.health is not None:  # answered 503 while the rest stopped
            self.health.stop()
            self.health = None
        self.metrics_endpoint.stop()
        for attr in ("_stop_w", "_stop_r"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                os.close(fd)

    def run(self) -> bool:
        if self.setup.daemon:
            sqlite.close_connections()  # opened again by the daemon (see there)
            self._daemonize()
        if self.fleet is not None:  # after daemonizing: threads do not survive a fork
            self.fleet.start()
        return super().run()

    def _daemonize(self) -> None:
        """Detach, write the pidfile and drop privileges. Overridden by cores."""
        raise NotImplementedError

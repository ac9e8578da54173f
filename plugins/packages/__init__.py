"""Packages: package entries bound from the client's package sources, dependencies added.

``Packages/sources.xml`` lists the APT, Yum, pacman and pkgng sources and
which clients each applies to (``<Group>``/``<Client>`` conditionals and an
architecture group). Before binding, the packages of the client's bundles
(with package groups and Essential packages) are closed under their
dependencies (``resolver``); what that adds goes into an
``<Independent name="Packages">`` structure, and every ``Package`` entry is
bound with its type and version. The plugin also serves the APT and Yum
configuration that points a client at its sources, and the GPG keys of its
Yum sources.

Indices are fetched in the background of a running server (never while an
agent waits), kept in the state directory (``store``) and read from there
at start-up; a source that cannot be fetched keeps its last good index in
service and is logged once. ``Packages.Refresh`` fetches every source again
now, ``Packages.Reload`` fetches what is missing; a change to sources.xml
does the latter by itself.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2 import metrics
from bcfg2.options import Option
from bcfg2.plugin import (
    Generator,
    PackageSources,
    Plugin,
    PluginExecutionError,
    Resolution,
    SourceInfo,
    StructureValidator,
    as_bool,
    default_path_metadata,
    depends_on,
    set_content,
)
from bcfg2.plugins.packages import clientconfig, drivers, gpgkey
from bcfg2.plugins.packages.fetch import Fetcher
from bcfg2.plugins.packages.index import Index
from bcfg2.plugins.packages.resolver import View
from bcfg2.plugins.packages.sources import Source, SourcesFile
from bcfg2.plugins.packages.store import open_store
from bcfg2.untrusted import escaped

if TYPE_CHECKING:
    from bcfg2.cache import Expiry
    from bcfg2.metadata import ClientMetadata

#: one (source, architecture): what is fetched, cached and resolved against
Part = tuple[Source, str]
#: seconds ``Packages.Refresh`` and ``Reload`` wait for the fetch before answering
RMI_WAIT = 45.0
#: the backends option's names, by source type
BACKENDS = {"apt": "Apt", "yum": "Yum", "pac": "Pac", "pkgng": "Pkgng"}
#: clients remembered with the sources that apply to them
CLIENT_MEMO = 4096
#: what every configuration Packages takes part in records: the indices and keys in service
INDICES = "Packages:indices"


def switch(value: Any) -> bool:
    """A boolean option that also accepts upstream's "enabled" and "disabled"."""
    if isinstance(value, str) and value.strip().lower() in ("enabled", "disabled"):
        return value.strip().lower() == "enabled"
    return as_bool(value)


class Loaded:
    """One (source, architecture) index in service, with what it was read from."""

    __slots__ = ("index", "key", "mtime", "serial", "size")

    def __init__(self, index: Index | None, key: str, mtime: float, serial: int,
                 size: int) -> None:
        #: None in a core that renders nothing (it only fetches and writes the cache)
        self.index = index
        #: how many packages it has
        self.size = size
        #: the upstream key (Release or repomd checksum)
        self.key = key
        #: the cache file's modification time when it was read or written
        self.mtime = mtime
        #: changes with every index put in service (views are keyed by it)
        self.serial = serial


class Packages(Plugin, StructureValidator, Generator, PackageSources):
    """Binds Package entries from package sources, resolving their dependencies."""

    conflicts = ["Pkgmgr"]
    __rmi__ = Plugin.__rmi__ + ["Refresh", "Reload"]
    options = (
        Option("packages", "resolver", "true",
               "Add the dependencies of the client's packages (true/false; upstream's "
               "enabled/disabled too)."),
        Option("packages", "metadata", "true",
               "Read package indices at all; false turns resolution off too and binds "
               "Package entries from sources.xml alone."),
        Option("packages", "backends", "Yum, Apt, Pac, Pkgng",
               "The kinds of source that are read; a source of another kind is ignored.",
               type="list"),
        Option("packages", "version", "auto",
               "The version bound into Package entries that name none: auto (the newest "
               "the client's sources offer) or any (whatever is installed).",
               type="choice", choices=("auto", "any")),
        Option("packages", "apt_config",
               "/etc/apt/sources.list.d/bcfg2-packages-generated-sources.list",
               "The Path entry that serves a client its APT sources."),
        Option("packages", "yum_config", "/etc/yum.repos.d/bcfg2.repo",
               "The Path entry that serves a client its Yum repositories."),
        Option("packages", "gpg_keypath", "/etc/pki/rpm-gpg",
               "The directory where clients get the GPG keys of their Yum sources."),
        Option("packages", "cache", "",
               "The directory of the index cache (default: Packages/cache in the state "
               "directory).", type="path"),
        Option("packages", "refresh_interval", 3600,
               "Seconds between checks of every source for a newer index (a check fetches "
               "only the Release or repomd.xml when nothing changed); 0 checks only at "
               "start-up and on Packages.Refresh.", type="int"),
        Option("packages", "fetch_timeout", 60.0,
               "Seconds one index download may take in all.", type="float"),
        Option("packages", "max_index_size", 512 * 2**20,
               "Largest index file, in bytes, downloaded or decompressed.", type="int"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        opts = core.setup.packages
        self.metadata_on = switch(opts.metadata)
        self.resolver_on = self.metadata_on and switch(opts.resolver)
        self.version = opts.version
        self.keypath = opts.gpg_keypath
        self.backends = {name.lower() for name in opts.backends}
        state_dir = core.setup.server.state_dir or core.repository
        self.store = open_store(core.setup,
                                opts.cache or os.path.join(state_dir, "Packages", "cache"))
        self.fetcher = Fetcher(timeout=float(opts.fetch_timeout), max_size=int(opts.max_index_size))
        self.refresh_interval = max(0, int(opts.refresh_interval))
        #: whether indices are held in memory (not in a core whose children do the builds)
        self.keep_indices = core.renders
        #: (source, arch) -> the index in service; replaced whole, never changed in place
        self.loaded: dict[Part, Loaded] = {}
        #: (source, arch) -> the last error fetching it (logged once)
        self.errors: dict[Part, str] = {}
        self.gpg_keys: dict[str, bytes] = {}
        #: key URL -> the (version, release) of each key in it, as ``rpm --import`` names it
        self.gpg_key_names: dict[str, list[tuple[str, str]]] = {}
        self._serials = itertools.count(1)
        #: held while the indices in service are replaced (file monitor and refresher)
        self._install_lock = threading.Lock()
        self._key_errors: dict[str, str] = {}
        self._update_lock = threading.Lock()
        self._views: dict[tuple[Any, ...], View] = {}
        self._clients: dict[tuple[Any, ...], list[Part]] = {}
        self._wake = threading.Event()
        self._force = False
        self._passes = 0
        self._passes_done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._tried_locally: set[Part] = set()
        self.Entries["Path"] = {opts.apt_config: self._bind_apt_config,
                                opts.yum_config: self._bind_yum_config}
        self.sources_file = SourcesFile(os.path.join(self.data, "sources.xml"), core.fam,
                                        base_dir=self.data, on_change=self._sources_changed)
        if core.worker:
            self.on_metadata_expiry(self._relayed_expiry)

    # -- sources and indices ----------------------------------------------

    @property
    def sources(self) -> tuple[Source, ...]:
        """The sources of sources.xml this server reads (those of a listed backend)."""
        return tuple(s for s in self.sources_file.sources
                     if BACKENDS[s.type].lower() in self.backends)

    def parts(self) -> list[Part]:
        """Every (source, architecture) some client can get, in sources.xml order."""
        return [(source, arch) for source in self.sources for arch in source.arches]

    def _sources_changed(self) -> None:
        """sources.xml was read: serve its sources from the cache, fetch what is missing."""
        skipped = sorted({s.type for s in self.sources_file.sources} -
                         {t for t, name in BACKENDS.items() if name.lower() in self.backends})
        if skipped:
            self.logger.warning("Packages: ignoring sources of type %s ([packages] backends "
                                "lists no such backend)", ", ".join(skipped))
        self._clients = {}
        self._read_cache()
        if self.metadata_on and not self.core.worker:
            self.update(local_only=True)  # a mirror on this disk: read now, no waiting
        self._wake.set()

    def _read_cache(self) -> None:
        """Put in service every cached index newer than the one in service (or missing)."""
        with self._install_lock:
            self._read_cache_locked()

    def _read_cache_locked(self) -> None:
        loaded = dict(self.loaded)
        wanted = set(self.parts())
        changed = False
        for part in wanted:
            source, arch = part
            key = source.key(arch)
            current = loaded.get(part)
            if current is not None and self.store.mtime(key) <= current.mtime:
                continue
            cached = self.store.load(key, header_only=not self.keep_indices)
            if cached is not None and (current is None or cached.key != current.key):
                loaded[part] = self._loaded(cached.index, cached.key, cached.mtime, cached.size)
                changed = True
        for part in list(loaded):
            if part not in wanted:
                del loaded[part]
                changed = True
        if changed or len(loaded) != len(self.loaded):
            self._install(loaded)
        for source in self.sources:
            for url in source.gpgkeys:
                if url not in self.gpg_keys:
                    blob = self.store.load_blob(self._key_blob(url))
                    if blob is not None:
                        self._keep_key(url, blob)

    def _loaded(self, index: Index, key: str, mtime: float, size: int) -> Loaded:
        return Loaded(index if self.keep_indices else None, key, mtime, next(self._serials),
                      size)

    def _install(self, loaded: dict[Part, Loaded]) -> None:
        self.loaded = loaded
        self._views = {}
        metrics.packages_indices((source.type, item.mtime) for (source, _), item in loaded.items())
        self.expire_configurations(INDICES)

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond sources.xml (the directory) and the indices and keys in service."""
        depends_on(self.data, INDICES)
        return ""

    def _keep_key(self, url: str, blob: bytes) -> None:
        """Serve a GPG key file, with the ``gpg-pubkey`` instances RPM will know it by."""
        try:
            names = gpgkey.rpm_names(blob)
        except gpgkey.KeyFileError as err:
            self.logger.error("Packages: the GPG key %s is served as a file only: %s",
                              escaped(url, 1000), err)
            names = []
        self.gpg_key_names = {**self.gpg_key_names, url: names}
        self.gpg_keys = {**self.gpg_keys, url: blob}
        self.expire_configurations(INDICES)

    @staticmethod
    def _key_blob(url: str) -> str:
        return "gpgkey-" + hashlib.sha256(url.encode()).hexdigest()[:32]

    def _relayed_expiry(self, expiry: Expiry) -> None:
        """In a multiprocessing child: the parent put new indices in service; read them."""
        if expiry.relayed_from(self.name):
            self._read_cache()

    # -- fetching ---------------------------------------------------------

    def start_threads(self) -> None:
        if self.core.worker or not self.metadata_on:
            return
        self._thread = threading.Thread(target=self._refresher, name="Packages-refresh",
                                        daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        super().shutdown()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _refresher(self) -> None:
        """Check every source at start, then every refresh_interval and when asked."""
        check_all = True
        while self.running:
            force, self._force = self._force, False
            try:
                self.update(check=check_all or force, force=force)
            except Exception:
                self.logger.exception("Packages: updating the indices failed")
            with self._passes_done:
                self._passes += 1
                self._passes_done.notify_all()
            timeout = self.refresh_interval or None
            check_all = not self._wake.wait(timeout)
            self._wake.clear()

    def update(self, check: bool = False, force: bool = False,
               local_only: bool = False) -> list[str]:
        """Fetch indices: missing ones; with ``check`` all (unchanged ones cost the top file
        only); with ``force`` all, downloaded again; with ``local_only`` only those of
        sources on this machine (``file:`` URLs). The errors, one line each."""
        if not self._update_lock.acquire(blocking=not local_only):
            return []  # the refresher is at work (and was woken): never stall the caller
        try:
            return self._update(check, force, local_only)
        finally:
            self._update_lock.release()

    def _update(self, check: bool, force: bool, local_only: bool) -> list[str]:
        failures: list[str] = []
        changed = False
        for part in self.parts():
            if not self.running:
                break
            current = self.loaded.get(part)
            if current is not None and not (check or force):
                continue
            if local_only and not part[0].base_url.startswith("file:"):
                continue
            known = None if force or current is None else current.key
            outcome = self._fetch(part, known)
            if isinstance(outcome, str):
                failures.append(outcome)
            elif outcome:
                changed = True
        if not local_only:
            self._fetch_keys(failures)
        if changed:
            self.expire_metadata()  # a multiprocessing core's children read the cache
        return failures

    def _fetch(self, part: Part, known: str | None) -> bool | str:
        """Fetch one index: True if a new one is in service, False if unchanged, or the error."""
        source, arch = part
        try:
            result = drivers.load(source, arch, self.fetcher, known_key=known)
        except drivers.SourceError as err:
            message = escaped(str(err), 1000)
            if self.errors.get(part) != message:
                state = ("its last good index stays in service" if part in self.loaded
                         else "it offers no packages until it is fetched")
                self.logger.error("Packages: %s (%s): %s (%s)", source.describe(), arch,
                                  message, state)
            self.errors = {**self.errors, part: message}
            return f"{source.describe()} ({arch}): {message}"
        if part in self.errors:
            self.logger.warning("Packages: %s (%s) fetched again, in service", source.describe(),
                                arch)
            self.errors = {k: v for k, v in self.errors.items() if k != part}
        if result is None:
            return False
        key = source.key(arch)
        try:
            self.store.save(key, result.key, result.index, f"{source.describe()} {arch}")
        except OSError as err:
            self.logger.error("Packages: cannot write the cache of %s: %s", source.describe(),
                              err)
        self.logger.info("Packages: %s (%s): %d packages in service", source.describe(), arch,
                         len(result.index))
        with self._install_lock:
            self._install({**self.loaded,
                           part: self._loaded(result.index, result.key, self.store.mtime(key),
                                              len(result.index))})
        return True

    def _fetch_keys(self, failures: list[str]) -> None:
        for source in self.sources:
            if source.type != "yum":
                continue
            for url in source.gpgkeys:
                if url in self.gpg_keys:
                    continue
                try:
                    blob = self.fetcher.get(source.fetch_url(url))
                except Exception as err:  # FetchError, or anything odd about the URL
                    message = escaped(str(err), 1000)
                    failures.append(f"GPG key {url}: {message}")
                    if self._key_errors.get(url) != message:
                        self.logger.error("Packages: cannot fetch the GPG key %s: %s", url,
                                          message)
                    self._key_errors[url] = message
                    continue
                self._key_errors.pop(url, None)
                self._keep_key(url, blob)
                try:
                    self.store.save_blob(self._key_blob(url), blob)
                except OSError as err:
                    self.logger.error("Packages: cannot write the GPG key %s: %s", url, err)

    def _run_pass(self, force: bool) -> list[str]:
        """Have the refresher (or, without one, this thread) fetch now; its errors."""
        if self._thread is None or not self._thread.is_alive():
            return self.update(check=True, force=force) if self.metadata_on else []
        with self._passes_done:
            target = self._passes + (2 if self._update_lock.locked() else 1)
            self._force = self._force or force
            self._wake.set()
            if not self._passes_done.wait_for(lambda: self._passes >= target, RMI_WAIT):
                raise PluginExecutionError(
                    f"the fetch is still running after {RMI_WAIT:.0f} s; it goes on in the "
                    f"background (see the server's log)")
        return [f"{s.describe()} ({a}): {e}" for (s, a), e in sorted(
            self.errors.items(), key=lambda item: item[0][0].name)]

    def Refresh(self) -> bool:  # noqa: N802
        """Fetch every source's index again, now (admin RMI)."""
        self.sources_file.HandleEvent()
        return self._rmi_answer(self._run_pass(force=True))

    def Reload(self) -> bool:  # noqa: N802
        """Read sources.xml again and fetch the indices that are missing (admin RMI)."""
        self.sources_file.HandleEvent()
        self._read_cache()
        if self._thread is None or not self._thread.is_alive():
            return self._rmi_answer(self.update() if self.metadata_on else [])
        return self._rmi_answer(self._run_pass(force=False))

    @staticmethod
    def _rmi_answer(failures: list[str]) -> bool:
        if failures:
            raise PluginExecutionError(f"{len(failures)} source(s) could not be fetched: "
                                       + "; ".join(failures))
        return True

    def _ensure_fetched(self) -> None:
        """For a local tool: fetch, once, what no cache has (a server does it in the background)."""
        if not (self.core.local and self.metadata_on):
            return
        missing = [p for p in self.parts() if p not in self.loaded and p not in self._tried_locally]
        if missing:
            self._tried_locally.update(missing)
            self.update()

    # -- one client -------------------------------------------------------

    def client_parts(self, metadata: ClientMetadata) -> list[Part]:
        """The (source, arch) pairs that apply to a client, highest priority first."""
        memo_key = (metadata.hostname, frozenset(metadata.groups), frozenset(metadata.aliases),
                    id(self.sources_file.sources))
        found = self._clients.get(memo_key)
        if found is None:
            ordered = sorted(enumerate(self.sources), key=lambda item: (-item[1].priority,
                                                                         item[0]))
            found = [(source, arch) for _, source in ordered
                     if (arch := source.applies(metadata)) is not None]
            if len(self._clients) >= CLIENT_MEMO:
                self._clients = {}
            self._clients[memo_key] = found
        return found

    def view(self, parts: list[Part]) -> View:
        """The merged packages of these (source, arch) pairs (built once per set of indices)."""
        loaded = self.loaded
        in_service = [(part, item) for part in parts
                      if (item := loaded.get(part)) is not None and item.index is not None]
        key = tuple((part, item.serial) for part, item in in_service)
        views = self._views
        found = views.get(key)
        if found is None:
            found = View([(part[0], item.index) for part, item in in_service])
            views[key] = found
        return found

    def resolve(self, metadata: ClientMetadata, names: list[str],
                groups: list[tuple[str, str]] = ()) -> tuple[View, frozenset[str], Any]:
        """Resolve named packages and groups for a client: (view, initial set, Result)."""
        parts = self.client_parts(metadata)
        view = self.view(parts)
        initial = set(names)
        for group, kind in groups:
            members = view.group_members(group, kind)
            if members is None:
                self.logger.warning("Packages: %s: no source offers the package group %s",
                                    metadata.hostname, group)
                continue
            initial.update(members)
        initial.update(view.essential)
        frozen = frozenset(initial)
        fresh = frozen not in view.memo
        result = view.resolve(frozen)
        if fresh and result.unknown:
            self.logger.warning("Packages: %s: %d unknown package(s): %s", metadata.hostname,
                                len(result.unknown), ", ".join(result.unknown))
        return view, frozen, result

    # -- StructureValidator -------------------------------------------------

    def validate_structures(self, metadata: ClientMetadata,
                            structures: list[lxml.etree._Element]) -> None:
        """Expand package groups, resolve dependencies, add the Independent structure."""
        parts = self.client_parts(metadata)
        if not parts:
            return
        self._ensure_fetched()
        names, groups = self._requested(structures, remove_groups=True)
        if not (self.resolver_on or groups):
            return
        if self.resolver_on:
            view, initial, result = self.resolve(metadata, names, groups)
            extra: Any = result.packages
        else:
            view = self.view(parts)
            initial = frozenset(m for g, k in groups for m in view.group_members(g, k) or ())
            extra = initial
        present = frozenset(names)
        key = (initial, present, self.resolver_on)
        template = view.structures.get(key)
        if template is None:
            template = lxml.etree.Element("Independent", name=self.name)
            for name in sorted(extra - present):
                lxml.etree.SubElement(template, "BoundPackage", name=name,
                                      type=view.ptype_of(name), version=self.version,
                                      origin="Packages")
            view.remember_structure(key, template)
        independent = copy.deepcopy(template)
        self._add_gpg_keys(parts, independent)
        if len(independent):
            structures.append(independent)

    @staticmethod
    def _requested(structures: list[lxml.etree._Element], remove_groups: bool = False
                   ) -> tuple[list[str], list[tuple[str, str]]]:
        """The package names and (group, type) package groups the structures ask for;
        ``remove_groups`` takes the group entries out (they name no package to bind)."""
        names: list[str] = []
        groups: list[tuple[str, str]] = []
        for structure in structures:
            for entry in list(structure.iter("Package", "BoundPackage")):
                group = entry.get("group")
                if group and not entry.get("name"):
                    groups.append((group, entry.get("type", "default")))
                    parent = entry.getparent()
                    if remove_groups and parent is not None:
                        parent.remove(entry)
                elif entry.get("name"):
                    names.append(entry.get("name"))
        return names, groups

    def _add_gpg_keys(self, parts: list[Part], independent: lxml.etree._Element) -> None:
        """The key files of the client's Yum sources, and a ``gpg-pubkey`` package whose
        instances make the client's RPM import them (installed before the packages they
        sign: the files are ``important``)."""
        seen: set[str] = set()
        default = None
        keys = None
        for source, _ in parts:
            if source.type != "yum":
                continue
            for url in source.gpgkeys:
                path = clientconfig.gpg_key_path(self.keypath, url)
                blob = self.gpg_keys.get(url)
                if blob is None or path in seen:
                    continue
                seen.add(path)
                if default is None:
                    default = default_path_metadata(self.core.setup)
                entry = lxml.etree.SubElement(independent, "BoundPath", name=path, type="file")
                entry.attrib.update(default)
                entry.set("important", "true")
                set_content(entry, blob)
                for version, release in self.gpg_key_names.get(url, ()):
                    if keys is None:
                        keys = lxml.etree.Element("BoundPackage", name="gpg-pubkey",
                                                  type=source.ptype, origin="Packages")
                    lxml.etree.SubElement(keys, "Instance", simplefile=path, version=version,
                                          release=release)
        if keys is not None:
            independent.append(keys)

    # -- Generator ----------------------------------------------------------

    def HandlesEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        """Package entries of a client that some source applies to."""
        return entry.tag == "Package" and bool(entry.get("name")) \
            and bool(self.client_parts(metadata))

    def HandleEntry(self, entry: lxml.etree._Element,  # noqa: N802
                    metadata: ClientMetadata) -> lxml.etree._Element:
        """Bind a Package entry: its type (the source's) and version (``[packages] version``)."""
        if not entry.get("type"):
            view = self.view(self.client_parts(metadata))
            ptype = view.ptype_of(entry.get("name", "")) or self.client_parts(metadata)[0][0].ptype
            entry.set("type", ptype)
        if not entry.get("version"):
            entry.set("version", self.version)
        return entry

    def _bind_config(self, entry: lxml.etree._Element, metadata: ClientMetadata, kind: str,
                     render: Callable[[list[Part]], str]) -> None:
        parts = [p for p in self.client_parts(metadata) if p[0].type == kind]
        if not parts:
            raise PluginExecutionError(f"no {kind} source of Packages/sources.xml applies to "
                                       f"{metadata.hostname}")
        entry.set("type", "file")
        entry.attrib.update({k: v for k, v in default_path_metadata(self.core.setup).items()
                             if k not in entry.attrib})
        set_content(entry, render(parts))

    def _bind_apt_config(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> None:
        self._bind_config(entry, metadata, "apt", clientconfig.apt_sources)

    def _bind_yum_config(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> None:
        self._bind_config(entry, metadata, "yum",
                          lambda parts: clientconfig.yum_repos(parts, self.keypath))

    # -- PackageSources (the tools) ------------------------------------------

    def package_sources(self, metadata: ClientMetadata) -> list[SourceInfo]:
        self._ensure_fetched()
        out = []
        for part in self.client_parts(metadata):
            source, arch = part
            loaded = self.loaded.get(part)
            out.append(SourceInfo(
                name=source.name, type=source.type, url=source.base_url, version=source.version,
                components=source.components, arch=arch, gpgkeys=source.gpgkeys,
                packages=loaded.size if loaded else 0, error=self.errors.get(part)))
        return out

    def resolve_packages(self, metadata: ClientMetadata,
                         names: list[str] | None = None) -> Resolution:
        self._ensure_fetched()
        groups: list[tuple[str, str]] = []
        if names is None:
            names, groups = self._requested(self.core.GetStructures(metadata))
        _, initial, result = self.resolve(metadata, list(names), groups)
        return Resolution(initial=tuple(sorted(initial)), added=result.added,
                          unknown=result.unknown)

    def knows_package(self, name: str) -> bool | None:
        self._ensure_fetched()
        loaded = [item for item in self.loaded.values() if item.index is not None]
        if not loaded:
            return None
        return any(name in item.index.packages or name in item.index.provides
                   for item in loaded)

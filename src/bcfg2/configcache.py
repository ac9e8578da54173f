"""The configuration cache: a client's serialised configuration, served again until
something it was built from changes.

A build records what it depends on, as tokens, while it runs:

- paths: a repository file or directory (an absolute path). A file-monitor
  event at a path drops every configuration that recorded that path or a
  directory above it: a directory stands for everything below it, there
  yet or not;
- listings (``listing(directory)``): which files a directory holds. A file
  that comes or goes drops the configurations that recorded its directory's
  listing, a change to a file's content does not: an entry set records its
  listing and the one version a client got, so editing ``motd.H_c3``
  drops c3's configuration and no other;
- names: any other text a plugin chooses, beginning with the plugin's name
  (``Rules:Path:/etc/motd``, ``Bundler``), dropped when the plugin says it
  changed (``Plugin.expire_configurations``), or, where a process cannot
  tell which of its names changed (``invalidate_owned``), all of that
  plugin's names at once.

Plugins record them with ``depends_on`` during the build (a helper that has
no build to record for does nothing). What a configuration depends on
beyond the repository (the client's metadata: groups, probe data, profile,
version, what connectors add) is its key: the core compares it on every
request, so a client whose metadata changed is built anew even when no
expiry reached this process. A plugin whose output depends on the time or
the world outside (a template that asks for the time, a connector reading a
service) calls ``not_cacheable`` while building, or answers None to
``cache_key``; a plugin that says nothing (``Plugin.cache_key``'s default)
makes every configuration it takes part in uncacheable: never stale.

The cache is bounded by entries and by bytes (kept escaped for XML-RPC and
gzip-compressed: ``compress``), least recently served first out. Each process keeps its
own, dropped by the file-monitor events and metadata expiries it receives (with
PostgreSQL, the other servers' too). The multiprocessing core's children each build and
keep theirs; its parent keeps what they hand it and serves it again without asking
them (``bcfg2.cores.multiprocessing``).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
import threading
import xml.sax.saxutils
import xmlrpc.client
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata
    from bcfg2.plugin.base import Plugin

__all__ = ["ConfigCache", "Dependencies", "Packed", "Served", "TemplateReads", "compress",
           "configuration_key", "decompress", "depends_on", "gzip_member", "inflate", "listing",
           "not_cacheable", "owner", "recording"]

#: what in a template's or helper's source says it may read the time, other clients or
#: anything outside the repository: it reaches no module it does not import (the time,
#: random numbers) and no file it does not open; ``.query`` asks about other clients;
#: the calls after it are ways around that
_WORLD = (rb"import|\.query\b|\b(?:open|eval|exec|compile|globals|getattr|vars|"
          rb"breakpoint|input)\s*\(")
#: in a template, also any dunder (``().__class__``...), the way to what it was not given
_WORLD_TEMPLATE = re.compile(_WORLD + rb"|__")
_WORLD_PYTHON = re.compile(_WORLD)
#: words that say a template reads other files of the repository
_INCLUDES = re.compile(rb"\b(?:include|extends|import|xi)\b")


@dataclass
class Dependencies:
    """What one build recorded: tokens it depends on, and why it may not be kept (or None)."""

    tokens: set[str] = field(default_factory=set)
    uncacheable: str | None = None


def owner(token: str) -> str | None:
    """The plugin a name belongs to (the text before its first colon), None for a path."""
    if token.startswith(os.sep):
        return None
    return token.split(":", 1)[0]


_current: contextvars.ContextVar[Dependencies | None] = contextvars.ContextVar(
    "bcfg2_config_dependencies", default=None)


def listing(directory: str) -> str:
    """The token of a directory's listing: the files in it, not their content."""
    return os.path.normpath(directory) + os.sep


def depends_on(*tokens: str) -> None:
    """Record that the configuration being built depends on these paths or names."""
    deps = _current.get()
    if deps is not None:
        deps.tokens.update(tokens)


def not_cacheable(reason: str) -> None:
    """Record that the configuration being built must not be kept (the first reason wins)."""
    deps = _current.get()
    if deps is not None and deps.uncacheable is None:
        deps.uncacheable = reason


@contextlib.contextmanager
def recording() -> Iterator[Dependencies]:
    """Record the dependencies of the build that runs inside (this thread or task only).

    Inside another recording (one entry of a build, kept apart: ``bcfg2.bindmemo``),
    what it recorded is added to the outer one as well when it ends.
    """
    deps = Dependencies()
    reset = _current.set(deps)
    try:
        yield deps
    finally:
        _current.reset(reset)
        outer = _current.get()
        if outer is not None:
            outer.tokens |= deps.tokens
            if outer.uncacheable is None:
                outer.uncacheable = deps.uncacheable


@dataclass(frozen=True)
class TemplateReads:
    """What a template's source says its output may depend on besides the client's metadata.

    Decided from its words, conservatively: a template that merely mentions
    ``time`` is kept out of the cache, one that mentions ``include`` depends
    on every file of its tree.
    """

    world: str | None
    includes: bool

    @classmethod
    def of(cls, name: str, source: bytes, python: bool = False) -> TemplateReads:
        """What a template's source (or, ``python``, a helper module's) says it reads."""
        found = (_WORLD_PYTHON if python else _WORLD_TEMPLATE).search(source)
        world = None if found is None else (
            f"template {name} may depend on the time or the world outside "
            f"(it says {found.group().decode()!r})")
        return cls(world, _INCLUDES.search(source) is not None)

    def record(self, tree: str) -> None:
        """Record, in the build running, what a render of the template depends on."""
        if self.world is not None:
            not_cacheable(self.world)
        if self.includes:
            depends_on(tree)


def _set_size(tokens: frozenset[str]) -> int:
    """About what a set of tokens and its index take (the strings, and a slot each)."""
    return sum(len(token) + 120 for token in tokens)


@dataclass(frozen=True)
class _Owners:
    """Whose names an invalidation dropped: these plugins', and (``known`` given) those
    of any plugin not among ``known``."""

    plugins: frozenset[str]
    known: frozenset[str] | None = None

    def __contains__(self, plugin: object) -> bool:
        return plugin in self.plugins or (
            self.known is not None and plugin is not None and plugin not in self.known)


#: one remembered invalidation: its generation, then the names or paths, the clients and
#: the plugins whose names it dropped (None: not by that); all three None: everything
_Invalidation = tuple[int, frozenset[str] | None, frozenset[str] | None, _Owners | None]


@dataclass
class _Entry:
    key: str
    blob: bytes
    tokens: frozenset[str]


class ConfigCache:
    """Serialised configurations by client, with the tokens each depends on.

    Clients whose builds recorded the same tokens (those of one profile, most
    often) share one set of them, indexed once: the index grows with the
    kinds of configurations, not with the clients. ``max_bytes`` counts the
    compressed configurations and those shared sets.

    ``max_entries`` or ``max_bytes`` of 0 turns it off. Every invalidation
    bumps ``generation`` and is remembered for a while: a build that started
    before an invalidation that concerns it (one of its tokens, its client)
    is not stored after it, since it may have read what just changed.
    """

    #: invalidations remembered for builds still running (older builds are not stored)
    LOG = 4096

    def __init__(self, max_entries: int = 10000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self.generation = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        #: each distinct set of tokens (shared by the entries that recorded it) -> its clients
        self._groups: dict[frozenset[str], tuple[frozenset[str], set[str]]] = {}
        #: token -> the token sets holding it
        self._index: dict[str, set[frozenset[str]]] = {}
        #: plugin -> the names of it in the index (``owner``)
        self._owned: dict[str, set[str]] = {}
        self._bytes = 0
        #: recent invalidations, oldest first
        self._log: deque[_Invalidation] = deque(maxlen=self.LOG)
        self._lock = threading.Lock()
        #: counts for the statistics: hits, misses, stored, uncacheable, evicted, dropped
        self.counts = dict.fromkeys(
            ("hits", "misses", "stored", "uncacheable", "evicted", "dropped"), 0)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, client: object) -> bool:
        return client in self._entries

    @property
    def size(self) -> int:
        """Bytes the kept configurations take, compressed, with their shared token sets."""
        return self._bytes

    @property
    def token_sets(self) -> int:
        """How many distinct sets of tokens the kept configurations share."""
        return len(self._groups)

    def lookup(self, client: str, key: str) -> str | None:
        """The kept configuration of a client if it was built under ``key``, else None."""
        kept = self.lookup_kept(client, key)
        return None if kept is None else decompress(kept[0])

    def lookup_kept(self, client: str, key: str) -> tuple[bytes, frozenset[str]] | None:
        """``lookup`` as it is kept (``compress``), with the tokens it was kept with (what
        a multiprocessing child hands its parent)."""
        with self._lock:
            entry = self._entries.get(client)
            if entry is None or entry.key != key:
                self.counts["misses"] += 1
                return None
            self._entries.move_to_end(client)
            self.counts["hits"] += 1
            return entry.blob, entry.tokens

    def store(self, client: str, key: str, blob: bytes, tokens: Iterable[str],
              generation: int) -> bool:
        """Keep a configuration (``compress``-ed) built when ``generation`` was current,
        unless an invalidation since concerns it."""
        if not self.enabled:
            return False
        if len(blob) > self.max_bytes:
            return False
        entry = _Entry(key, blob, frozenset(tokens))
        with self._lock:
            if generation != self.generation and self._invalidated(client, entry.tokens,
                                                                   generation):
                return False
            if len(blob) + (0 if entry.tokens in self._groups
                            else _set_size(entry.tokens)) > self.max_bytes:
                return False  # alone over the bound: the others stay
            self._remove(client)
            group = self._groups.get(entry.tokens)
            if group is None:
                group = self._groups[entry.tokens] = (entry.tokens, set())
                self._bytes += _set_size(entry.tokens)
                for token in entry.tokens:
                    self._index.setdefault(token, set()).add(entry.tokens)
                    plugin = owner(token)
                    if plugin is not None:
                        self._owned.setdefault(plugin, set()).add(token)
            entry.tokens = group[0]  # the one shared copy
            group[1].add(client)
            self._entries[client] = entry
            self._bytes += len(blob)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))
                self.counts["evicted"] += 1
            self.counts["stored"] += 1
        return True

    def _invalidated(self, client: str, tokens: frozenset[str], generation: int) -> bool:
        """Whether an invalidation after ``generation`` concerns this client or its tokens."""
        if not self._log or self._log[0][0] > generation + 1:
            return True  # some are forgotten: assume the worst
        for gen, names, clients, plugins in reversed(self._log):
            if gen <= generation:
                break
            if names is None and clients is None and plugins is None:
                return True
            if names is not None and not names.isdisjoint(tokens):
                return True
            if clients is not None and client in clients:
                return True
            if plugins is not None and any(owner(token) in plugins for token in tokens):
                return True
        return False

    def _remove(self, client: str) -> None:
        entry = self._entries.pop(client, None)
        if entry is None:
            return
        self._bytes -= len(entry.blob)
        group = self._groups.get(entry.tokens)
        if group is None:
            return
        group[1].discard(client)
        if group[1]:
            return
        del self._groups[entry.tokens]
        self._bytes -= _set_size(entry.tokens)
        for token in entry.tokens:
            sets = self._index.get(token)
            if sets is not None:
                sets.discard(entry.tokens)
                if not sets:
                    del self._index[token]
                    plugin = owner(token)
                    if plugin is not None and plugin in self._owned:
                        self._owned[plugin].discard(token)
                        if not self._owned[plugin]:
                            del self._owned[plugin]

    def invalidate(self, tokens: Iterable[str]) -> int:
        """Drop every configuration that recorded one of the tokens; how many were dropped."""
        tokens = frozenset(tokens)
        with self._lock:
            self.generation += 1
            self._log.append((self.generation, tokens, None, None))
            return self._drop_holding(tokens)

    def invalidate_owned(self, plugins: Iterable[str], known: Iterable[str] | None = None) -> int:
        """Drop every configuration that recorded a name of one of these plugins (``owner``),
        whichever, and (``known`` given) any name of a plugin not among ``known``: for a
        process that cannot tell which of a plugin's names changed."""
        owners = _Owners(frozenset(plugins), None if known is None else frozenset(known))
        with self._lock:
            self.generation += 1
            self._log.append((self.generation, None, None, owners))
            return self._drop_holding({token for plugin in list(self._owned) if plugin in owners
                                       for token in self._owned[plugin]})

    def _drop_holding(self, tokens: Iterable[str]) -> int:
        """Drop (holding the lock) the configurations that recorded one of the tokens."""
        stale: set[str] = set()
        for token in tokens:
            for shared in self._index.get(token, ()):
                stale.update(self._groups[shared][1])
        for client in stale:
            self._remove(client)
        self.counts["dropped"] += len(stale)
        return len(stale)

    def invalidate_path(self, path: str, listed: bool = False) -> int:
        """Drop every configuration that recorded ``path`` or a directory above it, and
        (``listed``: the file came or went) the listing of its directory."""
        if not self._index:  # nothing kept (start-up reads every file): refuse what runs
            with self._lock:
                self.generation += 1
                self._log.append((self.generation, None, None, None))
            return 0
        path = os.path.normpath(path)
        tokens = [path, listing(os.path.dirname(path))] if listed else [path]
        while True:
            parent = os.path.dirname(path)
            if parent == path:
                break
            tokens.append(parent)
            path = parent
        return self.invalidate(tokens)

    def drop(self, clients: Iterable[str] | None = None) -> int:
        """Drop the configurations of these clients, or (None) of every client."""
        chosen = None if clients is None else frozenset(clients)
        with self._lock:
            self.generation += 1
            self._log.append((self.generation, None, chosen, None))
            names = list(self._entries) if chosen is None else list(chosen)
            dropped = 0
            for client in names:
                if client in self._entries:
                    self._remove(client)
                    dropped += 1
            self.counts["dropped"] += dropped
        return dropped


#: zlib's window bits for the gzip format
GZIP_WBITS = 16 + zlib.MAX_WBITS


def gzip_member(data: bytes) -> bytes:
    """Data as one gzip member, at zlib's fastest level (XML shrinks tenfold): members
    written one after another are read as one stream (RFC 1952)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, GZIP_WBITS)
    return packer.compress(data) + packer.flush()


def compress(text: str) -> bytes:
    """A configuration as the cache keeps it and sends it: escaped as an XML-RPC string
    carries it, UTF-8, as one gzip member. An agent that accepts gzip is sent it as it
    is, between the members of the rest of the response (``Packed``)."""
    return gzip_member(xmlrpc.client.escape(text).encode("utf-8"))


def decompress(blob: bytes) -> str:
    """A configuration kept by the cache, as text."""
    return xml.sax.saxutils.unescape(inflate(blob).decode("utf-8"))  # &amp; last


def inflate(blob: bytes) -> bytes:
    """What ``compress`` packed, still escaped (UTF-8 bytes)."""
    return zlib.decompress(blob, GZIP_WBITS)


@dataclass(frozen=True)
class Served:
    """A configuration as a core serves it: its text, compressed (``compress``) or both;
    with the key and tokens the cache keeps it under, when it does."""

    xml: str | None
    blob: bytes | None = None
    key: str | None = None
    tokens: frozenset[str] | None = None

    def text(self) -> str:
        return self.xml if self.xml is not None else decompress(self.blob or b"")

    def compressed(self) -> bytes:
        return self.blob if self.blob is not None else compress(self.xml or "")

    def result(self) -> str | Packed:
        """What GetConfig answers: packed as kept when it is compressed already."""
        return Packed(self.blob) if self.blob is not None else self.text()


class Packed:
    """A string result as the configuration cache keeps it (``compress``): escaped for
    XML-RPC and packed as one gzip member, it is sent as it is to an agent that accepts
    gzip (``bcfg2.xmlrpc.Result.content``) and unpacked once for one that does not,
    never escaped again. ``str()`` gives the text."""

    __slots__ = ("member",)

    def __init__(self, member: bytes) -> None:
        self.member = member

    def __str__(self) -> str:
        return decompress(self.member)


def configuration_key(revision: str, metadata: ClientMetadata,
                      plugins: Iterable[Plugin]) -> str | None:
    """What a configuration depends on besides recorded tokens: the revision, the
    client's metadata and every taking-part plugin's ``cache_key``; None if one has none."""
    parts: list[object] = [
        revision, metadata.hostname, metadata.profile, sorted(metadata.groups),
        sorted(metadata.bundles), sorted(metadata.aliases), sorted(metadata.addresses),
        sorted(metadata.categories.items()), metadata.uuid, metadata.password,
        metadata.version, list(metadata.connectors), sorted(metadata.additional_groups)]
    for plugin in plugins:
        key = plugin.cache_key(metadata)
        if key is None:
            not_cacheable(f"plugin {plugin.name} does not say what its output depends on")
            return None
        parts.append((plugin.name, key))
    return hashlib.blake2b(repr(parts).encode("utf-8", "surrogateescape"),
                           digest_size=20).hexdigest()

"""The client-metadata cache: its modes, and the one way to expire it.

``[caching] client_metadata`` chooses the mode:

- ``off``: metadata is built for every request;
- ``initial``: what the Metadata plugin alone gives (groups.xml and
  clients.xml) is kept, connectors run every time;
- ``cautious`` (also ``on``): complete metadata is kept, and a client's is
  built anew when its run starts (GetProbes) and when it sends probe data;
- ``aggressive``: complete metadata is kept until something expires it.

Plugins never touch the entries. They ask for expiry through ``expire``
(one client, several, or all) and ``expire_changed`` ("every client whose
groups change": each cached client is built again and compared), each with
a tag naming who asked. Every expiry bumps the generation, so a value built
before it is never stored after it, and is announced to the listeners (the
multiprocessing core's children; the other servers sharing a PostgreSQL
database, through ``bcfg2.fleet``) exactly once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bcfg2 import metrics

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

logger = logging.getLogger(__name__)

MODES = ("off", "initial", "cautious", "aggressive")
#: methods that start building a client's metadata anew in cautious mode
CAUTIOUS_METHODS = frozenset({"GetProbes", "RecvProbeData"})


#: how the tag of an expiry made in another process (or server) and relayed here begins
RELAYED = "relayed:"


#: the tag (relayed) of an expiry made because the database changed behind this server's
#: back: whatever a plugin keeps in memory of the clients it names is to be read again
STORAGE = "storage"
#: tags of expiries that are this process's own rule, not a change of data: never relayed
LOCAL_TAGS = frozenset({"cautious", "sync timeout"})


def relayed(tag: str) -> str:
    """The tag of an expiry another process made with ``tag``, as it is applied here.

    Relaying a relayed tag changes nothing: an expiry another server made
    reaches a multiprocessing child with the tag it has in the parent.
    """
    return tag if tag.startswith(RELAYED) else RELAYED + tag


@dataclass(frozen=True)
class Expiry:
    """One expiry, as listeners receive it: who (None: everyone), why, and its generation."""

    clients: frozenset[str] | None
    tag: str
    generation: int

    def relayed_from(self, tag: str) -> bool:
        """Whether another process made this expiry with ``tag`` (a plugin's name)."""
        return self.tag == relayed(tag)

    @property
    def relayed(self) -> bool:
        """Whether another process or server made this expiry."""
        return self.tag.startswith(RELAYED)


Listener = Callable[[Expiry], None]


class MetadataCache:
    """Client metadata kept by client name according to the caching mode."""

    def __init__(self, mode: str = "off") -> None:
        mode = "cautious" if mode == "on" else mode
        if mode not in MODES:
            raise ValueError(f"unknown metadata caching mode {mode!r}")
        self.mode = mode
        self._data: dict[str, ClientMetadata] = {}
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        #: bumped by every expiry, so a value computed before it is not stored after it
        self.generation = 0
        #: how metadata is built (``bind``): the Metadata plugin's part, then the connectors'
        self._initial: Callable[[str], ClientMetadata] | None = None
        self._complete: Callable[[ClientMetadata], ClientMetadata] | None = None

    def bind(self, initial: Callable[[str], ClientMetadata],
             complete: Callable[[ClientMetadata], ClientMetadata]) -> None:
        """Say how metadata is built: ``initial(name)``, then ``complete(initial)``."""
        self._initial, self._complete = initial, complete

    def fetch(self, client: str) -> ClientMetadata:
        """A client's metadata: kept, or built (and kept) as the mode says."""
        if self._initial is None or self._complete is None:
            raise RuntimeError("the metadata cache is not bound to a builder")
        if self.keeps_complete:
            cached = self.get(client)
            if cached is not None:
                metrics.metadata_cache(hit=True)
                return cached
        generation = self.generation
        imd = None
        if self.keeps_initial:
            cached = self.get(client)
            if cached is not None:
                imd = cached.copy()
        metrics.metadata_cache(hit=imd is not None)
        if imd is None:
            imd = self._initial(client)
            if self.keeps_initial:
                self.store(client, imd.copy(), generation)
        meta = self._complete(imd)
        if self.keeps_complete:
            self.store(client, meta, generation)
        return meta

    def rebuild(self, client: str) -> ClientMetadata:
        """A client's metadata built anew, as the mode keeps it (initial or complete)."""
        if self._initial is None or self._complete is None:
            raise RuntimeError("the metadata cache is not bound to a builder")
        imd = self._initial(client)
        return imd if self.keeps_initial else self._complete(imd)

    # -- the core's side -------------------------------------------------------

    @property
    def keeps_complete(self) -> bool:
        """Whether complete metadata (after the connectors) is kept."""
        return self.mode in ("cautious", "aggressive")

    @property
    def keeps_initial(self) -> bool:
        """Whether only the Metadata plugin's part is kept."""
        return self.mode == "initial"

    def get(self, client: str) -> ClientMetadata | None:
        """The kept metadata of a client (complete or initial, by mode), or None."""
        with self._lock:
            return self._data.get(client)

    def store(self, client: str, value: ClientMetadata, generation: int) -> bool:
        """Keep a value computed when ``generation`` was current, unless expired since."""
        if self.mode == "off":
            return False
        with self._lock:
            if generation != self.generation:
                return False
            self._data[client] = value
            return True

    def clients(self) -> list[str]:
        """The clients whose metadata is kept."""
        with self._lock:
            return list(self._data)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, client: object) -> bool:
        with self._lock:
            return client in self._data

    def before_call(self, method: str, client: str | None) -> None:
        """The mode's rule for a call about to be served (cautious: a run starts fresh)."""
        if client is not None and self.mode == "cautious" and method in CAUTIOUS_METHODS:
            self.expire(client, tag="cautious")

    def at_generation(self, func: Callable[[int], None]) -> None:
        """Call ``func`` with the current generation, no expiry meanwhile.

        A new listener (a child process started late) learns where it starts
        without missing an expiry or hearing one twice.
        """
        with self._lock:
            func(self.generation)

    # -- listeners ---------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every expiry, in generation order, after it applies here."""
        self._listeners.append(listener)

    def _announce(self, expiry: Expiry) -> None:
        for listener in list(self._listeners):
            try:
                listener(expiry)
            except Exception:
                logger.exception("a metadata cache listener failed on %s", expiry)

    # -- expiring ----------------------------------------------------------------

    def expire(self, clients: str | Iterable[str] | None = None, tag: str = "") -> None:
        """Forget one client, several, or (with None) all of them."""
        names = None if clients is None else frozenset(
            [clients] if isinstance(clients, str) else clients)
        self._expire(names, tag)

    def _expire(self, names: frozenset[str] | None, tag: str) -> None:
        # the lock is held while listeners hear of it, so they hear in generation order
        with self._lock:
            self.generation += 1
            if names is None:
                self._data.clear()
            else:
                for name in names:
                    self._data.pop(name, None)
            expiry = Expiry(names, tag, self.generation)
            self._announce(expiry)

    def expire_where(self, predicate: Callable[[str, ClientMetadata], bool],
                     tag: str = "") -> frozenset[str]:
        """Forget every kept client for which ``predicate(name, metadata)`` holds.

        The generation is bumped even when none does: a build that started
        before the change that made the caller ask must not be stored.
        """
        with self._lock:
            kept = dict(self._data)
        stale = set()
        for name, value in kept.items():
            try:
                if predicate(name, value):
                    stale.add(name)
            except Exception as err:
                logger.debug("metadata of %s expired: checking it failed: %s", name, err)
                stale.add(name)
        names = frozenset(stale)
        self._expire(names, tag)
        return names

    def expire_changed(self, tag: str = "") -> frozenset[str]:
        """Forget every kept client whose groups, bundles, categories or profile change.

        Each kept client's metadata is built again (uncached) and compared
        with the kept one; call it after the change is in service.
        """
        if self._initial is None:
            return self.expire_where(lambda name, value: True, tag)

        def changed(name: str, value: ClientMetadata) -> bool:
            new = self.rebuild(name)
            return (new.profile, new.groups, new.bundles, new.categories) != (
                value.profile, value.groups, value.bundles, value.categories)

        return self.expire_where(changed, tag)


__all__ = ["CAUTIOUS_METHODS", "LOCAL_TAGS", "MODES", "STORAGE", "Expiry", "MetadataCache", "relayed"]

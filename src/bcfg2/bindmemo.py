"""Bound entries kept per client likeness: a cold build copies what it bound before.

Most entries of a configuration are bound from the repository alone: Cfg
picks a plain version by the groups and host names in its file names and
applies info.xml, Rules picks a rule by its Group and Client conditionals.
Every client that looks alike to those choices (the same of their groups,
the same of their host names: ``Audience.key``) gets the same bound entry, so
the core keeps the first one and hands the next client a copy
(``Core.BindStructure``), with the repository tokens its binding recorded
(``bcfg2.configcache.depends_on``), which are recorded again on each copy.
A whole structure is kept the same way when every entry of it was, keyed by
its serialised form as the structure plugins gave it (while every generator
reports its choices): a client alike gets one copy of the bound bundle.

A generator takes part by saying so, explicitly, while it binds:

- ``sees(audience, ...)``: a choice it made (of a binder, a version, a rule,
  an info.xml block or a conditional child) depends on the client only
  through that audience; every choice a binding makes must be reported;
- ``by_likeness()``: the entry it just bound is a function of the entry as
  the structure gave it, the repository and the audiences reported, and of
  nothing else (not the time, not other metadata: a template never says it).

An entry is kept only if the generator that bound it said ``by_likeness``
and its class sets ``binds_by_likeness`` itself (a subclass that changes
how it binds inherits no promise). A generator whose class does not set it
(a third-party one, Packages, SSHbase...) is asked again on every copy
whether it claims the entry, as the core would ask it; if it does, the entry
is bound in full.

Exactness: two clients with the same key under the audiences one binding
reported make the same first choice, hence reach the same next choice and
see the same audience there, and so on: they get the same entry. A client
that differs somewhere may take other paths; its binding reports its own
audiences, kept beside the first ones.

Any repository change the core hears of (a file event, a plugin's
``expire_configurations``) drops everything kept (``clear``): edits are
rare, a new build per likeness is cheap, and a generation check keeps a
binding that started before a change from being kept after it. Bounded by
``[caching] bound_entries`` (entries, 0 turns it off) and ``bound_bytes``
(their serialised size); the oldest kept entries go first.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import lxml.etree

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata
    from bcfg2.plugin.structfile import Audience

__all__ = ["BindMemo", "Record", "by_likeness", "current", "recording", "sees",
           "sees_within"]


class Record:
    """What one entry's binding reported: the audiences of its choices and its promise."""

    __slots__ = ("audiences", "pattern", "promised")

    def __init__(self) -> None:
        self.audiences: list[Audience] = []
        #: bound by a generator that claimed it by a pattern (HandlesEntry)
        self.pattern = False
        #: the binding generator said ``by_likeness``
        self.promised = False


_current: contextvars.ContextVar[Record | None] = contextvars.ContextVar(
    "bcfg2_bind_record", default=None)


def sees(*audiences: Audience) -> None:
    """Report that a choice of the binding running depends on the client only through
    these audiences (nothing when no binding is being recorded)."""
    record = _current.get()
    if record is not None:
        record.audiences.extend(audiences)


def by_likeness() -> None:
    """Promise that the entry just bound depends only on the repository and the audiences
    reported (``sees``): a copy serves every client that looks alike to them."""
    record = _current.get()
    if record is not None:
        record.promised = True


def sees_within(element: lxml.etree._Element) -> None:
    """``sees`` the ``<Group>``/``<Client>`` conditionals below an element (children that
    apply by them are copied in); worked out only when a binding is recorded."""
    record = _current.get()
    if record is not None:
        from bcfg2.plugin.structfile import Audience  # the plugin package imports this one
        record.audiences.append(Audience(
            (cond.get("name") for cond in element.iter("Group")),
            (cond.get("name") for cond in element.iter("Client"))))


#: one likeness of one entry: (audience, likeness key -> (bound entry, tokens, size))
_Variant = tuple["Audience", dict[Hashable, tuple[lxml.etree._Element, tuple[str, ...], int]]]


class BindMemo:
    """Bound entries by (tag, attributes as given), bound structures by their serialised
    form, and both by client likeness (module docstring)."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self.generation = 0
        self._memo: dict[Hashable, list[_Variant]] = {}
        self._sizes: dict[Hashable, tuple[int, int]] = {}
        self._entries = 0
        self._bytes = 0
        self._lock = threading.Lock()
        #: counts for the statistics: hits, stored, dropped (entries, by clear or bound)
        self.counts = dict.fromkeys(("hits", "stored", "dropped"), 0)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return self._entries

    @property
    def size(self) -> int:
        """The serialised size of the kept entries, in bytes."""
        return self._bytes

    @staticmethod
    def key(entry: lxml.etree._Element) -> tuple[Any, ...] | None:
        """What identifies an entry as a structure gives it, or None when it is not kept
        (it has children or text, or binds under another name: ``altsrc``)."""
        if len(entry) or entry.text is not None:
            return None
        attrib = entry.attrib
        if "altsrc" in attrib:
            return None
        return (entry.tag, *attrib.items())

    def lookup(self, key: Hashable, metadata: ClientMetadata,
               ) -> tuple[lxml.etree._Element, tuple[str, ...], bool, Audience] | None:
        """(the kept element, its tokens, bound by a pattern, the audience it was kept
        under) for this client's likeness, or None."""
        variants = self._memo.get(key)
        if variants is None:
            return None
        for audience, by_likeness_key in variants:
            found = by_likeness_key.get(audience.key(metadata))
            if found is not None:
                self.counts["hits"] += 1
                return found[0], found[1], found[2] < 0, audience
        return None

    def store(self, key: Hashable, record: Record, metadata: ClientMetadata,
              entry: lxml.etree._Element, tokens: tuple[str, ...], generation: int) -> bool:
        """Keep a copy of an entry bound when ``generation`` was current, if no change came
        since and its generator promised (``by_likeness``)."""
        if not record.promised:
            return False
        return self.keep(key, record.audiences, metadata, entry, tokens, generation,
                         record.pattern)

    def keep(self, key: Hashable, audiences: Iterable[Audience], metadata: ClientMetadata,
             element: lxml.etree._Element, tokens: tuple[str, ...], generation: int,
             pattern: bool = False) -> bool:
        """Keep a copy of an element (an entry, or a structure whose entries all were)
        bound under these audiences when ``generation`` was current."""
        if not self.enabled:
            return False
        from bcfg2.plugin.structfile import Audience  # the plugin package imports this one
        groups: set[str | None] = set()
        clients: set[str | None] = set()
        for audience in audiences:
            groups |= audience.groups
            clients |= audience.clients
        audience = Audience(groups, clients)
        kept = element.__copy__()  # lxml copies the whole element, in C
        kept.tail = None  # each copy takes the tail of what it replaces
        size = len(lxml.etree.tostring(kept)) + 200 + (len(key) if isinstance(key, bytes)
                                                       else 0)
        # the sign of the size says whether it was bound by a pattern
        value = (kept, tokens, -size if pattern else size)
        with self._lock:
            if generation != self.generation or size > self.max_bytes:
                return False
            variants = self._memo.setdefault(key, [])
            by_likeness_key = next((kept for known, kept in variants
                                    if known.groups == audience.groups
                                    and known.clients == audience.clients), None)
            if by_likeness_key is None:
                by_likeness_key = {}
                variants.append((audience, by_likeness_key))
            likeness = audience.key(metadata)
            if likeness in by_likeness_key:
                return False  # another thread kept it first
            by_likeness_key[likeness] = value
            count, total = self._sizes.get(key, (0, 0))
            self._sizes[key] = (count + 1, total + size)
            self._entries += 1
            self._bytes += size
            self.counts["stored"] += 1
            while self._entries > self.max_entries or self._bytes > self.max_bytes:
                oldest = next(iter(self._memo))  # the first kept (dicts keep their order)
                del self._memo[oldest]
                count, total = self._sizes.pop(oldest)
                self._entries -= count
                self._bytes -= total
                self.counts["dropped"] += count
        return True

    def clear(self) -> None:
        """Forget every kept entry: the repository changed."""
        with self._lock:
            self.generation += 1
            if self._entries:
                self.counts["dropped"] += self._entries
            self._memo = {}
            self._sizes = {}
            self._entries = self._bytes = 0


@contextlib.contextmanager
def recording() -> Iterator[Record]:
    """Record the choices of the one entry's binding that runs inside."""
    record = Record()
    reset = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(reset)


def current() -> Record | None:
    """The record of the binding running in this thread, if one is recorded."""
    return _current.get()

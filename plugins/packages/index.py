"""One parsed package index, in the form the resolver and the cache share.

Every format (APT ``Packages``, Yum ``primary.xml``, a pacman ``.db``, a
pkgng ``packagesite``) is parsed into an ``Index``: plain dicts and lists of
strings, so the same object is what the resolver walks and what the cache
stores as JSON (safe to load, unlike pickle, and fast: json builds these
containers in C).

A package record is a list ``[version, arch, depends, recommends, essential]``:

- ``depends``: the package's requirements, each a list of alternatives
  (names only: ``libc6 (>= 2.36)`` is ``libc6``, ``perl:any`` is ``perl``);
  a requirement with one name is a list of one.
- ``recommends``: the same shape, followed only for sources with
  ``recommended="true"``.
- ``essential``: True for a package every client of the source gets (APT's
  ``Essential: yes``).

``provides`` maps a name that is not (only) a package's own to the packages
that provide it, in index order: APT virtual packages (versions stripped),
RPM capabilities and sonames, and for Yum the files some package requires
(``/bin/sh``). ``groups`` maps a package-group id (and its display name) to
``{"mandatory": [...], "default": [...], "optional": [...]}``: Yum comps
groups and pacman groups (whose members are all mandatory).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: the positions of a package record
VERSION, ARCH, DEPENDS, RECOMMENDS, ESSENTIAL = range(5)
#: the kinds of group membership, in the order ``type=`` widens them
GROUP_KINDS = ("mandatory", "default", "optional")
#: the version of the cache's JSON layout; another version is parsed again
FORMAT = 2

Record = list[Any]

_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while an index is built or loaded.

    An index is hundreds of thousands of lists and dicts without a single
    reference cycle; left running, the collector walks all of them again
    every few thousand allocations, and that walk is most of the time a
    load takes (0.8 s against 0.14 s for a Debian-main sized cache). What is
    built is freed by reference counting alone, so nothing is lost by the
    pause. Nested and concurrent pauses (two threads loading) are counted:
    the collector runs again when the last one ends, if it ran before.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


@dataclass
class Index:
    """The packages of one source for one architecture."""

    #: the entry type clients bind its packages with: deb, yum, pacman or pkgng
    ptype: str
    #: name -> [version, arch, depends, recommends, essential]
    packages: dict[str, Record] = field(default_factory=dict)
    #: capability (virtual package, soname, file) -> providing packages, in index order
    provides: dict[str, list[str]] = field(default_factory=dict)
    #: group id or name -> {"mandatory": [...], "default": [...], "optional": [...]}
    groups: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def add(self, name: str, version: str = "", arch: str = "",
            depends: list[list[str]] | None = None,
            recommends: list[list[str]] | None = None, essential: bool = False,
            provides: list[str] | tuple[str, ...] = ()) -> None:
        """Add one package (a later one of the same name replaces it) and what it provides."""
        self.packages[name] = [version, arch, depends or [], recommends or [], essential]
        for capability in provides:
            if capability == name:
                continue
            providers = self.provides.setdefault(capability, [])
            if name not in providers:
                providers.append(name)

    def to_json(self) -> dict[str, Any]:
        return {"ptype": self.ptype, "packages": self.packages, "provides": self.provides,
                "groups": self.groups}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Index:
        """An index from ``to_json``'s dict (a ValueError if it is not one)."""
        try:
            index = cls(str(data["ptype"]), data["packages"], data["provides"], data["groups"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a package index: {err}") from None
        if not all(isinstance(v, dict) for v in (index.packages, index.provides, index.groups)):
            raise ValueError("not a package index: packages, provides and groups are not maps")
        return index

    def __len__(self) -> int:
        return len(self.packages)

    def absorb(self, other: Index) -> None:
        """Add another index's packages (those this one lacks), capabilities and groups.

        For the components of one source (APT ``main`` and ``contrib``, Yum
        ``os`` and ``updates``): the first index read wins a name both have.
        """
        for name, record in other.packages.items():
            self.packages.setdefault(name, record)
        for capability, providers in other.provides.items():
            mine = self.provides.setdefault(capability, [])
            mine.extend(p for p in providers if p not in mine)
        for group, kinds in other.groups.items():
            mine_kinds = self.groups.setdefault(group, {})
            for kind, names in kinds.items():
                members = mine_kinds.setdefault(kind, [])
                members.extend(n for n in names if n not in members)

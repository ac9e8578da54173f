"""SEModules: compiled SELinux policy modules for ``<SEModule>`` entries.

Each module has a directory of its own, named like the module file:
``SEModules/foo.pp/`` holds ``foo.pp`` for every client, ``foo.pp.G50_web``
for members of group web (priority 50) and ``foo.pp.H_host.example.com`` for
one host; the most specific version wins, as in Cfg.

A bundle names the module with or without ``.pp`` (``<SEModule name="foo"/>``
and ``<SEModule name="foo.pp"/>`` are the same entry). The bound entry carries
the module's name without ``.pp``, as the agent's SELinux driver expects, and
the module file base64-encoded; attributes from the bundle such as
``disabled="true"`` are kept.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import lxml.etree

from bcfg2.filemonitor import Event
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import (
    EntrySet,
    Generator,
    Plugin,
    PluginExecutionError,
    SpecificData,
    depends_on,
)

__all__ = ["SEModules", "module_name"]

SUFFIX = ".pp"


def module_name(name: str) -> str:
    """A module's name as the agent knows it: ``foo`` for ``foo.pp``, ``/foo.pp`` or ``foo``."""
    name = name.lstrip("/")
    return name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name


class SEModules(Plugin, Generator):
    """Serves SELinux modules from SEModules/<name>.pp/, one entry set per module."""

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        #: module name (without .pp) -> the versions of its file
        self.modules: dict[str, EntrySet] = {}
        #: watched directory -> its handle
        self.handles: dict[str, int] = {}
        self.Entries["SEModule"] = {}
        if os.path.isdir(self.data):
            self.handles[self.data] = core.fam.AddMonitor(self.data, self)
        else:
            self.logger.info("%s does not exist; no SELinux modules are served", self.data)

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        """Track module directories and the versions in them."""
        if event.action == "endExist" or event.path == self.data:
            return
        parent = os.path.dirname(event.path)
        fname = os.path.basename(event.path)
        if parent == self.data:
            self._top_level(event, fname)
        elif os.path.dirname(parent) == self.data:
            self._version(event, os.path.basename(parent))

    def _top_level(self, event: Event, fname: str) -> None:
        """A module directory appeared or went away (files here are ignored)."""
        if event.action == "deleted":
            handle = self.handles.pop(event.path, None)
            if handle is not None:
                self.core.fam.RemoveMonitor(handle)
                self._swap(module_name(fname), None)
            return
        if not os.path.isdir(event.path) or EntrySet.ignore.fullmatch(fname):
            return
        if not fname.endswith(SUFFIX) or fname == SUFFIX:
            self.logger.warning("%s: a module directory is named like the module file "
                                "(foo.pp/); ignoring it", event.path)
            return
        if event.path not in self.handles:
            self.handles[event.path] = self.core.fam.AddMonitor(event.path, self)

    def _version(self, event: Event, dirname: str) -> None:
        """A version of a module was created, changed or deleted."""
        if event.path == os.path.join(self.data, dirname) or \
                os.path.join(self.data, dirname) not in self.handles:
            return
        if os.path.isdir(event.path):
            return  # modules are files; nothing below them is read
        name = module_name(dirname)
        entry_set = self.modules.get(name)
        if entry_set is None:
            if event.action == "deleted":
                return
            entry_set = EntrySet(dirname, os.path.join(self.data, dirname), SpecificData,
                                 self.core.setup, self.core.fam)
        entry_set.handle_event(event)
        self._swap(name, entry_set if entry_set.entries else None)

    def _swap(self, name: str, entry_set: EntrySet | None) -> None:
        """Put a module's entry set in service (or take it out) with one reference swap each."""
        modules = dict(self.modules)
        binders = dict(self.Entries["SEModule"])
        if entry_set is None:
            modules.pop(name, None)
            binders.pop(name, None)
            binders.pop(name + SUFFIX, None)
        else:
            modules[name] = entry_set
            binders[name] = binders[name + SUFFIX] = self._binder(name)
        self.modules = modules
        self.Entries["SEModule"] = binders

    def binder_for(self, entry: lxml.etree._Element,
                   metadata: ClientMetadata) -> Callable[..., Any] | None:
        """The module's binder. The build depends on the module's directory, there or not
        yet (``bcfg2.configcache``): a version that comes, goes or changes drops it."""
        if entry.tag == "SEModule":
            depends_on(os.path.join(self.data, module_name(entry.get("name", "")) + SUFFIX))
        return super().binder_for(entry, metadata)

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond the module directories each build records."""
        return ""

    def _binder(self, name: str) -> Callable[[lxml.etree._Element, ClientMetadata],
                                             lxml.etree._Element]:
        def bind(entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:
            return self.bind_module(name, entry, metadata)
        return bind

    def bind_module(self, name: str, entry: lxml.etree._Element,
                    metadata: ClientMetadata) -> lxml.etree._Element:
        """Fill an SEModule entry with the most specific version of the module for a client."""
        entry_set = self.modules.get(name)
        if entry_set is None:
            raise PluginExecutionError(f"SELinux module {name} was removed")
        best = entry_set.best_matching(metadata)
        entry.set("name", name)
        entry.set("encoding", "base64")
        entry.text = base64.b64encode(best.data).decode("ascii")
        return entry

"""Cfg: file contents for Path entries, laid out like the clients' filesystem.

``Cfg/etc/motd/`` holds the versions of ``/etc/motd``: ``motd`` for every
client, ``motd.G50_web`` for members of group web (priority 50), and
``motd.H_host.example.com`` for one host, plus an optional ``info.xml`` with
owner, group, mode and the other Path attributes.

Versions ending in ``.genshi``, ``.jinja2`` or ``.cheetah`` are templates
rendered per client (see ``bcfg2.plugins.cfg.templates``); fragments they
include (``*.genshi_include``, ``*.jinja2_include``) are not versions
themselves. Versions ending in ``.crypt`` are encrypted
(``bcfg2.plugins.cfg.encrypted``), templates too, with the two suffixes in
either order (``motd.genshi.crypt``, ``motd.crypt.cheetah``). What loads a
version is chosen by the longest of these suffixes its name ends in
(``version_loaders``).

Content that is not UTF-8 text (or that holds characters XML cannot carry)
is sent base64-encoded with ``encoding="base64"``; an empty file is sent as
``empty="true"`` (``bcfg2.plugin.set_content``, which SSHbase shares).

``privkey.xml``, ``pubkey.xml``, ``sslkey.xml``, ``sslcert.xml`` and
``authorized_keys.xml`` in an entry's directory create its content when no
version applies to a client (see ``bcfg2.plugins.cfg.creators``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lxml.etree

from bcfg2.bindmemo import by_likeness
from bcfg2.encryption import Encryption
from bcfg2.errors import SpecificityError
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option
from bcfg2.plugin import (
    EntrySet,
    Generator,
    Plugin,
    SpecificData,
    Specificity,
    TemplateDataProvider,
    bind_info,
    depends_on,
    listing,
    set_content,
)
from bcfg2.plugins.cfg.creators import (
    CREATOR_FILES,
    CREATOR_OPTIONS,
    CfgCreator,
    CreatorContext,
    update_creator,
)
from bcfg2.plugins.cfg.encrypted import CRYPT, CfgEncryptedGenerator
from bcfg2.plugins.cfg.templates import TEMPLATE_EXTENSIONS, TemplateContext
from bcfg2.plugins.cfg.verifiers import VERIFIER, CfgExternalCommandVerifier

#: template fragments for include/extends, never served on their own
INCLUDE_SUFFIXES = tuple(ext + "_include" for ext in TEMPLATE_EXTENSIONS)

__all__ = ["Cfg", "CfgEntrySet", "CfgPlaintextGenerator", "loader_for", "version_loaders"]

#: what makes a version from its file: (path, specificity, entry set) -> the version
VersionLoader = Callable[[str, Specificity, "CfgEntrySet"], SpecificData]


class CfgPlaintextGenerator(SpecificData):
    """A plain file: its content is sent as it is."""

    by_likeness = True

    def get_data(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        return self.data


def _load_plain(path: str, spec: Specificity, entry_set: CfgEntrySet) -> SpecificData:
    return CfgPlaintextGenerator(path, spec, entry_set.fam)


def _load_template(cls: Callable[..., SpecificData]) -> VersionLoader:
    def load(path: str, spec: Specificity, entry_set: CfgEntrySet) -> SpecificData:
        return cls(path, spec, entry_set.fam, entry_set.templates)
    return load


def _load_encrypted(inner: VersionLoader) -> VersionLoader:
    def load(path: str, spec: Specificity, entry_set: CfgEntrySet) -> SpecificData:
        return CfgEncryptedGenerator(path, spec, entry_set.fam, inner(path, spec, entry_set),
                                     entry_set.encryption)
    return load


def version_loaders() -> dict[str, VersionLoader]:
    """File-name suffix -> what loads a version whose name ends in it.

    Made from ``TEMPLATE_EXTENSIONS`` when asked, so every template class
    registered there is loaded plain (``.ext``) and encrypted (``.ext.crypt``,
    ``.crypt.ext``) alike.
    """
    loaders: dict[str, VersionLoader] = {CRYPT: _load_encrypted(_load_plain)}
    for extension, cls in TEMPLATE_EXTENSIONS.items():
        template = _load_template(cls)
        loaders[extension] = template
        loaders[extension + CRYPT] = loaders[CRYPT + extension] = _load_encrypted(template)
    return loaders


def loader_for(fname: str) -> tuple[str, VersionLoader]:
    """(the name without its suffix, its loader): the longest suffix wins; none: a plain file."""
    loaders = version_loaders()
    suffixes = [suffix for suffix in loaders if fname.endswith(suffix) and fname != suffix]
    if not suffixes:
        return fname, _load_plain
    suffix = max(suffixes, key=len)
    return fname[:-len(suffix)], loaders[suffix]


class CfgEntrySet(EntrySet):
    """The versions of one file in Cfg, and its info.xml."""

    def __init__(self, basename: str, path: str, setup: Any, fam: Any,
                 templates: TemplateContext | None = None,
                 creators: CreatorContext | None = None,
                 encryption: Encryption | None = None) -> None:
        super().__init__(basename, path, CfgPlaintextGenerator, setup, fam)
        #: the ``:test`` scripts, chosen per client by specificity like the versions
        self.verifiers = EntrySet(VERIFIER, path, CfgExternalCommandVerifier, setup, fam)
        self.validation = bool(setup.cfg.validation)
        self.validation_timeout = float(setup.cfg.validation_timeout)
        #: what creator files share, and the creator file of this directory (privkey.xml...)
        self.creators = creators
        self.creator: CfgCreator | None = None
        if templates is None:
            repo = setup.server.repository
            templates = TemplateContext(repo, os.path.join(repo, "Cfg"))
        self.templates = templates
        self.encryption = encryption if encryption is not None else Encryption.from_setup(setup)
        #: what a build that binds this entry records (``bcfg2.configcache``)
        self.listing = listing(path)

    def handle_event(self, event: Any) -> None:
        fname = os.path.basename(event.path)
        if fname.startswith(VERIFIER):
            self.verifiers.handle_event(event)
            return
        if fname.startswith(":"):
            return  # legacy :info files are not supported
        if fname.endswith(INCLUDE_SUFFIXES):
            return  # read by the templates that include it
        if fname in CREATOR_FILES:
            self.creator = update_creator(self, event)
            return
        super().handle_event(event)

    def entry_init(self, event: Any) -> None:
        """Load a new version by its suffix (``loader_for``): template, encrypted or plain."""
        fname = os.path.basename(event.path)
        stem, load = loader_for(fname)
        try:
            spec = self.specificity_from_filename(stem)
        except SpecificityError as err:
            self.logger.warning("%s; ignoring it", err)
            return
        entry = load(event.path, spec, self)
        entry.HandleEvent(event)
        self.entries[fname] = entry

    def is_empty(self) -> bool:
        return (not self.entries and self.infoxml is None and not self.verifiers.entries
                and self.creator is None)

    def bind_entry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:
        if self.creator is not None or self.verifiers.entries:
            depends_on(self.path)  # what they create or run may read any file here
        elif self.infoxml is not None:
            depends_on(self.infoxml.name, *self.infoxml.extras)
        # type="file" first, then the Path defaults and info.xml, in one update
        bind_info(entry, metadata, self.infoxml, {"type": "file", **self.default_info})
        if self.creator is not None:
            set_content(entry, self.creator.serve(entry, metadata))
            return entry
        best = self.best_matching(metadata)
        depends_on(best.name)
        data = best.get_data(entry, metadata)
        if self.validation and self.verifiers.entries:
            self.verify(entry, metadata, data)
        set_content(entry, data)
        if best.by_likeness and not self.verifiers.entries:
            by_likeness()  # the version and info.xml chosen by likeness, the content plain
        return entry

    def verify(self, entry: lxml.etree._Element, metadata: ClientMetadata, data: bytes) -> None:
        """Run the client's ``:test`` verifier on the content, if validation is on."""
        if not (self.validation and self.verifiers.entries):
            return
        matching = self.verifiers.get_matching(metadata)
        if matching:
            verifier = self.verifiers.best_matching(metadata, matching)
            verifier.verify(entry.get("name", self.path), data, self.validation_timeout)


class Cfg(Plugin, Generator):
    """Serves file contents from the Cfg/ tree."""

    #: its choices are reported and plain versions promised (``bcfg2.bindmemo``)
    binds_by_likeness = True

    options = (
        Option("cfg", "validation", True,
               "Run the :test verifier of an entry on its content before serving it.",
               type="bool"),
        Option("cfg", "validation_timeout", 60.0,
               "Seconds a :test verifier may run before its entry fails.", type="float"),
    ) + CREATOR_OPTIONS

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        self.entries: dict[str, CfgEntrySet] = {}
        self.handles: dict[int, str] = {}
        #: the directories in ``handles`` (a set: one look-up per directory at start-up)
        self.watched: set[str] = set()
        #: directories whose files the monitor is still listing: an entry found by the
        #: listing is served from its end on, with every file read (the content not before
        #: its info.xml, whichever the monitor lists first); a file created (or put in
        #: service by a creator) is served at once
        self.listing: set[str] = set()
        self.templates = TemplateContext(
            core.repository, self.data, lambda: core.plugins_by_type(TemplateDataProvider))
        self.creators = CreatorContext(self)
        self.encryption = Encryption.from_setup(core.setup)
        self.Entries["Path"] = {}
        self.add_directory_monitor(self.data)

    def binder_for(self, entry: lxml.etree._Element,
                   metadata: ClientMetadata) -> Callable[..., Any] | None:
        """The entry set's binder. The build depends on the files of its directory (the
        entry set records the version it chose), or on the directory if there is none."""
        binder = super().binder_for(entry, metadata)
        if entry.tag == "Path":
            entry_set = self.entries.get(entry.get("name", "")) if binder is not None else None
            depends_on(entry_set.listing if entry_set is not None else
                       os.path.normpath(self.data + "/" + entry.get("name", "")))
        return binder

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond the entry-set directories each build records (templates say
        what more they read: ``TemplateReads``)."""
        return ""

    def add_directory_monitor(self, path: str) -> None:
        if path in self.watched:
            return
        if not os.path.isdir(path):
            self.logger.info("%s does not exist; Cfg serves nothing from it", path)
            return
        self.listing.add(os.path.abspath(path))  # as the monitor names it in endExist
        self.handles[self.core.fam.AddMonitor(path, self)] = path
        self.watched.add(path)

    def _ident(self, path: str) -> str:
        """The client path an entry-set directory stands for (Cfg/etc/motd -> /etc/motd)."""
        return "/" + os.path.relpath(path, self.data).replace(os.sep, "/")

    def HandleEvent(self, event: Any) -> None:  # noqa: N802
        if event.action == "endExist":
            self._listed(event.path)
            return
        path = event.path
        if event.action == "deleted":
            if path in self.watched:
                self._remove_tree(path)
                return
        elif os.path.isdir(path):
            if event.action in ("exists", "created"):
                self.add_directory_monitor(path)
            return
        directory = os.path.dirname(path)
        if directory == self.data:
            self.logger.warning("%s: files directly in Cfg/ are ignored; put each file in a "
                                "directory named like it", path)
            return
        ident = self._ident(directory)
        entry_set = self.entries.get(ident)
        if entry_set is None:
            if event.action == "deleted":
                return
            entry_set = CfgEntrySet(os.path.basename(directory), directory, self.core.setup,
                                    self.core.fam, self.templates, self.creators,
                                    self.encryption)
            self.entries[ident] = entry_set
        entry_set.handle_event(event)
        if entry_set.is_empty():
            self.entries.pop(ident, None)
            self.Entries["Path"].pop(ident, None)
        elif event.action != "exists" or directory not in self.listing:
            self.Entries["Path"][ident] = entry_set.bind_entry

    def _listed(self, path: str) -> None:
        """The monitor has listed a directory: serve its entry, every file of it read."""
        self.listing.discard(path)
        ident = self._ident(path)
        entry_set = self.entries.get(ident)
        if entry_set is not None and not entry_set.is_empty():
            self.Entries["Path"][ident] = entry_set.bind_entry

    def _remove_tree(self, path: str) -> None:
        prefix = path + os.sep
        for handle, watched in list(self.handles.items()):
            if watched == path or watched.startswith(prefix):
                self.core.fam.RemoveMonitor(handle)
                del self.handles[handle]
                self.watched.discard(watched)
                self.listing.discard(os.path.abspath(watched))
        ident = self._ident(path)
        for key in [k for k in self.entries if k == ident or k.startswith(ident + "/")]:
            del self.entries[key]
            self.Entries["Path"].pop(key, None)

    def best_matching(self, name: str, metadata: ClientMetadata) -> Specificity:
        """The specificity of the version of ``name`` a client gets (for bcfg2-info)."""
        return self.entries[name].best_matching(metadata).specific

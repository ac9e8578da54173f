"""Bundler: bundles of related entries, one file per bundle.

The bundle name is the file name without its suffix:

- ``name.xml``: a bundle. If its root element declares the Genshi namespace
  (``xmlns:py="http://genshi.edgewall.org/"``) it is a Genshi markup template.
- ``name.genshi``: a Genshi markup template (deprecated in Bcfg2 1.4, accepted).
- ``name.xml.jinja2``: a Jinja2 template whose output is the bundle's XML.
  Values it prints are XML-escaped (autoescape); ``|safe`` prints raw markup,
  and ``{% include %}`` names are relative to the Bundler directory.

Templates see ``metadata`` (the ClientMetadata) and ``repo`` (the repository
path). They are compiled once per change to the file and rendered per client
before the ``<Group>``/``<Client>`` conditionals are resolved. A syntax error
keeps the last good version in service; an error while rendering (or output
larger than ``bcfg2.templates.MAX_RENDERED`` characters, or output that is not XML) leaves that
bundle out of the client's configuration, logged with the file and line, and
the other bundles are served. Output is streamed and rendering stops as soon
as it passes the cap.

The limits are those of every template (see ``bcfg2.templates``): Jinja2
bundles are rendered in Jinja2's sandbox, whose ``range()`` refuses more
than 100,000 items; Genshi bundles get the same bounded ``range`` but no
sandbox, so any other Python in them is not bounded. A missing key or
attribute fails with the key and the type of the object it was looked up in.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import genshi.template
import jinja2
import lxml.etree

from bcfg2.errors import PluginExecutionError, RepositoryError
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import (
    BundleInfo,
    Plugin,
    StructFile,
    Structure,
    TemplateReads,
    XMLDirectoryBacked,
    as_bool,
    depends_on,
)
from bcfg2.templates import (
    bounded_join,
    bounded_range,
    compile_genshi,
    compile_jinja2,
    render_error,
    sandboxed_environment,
)
from bcfg2.xml import parse_repository_file

GENSHI_NS = "http://genshi.edgewall.org/"
JINJA2_SUFFIX = ".xml.jinja2"


def bundle_name(path: str) -> str:
    """The name of the bundle a file holds: its file name without the suffix."""
    base = os.path.basename(path)
    if base.endswith(JINJA2_SUFFIX):
        return base[:-len(JINJA2_SUFFIX)]
    return os.path.splitext(base)[0]


class BundleFile(StructFile):
    """One bundle: plain XML, or a Genshi or Jinja2 template rendered per client."""

    def __init__(self, name: str, fam: Any = None, repo: str = "",
                 jinja2_env: jinja2.Environment | None = None) -> None:
        super().__init__(name, fam)
        self.repo = repo
        self.jinja2_env = jinja2_env or sandboxed_environment(os.path.dirname(name),
                                                              autoescape=True)
        self.template: genshi.template.MarkupTemplate | jinja2.Template | None = None
        self._reads: tuple[bytes, TemplateReads] | None = None

    @property
    def bundle_name(self) -> str:
        return bundle_name(self.name)

    def record(self) -> None:
        """Record, in the build running, what this bundle's XML for a client depends on."""
        depends_on(self.name, *self.extras)
        if self.template is not None:
            reads = self._reads
            if reads is None or reads[0] is not self.data:
                reads = self._reads = (self.data, TemplateReads.of(self.name, self.data))
            reads[1].record(os.path.dirname(self.name))

    def Index(self) -> None:  # noqa: N802
        if not self.name.endswith(JINJA2_SUFFIX):
            super().Index()
            return
        self.template = compile_jinja2(self.jinja2_env, self.name, self.data)

    def load_xml(self, root: lxml.etree._Element) -> None:
        if not (self.name.endswith(".genshi") or GENSHI_NS in root.nsmap.values()):
            self.template = None
            return
        self.template = compile_genshi(self.name, self.data, markup=True)

    def render(self, metadata: ClientMetadata) -> lxml.etree._Element:
        """The bundle's XML for one client, conditionals not yet resolved."""
        template = self.template
        try:
            if isinstance(template, genshi.template.MarkupTemplate):
                chunks = template.generate(metadata=metadata, repo=self.repo,
                                           range=bounded_range).serialize("xml")
            else:
                chunks = template.generate(metadata=metadata, repo=self.repo)
            text = bounded_join(chunks, self.name)
        except Exception as err:
            raise render_error(err, os.path.dirname(self.name), self.name) from None
        try:
            return parse_repository_file(self.name, text.encode("utf-8"))[0]
        except RepositoryError as err:
            raise PluginExecutionError(f"rendered output of {err}") from None

    def XMLMatch(self, metadata: ClientMetadata, *args: Any) -> lxml.etree._Element:  # noqa: N802
        """The bundle for one client: rendered if a template, conditionals resolved."""
        if self.template is None:
            return super().XMLMatch(metadata, *args)
        return self.match_tree(self.render(metadata), metadata, *args)


class Bundler(Plugin, Structure, XMLDirectoryBacked):
    """Builds the client's bundles with Group/Client conditionals resolved."""

    __child__ = BundleFile
    patterns = re.compile(r".*\.(?:xml|genshi|xml\.jinja2)")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        self.jinja2_env = sandboxed_environment(self.data, autoescape=True)
        XMLDirectoryBacked.__init__(self, self.data, core.fam)

    def HandleEvent(self, event: Any) -> None:  # noqa: N802
        """A bundle file came or went: the builds that looked for its name are stale, and
        the bundles by name are worked out again."""
        before = set(self.entries)
        XMLDirectoryBacked.HandleEvent(self, event)
        self._generation += 1
        gone_or_new = before.symmetric_difference(self.entries)
        if gone_or_new:
            self.expire_configurations(*{f"{self.name}:{bundle_name(rel)}"
                                         for rel in gone_or_new})

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond the bundle names and files each build records."""
        return ""

    def add_entry(self, relative: str, event: Any) -> None:
        entry = BundleFile(os.path.join(self.data, relative), self.fam, self.core.repository,
                           self.jinja2_env)
        entry.HandleEvent(event)
        self.entries[relative] = entry

    #: bumped after each change to the bundle files; (generation, bundles) as last worked out
    _generation = 0
    _bundles: tuple[int, dict[str, BundleFile]] = (-1, {})

    @property
    def bundles(self) -> dict[str, BundleFile]:
        """Bundle files by bundle name (worked out once per change, not per client)."""
        generation = self._generation  # before the files: a change bumps it after them
        cached = self._bundles
        if cached[0] != generation:
            cached = self._bundles = (generation, {
                entry.bundle_name: entry for _, entry in sorted(self.entries.items())
                if isinstance(entry, BundleFile)})
        return cached[1]

    def list_bundles(self) -> list[str]:
        """Names of every bundle file, sorted."""
        return sorted(self.bundles)

    def bundle_info(self, bundle: str) -> BundleInfo | None:
        """The file of a bundle, whether it is in service and whether it is a template."""
        found = self.bundles.get(bundle)
        if found is None:
            return None
        return BundleInfo(bundle, found.name, found.in_service, found.error,
                          found.template is not None)

    def render_bundle(self, bundle: str, metadata: ClientMetadata,
                      resolve_conditionals: bool = True) -> lxml.etree._Element:
        """A bundle rendered for a client (conditionals resolved unless told not to)."""
        found = self.bundles.get(bundle)
        if found is None:
            raise PluginExecutionError(f"Bundle {bundle} does not exist")
        if not found.in_service:
            raise PluginExecutionError(f"Bundle {bundle} cannot be used: {found.error}")
        if not resolve_conditionals:
            return found.render(metadata) if found.template is not None \
                else copy.deepcopy(found.xdata)
        return found.XMLMatch(metadata)

    def BuildStructures(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        bundles = self.bundles
        result = []
        pending = sorted(metadata.bundles)
        added = set(pending)
        while pending:
            name = pending.pop(0)
            depends_on(f"{self.name}:{name}")
            bundle = bundles.get(name)
            if bundle is None:
                self.logger.error("Bundle %s does not exist (needed by %s)", name,
                                  metadata.hostname)
                continue
            bundle.record()
            if not bundle.in_service:
                self.logger.error("Bundle %s cannot be used (needed by %s): %s", name,
                                  metadata.hostname, bundle.error)
                continue
            try:
                data = bundle.XMLMatch(metadata)
            except PluginExecutionError as err:
                self.logger.error("Bundle %s cannot be built for %s: %s", name,
                                  metadata.hostname, err)
                continue
            if as_bool(data.get("independent", "false")):
                data.tag = "Independent"
                del data.attrib["independent"]
            data.set("name", name)
            for child in data.findall("RequiredBundle"):
                required = child.get("name")
                if not required:
                    self.logger.warning("Bundle %s: RequiredBundle without a name ignored",
                                        name)
                    data.remove(child)
                    continue
                if required not in added:
                    added.add(required)
                    pending.append(required)
                if as_bool(child.get("inherit_modification", "false")):
                    data.replace(child, lxml.etree.Element("BoundBundle", name=required))
                else:
                    data.remove(child)
            result.append(data)
        return result

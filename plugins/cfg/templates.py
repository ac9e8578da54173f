"""Cfg templates: file contents rendered per client with Genshi, Jinja2 or Cheetah.

``motd.genshi`` is a Genshi text template (NewTextTemplate syntax),
``motd.jinja2`` a Jinja2 template and ``motd.cheetah`` a Cheetah one; host or
group specificity goes before the extension (``motd.H_host.example.com.jinja2``,
``motd.G50_web.genshi``) and competes with plain versions of the file by
specificity alone.

Templates see ``metadata`` (the ClientMetadata), ``name`` (the entry's name;
with altsrc the name the client writes, not the template's), ``source_path``
(the template file), ``repo`` (the repository) and ``path``, which is
``source_path`` in Genshi and ``name`` in Jinja2 and Cheetah, as in Bcfg2.
In Cheetah they are attributes of the template (``$self.metadata.hostname``).

A template is compiled once each time its file changes. A syntax error keeps
the last good version in service (logged once with file and line). An error
while rendering, or output larger than ``bcfg2.templates.MAX_RENDERED``
characters, fails only that entry, with the template file and line in its
``failure``. Jinja2 ``{% include %}`` and ``{% extends %}`` look for a name
next to the template first, then from the top of Cfg/; fragments meant only
for that (``*.jinja2_include``, ``*.genshi_include``) are not entries
themselves. The limits of both engines (sandbox, bounded ``range()``) are
those of ``bcfg2.templates``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lxml.etree

from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import (
    PluginExecutionError,
    SpecificData,
    Specificity,
    TemplateDataProvider,
    TemplateReads,
)
from bcfg2.templates import (
    bounded_join,
    bounded_range,
    compile_cheetah,
    compile_genshi,
    compile_jinja2,
    render_error,
    sandboxed_environment,
)

__all__ = ["CfgCheetahGenerator", "CfgGenshiGenerator", "CfgJinja2Generator",
           "TEMPLATE_EXTENSIONS", "TemplateContext"]


class TemplateContext:
    """What every template of one Cfg tree shares: repository, Cfg root, Jinja2 setup."""

    def __init__(self, repo: str, root: str,
                 providers: Callable[[], list[TemplateDataProvider]] | None = None) -> None:
        self.repo = repo
        self.root = root
        self.jinja2 = sandboxed_environment(root, relative_includes=True)
        #: the plugins that put names into every template's namespace (TemplateHelper)
        self.providers = providers or list

    def defaults(self, entry: lxml.etree._Element, metadata: ClientMetadata,
                 template: str) -> dict[str, Any]:
        """The names the providers give a template (its own variables are added over them)."""
        out: dict[str, Any] = {}
        for provider in self.providers():
            out.update(provider.get_template_data(entry, metadata, template))
        return out


class _TemplateGenerator(SpecificData):
    """A template version of a Cfg entry; subclasses compile and render."""

    extension = ""

    def __init__(self, name: str, specific: Specificity, fam: Any,
                 context: TemplateContext) -> None:
        super().__init__(name, specific, fam)
        self.context = context
        self.template: Any = None
        self._reads: tuple[bytes, TemplateReads] | None = None

    def variables(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, Any]:
        """The variables a template sees for one entry and client."""
        return {**self.context.defaults(entry, metadata, self.name),
                "metadata": metadata, "name": entry.get("realname", entry.get("name")),
                "source_path": self.name, "repo": self.context.repo}

    def render(self, variables: dict[str, Any]) -> str:
        """The rendered text; any exception means the render failed."""
        raise NotImplementedError

    def get_data(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        """Render for one client; a failure names the template file and line."""
        template = self.template
        if template is None:
            raise PluginExecutionError(f"{self.name}: template not in service: {self.error}")
        reads = self._reads
        if reads is None or reads[0] is not self.data:
            reads = self._reads = (self.data, TemplateReads.of(self.name, self.data))
        reads[1].record(self.context.root)  # includes are looked for from the top of Cfg/
        try:
            return self.render(self.variables(entry, metadata)).encode("utf-8")
        except Exception as err:
            raise render_error(err, self.context.root, self.name) from None


class CfgGenshiGenerator(_TemplateGenerator):
    """A Genshi NewTextTemplate (``*.genshi``)."""

    extension = ".genshi"

    def Index(self) -> None:  # noqa: N802
        self.template = compile_genshi(self.name, self.data)

    def variables(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, Any]:
        return {**super().variables(entry, metadata), "path": self.name,
                "range": bounded_range}

    def render(self, variables: dict[str, Any]) -> str:
        stream = self.template.generate(**variables)
        return bounded_join(stream.serialize("text"), self.name)


class CfgJinja2Generator(_TemplateGenerator):
    """A Jinja2 template (``*.jinja2``)."""

    extension = ".jinja2"

    def Index(self) -> None:  # noqa: N802
        relative = os.path.relpath(self.name, self.context.root).replace(os.sep, "/")
        self.template = compile_jinja2(self.context.jinja2, self.name, self.data, relative)

    def variables(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, Any]:
        data = super().variables(entry, metadata)
        return {**data, "path": data["name"]}

    def render(self, variables: dict[str, Any]) -> str:
        return bounded_join(self.template.generate(variables), self.name)


class CfgCheetahGenerator(_TemplateGenerator):
    """A Cheetah template (``*.cheetah``); its variables are attributes of ``self``."""

    extension = ".cheetah"

    def Index(self) -> None:  # noqa: N802
        self.template = compile_cheetah(self.name, self.data)

    def variables(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, Any]:
        data = super().variables(entry, metadata)
        return {**data, "path": data["name"]}

    def render(self, variables: dict[str, Any]) -> str:
        instance = self.template()  # one per render: concurrent builds share nothing
        for key, value in variables.items():
            setattr(instance, key, value)
        return bounded_join([str(instance)], self.name)


#: template classes by the file-name extension that selects them
TEMPLATE_EXTENSIONS: dict[str, type[_TemplateGenerator]] = {
    CfgGenshiGenerator.extension: CfgGenshiGenerator,
    CfgJinja2Generator.extension: CfgJinja2Generator,
    CfgCheetahGenerator.extension: CfgCheetahGenerator,
}

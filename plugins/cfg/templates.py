"""Cfg templates: file contents rendered per client with Genshi or Jinja2.

``motd.genshi`` is a Genshi text template (NewTextTemplate syntax) and
``motd.jinja2`` a Jinja2 template; host or group specificity goes before the
extension (``motd.H_host.example.com.jinja2``, ``motd.G50_web.genshi``) and
competes with plain versions of the file by specificity alone.

Templates see ``metadata`` (the ClientMetadata), ``name`` (the entry's name;
with altsrc the name the client writes, not the template's), ``source_path``
(the template file), ``repo`` (the repository) and ``path``, which is
``source_path`` in Genshi and ``name`` in Jinja2, as in Bcfg2.

A template is compiled once each time its file changes. A syntax error keeps
the last good version in service (logged once with file and line). An error
while rendering, or output larger than ``MAX_RENDERED`` characters, fails only
that entry, with the template file and line in its ``failure`` (for Genshi,
the line Genshi reports, which can be where the enclosing text block starts).
Output is streamed and rendering stops as soon as it passes the cap. A missing
key or attribute (``metadata.Properties["missing.xml"].xdata``) fails with the
key and the type of the object it was looked up on; in Jinja2, as in Bcfg2,
an undefined value only fails when it is used, printing it gives "".

Jinja2 ``{% include %}`` and ``{% extends %}`` look for a name next to the
template first, then from the top of Cfg/; fragments meant only for that
(``*.jinja2_include``, ``*.genshi_include``) are not entries themselves.
Limits: Jinja2 templates run in ``jinja2.sandbox.SandboxedEnvironment``, so
they cannot reach private attributes (``_name``) or Python internals, and
``range()`` refuses more than ``MAX_RANGE`` (100,000) items. Genshi has no
sandbox: templates get the same bounded ``range``, but any other Python in
them (nested loops, ``'x' * 10**10``, ``{% python %}`` blocks, calls into
modules) is not bounded; Genshi templates are trusted repository code. In
either engine, loops that produce no output (nested ranges) are bounded only
by their ranges, not by ``MAX_RENDERED``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import genshi.template
import genshi.template.eval
import jinja2
import jinja2.sandbox
import lxml.etree

from bcfg2.errors import PluginExecutionError, RepositoryError
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import SpecificData, Specificity

__all__ = ["CfgGenshiGenerator", "CfgJinja2Generator", "GenshiLookup", "MAX_RANGE",
           "MAX_RENDERED", "TEMPLATE_EXTENSIONS", "TemplateContext", "UndefinedError",
           "bounded_range", "sandboxed_environment", "template_location"]

#: the largest output (in characters) a template may render
MAX_RENDERED = 64 * 1024 * 1024
#: the most items ``range()`` gives a template (Jinja2's sandbox limit)
MAX_RANGE = jinja2.sandbox.MAX_RANGE


def missing_message(key: object, owner: object) -> str:
    """The error for a key or attribute a template looked up and did not find."""
    return f"no key or attribute {key!r} in the {type(owner).__name__} it was looked up in"


def bounded_range(*args: int) -> range:
    """``range()`` for Genshi templates, refusing more than MAX_RANGE items."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise OverflowError(f"range() of {len(items)} items: templates may not ask for "
                            f"more than {MAX_RANGE}")
    return items


class UndefinedError(genshi.template.eval.UndefinedError):
    """A Genshi template looked up a key or attribute its object does not have."""

    def __init__(self, key: object, owner: object) -> None:
        genshi.template.TemplateRuntimeError.__init__(self, missing_message(key, owner))


class GenshiLookup(genshi.template.eval.StrictLookup):
    """Strict Genshi lookup whose error names the missing key, not the whole object."""

    @classmethod
    def undefined(cls, key: object, owner: object = genshi.template.eval.UNDEFINED) -> Any:
        if owner is genshi.template.eval.UNDEFINED:
            raise genshi.template.eval.UndefinedError(key)
        raise UndefinedError(key, owner)


class _Undefined(jinja2.Undefined):
    """Jinja2's lenient undefined value, with an error that names the missing key."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint or self._undefined_obj is jinja2.utils.missing:
            return super()._undefined_message
        return missing_message(self._undefined_name, self._undefined_obj)


def sandboxed_environment(root: str, **options: Any) -> jinja2.sandbox.SandboxedEnvironment:
    """A sandboxed Jinja2 environment loading from ``root`` (see the module docstring)."""
    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(root), undefined=_Undefined,
        keep_trailing_newline=True, auto_reload=True, **options)


def template_location(tb: TracebackType | None, root: str, default: str) -> str:
    """``file:line`` of the innermost template frame below ``root`` in a traceback."""
    where = default
    prefix = root.rstrip(os.sep) + os.sep
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(prefix) and not filename.endswith(".py"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def bounded_join(chunks: Iterable[str], source: str) -> str:
    """Join rendered chunks, stopping once the output grows past MAX_RENDERED."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDERED:
            raise PluginExecutionError(
                f"{source}: rendered output exceeds {MAX_RENDERED} characters")
        out.append(chunk)
    return "".join(out)


class _RelativeEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """Resolves include/extends names next to the including template first."""

    def __init__(self, root: str) -> None:
        super().__init__(loader=jinja2.FileSystemLoader(root), undefined=_Undefined,
                         keep_trailing_newline=True, auto_reload=True)
        self.root = root

    def join_path(self, template: str, parent: str) -> str:
        if not template.startswith("/") and parent:
            beside = posixpath.normpath(posixpath.join(posixpath.dirname(parent), template))
            if not beside.startswith("..") and os.path.isfile(os.path.join(self.root, beside)):
                return beside
        return template.lstrip("/")


class TemplateContext:
    """What every template of one Cfg tree shares: repository, Cfg root, Jinja2 setup."""

    def __init__(self, repo: str, root: str) -> None:
        self.repo = repo
        self.root = root
        self.jinja2 = _RelativeEnvironment(root)


class _TemplateGenerator(SpecificData):
    """A template version of a Cfg entry; subclasses compile and render."""

    extension = ""

    def __init__(self, name: str, specific: Specificity, fam: Any,
                 context: TemplateContext) -> None:
        super().__init__(name, specific, fam)
        self.context = context
        self.template: Any = None

    def variables(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, Any]:
        """The variables a template sees for one entry and client."""
        return {"metadata": metadata, "name": entry.get("realname", entry.get("name")),
                "source_path": self.name, "repo": self.context.repo}

    def render(self, variables: dict[str, Any]) -> str:
        """The rendered text; any exception means the render failed."""
        raise NotImplementedError

    def get_data(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        """Render for one client; a failure names the template file and line."""
        template = self.template
        if template is None:
            raise PluginExecutionError(f"{self.name}: template not in service: {self.error}")
        try:
            return self.render(self.variables(entry, metadata)).encode("utf-8")
        except PluginExecutionError:
            raise
        except Exception as err:
            where = template_location(err.__traceback__, self.context.root, self.name)
            if isinstance(err, jinja2.TemplateSyntaxError) and err.filename:
                where = f"{err.filename}:{err.lineno}"
            message = getattr(err, "msg", None) if isinstance(
                err, genshi.template.TemplateError) else None
            raise PluginExecutionError(
                f"{where}: {type(err).__name__}: {message or err}") from None


class CfgGenshiGenerator(_TemplateGenerator):
    """A Genshi NewTextTemplate (``*.genshi``)."""

    extension = ".genshi"

    def Index(self) -> None:  # noqa: N802
        try:
            template = genshi.template.NewTextTemplate(
                self.data.decode("utf-8"), filepath=self.name,
                filename=os.path.basename(self.name), lookup=GenshiLookup)
            template.stream  # noqa: B018 - compiles the directives now, not at first render
        except UnicodeDecodeError as err:
            raise RepositoryError(f"{self.name}: not UTF-8: {err}") from None
        except genshi.template.TemplateError as err:
            raise RepositoryError(f"{self.name}:{err.lineno}: {err.msg}") from None
        self.template = template

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
        env = self.context.jinja2
        relative = os.path.relpath(self.name, self.context.root).replace(os.sep, "/")
        try:
            code = env.compile(self.data.decode("utf-8"), name=relative, filename=self.name)
        except UnicodeDecodeError as err:
            raise RepositoryError(f"{self.name}: not UTF-8: {err}") from None
        except jinja2.TemplateSyntaxError as err:
            raise RepositoryError(f"{self.name}:{err.lineno}: {err.message}") from None
        self.template = env.template_class.from_code(env, code, env.make_globals(None))

    def variables(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> dict[str, Any]:
        data = super().variables(entry, metadata)
        return {**data, "path": data["name"]}

    def render(self, variables: dict[str, Any]) -> str:
        return bounded_join(self.template.generate(variables), self.name)


#: template classes by the file-name extension that selects them
TEMPLATE_EXTENSIONS: dict[str, type[_TemplateGenerator]] = {
    CfgGenshiGenerator.extension: CfgGenshiGenerator,
    CfgJinja2Generator.extension: CfgJinja2Generator,
}

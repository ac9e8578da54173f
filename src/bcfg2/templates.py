"""Genshi and Jinja2 templates as every templating plugin uses them (Cfg, Bundler, GroupLogic).

Compiling: ``compile_genshi`` and ``compile_jinja2`` compile a repository
file once, when it changes; a syntax error is a ``TemplateSyntaxError``
(a RepositoryError) naming the file and line, so the file's last good
version stays in service.

Rendering: output is streamed through ``bounded_join``, which stops as soon
as it passes ``MAX_RENDERED`` characters; ``render_error`` turns whatever a
template raised into a PluginExecutionError naming the template file and
line (``template_location``; for Genshi, the line Genshi reports, which can
be where the enclosing text block starts), so that only that entry or
bundle fails. A missing key or attribute (``metadata.Properties["x.xml"]``)
fails with the key and the type of the object it was looked up on; in
Jinja2, as in Bcfg2, an undefined value only fails when it is used, and
printing it gives "". Python 2 code (``print x``, ``d.has_key(k)``...) is
named in the error with its Python 3 form (``bcfg2.python2``).

Limits: Jinja2 templates run in ``jinja2.sandbox.SandboxedEnvironment``
(``sandboxed_environment``), so they cannot reach private attributes
(``_name``) or Python internals, and ``range()`` refuses more than
``MAX_RANGE`` (100,000) items. Genshi has no sandbox: templates get the
same bounded ``range`` (``bounded_range``), but any other Python in them
(nested loops, ``'x' * 10**10``, ``{% python %}`` blocks, calls into
modules) is not bounded; Genshi templates are trusted repository code. In
either engine, loops that produce no output (nested ranges) are bounded
only by their ranges, not by ``MAX_RENDERED``.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import genshi.template
import genshi.template.eval
import jinja2
import jinja2.sandbox

from bcfg2.errors import PluginExecutionError, TemplateSyntaxError
from bcfg2.python2 import check_genshi, runtime_hint

__all__ = [
    "MAX_RANGE", "MAX_RENDERED", "GenshiLookup", "TemplateSyntaxError", "UndefinedError",
    "bounded_join", "bounded_range", "compile_cheetah", "compile_genshi", "compile_jinja2",
    "render_error",
    "sandboxed_environment", "template_location",
]

#: the largest output (in characters) a template may render
MAX_RENDERED = 64 * 1024 * 1024
#: the most items ``range()`` gives a template (Jinja2's sandbox limit)
MAX_RANGE = jinja2.sandbox.MAX_RANGE


def _missing_message(key: object, owner: object) -> str:
    """The error for a key or attribute a template looked up and did not find."""
    return f"no key or attribute {key!r} in the {type(owner).__name__} it was looked up in"


def bounded_range(*args: int) -> range:
    """``range()`` for Genshi templates, refusing more than MAX_RANGE items."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise OverflowError(f"range() of {len(items)} items: templates may not ask for "
                            f"more than {MAX_RANGE}")
    return items


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


# -- Genshi ----------------------------------------------------------------------------


class UndefinedError(genshi.template.eval.UndefinedError):
    """A Genshi template looked up a key or attribute its object does not have."""

    def __init__(self, key: object, owner: object) -> None:
        genshi.template.TemplateRuntimeError.__init__(self, _missing_message(key, owner))


class GenshiLookup(genshi.template.eval.StrictLookup):
    """Strict Genshi lookup whose error names the missing key, not the whole object."""

    @classmethod
    def undefined(cls, key: object, owner: object = genshi.template.eval.UNDEFINED) -> Any:
        if owner is genshi.template.eval.UNDEFINED:
            raise genshi.template.eval.UndefinedError(key)
        raise UndefinedError(key, owner)


def compile_genshi(path: str, data: bytes, markup: bool = False) -> genshi.template.Template:
    """A Genshi text template (or, with ``markup``, an XML one) compiled now, not at first use.

    A file that is not UTF-8 text or does not compile is a TemplateSyntaxError.
    """
    try:
        if markup:
            template: genshi.template.Template = genshi.template.MarkupTemplate(
                io.BytesIO(data), filepath=path, filename=os.path.basename(path),
                lookup=GenshiLookup)
        else:
            template = genshi.template.NewTextTemplate(
                data.decode("utf-8"), filepath=path, filename=os.path.basename(path),
                lookup=GenshiLookup)
        template.stream  # noqa: B018 - compiles the directives now, not at first render
    except UnicodeDecodeError as err:
        raise TemplateSyntaxError(path, None, f"not UTF-8: {err}") from None
    except genshi.template.TemplateError as err:
        python2 = check_genshi(data, markup) if isinstance(
            err, genshi.template.TemplateSyntaxError) else []
        if python2:  # repository code from Bcfg2's Python 2 days: say what to write instead
            more = f"; {len(python2) - 1} more Python 2 constructs (bcfg2-lint lists them)" \
                if len(python2) > 1 else ""
            raise TemplateSyntaxError(path, python2[0].line,
                                      f"{python2[0].message}{more}") from None
        raise TemplateSyntaxError(path, err.lineno, err.msg) from None
    return template


# -- Jinja2 ----------------------------------------------------------------------------


class _Undefined(jinja2.Undefined):
    """Jinja2's lenient undefined value, with an error that names the missing key."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint or self._undefined_obj is jinja2.utils.missing:
            return super()._undefined_message
        return _missing_message(self._undefined_name, self._undefined_obj)


class _RelativeEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """Resolves include/extends names next to the including template first."""

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(**options)
        self.root = root

    def join_path(self, template: str, parent: str) -> str:
        if not template.startswith("/") and parent:
            beside = posixpath.normpath(posixpath.join(posixpath.dirname(parent), template))
            if not beside.startswith("..") and os.path.isfile(os.path.join(self.root, beside)):
                return beside
        return template.lstrip("/")


def sandboxed_environment(root: str, relative_includes: bool = False,
                          **options: Any) -> jinja2.sandbox.SandboxedEnvironment:
    """A sandboxed Jinja2 environment loading ``{% include %}`` names from ``root``.

    With ``relative_includes`` a name is looked for next to the including
    template first (Cfg); ``options`` go to Jinja2 (``autoescape=True`` for XML).
    """
    settings: dict[str, Any] = {"loader": jinja2.FileSystemLoader(root), "undefined": _Undefined,
                                "keep_trailing_newline": True, "auto_reload": True, **options}
    if relative_includes:
        return _RelativeEnvironment(root, **settings)
    return jinja2.sandbox.SandboxedEnvironment(**settings)


def compile_jinja2(env: jinja2.Environment, path: str, data: bytes,
                   name: str | None = None) -> jinja2.Template:
    """A Jinja2 template compiled now; ``name`` is the one includes are resolved from.

    A file that is not UTF-8 text or does not compile is a TemplateSyntaxError.
    """
    try:
        code = env.compile(data.decode("utf-8"), name=name or os.path.basename(path),
                           filename=path)
    except UnicodeDecodeError as err:
        raise TemplateSyntaxError(path, None, f"not UTF-8: {err}") from None
    except jinja2.TemplateSyntaxError as err:
        raise TemplateSyntaxError(path, err.lineno, err.message or str(err)) from None
    return env.template_class.from_code(env, code, env.make_globals(None))


# -- Cheetah ---------------------------------------------------------------------------

#: where Cheetah's parse errors say the problem is
_CHEETAH_LINE = re.compile(r"^Line (\d+), column \d+$", re.MULTILINE)


def compile_cheetah(path: str, data: bytes) -> type:
    """A Cheetah template compiled now: the class each render instantiates.

    Cheetah (through CT3, the maintained Cheetah 3) compiles a template to
    Python, so like Genshi it has no sandbox: its ``#import`` and
    ``#silent`` run what the repository's author wrote. A file that is not
    UTF-8 text or does not parse is a TemplateSyntaxError with Cheetah's
    line.
    """
    from Cheetah.Template import Template  # CT3 is a dependency; imported only for Cheetah

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TemplateSyntaxError(path, None, f"not UTF-8: {err}") from None
    try:
        return Template.compile(source=text, compilerSettings={"useStackFrames": False})
    except Exception as err:  # Cheetah.Parser.ParseError, or SyntaxError in the generated code
        message = str(err).strip()
        found = _CHEETAH_LINE.search(message)
        line = int(found.group(1)) if found else getattr(err, "lineno", None)
        raise TemplateSyntaxError(path, line, message.split("\n", 1)[0] or
                                  type(err).__name__) from None


# -- render errors ---------------------------------------------------------------------


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


def render_error(err: Exception, root: str, source: str) -> PluginExecutionError:
    """The error a failed render of ``source`` reports: template file and line, type, message.

    ``root`` is the directory templates are loaded from (includes included),
    so the line is that of the innermost template the error passed through.
    """
    if isinstance(err, PluginExecutionError):
        return err
    where = template_location(err.__traceback__, root, source)
    if isinstance(err, jinja2.TemplateSyntaxError) and err.filename:  # an included file
        where = f"{err.filename}:{err.lineno}"
    message = getattr(err, "msg", None) if isinstance(err, genshi.template.TemplateError) \
        else None
    hint = runtime_hint(err)
    return PluginExecutionError(f"{where}: {type(err).__name__}: {message or err}"
                                + (f" ({hint})" if hint else ""))

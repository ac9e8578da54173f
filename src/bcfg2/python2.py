"""Python 2 code in repository files, and the Python 3 form to write instead.

Bcfg2 1.4 ran repository code (Genshi ``<?python ?>`` blocks and ``${...}``
expressions, TemplateHelper modules) under Python 2; this server runs it
under Python 3, where ``raise E, msg`` or ``print x`` does not compile. Code
is compiled first (``compile()``); only a line that fails to compile is
matched against the Python 2 constructs, and each one found is reported
with its Python 3 form, the line rewritten in that form, and the code
compiled again to find the next one. Code that compiles is never scanned as
text: ``d.has_key(k)`` and ``print >>f, x``, which compile but fail when
they run, are found in its syntax tree.

``check_genshi`` finds the Python of a Genshi template (markup or text) with
its file line; ``check_python`` checks a module; ``runtime_hint`` is the
hint for an error a template raised while rendering.
"""

from __future__ import annotations

import ast
import importlib
import re
import textwrap
from dataclasses import dataclass
from xml.sax.saxutils import unescape

__all__ = ["Python2Code", "check_cheetah", "check_genshi", "check_python", "cheetah_python",
           "runtime_hint"]

#: the most Python 2 constructs reported for one piece of code (each costs a compile)
MAX_FINDINGS = 50


@dataclass(frozen=True)
class Python2Code:
    """One Python 2 construct: the line of the file, what it is, and its Python 3 form."""

    line: int
    construct: str
    python3: str

    @property
    def message(self) -> str:
        return f"Python 2 code ({self.construct}): in Python 3 write {self.python3}"


# -- constructs, matched only on a line that does not compile ---------------------------

_STRING = re.compile(r"""(?:[rRbBuU]{0,2})("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")


def _blank_strings(line: str) -> str:
    """The line with its string literals blanked out (same length), for the number rules."""
    return _STRING.sub(lambda m: " " * len(m.group(0)), line)


def _raise(line: str) -> tuple[str, str, str] | None:
    m = re.match(r"^(\s*)raise\s+([\w.]+)\s*,\s*(.+?)\s*$", line)
    if m is None:
        return None
    new = f"{m.group(1)}raise {m.group(2)}({m.group(3)})"
    return "raise E, msg", new.strip(), new


def _print(line: str) -> tuple[str, str, str] | None:
    m = re.match(r"^(\s*)print(?:\s+(?![=(])(.*?)|\s*)\s*$", line)
    if m is None or (m.group(2) or "").startswith(("=", ".")):
        return None
    args = (m.group(2) or "").rstrip()
    end = ""
    if args.endswith(","):
        args, end = args[:-1].rstrip(), ', end=" "'
    target = re.match(r"^>>\s*([^,]+?)\s*(?:,\s*(.*))?$", args)
    if target is not None:
        rest = target.group(2) or ""
        args = f"{rest}, file={target.group(1)}" if rest else f"file={target.group(1)}"
    new = f"{m.group(1)}print({args}{end})"
    return "print statement", new.strip(), new


def _except(line: str) -> tuple[str, str, str] | None:
    m = re.match(r"^(\s*)except\s+(.+?)\s*,\s*([A-Za-z_]\w*)\s*:(.*)$", line)
    if m is None:
        return None
    new = f"{m.group(1)}except {m.group(2)} as {m.group(3)}:{m.group(4)}"
    return "except E, e", f"except {m.group(2)} as {m.group(3)}:", new


def _backticks(line: str) -> tuple[str, str, str] | None:
    blanked = _blank_strings(line)
    m = re.search(r"`([^`]*)`", blanked)
    if m is None:
        return None
    inner = line[m.start(1):m.end(1)]
    new = line[:m.start()] + f"repr({inner})" + line[m.end():]
    return "backticks", f"repr({inner})", new


def _ur_string(line: str) -> tuple[str, str, str] | None:
    m = re.search(r"(?<![\w])[uU]([rR])(?=['\"])", line)
    if m is None:
        return None
    literal = _STRING.match(line, m.start())
    shown = literal.group(0)[1:] if literal else m.group(1) + "'...'"
    new = line[:m.start()] + line[m.start() + 1:]
    return "ur'' string", shown, new


def _octal(line: str) -> tuple[str, str, str] | None:
    m = re.search(r"(?<![\w.])0([0-7]+)(?![\w.])", _blank_strings(line))
    if m is None:
        return None
    new = line[:m.start()] + f"0o{m.group(1)}" + line[m.end():]
    return f"octal literal {m.group(0)}", f"0o{m.group(1)}", new


def _not_equal(line: str) -> tuple[str, str, str] | None:
    blanked = _blank_strings(line)
    at = blanked.find("<>")
    if at < 0:
        return None
    return "<> operator", "!=", line[:at] + "!=" + line[at + 2:]


#: each rule: the line -> (what it is, its Python 3 form, the line rewritten) or None
RULES = (_octal, _ur_string, _backticks, _not_equal, _except, _raise, _print)


def _fix_line(line: str) -> tuple[list[tuple[str, str]], str]:
    """The Python 2 constructs of one line, and the line in Python 3 form."""
    found: list[tuple[str, str]] = []
    for _round in range(10):  # a line may hold several, even of one kind
        for rule in RULES:
            result = rule(line)
            if result is not None:
                construct, python3, line = result
                found.append((construct, python3))
                break
        else:
            break
    return found, line


def _compiling_python2(tree: ast.AST) -> list[tuple[int, str, str]]:
    """Python 2 that compiles but fails when it runs: ``d.has_key(k)``, ``print >>f, x``."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "has_key" and len(node.args) == 1 and not node.keywords):
            owner = ast.unparse(node.func.value)
            out.append((node.lineno, f"{owner}.has_key()",
                        f"{ast.unparse(node.args[0])} in {owner}"))
        elif (isinstance(node, ast.Tuple) and node.elts
              and isinstance(node.elts[0], ast.BinOp) and isinstance(node.elts[0].op, ast.RShift)
              and isinstance(node.elts[0].left, ast.Name) and node.elts[0].left.id == "print"):
            args = ", ".join(ast.unparse(arg) for arg in node.elts[1:])
            out.append((node.lineno, "print >>f statement",
                        f"print({args}, file={ast.unparse(node.elts[0].right)})"))
    return out


def check_python(source: str, first_line: int = 1, mode: str = "exec") -> list[Python2Code]:
    """The Python 2 constructs of a piece of code whose first line is ``first_line`` of its file.

    ``mode`` is that of ``compile()``: "exec" for blocks and modules, "eval"
    for expressions. Code that does not compile for another reason gives
    what was found before that.
    """
    lines = source.split("\n")
    found: list[Python2Code] = []
    while len(found) < MAX_FINDINGS:
        try:
            tree = compile("\n".join(lines), "<repository code>", mode, ast.PyCF_ONLY_AST,
                           dont_inherit=True)
        except SyntaxError as err:
            index = (err.lineno or 0) - 1
            if not 0 <= index < len(lines):
                break
            constructs, fixed = _fix_line(lines[index])
            if not constructs or fixed == lines[index]:
                break
            found.extend(Python2Code(first_line + index, construct, python3)
                         for construct, python3 in constructs)
            lines[index] = fixed
            continue
        except ValueError:  # null bytes
            break
        found.extend(Python2Code(first_line + line - 1, construct, python3)
                     for line, construct, python3 in _compiling_python2(tree))
        break
    return sorted(found, key=lambda f: f.line)


# -- the Python of Genshi templates ---------------------------------------------------

_PI = re.compile(r"<\?python(.*?)\?>", re.S)
_TEXT_BLOCK = re.compile(r"\{%\s*python\b(.*?)%\}", re.S)
_TEXT_DIRECTIVE = re.compile(r"\{%\s*(if|for|choose|when|with|def)\s+(.*?)\s*%\}", re.S)
_PY_ATTRIBUTE = re.compile(
    r"""\bpy:(if|for|with|def|choose|when|attrs|content|replace|strip)\s*=\s*("[^"]*"|'[^']*')""")
_PY_ELEMENT = re.compile(r"<py:(if|when|choose|for|with|def|replace)\b([^>]*)>")
_ELEMENT_ATTRIBUTE = {"if": "test", "when": "test", "choose": "test", "for": "each",
                      "with": "vars", "def": "function", "replace": "value"}


def _wrap(directive: str, code: str) -> tuple[str, str]:
    """Code of a directive as ``compile()`` takes it, and the mode."""
    if directive == "for":
        return f"for {code}: pass", "exec"
    if directive == "def":
        return f"def {code}: pass", "exec"
    if directive == "with":
        return code, "exec"
    return code, "eval"


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _block(code: str) -> str:
    """A ``<?python ?>`` block as Genshi runs it: dedented, with its line numbers kept."""
    first, _newline, rest = code.partition("\n")
    if not first.strip():
        return "\n" + textwrap.dedent(rest)
    return first.strip() + "\n" + textwrap.dedent(rest)


def _expressions(text: str, start: int = 0) -> list[tuple[int, str]]:
    """Every ``${...}`` of a text: (offset of the code, code). ``$${`` is no expression."""
    out = []
    at = text.find("${", start)
    while at >= 0:
        if at > 0 and text[at - 1] == "$":
            at = text.find("${", at + 2)
            continue
        depth, i, quote = 0, at + 1, ""
        while i < len(text):
            char = text[i]
            if quote:
                if char == "\\":
                    i += 1
                elif char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append((at + 2, text[at + 2:i]))
        at = text.find("${", i + 1)
    return out


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """The text with some spans blanked out, newlines kept (so offsets and lines hold)."""
    chars = list(text)
    for begin, end in spans:
        for i in range(begin, end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


def genshi_code(data: bytes | str, markup: bool) -> list[tuple[int, str, str]]:
    """The Python of a Genshi template (markup, or NewTextTemplate text): (line, code, mode)
    of each block, directive and expression, ``mode`` as ``compile()`` takes it."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    fragments: list[tuple[int, str, str]] = []  # (line, code, mode)
    block = _PI if markup else _TEXT_BLOCK
    spans = []
    for m in block.finditer(text):
        fragments.append((_line_at(text, m.start(1)), _block(m.group(1)), "exec"))
        spans.append(m.span())
    rest = _blank(text, spans)
    decode = (lambda code: unescape(code, {"&quot;": '"', "&apos;": "'"})) if markup \
        else (lambda code: code)
    directive_spans = []
    if markup:
        for m in _PY_ATTRIBUTE.finditer(rest):
            code, mode = _wrap(m.group(1), decode(m.group(2)[1:-1]))
            if code.strip():
                fragments.append((_line_at(rest, m.start(2)), code, mode))
            directive_spans.append(m.span())
        for m in _PY_ELEMENT.finditer(rest):
            name = _ELEMENT_ATTRIBUTE[m.group(1)]
            attr = re.search(rf"""\b{name}\s*=\s*("[^"]*"|'[^']*')""", m.group(2))
            if attr is not None:
                code, mode = _wrap(m.group(1), decode(attr.group(1)[1:-1]))
                fragments.append((_line_at(rest, m.start(2) + attr.start(1)), code, mode))
            directive_spans.append(m.span())
    else:
        for m in _TEXT_DIRECTIVE.finditer(rest):
            code, mode = _wrap(m.group(1), m.group(2))
            fragments.append((_line_at(rest, m.start(2)), code, mode))
            directive_spans.append(m.span())
    rest = _blank(rest, directive_spans)
    for offset, code in _expressions(rest):
        fragments.append((_line_at(rest, offset), decode(code).strip(), "eval"))
    return fragments


def check_genshi(data: bytes | str, markup: bool) -> list[Python2Code]:
    """The Python 2 constructs of a Genshi template (markup, or NewTextTemplate text)."""
    found: list[Python2Code] = []
    for line, code, mode in genshi_code(data, markup):
        found.extend(check_python(code, line, mode))
    return sorted(found, key=lambda f: f.line)


# -- upstream's modules ---------------------------------------------------------------

_CHEETAH_IMPORT = re.compile(r"^[ \t]*#((?:import|from)[ \t].*?)[ \t]*$", re.MULTILINE)


def cheetah_code(data: bytes | str) -> list[tuple[int, str, str]]:
    """The ``#import`` and ``#from`` lines of a Cheetah template, as Python: (line, code, mode)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [(_line_at(text, m.start()), m.group(1), "exec") for m in _CHEETAH_IMPORT.finditer(text)]


#: the Cheetah directives whose argument is Python, one line each (``#set x = 1``,
#: ``#if $x.has_key('a')``), up to the line's end or the ``#`` that closes the directive
_CHEETAH_DIRECTIVE = re.compile(
    r"^[ \t]*#(set(?:[ \t]+global)?|silent|echo|if|else[ \t]+if|elif|for|while|raise|"
    r"assert|del|except|return)\b[ \t]*((?:[^#\n'\"]|'[^'\n]*'|\"[^\"\n]*\")*)",
    re.MULTILINE)
#: a Cheetah placeholder's ``$`` before a name (``$metadata.hostname``): Python has none
_CHEETAH_DOLLAR = re.compile(r"\$(?=[A-Za-z_])")


def _cheetah_wrap(directive: str, code: str) -> tuple[str, str, int]:
    """A Cheetah directive's Python as ``compile()`` takes it, the mode, and the lines put
    before the directive's own (so its findings keep the template's line)."""
    code = _CHEETAH_DOLLAR.sub("", code).strip().removesuffix(":").strip()
    if directive.startswith("set"):
        return code, "exec", 0
    if directive in ("for", "while") or directive.startswith(("if", "else", "elif")):
        keyword = "if" if directive.startswith(("else", "elif")) else directive
        return f"{keyword} {code}: pass", "exec", 0
    if directive == "except":
        return f"try: pass\nexcept {code}: pass", "exec", 1
    if directive == "return":
        return f"def f():\n return {code}", "exec", 1
    if directive in ("raise", "assert", "del"):
        return f"{directive} {code}", "exec", 0
    return code, "eval", 0  # silent, echo


def cheetah_python(data: bytes | str) -> list[tuple[int, str, str]]:
    """The Python of a Cheetah template's one-line directives: (line, code, mode).

    Imports (``cheetah_code``) and ``$placeholders`` in the text are not
    among them.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    out = []
    for m in _CHEETAH_DIRECTIVE.finditer(text):
        code, mode, before = _cheetah_wrap(re.sub(r"\s+", " ", m.group(1)), m.group(2))
        if code.strip():
            out.append((_line_at(text, m.start()) - before, code, mode))
    return out


def check_cheetah(data: bytes | str) -> list[Python2Code]:
    """The Python 2 constructs of a Cheetah template's directives."""
    found: list[Python2Code] = []
    for line, code, mode in cheetah_python(data):
        found.extend(check_python(code, line, mode))
    return sorted(found, key=lambda f: f.line)


def _provided(module: str, name: str | None = None) -> bool:
    """Whether the ``Bcfg2`` compatibility package has a module (and a name in it)."""
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as err:
        return not (err.name == module or module.startswith(f"{err.name}."))  # an optional dep
    except ImportError:
        return True  # ours, with an optional library missing: the plugin says so itself
    if name is None or hasattr(imported, name):
        return True
    return _provided(f"{module}.{name}")


def _upstream_hint(module: str) -> str:
    if module.startswith("Bcfg2.Options"):
        return ("read options as Bcfg2.Options.setup.NAME (upstream 1.4) or "
                "bcfg2.options.in_service().SECTION.NAME")
    if module.startswith("Bcfg2.Server.Plugins."):
        return ("templates reach plugin data through metadata (metadata.Properties, "
                "metadata.Probes, metadata.TemplateHelper...); plugin code is bcfg2.plugins")
    if module.startswith("Bcfg2.Client"):
        return "the agent's modules are not part of the server"
    return "import what it needs from bcfg2 (bcfg2.plugin, bcfg2.options, bcfg2.xml)"


def upstream_imports(source: str, first_line: int = 1,
                     mode: str = "exec") -> list[tuple[int, str]]:
    """Imports of upstream's ``Bcfg2`` modules or names that this server does not provide:
    (line, message naming what replaces it). Code that does not compile gives none."""
    try:
        tree = compile(source, "<repository code>", mode, ast.PyCF_ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError):
        return []
    wanted: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted.extend((node.lineno, alias.name, None) for alias in node.names
                          if alias.name.split(".")[0] == "Bcfg2")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and node.module.split(".")[0] == "Bcfg2":
            wanted.extend((node.lineno, node.module, alias.name) for alias in node.names
                          if alias.name != "*")
    out = []
    for line, module, name in wanted:
        if not _provided(module, name):
            what = module if name is None or not _provided(module) else f"{module}.{name}"
            out.append((first_line + line - 1,
                        f"{what} is upstream Bcfg2's and this server has no such "
                        f"compatibility name; {_upstream_hint(module)}"))
    return out


# -- errors while rendering -----------------------------------------------------------

def runtime_hint(err: BaseException) -> str | None:
    """The Python 3 form for an error that Python 2 code raises when it runs, if it is one."""
    # AttributeError, or the UndefinedError of a Genshi lookup
    if (isinstance(err, AttributeError) or type(err).__name__ == "UndefinedError") \
            and "'has_key'" in str(err):
        return "Python 2 code (d.has_key()): in Python 3 write k in d"
    return None

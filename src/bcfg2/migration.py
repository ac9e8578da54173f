"""What an upstream Bcfg2 1.4 site meets when it moves to this server (docs/migrating.md).

The facts bcfg2-lint's Migration check and the plugin loader's errors share:
the plugins that do not exist (any more) and what replaces them, where
their files go in Cfg, agents' ``bcfg2.conf`` files that ask for TLS 1.0,
and ``random.seed()`` in templates, whose numbers differ on Python 3.
``Python2Random`` gives templates Python 2's numbers back.
"""

from __future__ import annotations

import ast
import os
import random
import re
from collections.abc import Iterable, MutableSequence, Sequence
from typing import Any, TypeVar

__all__ = ["REMOVED_PLUGINS", "Python2Random", "agent_protocol", "cfg_path", "python2_hash",
           "random_seeds"]

#: plugins of upstream Bcfg2 this server does not have, with what to use instead
REMOVED_PLUGINS: dict[str, str] = {
    "TGenshi": "Cfg's Genshi text templates (Cfg/PATH/NAME.genshi)",
    "TCheetah": "Cfg's Cheetah templates (Cfg/PATH/NAME.cheetah)",
    "SSLCA": "Cfg's key and certificate creators (sslkey.xml and sslcert.xml in Cfg/PATH/)",
    "Account": "POSIXUser and POSIXGroup entries in bundles, and Cfg files for the rest",
    "Base": "Bundler (a bundle per group in Metadata/groups.xml)",
    "Editor": "Cfg templates (Genshi, Cheetah or Jinja2) of the whole file",
    "Svcmgr": "Service entries in Rules",
    "Statistics": "Reporting",
    "DBStats": "Reporting",
    "Snapshots": "Reporting (bcfg2-admin reports)",
    "Hostbase": "host data in Metadata, Properties or Ldap (nothing replaces its web pages)",
    "Guppy": "Python's tracemalloc in bcfg2-info debug (no plugin)",
}

#: the template file names of TGenshi and TCheetah (a specific one adds .H_host, .G50_group)
_TEMPLATE = re.compile(r"template(?P<kind>\.newtxt|\.txt|\.xml)?(?P<specific>\.[HG].+)?")


def cfg_path(plugin: str, relative: str) -> tuple[str, str] | None:
    """Where a file of a removed plugin's directory goes in Cfg, and what else to do.

    ``relative`` is the path in the plugin's directory (``etc/motd/template.newtxt``).
    None when the file has no one counterpart.
    """
    folder, base = os.path.split(relative)
    name = os.path.basename(folder)
    if plugin in ("TGenshi", "TCheetah"):
        m = _TEMPLATE.fullmatch(base)
        if base in ("info", ":info", "info.xml"):
            return f"Cfg/{folder}/{base}", "the same format"
        if m is None or not name:
            return None
        suffix = ".genshi" if plugin == "TGenshi" else ".cheetah"
        target = f"Cfg/{folder}/{name}{m.group('specific') or ''}{suffix}"
        kind = m.group("kind")
        if plugin == "TGenshi" and kind == ".txt":
            return target, ("rewrite it in the NewTextTemplate syntax ({% if %}...{% end %}); "
                            "Genshi's old text syntax (#if ... #end) is not read")
        if plugin == "TGenshi" and kind == ".xml":
            return target, "rewrite the markup template as a text template"
        return target, "as it is"
    if plugin == "SSLCA":
        if base == "key.xml":
            return f"Cfg/{folder}/sslkey.xml", "check its attributes against sslkey.xml's"
        if base == "cert.xml":
            return f"Cfg/{folder}/sslcert.xml", "check its attributes against sslcert.xml's"
    return None


# -- agents' bcfg2.conf ------------------------------------------------------------------

_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_PROTOCOL = re.compile(r"^\s*protocol\s*[=:]\s*(?P<value>\S+)\s*$")


def agent_protocol(text: str) -> list[tuple[int, str]]:
    """Where an agent's bcfg2.conf makes a Bcfg2 1.4 agent ask for TLS 1.0 only: (line, why).

    ``protocol = xmlrpc/tlsv1``, upstream's default, so also a
    ``[communication]`` section without ``protocol``.
    """
    out = []
    section, communication, protocol = "", None, False
    for number, line in enumerate(text.splitlines(), 1):
        header = _SECTION.match(line)
        if header is not None:
            section = header.group("name").strip()
            if section == "communication":
                communication = number
            continue
        m = _PROTOCOL.match(line) if section == "communication" else None
        if m is not None:
            protocol = True
            if m.group("value") == "xmlrpc/tlsv1":
                out.append((number, "protocol = xmlrpc/tlsv1 makes a Bcfg2 1.4 agent speak "
                                    "TLS 1.0 only"))
    if communication is not None and not protocol:
        out.append((communication, "[communication] has no protocol: a Bcfg2 1.4 agent then "
                                   "uses xmlrpc/tlsv1, TLS 1.0 only"))
    return out


# -- random.seed() -----------------------------------------------------------------------

_SEEDING = re.compile(r"\brandom\s*\.\s*(seed|Random)\s*\(")


def random_seeds(fragments: Iterable[tuple[int, str, str]]) -> list[int]:
    """The lines of a template's Python that seed the random module (``random.seed(x)``,
    ``random.Random(x)``, ``seed(x)`` imported from random) with a value.

    ``fragments`` are (first line, code, mode) as bcfg2.python2 extracts
    them; code that does not compile is searched as text.
    """
    fragments = list(fragments)
    trees = []
    for first, code, mode in fragments:
        try:
            trees.append((first, ast.parse(code, mode=mode)))
        except (SyntaxError, ValueError):
            trees.append((first, None))
            for m in _SEEDING.finditer(code):
                trees.append((first + code.count("\n", 0, m.start()), "text"))
    imported = {alias.asname or alias.name for _first, tree in trees if isinstance(tree, ast.AST)
                for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "random" for alias in node.names
                if alias.name in ("seed", "Random")}
    lines = set()
    for first, tree in trees:
        if tree == "text":
            lines.add(first)
            continue
        if tree is None:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not (node.args or node.keywords):
                continue
            func = node.func
            seeds = (isinstance(func, ast.Attribute) and func.attr in ("seed", "Random")
                     and isinstance(func.value, ast.Name) and func.value.id == "random") or (
                isinstance(func, ast.Name) and func.id in imported)
            if seeds and not (node.args and isinstance(node.args[0], ast.Constant)
                              and node.args[0].value is None):
                lines.add(first + node.lineno - 1)
    return sorted(lines)


def python2_hash(value: str | bytes) -> int:
    """Python 2's hash() of a string on a 64-bit machine (no -R), as an unsigned number.

    Python 2's ``random.seed(s)`` seeded with it; a text value is taken as its
    UTF-8 bytes, as a Python 2 template had it.
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    if not data:
        return 0
    mask = (1 << 64) - 1
    x = (data[0] << 7) & mask
    for byte in data:
        x = ((1000003 * x) & mask) ^ byte
    x ^= len(data)
    if x == mask:  # -1 is Python 2's error value: its hash is -2
        x = mask - 1
    return x


T = TypeVar("T")

#: Python 2 drew ranges this wide or wider otherwise (not reproduced)
_MAXWIDTH = 1 << 53


class Python2Random(random.Random):
    """A ``random.Random`` that gives the numbers Python 2.7 gave for the same seed.

    Python 3 seeds from a string differently and draws ``randrange``,
    ``randint``, ``choice`` and ``shuffle`` differently, so a template that
    picked each client's cron minute with ``random.seed(hostname)`` would
    pick another one on this server. ``Python2Random(hostname).randint(0, 59)``
    is the minute Python 2 picked. ``random()`` and ``uniform()`` were the same
    already; ``sample()`` and ``gauss()`` are Python 3's.
    """

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Seed as Python 2 did: a string by its Python 2 hash, a number by its value."""
        if isinstance(a, str | bytes):
            a = python2_hash(a)
        super().seed(a)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        """Python 2.7's ``randrange``: ``int(random() * width)``, for widths below 2**53."""
        if stop is None:
            start, stop = 0, start
            if stop <= 0:
                raise ValueError("empty range for randrange()")
        width = stop - start
        if step == 1:
            if width <= 0:
                raise ValueError(f"empty range for randrange({start}, {stop})")
            return start + self._below(width)
        if step == 0:
            raise ValueError("zero step for randrange()")
        n = (width + step - 1) // step if step > 0 else (width + step + 1) // step
        if n <= 0:
            raise ValueError("empty range for randrange()")
        return start + step * self._below(n)

    def _below(self, n: int) -> int:
        if n >= _MAXWIDTH:
            raise ValueError("Python 2's draw from a range of 2**53 or more is not reproduced")
        return int(self.random() * n)

    def randint(self, a: int, b: int) -> int:
        """Python 2.7's ``randint``: ``randrange(a, b + 1)``."""
        return self.randrange(a, b + 1)

    def choice(self, seq: Sequence[T]) -> T:
        """Python 2.7's ``choice``: ``seq[int(random() * len(seq))]``."""
        if not seq:
            raise IndexError("cannot choose from an empty sequence")
        return seq[int(self.random() * len(seq))]

    def shuffle(self, x: MutableSequence[Any]) -> None:  # type: ignore[override]
        """Python 2.7's ``shuffle``: from the end, each item with one at or before it."""
        for i in reversed(range(1, len(x))):
            j = int(self.random() * (i + 1))
            x[i], x[j] = x[j], x[i]

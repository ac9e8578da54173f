"""The line between library and plugins: a plugin imports the plugin framework and
library modules, never the core, a network core, a tool or another plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PLUGINS_DIR = ROOT / "plugins"
#: what no plugin may import (the modules and everything below them)
FORBIDDEN = {
    "bcfg2.core": "the core",
    "bcfg2.cores": "a network core",
    "bcfg2.info": "a tool", "bcfg2.lint": "a tool", "bcfg2.admin": "a tool",
    "bcfg2.testrun": "a tool", "bcfg2.server": "a tool", "bcfg2.tools": "a tool",
    "bcfg2.devcert": "a tool", "bcfg2.crypt": "a tool",
}
#: imports allowed for now, as (file, what the statement imports), each with who removes it
ALLOWED: set[tuple[str, tuple[str, ...]]] = set()


def module_name(path: Path) -> str:
    """The module a file under plugins/ installs as (cfg/templates.py: bcfg2.plugins.cfg.templates)."""
    parts = list(path.relative_to(PLUGINS_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["bcfg2", "plugins", *parts])


def own_plugin(module: str) -> str | None:
    """The plugin a module belongs to (bcfg2.plugins.cfg for bcfg2.plugins.cfg.templates)."""
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) > 2 else None


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, list[str]]]:
    """Every import anywhere in a module: (line, the absolute module names it may import).

    Relative imports are resolved. ``from a import b`` may import ``a`` and
    ``a.b`` (b may be a module); ``importlib.import_module("x")`` and
    ``__import__("x")`` with a literal name count too.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, [base] + [f"{base}.{alias.name}" for alias in node.names
                                                 if alias.name != "*"]))
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                found.append((node.lineno, [node.args[0].value]))
    return found


def violation(module: str, target: str) -> str | None:
    """Why ``module`` (a plugin's) may not import ``target``, or None if it may."""
    for forbidden, what in FORBIDDEN.items():
        if target == forbidden or target.startswith(forbidden + "."):
            return f"imports {target} ({what})"
    other = own_plugin(target) if target.startswith("bcfg2.plugins.") else None
    if other is not None and other != own_plugin(module):
        return f"imports {target} (another plugin)"
    return None


def violations(path: Path, source: str) -> list[str]:
    """``file:line: reason`` for every import the layering forbids in one plugin module."""
    module = module_name(path)
    tree = ast.parse(source, filename=str(path))
    relative = path.relative_to(PLUGINS_DIR)
    out = []
    for line, targets in imported(tree, module, path.name == "__init__.py"):
        if (str(relative), tuple(targets)) in ALLOWED:
            continue
        for target in targets:  # the first forbidden name of a statement is enough
            reason = violation(module, target)
            if reason is not None:
                out.append(f"plugins/{relative}:{line}: {reason}")
                break
    return sorted(set(out))


def plugin_modules() -> list[Path]:
    return sorted(PLUGINS_DIR.rglob("*.py"))


def test_there_are_plugin_modules_to_check() -> None:
    names = {str(p.relative_to(PLUGINS_DIR)) for p in plugin_modules()}
    assert {"bundler.py", "cfg/__init__.py", "cfg/templates.py", "metadata.py"} <= names


def test_plugins_import_only_the_framework_and_library_modules() -> None:
    found = [v for path in plugin_modules() for v in violations(path, path.read_text())]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path, source, expected", [
    ("bundler.py", "from bcfg2.plugins.cfg.templates import bounded_join\n",
     ["plugins/bundler.py:1: imports bcfg2.plugins.cfg.templates (another plugin)"]),
    ("bundler.py", "def f():\n    from . import cfg\n",
     ["plugins/bundler.py:2: imports bcfg2.plugins.cfg (another plugin)"]),
    ("cfg/templates.py", "from .. import rules\nfrom . import helpers\n",
     ["plugins/cfg/templates.py:1: imports bcfg2.plugins.rules (another plugin)"]),
    ("cfg/__init__.py", "from .templates import TemplateContext\nimport bcfg2.plugins.cfg.x\n", []),
    ("rules.py", "from bcfg2 import options, core\n",
     ["plugins/rules.py:1: imports bcfg2.core (the core)"]),
    ("rules.py", "import importlib\nimportlib.import_module('bcfg2.cores.builtin')\n",
     ["plugins/rules.py:2: imports bcfg2.cores.builtin (a network core)"]),
    ("rules.py", "if True:\n    from bcfg2.testrun import build_client\n",
     ["plugins/rules.py:2: imports bcfg2.testrun (a tool)"]),
    ("rules.py", "from bcfg2.plugin import PrioDir\nfrom bcfg2 import templates, xml\n", []),
    ("acl.py", "from bcfg2.core import LOOPBACK\n",
     ["plugins/acl.py:1: imports bcfg2.core (the core)"]),
    ("acl.py", "from bcfg2.cores import builtin\n",
     ["plugins/acl.py:1: imports bcfg2.cores (a network core)"]),
])
def test_the_check_finds_imports_anywhere_and_resolves_relative_ones(
        path: str, source: str, expected: list[str]) -> None:
    assert violations(PLUGINS_DIR / path, source) == expected

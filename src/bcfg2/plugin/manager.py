"""The plugin manager: one registry of plugins and cores, and the checks made at load.

Plugins are found by the name admins write in ``[server] plugins``: first
among those registered in code (``register``, which tests use), then ours
(``BUILTIN_PLUGINS``, which a test keeps equal to the entry points in
pyproject.toml), then the ``bcfg2.plugins`` entry points of every installed
distribution. Network cores are found the same way (``bcfg2.cores``). A
module is imported only when its plugin or core is chosen; one that fails
to import stops start-up with its import error.

At load a plugin class is checked the way pluggy checks hook
implementations: every interface method it implements must accept the
interface's parameters, every abstract method must be implemented, and a
public method one edit away from a hook name (``end_client_runs``) is an
error, since the core would never call it.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bcfg2 import migration
from bcfg2.errors import ConfigError, CoreInitError
from bcfg2.plugin import interfaces
from bcfg2.plugin.base import Plugin

if TYPE_CHECKING:
    from bcfg2.options import Option

PLUGIN_GROUP = "bcfg2.plugins"
CORE_GROUP = "bcfg2.cores"

#: our plugins, by name (the entry points in pyproject.toml say the same; a test checks)
BUILTIN_PLUGINS = {
    "ACL": "bcfg2.plugins.acl:ACL",
    "AWSTags": "bcfg2.plugins.awstags:AWSTags",
    "Bundler": "bcfg2.plugins.bundler:Bundler",
    "Bzr": "bcfg2.plugins.bzr:Bzr",
    "Cfg": "bcfg2.plugins.cfg:Cfg",
    "Cvs": "bcfg2.plugins.cvs:Cvs",
    "Darcs": "bcfg2.plugins.darcs:Darcs",
    "Decisions": "bcfg2.plugins.decisions:Decisions",
    "Defaults": "bcfg2.plugins.defaults:Defaults",
    "Deps": "bcfg2.plugins.deps:Deps",
    "FileProbes": "bcfg2.plugins.fileprobes:FileProbes",
    "Fossil": "bcfg2.plugins.fossil:Fossil",
    "Git": "bcfg2.plugins.git:Git",
    "GroupLogic": "bcfg2.plugins.grouplogic:GroupLogic",
    "GroupPatterns": "bcfg2.plugins.grouppatterns:GroupPatterns",
    "Hg": "bcfg2.plugins.hg:Hg",
    "Ldap": "bcfg2.plugins.ldap:Ldap",
    "Metadata": "bcfg2.plugins.metadata:Metadata",
    "NagiosGen": "bcfg2.plugins.nagiosgen:NagiosGen",
    "Ohai": "bcfg2.plugins.ohai:Ohai",
    "Packages": "bcfg2.plugins.packages:Packages",
    "POSIXCompat": "bcfg2.plugins.posixcompat:POSIXCompat",
    "Pkgmgr": "bcfg2.plugins.pkgmgr:Pkgmgr",
    "Probes": "bcfg2.plugins.probes:Probes",
    "Properties": "bcfg2.plugins.properties:Properties",
    "PuppetENC": "bcfg2.plugins.puppetenc:PuppetENC",
    "Reporting": "bcfg2.plugins.reporting:Reporting",
    "Rules": "bcfg2.plugins.rules:Rules",
    "SEModules": "bcfg2.plugins.semodules:SEModules",
    "SSHbase": "bcfg2.plugins.sshbase:SSHbase",
    "ServiceCompat": "bcfg2.plugins.servicecompat:ServiceCompat",
    "Svn": "bcfg2.plugins.svn:Svn",
    "TemplateHelper": "bcfg2.plugins.templatehelper:TemplateHelper",
    "Trigger": "bcfg2.plugins.trigger:Trigger",
}

#: our network cores, by ``[server] backend`` name
BUILTIN_CORES = {
    "builtin": "bcfg2.cores.builtin:BuiltinCore",
    "cherrypy": "bcfg2.cores.cherrypy:CherrypyCore",
    "multiprocessing": "bcfg2.cores.multiprocessing:MultiprocessingCore",
}

_registered: dict[str, type[Plugin]] = {}
_checked: set[type] = set()


# -- finding -----------------------------------------------------------------------

def register(cls: type[Plugin]) -> type[Plugin]:
    """Make a plugin class loadable by its name (before ours and the entry points)."""
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"{cls!r} is not a Plugin class")
    _registered[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a plugin registered with ``register``."""
    _registered.pop(name, None)


@contextlib.contextmanager
def registered(*classes: type[Plugin]) -> Iterator[None]:
    """Plugin classes loadable by name for the duration of a ``with`` block."""
    for cls in classes:
        register(cls)
    try:
        yield
    finally:
        for cls in classes:
            unregister(cls.name)


def _entry_points(group: str) -> dict[str, Any]:
    from importlib import metadata  # only when a name is not ours: a heavy import

    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def _load(target: str, what: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as err:  # any error while importing the module, SyntaxError too
        raise CoreInitError(f"{what} cannot be imported: {err}") from err


def find_plugin(name: str) -> type[Plugin]:
    """The plugin class named ``name``: registered, ours, or a ``bcfg2.plugins`` entry point."""
    cls = _registered.get(name)
    if cls is None:
        target = BUILTIN_PLUGINS.get(name)
        if target is not None:
            cls = _load(target, f"plugin {name}")
        else:
            point = _entry_points(PLUGIN_GROUP).get(name)
            if point is None:
                close = difflib.get_close_matches(name, plugin_names(), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                if name in migration.REMOVED_PLUGINS:
                    hint = (f": upstream Bcfg2's {name} is not part of this server; use "
                            f"{migration.REMOVED_PLUGINS[name]} (docs/migrating.md)")
                raise CoreInitError(f"no plugin named {name!r}{hint}")
            try:
                cls = point.load()
            except Exception as err:
                raise CoreInitError(f"plugin {name} cannot be imported: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise CoreInitError(f"plugin {name}: {cls!r} is not a Plugin class")
    return cls


def plugin_names() -> list[str]:
    """Every plugin that can be loaded by name: registered, ours and entry points."""
    return sorted(set(_registered) | set(BUILTIN_PLUGINS) | set(_entry_points(PLUGIN_GROUP)))


def best_core() -> str:
    """The recommended core: rendering in parallel where there is more than one CPU."""
    import os

    return "multiprocessing" if (os.cpu_count() or 1) > 1 else "builtin"


def find_core(name: str) -> type:
    """The network core class for a ``[server] backend`` name (``best`` chooses one)."""
    if name == "best":
        name = best_core()
    target = BUILTIN_CORES.get(name)
    if target is None:
        point = _entry_points(CORE_GROUP).get(name)
        if point is None:
            raise CoreInitError(f"[server] backend: no core named {name!r}")
        target = point.value
    return _load(target, f"[server] backend: core {name}")


def core_names() -> list[str]:
    """Every network core that can be chosen by name."""
    return sorted(set(BUILTIN_CORES) | set(_entry_points(CORE_GROUP)))


# -- options -------------------------------------------------------------------------

def component_options(plugins: Iterable[str] = (), backend: str | None = None,
                      everything: bool = False) -> list[Option]:
    """The options the named plugins and core declare (``everything``: of all there are).

    A plugin or core that cannot be found or imported declares nothing here:
    loading it reports the error. Two components declaring the same option
    is a ConfigError naming both.
    """
    components: list[tuple[str, Any]] = []
    names = plugin_names() if everything else list(dict.fromkeys(plugins))
    for name in names:
        with contextlib.suppress(CoreInitError):
            components.append((f"plugin {name}", find_plugin(name)))
    cores = core_names() if everything else ([backend] if backend else [])
    for name in cores:
        with contextlib.suppress(CoreInitError):
            components.append((f"core {name}", find_core(name)))
    owners: dict[str, tuple[str, Option]] = {}
    out: list[Option] = []
    for owner, cls in components:
        for opt in getattr(cls, "options", ()):
            known = owners.get(opt.dest)
            if known is not None:
                if known[1] is opt:  # inherited (a core and its subclass)
                    continue
                raise ConfigError(f"[{opt.section}] {opt.name} is declared by "
                                  f"{known[0]} and by {owner}")
            owners[opt.dest] = (owner, opt)
            out.append(opt)
    return out


# -- checking ------------------------------------------------------------------------

def _hooks() -> dict[str, tuple[type, Any]]:
    """Every hook a plugin may implement: interface methods and Plugin's own, by name."""
    hooks: dict[str, tuple[type, Any]] = {}
    for base in (Plugin, *interfaces.INTERFACES):
        for name, attr in vars(base).items():
            if not name.startswith("_") and inspect.isfunction(attr):
                hooks.setdefault(name, (base, attr))
    return hooks


def _accepts(spec: Any, impl: Any) -> bool:
    """Whether ``impl`` can be called as the core calls ``spec``: the same positional
    parameters, by name and in order; more only with defaults (or ``*args``)."""
    try:
        wanted = list(inspect.signature(spec).parameters.values())[1:]
        given = list(inspect.signature(impl).parameters.values())
    except (TypeError, ValueError):
        return True  # a builtin or C callable: nothing to compare
    if given and given[0].name in ("self", "cls"):
        given = given[1:]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in given):
        named = [p for p in given if p.kind in positional]
        return all(g.name == w.name for g, w in zip(named, wanted, strict=False))
    named = [p for p in given if p.kind in positional]
    if len(named) < len([w for w in wanted if w.kind in positional]):
        return False
    for index, param in enumerate(named):
        if index < len(wanted):
            if param.name != wanted[index].name:
                return False
        elif param.default is inspect.Parameter.empty:
            return False
    required_kw = [p for p in given if p.kind is inspect.Parameter.KEYWORD_ONLY
                   and p.default is inspect.Parameter.empty]
    return not required_kw


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether two different names are one insertion, deletion, substitution or swap apart."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        return (len(diffs) == 2 and diffs[1] == diffs[0] + 1
                and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    for i in range(len(long)):
        if long[:i] + long[i + 1:] == short:
            return True
    return False


def _signature_text(name: str, func: Any) -> str:
    try:
        return f"{name}{inspect.signature(func)}"
    except (TypeError, ValueError):
        return name


def check_plugin(cls: type[Plugin]) -> None:
    """Refuse a plugin class the core could not call as its interfaces say (CoreInitError)."""
    if cls in _checked:
        return
    name = cls.name
    missing = interfaces.missing_methods(cls)
    if missing:
        raise CoreInitError(f"plugin {name} does not implement {', '.join(missing)}")
    hooks = _hooks()
    claimed = [base for base in cls.__mro__ if base in interfaces.INTERFACES or base is Plugin]
    for base in claimed:
        for hook_name, spec in vars(base).items():
            if hook_name.startswith("_") or not inspect.isfunction(spec):
                continue
            impl = getattr(cls, hook_name, None)
            if impl is None or impl is spec or not callable(impl):
                continue
            if not _accepts(spec, impl):
                raise CoreInitError(
                    f"plugin {name}: method {_signature_text(hook_name, impl)} does not match "
                    f"the hook {base.__name__}.{_signature_text(hook_name, spec)}")
    framework = set()
    for base in cls.__mro__:
        if base is Plugin or base in interfaces.INTERFACES or base.__module__.startswith(
                ("bcfg2.plugin.", "builtins", "threading")):
            framework.update(vars(base))
    for attr_name in dir(cls):
        if attr_name.startswith("_") or attr_name in hooks or attr_name in framework:
            continue
        if not callable(getattr(cls, attr_name, None)):
            continue
        for hook_name, (base, _spec) in hooks.items():
            if _one_edit_apart(attr_name, hook_name):
                raise CoreInitError(
                    f"plugin {name}: method {attr_name} is one edit away from the hook "
                    f"{base.__name__}.{hook_name}, which the core would call instead; "
                    f"did you mean {hook_name}?")
    _checked.add(cls)


__all__ = ["BUILTIN_CORES", "BUILTIN_PLUGINS", "CORE_GROUP", "PLUGIN_GROUP", "best_core",
           "check_plugin", "component_options", "core_names", "find_core", "find_plugin",
           "plugin_names", "register", "registered",
           "unregister"]

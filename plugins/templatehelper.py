"""TemplateHelper: Python helper modules in ``TemplateHelper/`` for templates.

Each ``TemplateHelper/<name>.py`` is run as a module and exposed to
templates as ``metadata.TemplateHelper['<name>']``, an object whose
attributes are the names the module lists in ``__export__`` (or, without
``__export__``, its public names other than imported modules). The reserved
names ``data``, ``name``, ``fam``, ``Index`` and ``HandleEvent`` are never
exported. A module is run again when its file changes; a module that fails
to run is logged with its path, line and error, its last good version stays
in service, and the other modules are not affected. Python 2 code in a
module (``raise E, msg``, ``print x``...) is named in that error with its
Python 3 form; ``d.has_key(k)``, which compiles, is a warning at its line.

A module's ``__default__`` lists names (from what it defines) that every
Cfg template gets in its namespace directly, ``${pining("fjords")}``
instead of ``${metadata.TemplateHelper['hello'].pining("fjords")}``; the
template's own variables (``metadata``, ``name``, ``source_path``,
``repo``, ``path``) are never replaced by one.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import types
from typing import TYPE_CHECKING, Any

from bcfg2.errors import RepositoryError
from bcfg2.plugin import (
    Connector,
    DirectoryBacked,
    FileBacked,
    Plugin,
    TemplateDataProvider,
    TemplateReads,
    depends_on,
)
from bcfg2.python2 import check_python, runtime_hint

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event, FileMonitor
    from bcfg2.metadata import ClientMetadata

logger = logging.getLogger(__name__)

RESERVED = frozenset({"data", "name", "fam", "Index", "HandleEvent"})
#: a template's own variables, which no ``__default__`` name replaces
TEMPLATE_VARIABLES = frozenset({"name", "metadata", "source_path", "repo", "path"})


class HelperModule:
    """The exported symbols of one helper module, as read-only attributes."""

    def __init__(self, name: str, symbols: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_symbols", dict(symbols))

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._symbols[attr]
        except KeyError:
            raise AttributeError(f"helper {self._name} exports no {attr!r}") from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"helper {self._name} is read-only")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"helper {self._name} is read-only")

    def __dir__(self) -> list[str]:
        return sorted(self._symbols)

    def __repr__(self) -> str:
        return f"<HelperModule {self._name}: {', '.join(sorted(self._symbols))}>"


class HelperFile(FileBacked):
    """One helper module file; ``helper`` is the version in service, or None."""

    def __init__(self, name: str, fam: FileMonitor | None = None) -> None:
        super().__init__(name, fam)
        self.module_name = os.path.basename(name)[:-len(".py")]
        self.helper: HelperModule | None = None
        #: the ``__default__`` names and values, for every template's namespace
        self.defaults: dict[str, Any] = {}
        #: what the source says the helper may read, for the source it was decided from
        self.reads: tuple[bytes, TemplateReads] | None = None

    def Index(self) -> None:  # noqa: N802
        """Run the module and collect its exports; RepositoryError if that fails."""
        qualified = f"bcfg2.TemplateHelper.{self.module_name}"
        module = types.ModuleType(qualified)
        module.__file__ = self.name
        try:
            code = compile(self.data, self.name, "exec")
        except SyntaxError as err:
            raise self._python2_error(err) from None
        except ValueError as err:  # null bytes
            raise RepositoryError(f"{self.name}: {err}") from None
        previous = sys.modules.get(qualified)
        sys.modules[qualified] = module  # dataclasses and pickling look modules up here
        try:
            exec(code, module.__dict__)  # noqa: S102
            symbols = self._exports(module)
            defaults = self._defaults(module)
        except Exception as err:
            if previous is None:
                sys.modules.pop(qualified, None)
            else:
                sys.modules[qualified] = previous
            if isinstance(err, RepositoryError):
                raise
            hint = runtime_hint(err)
            raise RepositoryError(f"{self.name}:{self._line(err)}: "
                                  f"{type(err).__name__}: {err}"
                                  + (f" ({hint})" if hint else "")) from None
        for found in check_python(self.data.decode("utf-8", "replace")):
            # compiles, but fails when a template calls it
            logger.warning("%s:%d: %s", self.name, found.line, found.message)
        self.helper = HelperModule(self.module_name, symbols)
        self.defaults = defaults

    def _python2_error(self, err: SyntaxError) -> RepositoryError:
        """A module that does not compile; Python 2 code in it is named with its Python 3 form."""
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        python2 = check_python(text) if text else []
        if python2:
            more = f"; {len(python2) - 1} more Python 2 constructs (bcfg2-lint lists them)" \
                if len(python2) > 1 else ""
            return RepositoryError(f"{self.name}:{python2[0].line}: {python2[0].message}{more}")
        return RepositoryError(f"{self.name}:{err.lineno or '?'}: SyntaxError: {err.msg}")

    def _line(self, err: BaseException) -> int | str:
        """The line of this file the error comes from (a syntax error says so itself)."""
        if isinstance(err, SyntaxError) and err.filename == self.name:
            return err.lineno or "?"
        lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
                 if frame.filename == self.name]
        return lines[-1] if lines and lines[-1] is not None else "?"

    def _defaults(self, module: types.ModuleType) -> dict[str, Any]:
        names = getattr(module, "__default__", ())
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise RepositoryError(f"{self.name}: __default__ must be a list of names")
        missing = [n for n in names if not hasattr(module, n)]
        if missing:
            raise RepositoryError(f"{self.name}: __default__ names what the module does "
                                  f"not define: {', '.join(missing)}")
        for name in TEMPLATE_VARIABLES.intersection(names):
            logger.warning("%s: %s is a template variable and is not put in templates' "
                           "namespace", self.name, name)
        return {n: getattr(module, n) for n in names if n not in TEMPLATE_VARIABLES}

    def _exports(self, module: types.ModuleType) -> dict[str, Any]:
        names = getattr(module, "__export__", None)
        if names is None:
            return {key: value for key, value in vars(module).items()
                    if not key.startswith("_") and key not in RESERVED
                    and not isinstance(value, types.ModuleType)}
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise RepositoryError(f"{self.name}: __export__ must be a list of names")
        missing = [n for n in names if not hasattr(module, n)]
        if missing:
            raise RepositoryError(f"{self.name}: __export__ names what the module does "
                                  f"not define: {', '.join(missing)}")
        for name in RESERVED.intersection(names):
            logger.warning("%s: %s is a reserved name and is not exported", self.name, name)
        return {n: getattr(module, n) for n in names if n not in RESERVED}


class TemplateHelper(Plugin, Connector, TemplateDataProvider, DirectoryBacked):
    """Helper modules from ``TemplateHelper/*.py`` as ``metadata.TemplateHelper``."""

    patterns = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.py")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        DirectoryBacked.__init__(self, self.data, core.fam)

    def add_entry(self, relative: str, event: Event) -> None:
        if os.sep in relative:
            return  # helpers are the modules directly in TemplateHelper/
        entry = HelperFile(os.path.join(self.data, relative), self.fam)
        entry.HandleEvent(event)
        self.entries[relative] = entry

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        """Reload what changed; cached client metadata holds the old helpers, so expire it."""
        DirectoryBacked.HandleEvent(self, event)
        if event.action != "endExist":
            self.expire_metadata()

    def cache_key(self, metadata: ClientMetadata) -> str | None:
        """Nothing beyond its modules, unless one may read the time or the world outside
        (``TemplateReads``): then no configuration is kept while it is in service."""
        for entry in list(self.entries.values()):
            if isinstance(entry, HelperFile) and entry.helper is not None:
                reads = entry.reads
                if reads is None or reads[0] is not entry.data:
                    reads = entry.reads = (entry.data, TemplateReads.of(entry.name, entry.data,
                                                                    python=True))
                if reads[1].world is not None:
                    return None
        depends_on(self.data)
        return ""

    def get_additional_data(self, metadata: ClientMetadata) -> dict[str, HelperModule]:
        """Module name -> its exported symbols, for every module in service."""
        out: dict[str, HelperModule] = {}
        for entry in sorted(self.entries.values(), key=lambda e: e.name):
            if isinstance(entry, HelperFile) and entry.helper is not None:
                out[entry.module_name] = entry.helper
        return out

    def get_template_data(self, entry: Any, metadata: ClientMetadata,
                          template: str) -> dict[str, Any]:
        """The ``__default__`` names of every module in service (later modules win a name)."""
        out: dict[str, Any] = {}
        for entry_file in sorted(self.entries.values(), key=lambda e: e.name):
            if isinstance(entry_file, HelperFile) and entry_file.helper is not None:
                out.update(entry_file.defaults)
        return out


__all__ = ["HelperModule", "TemplateHelper"]

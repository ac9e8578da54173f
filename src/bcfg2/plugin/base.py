"""The base Plugin and the ``exposed`` marker for XML-RPC methods."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bcfg2.options import Option

if TYPE_CHECKING:
    from bcfg2.core import Core
    from bcfg2.metadata import ClientMetadata

F = TypeVar("F", bound=Callable[..., Any])


def exposed(func: F) -> F:
    """Mark a method as callable over XML-RPC."""
    func.exposed = True  # type: ignore[attr-defined]
    return func


def as_bool(value: bool | str) -> bool:
    """Accept True/False or a string such as "true" or "False"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class Debuggable:
    """An object with its own logger (``bcfg2.<name>``) and a debug switch.

    Both are set up once: a plugin that is also a DirectoryBacked runs both
    constructors, and the second one must neither rename the plugin's logger
    nor switch its debugging off.
    """

    def __init__(self, name: str | None = None) -> None:
        if "logger" in vars(self):
            return
        self.debug_flag = False
        self.logger = logging.getLogger(f"bcfg2.{name or self.logger_name()}")

    def logger_name(self) -> str:
        """The logger's name after ``bcfg2.`` when none is given: the class name."""
        return self.__class__.__name__

    def set_debug(self, debug: bool | str) -> bool:
        self.debug_flag = as_bool(debug)
        return self.debug_flag

    def toggle_debug(self) -> bool:
        return self.set_debug(not self.debug_flag)

    def debug_log(self, message: str) -> None:
        if self.debug_flag:
            self.logger.info(message)


class Plugin(Debuggable):
    """The base of every server plugin.

    A plugin knows the core (``self.core``), its own directory in the
    repository (``self.data``) and the interfaces it implements. Its class
    name is the name admins write in ``[server] plugins``.
    """

    name: ClassVar[str] = "Plugin"
    __author__ = "bcfg2 server developers"
    #: shown as a warning when the plugin is loaded
    experimental: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    #: names of plugins that cannot be loaded together with this one
    conflicts: ClassVar[list[str]] = []
    #: order among plugins of the same interface (lower first, then by name)
    sort_order: ClassVar[int] = 500
    #: the plugin's own options (bcfg2.conf, ``--section-name``), joining the options table
    options: ClassVar[tuple[Option, ...]] = ()
    #: methods callable as ``Name.method`` over XML-RPC besides @exposed ones
    __rmi__: ClassVar[list[str]] = ["toggle_debug", "set_debug"]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, core: Core) -> None:
        Debuggable.__init__(self)
        self.core = core
        self.data = os.path.join(core.repository, self.name)
        self.running = True

    def logger_name(self) -> str:
        """Every plugin logs as ``bcfg2.plugins.<Name>``."""
        return f"plugins.{self.name}"

    @classmethod
    def init_repo(cls, repo: str) -> None:
        """Create the plugin's directory in a new repository."""
        os.makedirs(os.path.join(repo, cls.name), exist_ok=True)

    def start_threads(self) -> None:
        """Start any threads the plugin needs; called when the server runs."""

    def shutdown(self) -> None:
        """Stop the plugin's threads and release its resources."""
        self.running = False

    def expire_metadata(self, clients: str | Iterable[str] | None = None) -> None:
        """Have the metadata cache forget one client, several, or (None) all of them.

        The one way a plugin whose data went into client metadata says it
        changed; the expiry is tagged with the plugin's name.
        """
        self.core.metadata_cache.expire(clients, tag=self.name)

    @property
    def metadata_generation(self) -> int:
        """A number that changes with every expiry of client metadata (to key caches by)."""
        return self.core.metadata_cache.generation

    def expire_metadata_if_groups_change(self) -> None:
        """Have the metadata cache forget every client whose groups (or bundles) now change.

        Call it once the plugin's new data is in service.
        """
        self.core.metadata_cache.expire_changed(tag=self.name)

    def on_metadata_expiry(self, listener: Callable[[Any], None]) -> None:
        """Have ``listener`` called with every expiry of client metadata, once it applies.

        It gets a ``bcfg2.cache.Expiry``; ``expiry.relayed_from(self.name)``
        says another process (the multiprocessing core's parent) changed
        what this plugin knows, e.g. the state it keeps in a database.
        """
        self.core.metadata_cache.subscribe(listener)

    def cache_key(self, metadata: ClientMetadata) -> str | None:
        """What this plugin's part of the client's configuration depends on beyond the
        repository paths and names it records while building (``bcfg2.configcache``):
        text that changes when that does ('' for nothing more), or None when the
        plugin cannot say (the default), which keeps every configuration it takes part
        in out of the configuration cache: built every time, never stale."""
        return None

    def expire_configurations(self, *names: str) -> None:
        """Have the configuration cache drop every configuration that recorded one of
        these names (paths are dropped by the file monitor's events already), and every
        bound entry the core keeps (``bcfg2.bindmemo``)."""
        self.core.bind_memo.clear()
        self.core.config_cache.invalidate(names)

    def rmi(self) -> dict[str, Callable[..., Any]]:
        """The plugin's methods callable over XML-RPC, by name."""
        methods: dict[str, Callable[..., Any]] = {}
        for name in dir(self.__class__):
            if name.startswith("_"):
                continue
            attr = getattr(self.__class__, name, None)
            if callable(attr) and (getattr(attr, "exposed", False) or name in self.__rmi__):
                methods[name] = getattr(self, name)
        return methods

    def __repr__(self) -> str:
        return f"<{self.name} plugin>"

"""The plugin interfaces: what a plugin can do for the core.

A plugin class inherits from Plugin and from one or more of these. Methods
marked ``@abstractmethod`` are the interface's contract: the core refuses
to load a plugin that claims an interface without implementing them
(see ``missing_methods``).
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bcfg2.plugin.base import Plugin

if TYPE_CHECKING:
    import lxml.etree

    from bcfg2.metadata import ClientMetadata

logger = logging.getLogger(__name__)


class Generator:
    """Binds entries: fills in the details of an abstract entry in place.

    A generator either lists the entries it binds by name (``Entries``: tag
    -> name -> bind function, or ``binder_for`` when that depends on the
    client) or claims entries by pattern (``HandlesEntry``/``HandleEntry``).
    The core prefers a generator that lists an entry over one that claims it.
    """

    def __init__(self) -> None:
        self.Entries: dict[str, dict[str, Callable[..., Any]]] = {}

    def binder_for(self, entry: lxml.etree._Element,
                   metadata: ClientMetadata) -> Callable[..., Any] | None:
        """The function binding this entry by its name for this client, or None."""
        return self.Entries.get(entry.tag, {}).get(entry.get("name"))

    def list_entries(self) -> list[tuple[str, str]]:
        """(tag, name) of every entry this generator names (for bcfg2-info)."""
        return [(tag, name) for tag, names in list(self.Entries.items()) for name in list(names)]

    def HandlesEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bool:  # noqa: N802
        """True if this generator binds the entry by a pattern rather than by name."""
        return False

    def HandleEntry(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> Any:  # noqa: N802
        return entry


class Structure:
    """Provides the structures (bundles) that make up a client's configuration."""

    @abstractmethod
    def BuildStructures(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """The client's structures, with Group/Client conditionals resolved."""


class Metadata:
    """Knows the clients and groups; authenticates connections."""

    @abstractmethod
    def AuthenticateConnection(self, cert: dict | None, user: str, password: str,  # noqa: N802
                               address: tuple[str, int]) -> str | bool | None:
        """The name of the client the credentials identify, or None (False) to refuse.

        True (upstream's answer) also accepts; the client is then found by
        ``resolve_client(address)``.
        """

    @abstractmethod
    def get_initial_metadata(self, client_name: str) -> ClientMetadata:
        """Metadata from this plugin alone, before connectors add to it."""

    @abstractmethod
    def merge_additional_groups(self, imd: ClientMetadata, groups: list[str]) -> None:
        """Add groups from a connector (and what follows from them)."""

    @abstractmethod
    def merge_additional_data(self, imd: ClientMetadata, source: str, data: Any) -> None:
        """Attach a connector's data to the metadata as ``imd.<source>``."""

    @abstractmethod
    def resolve_client(self, address: tuple[str, int], cleanup_cache: bool = False) -> str:
        """The name of the client calling from ``address``.

        ``address`` may be a ``bcfg2.identity.Caller``, which carries the
        client that authenticated (``address.client``).
        """

    @abstractmethod
    def set_profile(self, client: str, profile: str, address: tuple[str, int] | None) -> None:
        """Assign a profile group to a client (AssertProfile, first contact)."""

    @abstractmethod
    def set_version(self, client: str, version: str) -> None:
        """Record the version a client declared."""


class Connector:
    """Adds groups and data to client metadata."""

    def get_additional_groups(self, metadata: ClientMetadata) -> list[Any]:
        return []

    def get_additional_data(self, metadata: ClientMetadata) -> Any:
        return {}


class Probing:
    """Sends probes to clients and receives their output."""

    @abstractmethod
    def GetProbes(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """The ``<probe>`` elements this client should run."""

    @abstractmethod
    def ReceiveData(self, metadata: ClientMetadata,  # noqa: N802
                    datalist: list[lxml.etree._Element]) -> None:
        """Store the ``<probe-data>`` the client sent."""


class Statistics(Plugin):
    """Receives the statistics clients upload after a run."""

    @abstractmethod
    def process_statistics(self, metadata: ClientMetadata, data: lxml.etree._Element) -> None:
        """Handle one client's ``<upload-statistics>`` document."""


class ThreadedStatistics(Statistics, threading.Thread):
    """Statistics handled in a thread of their own, off the request path.

    ``process_statistics`` only queues; ``handle_statistic`` does the work.
    On shutdown the queue is drained before the thread ends.
    """

    def __init__(self, core: Any) -> None:
        Statistics.__init__(self, core)
        threading.Thread.__init__(self, name=f"{self.name}-statistics", daemon=True)
        self.work_queue: queue.Queue[tuple[Any, Any] | None] = queue.Queue()

    def start_threads(self) -> None:
        self.start()

    def process_statistics(self, metadata: ClientMetadata, data: lxml.etree._Element) -> None:
        self.work_queue.put((metadata, data))

    def run(self) -> None:
        while True:
            item = self.work_queue.get()
            if item is None:
                return
            try:
                self.handle_statistic(*item)
            except Exception:
                logger.exception("%s: failed to handle statistics", self.name)

    def shutdown(self) -> None:
        super().shutdown()
        if self.is_alive():
            self.work_queue.put(None)
            self.join()

    @abstractmethod
    def handle_statistic(self, metadata: ClientMetadata, data: lxml.etree._Element) -> None:
        """Process one statistics upload (in the statistics thread)."""


class Decision:
    """Provides whitelist/blacklist decisions (``GetDecisionList``)."""

    @abstractmethod
    def GetDecisions(self, metadata: ClientMetadata, mode: str) -> list[tuple[str, str]]:  # noqa: N802
        """(tag, name) pairs for the mode ("whitelist" or "blacklist")."""


class StructureValidator:
    """Checks or adjusts structures before they are bound."""

    @abstractmethod
    def validate_structures(self, metadata: ClientMetadata,
                            structures: list[lxml.etree._Element]) -> None:
        """Raise ValidationError to refuse; may modify structures in place."""


class GoalValidator:
    """Checks or adjusts the bound configuration."""

    @abstractmethod
    def validate_goals(self, metadata: ClientMetadata, config: lxml.etree._Element) -> None:
        """Raise ValidationError to refuse; may modify the config in place."""


class Version(Plugin):
    """Reports the revision of the repository (sent in each Configuration)."""

    @abstractmethod
    def get_revision(self) -> str:
        """The current revision, as a string."""


class ClientRunHooks:
    """Called at the stages of a client run."""

    def start_client_run(self, metadata: ClientMetadata) -> None:
        """Before the configuration is built."""

    def end_client_run(self, metadata: ClientMetadata) -> None:
        """After the configuration is built."""

    def end_statistics(self, metadata: ClientMetadata) -> None:
        """After the client's statistics are processed."""


class ClientACLs:
    """Decides, on top of the caller's identity, who may call which XML-RPC method.

    The core asks every ClientACLs plugin by address, then (when one
    defers, and the caller is a client) by the client's metadata. False
    denies; True allows, even a method the identity alone would not; None
    has no opinion. The address may be a ``bcfg2.identity.Caller``.
    """

    @abstractmethod
    def check_acl_ip(self, address: tuple[str, int], rmi: str) -> bool | None:
        """True to allow, False to deny, None to defer to the metadata phase."""

    @abstractmethod
    def check_acl_metadata(self, metadata: ClientMetadata, rmi: str) -> bool | None:
        """True to allow the call for this client, False to deny, None for no opinion."""


class Caching:
    """Keeps a cache that must be expired when data changes."""

    @abstractmethod
    def expire_cache(self, key: str | None = None) -> None:
        """Expire the cache for one client name, or all of it."""


INTERFACES: tuple[type, ...] = (
    Generator, Structure, Metadata, Connector, Probing, Statistics, ThreadedStatistics,
    Decision, StructureValidator, GoalValidator, Version, ClientRunHooks, ClientACLs, Caching,
)


def missing_methods(cls: type) -> list[str]:
    """Methods an interface requires that the plugin class does not implement."""
    missing = []
    for base in cls.__mro__:
        if base not in INTERFACES:
            continue
        for name, attr in vars(base).items():
            if getattr(attr, "__isabstractmethod__", False):
                impl = getattr(cls, name, None)
                if impl is None or getattr(impl, "__isabstractmethod__", False):
                    missing.append(f"{base.__name__}.{name}")
    return sorted(set(missing))

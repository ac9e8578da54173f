"""The plugin interfaces: what a plugin can do for the core.

A plugin class inherits from Plugin and from one or more of these. Methods
marked ``@abstractmethod`` are the interface's contract: the core refuses
to load a plugin that claims an interface without implementing them
(see ``missing_methods``).

Besides what the core calls, some interfaces declare read-only queries
(``list_clients``, ``list_groups``, ``list_bundles``...) for the tools:
bcfg2-info, bcfg2-test and bcfg2-lint ask these, never a plugin's own
attributes, so they work with any plugin that implements the interface.
The queries have defaults (nothing known), so a plugin written before them
still loads.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from bcfg2.errors import PluginExecutionError
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


@dataclass(frozen=True)
class BundleInfo:
    """What the tools show of one bundle of a Structure plugin."""

    name: str
    #: the repository file it is read from, if it has one
    path: str | None = None
    #: whether a version of it was ever read successfully
    in_service: bool = True
    #: the last error reading it (an older version may still be in service), or None
    error: str | None = None
    #: whether it is a template, rendered per client
    template: bool = False


@dataclass(frozen=True)
class GroupInfo:
    """A group as the Metadata plugin declares it (what ``bcfg2-info groups`` prints)."""

    name: str
    profile: bool = False
    public: bool = False
    default: bool = False
    category: str | None = None


class ClientSummary(NamedTuple):
    """What the tools list of one client without building its metadata (a tuple: the
    page makes one per client for every list)."""

    profile: str
    version: str | None = None
    #: pinned to its profile by an admin (AssertProfile leaves it)
    pinned: bool = False


class Structure:
    """Provides the structures (bundles) that make up a client's configuration."""

    @abstractmethod
    def BuildStructures(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """The client's structures, with Group/Client conditionals resolved."""

    def list_bundles(self) -> list[str]:
        """Names of every bundle this plugin can build, sorted (for the tools)."""
        return []

    def bundle_info(self, bundle: str) -> BundleInfo | None:
        """What is known of one bundle by its name, or None if there is no such bundle."""
        return None

    def render_bundle(self, bundle: str, metadata: ClientMetadata,
                      resolve_conditionals: bool = True) -> lxml.etree._Element:
        """One bundle as built for a client, templates rendered, entries not bound.

        With ``resolve_conditionals`` false the Group/Client conditionals are
        left in (every entry the bundle can give anyone). A bundle that cannot
        be built is a PluginExecutionError saying why.
        """
        raise PluginExecutionError(
            f"{getattr(self, 'name', type(self).__name__)} cannot build single bundles")


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

    def get_trusted_metadata(self, client_name: str) -> ClientMetadata:
        """Metadata from this plugin alone and from the repository alone: what ACLs see.

        A profile the client asserted itself (AssertProfile) does not count
        here: its profile is the one the repository gave it. A plugin that
        lets no client choose its own groups needs nothing more than
        ``get_initial_metadata``.
        """
        return self.get_initial_metadata(client_name)

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

    def list_clients(self) -> list[str]:
        """Names of every known client, sorted (for the tools)."""
        return []

    def resolve_name(self, name: str) -> str | None:
        """The canonical name of a known client or alias, or None; never registers one."""
        return name if name in self.list_clients() else None

    def list_groups(self) -> list[GroupInfo]:
        """Every declared group with its flags, sorted by name (for the tools)."""
        return []

    def client_summaries(self) -> dict[str, ClientSummary]:
        """Every known client's profile, version and pin, by name (for the tools)."""
        out = {}
        for name in self.list_clients():
            meta = self.get_initial_metadata(name)
            out[name] = ClientSummary(meta.profile, meta.version, self.is_pinned(name))
        return out

    def clients_in_groups(self, groups: list[str]) -> list[str]:
        """The known clients that are members of every one of ``groups``, sorted."""
        wanted = set(groups)
        return [name for name in self.list_clients()
                if wanted <= set(self.get_initial_metadata(name).groups)]

    def set_pinned(self, client: str, pinned: bool) -> None:
        """Pin a client to its profile, so that AssertProfile leaves it (an admin's action)."""
        raise PluginExecutionError(
            f"{getattr(self, 'name', type(self).__name__)} cannot pin clients")

    def is_pinned(self, client: str) -> bool:
        """Whether the client is pinned to its profile."""
        return False

    def remove_client(self, client_name: str) -> bool:
        """Forget a client (an admin's action); an error says why it cannot be."""
        raise PluginExecutionError(
            f"{getattr(self, 'name', type(self).__name__)} cannot remove clients")


class Connector:
    """Adds groups and data to client metadata.

    ``client_supplied`` says the groups come from what the client itself sent
    (probe output): they shape its configuration but never decide an access
    check (``Core.trusted_metadata``).
    """

    client_supplied: ClassVar[bool] = False

    def get_additional_groups(self, metadata: ClientMetadata) -> list[Any]:
        return []

    def get_additional_data(self, metadata: ClientMetadata) -> Any:
        return {}


class TemplateDataProvider:
    """Puts names into every Cfg template's namespace (TemplateHelper's ``__default__``).

    The template's own variables (``metadata``, ``name``, ``source_path``,
    ``repo``, ``path``) win over a name a provider gives.
    """

    @abstractmethod
    def get_template_data(self, entry: Any, metadata: ClientMetadata,
                          template: str) -> dict[str, Any]:
        """Names and values for the template file ``template`` rendering ``entry``."""


class PropertyFiles:
    """Serves property files to templates (Properties); lets the tools look at them."""

    @abstractmethod
    def list_property_files(self) -> list[str]:
        """Names of the property files (relative to the plugin's directory), sorted."""

    @abstractmethod
    def match_property_file(self, name: str,
                            metadata: ClientMetadata) -> tuple[lxml.etree._Element, bool]:
        """An XML property file with its Group/Client conditionals resolved for a client,
        and whether templates get it that way (automatch).

        An unknown file, one that is not XML or one never read successfully is
        a PluginExecutionError saying so.
        """


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


@dataclass(frozen=True)
class SourceInfo:
    """What the tools show of one package source as it applies to a client."""

    name: str
    #: apt, yum, pac or pkgng
    type: str
    url: str
    version: str = ""
    components: tuple[str, ...] = ()
    #: the architecture the client gets from it
    arch: str = ""
    gpgkeys: tuple[str, ...] = ()
    #: packages in its index now in service (0: none yet)
    packages: int = 0
    #: the last error fetching or reading its index (an older one may be in service), or None
    error: str | None = None


@dataclass(frozen=True)
class Resolution:
    """What dependency resolution made of a client's packages (``bcfg2-info packageresolve``)."""

    #: the packages resolution started from (bundles, groups, Essential), sorted
    initial: tuple[str, ...] = ()
    #: the packages it added, sorted
    added: tuple[str, ...] = ()
    #: names no source of the client knows, sorted
    unknown: tuple[str, ...] = ()


class PackageSources:
    """Knows package sources and resolves package dependencies (for the tools).

    Only queries: the work itself happens through the plugin's other
    interfaces (StructureValidator, Generator).
    """

    def package_sources(self, metadata: ClientMetadata) -> list[SourceInfo]:
        """The sources that apply to a client, in the order they are consulted."""
        return []

    def resolve_packages(self, metadata: ClientMetadata,
                         names: list[str] | None = None) -> Resolution:
        """Resolve ``names`` (None: the client's own packages) for a client."""
        return Resolution()

    def knows_package(self, name: str) -> bool | None:
        """Whether any source offers a package by this name; None when no index is loaded."""
        return None


class Caching:
    """Keeps a cache that must be expired when data changes."""

    @abstractmethod
    def expire_cache(self, key: str | None = None) -> None:
        """Expire the cache for one client name, or all of it."""


INTERFACES: tuple[type, ...] = (
    Generator, Structure, Metadata, Connector, PropertyFiles, Probing, Statistics,
    ThreadedStatistics, Decision, StructureValidator, GoalValidator, Version, ClientRunHooks,
    ClientACLs, Caching, PackageSources, TemplateDataProvider,
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

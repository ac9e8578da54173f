"""ClientMetadata: what plugins and templates know about one client."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any


class MetadataQuery:
    """Lets templates ask about other clients (``metadata.query``)."""

    def __init__(
        self,
        by_name: Callable[[str], ClientMetadata] | None = None,
        names_by_groups: Callable[[Iterable[str]], list[str]] | None = None,
        names_by_profiles: Callable[[Iterable[str]], list[str]] | None = None,
        all_clients: Callable[[], list[str]] | None = None,
        all_groups: Callable[[], list[str]] | None = None,
        all_groups_in_category: Callable[[str], list[str]] | None = None,
        all_connectors: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.by_name = by_name
        self.names_by_groups = names_by_groups
        self.names_by_profiles = names_by_profiles
        self.all_clients = all_clients
        self.all_groups = all_groups
        self.all_groups_in_category = all_groups_in_category
        #: names of the Connector plugins the server runs
        self.all_connectors = all_connectors

    def by_groups(self, groups: Iterable[str]) -> list[ClientMetadata]:
        return [self.by_name(name) for name in self.names_by_groups(groups)]

    def by_profiles(self, profiles: Iterable[str]) -> list[ClientMetadata]:
        return [self.by_name(name) for name in self.names_by_profiles(profiles)]

    def all(self) -> list[ClientMetadata]:
        return [self.by_name(name) for name in self.all_clients()]


class ClientMetadata:
    """Hostname, profile, groups, bundles and everything plugins add.

    Connector plugins add data under their own name: ``metadata.Probes``,
    ``metadata.Properties``...; their names are listed in ``connectors``.
    A connector the server runs that has merged nothing yet (while the
    connectors' groups are gathered) reads as ``{}``, as upstream templates
    expect; any other missing attribute, a misspelt ``metadata.Probse``, is
    an AttributeError, so the template using it fails instead of rendering "".
    """

    def __init__(
        self,
        client: str,
        profile: str,
        groups: Iterable[str],
        bundles: Iterable[str],
        aliases: Iterable[str],
        addresses: Iterable[str],
        categories: dict[str, str],
        uuid: str | None,
        password: str | None,
        version: str | None,
        query: MetadataQuery,
    ) -> None:
        self.hostname = client
        self.profile = profile
        self.groups = set(groups)
        self.bundles = set(bundles)
        self.aliases = set(aliases)
        self.addresses = set(addresses)
        self.categories = dict(categories)
        self.uuid = uuid
        self.password = password
        self.version = version
        self.query = query
        self.connectors: list[str] = []
        #: groups added by Connector plugins (probes, patterns...)
        self.additional_groups: set[str] = set()
        self.version_info: tuple[int, ...] | None = _version_tuple(version)

    def inGroup(self, group: str) -> bool:  # noqa: N802 - upstream name
        """True if the client is a member of the group."""
        return group in self.groups

    def agent_older_than(self, version: tuple[int, ...]) -> bool:
        """Whether the agent declared no version, or one before ``version`` (a pre-release
        of ``version`` itself counts as that version)."""
        return self.version_info is None or self.version_info < version

    def group_in_category(self, category: str) -> str:
        """The client's group in the category, or ''."""
        return self.categories.get(category, "")

    def copy(self) -> ClientMetadata:
        """A copy that can be extended without touching the original."""
        new = copy.copy(self)
        new.groups = set(self.groups)
        new.bundles = set(self.bundles)
        new.aliases = set(self.aliases)
        new.addresses = set(self.addresses)
        new.categories = dict(self.categories)
        new.connectors = list(self.connectors)
        new.additional_groups = set(self.additional_groups)
        return new

    def __repr__(self) -> str:
        return f"ClientMetadata({self.hostname!r}, profile={self.profile!r})"

    def __getattr__(self, name: str) -> Any:
        # only called for what is not an attribute; vars() keeps a half-built copy from recursing
        query = vars(self).get("query")
        connectors = getattr(query, "all_connectors", None)
        if connectors is not None and name[:1].isupper() and name in connectors():
            return {}
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}",
                             name=name, obj=self)


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = []
    for piece in version.replace("pre", ".").replace("rc", ".").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None

"""Every exception the server raises on purpose, in one place.

::

    Bcfg2Error
    +-- ConfigError               bcfg2.conf or the command line is wrong
    +-- CoreInitError             the server core cannot start
    +-- NoExposedMethod           an XML-RPC call names no exposed method
    +-- PluginInitError           a plugin cannot be set up
    +-- PluginExecutionError      a plugin failed while serving a request
    |   +-- SpecificityError      two candidates are equally specific
    |   +-- ValidationError       a validator refused a configuration
    +-- MetadataConsistencyError  client or group data contradicts itself
    +-- MetadataRuntimeError      the metadata system cannot answer now
    +-- RepositoryError           a repository file cannot be used
    |   +-- TemplateSyntaxError   a template does not compile (file, line, reason)
    +-- UntrustedInputError       data from the network was refused
"""

from __future__ import annotations


class Bcfg2Error(Exception):
    """Base of every exception raised on purpose by the server."""


class ConfigError(Bcfg2Error):
    """bcfg2.conf or the command line holds a missing or invalid value."""


class CoreInitError(Bcfg2Error):
    """The server core cannot be initialised."""


class NoExposedMethod(Bcfg2Error):
    """An XML-RPC call names a method that is not exposed."""


class PluginInitError(Bcfg2Error):
    """A plugin cannot be initialised."""


class PluginExecutionError(Bcfg2Error):
    """A plugin failed while it served a request."""


class SpecificityError(PluginExecutionError):
    """Two candidate files or entries match a client equally well."""


class ValidationError(PluginExecutionError):
    """A StructureValidator or GoalValidator refused a configuration."""


class MetadataConsistencyError(Bcfg2Error):
    """Client or group data is inconsistent (unknown client, bad profile...)."""


class MetadataRuntimeError(Bcfg2Error):
    """The metadata system cannot answer right now."""


class RepositoryError(Bcfg2Error):
    """A repository file cannot be parsed or used."""


class TemplateSyntaxError(RepositoryError):
    """A Genshi or Jinja2 template does not compile; ``line`` is None when unknown."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line if line is not None and line > 0 else None
        self.reason = reason
        where = path if self.line is None else f"{path}:{self.line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, int | None, str]]:
        return (type(self), (self.path, self.line, self.reason))


class UntrustedInputError(Bcfg2Error):
    """Data received from the network was refused (malformed or hostile)."""

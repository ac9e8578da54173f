"""Every exception the server raises on purpose, in one place, with its fault code.

::

    Bcfg2Error                        fault 1: any other error inside a method
    +-- ConfigError                   bcfg2.conf or the command line is wrong
    +-- CoreInitError                 the server core cannot start
    +-- RequestError                  an XML-RPC request that cannot be served
    |   +-- MalformedRequest    -32700  the body is not well-formed XML-RPC (or has a DTD)
    |   +-- NoExposedMethod     -32601  no such method ("Unknown method X")
    |   +-- InvalidParams       -32602  wrong number or kind of parameters
    |   +-- AccessDenied        -32403  the caller may not call the method
    |   +-- CriticalError       -32500  a method failed for the reason in the message
    +-- PluginInitError               a plugin cannot be set up
    +-- PluginExecutionError          a plugin failed while serving a request
    |   +-- SpecificityError          two candidates are equally specific
    |   +-- ValidationError           a validator refused a configuration
    +-- MetadataConsistencyError      client or group data contradicts itself
    +-- MetadataRuntimeError          the metadata system cannot answer now
    +-- RepositoryError               a repository file cannot be used
    |   +-- TemplateSyntaxError       a template does not compile (file, line, reason)
    |   +-- DecryptionError           encrypted data no passphrase decrypts (or tampered)
    +-- UntrustedInputError           data from the network was refused
    +-- StorageError                  the run-time state database failed (bcfg2.storage)
        +-- CommitUncertainError      the connection was lost during COMMIT: outcome unknown
        +-- SchemaTooNewError         the database was migrated by a newer server

The codes are stable: agents and admin tools may rely on them. Each class
carries its ``fault_code``; ``bcfg2.xmlrpc.fault_for`` is the one place that
turns an error into an XML-RPC Fault.
"""

from __future__ import annotations

#: fault codes, as on the tree above
PARSE_ERROR = -32700
UNKNOWN_METHOD = -32601
INVALID_PARAMS = -32602
ACCESS_DENIED = -32403
APPLICATION_ERROR = -32500
GENERIC_ERROR = 1


class Bcfg2Error(Exception):
    """Base of every exception raised on purpose by the server."""

    fault_code = GENERIC_ERROR


class ConfigError(Bcfg2Error):
    """bcfg2.conf or the command line holds a missing or invalid value."""


class CoreInitError(Bcfg2Error):
    """The server core cannot be initialised."""


class RequestError(Bcfg2Error):
    """An XML-RPC request that cannot be served; the message goes to the caller."""


class MalformedRequest(RequestError):
    """The request body is not a well-formed XML-RPC call, or declares a DTD or entity."""

    fault_code = PARSE_ERROR


class NoExposedMethod(RequestError):
    """An XML-RPC call names a method that is not exposed."""

    fault_code = UNKNOWN_METHOD

    def __init__(self, method: str) -> None:
        super().__init__(f"Unknown method {method}")
        self.method = method


class InvalidParams(RequestError):
    """An XML-RPC call has the wrong number or kind of parameters."""

    fault_code = INVALID_PARAMS


class AccessDenied(RequestError):
    """The caller's identity (or an ACL) does not allow it to call the method."""

    fault_code = ACCESS_DENIED


class CriticalError(RequestError):
    """A method failed; the message (prefixed "Critical failure:") tells the caller why."""

    fault_code = APPLICATION_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(f"Critical failure: {message}")


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


class DecryptionError(RepositoryError):
    """Encrypted data that cannot be decrypted: no such passphrase, a wrong one, or tampering."""


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


class StorageError(Bcfg2Error):
    """The run-time state database failed; the transaction was rolled back, nothing stored."""


class CommitUncertainError(StorageError):
    """The connection was lost while COMMIT was on its way: the change may or may not be
    stored. Never retried, never acknowledged: the caller must send it again."""


class SchemaTooNewError(StorageError):
    """The database holds a schema version newer than this server knows how to use."""

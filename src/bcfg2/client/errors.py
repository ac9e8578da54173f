"""Every error that ends an agent run, each printed as one line.

::

    AgentError                    the run cannot go on (exit status 1)
    +-- LockedError               another run holds the lock file
    +-- ProbeError                a probe failed and [client] exit_on_probe_failure is on
    +-- ConfigurationError        the configuration cannot be read (-f file, server answer)
    +-- ServerError               talking to the server failed
        +-- Unreachable           no connection after every retry (refused, timed out...)
        +-- CertificateRefused    the server's certificate is not trusted, or TLS refused
        +-- AuthenticationRefused the server answered 401: wrong user, password or cert
        +-- ServerFault           the server answered a call with an XML-RPC Fault
        +-- ProtocolError         an answer that is no XML-RPC response
"""

from __future__ import annotations


class AgentError(Exception):
    """The run cannot go on; the message is one line for the terminal and the log."""


class LockedError(AgentError):
    """Another agent run holds the lock file."""


class ProbeError(AgentError):
    """A probe failed and the run stops for it."""


class ConfigurationError(AgentError):
    """The configuration to apply cannot be read."""


class ServerError(AgentError):
    """Talking to the server failed."""


class Unreachable(ServerError):
    """No connection to the server after every retry."""


class CertificateRefused(ServerError):
    """The TLS handshake failed: the server's certificate is not trusted, or ours refused."""


class AuthenticationRefused(ServerError):
    """The server refused our credentials (HTTP 401)."""


class ServerFault(ServerError):
    """The server answered a call with an XML-RPC Fault."""

    def __init__(self, method: str, code: int, text: str) -> None:
        super().__init__(f"the server refused {method}: {text} (fault {code})")
        self.method = method
        self.code = code
        self.text = text


class ProtocolError(ServerError):
    """An answer that is not an XML-RPC response."""

"""What every network core shares: request parsing, dispatch, faults, responses.

A network core turns bytes into ``dispatch(core, method, params, address)``
and the result back into bytes; everything below (TLS, HTTP, processes) is
the core's own.

Fault codes (stable; agents and admin tools may rely on them):

======  =============================================================
 code   meaning
======  =============================================================
 -32700  the request body is not well-formed XML-RPC (or has a DTD)
 -32601  no such method ("Unknown method X")
 -32602  wrong number or kind of parameters
 -32500  a method failed for a reason given in the message
      1  any other error inside a method (or the exception's fault_code)
======  =============================================================
"""

from __future__ import annotations

import base64
import binascii
import inspect
import xmlrpc.client
from typing import TYPE_CHECKING, Any
from xml.parsers.expat import ExpatError

import lxml.etree

from bcfg2.errors import NoExposedMethod, UntrustedInputError
from bcfg2.xml import tostring

if TYPE_CHECKING:
    from bcfg2.core import Core, NetworkCore

PARSE_ERROR = -32700
UNKNOWN_METHOD = -32601
INVALID_PARAMS = -32602
APPLICATION_ERROR = -32500
GENERIC_ERROR = 1


class RefusedXML(ValueError):
    """A request declared a DTD or an entity: refused, never expanded."""


class HardenedParser(xmlrpc.client.ExpatParser):
    """The stdlib XML-RPC parser with every DTD and entity declaration refused.

    (defusedxml.xmlrpc does the same, but imports xmlrpc.server and pydoc,
    megabytes of memory for a monkey patch we do not use.)
    """

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        expat = self._parser
        expat.StartDoctypeDeclHandler = self._refuse("a DTD")
        expat.EntityDeclHandler = self._refuse("an entity declaration")
        expat.UnparsedEntityDeclHandler = self._refuse("an entity declaration")
        expat.ExternalEntityRefHandler = self._refuse("an external entity")

    @staticmethod
    def _refuse(what: str) -> Any:
        def handler(*args: Any) -> None:
            raise RefusedXML(f"{what} is not allowed")
        return handler


def parse_request(body: bytes) -> tuple[tuple[Any, ...], str]:
    """The params and method name of an XML-RPC request; no DTDs or entities."""
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = HardenedParser(unmarshaller)
    try:
        parser.feed(body)
        parser.close()
        params = unmarshaller.close()
    except RefusedXML as err:
        raise UntrustedInputError(f"XML-RPC request refused: {err}") from None
    except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError,
            IndexError, KeyError, AttributeError) as err:
        raise UntrustedInputError(f"malformed XML-RPC request: {err}") from None
    method = unmarshaller.getmethodname()
    if not method:
        raise UntrustedInputError("malformed XML-RPC request: no method name")
    return tuple(params), method


def resolve(core: Core, method: str) -> tuple[Any, bool]:
    """The callable for a method name and whether the address is prepended."""
    name = method[len("system."):] if method.startswith("system.") else method
    if "." not in name:
        func = core.exposed_methods().get(name)
        if func is not None:
            return func, True
    func = core.rmi.get(method)
    if func is not None:
        return func, False
    raise NoExposedMethod(method)


def dispatch(core: Core, method: str, params: tuple[Any, ...],
             address: tuple[str, int]) -> Any:
    """Call a method; every failure comes out as an xmlrpc.client.Fault."""
    try:
        func, with_address = resolve(core, method)
    except NoExposedMethod:
        raise xmlrpc.client.Fault(UNKNOWN_METHOD, f"Unknown method {method}") from None
    args = (address, *params) if with_address else params
    try:
        inspect.signature(func).bind(*args)
    except TypeError as err:
        raise xmlrpc.client.Fault(INVALID_PARAMS, f"{method}: {err}") from None
    try:
        return func(*args)
    except xmlrpc.client.Fault:
        raise
    except Exception as err:
        core.logger.exception("%s failed", method)
        raise xmlrpc.client.Fault(getattr(err, "fault_code", GENERIC_ERROR), str(err)) from None


def marshal(value: Any) -> Any:
    """Make a result marshallable: XML documents travel as strings."""
    if isinstance(value, lxml.etree._Element):
        return tostring(value)
    if isinstance(value, (list, tuple)):
        return [marshal(item) for item in value]
    if isinstance(value, dict):
        return {str(key): marshal(item) for key, item in value.items()}
    return value


def response(result: Any) -> bytes:
    """An XML-RPC method response."""
    return xmlrpc.client.dumps((marshal(result),), methodresponse=True, allow_none=True,
                               encoding="utf-8").encode("utf-8")


def fault_response(fault: xmlrpc.client.Fault) -> bytes:
    """An XML-RPC fault response."""
    return xmlrpc.client.dumps(fault, methodresponse=True, allow_none=True,
                               encoding="utf-8").encode("utf-8")


def parse_basic_auth(header: str | None) -> tuple[str, str]:
    """User and password of an HTTP basic Authorization header ('' if absent).

    The credentials are split at the first colon; without one, the whole
    value is the user and the password is empty (as upstream agents expect).
    """
    if not header:
        return "", ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def serve(core: NetworkCore, body: bytes, address: tuple[str, int], cert: dict | None,
          user: str, password: str) -> tuple[int, bytes]:
    """Authenticate, parse, check ACLs and dispatch one request body.

    Returns the HTTP status and the response body: 401 with an empty body
    when authentication or an ACL refuses the call, otherwise 200 with a
    method response or a fault.
    """
    if not core.authenticate(cert, user, password, address):
        return 401, b""
    return respond(core, body, address)


def respond(core: NetworkCore, body: bytes, address: tuple[str, int]) -> tuple[int, bytes]:
    """Parse, check ACLs and dispatch the body of an authenticated request."""
    try:
        params, method = parse_request(body)
    except UntrustedInputError as err:
        core.logger.warning("Refused request from %s: %s", address[0], err)
        return 200, fault_response(xmlrpc.client.Fault(PARSE_ERROR, str(err)))
    if not core.check_acls(address, method):
        core.logger.warning("Client %s failed ACL check for %s", address[0], method)
        return 401, b""
    try:
        return 200, response(dispatch(core, method, params, address))
    except xmlrpc.client.Fault as fault:
        return 200, fault_response(fault)

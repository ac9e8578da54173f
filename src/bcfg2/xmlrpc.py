"""The one door between transport and core: ``authenticate`` then ``handle``.

A network core turns bytes into a ``Request`` (the body, the peer's address
and certificate, the basic-auth credentials) and a ``Result`` back into
bytes; HTTP status codes stay in the cores. Everything in between is here,
once: authentication (which yields the caller's identity, and is throttled
per source), the method's one canonical name, the access check, dispatch
with the caller prepended, and turning errors into Faults (``fault_for``;
the codes are on the error tree in ``bcfg2.errors``). A core authenticates
from the headers before it reads a body, so nobody unauthenticated makes
the server read megabytes; ``handle(core, request)`` alone does both steps.
Request bodies are parsed with DTDs and entities refused, and nested no
deeper than ``MAX_XML_DEPTH``.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
import threading
import time
import weakref
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.parsers.expat import ExpatError

import lxml.etree

from bcfg2 import configcache, metrics
from bcfg2.errors import (
    GENERIC_ERROR,
    AccessDenied,
    Bcfg2Error,
    CriticalError,
    InvalidParams,
    MalformedRequest,
    NoExposedMethod,
    RequestError,
)
from bcfg2.limits import AuthThrottle
from bcfg2.untrusted import escaped
from bcfg2.xml import tostring

if TYPE_CHECKING:
    from bcfg2.core import NetworkCore
    from bcfg2.identity import Caller

logger = logging.getLogger("bcfg2.xmlrpc")

#: introspection methods also accepted with upstream's ``system.`` prefix
INTROSPECTION = frozenset({"listMethods", "methodHelp", "methodSignature"})
#: longest method name accepted (logged and matched against ACLs)
MAX_METHOD_NAME = 128
#: deepest element nesting of a request: an array or struct costs three levels, so about
#: 80 nested containers (agents send a few), far from what recursion in the server risks
MAX_XML_DEPTH = 256


class RefusedXML(ValueError):
    """A request declared a DTD or an entity, or nests too deep: refused, never expanded."""


class HardenedParser(xmlrpc.client.ExpatParser):
    """The stdlib XML-RPC parser with every DTD and entity declaration refused, depth bounded.

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
        # text in large pieces: unbuffered, every entity splits a string into one more
        # object (a 9 MB escaped document became a list of a million)
        expat.buffer_text = True
        expat.buffer_size = 1 << 16
        start, end = expat.StartElementHandler, expat.EndElementHandler
        self.depth = 0

        def enter(tag: str, attrs: Any) -> None:
            self.depth += 1
            if self.depth > MAX_XML_DEPTH:
                raise RefusedXML(f"elements nested deeper than {MAX_XML_DEPTH}")
            start(tag, attrs)

        def leave(tag: str) -> None:
            self.depth -= 1
            end(tag)

        expat.StartElementHandler, expat.EndElementHandler = enter, leave

    @staticmethod
    def _refuse(what: str) -> Any:
        def handler(*args: Any) -> None:
            raise RefusedXML(f"{what} is not allowed")
        return handler


@dataclass(frozen=True)
class Request:
    """One XML-RPC call as a transport received it."""

    body: bytes
    address: tuple[str, int]
    cert: dict[str, Any] | None = None
    user: str = ""
    password: str = ""


def _around_a_string() -> tuple[bytes, bytes]:
    """What xmlrpc.client writes before and after the escaped text of a string result."""
    document = xmlrpc.client.dumps(("",), methodresponse=True, allow_none=True,
                                   encoding="utf-8").encode("utf-8")
    head, _, tail = document.partition(b"<string></string>")
    return head + b"<string>", b"</string>" + tail


_HEAD, _TAIL = _around_a_string()
#: the same as gzip members: a gzip stream may hold several, read as one (RFC 1952)
_HEAD_GZIP, _TAIL_GZIP = configcache.gzip_member(_HEAD), configcache.gzip_member(_TAIL)


@dataclass(frozen=True)
class Result:
    """What the transport sends back: a method response, a fault, or a refusal.

    ``body`` is the XML-RPC response document for ``ok`` and ``fault``; for
    ``unauthorized`` it is empty and the transport answers with its own
    challenge (HTTP 401). A ``configcache.Packed`` result keeps its gzip member in
    ``packed`` instead: ``content`` gives the document either way.
    """

    outcome: str  # "ok", "fault" or "unauthorized"
    body: bytes = b""
    #: the fault's code, for a fault
    code: int | None = None
    #: a ``configcache.Packed`` result's gzip member (``body`` is then empty)
    packed: bytes | None = None

    @property
    def unauthorized(self) -> bool:
        return self.outcome == "unauthorized"

    def content(self, gzip: bool = False) -> tuple[bytes, str | None]:
        """(the response document, its content coding or None): gzip-coded only when the
        caller accepts it (``accepts_gzip``) and the result was Packed."""
        if self.packed is None:
            return self.body, None
        if gzip:
            return _HEAD_GZIP + self.packed + _TAIL_GZIP, "gzip"
        return _HEAD + configcache.inflate(self.packed) + _TAIL, None


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header accepts gzip (RFC 9110: a coding with q > 0)."""
    if not header or len(header) > 1024:
        return False
    for item in header.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        quality = params.strip().lower()
        if not quality.startswith("q="):
            return True
        try:
            return float(quality[2:]) > 0
        except ValueError:
            return False
    return False


UNAUTHORIZED = Result("unauthorized")


def parse_request(body: bytes) -> tuple[tuple[Any, ...], str]:
    """The params and method name of an XML-RPC request; no DTDs or entities."""
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = HardenedParser(unmarshaller)
    try:
        parser.feed(body)
        parser.close()
        params = unmarshaller.close()
    except RefusedXML as err:
        raise MalformedRequest(f"XML-RPC request refused: {err}") from None
    except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError,
            IndexError, KeyError, AttributeError) as err:
        raise MalformedRequest(f"malformed XML-RPC request: {err}") from None
    method = unmarshaller.getmethodname()
    if not method:
        raise MalformedRequest("malformed XML-RPC request: no method name")
    return tuple(params), method


def canonical_name(method: str) -> str:
    """The one name a method is dispatched, checked and logged by.

    ``system.`` is accepted only before the introspection methods, as
    upstream accepts it; any other name is taken as it is, so
    ``system.AssertProfile`` names no method at all.
    """
    if len(method) > MAX_METHOD_NAME:
        raise NoExposedMethod(f"{method[:MAX_METHOD_NAME]!r}...")
    prefix, _, rest = method.partition(".")
    if prefix == "system" and rest in INTROSPECTION:
        return rest
    return method


def lookup(core: NetworkCore, method: str) -> tuple[Callable[..., Any], bool]:
    """The callable for a canonical method name and whether the caller is prepended.

    The core's own methods get the caller's address first, as upstream
    passes it; plugin RMI (``Plugin.method``) gets only the parameters.
    """
    if "." not in method:
        func = core.exposed_methods().get(method)
        if func is not None:
            return func, True
    func = core.rmi.get(method)
    if func is not None:
        return func, False
    raise NoExposedMethod(method)


def fault_for(err: BaseException) -> xmlrpc.client.Fault:
    """The one place an error becomes an XML-RPC Fault (codes in ``bcfg2.errors``)."""
    if isinstance(err, xmlrpc.client.Fault):
        return err
    code = err.fault_code if isinstance(err, Bcfg2Error) else GENERIC_ERROR
    return xmlrpc.client.Fault(code, str(err))


def marshal(value: Any) -> Any:
    """Make a result marshallable: XML documents travel as strings."""
    if isinstance(value, lxml.etree._Element):
        return tostring(value)
    if isinstance(value, (list, tuple)):
        return [marshal(item) for item in value]
    if isinstance(value, dict):
        return {str(key): marshal(item) for key, item in value.items()}
    return value


#: what marshalling raises for a result XML-RPC cannot carry (too deep, an int over 32 bits,
#: an object of no XML-RPC type)
UNMARSHALLABLE = (TypeError, OverflowError, RecursionError, ValueError)


def response(result: Any) -> bytes:
    """An XML-RPC method response (raises one of ``UNMARSHALLABLE`` if it cannot be one)."""
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


def call(func: Callable[..., Any], with_caller: bool, caller: Any, method: str,
         params: tuple[Any, ...]) -> Any:
    """Call what ``lookup`` found with the request's parameters; errors as raised."""
    args = (caller, *params) if with_caller else params
    try:
        inspect.signature(func).bind(*args)
    except TypeError as err:
        raise InvalidParams(f"{method}: {err}") from None
    return func(*args)


_throttles: weakref.WeakKeyDictionary[Any, AuthThrottle] = weakref.WeakKeyDictionary()
_throttles_lock = threading.Lock()


def throttle_for(core: NetworkCore) -> AuthThrottle:
    """The failed-authentication throttle of a core, made from its ``[server]`` options."""
    with _throttles_lock:
        throttle = _throttles.get(core)
        if throttle is None:
            server = core.setup.server
            throttle = _throttles[core] = AuthThrottle(
                server.auth_failure_limit, server.auth_failure_backoff, logger)
        return throttle


def forget_throttle(core: NetworkCore) -> None:
    """Drop a stopping core's throttle, logging the summaries of its open bursts now."""
    with _throttles_lock:
        throttle = _throttles.pop(core, None)
    if throttle is not None:
        throttle.log.flush()


def authenticate(core: NetworkCore, request: Request) -> Caller | None:
    """Who is calling, from credentials, certificate and address alone; None if refused.

    The body is not looked at, so a core calls this before reading it. A
    source past ``[server] auth_failure_limit`` is refused unchecked; each
    failure is logged once per burst (``bcfg2.limits.AuthThrottle``).
    """
    throttle = throttle_for(core)
    ip = request.address[0]
    if throttle.refused(ip):
        metrics.unauthorized()
        return None
    caller = core.authenticate(request.cert, request.user, request.password, request.address)
    if caller is None:
        throttle.failed(ip, request.user)
        metrics.unauthorized()
    return caller


def handle(core: NetworkCore, request: Request, caller: Caller | None = None) -> Result:
    """Parse, check access and dispatch one request of ``caller`` (authenticated here if None)."""
    if caller is None:
        caller = authenticate(core, request)
        if caller is None:
            return UNAUTHORIZED
    start = time.monotonic()
    method, result = _dispatch(core, request, caller)
    metrics.request(core, method, result.outcome, result.code, time.monotonic() - start)
    return result


def _fault(fault: xmlrpc.client.Fault) -> Result:
    return Result("fault", fault_response(fault), fault.faultCode)


def _dispatch(core: NetworkCore, request: Request, caller: Caller) -> tuple[str, Result]:
    """The method a request names (once looked up; '' before) and its result."""
    ip = request.address[0]
    method = found = ""
    try:
        params, raw_name = parse_request(request.body)
        method = canonical_name(raw_name)
        func, with_caller = lookup(core, method)
        found = method
        if not core.check_acls(caller, method):
            raise AccessDenied(f"{caller.client or caller.admin} may not call {method}")
        result = call(func, with_caller, caller, method, params)
    except RequestError as err:
        if not isinstance(err, CriticalError):  # critical errors are logged where raised
            logger.warning("Refused request from %s: %s", ip, escaped(str(err)))
        return found, _fault(fault_for(err))
    except xmlrpc.client.Fault as fault:
        return found, _fault(fault)
    except RecursionError:  # a traceback thousands of frames deep would tell nothing more
        logger.error("%s failed for %s: its parameters nest too deep", method, ip)
        return found, _fault(fault_for(CriticalError(f"{method}: parameters nested too deep")))
    except Exception as err:
        logger.exception("%s failed for %s", method, ip)
        if not isinstance(err, Bcfg2Error):
            # not an error we raised for the caller: its text may name the server's files
            err = CriticalError(f"{method} failed on the server ({type(err).__name__}); "
                                f"the server's log says why")
        return found, _fault(fault_for(err))
    if isinstance(result, configcache.Packed):
        return found, Result("ok", packed=result.member)
    try:
        return found, Result("ok", response(result))
    except UNMARSHALLABLE as err:  # a method returned what XML-RPC cannot carry
        what = "nests too deep" if isinstance(err, RecursionError) else escaped(str(err), 200)
        logger.error("%s for %s returned a result that cannot be sent: %s", method, ip, what)
        return found, _fault(fault_for(CriticalError(
            f"{method} returned a result XML-RPC cannot carry: {what}")))


__all__ = ["Request", "Result", "accepts_gzip", "authenticate", "call", "canonical_name", "fault_for",
           "forget_throttle", "handle", "parse_basic_auth", "parse_request", "throttle_for"]

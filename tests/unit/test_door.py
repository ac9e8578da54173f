"""The one door, without a transport: every outcome of xmlrpc.handle and its fault codes."""

from __future__ import annotations

import gzip
import logging
import xmlrpc.client

import pytest

from bcfg2 import xmlrpc as door
from bcfg2.configcache import Packed, compress
from bcfg2.errors import (
    ACCESS_DENIED,
    APPLICATION_ERROR,
    INVALID_PARAMS,
    PARSE_ERROR,
    UNKNOWN_METHOD,
)
from bcfg2.plugin import Plugin, exposed

ADMIN = ("admin", "s3cret")
AGENT = ("uuid-client1", "pw1")


class Odd(Plugin):
    """A plugin whose RMI returns what XML-RPC cannot carry."""

    @exposed
    def unmarshallable(self) -> object:
        return object()

    @exposed
    def too_big(self) -> int:
        return 2**40

    @exposed
    def too_deep(self) -> list:
        nested: list = []
        for _ in range(5000):
            nested = [nested]
        return nested

    @exposed
    def recurses(self, value: object) -> int:
        """The depth of a nested value, in Python: deep enough, a RecursionError.

        (repr() is no test of it: Python 3.13's C code nests far deeper.)
        """

        def depth(item: object) -> int:
            return 1 + max(map(depth, item), default=0) if isinstance(item, list) else 0

        return depth(value)


@pytest.fixture
def core(repo, local_core, register):
    register(Odd)
    core = local_core(repo, server__plugins="Metadata,Bundler,Odd",
                      communication__admin_user=ADMIN[0],
                      communication__admin_password=ADMIN[1],
                      server__auth_failure_limit=3)
    yield core
    door.forget_throttle(core)  # its failures' summary is logged now, not after the test


def call(core, credentials, method: str, *params, body: bytes | None = None) -> door.Result:
    body = body if body is not None else xmlrpc.client.dumps(params, method).encode()
    return door.handle(core, door.Request(body, ("127.0.0.1", 40000), None, *credentials))


def fault_code(result: door.Result) -> int:
    assert result.outcome == "fault"
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(result.body)
    return info.value.faultCode


def test_an_unknown_caller_is_unauthorized(core):
    assert call(core, ("uuid-client1", "wrong"), "GetProbes").unauthorized
    assert call(core, ("admin", "wrong"), "listMethods").unauthorized


def test_each_refusal_has_its_fault_code(core):
    assert fault_code(call(core, AGENT, "", body=b"<methodCall><methodName>x")) == PARSE_ERROR
    assert fault_code(call(core, AGENT, "NoSuchMethod")) == UNKNOWN_METHOD
    assert fault_code(call(core, AGENT, "system.GetConfig")) == UNKNOWN_METHOD
    assert fault_code(call(core, AGENT, "x" * 500)) == UNKNOWN_METHOD
    assert fault_code(call(core, AGENT, "GetConfig", "extra")) == INVALID_PARAMS
    assert fault_code(call(core, AGENT, "Odd.unmarshallable")) == ACCESS_DENIED


def test_a_result_that_cannot_be_marshalled_is_a_fault_not_a_broken_response(core, caplog):
    for method in ("Odd.unmarshallable", "Odd.too_big", "Odd.too_deep"):
        assert fault_code(call(core, ADMIN, method)) == APPLICATION_ERROR
    assert not [r for r in caplog.records if r.exc_info], "one line each, no traceback"


def nested(depth: int) -> bytes:
    value = "<value><array><data>" * depth + "<value><int>1</int></value>" \
        + "</data></array></value>" * depth
    return (f"<methodCall><methodName>Odd.recurses</methodName><params><param>{value}"
            f"</param></params></methodCall>").encode()


def test_parameters_nested_too_deep_are_refused_before_any_method_sees_them(core, caplog):
    assert fault_code(call(core, ADMIN, "", body=nested(door.MAX_XML_DEPTH))) == PARSE_ERROR
    assert fault_code(call(core, ADMIN, "", body=nested(100_000))) == PARSE_ERROR
    assert call(core, ADMIN, "", body=nested(50)).outcome == "ok"
    assert not [r for r in caplog.records if r.exc_info]


def test_a_method_that_recurses_too_deep_is_a_fault_without_a_traceback(core, caplog,
                                                                        monkeypatch):
    monkeypatch.setattr(door, "MAX_XML_DEPTH", 10**6)  # let a deep value reach the method
    assert fault_code(call(core, ADMIN, "", body=nested(5000))) == APPLICATION_ERROR
    assert not [r for r in caplog.records if r.exc_info]


def test_authentication_needs_no_body_and_its_caller_is_handed_on(core, monkeypatch):
    request = door.Request(b"", ("127.0.0.1", 40000), None, *AGENT)
    caller = door.authenticate(core, request)
    assert caller is not None and caller.client == "client1"
    assert door.authenticate(core, door.Request(b"", ("127.0.0.1", 1), None, "uuid-client1",
                                                "wrong")) is None
    monkeypatch.setattr(core, "authenticate", lambda *args: pytest.fail("authenticated twice"))
    body = xmlrpc.client.dumps((), "GetProbes").encode()
    result = door.handle(core, door.Request(body, ("127.0.0.1", 40000), None, *AGENT), caller)
    assert result.outcome == "ok"


def test_failed_authentications_are_throttled_per_source(core, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="bcfg2")
    checked = []
    authenticate = core.authenticate
    monkeypatch.setattr(core, "authenticate",
                        lambda *args: checked.append(args[3][0]) or authenticate(*args))

    def attempt(ip: str, password: str) -> bool:
        request = door.Request(b"", (ip, 40000), None, "uuid-client1", password)
        return door.authenticate(core, request) is not None

    for n in range(10):
        assert not attempt("192.0.2.9", f"guess-{n}")
    assert checked.count("192.0.2.9") == 3  # auth_failure_limit = 3
    assert not attempt("192.0.2.9", "pw1")  # the right password too, unchecked
    assert attempt("192.0.2.10", "pw1")  # another source is unaffected
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and "192.0.2.9" in r.getMessage()]
    assert len(warnings) == 2, warnings  # the burst's first failure, and the throttling


def test_an_ok_call_is_a_method_response(core):
    result = call(core, AGENT, "GetProbes")
    assert result.outcome == "ok"
    (probes,), _ = xmlrpc.client.loads(result.body)
    assert probes.startswith("<probes")


@pytest.mark.parametrize(("header", "accepted"), [
    ("gzip", True), ("gzip, deflate", True), ("deflate, GZIP", True), ("x-gzip", True),
    ("gzip;q=0.5", True), ("gzip; q=1", True),
    (None, False), ("", False), ("identity", False), ("gzip;q=0", False),
    ("gzip;q=0.0, identity", False), ("gzipped", False), ("deflate", False),
    ("gzip;q=lots", False), ("gzip, " * 300, False),  # too long to be read at all
])
def test_a_reply_is_gzip_coded_only_for_who_accepts_gzip(header, accepted) -> None:
    assert door.accepts_gzip(header) is accepted


def test_a_packed_result_is_the_same_document_coded_or_not() -> None:
    text = '<Configuration><Path name="/etc/a">x &amp; &lt;y&gt; \u00e9</Path></Configuration>'
    result = door.Result("ok", packed=Packed(compress(text)).member)
    plain, plain_coding = result.content(gzip=False)
    coded, coding = result.content(gzip=True)
    assert (plain_coding, coding) == (None, "gzip")
    assert plain == gzip.decompress(coded) == door.response(text)
    assert xmlrpc.client.loads(plain)[0][0] == text
    assert door.Result("ok", b"<body/>").content(gzip=True) == (b"<body/>", None)

"""The one door, without a transport: every outcome of xmlrpc.handle and its fault codes."""

from __future__ import annotations

import xmlrpc.client

import pytest

from bcfg2 import xmlrpc as door
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


@pytest.fixture
def core(repo, local_core, register):
    register(Odd)
    return local_core(repo, server__plugins="Metadata,Bundler,Odd",
                      communication__admin_user=ADMIN[0],
                      communication__admin_password=ADMIN[1])


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


def test_a_result_that_cannot_be_marshalled_is_a_fault_not_a_broken_response(core):
    assert fault_code(call(core, ADMIN, "Odd.unmarshallable")) == APPLICATION_ERROR


def test_an_ok_call_is_a_method_response(core):
    result = call(core, AGENT, "GetProbes")
    assert result.outcome == "ok"
    (probes,), _ = xmlrpc.client.loads(result.body)
    assert probes.startswith("<probes")

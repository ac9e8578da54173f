"""Connection patterns that must not stall the server, on every core.

Each test mounts one attack, asserts it fails, and asserts that a real
agent run completes meanwhile (``attack.assert_served``). Limits are set
small so the attacks stay quick; the attackers use 127.0.0.1 unless a test
needs a second source (127.0.0.2, 127.0.0.3).
"""

from __future__ import annotations

import http.client
import logging
import threading
import time

import pytest
from attack import AGENT_DEADLINE, assert_served, call_body, fault_of, raw_call, tls_socket
from conftest import ADMIN_PASSWORD, ADMIN_USER, WEB1, wait_until
from connattack import (
    OTHER,
    THIRD,
    FromSource,
    basic_auth,
    closed_by_server,
    closing,
    flood,
    nested_arrays,
    request_head,
    trickle,
)

from bcfg2.errors import APPLICATION_ERROR, PARSE_ERROR


def registry(server):
    """The server's ``bcfg2.connections.Connections`` (every core keeps it on its HTTP server)."""
    return server.core.server.connections


# -- caps ------------------------------------------------------------------------------

def test_an_idle_flood_is_capped_per_source_while_another_source_is_served(hostile, caplog):
    """60 idle connections from one source: 20 are kept, the rest closed at once, logged once."""
    server = hostile(server__max_connections_per_source=20)
    caplog.set_level(logging.WARNING, logger="bcfg2")
    with closing(flood(server.port, 60)) as idle:
        wait_until(lambda: sum(map(closed_by_server, idle)) == 40, 10,
                 "40 connections over the cap to be closed")
        assert registry(server).count("127.0.0.1") == 20
        assert_served(FromSource(server.port, server.tls, OTHER))
        assert sum(map(closed_by_server, idle)) == 40  # the 20 kept are still open
    refusals = [r for r in caplog.records if r.getMessage().startswith(
        "Refused a connection from 127.0.0.1")]
    assert len(refusals) == 1, "40 refusals of one burst make one log line"


def test_at_the_global_cap_no_source_starves_the_others(hostile):
    """Two flooding sources share the global cap evenly; a third still gets in."""
    server = hostile(server__max_connections=30, server__max_connections_per_source=20)
    conns = registry(server)
    with closing(flood(server.port, 30)) as first, \
            closing([]) as second:
        wait_until(lambda: conns.count("127.0.0.1") == 20, 10, "the first source at its cap")
        second.extend(flood(server.port, 30, THIRD))
        # the second source takes the first's places until both hold as many
        wait_until(lambda: conns.count(THIRD) == 15 and conns.count("127.0.0.1") == 15, 10,
                 "the two sources to hold 15 connections each")
        assert conns.total == 30
        assert_served(FromSource(server.port, server.tls, OTHER))
        assert conns.total <= 30
        assert len([s for s in first + second if not closed_by_server(s)]) <= 30


# -- the request deadline ----------------------------------------------------------------

def test_trickled_requests_are_cut_at_the_deadline_and_never_hold_up_an_agent(hostile):
    """40 slow clients (more than CherryPy's former 32 workers): silent, half a ClientHello,
    headers or a body a byte at a time; each is cut at the request deadline."""
    deadline = 1.5
    server = hostile(server__request_deadline=deadline)
    kinds = ["silent"] * 8 + ["hello"] * 7 + ["headers"] * 20 + ["body"] * 5
    results: list[float] = []
    stop = threading.Event()
    threads = [threading.Thread(target=trickle, args=(server, kind, 0.1, results, stop))
               for kind in kinds]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: registry(server).total >= len(kinds), 10, "every slow client to connect")
        assert_served(server)
        for thread in threads:
            thread.join(timeout=deadline + 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert len(results) == len(kinds), "a slow client was not cut"
    assert min(results) > deadline - 0.3, "a slow client was cut before the deadline"
    assert max(results) < deadline + 3, f"a slow client lasted {max(results):.1f}s"
    assert_served(server)


# -- authentication ---------------------------------------------------------------------

def test_password_guessing_is_throttled_per_source_and_logged_once_per_burst(hostile, caplog):
    """After 5 failures from 127.0.0.2 its attempts are refused unchecked, the right password
    too, until the back-off ends; 127.0.0.1 is served meanwhile."""
    server = hostile(server__auth_failure_limit=5, server__auth_failure_backoff=2)
    caplog.set_level(logging.INFO, logger="bcfg2")
    checked: list[str] = []
    authenticate = server.core.authenticate

    def counting(cert, user, password, address):
        checked.append(address[0])
        return authenticate(cert, user, password, address)

    server.core.authenticate = counting
    body = call_body("GetProbes")
    for guess in range(20):
        started = time.monotonic()
        assert raw_call(server, body, password=f"guess-{guess}", source=OTHER)[0] == 401
        assert time.monotonic() - started < 2
    assert checked.count(OTHER) == 5
    assert raw_call(server, body, source=OTHER)[0] == 401  # unchecked while throttled
    assert checked.count(OTHER) == 5
    assert_served(server)  # another source, the right password: unaffected
    lines = [r for r in caplog.records if "127.0.0.2" in r.getMessage()
             and r.levelno >= logging.WARNING]
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]
    wait_until(lambda: raw_call(server, body, source=OTHER)[0] == 200, 5,
             "127.0.0.2 to be served after its back-off")


def test_no_body_is_read_before_the_credentials_are_checked(hostile):
    """A POST announcing max_request_size bytes, with no or wrong credentials and no body,
    gets its 401 at once instead of the server waiting for the body."""
    server = hostile()
    limit = server.core.setup.server.max_request_size
    for auth in (None, basic_auth(WEB1[0], "not-the-password")):
        with tls_socket(server) as sock:
            started = time.monotonic()
            sock.sendall(request_head(limit, auth))
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            assert reply.status == 401
            assert time.monotonic() - started < 2  # connection_timeout is 30 s
        assert_served(server)


# -- what XML-RPC cannot carry -------------------------------------------------------------

@pytest.mark.parametrize("body, code", [
    (nested_arrays(0, "<value><i8>1099511627776</i8></value>"), APPLICATION_ERROR),
    (nested_arrays(900), PARSE_ERROR),
    (nested_arrays(100_000), PARSE_ERROR),
], ids=["int-2**40", "900-nested-arrays", "100k-nested-arrays"])
def test_what_xmlrpc_cannot_carry_is_a_fault_without_a_traceback(hostile, caplog, body, code):
    """ping echoes its arguments: an int beyond 32 bits cannot go back, nesting cannot come in."""
    server = hostile()
    caplog.set_level(logging.INFO, logger="bcfg2")
    started = time.monotonic()
    status, reply = raw_call(server, body, ADMIN_USER, ADMIN_PASSWORD)
    assert time.monotonic() - started < AGENT_DEADLINE
    assert status == 200
    fault = fault_of(reply)
    assert fault is not None and fault.faultCode == code
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert_served(server)

"""bcfg2.connections without a core: caps, fair eviction, the deadline, the accept loop's pause."""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest
from conftest import wait_until

from bcfg2 import connections as conns
from bcfg2.connections import AcceptLoop, Connections


@pytest.fixture
def pairs():
    """Factory of connected socket pairs (server side, client side); all closed after the test."""
    made: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        server, client = socket.socketpair()
        made.extend((server, client))
        return server, client

    yield make
    for sock in made:
        sock.close()


def closed(client: socket.socket) -> bool:
    """Whether the other end was shut down (never blocks)."""
    client.setblocking(False)
    try:
        return client.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False


def test_caps_per_source_and_in_all() -> None:
    registry = Connections(max_total=5, max_per_source=3, deadline=60)
    held = [registry.admit(("192.0.2.1", 1000 + n)) for n in range(4)]
    assert held[3] is None and registry.count("192.0.2.1") == 3
    others = [registry.admit(("192.0.2.2", 1000 + n)) for n in range(2)]
    assert all(others) and registry.total == 5
    # full, and no source holds more than a newcomer's would after admission plus one
    for ticket in [*held[:3], *others]:
        ticket.processing()  # none is evictable any more
    assert registry.admit(("192.0.2.3", 1)) is None
    held[0].release()
    held[0].release()  # idempotent
    assert registry.total == 4
    assert registry.admit(("192.0.2.3", 1)) is not None
    registry.close()
    assert registry.admit(("192.0.2.4", 1)) is None


def test_at_the_cap_a_newcomer_evicts_the_oldest_connection_being_read_of_the_greediest(
        pairs) -> None:
    registry = Connections(max_total=4, max_per_source=4, deadline=60)
    greedy = []
    for n in range(3):
        ticket = registry.admit(("192.0.2.1", n))
        server, client = pairs()
        ticket.attach(server)
        greedy.append((ticket, client))
    modest = registry.admit(("192.0.2.2", 1))
    assert modest is not None and registry.total == 4
    newcomer = registry.admit(("192.0.2.3", 1))
    assert newcomer is not None
    first, first_client = greedy[0]
    assert first.cut == "evicted" and closed(first_client)
    assert not any(closed(client) for _, client in greedy[1:])
    assert registry.count("192.0.2.1") == 2 and registry.total == 4
    first.release()  # its thread notices later: the place was given away already
    assert registry.total == 4
    # 192.0.2.1 holds 2, more than a newcomer would after admission: one more goes
    assert registry.admit(("192.0.2.4", 1)) is not None
    assert greedy[1][0].cut == "evicted" and registry.count("192.0.2.1") == 1
    # now every source holds one: nobody is evicted for a fifth
    assert registry.admit(("192.0.2.5", 1)) is None
    registry.close()


def test_a_connection_still_read_at_its_deadline_is_cut(pairs) -> None:
    registry = Connections(max_total=10, max_per_source=10, deadline=0.3)
    slow, served = registry.admit(("192.0.2.1", 1)), registry.admit(("192.0.2.1", 2))
    slow_server, slow_client = pairs()
    served_server, served_client = pairs()
    started = time.monotonic()
    slow.attach(slow_server)
    served.attach(served_server)
    served.processing()  # its request was read in time: no deadline while it runs
    wait_until(lambda: closed(slow_client), 5, "the slow connection to be cut")
    assert time.monotonic() - started >= 0.25
    assert slow.cut == "deadline"
    assert not closed(served_client) and not served.cut
    served.writing()  # the response has a deadline of its own
    wait_until(lambda: closed(served_client), 5, "the slow response to be cut")
    assert served.cut == "deadline"
    registry.close()


def test_a_ticket_cut_before_its_socket_is_attached_cuts_it_on_attach(pairs) -> None:
    registry = Connections(max_total=1, max_per_source=1, deadline=60)
    ticket = registry.admit(("192.0.2.1", 1))
    assert registry.admit(("192.0.2.2", 1)) is None  # one each: no eviction
    registry._evict(ticket)
    server, client = pairs()
    ticket.attach(server)
    assert closed(client)


class ExhaustedListener(socket.socket):
    """A listening socket whose accept() fails as a process out of descriptors does."""

    calls = 0

    def accept(self):  # type: ignore[override]
        type(self).calls += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_out_of_descriptors_the_accept_loop_pauses_instead_of_spinning(caplog) -> None:
    listener = ExhaustedListener(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())  # always pending: readable
    loop = AcceptLoop(listener, Connections(10, 10, 60), lambda *args: None)
    thread = threading.Thread(target=loop.run)
    started = time.monotonic()
    thread.start()
    try:
        wait_until(lambda: time.monotonic() - started > 1.0 and ExhaustedListener.calls, 5,
                   "a second of accept attempts")
    finally:
        loop.stop()
        thread.join(timeout=5)
        client.close()
        listener.close()
    # pauses of 0.05, 0.1, 0.2, 0.4, 0.8 s: a handful of tries a second, not a busy loop
    assert 2 <= ExhaustedListener.calls <= 8
    assert loop.pause == conns.MAX_PAUSE or loop.pause > conns.FIRST_PAUSE
    lines = [r for r in caplog.records if "Cannot accept connections" in r.getMessage()]
    assert len(lines) == 1
    loop.close()  # idempotent after run()


def test_a_refused_connection_is_reset_at_once() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    registry = Connections(max_total=1, max_per_source=0, deadline=60)
    loop = AcceptLoop(listener, registry, lambda *args: pytest.fail("served a refused one"))
    try:
        listener.setblocking(False)
        loop._accept_some()
        client.settimeout(5)
        with pytest.raises(ConnectionResetError):
            client.recv(1)
    finally:
        loop.close()
        client.close()
        listener.close()

"""What every network core shares about connections: caps, a deadline per request, the accept loop.

``AcceptLoop`` accepts connections and hands each one that ``Connections``
admits to the core, which serves it in a thread of its own. A connection
over a cap is closed at once, before any TLS, with the refusal logged once
per burst. At the global cap a newcomer may take the place of the oldest
connection still being read of the source holding the most, so no single
source starves the others. A request must be received whole (TLS
handshake, headers and body) within ``[server] request_deadline`` seconds of
its connection being accepted, and its response sent within as long again;
a connection past its deadline is cut. Running out of file descriptors
pauses accepting (0.05 s, doubling up to 1 s) instead of spinning.

Behind a load balancer (``[server] proxy_protocol``), a connection from a
listed balancer is admitted only once the loop has read its PROXY protocol
v2 header (``bcfg2.proxyprotocol``), without blocking, within
``PROXY_HEADER_DEADLINE`` seconds: it is admitted, capped and served as a
connection from the address in the header, so every core and everything
downstream sees the agent's own address. A balancer connection without an
acceptable header is closed, the refusal logged once per burst.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from bcfg2.limits import BurstLog, source_of
from bcfg2.options import Setup
from bcfg2.proxyprotocol import HeaderReader, ProxyHeaderError, TrustedBalancers
from bcfg2.untrusted import escaped

logger = logging.getLogger("bcfg2.connections")

#: errors of accept() that mean the process or system is out of descriptors or memory
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: seconds accepting pauses after it first runs out of descriptors, doubling up to MAX_PAUSE
FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0
#: connections accepted in a row before the loop looks at its wake-up pipe again
ACCEPT_BATCH = 64
#: seconds a balancer has to send a connection's whole PROXY header (at most the
#: request deadline); HAProxy sends it at once, with the connection
PROXY_HEADER_DEADLINE = 5.0

READING, PROCESSING, WRITING = "reading", "processing", "writing"


def cut_socket(sock: socket.socket) -> None:
    """Shut a connection down under the thread serving it, which then sees it closed."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not the TLS shutdown: no I/O
    except OSError:
        pass


def close_refused(sock: socket.socket) -> None:
    """Close a refused connection with a reset: nothing lingers on the server's side."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Ticket:
    """One admitted connection: its source, its phase, and the socket to cut if need be.

    The core calls ``attach`` once the socket is wrapped, ``processing``
    once the request is read, ``writing`` before the response, and
    ``release`` before it closes the socket. ``cut`` says why the server cut
    it ("deadline", "evicted", or "" if it did not), so the core need not log
    the broken read that follows.
    """

    __slots__ = ("_owner", "ip", "source", "phase", "sock", "cut", "counted", "released",
                 "generation")

    def __init__(self, owner: Connections, ip: str, source: str) -> None:
        self._owner = owner
        self.ip = ip
        self.source = source
        self.phase = READING
        self.sock: socket.socket | None = None
        self.cut = ""
        self.counted = True
        self.released = False
        self.generation = 0

    def attach(self, sock: socket.socket) -> None:
        """The socket the connection is served on (cut at once if the server cut it already)."""
        self._owner._attach(self, sock)

    def processing(self) -> None:
        """The request has been read: no deadline while the method runs."""
        self._owner._phase(self, PROCESSING)

    def writing(self) -> None:
        """The response is being sent: it must be sent within a deadline of its own."""
        self._owner._phase(self, WRITING)

    def release(self) -> None:
        """The connection is done; call before closing its socket."""
        self._owner._release(self)


class Connections:
    """The connections a server holds: caps per source and in all, deadlines, fair eviction."""

    def __init__(self, max_total: int, max_per_source: int, deadline: float) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.deadline = deadline
        self.total = 0
        self._counts: dict[str, int] = {}
        #: per source, its connections still being read, oldest first (evictable)
        self._reading: dict[str, dict[Ticket, None]] = {}
        self._deadlines: list[tuple[float, int, int, Ticket]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._reaper: threading.Thread | None = None
        self.refused = BurstLog(logger, "%s: %d more connections refused in %.0f s "
                                        "(logged once per burst)")
        self.cuts = BurstLog(logger, "%s: %d more connections cut in %.0f s "
                                     "(logged once per burst)")

    @classmethod
    def from_setup(cls, setup: Setup) -> Connections:
        """The limits of ``[server]``."""
        server = setup.server
        return cls(server.max_connections, server.max_connections_per_source,
                   server.request_deadline)

    def count(self, ip: str) -> int:
        """Connections held by the source of an address."""
        with self._cond:
            return self._counts.get(source_of(ip), 0)

    def admit(self, address: tuple[str, int]) -> Ticket | None:
        """A ticket for a new connection, or None if it is over a cap (logged once per burst)."""
        ip = address[0]
        source = source_of(ip)
        victim = None
        with self._cond:
            if self._closed:
                return None
            held = self._counts.get(source, 0)
            if held >= self.max_per_source:
                refusal = ("Refused a connection from %s: its source holds %d connections, "
                           "the most one may ([server] max_connections_per_source)", held)
            elif self.total >= self.max_total and (victim := self._victim(held)) is None:
                refusal = ("Refused a connection from %s: the server holds %d connections, "
                           "the most it takes ([server] max_connections)", self.total)
            else:
                refusal = None
                if victim is not None:
                    self._evict(victim)
                ticket = Ticket(self, ip, source)
                self._counts[source] = held + 1
                self.total += 1
                self._reading.setdefault(source, {})[ticket] = None
                self._schedule(ticket, time.monotonic() + self.deadline)
        if refusal is not None:
            message, number = refusal
            self.refused.note(source, message, ip, number)
            return None
        if victim is not None:
            self.cuts.note(victim.source, "Closed a connection from %s still being read, to "
                           "admit one from %s ([server] max_connections reached)", victim.ip, ip)
        return ticket

    def _victim(self, held: int) -> Ticket | None:
        """The oldest connection being read of the source holding the most, if it holds more
        than a newcomer's source would after admission."""
        candidates = [s for s, tickets in self._reading.items() if tickets]
        if not candidates:
            return None
        top = max(candidates, key=lambda s: self._counts.get(s, 0))
        if self._counts.get(top, 0) <= held + 1:
            return None
        return next(iter(self._reading[top]))

    def _uncount(self, ticket: Ticket) -> None:
        self._reading.get(ticket.source, {}).pop(ticket, None)
        if not self._reading.get(ticket.source, True):
            del self._reading[ticket.source]
        if ticket.counted:
            ticket.counted = False
            self.total -= 1
            left = self._counts[ticket.source] - 1
            if left:
                self._counts[ticket.source] = left
            else:
                del self._counts[ticket.source]

    def _evict(self, ticket: Ticket) -> None:
        """Cut a connection and give its place away now (with the lock held)."""
        self._uncount(ticket)
        ticket.cut = "evicted"
        if ticket.sock is not None:
            cut_socket(ticket.sock)

    def _attach(self, ticket: Ticket, sock: socket.socket) -> None:
        with self._cond:
            ticket.sock = sock
            if ticket.cut:
                cut_socket(sock)

    def _phase(self, ticket: Ticket, phase: str) -> None:
        with self._cond:
            ticket.phase = phase
            ticket.generation += 1
            self._reading.get(ticket.source, {}).pop(ticket, None)
            if phase == WRITING and not ticket.released:
                self._schedule(ticket, time.monotonic() + self.deadline)

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            if not ticket.released:
                ticket.released = True
                ticket.sock = None  # never cut once its owner may close it
                self._uncount(ticket)

    def _schedule(self, ticket: Ticket, when: float) -> None:
        """Cut the ticket at ``when`` unless its phase changes first (with the lock held)."""
        heapq.heappush(self._deadlines, (when, next(self._seq), ticket.generation, ticket))
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="request-deadline",
                                            daemon=True)
            self._reaper.start()
        elif self._deadlines[0][3] is ticket:
            self._cond.notify()

    def _reap(self) -> None:
        """Cut connections at their deadlines; sleeps while none is due."""
        while True:
            overdue: list[Ticket] = []
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, _, generation, ticket = heapq.heappop(self._deadlines)
                    if (generation == ticket.generation and not ticket.released
                            and not ticket.cut):
                        ticket.cut = "deadline"
                        if ticket.sock is not None:
                            cut_socket(ticket.sock)
                        overdue.append(ticket)
                if not overdue:
                    self._cond.wait(self._deadlines[0][0] - now if self._deadlines else None)
            for ticket in overdue:
                what = "response not sent" if ticket.phase == WRITING else "request not received"
                self.cuts.note(ticket.source, "Cut the connection from %s: %s within %.0f s "
                               "([server] request_deadline)", ticket.ip, what, self.deadline)

    def close(self) -> None:
        """Admit no more connections and stop the deadline thread; log pending summaries."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.refused.flush()
        self.cuts.flush()


class PendingHeader:
    """A balancer's connection whose PROXY header is still being read."""

    __slots__ = ("sock", "address", "reader", "deadline")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.reader = HeaderReader()
        self.deadline = deadline


class AcceptLoop:
    """Accepts connections until stopped and hands the admitted ones to ``serve``.

    ``serve(sock, address, ticket)`` must not block: it starts the thread
    that serves the connection. The loop sleeps while nobody connects.
    With ``balancers``, a connection from one of them is handed over with
    the address of its PROXY header, once the loop has read it.
    """

    def __init__(self, listener: socket.socket, connections: Connections,
                 serve: Callable[[socket.socket, Any, Ticket], None],
                 balancers: TrustedBalancers | None = None) -> None:
        self.listener = listener
        self.connections = connections
        self.serve = serve
        self.balancers = balancers
        self.header_deadline = min(PROXY_HEADER_DEADLINE, connections.deadline)
        self.stopping = False
        self.pause = 0.0
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._pending: dict[PendingHeader, None] = {}
        self._header_deadlines: list[tuple[float, int, PendingHeader]] = []
        self._seq = itertools.count()
        self.exhausted = BurstLog(logger, "%s: %d more accepts failed for lack of file "
                                          "descriptors in %.0f s", level=logging.ERROR)
        self.refused_headers = BurstLog(logger, "%s: %d more balancer connections refused for "
                                                "their PROXY header in %.0f s (logged once "
                                                "per burst)")

    def run(self) -> None:
        """Accept until ``stop``."""
        try:
            self._run()
        finally:
            self.close()

    def _run(self) -> None:
        self.listener.setblocking(False)
        resume: float | None = None
        with selectors.DefaultSelector() as selector:
            self._selector = selector
            selector.register(self._wake_r, selectors.EVENT_READ)
            selector.register(self.listener, selectors.EVENT_READ)
            try:
                while not self.stopping:
                    wake = resume
                    if self._header_deadlines:
                        first = self._header_deadlines[0][0]
                        wake = first if wake is None else min(wake, first)
                    timeout = None if wake is None else max(wake - time.monotonic(), 0.0)
                    events = selector.select(timeout)
                    if resume is not None and time.monotonic() >= resume:
                        selector.register(self.listener, selectors.EVENT_READ)
                        resume = None
                    for key, _ in events:
                        if isinstance(key.data, PendingHeader):
                            self._read_header(key.data)
                        elif key.fileobj is self.listener and not self.stopping \
                                and resume is None:
                            pause = self._accept_some()
                            if pause:
                                selector.unregister(self.listener)
                                resume = time.monotonic() + pause
                    if self._header_deadlines:
                        self._expire_headers()
            finally:
                for pending in list(self._pending):
                    self._drop(pending)
                self._selector = None

    def _accept_some(self) -> float:
        """Accept what is waiting; the seconds to pause for lack of descriptors (0: none)."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return 0.0
            except OSError as err:
                if err.errno not in EXHAUSTED:
                    logger.debug("accept failed: %s", err)
                    continue  # the client gave up already
                self.pause = min(self.pause * 2, MAX_PAUSE) if self.pause else FIRST_PAUSE
                self.exhausted.note("accept", "Cannot accept connections: %s; pausing accepts "
                                    "(up to %.0f s at a time) until descriptors are free",
                                    err.strerror, MAX_PAUSE)
                return self.pause
            self.pause = 0.0
            self._admit(sock, address)
        return 0.0

    def _admit(self, sock: socket.socket, address: Any) -> None:
        if self.balancers is not None and self.balancers.trusts(address[0]):
            self._await_header(sock, address)
        else:
            self._hand_over(sock, address)

    # -- PROXY protocol headers of balancer connections ----------------------------------

    def _await_header(self, sock: socket.socket, address: Any) -> None:
        """Read a balancer connection's header as it arrives, without blocking the loop."""
        if len(self._pending) >= self.connections.max_total or self._selector is None:
            self._refuse_header(sock, address, f"{len(self._pending)} balancer connections "
                                "are already sending their headers ([server] max_connections)")
            return
        sock.setblocking(False)
        pending = PendingHeader(sock, address, time.monotonic() + self.header_deadline)
        self._pending[pending] = None
        self._selector.register(sock, selectors.EVENT_READ, pending)
        heapq.heappush(self._header_deadlines, (pending.deadline, next(self._seq), pending))
        self._read_header(pending)  # it often came with the connection

    def _read_header(self, pending: PendingHeader) -> None:
        try:
            header = pending.reader.read(pending.sock)
        except (BlockingIOError, InterruptedError):
            return
        except ProxyHeaderError as err:
            self._drop(pending, str(err))
            return
        except OSError as err:  # closed or reset by the balancer: its client went away
            logger.debug("balancer connection from %s ended before its PROXY header: %s",
                         escaped(pending.address[0]), err)
            self._drop(pending)
            return
        if header is None:
            return
        self._forget(pending)
        pending.sock.setblocking(True)
        self._hand_over(pending.sock, pending.address if header.local else header.source)

    def _expire_headers(self) -> None:
        now = time.monotonic()
        while self._header_deadlines and self._header_deadlines[0][0] <= now:
            _, _, pending = heapq.heappop(self._header_deadlines)
            if pending in self._pending:
                got = len(pending.reader.data)
                self._drop(pending, f"no whole PROXY header within {self.header_deadline:g} s "
                           f"({got} bytes of it arrived)")

    def _forget(self, pending: PendingHeader) -> None:
        self._pending.pop(pending, None)
        if self._selector is not None:
            try:
                self._selector.unregister(pending.sock)
            except (KeyError, ValueError):
                pass

    def _drop(self, pending: PendingHeader, why: str = "") -> None:
        """Close a balancer connection that will not be served; log why, if it is news."""
        self._forget(pending)
        if why:
            self._refuse_header(pending.sock, pending.address, why)
        else:
            close_refused(pending.sock)

    def _refuse_header(self, sock: socket.socket, address: Any, why: str) -> None:
        ip = escaped(address[0])
        close_refused(sock)
        self.refused_headers.note(source_of(address[0]), "Refused a connection from balancer "
                                  "%s ([server] proxy_protocol): %s", ip, why)

    def _hand_over(self, sock: socket.socket, address: Any) -> None:
        ticket = self.connections.admit(address)
        if ticket is None:
            close_refused(sock)
            return
        try:
            self.serve(sock, address, ticket)
        except Exception:  # e.g. no thread can be started
            logger.exception("cannot serve the connection from %s", address[0])
            ticket.release()
            sock.close()

    def stop(self) -> None:
        """Make ``run`` return."""
        with self._pipe_lock:
            self.stopping = True
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"x")
                except OSError:
                    pass

    def close(self) -> None:
        """Release the wake-up pipe; ``run`` does it as it returns. Idempotent."""
        with self._pipe_lock:
            self.stopping = True
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        self.exhausted.flush()
        self.refused_headers.flush()


__all__ = ["PROXY_HEADER_DEADLINE", "AcceptLoop", "Connections", "Ticket", "close_refused",
           "cut_socket"]

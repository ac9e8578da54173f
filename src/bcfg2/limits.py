"""Limits a hostile network cannot talk the server out of, shared by every network core.

Three things live here: ``BurstLog``, which logs the first of a burst of
like events and then one line counting the rest, so an attacker cannot fill
the log; ``AuthThrottle``, which refuses, unchecked, the authentications of a
source that failed too often; and ``raise_fd_limit``, which lifts the soft
limit on open files towards the hard one at start-up. Sources are counted
by ``source_of``: an IPv4 address, or an IPv6 /64 (one host's share).
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import resource
import threading
import time
from dataclasses import dataclass

from bcfg2.untrusted import escaped

#: seconds a burst of like log events lasts: its first is logged, the rest counted
BURST_WINDOW = 10.0
#: sources with an open burst at once; events of further sources are counted together
MAX_BURSTS = 1024
#: the key events of sources beyond MAX_BURSTS are counted under
OVERFLOW = "other sources"
#: sources whose failed authentications are remembered at once
MAX_TRACKED_SOURCES = 10_000
#: the soft limit on open files is raised at most to this (far beyond max_connections)
FD_CEILING = 65_536
#: descriptors the server needs besides connections (repository, state, children, logs)
FD_RESERVE = 128


def source_of(ip: str) -> str:
    """The source an address counts for: itself (IPv4), or its /64 (IPv6).

    One IPv6 host commonly has a whole /64 to pick addresses from, so the
    per-source limits would mean nothing per address.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass
class _Burst:
    started: float
    more: int = 0


class BurstLog:
    """Logs the first event of a burst per key; at the burst's end, one line with how many followed.

    A burst lasts ``window`` seconds from its first event. A thread of its
    own logs the summaries as bursts end, and exits when none is open, so
    the count is never lost in the quiet after an attack.
    """

    def __init__(self, logger: logging.Logger, summary: str, window: float = BURST_WINDOW,
                 level: int = logging.WARNING) -> None:
        """``summary`` is a format taking the key, the count and the seconds the burst lasted."""
        self.logger = logger
        self.summary = summary
        self.window = window
        self.level = level
        self._bursts: dict[str, _Burst] = {}
        self._cond = threading.Condition()
        self._flusher: threading.Thread | None = None

    def note(self, key: str, message: str, *args: object) -> bool:
        """Count one event; logs ``message % args`` if it opens a burst. True if it was logged."""
        now = time.monotonic()
        with self._cond:
            if key not in self._bursts and len(self._bursts) >= MAX_BURSTS:
                key = OVERFLOW  # too many sources at once: counted together, never one by one
                self._bursts.setdefault(key, _Burst(now))
            burst = self._bursts.get(key)
            if burst is not None:
                burst.more += 1
                return False
            self._bursts[key] = _Burst(now)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                                 name="burst-log")
                self._flusher.start()
            self._cond.notify()
        self.logger.log(self.level, message, *args)
        return True

    def flush(self) -> None:
        """End every open burst now, logging its summary."""
        with self._cond:
            ended = self._take(float("inf"))
        self._report(ended)

    def _take(self, now: float) -> list[tuple[str, _Burst]]:
        """Remove and return the bursts that have ended by ``now`` (with the lock held)."""
        ended = [(key, burst) for key, burst in self._bursts.items()
                 if now - burst.started >= self.window]
        for key, _ in ended:
            del self._bursts[key]
        return ended

    def _report(self, ended: list[tuple[str, _Burst]]) -> None:
        now = time.monotonic()
        for key, burst in ended:
            if burst.more:
                self.logger.log(self.level, self.summary, key, burst.more,
                                min(now - burst.started, self.window))

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                if not self._bursts:
                    self._flusher = None
                    return
                now = time.monotonic()
                ended = self._take(now)
                if not ended:
                    first = min((b.started for b in self._bursts.values()), default=now)
                    self._cond.wait(max(first + self.window - now, 0.01))
            self._report(ended)


class AuthThrottle:
    """Failed authentications per source: past ``limit`` within ``window`` seconds, refuse unchecked.

    A throttled source is refused without its credentials being looked at,
    the right ones included: checking them would keep answering a password
    guesser. At most ``limit`` attempts per source are checked in any
    ``window`` seconds; refused attempts do not extend the back-off, so a
    source that stops failing is served again ``window`` seconds after its
    last checked failure at the latest. A successful authentication does not
    clear the count: a client's own password must not buy guesses at
    another's. Every failure and refusal is logged once per burst.
    """

    def __init__(self, limit: int, window: float, logger: logging.Logger) -> None:
        self.limit = limit
        self.window = window
        self.logger = logger
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()
        self.log = BurstLog(logger, "%s: %d more failed or refused authentications "
                                    "in %.0f s (logged once per burst)")

    def _blocked(self, times: collections.deque[float] | None, now: float) -> bool:
        return (times is not None and len(times) >= self.limit
                and now - times[0] < self.window)

    def refused(self, ip: str) -> bool:
        """Whether a source is throttled: its attempt is refused without checking (and logged)."""
        if self.limit <= 0:
            return False
        source = source_of(ip)
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(source)
            if not self._blocked(times, now):
                return False
            until = times[0] + self.window - now
        self.log.note(source, "Refused authentication from %s unchecked: %d failures within "
                      "%.0f s ([server] auth_failure_limit); again in %.0f s", ip, self.limit,
                      self.window, until)
        return True

    def failed(self, ip: str, user: str) -> None:
        """Record one failed authentication from a source (and log it once per burst)."""
        source = source_of(ip)
        self.log.note(source, "Authentication failure from %s (user '%s')", ip, escaped(user, 64))
        if self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(source)
            if times is None:
                if len(self._failures) >= MAX_TRACKED_SOURCES:
                    self._prune(now)
                times = self._failures[source] = collections.deque(maxlen=self.limit)
            times.append(now)
            onset = self._blocked(times, now)
        if onset:
            self.logger.warning("Throttling authentication from %s: %d failures within %.0f s; "
                                "its attempts are refused unchecked for up to %.0f s", ip,
                                self.limit, self.window, self.window)

    def _prune(self, now: float) -> None:
        """Forget sources with no failure in the window; then the oldest, to stay bounded."""
        for source in [s for s, t in self._failures.items() if now - t[-1] >= self.window]:
            del self._failures[source]
        while len(self._failures) >= MAX_TRACKED_SOURCES:
            del self._failures[next(iter(self._failures))]


def raise_fd_limit(max_connections: int, logger: logging.Logger) -> int:
    """Raise the soft limit on open files towards the hard limit; the soft limit in force.

    Each connection costs a descriptor, so the default soft limit of many
    systems (1024) would be reached before ``[server] max_connections`` on a
    busy site; the hard limit is what the administrator allows. Raised up to
    ``FD_CEILING``; a limit too low for ``max_connections`` is warned about.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_CEILING if hard == resource.RLIM_INFINITY else min(hard, FD_CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            logger.warning("Cannot raise the limit of open files from %d to %d: %s", soft,
                           target, err)
        else:
            logger.info("Raised the soft limit of open files from %d to %d (hard limit %s)",
                        soft, target, "unlimited" if hard == resource.RLIM_INFINITY else hard)
            soft = target
    needed = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning("The limit of open files is %d (hard limit %s), but [server] "
                       "max_connections = %d needs about %d: connections may fail for lack of "
                       "file descriptors", soft, hard, max_connections, needed)
    return soft


__all__ = ["AuthThrottle", "BurstLog", "raise_fd_limit", "source_of"]

"""The server's metrics for Prometheus: what is counted, how children report, who may scrape.

One ``Metrics`` object per process (``current()``) holds the server's
metrics in a registry of its own (never prometheus-client's global one, so
tests and other libraries stay apart). The modules that do the work report
to it with one call each::

    bcfg2_requests_total{method, outcome}    xmlrpc.handle: every call through the door
    bcfg2_request_seconds{method}            ... and how long it took
    bcfg2_build_phase_seconds{phase}         core: structures, validate (structure
                                             validators: Packages resolution), bind, goals
                                             (goal validators), serialise
    bcfg2_metadata_cache_lookups_total{result}  cache: hit (kept metadata used) or miss
    bcfg2_file_events_total{action}          filemonitor: events handed to a handler
    bcfg2_storage_seconds{engine, operation} storage: one transaction (read or write)
    bcfg2_storage_errors_total{engine, operation}
    bcfg2_packages_index_age_seconds{type}   Packages: the oldest index in service, by
    bcfg2_packages_indices{type}             source type, and how many are in service
    bcfg2_children_alive                     multiprocessing: children ready to render
    bcfg2_metrics_refused_total{reason}      scrapes refused (address or token)

Every label is bounded: a method is one the core exposes (or a plugin's
RMI) or ``other``; a fault is named by its code's class; nothing is
labelled with a client's name, a path or anything else a client chooses.

A multiprocessing child does not count for itself: its ``Metrics`` is a
relay (``Metrics(relay=True)``) that keeps each event (a phase timed, a
cache lookup, a transaction) until ``drain()``, and every answer on the
rpc pipe it already shares with the parent carries them; the parent
applies them to its own metrics (``relay``), exactly as if it had seen
them, so its /metrics shows the whole server, and what a child did up to
its last answer stays counted when it is replaced. What a child does
happens while it renders, so it is sent with that render's answer. (prometheus-client's multiprocess mode
would need a shared directory cleaned at every start, an environment
variable set before any import, and a file per child that ever ran.) File
events are the parent's alone: each child watches the same files, and a
change counted once per process would say nothing more.

``make_app(setup)`` is the WSGI application answering ``/metrics`` in the
Prometheus text format (the web page mounts it; ``Endpoint`` also serves it
on ``[metrics] listen``, plain HTTP, for a site that scrapes without the
web page). It answers only with ``[metrics] enabled``, to the addresses of
``[metrics] allow`` and, with ``[metrics] token``, to a request bearing it;
any other request gets 403 and is counted.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client import make_wsgi_app as prometheus_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric

from bcfg2.errors import (
    ACCESS_DENIED,
    APPLICATION_ERROR,
    GENERIC_ERROR,
    INVALID_PARAMS,
    PARSE_ERROR,
    UNKNOWN_METHOD,
    ConfigError,
)

if TYPE_CHECKING:
    from bcfg2.core import NetworkCore
    from bcfg2.options import Setup

logger = logging.getLogger("bcfg2.metrics")

T = TypeVar("T")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: the method label of a call that names no method the core exposes (or was not read)
OTHER = "other"
#: the outcome label of each fault code (bcfg2.errors); any other code is "other_fault"
FAULT_OUTCOMES = {
    PARSE_ERROR: "parse_error",
    UNKNOWN_METHOD: "unknown_method",
    INVALID_PARAMS: "invalid_params",
    ACCESS_DENIED: "access_denied",
    APPLICATION_ERROR: "application_error",
    GENERIC_ERROR: "generic_error",
}
#: the build phases, in the order a configuration goes through them
PHASES = ("structures", "validate", "bind", "goals", "serialise")
FILE_ACTIONS = ("exists", "endExist", "created", "changed", "deleted")
PACKAGE_TYPES = ("apt", "yum", "pac", "pkgng")
ENGINES = ("sqlite", "postgresql")

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BUILD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10)

#: the paths ``make_app`` answers: grafted at /metrics (the web page) or at the root
PATHS = ("", "/", "/metrics")

#: events a child keeps for its next answer at most (beyond them it keeps none)
MAX_PENDING = 10_000
#: one event a child relays: (metric, labels, amount counted or seconds observed)
Event = tuple[str, tuple[str, ...], float]


class Metrics:
    """The metrics of one server process, in a registry of their own.

    ``relay=True`` makes the metrics of a multiprocessing child: events are
    kept for the parent (``drain``) instead of counted here.
    """

    def __init__(self, relay: bool = False) -> None:
        #: the metric objects this process counts in
        self.own = CollectorRegistry(auto_describe=True)
        self.requests = Counter("bcfg2_requests", "XML-RPC calls by method and outcome.",
                                ["method", "outcome"], registry=self.own)
        self.request_seconds = Histogram("bcfg2_request_seconds",
                                         "Time to answer an XML-RPC call, by method.",
                                         ["method"], buckets=REQUEST_BUCKETS, registry=self.own)
        self.build_phase = Histogram("bcfg2_build_phase_seconds",
                                     "Time spent in each phase of building a configuration.",
                                     ["phase"], buckets=BUILD_BUCKETS, registry=self.own)
        self.metadata_cache = Counter("bcfg2_metadata_cache_lookups",
                                      "Client metadata wanted: kept in the cache (hit) or "
                                      "built by the Metadata plugin (miss).",
                                      ["result"], registry=self.own)
        self.file_events = Counter("bcfg2_file_events",
                                   "Repository file events handed to a handler, by action.",
                                   ["action"], registry=self.own)
        self.storage_seconds = Histogram("bcfg2_storage_seconds",
                                         "Time of one storage transaction, by engine and "
                                         "operation (read or write).", ["engine", "operation"],
                                         buckets=STORAGE_BUCKETS, registry=self.own)
        self.storage_errors = Counter("bcfg2_storage_errors",
                                      "Storage transactions that failed, by engine and "
                                      "operation.", ["engine", "operation"], registry=self.own)
        self.refused = Counter("bcfg2_metrics_refused",
                               "Scrapes of /metrics refused, by reason (address, token).",
                               ["reason"], registry=self.own)
        #: what a child relays, by name, with the number of labels; file events stay
        #: each process's own (every child watches the same files), and so do gauges
        self._relayed: dict[str, tuple[Any, int]] = {
            "requests": (self.requests, 2), "request_seconds": (self.request_seconds, 1),
            "build_phase": (self.build_phase, 1), "metadata_cache": (self.metadata_cache, 1),
            "storage_seconds": (self.storage_seconds, 2),
            "storage_errors": (self.storage_errors, 2)}
        self.relaying = relay
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        self._packages: tuple[tuple[str, float], ...] = ()
        self._alive: Callable[[], Any] | None = None
        #: what /metrics serves: the metrics above, the gauges, the process's own
        self.registry = CollectorRegistry()
        self.registry.register(_Served(self))
        ProcessCollector(registry=self.registry)

    # -- what the modules report -------------------------------------------------

    def record(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Count ``amount`` (a counter) or observe it (a histogram) on a relayed metric;
        a relay keeps it for the parent instead."""
        if self.relaying:
            with self._lock:
                if len(self._pending) < MAX_PENDING:
                    self._pending.append((name, labels, amount))
            return
        metric = self._relayed[name][0]
        if isinstance(metric, Histogram):
            metric.labels(*labels).observe(amount)
        else:
            metric.labels(*labels).inc(amount)

    def request(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """Count one XML-RPC call (``method`` already bounded by the caller)."""
        self.record("requests", (method, outcome))
        if seconds is not None:
            self.record("request_seconds", (method,), seconds)

    def watch_children(self, alive: Callable[[], int]) -> None:
        """Report ``alive()`` (a bound method, held weakly) as ``bcfg2_children_alive``."""
        self._alive = weakref.WeakMethod(alive)  # type: ignore[arg-type]

    def packages_indices(self, indices: Iterable[tuple[str, float]]) -> None:
        """The Packages indices now in service: (source type, when fetched, epoch seconds)."""
        self._packages = tuple((kind if kind in PACKAGE_TYPES else OTHER, float(fetched))
                               for kind, fetched in indices if fetched > 0)

    # -- children ------------------------------------------------------------------

    def drain(self) -> list[Event]:
        """The events kept for the parent since the last drain (none unless a relay)."""
        with self._lock:
            events, self._pending = self._pending, []
        return events

    def relay(self, events: Any) -> None:
        """Apply the events a child relayed, as if they had happened here."""
        if not isinstance(events, list):
            return
        for event in events:
            try:
                name, labels, amount = event
                metric, count = self._relayed[name]
            except (TypeError, ValueError, KeyError):
                continue
            if not (isinstance(labels, tuple) and len(labels) == count
                    and all(isinstance(label, str) for label in labels)
                    and isinstance(amount, int | float) and 0 <= amount < float("inf")):
                continue
            self.record(name, labels, amount)

    # -- collecting ------------------------------------------------------------------

    def _collect(self) -> Iterator[Metric]:
        for family in self.own.collect():
            family.samples = [sample for sample in family.samples
                              if not sample.name.endswith("_created")]
            yield family
        alive = self._alive() if self._alive is not None else None
        if alive is not None:
            yield GaugeMetricFamily("bcfg2_children_alive",
                                    "Child processes of the multiprocessing core ready to "
                                    "render configurations.", value=alive())
        if self._packages:
            now = time.time()
            ages = GaugeMetricFamily("bcfg2_packages_index_age_seconds",
                                     "Seconds since the oldest Packages index in service was "
                                     "fetched (an unchanged upstream index keeps its age), by "
                                     "source type.", labels=["type"])
            counts = GaugeMetricFamily("bcfg2_packages_indices",
                                       "Packages indices in service, by source type.",
                                       labels=["type"])
            for kind in sorted({kind for kind, _ in self._packages}):
                fetched = [when for k, when in self._packages if k == kind]
                ages.add_metric([kind], max(0.0, now - min(fetched)))
                counts.add_metric([kind], len(fetched))
            yield ages
            yield counts


class _Served:
    """The collector ``Metrics.registry`` serves."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics._collect()


_current = Metrics()


def current() -> Metrics:
    """This process's metrics."""
    return _current


def use(metrics: Metrics) -> Metrics:
    """Make ``metrics`` this process's metrics (tests start from zero); the previous one."""
    global _current
    previous, _current = _current, metrics
    return previous


# -- the one-line calls of the modules that do the work ----------------------------------


def method_label(core: NetworkCore, method: str) -> str:
    """``method`` if the core exposes it (its own or a plugin's RMI), else ``other``."""
    if method and (method in core.rmi or method in core.exposed_methods()):
        return method
    return OTHER


def request(core: NetworkCore, method: str, outcome: str, fault_code: int | None,
            seconds: float) -> None:
    """An XML-RPC call answered: ``outcome`` is ok or fault (with its code)."""
    if outcome == "fault":
        outcome = FAULT_OUTCOMES.get(fault_code, "other_fault") if isinstance(
            fault_code, int) else "other_fault"
    elif outcome not in ("ok", "unauthorized"):
        outcome = OTHER
    _current.request(method_label(core, method), outcome, seconds)


def unauthorized() -> None:
    """A call refused before its body was read: authentication failed or was throttled."""
    _current.request(OTHER, "unauthorized")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time one build phase (``PHASES``); also a decorator of the method doing it."""
    start = time.monotonic()
    try:
        yield
    finally:
        _current.record("build_phase", (name if name in PHASES else OTHER,),
                        time.monotonic() - start)


def metadata_cache(hit: bool) -> None:
    """Client metadata was wanted: kept in the cache (hit) or built anew (miss)."""
    _current.record("metadata_cache", ("hit" if hit else "miss",))


def file_event(action: str) -> None:
    """A file-monitor event was handed to its handler."""
    _current.file_events.labels(action if action in FILE_ACTIONS else OTHER).inc()


def timed_storage(run: Callable[..., T]) -> Callable[..., T]:
    """Decorate a ``Database.run(work, write=False)``: its time and failures, by engine."""

    @functools.wraps(run)
    def timed(db: Any, work: Callable[..., T], write: bool = False) -> T:
        engine = db.engine if db.engine in ENGINES else OTHER
        operation = "write" if write else "read"
        start = time.monotonic()
        try:
            return run(db, work, write)
        except Exception:
            _current.record("storage_errors", (engine, operation))
            raise
        finally:
            _current.record("storage_seconds", (engine, operation), time.monotonic() - start)

    return timed


def packages_indices(indices: Iterable[tuple[str, float]]) -> None:
    """The Packages indices now in service, as (source type, when fetched)."""
    _current.packages_indices(indices)


def watch_children(alive: Callable[[], int]) -> None:
    """The multiprocessing core's count of children ready to render."""
    _current.watch_children(alive)


def relay_to_parent() -> None:
    """Make this process a multiprocessing child's: its events go to the parent (``drain``)."""
    use(Metrics(relay=True))


def drain() -> list[Event]:
    """The events a child keeps for its next answer to the parent."""
    return _current.drain()


def relay(events: list[Event]) -> None:
    """The events a child's answer carried, counted here."""
    _current.relay(events)


# -- who may scrape, and serving -------------------------------------------------------


class Access:
    """The access rule of /metrics: ``[metrics] enabled``, ``allow`` and ``token``."""

    def __init__(self, enabled: bool, allow: Iterable[str], token: str | None = None) -> None:
        self.enabled = enabled
        networks = []
        for item in allow:
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"[metrics] allow: {item!r} is not an address or a network "
                                  f"(CIDR)") from None
        self.networks = tuple(networks)
        self.token = token or None

    @classmethod
    def from_setup(cls, setup: Setup) -> Access:
        section = setup.metrics
        return cls(bool(section.enabled), section.allow, section.token)

    def allows_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:  # a dual-stack listener's IPv4
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def allows_token(self, authorization: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, value = (authorization or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode())

    def refusal(self, address: str, authorization: str | None) -> str | None:
        """Why a scrape from ``address`` is refused (``address`` or ``token``), None if not."""
        if not self.allows_address(address):
            return "address"
        if not self.allows_token(authorization):
            return "token"
        return None


def _plain(start_response: Callable[..., Any], status: str, text: str,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *(extra or [])])
    return [body]


def make_app(setup: Setup, metrics: Metrics | None = None) -> WSGIApp:
    """The WSGI application of /metrics under the access rule of ``setup``.

    It answers at ``/metrics`` and, when grafted there (the web page mounts
    it at /metrics), at its own root; ``metrics`` defaults to this process's
    (looked up per request). Raises ConfigError for a bad ``[metrics] allow``.
    """
    access = Access.from_setup(setup)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not access.enabled:
            return _plain(start_response, "404 Not Found",
                          "not found: the metrics endpoint is off ([metrics] enabled)")
        if environ.get("PATH_INFO", "") not in PATHS:
            return _plain(start_response, "404 Not Found", "not found; metrics are at /metrics")
        served = metrics if metrics is not None else _current
        why = access.refusal(str(environ.get("REMOTE_ADDR", "")),
                             environ.get("HTTP_AUTHORIZATION"))
        if why is not None:
            served.refused.labels(why).inc()
            logger.debug("metrics scrape from %s refused: %s", environ.get("REMOTE_ADDR"), why)
            if why == "token":
                return _plain(start_response, "403 Forbidden",
                              "forbidden: a valid bearer token is required ([metrics] token)",
                              [("WWW-Authenticate", "Bearer")])
            return _plain(start_response, "403 Forbidden",
                          "forbidden: this address may not scrape ([metrics] allow)")
        return prometheus_wsgi_app(served.registry)(environ, start_response)

    return app


def listen_address(value: str) -> tuple[str, int] | None:
    """Where ``[metrics] listen`` says to serve: ``HOST:PORT`` (``[V6]:PORT``); None if empty.

    HOST is an IP address (the admin says which interface: no name is looked
    up); port 0 picks a free one.
    """
    value = (value or "").strip()
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not 0 <= port <= 65535:
        raise ConfigError(f"[metrics] listen: {value!r} is not HOST:PORT")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ConfigError(f"[metrics] listen: {host!r} is not an IP address") from None
    return str(ip), port


def _cheroot_log(msg: str = "", level: int = 20, traceback: bool = False) -> None:
    """cheroot's complaints (a client that went away, a bad request line), in our log."""
    logger.debug("metrics listener: %s", msg, exc_info=traceback)


class Endpoint:
    """A server's /metrics: its application, and the listener of ``[metrics] listen``."""

    #: threads answering scrapes on the listener, and seconds a request may be silent
    THREADS = 4
    TIMEOUT = 5
    #: accepted connections waiting for a thread
    QUEUE = 16

    def __init__(self, setup: Setup) -> None:
        """Raises ConfigError for a bad listen address or allow list, or listen without
        ``enabled``."""
        self.app = make_app(setup)
        self.address = listen_address(setup.metrics.listen)
        if self.address is not None and not setup.metrics.enabled:
            raise ConfigError("[metrics] listen is set but [metrics] enabled is false: set "
                              "enabled = true to serve the metrics")
        self.server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        return None if self.server is None else self.server.bind_addr[1]

    def start(self) -> bool:
        """Listen if ``[metrics] listen`` says so; False (logged) if it cannot. Once only."""
        if self.address is None or self.server is not None:
            return True
        import cheroot.wsgi  # only where a listener is wanted

        # a few threads, silent clients cut after TIMEOUT, and a bounded queue of accepted
        # connections (beyond it cheroot answers 503): a scrape is small and rare
        server = cheroot.wsgi.Server(self.address, self.app, numthreads=self.THREADS,
                                     max=self.THREADS, request_queue_size=16,
                                     timeout=self.TIMEOUT, shutdown_timeout=2,
                                     accepted_queue_size=self.QUEUE, accepted_queue_timeout=1)
        server.error_log = _cheroot_log
        server.max_request_header_size = 8192
        server.max_request_body_size = 1024
        try:
            server.prepare()
        except OSError as err:
            logger.error("Cannot listen on %s:%d for the metrics ([metrics] listen): %s",
                         *self.address, err)
            return False
        self.server = server
        self._thread = threading.Thread(target=server.serve, name="metrics", daemon=True)
        self._thread.start()
        host, port = server.bind_addr[:2]
        shown = f"[{host}]" if ":" in host else host
        logger.info("Metrics on http://%s:%d/metrics", shown, port)
        return True

    def stop(self) -> None:
        """Stop listening (safe to call more than once, or when never started)."""
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = [
    "FAULT_OUTCOMES", "OTHER", "PHASES", "Access", "Endpoint", "Metrics", "current",
    "file_event", "listen_address", "make_app", "metadata_cache", "method_label",
    "drain", "packages_indices", "phase", "relay", "relay_to_parent", "request",
    "timed_storage", "unauthorized", "use", "watch_children",
]

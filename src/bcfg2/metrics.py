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

A multiprocessing child counts in its own ``Metrics`` and sends a
``snapshot()`` of its counters and histograms with every answer on the rpc
pipe it already has (what it counts happens while it renders, so nothing
waits for a later answer); the parent keeps each child's latest
(``relay``) and, once the child is gone, adds it to what retired children
counted (``retire``), so a total never goes down. File events are the
parent's alone: each child watches the same files, and the same change
counted once per process would say nothing more. Relaying over the pipes needs no
shared directory to clean, no environment set before import and no
per-process files piling up as children are replaced, which
prometheus-client's multiprocess mode all does; what it can lose is what a
child counted since its last answer when it dies mid-render.

``make_app(setup)`` is the WSGI application answering ``/metrics`` in the
Prometheus text format (the web page mounts it; ``Endpoint`` also serves it
on ``[metrics] listen``, plain HTTP, for a site that scrapes without the
web page). It answers only with ``[metrics] enabled``, to the addresses of
``[metrics] allow`` and, with ``[metrics] token``, to a request bearing it;
any other request gets 403 and is counted.
"""

from __future__ import annotations

import contextlib
import copy
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

#: one relayed sample: (sample name, labels as sorted pairs) -> value
SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Snapshot = dict[str, dict[SampleKey, float]]


def _label_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class Metrics:
    """The metrics of one server process, in a registry of their own."""

    def __init__(self) -> None:
        #: the metric objects this process counts in (merged with the children's on collect)
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
        #: what children count, with its label names: summed into the parent's. Gauges stay
        #: each process's own, and so do file events: every child watches the same files
        self._relayable: dict[str, tuple[Any, tuple[str, ...]]] = {
            metric.describe()[0].name: (metric, labels) for metric, labels in (
                (self.requests, ("method", "outcome")), (self.request_seconds, ("method",)),
                (self.build_phase, ("phase",)), (self.metadata_cache, ("result",)),
                (self.storage_seconds, ("engine", "operation")),
                (self.storage_errors, ("engine", "operation")))}
        self._lock = threading.Lock()
        self._children: dict[str, Snapshot] = {}
        self._retired: Snapshot = {}
        #: children retired: an answer relayed after its child was retired is not added twice
        self._gone: set[str] = set()
        self._packages: tuple[tuple[str, float], ...] = ()
        self._alive: Callable[[], Any] | None = None
        #: what /metrics serves: this process's metrics with the children's added
        self.registry = CollectorRegistry()
        self.registry.register(_Merged(self))
        ProcessCollector(registry=self.registry)

    # -- what the modules report -------------------------------------------------

    def request(self, method: str, outcome: str, seconds: float | None = None) -> None:
        """Count one XML-RPC call (``method`` already bounded by the caller)."""
        self.requests.labels(method, outcome).inc()
        if seconds is not None:
            self.request_seconds.labels(method).observe(seconds)

    def watch_children(self, alive: Callable[[], int]) -> None:
        """Report ``alive()`` (a bound method, held weakly) as ``bcfg2_children_alive``."""
        self._alive = weakref.WeakMethod(alive)  # type: ignore[arg-type]

    def packages_indices(self, indices: Iterable[tuple[str, float]]) -> None:
        """The Packages indices now in service: (source type, when fetched, epoch seconds)."""
        self._packages = tuple((kind if kind in PACKAGE_TYPES else OTHER, float(fetched))
                               for kind, fetched in indices if fetched > 0)

    # -- children ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This process's counters and histograms, for the parent (``relay``)."""
        found: Snapshot = {}
        for name, (metric, _) in self._relayable.items():
            samples = {}
            for family in metric.collect():
                for sample in family.samples:
                    if not sample.name.endswith("_created") and sample.value:
                        samples[(sample.name, _label_key(sample.labels))] = sample.value
            if samples:
                found[name] = samples
        return found

    def relay(self, child: str, snapshot: Snapshot) -> None:
        """A child's latest ``snapshot()``: added to this process's counts when collected."""
        if not isinstance(snapshot, dict):
            return
        for name, samples in snapshot.items():
            metric, names = self._relayable.get(name, (None, ()))
            if metric is None or not names:
                continue
            for _, labels in samples:  # every label set the child has is shown here too
                values = dict(labels)
                with contextlib.suppress(KeyError, ValueError):
                    metric.labels(*(values[label] for label in names))
        with self._lock:
            if child not in self._gone:
                self._children[child] = snapshot

    def retire(self, child: str) -> None:
        """A child is gone: what it counted stays in the totals."""
        with self._lock:
            self._gone.add(child)
            last = self._children.pop(child, None)
            for name, samples in (last or {}).items():
                kept = self._retired.setdefault(name, {})
                for key, value in samples.items():
                    kept[key] = kept.get(key, 0.0) + value

    def relayed(self) -> Snapshot:
        """The sums of what the children counted, living and retired."""
        with self._lock:
            total: Snapshot = {name: dict(samples) for name, samples in self._retired.items()}
            for snapshot in self._children.values():
                for name, samples in snapshot.items():
                    kept = total.setdefault(name, {})
                    for key, value in samples.items():
                        kept[key] = kept.get(key, 0.0) + value
        return total

    # -- collecting ------------------------------------------------------------------

    def _collect(self) -> Iterator[Metric]:
        relayed = self.relayed()
        for family in self.own.collect():
            extra = relayed.get(family.name, {})
            merged = copy.copy(family)
            merged.samples = [
                sample._replace(value=sample.value + extra.get(
                    (sample.name, _label_key(sample.labels)), 0.0))
                for sample in family.samples if not sample.name.endswith("_created")]
            yield merged
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


class _Merged:
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
        _current.build_phase.labels(name if name in PHASES else OTHER).observe(
            time.monotonic() - start)


def metadata_cache(hit: bool) -> None:
    """Client metadata was wanted: kept in the cache (hit) or built anew (miss)."""
    _current.metadata_cache.labels("hit" if hit else "miss").inc()


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
            _current.storage_errors.labels(engine, operation).inc()
            raise
        finally:
            _current.storage_seconds.labels(engine, operation).observe(time.monotonic() - start)

    return timed


def packages_indices(indices: Iterable[tuple[str, float]]) -> None:
    """The Packages indices now in service, as (source type, when fetched)."""
    _current.packages_indices(indices)


def watch_children(alive: Callable[[], int]) -> None:
    """The multiprocessing core's count of children ready to render."""
    _current.watch_children(alive)


def snapshot() -> Snapshot:
    """This process's counts, for the parent process."""
    return _current.snapshot()


def relay(child: str, counts: Snapshot) -> None:
    """A child's counts, as its latest answer carried them."""
    _current.relay(child, counts)


def retire(child: str) -> None:
    """A child is gone; what it counted stays counted."""
    _current.retire(child)


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
    "packages_indices", "phase", "relay", "request", "retire", "snapshot",
    "timed_storage", "unauthorized", "use", "watch_children",
]

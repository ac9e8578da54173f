"""Ldap: client groups and data from an LDAP directory, by queries written in Python.

``Ldap/config.py`` is Python the admin writes, as with upstream Bcfg2: the
server executes it, with the server's own rights, when the plugin starts and
again whenever the file changes. It defines ``LdapQuery`` subclasses, each
naming an ``LdapConnection``, and lists those to run for every client in
``__queries__`` (Bcfg2 1.4) or passes them to ``register_query`` (1.3). A
file that fails to run is logged with its line; the queries of its last good
version stay in service.

For each client the applicable queries run with a time limit for the whole
metadata build (``[ldap] timeout``) and at most ``[ldap] max_entries``
entries per search. A query's processed result becomes
``metadata.Ldap[query.name]``; a query that overrides ``get_groups`` (this
server's addition) also gives the client groups, and runs while connector
groups are gathered, the others once they are known, as upstream has it.

Filters are built by the admin's code. In ``prepare_query`` the client's
host name, aliases, profile and groups, and the keyword values passed to a
sub-query's ``get_result`` (values from the directory), are ``FilterText``:
joined to a filter by ``+``, ``%`` or a format string they enter it escaped
(RFC 4515, ``ldap3``'s ``escape_filter_chars``), so ``"(cn=" +
metadata.hostname + ")"`` in an upstream config.py cannot change the filter's
structure. ``filter_format`` is the explicit way.

A directory that is down, slow or refuses the bind fails only the Ldap part
of a client's metadata (no Ldap groups, its queries' data ``None``); the
error is logged once per outage, and metadata built without it is not kept
by the metadata cache.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import math
import os
import threading
import time
import traceback
import types
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, ClassVar

try:
    import ldap3
    from ldap3.core import exceptions as ldap3_errors
    from ldap3.utils.conv import escape_filter_chars
except ImportError as _err:  # pragma: no cover - depends on the installation
    raise ImportError("the Ldap plugin needs the ldap3 library: pip install ldap3") from _err

from bcfg2.errors import PluginExecutionError, PluginInitError, RepositoryError
from bcfg2.plugin import Caching, Connector, FileBacked, Option, Plugin
from bcfg2.untrusted import GROUP_NAME, MAX_GROUP_NAME, escaped

if TYPE_CHECKING:
    from bcfg2.filemonitor import FileMonitor
    from bcfg2.metadata import ClientMetadata

logger = logging.getLogger("bcfg2.plugins.Ldap")
#: guards the outage state of every connection (marked by search and deadline threads)
_OUTAGE_LOCK = threading.Lock()

SCOPES = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}

#: LDAP result codes of a server that cannot answer now (busy, unavailable, unwilling)
UNAVAILABLE_CODES = frozenset({51, 52, 53})


# -- values that enter filters escaped -------------------------------------------------------


class FilterText(str):
    """Text that enters an LDAP filter escaped, however it is joined to one.

    Comparisons, hashing and ``str.__str__`` see the text itself; ``+``,
    ``%s``, f-strings and ``format`` see it escaped, and the common string
    methods (``split``, ``lower``, slicing...) give ``FilterText`` again.
    ``"".join`` reads the raw characters: use ``filter_format`` there.
    """

    __slots__ = ()

    @property
    def raw(self) -> str:
        """The text itself, as a plain string."""
        return str.__str__(self)

    def escaped(self) -> str:
        """The text escaped for an assertion value of a filter."""
        return escape_filter_chars(self.raw)

    def __str__(self) -> str:
        return self.escaped()

    def __format__(self, spec: str) -> str:
        return format(self.escaped(), spec)

    def __add__(self, other: str) -> str:  # type: ignore[override]
        return self.escaped() + other

    def __radd__(self, other: str) -> str:
        return other + self.escaped()

    def __getitem__(self, key: Any) -> FilterText:  # type: ignore[override]
        return FilterText(str.__getitem__(self, key))


def _keep_filter_text(result: Any) -> Any:
    if isinstance(result, str):
        return FilterText(result)
    if isinstance(result, (list, tuple)):
        return type(result)(_keep_filter_text(item) for item in result)
    return result


def _wrap_method(name: str) -> Callable[..., Any]:
    method = getattr(str, name)

    def wrapped(self: FilterText, *args: Any, **kwargs: Any) -> Any:
        return _keep_filter_text(method(self, *args, **kwargs))
    wrapped.__name__ = name
    wrapped.__doc__ = method.__doc__
    return wrapped


for _name in ("split", "rsplit", "partition", "rpartition", "lower", "upper", "casefold",
              "strip", "lstrip", "rstrip", "removeprefix", "removesuffix", "replace", "title",
              "capitalize", "splitlines"):
    setattr(FilterText, _name, _wrap_method(_name))


def plain(text: Any) -> Any:
    """A string as it is, without FilterText's escaping (other values unchanged)."""
    return str.__str__(text) if isinstance(text, str) else text


def filter_format(template: str, values: Iterable[Any]) -> str:
    """``template % values`` with every value escaped (python-ldap's ``filter_format``)."""
    return template % tuple(escape_filter_chars(plain(v) if isinstance(v, str) else str(v))
                            for v in values)


def _filter_value(value: Any) -> Any:
    """A value as prepare_query sees it: strings (and their collections) as FilterText."""
    if isinstance(value, str):
        return FilterText(plain(value))
    if isinstance(value, (set, frozenset)):
        return type(value)(_filter_value(v) for v in value)
    if isinstance(value, (list, tuple)):
        return type(value)(_filter_value(v) for v in value)
    return value


class FilterView:
    """A client's metadata as ``prepare_query`` sees it: names are FilterText.

    Everything else is the metadata's own attribute.
    """

    ESCAPED: ClassVar[frozenset[str]] = frozenset({"hostname", "aliases", "profile", "groups"})

    def __init__(self, metadata: Any) -> None:
        object.__setattr__(self, "_metadata", metadata)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._metadata, name)
        return _filter_value(value) if name in self.ESCAPED else value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("client metadata is read-only in prepare_query")

    def __repr__(self) -> str:
        return f"FilterView({self._metadata!r})"


def _unwrap(metadata: Any) -> Any:
    return metadata._metadata if isinstance(metadata, FilterView) else metadata


# -- one run's limits ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunLimits:
    """What bounds the queries of one metadata build: a deadline, retries, entries."""

    deadline: float
    retries: int = 3
    retry_delay: float = 3.0
    max_entries: int = 1000
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


#: the limits of the run in progress in this thread (queries run outside the plugin
#: get DEFAULT_TIMEOUT from now)
_LIMITS: contextvars.ContextVar[RunLimits | None] = contextvars.ContextVar("ldap_limits",
                                                                            default=None)
DEFAULT_TIMEOUT = 10.0


def current_limits() -> RunLimits:
    """The limits of the run in progress, or defaults starting now."""
    limits = _LIMITS.get()
    return limits if limits is not None else RunLimits(time.monotonic() + DEFAULT_TIMEOUT)


class DirectoryUnavailable(Exception):
    """The LDAP server did not answer (down, slow, or it refused the bind)."""


class BindRefused(DirectoryUnavailable):
    """The LDAP server refused the bind (wrong DN or password): retrying will not help."""


class QueryFailed(Exception):
    """The server answered a search with an error (bad base or filter, too many entries)."""


# -- connections and queries, as config.py uses them -----------------------------------------


class LdapConnection:
    """One LDAP server and the identity to bind with; queries name one.

    ``uri`` wins over ``host``/``port`` (port 636 means ldaps). ``options``
    holds keyword arguments for ``ldap3.Server`` (``use_ssl``, ``tls``) and
    ``ldap3.Connection`` (``authentication``, ``auto_referrals``...); the
    python-ldap ``OPT_*`` constants upstream took have no meaning here.
    Searches of one connection run one at a time; a forked process opens
    its own socket.
    """

    SERVER_OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"use_ssl", "tls", "allowed_referral_hosts", "mode", "formatter", "validator"})
    CONNECTION_OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"authentication", "auto_referrals", "sasl_mechanism", "sasl_credentials",
         "check_names", "auto_range", "use_referral_cache", "source_address", "source_port"})

    def __init__(self, host: str = "localhost", port: int = 389, uri: str | None = None,
                 options: dict[str, Any] | None = None, binddn: str | None = None,
                 bindpw: str | None = None) -> None:
        self.host = host
        self.port = port
        self.uri = uri
        self.options = dict(options or {})
        unknown = [str(k) for k in self.options
                   if k not in self.SERVER_OPTIONS | self.CONNECTION_OPTIONS]
        if unknown:
            raise ValueError(f"LdapConnection: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"options are ldap3 Server/Connection keyword arguments")
        self.binddn = binddn
        self.bindpw = bindpw
        self.conn: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: why the server is down (logged once), or None while it answers
        self.outage: str | None = None
        self._failed_at = 0.0

    def get_uri(self) -> str:
        """The server's URL."""
        if self.uri is not None:
            return self.uri
        if self.port == 636:
            return f"ldaps://{self.host}"
        return f"ldap://{self.host}:{self.port}"

    def connect(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Open the connection and bind (simple bind when binddn is set, else anonymous)."""
        self.disconnect()
        server_opts = {k: v for k, v in self.options.items() if k in self.SERVER_OPTIONS}
        conn_opts = {k: v for k, v in self.options.items() if k in self.CONNECTION_OPTIONS}
        server = ldap3.Server(**self._address(), connect_timeout=timeout, get_info=ldap3.NONE,
                              **server_opts)
        conn = ldap3.Connection(server, user=self.binddn, password=self.bindpw,
                                receive_timeout=max(1, math.ceil(timeout)),  # whole seconds
                                raise_exceptions=False,
                                read_only=True, **conn_opts)
        if not conn.bind():
            description = conn.result.get("description") if conn.result else None
            conn.unbind()
            raise BindRefused(f"bind as {self.binddn or 'anonymous'} refused: "
                                       f"{description or 'no reason given'}")
        self.conn = conn
        self._pid = os.getpid()

    def _address(self) -> dict[str, Any]:
        """ldap3.Server's host, port and use_ssl for the URI (ldapi URIs go as they are)."""
        uri = self.get_uri()
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("ldap", "ldaps"):
            return {"host": uri}
        try:
            port = parts.port
        except ValueError:
            raise DirectoryUnavailable(f"{uri} has no valid port") from None
        if not parts.hostname:
            raise DirectoryUnavailable(f"{uri} names no host")
        return {"host": parts.hostname, "port": port or (636 if parts.scheme == "ldaps" else 389),
                "use_ssl": parts.scheme == "ldaps"}

    def disconnect(self) -> None:
        """Close the connection, if one is open (in this process)."""
        conn, self.conn = self.conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.unbind()
            except (ldap3_errors.LDAPException, OSError):
                pass

    def run_query(self, query: LdapQuery) -> list[tuple[str, dict[str, list[Any]]]]:
        """Search as the query says; ``[(dn, {attribute: [values]})]`` sorted by DN.

        A connection that breaks is reopened up to ``retries`` times,
        ``retry_delay`` apart, while the run's deadline allows; a server
        that stays unreachable is DirectoryUnavailable (logged once per
        outage), and is not tried again for ``retry_delay`` seconds.
        """
        limits = current_limits()
        if self._pid != os.getpid():
            # forked (multiprocessing core): the parent's socket and lock are not ours
            self._lock = threading.Lock()
            self.conn = None
            self._pid = os.getpid()
        if self.outage is not None and time.monotonic() - self._failed_at < limits.retry_delay:
            raise DirectoryUnavailable(self.outage)
        if not self._lock.acquire(timeout=max(0.0, limits.remaining())):
            raise DirectoryUnavailable(f"{self.get_uri()}: busy with an earlier search")
        try:
            error: Exception | None = None
            for attempt in range(limits.retries + 1):
                if limits.remaining() <= 0:
                    break
                try:
                    result = self._search(query, limits)
                except BindRefused as err:
                    error = err
                    break  # the credentials will not get better by retrying
                except DirectoryUnavailable as err:
                    error = err
                    self.disconnect()
                except (ldap3_errors.LDAPCommunicationError, ldap3_errors.LDAPResponseTimeoutError,
                        ldap3_errors.LDAPSessionTerminatedByServerError, OSError) as err:
                    error = DirectoryUnavailable(f"{type(err).__name__}: {err}")
                    self.disconnect()
                else:
                    self._answering()
                    return result
                if attempt < limits.retries and limits.remaining() > limits.retry_delay:
                    if limits.stop.wait(limits.retry_delay):
                        break
                else:
                    break
            self.mark_down(error or DirectoryUnavailable("no time left to ask it"))
            raise DirectoryUnavailable(self.outage)
        finally:
            self._lock.release()

    def _search(self, query: LdapQuery,
                limits: RunLimits) -> list[tuple[str, dict[str, list[Any]]]]:
        if self.conn is None or self.conn.closed:
            self.connect(max(0.1, limits.remaining()))
        scope = SCOPES.get(plain(query.scope))
        if scope is None:
            raise QueryFailed(f"scope {query.scope!r} is not one of base, one, sub")
        attrs = query.attrs
        try:
            self.conn.search(
                plain(query.base), plain(query.filter), search_scope=scope,
                attributes=[plain(a) for a in attrs] if attrs else ldap3.ALL_ATTRIBUTES,
                size_limit=limits.max_entries, time_limit=max(1, math.ceil(limits.remaining())))
        except ldap3_errors.LDAPInvalidFilterError as err:
            raise QueryFailed(f"bad filter {plain(query.filter)!r}: {err}") from None
        code = self.conn.result.get("result") if self.conn.result else None
        if code in UNAVAILABLE_CODES:
            raise DirectoryUnavailable(f"server answered {self.conn.result.get('description')}")
        if code == 4:
            raise QueryFailed(f"more than {limits.max_entries} entries ([ldap] max_entries)")
        if code not in (0, None):
            raise QueryFailed(f"search under {plain(query.base)!r} failed: "
                              f"{self.conn.result.get('description')} "
                              f"{self.conn.result.get('message') or ''}".rstrip())
        entries = []
        for item in self.conn.response or ():
            if item.get("type") != "searchResEntry":
                continue
            attributes = {str(name): [_decoded(v) for v in values]
                          for name, values in item["raw_attributes"].items()}
            entries.append((item["dn"], attributes))
        entries.sort(key=lambda entry: entry[0])
        return entries

    def mark_down(self, error: Exception | str) -> None:
        """Note that the server does not answer; logged once until it answers again.

        The search that times out and the run whose deadline passed may both
        say so at once (two threads): one of them logs.
        """
        with _OUTAGE_LOCK:
            self._failed_at = time.monotonic()
            first = self.outage is None
            self.outage = f"{self.get_uri()}: {error}"
        if first:
            logger.error("Ldap: %s does not answer (%s); clients get no groups or data from "
                         "its queries until it does", self.get_uri(), error)

    def _answering(self) -> None:
        with _OUTAGE_LOCK:
            was_down, self.outage = self.outage is not None, None
        if was_down:
            logger.warning("Ldap: %s answers again", self.get_uri())

    def __repr__(self) -> str:
        return f"LdapConnection({self.get_uri()!r})"


def _decoded(value: bytes) -> str | bytes:
    """An attribute value as text when it is UTF-8, else the bytes."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


class LdapQuery:
    """One search that adapts itself to the client; config.py subclasses it.

    Set ``base``, ``connection`` and usually ``scope``, ``filter`` and
    ``attrs``; override ``prepare_query`` to adjust them to the client,
    ``process_result`` to turn ``self.result`` (``[(dn, {attr: [values]})]``)
    into the data templates see, ``is_applicable`` to skip clients, and
    ``get_groups`` to give groups.
    """

    #: the key of the result in ``metadata.Ldap`` (the class name unless set)
    name: ClassVar[str] = "LdapQuery"
    base: str = ""
    scope: str = "sub"
    filter: str = "(objectClass=*)"
    attrs: list[str] | None = None
    connection: LdapConnection | None = None
    result: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def is_applicable(self, metadata: ClientMetadata) -> bool:
        """Whether the query runs for this client (by default, for every client)."""
        return True

    def prepare_query(self, metadata: Any, **kwargs: Any) -> None:
        """Adjust base, filter... to the client (``metadata`` names are FilterText)."""

    def process_result(self, metadata: ClientMetadata, **kwargs: Any) -> Any:
        """What the query gives, made from ``self.result`` (by default the result itself)."""
        return self.result

    def get_groups(self, metadata: ClientMetadata) -> Iterable[str]:
        """Group names for the client, from ``self.result`` once processed (by default none)."""
        return ()

    def get_result(self, metadata: Any, **kwargs: Any) -> Any:
        """Prepare the query, run it on its connection and return the processed result.

        Keyword arguments reach prepare_query (as FilterText) and process_result.
        """
        if self.connection is None:
            raise PluginExecutionError(f"Ldap query {self.name} has no connection")
        real = _unwrap(metadata)
        self.prepare_query(FilterView(real), **{k: _filter_value(v) for k, v in kwargs.items()})
        self.result = self.connection.run_query(self)
        self.result = self.process_result(real, **kwargs)
        return self.result

    def __repr__(self) -> str:
        return f"<LdapQuery {self.name}>"


class LdapSubQuery(LdapQuery):
    """A query that other queries run themselves (``get_result(metadata, **kwargs)``).

    Upstream 1.3 kept sub-queries apart; here every LdapQuery takes keyword
    arguments, and this class stays for config files that name it. Only the
    queries listed in ``__queries__`` (or registered) run for every client.
    """


#: the registry of the config.py being executed (register_query adds to it)
_REGISTERED: contextvars.ContextVar[list[type[LdapQuery]] | None] = contextvars.ContextVar(
    "ldap_registered", default=None)


def register_query(query: type[LdapQuery]) -> type[LdapQuery]:
    """Run this query for every client (Bcfg2 1.3's way; usable as a decorator)."""
    registry = _REGISTERED.get()
    if registry is None:
        raise RuntimeError("register_query is for Ldap/config.py while the server loads it")
    registry.append(query)
    return query


# -- Ldap/config.py --------------------------------------------------------------------------


def _error_line(err: BaseException, filename: str) -> int | str:
    """The line of ``filename`` an error comes from (a syntax error says so itself)."""
    if isinstance(err, SyntaxError) and err.filename == filename:
        return err.lineno or "?"
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
             if frame.filename == filename]
    return lines[-1] if lines and lines[-1] is not None else "?"


class QueryConfig(FileBacked):
    """``Ldap/config.py``: executed on every change; ``queries`` of the last good version."""

    def __init__(self, name: str, fam: FileMonitor | None,
                 changed: Callable[[], None]) -> None:
        super().__init__(name, fam)
        self.queries: tuple[type[LdapQuery], ...] = ()
        self._changed = changed
        if fam is not None:
            fam.AddMonitor(name, self)

    def Index(self) -> None:  # noqa: N802
        """Execute the file and collect its queries; RepositoryError if that fails."""
        module = types.ModuleType("bcfg2_ldap_config")
        module.__file__ = self.name
        registered: list[type[LdapQuery]] = []
        token = _REGISTERED.set(registered)
        try:
            exec(compile(self.data, self.name, "exec"), module.__dict__)  # noqa: S102
        except Exception as err:
            raise RepositoryError(f"{self.name}:{_error_line(err, self.name)}: "
                                  f"{type(err).__name__}: {err}") from None
        finally:
            _REGISTERED.reset(token)
        names = module.__dict__.get("__queries__")
        if names is None:
            if not registered:
                raise RepositoryError(f"{self.name}: no __queries__ list and no register_query "
                                      f"call: no query would run")
            queries = registered
        else:
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise RepositoryError(f"{self.name}: __queries__ must be a list of class names")
            queries = []
            for qname in names:
                query = module.__dict__.get(qname)
                if not (isinstance(query, type) and issubclass(query, LdapQuery)):
                    raise RepositoryError(f"{self.name}: __queries__ names {qname!r}, which is "
                                          f"not an LdapQuery class of the file")
                queries.append(query)
        queries = list(dict.fromkeys(queries))
        seen: set[str] = set()
        for query in queries:
            if query.name in seen:
                raise RepositoryError(f"{self.name}: two queries are named {query.name!r}")
            seen.add(query.name)
        self.queries = tuple(queries)
        self._changed()

    def removed(self) -> None:
        logger.warning("%s was removed: no Ldap queries now", self.name)
        self.queries = ()
        self._changed()


# -- the plugin ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Pending:
    """What the groups phase of one metadata build leaves for its data phase."""

    deadline: float
    results: dict[str, Any]


class _Batch:
    """The outcomes of one batch of queries, filled by a worker until the caller stops waiting."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished: dict[str, tuple[Any, list[Any]]] = {}
        self.failed: set[str] = set()
        self.closed = False

    def add(self, name: str, outcome: tuple[Any, list[Any]]) -> bool:
        """Record a query's outcome; False when the caller no longer waits for it."""
        with self.lock:
            if not self.closed:
                self.finished[name] = outcome
            return not self.closed

    def fail(self, name: str) -> None:
        with self.lock:
            self.failed.add(name)


def _gives_groups(query: type[LdapQuery]) -> bool:
    return query.get_groups is not LdapQuery.get_groups


class Ldap(Plugin, Connector, Caching):
    """Groups and ``metadata.Ldap`` data from the queries of Ldap/config.py."""

    experimental = True
    __rmi__: ClassVar[list[str]] = [*Plugin.__rmi__, "expire_cache"]

    options = (
        Option("ldap", "timeout", 10.0,
               "Most seconds the LDAP queries of one client's metadata may take together; "
               "past it the client gets its metadata without what is missing.", type="float"),
        Option("ldap", "retries", 3,
               "How many times a broken connection to an LDAP server is reopened within one "
               "query (inside the timeout).", type="int"),
        Option("ldap", "retry_delay", 3.0,
               "Seconds between reconnection attempts; a server found down is not asked again "
               "before this much time has passed.", type="float"),
        Option("ldap", "max_entries", 1000,
               "Most entries one search may return; a search that would return more fails "
               "(its query gives nothing).", type="int"),
        Option("ldap", "cache", "",
               "Unset: queries run for every metadata build. on: results are kept until "
               "Ldap.expire_cache is called or config.py changes. off: as unset."),
        Option("ldap", "workers", 4,
               "Threads that run LDAP queries (a client waits at most the timeout for one).",
               type="int"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        setup = core.setup.ldap
        self.timeout = float(setup.timeout)
        self.retries = int(setup.retries)
        self.retry_delay = float(setup.retry_delay)
        self.max_entries = int(setup.max_entries)
        workers = int(setup.workers)
        cache = str(setup.cache).strip().lower()
        if cache not in ("", "on", "off", "true", "false", "yes", "no", "1", "0"):
            raise PluginInitError(f"[ldap] cache must be on or off, not {setup.cache!r}")
        self.keep_results = cache in ("on", "true", "yes", "1")
        for name, value in (("timeout", self.timeout), ("retry_delay", self.retry_delay)):
            if not value > 0:
                raise PluginInitError(f"[ldap] {name} must be positive")
        if self.retries < 0 or self.max_entries < 1 or workers < 1:
            raise PluginInitError("[ldap] retries must not be negative, max_entries and "
                                  "workers must be at least 1")
        self._stop = threading.Event()
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ldap")
        self._pool_pid = os.getpid()
        self._pending: weakref.WeakKeyDictionary[Any, _Pending] = weakref.WeakKeyDictionary()
        self._kept: dict[tuple[str, str], Any] = {}
        self._kept_lock = threading.Lock()
        self._failures: dict[str, str] = {}
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: Ldap gives no groups or data", self.data)
        self.config = QueryConfig(os.path.join(self.data, "config.py"), core.fam,
                                  self._config_changed)

    def _config_changed(self) -> None:
        self.logger.info("Ldap: %d queries in service: %s", len(self.config.queries),
                         ", ".join(q.name for q in self.config.queries) or "none")
        self.expire_cache()
        self.expire_metadata()

    # -- the Connector hooks ---------------------------------------------------------------

    def get_additional_groups(self, metadata: ClientMetadata) -> list[str]:
        """The groups of the queries that give groups, sorted; their results are kept for
        this build's data."""
        pending = _Pending(time.monotonic() + self.timeout, {})
        queries = [q for q in self.config.queries if _gives_groups(q)]
        outcomes = self._run(queries, metadata, pending.deadline)
        pending.results = {name: result for name, (result, _groups) in outcomes.items()}
        self._pending[metadata] = pending
        groups: set[str] = set()
        for name, (_result, names) in outcomes.items():
            groups.update(self._checked_groups(name, names, metadata))
        return sorted(groups)

    def get_additional_data(self, metadata: ClientMetadata) -> dict[str, Any]:
        """Query name -> processed result (None where the query failed), in config order."""
        pending = self._pending.pop(metadata, None)
        if pending is None:
            pending = _Pending(time.monotonic() + self.timeout, {})
        todo = [q for q in self.config.queries if q.name not in pending.results]
        outcomes = self._run(todo, metadata, pending.deadline)
        data: dict[str, Any] = {}
        for query in self.config.queries:
            if query.name in pending.results:
                data[query.name] = pending.results[query.name]
            elif query.name in outcomes:
                data[query.name] = outcomes[query.name][0]
        return data

    # -- running queries -------------------------------------------------------------------

    def _run(self, queries: list[type[LdapQuery]], metadata: ClientMetadata,
             deadline: float) -> dict[str, tuple[Any, list[Any]]]:
        """Run the applicable queries in a worker, waiting until the deadline at most.

        Returns name -> (result, groups) for every query that was applicable
        (result None where it failed or did not finish).
        """
        applicable = [q for q in queries if self._applicable(q, metadata)]
        if not applicable:
            return {}
        done: dict[str, tuple[Any, list[Any]]] = {}
        todo: list[type[LdapQuery]] = []
        for query in applicable:
            kept = self._kept.get((query.name, metadata.hostname)) if self.keep_results else None
            if kept is not None:
                done[query.name] = kept
            else:
                todo.append(query)
        if todo:
            limits = RunLimits(deadline, self.retries, self.retry_delay, self.max_entries,
                               self._stop)
            batch = _Batch()
            if self._pool_pid != os.getpid():  # forked: the parent's workers are not here
                self._pool = ThreadPoolExecutor(max_workers=self._workers,
                                                thread_name_prefix="ldap")
                self._pool_pid = os.getpid()
            future = self._pool.submit(self._work, todo, metadata, limits, batch)
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                future.cancel()
            with batch.lock:
                batch.closed = True
                finished = dict(batch.finished)
                failed = [q.name for q in todo if q.name not in finished]
            late = [q for q in todo if q.name in failed and q.name not in batch.failed]
            for query in late:
                # slow to answer is down for this client; logged once with the outage
                if isinstance(query.connection, LdapConnection):
                    query.connection.mark_down(f"no answer within {self.timeout:g} s "
                                               f"([ldap] timeout)")
                self.debug_log(f"Ldap: query {query.name} for {metadata.hostname} did not "
                               f"finish in time")
            done.update(finished)
            for name in failed:
                done[name] = (None, [])
            if failed:
                # metadata built without the directory must not stay in the metadata cache
                self.expire_metadata(metadata.hostname)
        return {q.name: done[q.name] for q in applicable if q.name in done}

    def _applicable(self, query: type[LdapQuery], metadata: ClientMetadata) -> bool:
        try:
            return bool(query().is_applicable(metadata))
        except Exception as err:
            self._failed(query.name, err)
            return False

    def _work(self, queries: list[type[LdapQuery]], metadata: ClientMetadata, limits: RunLimits,
              batch: _Batch) -> None:
        """Run queries one after another (in a worker thread) until the deadline."""
        token = _LIMITS.set(limits)
        try:
            for query_class in queries:
                if limits.remaining() <= 0 or limits.stop.is_set() or batch.closed:
                    return
                name = query_class.name
                try:
                    query = query_class()
                    result = query.get_result(metadata)
                    groups = list(query.get_groups(metadata)) if _gives_groups(query_class) else []
                except DirectoryUnavailable as err:
                    self.debug_log(f"Ldap: query {name} for {metadata.hostname}: {err}")
                    batch.fail(name)
                    continue
                except Exception as err:
                    self._failed(name, err)
                    batch.fail(name)
                    continue
                if self._failures.pop(name, None) is not None:
                    self.logger.warning("Ldap: query %s works again", name)
                if batch.add(name, (result, groups)) and self.keep_results:
                    with self._kept_lock:
                        self._kept[(name, metadata.hostname)] = (result, groups)
        finally:
            _LIMITS.reset(token)

    def _failed(self, name: str, err: Exception) -> None:
        """Log a query's failure once until it changes or the query works again."""
        where = _error_line(err, self.config.name)
        message = f"{type(err).__name__}: {err}" if not isinstance(err, QueryFailed) else str(err)
        if where != "?":
            message = f"{self.config.name}:{where}: {message}"
        if self._failures.get(name) != message:
            self.logger.error("Ldap: query %s failed (%s); it gives nothing until fixed",
                              name, message, exc_info=not isinstance(err, QueryFailed))
        self._failures[name] = message

    def _checked_groups(self, name: str, groups: Iterable[Any],
                        metadata: ClientMetadata) -> Iterator[str]:
        """The group names a query gave that are names; the others are logged and dropped."""
        for group in groups:
            group = plain(group)
            if (isinstance(group, str) and len(group) <= MAX_GROUP_NAME
                    and GROUP_NAME.fullmatch(group)):
                yield group
            else:
                self.logger.warning("Ldap: query %s gave %s the invalid group name %s",
                                    name, escaped(metadata.hostname),
                                    escaped(repr(group), 120))

    # -- caching ---------------------------------------------------------------------------

    def expire_cache(self, key: str | None = None, hostname: str | None = None) -> None:
        """Forget kept results: all, one client's (``key``), or (as upstream's RMI takes
        them) one query's named by ``key``, optionally for one client ``hostname``."""
        names = {q.name for q in self.config.queries}
        query, host = (key, hostname) if key in names else (None, key if hostname is None
                                                                else hostname)
        with self._kept_lock:
            for kept in list(self._kept):
                if (query is None or kept[0] == query) and (host is None or kept[1] == host):
                    del self._kept[kept]

    def shutdown(self) -> None:
        """Stop waiting retries and the query workers."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().shutdown()


__all__ = ["BindRefused", "DirectoryUnavailable", "FilterText", "FilterView", "Ldap", "LdapConnection",
           "LdapQuery", "LdapSubQuery", "QueryConfig", "QueryFailed", "RunLimits",
           "current_limits", "filter_format", "plain", "register_query"]

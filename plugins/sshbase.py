"""SSHbase: per-host ssh host keys and an ``ssh_known_hosts`` built from them.

Keys live in ``SSHbase/`` under the upstream file names:
``ssh_host_rsa_key.H_<host>`` and ``ssh_host_rsa_key.pub.H_<host>`` (or
``.G<prio>_<group>`` for pre-seeded group keys). A client that asks for a key
it has none of gets a new pair from ``ssh-keygen``, made once and kept in the
repository so that it survives a rebuild of the client.

``/etc/ssh/ssh_known_hosts`` lists every host's public keys under the names
Bcfg2 1.4 writes for it, sorted: the host name and its ``<Alias>`` names from
clients.xml, the short form of each (``lucid1`` for ``lucid1.example.com``),
the addresses clients.xml gives the host and its aliases, and, from DNS, the
address of each name and the names of those addresses. A group key
(``ssh_host_rsa_key.pub.G50_cluster``) is listed under the names of every
client of the group. Then come the ``*.static`` files, then a localhost
record with the client's own keys. It is rebuilt only when a public key or the
clients change (or a DNS answer that was late arrives). A
``ssh_known_hosts.H_<host>`` (or ``.G<prio>_<group>``) file is served as it is
instead. ``info.xml`` may override owner, group, mode...

DNS look-ups run in a few worker threads and a build of ssh_known_hosts waits
for them at most ``[sshbase] dns_timeout`` seconds in all; an answer (or a
failure) is kept ``dns_cache_time`` seconds. ``dns = false`` turns them off.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import lxml.etree

from bcfg2.errors import StorageError
from bcfg2.filemonitor import Event
from bcfg2.generated import shared_files
from bcfg2.identity import valid_client_name
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option
from bcfg2.plugin import (
    SPECIFIC_SUFFIX,
    Caching,
    EntrySet,
    FileBacked,
    Generator,
    InfoXML,
    Plugin,
    PluginExecutionError,
    SpecificData,
    bind_info,
    default_path_metadata,
    depends_on,
    not_cacheable,
    set_content,
)

__all__ = ["KEY_TYPES", "NameCache", "SSHbase"]

#: ssh-keygen key type -> file name of the private key (the public one adds .pub)
KEY_TYPES: dict[str, str] = {
    "rsa1": "ssh_host_key",
    "rsa": "ssh_host_rsa_key",
    "dsa": "ssh_host_dsa_key",
    "ecdsa": "ssh_host_ecdsa_key",
    "ed25519": "ssh_host_ed25519_key",
}
KNOWN_HOSTS = "ssh_known_hosts"
SSH_DIR = "/etc/ssh/"
KEYGEN_TIMEOUT = 120


#: the most DNS look-ups running at once
DNS_WORKERS = 4


def forward_lookup(name: str) -> tuple[str, ...]:
    """The IPv4 address of a name, as Bcfg2 asks it (``gethostbyname``)."""
    return (socket.gethostbyname(name),)


def reverse_lookup(address: str) -> tuple[str, ...]:
    """The name of an address and its other names (``gethostbyaddr``)."""
    name, aliases, _addresses = socket.gethostbyaddr(address)
    return (name, *aliases)


class NameCache:
    """DNS answers kept for a while; look-ups bounded in time, run in worker threads.

    ``lookup`` waits at most ``timeout`` seconds for the answers it does not
    have; one that comes later is kept for the next call, and ``generation``
    changes so that whoever built something without it can build it again.
    A name or address that does not resolve is kept as no answer.
    """

    def __init__(self, resolve: Callable[[str], tuple[str, ...]], timeout: float,
                 ttl: float) -> None:
        self.resolve = resolve
        self.timeout = timeout
        self.ttl = ttl
        self.generation = 0
        self._answers: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._pending: dict[str, concurrent.futures.Future[tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def lookup(self, keys: Iterable[str]) -> tuple[dict[str, tuple[str, ...]], bool]:
        """The answers for ``keys`` known within the time limit (others: ()), and whether
        that is all of them."""
        now = time.monotonic()
        out: dict[str, tuple[str, ...]] = {}
        waiting: dict[str, concurrent.futures.Future[tuple[str, ...]]] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                known = self._answers.get(key)
                if known is not None and known[0] > now:
                    out[key] = known[1]
                    continue
                future = self._pending.get(key)
                if future is None:
                    if self._pool is None:
                        self._pool = concurrent.futures.ThreadPoolExecutor(
                            DNS_WORKERS, thread_name_prefix="sshbase-dns")
                    future = self._pool.submit(self._answer, key)
                    self._pending[key] = future
                waiting[key] = future
        if waiting:
            concurrent.futures.wait(waiting.values(), timeout=self.timeout)
        complete = True
        for key, future in waiting.items():
            complete = complete and future.done()
            out[key] = future.result() if future.done() else ()
        return out, complete

    def _answer(self, key: str) -> tuple[str, ...]:
        try:
            answer = tuple(self.resolve(key))
        except (OSError, UnicodeError, ValueError):
            answer = ()
        with self._lock:
            self._answers[key] = (time.monotonic() + self.ttl, answer)
            self._pending.pop(key, None)
            self.generation += 1
        return answer

    def close(self) -> None:
        """Stop the worker threads (a look-up under way is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _host_name(name: str) -> str | None:
    """A name from DNS fit for ssh_known_hosts (lower case), or None."""
    name = name.rstrip(".").lower()
    return name if valid_client_name(name) else None


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class SSHbase(Plugin, Generator, Caching):
    """Serves ssh host keys (generated on first request) and ssh_known_hosts."""

    __rmi__ = Plugin.__rmi__ + ["regenerate_keys"]

    options = (
        Option("sshbase", "dns", True,
               "Add to ssh_known_hosts what DNS says of each host, as Bcfg2 does: the address "
               "of its names and the names of those addresses.", type="bool"),
        Option("sshbase", "dns_timeout", 2.0,
               "Longest wait, in seconds, for DNS answers while ssh_known_hosts is built; "
               "later answers are used when they come.", type="float"),
        Option("sshbase", "dns_cache_time", 3600,
               "How long, in seconds, a DNS answer (or a failure) is kept.", type="int"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
        settings = core.setup.sshbase
        self.dns = bool(settings.dns)
        timeout, ttl = float(settings.dns_timeout), float(settings.dns_cache_time)
        # looked up by module name at each call, so that tests can replace the resolver
        self.addresses_of = NameCache(lambda name: forward_lookup(name), timeout, ttl)
        self.names_of = NameCache(lambda address: reverse_lookup(address), timeout, ttl)
        if not os.path.isdir(self.data):
            os.makedirs(self.data, mode=0o700, exist_ok=True)
        defaults = default_path_metadata(core.setup)
        self.entry_sets: dict[str, EntrySet] = {}
        #: file name -> (key type, default Path attributes)
        self.kinds: dict[str, tuple[str | None, dict[str, str]]] = {}
        for key_type, fname in KEY_TYPES.items():
            extra = {"encoding": "base64"} if key_type == "rsa1" else {}
            self.kinds[fname] = (key_type, {**defaults, "mode": "0600",
                                            "sensitive": "true", **extra})
            self.kinds[fname + ".pub"] = (key_type, {**defaults, "mode": "0644", **extra})
        self.kinds[KNOWN_HOSTS] = (None, {**defaults, "mode": "0644"})
        self.Entries["Path"] = {}
        for fname in self.kinds:
            self.entry_sets[fname] = EntrySet(fname, self.data, SpecificData, core.setup)
            self.Entries["Path"][SSH_DIR + fname] = self._binder(fname)
        self.infoxml: InfoXML | None = None
        self.static: dict[str, FileBacked] = {}
        self._gen_lock = threading.Lock()
        #: the fleet's record of generated keys (PostgreSQL), or None (SQLite: this repository)
        self.shared = shared_files(core.setup)
        #: bumped by every change to a public key or a .static file
        self._keys_version = 0
        #: (keys version, metadata generation, DNS generations, the shared part)
        self._known_hosts: tuple[int, int, tuple[int, int], str] | None = None
        core.fam.AddMonitor(self.data, self)

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond SSHbase/ (the keys; ssh_known_hosts is never kept)."""
        return ""

    def _binder(self, fname: str) -> Callable[[lxml.etree._Element, ClientMetadata],
                                              lxml.etree._Element]:
        def bind(entry: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:
            return self.bind_entry(fname, entry, metadata)
        return bind

    # -- the repository --------------------------------------------------------

    def _entry_set_for(self, fname: str) -> str | None:
        """The served file a repository file is a version of (longest name first).

        A host-specific version must name a valid client, all of its name: a
        key file of a client that registered as "victim.example.com" plus a
        newline is no key of victim.example.com and is ignored.
        """
        for base in sorted(self.entry_sets, key=len, reverse=True):
            if fname == base:
                return base
            match = SPECIFIC_SUFFIX.fullmatch(fname, len(base)) \
                if fname.startswith(base) else None
            if match is not None:
                host = match.group("hostname")
                return base if host is None or valid_client_name(host) else None
        return None

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        """Keep keys, static files and info.xml current as SSHbase/ changes."""
        if event.action == "endExist" or event.path == self.data:
            return
        fname = os.path.basename(event.path)
        if fname.startswith(".") or EntrySet.ignore.fullmatch(fname) or os.path.isdir(event.path):
            return
        if fname == "info.xml":
            if event.action == "deleted":
                self.infoxml = None
            else:
                if self.infoxml is None:
                    self.infoxml = InfoXML(event.path, self.core.fam)
                self.infoxml.HandleEvent(event)
            return
        if fname.endswith(".static"):
            if event.action == "deleted":
                self.static.pop(fname, None)
            elif event.action in ("exists", "created", "changed"):
                static = FileBacked(event.path)
                static.HandleEvent(event)
                self.static[fname] = static
            self._keys_changed()
            return
        base = self._entry_set_for(fname)
        if base is None:
            self.logger.warning("%r: not a file SSHbase serves (for a valid client name); "
                                "ignoring it", event.path)
            return
        self.entry_sets[base].handle_event(event)
        if base.endswith(".pub"):
            self._keys_changed()

    def _keys_changed(self) -> None:
        self._keys_version += 1

    def expire_cache(self, key: str | None = None) -> None:
        """Forget the shared part of ssh_known_hosts; it is rebuilt on the next request."""
        self._known_hosts = None

    # -- binding ---------------------------------------------------------------

    def bind_entry(self, fname: str, entry: lxml.etree._Element,
                   metadata: ClientMetadata) -> lxml.etree._Element:
        """Fill a Path entry for one of the served files."""
        key_type, defaults = self.kinds[fname]
        depends_on(self.data)  # keys, their versions, info.xml, the .static files
        if key_type is None:
            not_cacheable("ssh_known_hosts lists every client's keys, names and addresses")
        elif self.shared is not None:
            not_cacheable("SSHbase keys are shared through the database")
        entry.set("type", "file")
        bind_info(entry, metadata, self.infoxml, defaults)
        if key_type is None:
            data = self._known_hosts_for(metadata)
        else:
            data = self._key_data(fname, key_type, metadata)
        set_content(entry, data)
        return entry

    def _key_data(self, fname: str, key_type: str, metadata: ClientMetadata) -> bytes:
        entry_set = self.entry_sets[fname]
        if not entry_set.get_matching(metadata):
            self.generate_keys(metadata.hostname, key_type)
        return entry_set.best_matching(metadata).data

    def _known_hosts_for(self, metadata: ClientMetadata) -> str:
        entry_set = self.entry_sets[KNOWN_HOSTS]
        if entry_set.get_matching(metadata):
            return entry_set.best_matching(metadata).data.decode("utf-8", "replace")
        lines = [self._shared_known_hosts(metadata)]
        for key_type, fname in KEY_TYPES.items():
            if key_type == "rsa1":
                continue  # protocol 1 keys have a different known_hosts format
            matching = self.entry_sets[fname + ".pub"].get_matching(metadata)
            if matching:
                pub = self.entry_sets[fname + ".pub"].best_matching(metadata, matching)
                lines.append(f"localhost,localhost.localdomain,127.0.0.1 "
                             f"{pub.data.decode('utf-8', 'replace').strip()}\n")
        return "".join(lines)

    def _dns_generation(self) -> tuple[int, int]:
        return (self.addresses_of.generation, self.names_of.generation)

    def _shared_known_hosts(self, metadata: ClientMetadata) -> str:
        """Every host's and group's public keys and the static files; cached until they change."""
        version = self._keys_version
        generation = self.metadata_generation
        dns = self._dns_generation()
        cached = self._known_hosts
        if cached is not None and cached[:3] == (version, generation, dns):
            return cached[3]
        by_host: dict[str, list[bytes]] = {}
        by_group: dict[str, list[bytes]] = {}
        for key_type, fname in KEY_TYPES.items():
            if key_type == "rsa1":
                continue
            for item in list(self.entry_sets[fname + ".pub"].entries.values()):
                if item.specific.hostname:
                    by_host.setdefault(str(item.specific.hostname), []).append(item.data)
                elif item.specific.group:
                    by_group.setdefault(str(item.specific.group), []).append(item.data)
        clients = set(self.core.metadata.list_clients())
        members = {group: sorted(metadata.query.names_by_groups([group]))
                   for group in by_group}
        hosts = set(by_host).union(*members.values())
        names, complete = self._names(sorted(hosts), clients)
        lines = []
        for host in sorted(by_host):
            lines.extend(f"{','.join(names[host])} {data.decode('utf-8', 'replace').strip()}\n"
                         for data in by_host[host])
        for group in sorted(by_group):
            listed = list(dict.fromkeys(name for host in members[group] for name in names[host]))
            if not listed:
                self.logger.debug("ssh_known_hosts: no client in group %s for its keys", group)
                continue
            lines.extend(f"{','.join(listed)} {data.decode('utf-8', 'replace').strip()}\n"
                         for data in by_group[group])
        for fname in sorted(self.static):
            text = self.static[fname].data.decode("utf-8", "replace")
            lines.append(text if text.endswith("\n") or not text else text + "\n")
        result = "".join(lines)
        # built without some DNS answers: build it again once any answer comes in
        self._known_hosts = (version, generation, self._dns_generation() if complete else dns,
                             result)
        return result

    def _names(self, hosts: list[str],
               clients: set[str]) -> tuple[dict[str, list[str]], bool]:
        """The names each host is listed under, as Bcfg2 1.4 lists them (sorted), and
        whether every DNS answer was there in time.

        Its name and aliases (clients.xml), the short form of each, the
        addresses clients.xml gives, and from DNS the address of each name and
        of the aliases, and the names of those addresses.
        """
        known: dict[str, tuple[set[str], set[str]]] = {}
        for host in hosts:
            aliases: set[str] = set()
            addresses: set[str] = set()
            if host in clients:
                try:
                    imd = self.core.metadata.get_initial_metadata(host)
                except Exception as err:
                    self.logger.warning("ssh_known_hosts: no metadata for %s: %s", host, err)
                else:
                    aliases, addresses = set(imd.aliases), set(imd.addresses)
            known[host] = ({host} | aliases, addresses)
        forward: dict[str, tuple[str, ...]] = {}
        reverse: dict[str, tuple[str, ...]] = {}
        complete = True
        if self.dns:
            forward, complete = self.addresses_of.lookup(
                sorted({name for full, _ in known.values() for name in full}))
            found = {a for answer in forward.values() for a in answer if _address(a)}
            reverse, done = self.names_of.lookup(sorted(found))
            complete = complete and done
        out: dict[str, list[str]] = {}
        for host, (full, addresses) in known.items():
            names = set(full) | {name.split(".")[0] for name in full} | addresses
            for name in full:
                for address in filter(None, map(_address, forward.get(name, ()))):
                    names.add(address)
                    names.update(filter(None, map(_host_name, reverse.get(address, ()))))
            out[host] = sorted(names)
        return out, complete

    def shutdown(self) -> None:
        self.addresses_of.close()
        self.names_of.close()
        if self.shared is not None:
            self.shared.close()
        super().shutdown()

    # -- key generation --------------------------------------------------------

    def generate_keys(self, hostname: str, key_type: str) -> None:
        """Make the key pair of one type for a host, once, and load it.

        A thread lock and a lock on the SSHbase directory (for other server
        processes) make concurrent requests generate a single pair; keys that
        appear on disk meanwhile are loaded instead.
        """
        if not valid_client_name(hostname):
            raise PluginExecutionError(f"SSHbase: refusing to store keys for {hostname!r}")
        fname = KEY_TYPES[key_type]
        private = os.path.join(self.data, f"{fname}.H_{hostname}")
        public = os.path.join(self.data, f"{fname}.pub.H_{hostname}")
        with self._gen_lock:
            dir_fd = os.open(self.data, os.O_RDONLY)
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX)
                exists = [os.path.exists(path) for path in (private, public)]
                if not any(exists) and self.shared is not None:
                    self._shared_keys(hostname, key_type, private, public)
                elif not any(exists):
                    self._run_keygen(hostname, key_type, private, public)
                elif not all(exists):
                    raise PluginExecutionError(
                        f"SSHbase: only one of {private} and {public} exists; add the "
                        f"other or remove it to have a new pair generated")
            finally:
                os.close(dir_fd)  # releases the flock
        for path in (private, public):
            self._load(path)

    def regenerate_keys(self, hostname: str) -> list[str]:
        """Replace a host's key pairs with new ones (an admin's RMI): each key type it has
        is removed (from the fleet's record too) and made again. The types made, sorted."""
        if not valid_client_name(hostname):
            raise PluginExecutionError(f"SSHbase: refusing to touch keys of {hostname!r}")
        made: list[str] = []
        with self._gen_lock:
            dir_fd = os.open(self.data, os.O_RDONLY)
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX)
                for key_type, fname in sorted(KEY_TYPES.items()):
                    pair = [os.path.join(self.data, f"{fname}{suffix}.H_{hostname}")
                            for suffix in ("", ".pub")]
                    if not any(os.path.exists(path) for path in pair):
                        continue
                    if self.shared is not None:
                        try:
                            self.shared.forget(pair[0])
                        except StorageError as err:
                            raise PluginExecutionError(
                                f"SSHbase: cannot forget the {key_type} key of {hostname}: "
                                f"{err}") from err
                    for path in pair:
                        if os.path.exists(path):
                            os.unlink(path)
                        self.HandleEvent(Event(0, os.path.basename(path), "deleted", path))
                    made.append(key_type)
            finally:
                os.close(dir_fd)
        for key_type in made:
            self.generate_keys(hostname, key_type)
        if made:
            self.logger.info("Regenerated the %s host keys of %s", ", ".join(made), hostname)
        return made

    def _shared_keys(self, hostname: str, key_type: str, private: str, public: str) -> None:
        """The pair from the fleet's generated_files table, or made now and recorded there."""
        assert self.shared is not None

        def make() -> dict[str, tuple[bytes, int]]:
            tmpdir = tempfile.mkdtemp(prefix=".sshbase-", dir=self.data)
            try:
                made_private = os.path.join(tmpdir, "private")
                made_public = os.path.join(tmpdir, "public")
                self._run_keygen(hostname, key_type, made_private, made_public)
                with open(made_private, "rb") as fh:
                    private_data = fh.read()
                with open(made_public, "rb") as fh:
                    public_data = fh.read()
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
            return {private: (private_data, 0o600), public: (public_data, 0o644)}

        try:
            files = self.shared.ensure(private, make)
        except StorageError as err:
            raise PluginExecutionError(f"SSHbase: the {key_type} host key of {hostname}: "
                                       f"{err}") from err
        if {os.path.realpath(path) for path in files} != {os.path.realpath(private),
                                                          os.path.realpath(public)}:
            raise PluginExecutionError(
                f"SSHbase: generated_files holds {len(files)} files for {private}, not the "
                f"pair; remove its rows to have a new pair generated")

    def _run_keygen(self, hostname: str, key_type: str, private: str, public: str) -> None:
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise PluginExecutionError(
                f"SSHbase: ssh-keygen is not installed; cannot generate the {key_type} "
                f"host key for {hostname}")
        tmpdir = tempfile.mkdtemp(prefix=".sshbase-", dir=self.data)
        try:
            keyfile = os.path.join(tmpdir, "key")
            try:
                proc = subprocess.run(
                    [keygen, "-q", "-t", key_type, "-N", "", "-C", f"root@{hostname}",
                     "-f", keyfile],
                    stdin=subprocess.DEVNULL, capture_output=True, timeout=KEYGEN_TIMEOUT,
                    check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise PluginExecutionError(
                    f"SSHbase: ssh-keygen failed for the {key_type} key of {hostname}: "
                    f"{err}") from err
            if proc.returncode != 0:
                message = proc.stderr.decode("utf-8", "replace").strip()
                self.logger.warning("ssh-keygen cannot generate %s keys: %s", key_type, message)
                raise PluginExecutionError(
                    f"SSHbase: ssh-keygen cannot generate the {key_type} key of "
                    f"{hostname}: {message}")
            os.chmod(keyfile, 0o600)
            os.replace(keyfile + ".pub", public)
            os.replace(keyfile, private)
            self.logger.info("Generated the %s host key of %s", key_type, hostname)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _load(self, path: str) -> None:
        """Read a key file now, without waiting for the file monitor to report it."""
        fname = os.path.basename(path)
        self.HandleEvent(Event(0, fname, "created", path))

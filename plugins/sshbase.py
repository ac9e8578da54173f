"""SSHbase: per-host ssh host keys and an ``ssh_known_hosts`` built from them.

Keys live in ``SSHbase/`` under the upstream file names:
``ssh_host_rsa_key.H_<host>`` and ``ssh_host_rsa_key.pub.H_<host>`` (or
``.G<prio>_<group>`` for pre-seeded group keys). A client that asks for a key
it has none of gets a new pair from ``ssh-keygen``, made once and kept in the
repository so that it survives a rebuild of the client.

``/etc/ssh/ssh_known_hosts`` lists every host's public keys under the host's
name, aliases and addresses, then the ``*.static`` files, then a localhost
record with the client's own keys. It is rebuilt only when a public key or the
clients change. A ``ssh_known_hosts.H_<host>`` (or ``.G<prio>_<group>``) file
is served as it is instead. ``info.xml`` may override owner, group, mode...
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import lxml.etree

from bcfg2.filemonitor import Event
from bcfg2.identity import valid_client_name
from bcfg2.metadata import ClientMetadata
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
    set_content,
)

__all__ = ["KEY_TYPES", "SSHbase"]

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


class SSHbase(Plugin, Generator, Caching):
    """Serves ssh host keys (generated on first request) and ssh_known_hosts."""

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Generator.__init__(self)
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
        #: bumped by every change to a public key or a .static file
        self._keys_version = 0
        #: (keys version, metadata generation, the shared part of ssh_known_hosts)
        self._known_hosts: tuple[int, int, str] | None = None
        core.fam.AddMonitor(self.data, self)

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
        lines = [self._shared_known_hosts()]
        for key_type, fname in KEY_TYPES.items():
            if key_type == "rsa1":
                continue  # protocol 1 keys have a different known_hosts format
            matching = self.entry_sets[fname + ".pub"].get_matching(metadata)
            if matching:
                pub = self.entry_sets[fname + ".pub"].best_matching(metadata, matching)
                lines.append(f"localhost,localhost.localdomain,127.0.0.1 "
                             f"{pub.data.decode('utf-8', 'replace').strip()}\n")
        return "".join(lines)

    def _shared_known_hosts(self) -> str:
        """Every host's public keys and the static files; cached until they change."""
        version = self._keys_version
        generation = self.metadata_generation
        cached = self._known_hosts
        if cached is not None and cached[:2] == (version, generation):
            return cached[2]
        by_host: dict[str, list[bytes]] = {}
        for key_type, fname in KEY_TYPES.items():
            if key_type == "rsa1":
                continue
            for item in list(self.entry_sets[fname + ".pub"].entries.values()):
                host = item.specific.hostname
                if host:
                    by_host.setdefault(str(host), []).append(item.data)
        lines = []
        clients = set(self.core.metadata.list_clients())
        for host in sorted(by_host):
            names = ",".join(self._names(host, clients))
            lines.extend(f"{names} {data.decode('utf-8', 'replace').strip()}\n"
                         for data in by_host[host])
        for fname in sorted(self.static):
            text = self.static[fname].data.decode("utf-8", "replace")
            lines.append(text if text.endswith("\n") or not text else text + "\n")
        result = "".join(lines)
        self._known_hosts = (version, generation, result)
        return result

    def _names(self, host: str, clients: set[str]) -> list[str]:
        """A host's name, aliases and addresses (from clients.xml; no DNS lookups)."""
        names = [host]
        if host in clients:
            try:
                imd = self.core.metadata.get_initial_metadata(host)
            except Exception as err:
                self.logger.warning("ssh_known_hosts: no metadata for %s: %s", host, err)
            else:
                names.extend(sorted(imd.aliases - {host}))
                names.extend(sorted(imd.addresses))
        return names

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
                if not any(exists):
                    self._run_keygen(hostname, key_type, private, public)
                elif not all(exists):
                    raise PluginExecutionError(
                        f"SSHbase: only one of {private} and {public} exists; add the "
                        f"other or remove it to have a new pair generated")
            finally:
                os.close(dir_fd)  # releases the flock
        for path in (private, public):
            self._load(path)

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

"""Cfg creators: files Cfg makes once per host (or group) and then keeps.

An XML file in an entry-set directory tells Cfg how to make the entry's
content when no version of it applies to a client:

- ``privkey.xml`` (``<PrivateKey>``): an SSH key pair, rsa (``bits``, 3072 by
  default), ecdsa (256, 384 or 521) or ed25519, made with ``cryptography``,
  optionally protected by a ``<Passphrase>``. The private key is stored as
  ``NAME.H_<host>`` (or ``NAME.G<prio>_<group>`` with ``category`` and
  without ``perhost``) next to privkey.xml, the public key as
  ``NAME.pub.<same suffix>`` in the sibling ``NAME.pub`` directory.
- ``pubkey.xml`` (``<PublicKey/>``) in ``NAME.pub``: asking for the public key
  makes the pair through ``NAME/privkey.xml``; without one, the public key is
  derived from the client's existing (unencrypted) private key version.
- ``sslkey.xml`` (``<KeyInfo>``): a TLS private key (rsa or ecdsa), stored like
  an SSH private key.
- ``sslcert.xml`` (``<CertInfo>``): a certificate for the key ``<Cert key=...>``
  names, signed by the CA ``<Cert ca=...>`` (see ``bcfg2.plugins.cfg.sslca``),
  for the client's name and aliases and the ``<subjectAltName>`` elements.
  A stored certificate is kept while it is valid; it is issued anew when it
  expired, no longer matches the key, names other names than those
  configured, or (with ``verify_certs``) was not issued by the CA.
- ``authorized_keys.xml`` (or ``authorizedkeys.xml``; ``<AuthorizedKeys>``):
  an authorized_keys file built per request from the public keys its
  ``<Allow>`` elements name, with sshd options from ``<Option>`` (or the older
  ``<Params>``).

A version of the entry that applies to the client always wins over
creating one (a certificate is checked first, as said). Creation runs under
a lock file in ``state_dir/cfg-locks`` (threads and the multiprocessing
core's children alike), looks at the disk again under it, and writes with
``atomic_write``: two builds for one host create one key, and a file that
exists is never made again. A creator file that does not parse fails only
the entries of its directory, with its file and line.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lxml.etree
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bcfg2.encryption import CRYPT_SUFFIX
from bcfg2.errors import DecryptionError, StorageError
from bcfg2.filemonitor import Event
from bcfg2.generated import Files, shared_files
from bcfg2.identity import valid_client_name
from bcfg2.metadata import ClientMetadata, MetadataQuery
from bcfg2.plugin import (
    Option,
    PluginExecutionError,
    RepositoryError,
    StructFile,
    as_bool,
    default_path_metadata,
)
from bcfg2.plugins.cfg.sslca import CertificateAuthority, cas_from_config
from bcfg2.storage import engine_of
from bcfg2.xml import atomic_write

__all__ = [
    "CREATOR_FILES", "CREATOR_OPTIONS", "AuthorizedKeysCreator", "CfgCreator", "CreatorContext",
    "PrivateKeyCreator", "PublicKeyCreator", "SSLCertCreator", "SSLKeyCreator", "update_creator",
]

logger = logging.getLogger(__name__)

CREATOR_OPTIONS = (
    Option("cfg", "category", "",
           "Create keys and certificates (privkey.xml, sslkey.xml, sslcert.xml) for the "
           "client's group in this category instead of for each host; empty: per host."),
    Option("cfg", "passphrase", "",
           "Name of an [encryption] passphrase to store created private keys with "
           "(as NAME.H_host.crypt); empty: stored in the clear (mode 0600)."),
    Option("sshkeys", "category", "", "Overrides [cfg] category for SSH keys (privkey.xml)."),
    Option("sshkeys", "passphrase", "", "Overrides [cfg] passphrase for SSH keys."),
    Option("sslca", "category", "",
           "Overrides [cfg] category for TLS keys and certificates (sslkey.xml, sslcert.xml)."),
    Option("sslca", "passphrase", "", "Overrides [cfg] passphrase for TLS keys."),
)

#: a group name that may become part of a file name (``.G50_<group>``)
GROUP_NAME = re.compile(r"[^\s/\\]+")
#: sshd option names, and values sshd can read back between double quotes
SSHD_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
#: a DNS name (or wildcard) for subjectAltName
DNS_NAME = re.compile(r"(?:\*\.)?[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
ECDSA_CURVES: dict[int, type[ec.EllipticCurve]] = {
    256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
RSA_BITS = (1024, 16384)
#: client-path chains authorized_keys follows at most (a file allowing its own keys)
MAX_DEPTH = 4


def _option(setup: Any, section: str, name: str) -> str:
    value = getattr(getattr(setup, section, None), name, "")
    return value or ""


def _where(path: str, element: lxml.etree._Element) -> str:
    return f"{path}:{element.sourceline or '?'}"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _key_params(path: str, element: lxml.etree._Element, types: tuple[str, ...],
                rsa_default: int) -> tuple[str, int]:
    """(type, bits) of a ``<Params>`` or ``<Key>`` element; RepositoryError if unusable."""
    kind = (element.get("type") or "rsa").strip().lower()
    if kind == "ec":
        kind = "ecdsa"
    if kind not in types:
        extra = " (OpenSSH no longer accepts dsa keys)" if kind == "dsa" else ""
        raise RepositoryError(f"{_where(path, element)}: key type {kind!r} is not one of "
                              f"{', '.join(types)}{extra}")
    default = {"rsa": rsa_default, "ecdsa": 256, "ed25519": 256}[kind]
    try:
        bits = int(element.get("bits") or default)
    except ValueError:
        raise RepositoryError(f"{_where(path, element)}: bits {element.get('bits')!r} is not "
                              f"a number") from None
    if kind == "rsa" and not RSA_BITS[0] <= bits <= RSA_BITS[1]:
        raise RepositoryError(f"{_where(path, element)}: rsa keys have {RSA_BITS[0]} to "
                              f"{RSA_BITS[1]} bits, not {bits}")
    if kind == "ecdsa" and bits not in ECDSA_CURVES:
        raise RepositoryError(f"{_where(path, element)}: ecdsa keys have 256, 384 or 521 "
                              f"bits, not {bits}")
    return kind, bits


def new_private_key(kind: str, bits: int) -> PrivateKeyTypes:
    """A fresh private key of a type and size ``_key_params`` accepted."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "ecdsa":
        return ec.generate_private_key(ECDSA_CURVES[bits]())
    return ed25519.Ed25519PrivateKey.generate()


def ssh_public_line(key: PrivateKeyTypes, comment: str) -> bytes:
    """The ``.pub`` file of an SSH private key: ``type base64 comment``."""
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH)
    return line + (b" " + comment.encode("utf-8") if comment else b"") + b"\n"


class CreatorContext:
    """What the creators of one Cfg tree share: the tree, the locks, the CAs."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.setup = cfg.core.setup
        self.lock_dir = os.path.join(self.setup.server.state_dir, "cfg-locks")
        self.cas: dict[str, CertificateAuthority] = cas_from_config(
            self.setup.raw, self.setup.config_file or "bcfg2.conf")
        self._local = threading.local()
        #: whether generated files are shared with a fleet (PostgreSQL's generated_files)
        self.fleet = engine_of(self.setup) == "postgresql"

    def shared(self, first: str, make: Callable[[], Files],
               usable: Callable[[dict[str, bytes]], bool] | None = None) -> bool:
        """With a fleet: the files of ``first``'s group from generated_files, or made by
        ``make`` and recorded there, written into the repository (True). Without (SQLite):
        False, and nothing done: the caller generates as a single server does."""
        if not self.fleet:
            return False
        table = shared_files(self.setup)
        if table is None:
            return False
        try:
            table.ensure(first, make, usable)
        except StorageError as err:
            raise PluginExecutionError(f"{first}: cannot share it with the other servers: "
                                       f"{err}") from err
        finally:
            table.close()
        return True

    def ident(self, path: str) -> str:
        """The client path of an entry-set directory."""
        return self.cfg._ident(path)

    def entry_set(self, ident: str) -> Any:
        """The entry set serving a client path, or None."""
        return self.cfg.entries.get(ident)

    def ca(self, name: str) -> CertificateAuthority:
        try:
            return self.cas[name]
        except KeyError:
            raise PluginExecutionError(f"no CA {name!r}: bcfg2.conf has no [sslca_{name}] "
                                       f"section") from None

    @contextlib.contextmanager
    def lock(self, target: str) -> Iterator[None]:
        """Hold the creation lock of one file: across threads and processes (flock)."""
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        name = hashlib.sha256(os.path.abspath(target).encode()).hexdigest()[:32] + ".lock"
        fd = os.open(os.path.join(self.lock_dir, name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a separate open file: threads wait too
            yield
        finally:
            os.close(fd)

    def load(self, path: str) -> None:
        """Put a file just written into service now, before the file monitor reports it."""
        directory = os.path.dirname(path)
        if directory not in self.cfg.watched:
            self.cfg.HandleEvent(Event(0, directory, "created", directory))
        self.cfg.HandleEvent(Event(0, os.path.basename(path), "created", path))

    def data(self, ident: str, metadata: ClientMetadata) -> bytes:
        """The content Cfg serves a client for another of its entries (a key, for a cert)."""
        entry_set = self.entry_set(ident)
        if entry_set is None:
            raise PluginExecutionError(f"Cfg has no entry {ident}")
        entry = lxml.etree.Element("Path", name=ident)
        if entry_set.creator is not None:
            return entry_set.creator.serve(entry, metadata)
        return entry_set.best_matching(metadata).get_data(entry, metadata)

    def bind_other(self, name: str, metadata: ClientMetadata) -> bytes:
        """What any generator (Cfg, SSHbase...) binds for a Path and some metadata."""
        depth = getattr(self._local, "depth", 0)
        if depth >= MAX_DEPTH:
            raise PluginExecutionError(f"{name}: allowed keys nest deeper than {MAX_DEPTH}")
        entry = lxml.etree.Element("Path", name=name)
        self._local.depth = depth + 1
        try:
            self.cfg.core.Bind(entry, metadata)
        finally:
            self._local.depth = depth
        if entry.get("failure"):
            raise PluginExecutionError(entry.get("failure"))
        text = entry.text or ""
        if entry.get("encoding") == "base64":
            return base64.b64decode(text)
        return text.encode("utf-8")

    def client_metadata(self, host: str) -> ClientMetadata | None:
        """The metadata of a known client, or None."""
        core = self.cfg.core
        if not valid_client_name(host) or host not in core.metadata.list_clients():
            return None
        return core.build_metadata(host)


class CfgCreator(StructFile):
    """A creator file of one entry set; ``serve`` gives a client the entry's content."""

    root_tag = ""
    #: whether what it makes is secret (mode 0600, sensitive) unless info.xml says otherwise
    private = False
    #: the [section] whose category and passphrase options apply
    section = "cfg"

    def __init__(self, name: str, entry_set: Any, context: CreatorContext) -> None:
        super().__init__(name, entry_set.fam)
        self.entry_set = entry_set
        self.context = context

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != self.root_tag:
            raise RepositoryError(f"{_where(self.name, root)}: expected <{self.root_tag}>, "
                                  f"found <{root.tag}>")
        try:
            int(root.get("priority", "50"))
        except ValueError:
            raise RepositoryError(f"{_where(self.name, root)}: priority "
                                  f"{root.get('priority')!r} is not a number") from None
        self.validate(root)

    def validate(self, root: lxml.etree._Element) -> None:
        """Raise RepositoryError (file and line) for what cannot be served."""

    def spec(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:
        """What of the file applies to a client; a failure if it never parsed."""
        if self.xdata is None:
            raise PluginExecutionError(f"{self.name} is not in service: {self.error}")
        return self.Match(metadata)

    def serve(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        """The version that applies to the client, else newly created content."""
        entry_set = self.entry_set
        matching = entry_set.get_matching(metadata)
        if matching:
            return entry_set.best_matching(metadata, matching).get_data(entry, metadata)
        if self.xdata is None:
            raise PluginExecutionError(f"{self.name} is not in service: {self.error}")
        return self.create(entry, metadata)

    def create(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        raise NotImplementedError

    # -- where created files go ------------------------------------------------

    def category(self) -> str:
        root = self.xdata
        own = root.get("category") if root is not None else None
        return own or _option(self.context.setup, self.section, "category") or \
            _option(self.context.setup, "cfg", "category")

    def target_suffix(self, metadata: ClientMetadata) -> str:
        """``.H_<host>``, or ``.G<prio>_<group>`` for the client's group in the category."""
        root = self.xdata
        category = self.category()
        perhost = as_bool(root.get("perhost", "false" if category else "true"))
        if category and not perhost:
            group = metadata.group_in_category(category)
            if group and GROUP_NAME.fullmatch(group) and ".." not in group:
                return f".G{int(root.get('priority', '50')):02d}_{group}"
            self.logger.info("%s: %s has no group in category %s; creating host-specific "
                             "data", self.name, metadata.hostname, category)
        if not valid_client_name(metadata.hostname):
            raise PluginExecutionError(f"{self.name}: refusing to create a file for "
                                       f"{metadata.hostname!r}")
        return f".H_{metadata.hostname}"

    def storage_passphrase(self) -> str | None:
        """The [encryption] passphrase name created keys are stored with, or None (plain)."""
        setup = self.context.setup
        return (_option(setup, self.section, "passphrase") or _option(setup, "cfg", "passphrase")
                or None)

    @property
    def logger(self) -> logging.Logger:
        return logger


# -- SSH keys ------------------------------------------------------------------

class PrivateKeyCreator(CfgCreator):
    """``privkey.xml``: an SSH key pair per host or group, made once."""

    root_tag = "PrivateKey"
    private = True
    section = "sshkeys"
    types = ("rsa", "ecdsa", "ed25519")

    def validate(self, root: lxml.etree._Element) -> None:
        for params in root.iter("Params"):
            _key_params(self.name, params, self.types, 3072)

    def create(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        return self.ensure_pair(metadata)[0]

    def _spec(self, metadata: ClientMetadata) -> tuple[str, int, bytes | None]:
        spec = self.spec(metadata)
        params = next((el for el in spec if el.tag == "Params"), None)
        kind, bits = _key_params(self.name, params if params is not None
                                 else lxml.etree.Element("Params"), self.types, 3072)
        passphrase = next((el for el in spec if el.tag == "Passphrase"), None)
        if passphrase is None:
            return kind, bits, None
        text = (passphrase.text or "").strip()
        if passphrase.get("encrypted"):
            try:
                plain, _ = self.entry_set.encryption.decrypt(
                    text, passphrase.get("encrypted"), f"{self.name}: <Passphrase>")
            except DecryptionError as err:
                raise PluginExecutionError(str(err)) from None
            return kind, bits, plain or None
        return kind, bits, text.encode("utf-8") or None

    def ensure_pair(self, metadata: ClientMetadata) -> tuple[bytes, bytes]:
        """The client's (private, public) key files, made (or completed) if missing."""
        kind, bits, passphrase = self._spec(metadata)

        def generate() -> bytes:
            key = new_private_key(kind, bits)
            encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                          else serialization.NoEncryption())
            self.logger.info("Cfg: creating the %s SSH key %s for %s", kind,
                             self.context.ident(self.entry_set.path), metadata.hostname)
            return key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH, encryption)
        return ensure_ssh_pair(self.context, self.entry_set, metadata, self.target_suffix,
                               generate, passphrase, self.storage_passphrase())


def read_stored(entry_set: Any, path: str) -> bytes | None:
    """A created file as stored: ``path`` itself, else ``path.crypt`` decrypted; None: neither."""
    data = _read(path)
    if data is not None:
        return data
    sealed = _read(path + CRYPT_SUFFIX)
    if sealed is None:
        return None
    try:
        return entry_set.encryption.decrypt(sealed, what=path + CRYPT_SUFFIX)[0]
    except DecryptionError as err:
        raise PluginExecutionError(str(err)) from None


def seal(entry_set: Any, path: str, data: bytes, passphrase: str | None) -> tuple[str, bytes]:
    """Where a created file is stored and what is written there: ``path`` and ``data``,
    or ``path.crypt`` and the data encrypted when a storage passphrase is named."""
    if passphrase is None:
        return path, data
    try:
        sealed = entry_set.encryption.encrypt(data, passphrase)
    except DecryptionError as err:  # no such passphrase in [encryption]
        raise PluginExecutionError(f"cannot store {path} encrypted: {err}") from None
    return path + CRYPT_SUFFIX, sealed.encode() if isinstance(sealed, str) else sealed


def store(entry_set: Any, path: str, data: bytes, mode: int, passphrase: str | None) -> str:
    """Write a created file, encrypted as ``path.crypt`` when a storage passphrase is named
    (as upstream stores keys it creates); the path written."""
    written, content = seal(entry_set, path, data, passphrase)
    atomic_write(written, content, mode)
    return written


def stored_path(path: str) -> str:
    """The file a created file is stored in: ``path``, or ``path.crypt`` if only that exists."""
    return path if os.path.exists(path) or not os.path.exists(path + CRYPT_SUFFIX) \
        else path + CRYPT_SUFFIX


def ensure_ssh_pair(context: CreatorContext, private_set: Any, metadata: ClientMetadata,
                    target_suffix: Callable[[ClientMetadata], str] | None,
                    generate: Callable[[], bytes] | None, passphrase: bytes | None,
                    storage: str | None = None) -> tuple[bytes, bytes]:
    """The client's private key (existing, or made by ``generate``) and its public key.

    The public key goes to the sibling ``NAME.pub`` directory with the private
    key's suffix; it is derived from the private key when it is missing. With
    a ``storage`` passphrase name the private key is stored encrypted
    (``.crypt``); the public key never is.
    """
    matching = private_set.get_matching(metadata)
    if matching:
        version = private_set.best_matching(metadata, matching)
        private_path = version.name.removesuffix(CRYPT_SUFFIX)
        suffix = os.path.basename(private_path)[len(private_set.basename):]
    elif generate is None:
        raise PluginExecutionError(
            f"no private key for {metadata.hostname} in {private_set.path} yet, and no "
            f"privkey.xml there to create one")
    else:
        assert target_suffix is not None
        suffix = target_suffix(metadata)
        private_path = os.path.join(private_set.path, private_set.basename + suffix)
    public_path = os.path.join(private_set.path + ".pub", private_set.basename + ".pub" + suffix)
    written = private_path

    def derive(private: bytes) -> bytes:
        try:
            key = serialization.load_ssh_private_key(private, passphrase)
        except (ValueError, TypeError) as err:
            raise PluginExecutionError(f"{private_path}: cannot derive its public key: "
                                       f"{err}") from None
        who = suffix.split("_", 1)[1] if "_" in suffix else "all"
        return ssh_public_line(key, f"{who}:{context.ident(private_set.path)}")

    with context.lock(private_path):
        private = read_stored(private_set, private_path)
        if private is None and generate is not None:
            def make() -> dict[str, tuple[bytes, int]]:
                made = generate()
                path, content = seal(private_set, private_path, made, storage)
                return {path: (content, 0o600), public_path: (derive(made), 0o644)}

            if context.shared(private_path, make):
                private = read_stored(private_set, private_path)
                written = stored_path(private_path)
        if private is None:
            if generate is None:
                raise PluginExecutionError(f"no private key {private_path} to derive the "
                                           f"public key from")
            private = generate()
            written = store(private_set, private_path, private, 0o600, storage)
        elif not os.path.exists(private_path):
            written = private_path + CRYPT_SUFFIX
        public = _read(public_path)
        if public is None:
            public = derive(private)
            atomic_write(public_path, public, 0o644)
    for path in (written, public_path):
        context.load(path)
    return private, public


class PublicKeyCreator(CfgCreator):
    """``pubkey.xml`` in ``NAME.pub``: the public half of ``NAME``'s key pair."""

    root_tag = "PublicKey"
    section = "sshkeys"

    def validate(self, root: lxml.etree._Element) -> None:
        if not self.entry_set.path.endswith(".pub"):
            raise RepositoryError(f"{self.name}: pubkey.xml belongs in a directory named "
                                  f"like the private key plus .pub")

    def create(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        private_dir = self.entry_set.path[:-len(".pub")]
        private_set = self.context.entry_set(self.context.ident(private_dir))
        if private_set is None:
            raise PluginExecutionError(
                f"no private key for {metadata.hostname} in {private_dir} yet, and no "
                f"privkey.xml there to create one")
        creator = private_set.creator
        if isinstance(creator, PrivateKeyCreator) and creator.xdata is not None:
            return creator.ensure_pair(metadata)[1]
        return ensure_ssh_pair(self.context, private_set, metadata, None, None, None)[1]


# -- TLS keys and certificates ---------------------------------------------------

class SSLKeyCreator(CfgCreator):
    """``sslkey.xml``: a TLS private key per host or group (PEM, PKCS#8), made once."""

    root_tag = "KeyInfo"
    private = True
    section = "sslca"
    types = ("rsa", "ecdsa")
    conditional_tags = ("Group", "Client", "KeyInfo")

    def validate(self, root: lxml.etree._Element) -> None:
        for key in root.iter("Key"):
            _key_params(self.name, key, self.types, 2048)

    def create(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        key_element = next((el for el in self.spec(metadata) if el.tag == "Key"),
                           lxml.etree.Element("Key"))
        kind, bits = _key_params(self.name, key_element, self.types, 2048)
        path = os.path.join(self.entry_set.path,
                            self.entry_set.basename + self.target_suffix(metadata))
        written = path if os.path.exists(path) else path + CRYPT_SUFFIX
        with self.context.lock(path):
            data = read_stored(self.entry_set, path)

            def generate() -> bytes:
                self.logger.info("Cfg: creating the %s TLS key %s for %s", kind,
                                 self.context.ident(self.entry_set.path), metadata.hostname)
                return new_private_key(kind, bits).private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption())

            def make() -> dict[str, tuple[bytes, int]]:
                stored, content = seal(self.entry_set, path, generate(),
                                       self.storage_passphrase())
                return {stored: (content, 0o600)}

            if data is None and self.context.shared(path, make):
                data = read_stored(self.entry_set, path)
                written = stored_path(path)
            if data is None:
                data = generate()
                written = store(self.entry_set, path, data, 0o600, self.storage_passphrase())
        self.context.load(written)
        return data


class SSLCertCreator(CfgCreator):
    """``sslcert.xml``: a certificate signed by a configured CA, kept while it is valid."""

    root_tag = "CertInfo"
    section = "sslca"
    conditional_tags = ("Group", "Client", "CertInfo")
    subject_fields = (("c", NameOID.COUNTRY_NAME), ("st", NameOID.STATE_OR_PROVINCE_NAME),
                      ("l", NameOID.LOCALITY_NAME), ("o", NameOID.ORGANIZATION_NAME),
                      ("ou", NameOID.ORGANIZATIONAL_UNIT_NAME),
                      ("emailaddress", NameOID.EMAIL_ADDRESS))

    def __init__(self, name: str, entry_set: Any, context: CreatorContext) -> None:
        super().__init__(name, entry_set, context)
        self._checked: dict[tuple[Any, ...], tuple[str | None, datetime.datetime | None]] = {}

    def validate(self, root: lxml.etree._Element) -> None:
        for cert in root.iter("Cert"):
            if not cert.get("key", "").startswith("/"):
                raise RepositoryError(f"{_where(self.name, cert)}: <Cert> needs key, the "
                                      f"client path of its key (e.g. /etc/pki/tls/private/x.key)")
            if cert.get("format", "pem") != "pem":
                raise RepositoryError(f"{_where(self.name, cert)}: format "
                                      f"{cert.get('format')!r}: only pem is supported")
            try:
                if int(cert.get("days", "365")) <= 0:
                    raise ValueError
            except ValueError:
                raise RepositoryError(f"{_where(self.name, cert)}: days {cert.get('days')!r} "
                                      f"is not a positive number") from None
            country = cert.get("c")
            if country is not None and not re.fullmatch(r"[A-Za-z]{2}", country):
                raise RepositoryError(f"{_where(self.name, cert)}: c={country!r} is not a "
                                      f"two-letter country code")
        for alt in root.iter("subjectAltName"):
            if _alt_name(alt.text or "") is None:
                raise RepositoryError(f"{_where(self.name, alt)}: {alt.text!r} is neither a "
                                      f"DNS name nor an IP address")

    def _cert_spec(self, metadata: ClientMetadata) -> tuple[lxml.etree._Element, list[str]]:
        spec = self.spec(metadata)
        cert = next((el for el in spec if el.tag == "Cert"), None)
        if cert is None:
            raise PluginExecutionError(f"{self.name}: no <Cert> applies to {metadata.hostname}")
        return cert, [(el.text or "").strip() for el in spec if el.tag == "subjectAltName"]

    @staticmethod
    def _names(metadata: ClientMetadata, suffix: str, alt_names: list[str]) -> list[str]:
        """The names a certificate is for: the host's name and aliases, then subjectAltNames.

        A group's certificate is for its subjectAltNames alone, so that every member
        of the group can be served the same one.
        """
        names = [] if suffix.startswith(".G") else [metadata.hostname,
                                                    *sorted(metadata.aliases)]
        names.extend(alt_names)
        return list(dict.fromkeys(name for name in names if _alt_name(name) is not None))

    def serve(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        if self.xdata is None:
            raise PluginExecutionError(f"{self.name} is not in service: {self.error}")
        cert_spec, alt_names = self._cert_spec(metadata)
        ca = self.context.ca(cert_spec.get("ca", "default"))
        key_pem = self.context.data(cert_spec.get("key"), metadata)
        entry_set = self.entry_set
        matching = entry_set.get_matching(metadata)
        path = None
        if matching:
            version = entry_set.best_matching(metadata, matching)
            suffix = os.path.basename(version.name)[len(entry_set.basename):]
            data = version.get_data(entry, metadata)
            problem = self._problem(data, key_pem, self._names(metadata, suffix, alt_names), ca)
            if problem is None:
                return data
            self.logger.info("Cfg: issuing %s anew for %s: %s", version.name,
                             metadata.hostname, problem)
            if suffix:
                path = version.name
        if path is None:
            path = os.path.join(entry_set.path, entry_set.basename + self.target_suffix(metadata))
        suffix = os.path.basename(path)[len(entry_set.basename):]
        names = self._names(metadata, suffix, alt_names)
        with self.context.lock(path):
            data = _read(path)
            if data is None or self._problem(data, key_pem, names, ca) is not None:
                def make() -> dict[str, tuple[bytes, int]]:
                    return {path: (self._issue(cert_spec, key_pem, names, ca, metadata,
                                               suffix), 0o644)}

                def usable(files: dict[str, bytes]) -> bool:
                    found = next(iter(files.values()), None) if len(files) == 1 else None
                    return found is not None and \
                        self._problem(found, key_pem, names, ca) is None

                if self.context.shared(path, make, usable):
                    data = _read(path)
                if data is None or self._problem(data, key_pem, names, ca) is not None:
                    data = self._issue(cert_spec, key_pem, names, ca, metadata, suffix)
                    atomic_write(path, data, 0o644)
        self.context.load(path)
        return data

    def _problem(self, data: bytes, key_pem: bytes, names: list[str],
                 ca: CertificateAuthority) -> str | None:
        """Why a stored certificate must be issued anew, or None if it may be served.

        Everything but the expiry is remembered for the same certificate, key,
        names and CA files, so a build only compares a date.
        """
        memo = (hashlib.sha256(data).digest(), hashlib.sha256(key_pem).digest(),
                tuple(sorted(names)), ca.name, ca.verify_certs, ca.generation())
        checked = self._checked.get(memo)
        if checked is None:
            checked = self._check(data, key_pem, names, ca)
            if len(self._checked) > 10000:
                self._checked.clear()
            self._checked[memo] = checked
        problem, not_after = checked
        if problem is None and not_after is not None and \
                not_after <= datetime.datetime.now(datetime.UTC):
            return f"it expired on {not_after:%Y-%m-%d}"
        return problem

    def _check(self, data: bytes, key_pem: bytes, names: list[str], ca: CertificateAuthority
               ) -> tuple[str | None, datetime.datetime | None]:
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            return "it is not a PEM certificate", None
        key = self._tls_key(key_pem)
        problem = None
        if cert.public_key() != key.public_key():
            problem = "it is not for the current key"
        elif set(_cert_names(cert)) != {_canonical(n) for n in names}:
            problem = (f"it names {', '.join(sorted(_cert_names(cert)))}, not "
                       f"{', '.join(sorted(names))}")
        elif ca.verify_certs and not ca.issued(cert):
            problem = f"CA {ca.name} did not issue it"
        return problem, cert.not_valid_after_utc

    def _tls_key(self, key_pem: bytes) -> PrivateKeyTypes:
        """The certificate's key; only its public half is used, so RSA checks are skipped."""
        try:
            return serialization.load_pem_private_key(key_pem, password=None,
                                                      unsafe_skip_rsa_key_validation=True)
        except (ValueError, TypeError) as err:
            raise PluginExecutionError(f"{self.name}: its key cannot be read: {err}") from None

    def _issue(self, spec: lxml.etree._Element, key_pem: bytes, names: list[str],
               ca: CertificateAuthority, metadata: ClientMetadata, suffix: str) -> bytes:
        ca_key, ca_cert = ca.signer()
        key = self._tls_key(key_pem)
        common_name = metadata.hostname if not suffix.startswith(".G") else \
            (names[0] if names else suffix.split("_", 1)[1])
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]
        for attr, oid in self.subject_fields:
            value = spec.get(attr) or ca.dn_defaults.get(attr)
            if value:
                attributes.append(x509.NameAttribute(oid, value))
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=int(spec.get("days", "365"))))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]),
                           critical=False)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                content_commitment=False, data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)
        )
        digest = None if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) \
            else hashes.SHA256()
        cert = builder.sign(ca_key, digest)
        self.logger.info("Cfg: issued %s for %s (CA %s, names %s)",
                         self.context.ident(self.entry_set.path), metadata.hostname, ca.name,
                         ", ".join(names))
        data = cert.public_bytes(serialization.Encoding.PEM)
        if as_bool(spec.get("append_chain", "false")):
            data += ca.chain_pem()
        return data


def _alt_name(name: str) -> x509.GeneralName | None:
    """A subjectAltName entry for a DNS name or an IP address, or None."""
    name = name.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    return x509.DNSName(name) if DNS_NAME.fullmatch(name) else None


def _cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)] + \
        [str(address) for address in san.get_values_for_type(x509.IPAddress)]


def _canonical(name: str) -> str:
    """A name as ``_cert_names`` reports it: DNS names in lower case, addresses normalised."""
    general = _alt_name(name)
    return str(general.value) if isinstance(general, x509.IPAddress) else name.strip().lower()


# -- authorized_keys ---------------------------------------------------------------

class AuthorizedKeysCreator(CfgCreator):
    """``authorized_keys.xml``: an authorized_keys file from other entries' public keys."""

    root_tag = "AuthorizedKeys"
    section = "sshkeys"
    conditional_tags = ("Group", "Client", "AuthorizedKeys")

    def validate(self, root: lxml.etree._Element) -> None:
        for option in root.iter("Option"):
            _sshd_option(self.name, option, option.get("name") or "", option.get("value"))
        for params in root.iter("Params"):
            for name, value in params.attrib.items():
                _sshd_option(self.name, params, name, value)
        for allow in root.iter("Allow"):
            source = allow.get("from")
            if source is not None and not source.startswith("/"):
                raise RepositoryError(f"{_where(self.name, allow)}: from={source!r} is not "
                                      f"the client path of a public key")

    def create(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        lines: list[str] = []
        for allow in self.spec(metadata):
            if allow.tag != "Allow":
                continue
            options = []
            for child in allow:
                if child.tag == "Option":
                    options.append(_sshd_option(self.name, child, child.get("name"),
                                                child.get("value")))
                elif child.tag == "Params":
                    options.extend(_sshd_option(self.name, child, name, value)
                                   for name, value in child.attrib.items())
            source = allow.get("from")
            if source:
                keys = self._keys_from(allow, source, metadata)
            else:
                keys = (allow.text or "").splitlines()
            prefix = ",".join(options) + " " if options else ""
            lines.extend(prefix + key.strip() for key in keys
                         if key.strip() and not key.strip().startswith("#"))
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def _keys_from(self, allow: lxml.etree._Element, source: str,
                   metadata: ClientMetadata) -> list[str]:
        """The public key lines at a client path for the host or group an Allow names."""
        host, group = allow.get("host"), allow.get("group")
        category = allow.get("category") or self.category()
        if host:
            key_md = self.context.client_metadata(host)
            if key_md is None:
                self.logger.warning("%s: skipping Allow from %s for host %r: no such client",
                                    self.name, source, host)
                return []
        elif group:
            key_md = ClientMetadata("", "", [group], [], [], [],
                                    {category: group} if category else {}, None, None, None,
                                    MetadataQuery())
        elif category and not metadata.group_in_category(category):
            self.logger.warning("%s: %s has no group in category %s; skipping Allow from %s",
                                self.name, metadata.hostname, category, source)
            return []
        else:
            key_md = metadata
        if source == self.context.ident(self.entry_set.path):
            self.logger.warning("%s: skipping Allow from itself", self.name)
            return []
        try:
            data = self.context.bind_other(source, key_md)
        except Exception as err:
            self.logger.info("%s: skipping Allow from %s for %s: %s", self.name, source,
                             host or group or metadata.hostname, err)
            return []
        return data.decode("utf-8", "replace").splitlines()


def _sshd_option(path: str, element: lxml.etree._Element, name: str | None,
                 value: str | None) -> str:
    """``name`` or ``name="value"`` as sshd reads it; RepositoryError if it cannot be written."""
    if not name or not SSHD_OPTION.fullmatch(name):
        raise RepositoryError(f"{_where(path, element)}: {name!r} is not an sshd option name")
    if not value:
        return name
    if "\n" in value or "\r" in value or "\0" in value:
        raise RepositoryError(f"{_where(path, element)}: the value of {name} has a line break")
    return name + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: creator file names -> the creator each makes
CREATOR_FILES: dict[str, type[CfgCreator]] = {
    "privkey.xml": PrivateKeyCreator,
    "pubkey.xml": PublicKeyCreator,
    "sslkey.xml": SSLKeyCreator,
    "sslcert.xml": SSLCertCreator,
    "authorized_keys.xml": AuthorizedKeysCreator,
    "authorizedkeys.xml": AuthorizedKeysCreator,
}


def update_creator(entry_set: Any, event: Any) -> CfgCreator | None:
    """The entry set's creator after a change to one of the creator files in its directory."""
    current = entry_set.creator
    context = entry_set.creators
    if context is None:
        return current
    if event.action == "deleted":
        if current is not None and current.name == event.path:
            entry_set.default_info = default_path_metadata(entry_set.setup)
            return None
        return current
    if event.action not in ("exists", "created", "changed"):
        return current
    if current is not None and current.name != event.path:
        logger.warning("%s: %s already says how to create this entry; ignoring it",
                       event.path, os.path.basename(current.name))
        return current
    if current is None:
        current = CREATOR_FILES[os.path.basename(event.path)](event.path, entry_set, context)
    current.HandleEvent(event)
    if current.private:
        entry_set.default_info = {**default_path_metadata(entry_set.setup), "mode": "0600",
                                  "sensitive": "true"}
    return current

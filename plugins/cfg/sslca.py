"""The certificate authorities Cfg signs TLS certificates with (``[sslca_NAME]``).

Each ``[sslca_NAME]`` section of bcfg2.conf is one CA, named NAME in
``sslcert.xml`` (``<Cert ca="NAME">``; ``default`` when omitted):

- ``config``: the CA's openssl.cnf. Its ``default_ca`` section gives the CA
  certificate (``certificate``) and private key (``private_key``), with
  ``$dir``-style variables expanded, and ``[req_distinguished_name]``
  ``*_default`` values fill subject fields a ``<Cert>`` does not set. The file
  is only read: no ``openssl`` command is run, and its serial and index files
  are left alone.
- ``key`` / ``cert``: the CA private key and certificate directly (instead of,
  or overriding, what ``config`` names).
- ``passphrase``: the CA key's passphrase; it is handed to ``cryptography``
  in memory and never reaches a command line.
- ``chaincert``: the chain certificate(s) existing certificates are checked
  against, and what ``append_chain`` appends; ``root_ca`` is accepted for
  compatibility (a chain is checked the same way whether or not it ends at a
  root).
- ``verify_certs`` (default true): whether an existing certificate must be
  issued by this CA to stay in service.

A CA whose key or certificate cannot be read fails only the certificates
that need it; the reason is logged once and tried again when the files change.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from bcfg2.plugin import PluginExecutionError, as_bool

__all__ = ["CertificateAuthority", "cas_from_config", "read_openssl_config"]

logger = logging.getLogger(__name__)

SECTION_PREFIX = "sslca_"
#: openssl.cnf subject defaults -> the <Cert> attribute they stand in for
DN_DEFAULTS = {
    "countryName_default": "c",
    "stateOrProvinceName_default": "st",
    "localityName_default": "l",
    "0.organizationName_default": "o",
    "organizationName_default": "o",
    "organizationalUnitName_default": "ou",
    "emailAddress_default": "emailaddress",
}
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[\w.]+(?:::[\w.]+)?)\}|(?P<bare>[\w.]+(?:::[\w.]+)?))")


def read_openssl_config(path: str) -> dict[str, dict[str, str]]:
    """The sections of an openssl.cnf with variables (``$dir``, ``$sec::name``, ``$ENV::X``) expanded.

    Raises OSError or ValueError (with the file and line) when it cannot be read.
    """
    sections: dict[str, dict[str, str]] = {"default": {}}
    current = sections["default"]
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("."):  # .include / .pragma: nothing a CA needs here
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"{path}:{number}: unterminated section header")
            current = sections.setdefault(line[1:-1].strip(), {})
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: expected name = value")
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        current[name.strip()] = _expand(value, current, sections)
    return sections


def _expand(value: str, current: dict[str, str], sections: dict[str, dict[str, str]]) -> str:
    def lookup(match: re.Match[str]) -> str:
        ref = match.group("braced") or match.group("bare")
        section, sep, name = ref.partition("::")
        if not sep:
            return current.get(ref, sections["default"].get(ref, match.group(0)))
        if section == "ENV":
            return os.environ.get(name, "")
        return sections.get(section, {}).get(name, match.group(0))
    return _VARIABLE.sub(lookup, value)


def _stat_key(*paths: str | None) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        out.append(None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class CertificateAuthority:
    """One ``[sslca_NAME]`` CA: its certificate, key and chain, read when first needed."""

    def __init__(self, name: str, options: dict[str, str], where: str) -> None:
        self.name = name
        self.where = where
        self.config = options.get("config") or None
        self.key_path = options.get("key") or None
        self.cert_path = options.get("cert") or None
        self.passphrase = options.get("passphrase") or None
        self.chaincert = options.get("chaincert") or None
        self.root_ca = as_bool(options.get("root_ca", "false"))
        self.verify_certs = as_bool(options.get("verify_certs", "true"))
        self.dn_defaults: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[Any, ...], Any] | None = None
        self._paths_cache: tuple[tuple[Any, ...], tuple[str, str] | str] | None = None
        self._reported: str | None = None

    def _paths(self) -> tuple[str, str]:
        """The CA key and certificate files, from the options or the openssl config."""
        key, cert = self.key_path, self.cert_path
        if self.config and (key is None or cert is None):
            try:
                sections = read_openssl_config(self.config)
            except (OSError, ValueError) as err:
                raise ValueError(f"config {self.config}: {getattr(err, 'strerror', None) or err}"
                                 ) from None
            ca_name = sections.get("ca", {}).get("default_ca", "")
            ca_section = sections.get(ca_name, {})
            key = key or ca_section.get("private_key")
            cert = cert or ca_section.get("certificate")
            req = sections.get(sections.get("req", {}).get("distinguished_name",
                                                            "req_distinguished_name"), {})
            self.dn_defaults = {attr: req[name] for name, attr in DN_DEFAULTS.items()
                                if req.get(name)}
        if not key or not cert:
            raise ValueError("no CA key and certificate: set config (an openssl.cnf whose "
                             "default_ca names private_key and certificate) or key and cert")
        return key, cert

    def _load(self) -> tuple[CertificateIssuerPrivateKeyTypes | None, x509.Certificate | None,
                             list[x509.Certificate], str | None]:
        """(key, certificate, chain, error), reread whenever one of the files changes."""
        with self._lock:
            config_signature = _stat_key(self.config)
            if self._paths_cache is None or self._paths_cache[0] != config_signature:
                try:
                    found: tuple[str, str] | str = self._paths()
                except ValueError as err:
                    found = str(err)
                self._paths_cache = (config_signature, found)
            found = self._paths_cache[1]
            key_path, cert_path = (None, None) if isinstance(found, str) else found
            path_error = found if isinstance(found, str) else None
            signature = (_stat_key(self.config, key_path, cert_path, self.chaincert), path_error)
            if self._loaded is not None and self._loaded[0] == signature:
                return self._loaded[1]
            result = self._read(key_path, cert_path, path_error)
            self._loaded = (signature, result)
            error = result[3]
            if error and error != self._reported:
                logger.error("%s: [%s%s] %s; the certificates it signs fail until it is fixed",
                             self.where, SECTION_PREFIX, self.name, error)
            elif not error and self._reported:
                logger.warning("[%s%s]: fixed, signing again", SECTION_PREFIX, self.name)
            self._reported = error
            return result

    def _read(self, key_path: str | None, cert_path: str | None, error: str | None
              ) -> tuple[Any, x509.Certificate | None, list[x509.Certificate], str | None]:
        if error:
            return None, None, [], error
        assert key_path and cert_path
        try:
            with open(cert_path, "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
        except (OSError, ValueError) as err:
            return None, None, [], f"certificate {cert_path}: {getattr(err, 'strerror', None) or err}"
        chain: list[x509.Certificate] = []
        if self.chaincert:
            try:
                with open(self.chaincert, "rb") as fh:
                    chain = x509.load_pem_x509_certificates(fh.read())
            except (OSError, ValueError) as err:
                return None, cert, [], (f"chaincert {self.chaincert}: "
                                        f"{getattr(err, 'strerror', None) or err}")
        password = self.passphrase.encode("utf-8") if self.passphrase else None
        try:
            with open(key_path, "rb") as fh:
                key = serialization.load_pem_private_key(fh.read(), password=password)
        except OSError as err:
            return None, cert, chain, f"key {key_path}: {err.strerror}"
        except (ValueError, TypeError) as err:
            # wrong or missing passphrase, or not a key; the message never holds the passphrase
            return None, cert, chain, f"key {key_path} cannot be opened: {err}"
        if key.public_key() != cert.public_key():
            return None, cert, chain, f"key {key_path} does not belong to certificate {cert_path}"
        return key, cert, chain, None

    def generation(self) -> Any:
        """Changes whenever one of the CA's files does (for caches of checks against it)."""
        self._load()
        assert self._loaded is not None
        return self._loaded[0]

    def signer(self) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
        """The CA key and certificate, or PluginExecutionError saying why not."""
        key, cert, _chain, error = self._load()
        if error or key is None or cert is None:
            raise PluginExecutionError(f"CA {self.name}: {error}")
        return key, cert

    def issuers(self) -> list[x509.Certificate]:
        """The certificates an existing certificate may have been issued by."""
        _key, cert, chain, error = self._load()
        out = ([cert] if cert is not None else []) + chain
        if not out:
            raise PluginExecutionError(f"CA {self.name}: {error}")
        return out

    def chain_pem(self) -> bytes:
        """What ``append_chain`` appends: the chaincert file, or the CA certificate."""
        _key, cert, chain, error = self._load()
        certs = chain or ([cert] if cert is not None else [])
        if not certs:
            raise PluginExecutionError(f"CA {self.name}: {error}")
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether this CA (its certificate or a chain certificate) signed ``cert``."""
        for issuer in self.issuers():
            if issuer.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(issuer)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return True
        return False


def cas_from_config(raw: Any, where: str) -> dict[str, CertificateAuthority]:
    """Every ``[sslca_NAME]`` section of a parsed bcfg2.conf, by NAME."""
    out: dict[str, CertificateAuthority] = {}
    for section in raw.sections():
        if section.startswith(SECTION_PREFIX) and len(section) > len(SECTION_PREFIX):
            name = section[len(SECTION_PREFIX):]
            out[name] = CertificateAuthority(name, dict(raw.items(section)), where)
    return out

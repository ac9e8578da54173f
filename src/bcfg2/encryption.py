"""Encrypted repository data: Cfg ``*.crypt`` files and encrypted Properties elements.

Two formats are read; which one a datum is in shows in its first characters.

- **compat**, upstream Bcfg2's: what ``openssl enc -aes-256-cbc -md md5 -a``
  writes. The key and IV come from the passphrase and an 8-byte salt by
  OpenSSL's EVP_BytesToKey (MD5, one round); the payload ``Salted__`` + salt +
  ciphertext (CBC, PKCS#7 padding) is base64-encoded, in lines of 64
  characters as openssl writes them (any line length is read). It starts with
  ``U2FsdGVkX1``. It has no integrity check: a wrong passphrase shows only as
  bad padding, or as output that is not text, and both count as failure. So
  compat data must be text; encrypt binary files in the auth format.
- **auth**, ours and the default for writing: AES-256-GCM (authenticated: a
  wrong passphrase or a changed byte is always detected) under a key derived
  by scrypt from the passphrase and a random 16-byte salt. It is one string,
  ``$bcfg2-aead1$<parameters>$<salt>$<ciphertext>``: the parameters are the
  scrypt cost (``ln`` = log2 N, ``r``, ``p``) and optionally ``key=NAME``,
  the passphrase it was written with; everything before the ciphertext is
  authenticated too. Upstream Bcfg2 and openssl cannot read this format;
  write compat (``[encryption] format = compat`` or ``bcfg2-crypt --format
  compat``) for a repository that upstream servers also read.

Passphrases come from ``[encryption]`` in bcfg2.conf (``Encryption.from_setup``)
and never appear in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import lxml.etree
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bcfg2.errors import ConfigError, DecryptionError

if TYPE_CHECKING:
    from bcfg2.options import Setup

__all__ = [
    "AUTH_MAGIC", "COMPAT_ALGORITHMS", "COMPAT_PREFIX", "CRYPT_SUFFIX", "FORMATS",
    "DecryptionError", "Encryption",
    "ScryptCost", "auth_decrypt", "auth_encrypt", "compat_decrypt", "compat_encrypt",
    "decrypt_elements", "detect_format", "evp_bytes_to_key", "is_text", "key_name",
]

#: the file-name suffix of an encrypted Cfg version
CRYPT_SUFFIX = ".crypt"
#: the first characters of auth-format data
AUTH_MAGIC = "$bcfg2-aead1$"
#: the first characters of compat-format data (base64 of ``Salted__``)
COMPAT_PREFIX = "U2FsdGVkX1"
FORMATS = ("auth", "compat")
#: compat-format ciphers (upstream's M2Crypto names) -> key length in bytes
COMPAT_ALGORITHMS = {"aes_128_cbc": 16, "aes_192_cbc": 24, "aes_256_cbc": 32}

_SALTED = b"Salted__"
_LINE = 64  # openssl's base64 line length
_AUTH = re.compile(r"\$bcfg2-aead1\$(?P<params>[^$]*)\$(?P<salt>[A-Za-z0-9+/=]+)"
                   r"\$(?P<body>[A-Za-z0-9+/=]+)")
#: a passphrase name that may go into an auth header
_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
#: C0 controls other than tab, newline, vertical tab, form feed, return and escape
_CONTROL = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_WHITESPACE = re.compile(rb"\s+")
_GCM_NONCE = 12
_GCM_TAG = 16


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's cost: N = 2**ln, block size r, parallelism p (memory: 128 * r * N bytes)."""

    ln: int = 14
    r: int = 8
    p: int = 1

    #: bounds a repository file's header may ask for (at most 256 MiB, ~1 s of work)
    MAX_MEMORY = 256 << 20

    def check(self, what: str) -> None:
        """Refuse costs no sane writer uses, so a header cannot make the server hang."""
        if not (10 <= self.ln <= 20 and 1 <= self.r <= 32 and 1 <= self.p <= 16) \
                or 128 * self.r * (1 << self.ln) > self.MAX_MEMORY or self.r * self.p >= 1 << 30:
            raise DecryptionError(f"{what}: scrypt cost ln={self.ln}, r={self.r}, p={self.p} is "
                                  f"out of bounds")


def evp_bytes_to_key(passphrase: bytes, salt: bytes, key_len: int, iv_len: int) -> tuple[bytes, bytes]:
    """OpenSSL's EVP_BytesToKey with MD5 and one round: what ``openssl enc -md md5`` derives."""
    derived = b""
    block = b""
    while len(derived) < key_len + iv_len:
        block = hashlib.md5(block + passphrase + salt, usedforsecurity=False).digest()
        derived += block
    return derived[:key_len], derived[key_len:key_len + iv_len]


def _wrap(text: str, width: int | None) -> str:
    if not width:
        return text
    return "".join(text[i:i + width] + "\n" for i in range(0, len(text), width)) or "\n"


def _b64decode(text: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(_WHITESPACE.sub(b"", text), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"{what}: not base64") from None


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _compat_key(algorithm: str, what: str) -> int:
    try:
        return COMPAT_ALGORITHMS[algorithm]
    except KeyError:
        raise ConfigError(f"{what}: [encryption] algorithm: {algorithm!r} is not one of "
                          f"{', '.join(COMPAT_ALGORITHMS)}") from None


def is_text(data: bytes) -> bool:
    """Whether decrypted compat data looks like text (UTF-8, no stray control characters)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(text) is None


def compat_encrypt(plaintext: bytes, passphrase: str, algorithm: str = "aes_256_cbc",
                   salt: bytes | None = None, width: int | None = _LINE) -> str:
    """Upstream's (and ``openssl enc -a -md md5``'s) format; ``width=None``: one line."""
    key_len = _compat_key(algorithm, "compat encryption")
    salt = os.urandom(8) if salt is None else salt
    if len(salt) != 8:
        raise ValueError("the salt of the compat format is 8 bytes")
    key, iv = evp_bytes_to_key(passphrase.encode("utf-8"), salt, key_len, 16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    payload = _SALTED + salt + encryptor.update(padded) + encryptor.finalize()
    return _wrap(base64.b64encode(payload).decode("ascii"), width)


def compat_decrypt(data: str | bytes, passphrase: str, algorithm: str = "aes_256_cbc",
                   what: str = "encrypted data") -> bytes:
    """Decrypt upstream's format; a DecryptionError if the padding is bad or the output is no text."""
    key_len = _compat_key(algorithm, what)
    raw = _b64decode(_as_bytes(data), what)
    if not raw.startswith(_SALTED) or len(raw) < 32 or (len(raw) - 16) % 16:
        raise DecryptionError(f"{what}: not in the compat (openssl enc) format")
    salt, body = raw[8:16], raw[16:]
    key, iv = evp_bytes_to_key(passphrase.encode("utf-8"), salt, key_len, 16)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptionError(f"{what}: wrong passphrase (bad padding)") from None
    if not is_text(plaintext):
        raise DecryptionError(f"{what}: wrong passphrase (the output is not text; the compat "
                              f"format can only hold text)")
    return plaintext


def _auth_header(cost: ScryptCost, name: str | None) -> str:
    params = f"kdf=scrypt,ln={cost.ln},r={cost.r},p={cost.p}"
    if name is not None and _NAME.fullmatch(name):
        params += f",key={name}"
    return AUTH_MAGIC + params + "$"


def _scrypt(passphrase: str, salt: bytes, cost: ScryptCost) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << cost.ln, r=cost.r, p=cost.p).derive(
        passphrase.encode("utf-8"))


def auth_encrypt(plaintext: bytes, passphrase: str, name: str | None = None,
                 cost: ScryptCost = ScryptCost(), width: int | None = _LINE) -> str:
    """Our authenticated format (see the module docstring); upstream tools cannot read it.

    ``name`` (the passphrase's name in bcfg2.conf) goes into the header, so
    the reader tries that passphrase only. With ``width``, the ciphertext
    follows the header on lines of that length; ``width=None``: one line.
    """
    salt = os.urandom(16)
    nonce = os.urandom(_GCM_NONCE)
    head = _auth_header(cost, name) + base64.b64encode(salt).decode("ascii") + "$"
    sealed = AESGCM(_scrypt(passphrase, salt, cost)).encrypt(nonce, plaintext, head.encode("ascii"))
    body = base64.b64encode(nonce + sealed).decode("ascii")
    if width:
        return head + "\n" + _wrap(body, width)
    return head + body


def _parse_auth(data: bytes, what: str) -> tuple[dict[str, str], bytes, bytes, bytes]:
    """(parameters, salt, sealed body, authenticated header) of auth-format data."""
    text = _WHITESPACE.sub(b"", data).decode("ascii", errors="replace")
    match = _AUTH.fullmatch(text)
    if match is None:
        raise DecryptionError(f"{what}: malformed {AUTH_MAGIC} header or data")
    params: dict[str, str] = {}
    for item in match.group("params").split(","):
        key, sep, value = item.partition("=")
        if not sep or key in params:
            raise DecryptionError(f"{what}: malformed {AUTH_MAGIC} parameters")
        params[key] = value
    salt = _b64decode(match.group("salt").encode("ascii"), what)
    body = _b64decode(match.group("body").encode("ascii"), what)
    header = text[:match.start("body")].encode("ascii")
    return params, salt, body, header


def key_name(data: str | bytes) -> str | None:
    """The passphrase name an auth-format header carries, or None."""
    raw = _as_bytes(data)
    if detect_format(raw) != "auth":
        return None
    try:
        return _parse_auth(raw, "")[0].get("key")
    except DecryptionError:
        return None


def auth_decrypt(data: str | bytes, passphrase: str, what: str = "encrypted data") -> bytes:
    """Decrypt our format; a DecryptionError on a wrong passphrase or any change to the data."""
    params, salt, body, header = _parse_auth(_as_bytes(data), what)
    if params.get("kdf") != "scrypt" or not {"ln", "r", "p"} <= params.keys() \
            or not params.keys() <= {"kdf", "ln", "r", "p", "key"}:
        raise DecryptionError(f"{what}: unknown {AUTH_MAGIC} parameters")
    try:
        cost = ScryptCost(int(params["ln"]), int(params["r"]), int(params["p"]))
    except ValueError:
        raise DecryptionError(f"{what}: malformed scrypt cost") from None
    cost.check(what)
    if len(salt) < 8 or len(body) < _GCM_NONCE + _GCM_TAG:
        raise DecryptionError(f"{what}: truncated")
    try:
        return AESGCM(_scrypt(passphrase, salt, cost)).decrypt(
            body[:_GCM_NONCE], body[_GCM_NONCE:], header)
    except InvalidTag:
        raise DecryptionError(f"{what}: wrong passphrase, or the data was changed") from None


def detect_format(data: str | bytes) -> str | None:
    """``"auth"``, ``"compat"`` or None (not encrypted data), from the first characters."""
    head = _as_bytes(data).lstrip()[:len(AUTH_MAGIC)]
    if head.startswith(AUTH_MAGIC.encode("ascii")):
        return "auth"
    if head.startswith(COMPAT_PREFIX.encode("ascii")):
        return "compat"
    return None


def _not_encrypted(what: str) -> DecryptionError:
    return DecryptionError(f"{what}: not encrypted data (it starts with neither {AUTH_MAGIC} "
                           f"nor {COMPAT_PREFIX})")


@dataclass(frozen=True)
class Encryption:
    """The ``[encryption]`` settings: named passphrases, compat cipher, write format, lax.

    The passphrases stay out of ``repr`` and every message.
    """

    passphrases: Mapping[str, str] = field(default_factory=dict, repr=False)
    algorithm: str = "aes_256_cbc"
    format: str = "auth"
    lax: bool = False
    cost: ScryptCost = ScryptCost()

    @classmethod
    def from_setup(cls, setup: Setup) -> Encryption:
        """Read ``[encryption]``; an unknown algorithm is a ConfigError."""
        section = setup.encryption
        algorithm = str(section.algorithm).strip().lower().replace("-", "_")
        _compat_key(algorithm, setup.config_file or "bcfg2.conf")
        lax = section.decrypt == "lax" or bool(section.lax_decryption)
        return cls(dict(section.passphrases), algorithm, section.format, lax)

    def passphrase(self, name: str, what: str = "encrypted data") -> str:
        """The passphrase called ``name`` (bcfg2.conf lowercases names, so case is ignored)."""
        value = self.passphrases.get(name)
        if value is None:
            value = self.passphrases.get(name.lower())
        if value is None:
            raise DecryptionError(f"{what}: no passphrase named {name!r} in [encryption]")
        return value

    def decrypt_with(self, data: str | bytes, passphrase: str, what: str) -> bytes:
        """Decrypt data in either format with one passphrase."""
        kind = detect_format(data)
        if kind == "auth":
            return auth_decrypt(data, passphrase, what)
        if kind == "compat":
            return compat_decrypt(data, passphrase, self.algorithm, what)
        raise _not_encrypted(what)

    def decrypt(self, data: str | bytes, name: str | None = None,
                what: str = "encrypted data") -> tuple[bytes, str]:
        """(plaintext, passphrase name): with ``name``'s passphrase, else the header's, else each.

        Trying each passphrase is what upstream does for Cfg files, which
        name none; the first that decrypts wins.
        """
        name = name or key_name(data)
        if name:
            return self.decrypt_with(data, self.passphrase(name, what), what), name
        if not self.passphrases:
            raise DecryptionError(f"{what}: no passphrases in [encryption] to decrypt it with")
        if detect_format(data) is None:
            raise _not_encrypted(what)
        for candidate in sorted(self.passphrases):
            try:
                return self.decrypt_with(data, self.passphrases[candidate], what), candidate
            except DecryptionError:
                continue
        raise DecryptionError(f"{what}: none of the passphrases in [encryption] decrypts it "
                              f"(wrong passphrase, or the data was changed)")

    def encrypt(self, plaintext: bytes, name: str, format: str | None = None,  # noqa: A002
                width: int | None = _LINE) -> str:
        """Encrypt with the passphrase called ``name``, in ``format`` (default: the configured)."""
        kind = format or self.format
        passphrase = self.passphrase(name, "encrypting")
        if kind == "compat":
            return compat_encrypt(plaintext, passphrase, self.algorithm, width=width)
        if kind == "auth":
            return auth_encrypt(plaintext, passphrase, name, self.cost, width=width)
        raise ValueError(f"unknown format {kind!r}")


def decrypt_elements(root: lxml.etree._Element, encryption: Encryption, path: str) -> tuple[list[str], bool]:
    """Decrypt in place the text of every element of an XML file with ``encrypted="NAME"``.

    Returns (one message per element that failed, naming ``path``, its line
    and tag; whether the file is lax). Failed elements keep their encrypted
    text. Lax is ``[encryption]``'s unless the root element says
    ``lax_decryption="true"`` or ``"false"``; the caller refuses a strict
    file with failures.
    """
    failures: list[str] = []
    for element in root.iter():
        name = element.get("encrypted") if isinstance(element.tag, str) else None
        if name is None or not (element.text or "").strip():
            continue
        what = f"{path}:{element.sourceline}: <{element.tag} encrypted=\"{name}\">"
        try:
            plaintext, _name = encryption.decrypt(element.text or "", name, what)
            element.text = plaintext.decode("utf-8")
        except DecryptionError as err:
            failures.append(str(err))
        except (UnicodeDecodeError, ValueError):
            failures.append(f"{what}: decrypts to something that is not XML text")
    value = root.get("lax_decryption")
    lax = encryption.lax if value is None else value.strip().lower() in ("1", "yes", "true", "on")
    return failures, lax

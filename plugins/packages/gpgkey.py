"""The identity RPM gives an OpenPGP public key: ``gpg-pubkey-VERSION-RELEASE``.

``rpm --import`` records every primary key of a key file as a package named
``gpg-pubkey`` whose version is the low 32 bits of the key's ID and whose
release is its creation time, both as eight lowercase hex digits. The
Packages plugin lists one ``Instance`` per key under a ``gpg-pubkey``
package, so the client's Yum or RPM driver imports the keys a source
needs, and finds them installed next time.

Only what that takes is read: armoured or binary key files, the packet
framing of RFC 4880 (old and new headers), and version 4 public-key
packets (every key a distribution signs with today). A key of another
version, or a file that is no key, is a ``KeyFileError`` naming why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

#: packet tags: a primary public key (its subkeys, tag 14, are not imported separately)
PUBLIC_KEY = 6
BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
END = "-----END PGP PUBLIC KEY BLOCK-----"


class KeyFileError(ValueError):
    """A GPG key file that gives no key RPM could import."""


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(blob: bytes) -> list[bytes]:
    """The binary packets of a key file: each armoured block decoded, or the file itself."""
    text = blob.decode("ascii", "replace")
    if BEGIN not in text:
        return [blob]
    blocks = []
    for chunk in text.split(BEGIN)[1:]:
        body, found, _ = chunk.partition(END)
        if not found:
            raise KeyFileError("an armoured key block has no end line")
        lines = body.strip().splitlines()
        # armour headers ("Version: ...") end at the first empty line, if there are any
        if any(not line.strip() for line in lines):
            lines = lines[[not line.strip() for line in lines].index(True) + 1:]
        data_lines = [line.strip() for line in lines if line.strip()]
        checksum = None
        if data_lines and data_lines[-1].startswith("="):
            checksum = data_lines.pop()[1:]
        try:
            data = base64.b64decode("".join(data_lines), validate=True)
            expected = base64.b64decode(checksum, validate=True) if checksum else None
        except (binascii.Error, ValueError):
            raise KeyFileError("an armoured key block is not base64") from None
        if expected is not None and int.from_bytes(expected, "big") != _crc24(data):
            raise KeyFileError("an armoured key block fails its CRC-24 checksum")
        blocks.append(data)
    return blocks


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, body) packets of binary OpenPGP data."""
    out = []
    position = 0
    while position < len(data):
        header = data[position]
        if not header & 0x80:
            raise KeyFileError(f"not OpenPGP data (byte {position} is no packet header)")
        if header & 0x40:  # new format
            tag = header & 0x3F
            first = data[position + 1] if position + 1 < len(data) else 0
            if first < 192:
                length, skip = first, 2
            elif first < 224:
                length = ((first - 192) << 8) + data[position + 2] + 192
                skip = 3
            elif first == 255:
                length, skip = int.from_bytes(data[position + 2:position + 6], "big"), 6
            else:
                raise KeyFileError("a key packet with partial body lengths")
        else:
            tag = (header >> 2) & 0x0F
            kind = header & 0x03
            if kind == 3:
                length, skip = len(data) - position - 1, 1
            else:
                size = 1 << kind
                length = int.from_bytes(data[position + 1:position + 1 + size], "big")
                skip = 1 + size
        body = data[position + skip:position + skip + length]
        if len(body) != length:
            raise KeyFileError("the key data is cut short")
        out.append((tag, body))
        position += skip + length
    return out


def rpm_names(blob: bytes) -> list[tuple[str, str]]:
    """(version, release) of each primary key in a key file, as ``rpm --import`` names them."""
    names = []
    for data in dearmor(blob):
        for tag, body in packets(data):
            if tag != PUBLIC_KEY:
                continue
            if not body or body[0] != 4:
                raise KeyFileError(f"a version {body[0] if body else '?'} public key (only "
                               f"version 4 keys are read)")
            created = int.from_bytes(body[1:5], "big")
            fingerprint = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body,
                                       usedforsecurity=False).digest()
            names.append((fingerprint[-4:].hex(), f"{created:08x}"))
    if not names:
        raise KeyFileError("no public key in the file")
    return names

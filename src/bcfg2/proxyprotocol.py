"""The PROXY protocol v2 header a TCP load balancer (HAProxy ``send-proxy-v2``) sends first.

A balancer passing TLS through unopened connects to the server itself, so
the server would see every agent at the balancer's address. With ``[server]
proxy_protocol`` listing the balancers, a connection from one of them must
begin with a binary header naming the agent's real address, before any
TLS; that address is then the connection's peer for everything after it.

The header: a 12-byte signature, a version/command byte (version 2; LOCAL
for the balancer's own health checks, PROXY for a relayed connection), a
family/protocol byte, a 2-byte big-endian length, then that many bytes of
addresses and optional TLVs (type-length-value extensions, skipped here).
Only TCP over IPv4 and IPv6 is accepted for PROXY; LOCAL keeps the
balancer's own address. This module parses; ``bcfg2.connections`` reads
the header off each balancer connection within a deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from bcfg2.errors import ConfigError

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: signature, version/command, family/protocol, length
FIXED_SIZE = 16
#: the longest address block accepted: the spec's own bound for a header with a
#: few TLVs (16 + 520 = 536 bytes in all), far beyond HAProxy's usual 12 or 36
MAX_BLOCK = 520
MAX_HEADER = FIXED_SIZE + MAX_BLOCK
LOCAL, PROXY = 0x0, 0x1
#: family/protocol byte -> (address family, address bytes, address block size)
FAMILIES = {0x11: (socket.AF_INET, 4, 12), 0x21: (socket.AF_INET6, 16, 36)}
FAMILY_NAMES = {0x00: "UNSPEC", 0x11: "TCP over IPv4", 0x12: "UDP over IPv4",
                0x21: "TCP over IPv6", 0x22: "UDP over IPv6", 0x31: "UNIX stream",
                0x32: "UNIX datagram"}


class ProxyHeaderError(ValueError):
    """What arrived is not an acceptable PROXY protocol v2 header (the message says why)."""


class IncompleteHeader(ProxyHeaderError):
    """More bytes are needed before the header can be judged."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header: ``source`` and ``destination`` are None for LOCAL (health checks)."""

    size: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None

    @property
    def local(self) -> bool:
        return self.source is None


def looks_like_header(first: bytes) -> bool:
    """Whether the first bytes of a connection begin a PROXY header (v2, or v1's text)."""
    return len(first) >= 4 and first[:4] in (SIGNATURE[:4], b"PROX")


def check_start(data: bytes) -> None:
    """Refuse, as soon as its first bytes show it, a connection that sends no v2 header."""
    head = data[:len(SIGNATURE)]
    if SIGNATURE.startswith(head):
        return
    if b"PROXY ".startswith(head[:6]):
        raise ProxyHeaderError("a PROXY protocol v1 (text) header; only v2 is accepted")
    if head[:1] == b"\x16":
        raise ProxyHeaderError("no PROXY protocol header: the connection began a TLS handshake")
    raise ProxyHeaderError(f"no PROXY protocol v2 header (the connection began {head[:8]!r})")


def block_size(fixed: bytes) -> int:
    """The size of the address block the 16 fixed bytes announce, once they are checked."""
    check_start(fixed)
    if len(fixed) < FIXED_SIZE:
        raise IncompleteHeader("the header is incomplete")
    version, command = fixed[12] >> 4, fixed[12] & 0xF
    if version != 2:
        raise ProxyHeaderError(f"PROXY protocol version {version}; only 2 is accepted")
    if command not in (LOCAL, PROXY):
        raise ProxyHeaderError(f"unknown PROXY protocol command {command}")
    (size,) = struct.unpack_from("!H", fixed, 14)
    if size > MAX_BLOCK:
        raise ProxyHeaderError(f"an address block of {size} bytes (at most {MAX_BLOCK})")
    if command == PROXY:
        family = fixed[13]
        if family not in FAMILIES:
            name = FAMILY_NAMES.get(family, f"0x{family:02x}")
            raise ProxyHeaderError(f"address family {name}; only TCP over IPv4 and IPv6 "
                                   f"are accepted")
        if size < FAMILIES[family][2]:
            raise ProxyHeaderError(f"an address block of {size} bytes is too short for "
                                   f"{FAMILY_NAMES[family]}")
    return size


#: how an IPv4-mapped IPv6 address begins (::ffff:a.b.c.d)
MAPPED = bytes(10) + b"\xff\xff"


def _address(family: int, packed: bytes, port: int) -> tuple[str, int]:
    if family == socket.AF_INET6 and packed.startswith(MAPPED):
        family, packed = socket.AF_INET, packed[12:]  # an IPv4 agent seen by an IPv6 frontend
    return socket.inet_ntop(family, packed), port


def parse(data: bytes) -> ProxyHeader:
    """The header at the start of ``data`` (bytes after it are ignored; TLVs are skipped).

    Raises ``IncompleteHeader`` if ``data`` ends before the header does, and
    ``ProxyHeaderError`` for anything that is not an acceptable v2 header.
    """
    size = block_size(data[:FIXED_SIZE])
    if len(data) < FIXED_SIZE + size:
        raise IncompleteHeader("the header is incomplete")
    if data[12] & 0xF == LOCAL:
        return ProxyHeader(FIXED_SIZE + size)
    family, length, _ = FAMILIES[data[13]]
    block = data[FIXED_SIZE:FIXED_SIZE + size]
    src_port, dst_port = struct.unpack_from("!HH", block, 2 * length)
    return ProxyHeader(FIXED_SIZE + size, _address(family, block[:length], src_port),
                       _address(family, block[length:2 * length], dst_port))


class HeaderReader:
    """Reads one header off a non-blocking socket, never a byte past it (TLS follows)."""

    def __init__(self) -> None:
        self.data = b""

    def wanted(self) -> int:
        """Bytes still to read: the rest of the fixed part, then the rest of the block."""
        if len(self.data) < FIXED_SIZE:
            return FIXED_SIZE - len(self.data)
        return FIXED_SIZE + block_size(self.data) - len(self.data)

    def read(self, sock: socket.socket) -> ProxyHeader | None:
        """Read what has arrived; the header once whole, None while it is not.

        Raises ``ProxyHeaderError`` as soon as the bytes read show it is no
        acceptable header, ``ConnectionError`` if the peer closes first, and
        ``BlockingIOError`` if nothing was waiting.
        """
        chunk = sock.recv(self.wanted())
        if not chunk:
            raise ConnectionError("the connection was closed before its PROXY header ended")
        self.data += chunk
        try:
            return parse(self.data)
        except IncompleteHeader:
            return None


class TrustedBalancers:
    """The balancers of ``[server] proxy_protocol``: addresses or networks (CIDR)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"[server] proxy_protocol: {entry!r} is not an IP address "
                                  f"or network") from None
        self._exact = {str(n.network_address) for n in self.networks
                       if n.num_addresses == 1}

    @classmethod
    def from_list(cls, entries: Iterable[str]) -> TrustedBalancers | None:
        """The balancers listed, None if none is (PROXY protocol off)."""
        listed = [entry for entry in entries if entry.strip()]
        return cls(listed) if listed else None

    def trusts(self, ip: str) -> bool:
        """Whether a peer address is one of the balancers (IPv4-mapped IPv6 counts as IPv4)."""
        if ip in self._exact:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in network for network in self.networks)


__all__ = ["MAX_HEADER", "SIGNATURE", "HeaderReader", "IncompleteHeader", "ProxyHeader",
           "ProxyHeaderError", "TrustedBalancers", "check_start", "looks_like_header", "parse"]

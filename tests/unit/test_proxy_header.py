"""The PROXY protocol v2 parser, with headers built here byte by byte as the spec lays them out."""

from __future__ import annotations

import socket
import struct

import pytest

from bcfg2.errors import ConfigError
from bcfg2.proxyprotocol import (
    MAX_HEADER,
    SIGNATURE,
    HeaderReader,
    IncompleteHeader,
    ProxyHeaderError,
    TrustedBalancers,
    check_start,
    looks_like_header,
    parse,
)

TCP4, TCP6, UDP4, UNIX, UNSPEC = 0x11, 0x21, 0x12, 0x31, 0x00


def header(command: int = 1, family: int = TCP4, block: bytes | None = None,
           version: int = 2, length: int | None = None) -> bytes:
    """A v2 header: signature, version/command, family/protocol, length, then the block."""
    if block is None:
        block = address_block("192.0.2.10", 51000, "198.51.100.1", 6789)
    size = len(block) if length is None else length
    return SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", size) + block


def address_block(src: str, sport: int, dst: str, dport: int) -> bytes:
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    return (socket.inet_pton(family, src) + socket.inet_pton(family, dst)
            + struct.pack("!HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# -- what a balancer sends ----------------------------------------------------------------

def test_a_tcp4_header_gives_the_clients_address_and_its_size():
    data = header()
    parsed = parse(data + b"\x16\x03\x01")  # what follows is the TLS ClientHello, not ours
    assert parsed.source == ("192.0.2.10", 51000)
    assert parsed.destination == ("198.51.100.1", 6789)
    assert parsed.size == len(data) == 28
    assert not parsed.local


def test_a_tcp6_header_with_tlvs_skips_them():
    block = address_block("2001:db8::5", 40000, "2001:db8::1", 6789)
    extras = tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0x20, b"\x05" + b"\x00" * 4)  # ALPN, NOOP, SSL
    parsed = parse(header(family=TCP6, block=block + extras))
    assert parsed.source == ("2001:db8::5", 40000)
    assert parsed.destination == ("2001:db8::1", 6789)
    assert parsed.size == 16 + 36 + len(extras)


def test_an_ipv4_mapped_ipv6_client_is_given_as_ipv4():
    block = address_block("::ffff:192.0.2.7", 1234, "::ffff:192.0.2.1", 6789)
    assert parse(header(family=TCP6, block=block)).source == ("192.0.2.7", 1234)


def test_local_is_a_health_check_without_an_address_whatever_its_block():
    for family, block in ((UNSPEC, b""), (UNIX, b"x" * 216), (TCP4, b"junk")):
        parsed = parse(header(command=0, family=family, block=block))
        assert parsed.local and parsed.source is None
        assert parsed.size == 16 + len(block)


def test_the_largest_header_is_accepted_and_one_byte_more_is_not():
    block = address_block("192.0.2.10", 1, "192.0.2.1", 2)
    filler = tlv(0x04, b"\x00" * (MAX_HEADER - 16 - len(block) - 3))
    assert parse(header(block=block + filler)).size == MAX_HEADER
    with pytest.raises(ProxyHeaderError, match="at most 520"):
        parse(header(block=block + filler + b"\x00"))


# -- what is refused ----------------------------------------------------------------------

@pytest.mark.parametrize(("data", "why"), [
    (b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 6789\r\n", "v1 \\(text\\)"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "began a TLS handshake"),
    (b"POST /RPC2 HTTP/1.0\r\n", "no PROXY protocol v2 header"),
    (SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c", "no PROXY protocol v2 header"),
])
def test_anything_but_a_v2_signature_is_refused_with_the_reason(data, why):
    with pytest.raises(ProxyHeaderError, match=why):
        parse(data)


@pytest.mark.parametrize(("data", "why"), [
    (header(version=1), "version 1"),
    (header(version=3), "version 3"),
    (header(command=2), "unknown PROXY protocol command 2"),
    (header(family=UDP4), "UDP over IPv4"),
    (header(family=UNIX, block=b"\x00" * 216), "UNIX stream"),
    (header(family=UNSPEC, block=b""), "UNSPEC"),
    (header(family=0x44), "0x44"),
    (header(block=b"\x00" * 11), "11 bytes is too short for TCP over IPv4"),
    (header(family=TCP6, block=address_block("192.0.2.1", 1, "192.0.2.2", 2)),
     "too short for TCP over IPv6"),
    (header(length=0xFFFF, block=b""), "65535 bytes"),
])
def test_malformed_or_unsupported_headers_are_refused_from_their_fixed_part(data, why):
    with pytest.raises(ProxyHeaderError, match=why) as info:
        parse(data[:16])  # judged before a byte of the block is read
    assert not isinstance(info.value, IncompleteHeader)


def test_a_truncated_header_is_incomplete_at_every_length():
    data = header(family=TCP6, block=address_block("2001:db8::5", 1, "2001:db8::1", 2))
    for cut in range(len(data)):
        with pytest.raises(IncompleteHeader):
            parse(data[:cut])


def test_a_bad_first_byte_is_refused_before_the_rest_arrives():
    check_start(SIGNATURE[:5])  # a prefix of the signature: wait for more
    with pytest.raises(ProxyHeaderError):
        check_start(b"\x16")


def test_headers_are_recognised_by_their_first_four_bytes():
    assert looks_like_header(header()[:4])
    assert looks_like_header(b"PROXY TCP4 ")
    assert not looks_like_header(b"\x16\x03\x01\x02")
    assert not looks_like_header(b"\r\n")  # too short to say


# -- reading one header off a socket --------------------------------------------------------

def test_the_reader_reads_exactly_the_header_however_it_is_split():
    data = header(family=TCP6, block=address_block("2001:db8::5", 1, "2001:db8::1", 2)
                  + tlv(0x04, b"abc"))
    tls_bytes = b"\x16\x03\x01rest of the handshake"
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        reader = HeaderReader()
        with pytest.raises(BlockingIOError):
            reader.read(ours)
        parsed = None
        for i in range(0, len(data), 7):  # seven bytes at a time
            theirs.sendall(data[i:i + 7] + (tls_bytes if i + 7 >= len(data) else b""))
            while parsed is None:
                try:
                    parsed = reader.read(ours)
                except BlockingIOError:
                    break
        assert parsed is not None and parsed.source == ("2001:db8::5", 1)
        assert ours.recv(100) == tls_bytes  # not a byte of the handshake was taken


def test_the_reader_reports_a_peer_that_closes_mid_header():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(header()[:10])
        theirs.close()
        reader = HeaderReader()
        assert reader.read(ours) is None
        with pytest.raises(ConnectionError):
            reader.read(ours)


# -- trusted balancers ------------------------------------------------------------------------

def test_balancers_are_addresses_or_networks_and_none_means_off():
    assert TrustedBalancers.from_list([]) is None
    assert TrustedBalancers.from_list([" "]) is None
    balancers = TrustedBalancers.from_list(["127.0.0.1", "10.1.0.0/16", "2001:db8::/64"])
    assert balancers is not None
    assert balancers.trusts("127.0.0.1")
    assert balancers.trusts("10.1.200.3")
    assert balancers.trusts("::ffff:10.1.0.9")  # an IPv4 balancer on a dual-stack listener
    assert balancers.trusts("2001:db8::77")
    assert not balancers.trusts("127.0.0.2")
    assert not balancers.trusts("10.2.0.1")
    assert not balancers.trusts("not an address")


def test_a_bad_balancer_entry_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="'10.0.0.300' is not an IP address"):
        TrustedBalancers.from_list(["10.0.0.1", "10.0.0.300"])

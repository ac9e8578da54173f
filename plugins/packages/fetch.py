"""Downloading and decompressing index files, bounded in time and size.

``Fetcher.get`` reads http, https (certificate verified) and file URLs with
one deadline for the whole download, so a mirror that trickles bytes is cut
off, and a size limit checked while reading. ``decompress`` recognises
gzip, xz, zstd and bzip2 by their magic bytes and stops past a limit, so a
decompression bomb is an error rather than the server's memory.
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import lzma
import os
import ssl
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from typing import Any

logger = logging.getLogger("bcfg2.plugins.Packages")

USER_AGENT = "bcfg2-server Packages"
CHUNK = 1 << 16
MAGIC = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2"}


class FetchError(Exception):
    """A download or a decompression that failed; the message names the URL and why."""


class NotFound(FetchError):
    """The server has no such file (HTTP 404 or 410, or a missing file: URL).

    A caller trying several names for one index (``Packages.xz``, then
    ``Packages.gz``) moves on to the next without reporting an error.
    """


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum(kind: str, data: bytes) -> str:
    """The hex digest of ``data`` by a checksum name as indices write it (sha256, sha512...)."""
    name = kind.lower().replace("-", "")
    if name == "sha":
        name = "sha1"
    try:
        return hashlib.new(name, data).hexdigest()
    except ValueError:
        raise FetchError(f"unknown checksum type {kind!r}") from None


class Fetcher:
    """Downloads with a deadline and a size limit."""

    def __init__(self, timeout: float = 30.0, max_size: int = 512 * 2**20,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.max_size = max_size
        self.ssl_context = ssl_context or ssl.create_default_context()

    def get(self, url: str) -> bytes:
        """The bytes at ``url``, or a FetchError."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme == "file":
            return self._file(url)
        if scheme not in ("http", "https"):
            raise FetchError(f"{url}: only http, https and file URLs are read")
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        deadline = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.ssl_context) as answer:
                final = urllib.parse.urlsplit(answer.geturl()).scheme
                if final not in ("http", "https"):
                    raise FetchError(f"{url}: redirected to a {final} URL")
                if answer.headers.get_content_type() == "text/html":
                    raise FetchError(f"{url}: the server answered with an HTML page, not "
                                     f"an index")
                data = self._read(answer, url, deadline)
        except FetchError:
            raise
        except urllib.error.HTTPError as err:
            err.close()
            error = NotFound if err.code in (404, 410) else FetchError
            raise error(f"{url}: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            raise FetchError(f"{url}: {err.reason}") from None
        except (OSError, ValueError) as err:  # timeouts, resets, bad URLs, TLS errors
            raise FetchError(f"{url}: {err or type(err).__name__}") from None
        logger.info("Packages: Updating %s", url)
        return data

    def _read(self, answer: Any, url: str, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchError(f"{url}: not downloaded within {self.timeout:g} s")
            chunk = answer.read1(CHUNK) if hasattr(answer, "read1") else answer.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_size:
                raise FetchError(f"{url}: larger than {self.max_size} bytes")
            chunks.append(chunk)

    def _file(self, url: str) -> bytes:
        """A regular file only: a FIFO, a device or a directory would block or never end.

        The file is opened without blocking (a FIFO with no writer opens at
        once) and checked with fstat on what was opened, so nothing can be
        swapped in between a check and the read.
        """
        path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise NotFound(f"{url}: {err.strerror}") from None
        except OSError as err:
            raise FetchError(f"{url}: {err.strerror or err}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FetchError(f"{url}: not a regular file")
        with open(fd, "rb") as fh:
            try:
                data = fh.read(self.max_size + 1)
            except OSError as err:
                raise FetchError(f"{url}: {err.strerror or err}") from None
        if len(data) > self.max_size:
            raise FetchError(f"{url}: larger than {self.max_size} bytes")
        logger.info("Packages: Updating %s", url)
        return data


def compression_of(data: bytes) -> str | None:
    """gzip, xz, zstd or bzip2 by the magic bytes; None for anything else."""
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    return None


def _zstd_decompressor() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        return zstd.ZstdDecompressor()
    except ImportError:
        return None


def decompress(data: bytes, name: str, limit: int) -> bytes:
    """``data`` decompressed (or as it is, if not compressed), at most ``limit`` bytes."""
    kind = compression_of(data)
    if kind is None:
        if len(data) > limit:
            raise FetchError(f"{name}: larger than {limit} bytes")
        return data
    try:
        if kind == "gzip":
            return _gzip(data, name, limit)
        if kind == "zstd" and _zstd_decompressor() is None:
            return _zstandard(data, name, limit)
        decompressor = (lzma.LZMADecompressor() if kind == "xz" else
                        bz2.BZ2Decompressor() if kind == "bzip2" else _zstd_decompressor())
        return _stepwise(decompressor, data, name, limit)
    except FetchError:
        raise
    except Exception as err:  # lzma.LZMAError, zlib.error, OSError, zstandard.ZstdError...
        raise FetchError(f"{name}: corrupt {kind} data: {err}") from None


def _check(size: int, name: str, limit: int) -> None:
    if size > limit:
        raise FetchError(f"{name}: decompresses to more than {limit} bytes")


def _gzip(data: bytes, name: str, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    chunks, size, pending = [], 0, data
    while not decompressor.eof:
        chunk = decompressor.decompress(pending, CHUNK * 16)
        pending = decompressor.unconsumed_tail
        size += len(chunk)
        _check(size, name, limit)
        chunks.append(chunk)
        if not chunk and not pending:
            raise FetchError(f"{name}: truncated gzip data")
    return b"".join(chunks)


def _stepwise(decompressor: Any, data: bytes, name: str, limit: int) -> bytes:
    """For decompressors with lzma's interface (xz, bzip2, zstd from the standard library)."""
    chunks, size, pending = [], 0, data
    while not decompressor.eof:
        chunk = decompressor.decompress(pending, CHUNK * 16)
        pending = b""
        size += len(chunk)
        _check(size, name, limit)
        chunks.append(chunk)
        if not chunk and decompressor.needs_input:
            raise FetchError(f"{name}: truncated compressed data")
    return b"".join(chunks)


def _zstandard(data: bytes, name: str, limit: int) -> bytes:
    """zstd through the zstandard package, fed in small slices so the output stays bounded."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor().decompressobj()
    chunks, size = [], 0
    for start in range(0, len(data), 1024):
        chunk = decompressor.decompress(data[start:start + 1024])
        size += len(chunk)
        _check(size, name, limit)
        chunks.append(chunk)
        if decompressor.eof:
            break
    if not decompressor.eof:
        raise FetchError(f"{name}: truncated zstd data")
    return b"".join(chunks)

"""Downloading and decompressing index files, bounded in time and size.

``Fetcher.get`` reads http, https (certificate verified) and file URLs with
one deadline for the whole download, so a mirror that trickles bytes is cut
off, and a size limit checked while reading; a missing file is NotFound.
``DecompressingReader`` recognises gzip, xz, zstd and bzip2 by their magic
bytes and decompresses as it is read, stopping past a limit, so a
decompression bomb is an error rather than the server's memory;
``decompress`` is all of what it reads.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import http.client
import io
import logging
import lzma
import os
import socket
import ssl
import stat
import threading
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


class _Deadline:
    """Cuts off the connections of one download when its time is up.

    A socket timeout bounds each read, not their sum: a server sending a byte
    of its status line or headers every few seconds never trips it. At the
    deadline a timer thread shuts the download's sockets down, which ends the
    read blocked on them wherever it is (status line, headers or body); the
    download then fails with ``expired`` set, and its error says so. A socket
    is watched once connected, so the TCP connect and the TLS handshake are
    bounded by the socket timeout alone.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._timer.join()

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` off at the deadline (at once if it has passed).

        The socket itself, not its connection: urllib hands the socket over to
        the response and clears the connection's reference once the headers
        are in.
        """
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._cut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._cut(sock)

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed already
            # the plain socket's shutdown: an SSLSocket's own would also drop
            # its TLS state under the reading thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    """HTTP(S) connections that put themselves under a download's deadline once connected."""

    _deadline: _Deadline

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._deadline.watch(self.sock)  # type: ignore[attr-defined]


class _WatchedHTTP(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, http.client.HTTPSConnection):
    pass


def _connection(kind: type[_Watched], request: urllib.request.Request) -> Any:
    """A connection class for ``do_open`` that watches under the request's deadline."""
    deadline = request.deadline  # type: ignore[attr-defined]

    def connect(*args: Any, **kwargs: Any) -> _Watched:
        connection = kind(*args, **kwargs)
        connection._deadline = deadline
        return connection

    return connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(_WatchedHTTP, req), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(_WatchedHTTPS, req), req, context=self.context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects within http and https only, never from https down to http.

    The target is checked before anything is followed (urllib itself would
    follow one to ftp), and the deadline of the download goes along.
    """

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                       headers: Any) -> Any:
        target = headers.get("location") or headers.get("uri")
        if target:
            target = urllib.parse.urljoin(req.full_url, target)
            old = urllib.parse.urlsplit(req.full_url).scheme
            new = urllib.parse.urlsplit(target).scheme.lower()
            refusal = (f"a redirect to a {new or 'schemeless'} URL" if new not in ("http", "https")
                       else "a redirect from https to http" if old == "https" and new == "http"
                       else "")
            if refusal:
                fp.close()
                raise FetchError(f"{req.full_url}: refused {refusal} ({target})")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.deadline = req.deadline  # type: ignore[attr-defined]
        return new


class Fetcher:
    """Downloads with a deadline and a size limit."""

    def __init__(self, timeout: float = 30.0, max_size: int = 512 * 2**20,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.max_size = max_size
        self.ssl_context = ssl_context or ssl.create_default_context()
        # only what http and https need: no ftp, file or data handler to be redirected to
        self._opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.ProxyHandler(), _HTTPHandler(),
                        _HTTPSHandler(self.ssl_context), _RedirectHandler(),
                        urllib.request.HTTPDefaultErrorHandler(),
                        urllib.request.HTTPErrorProcessor(), urllib.request.UnknownHandler()):
            self._opener.add_handler(handler)

    def get(self, url: str) -> bytes:
        """The bytes at ``url``, or a FetchError (NotFound if the server has no such file)."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme == "file":
            return self._file(url)
        if scheme not in ("http", "https"):
            raise FetchError(f"{url}: only http, https and file URLs are read")
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with _Deadline(self.timeout) as deadline:
            request.deadline = deadline  # type: ignore[attr-defined]
            try:
                with self._opener.open(request, timeout=self.timeout) as answer:
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
            except (OSError, ValueError, http.client.HTTPException) as err:
                # timeouts, resets, bad URLs, TLS errors; or the deadline cutting one off
                if deadline.expired:
                    raise self._late(url) from None
                reason = err.reason if isinstance(err, urllib.error.URLError) else err
                raise FetchError(f"{url}: {reason or type(err).__name__}") from None
        logger.info("Packages: Updating %s", url)
        return data

    def _late(self, url: str) -> FetchError:
        return FetchError(f"{url}: not downloaded within {self.timeout:g} s")

    def _read(self, answer: Any, url: str, deadline: _Deadline) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = answer.read1(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_size:
                raise FetchError(f"{url}: larger than {self.max_size} bytes")
            chunks.append(chunk)
        if deadline.expired:  # a body cut off at the deadline ends early, without an error
            raise self._late(url)
        length = answer.headers.get("Content-Length", "")
        if length.isdigit() and int(length) != size:
            raise FetchError(f"{url}: the connection closed after {size} of {length} bytes")
        return b"".join(chunks)

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


class _Gzip:
    """zlib's gzip decompressor with the interface of lzma's (``needs_input``, buffered input)."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._obj.decompress(self._obj.unconsumed_tail + data, max_length)
        # output cut at max_length may leave more to come from the input already given
        self.needs_input = not self._obj.unconsumed_tail and len(out) < max_length
        return out


class _Zstandard:
    """The zstandard package's decompressor (before Python 3.14), given 1 KiB at a time
    so that the output of one call stays bounded (it takes no max_length)."""

    def __init__(self) -> None:
        import zstandard

        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data + self._pending

    @property
    def needs_input(self) -> bool:
        return not self._pending and not self.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        pending = self._pending + data
        self._pending = pending[1024:]
        return self._obj.decompress(pending[:1024])


def _decompressor(kind: str) -> Any:
    """A decompressor for one stream, with lzma's interface."""
    if kind == "gzip":
        return _Gzip()
    if kind == "xz":
        return lzma.LZMADecompressor()
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        return _Zstandard()
    return zstd.ZstdDecompressor()


class DecompressingReader(io.RawIOBase):
    """``data`` decompressed as it is read, at most ``limit`` bytes; a binary file to read.

    The kind (gzip, xz, zstd, bzip2, or none) comes from the magic bytes.
    Concatenated streams of that kind (``cat a.gz b.gz``, several xz streams
    or zstd frames) read as one, as ``gzip -dc`` and ``xz -dc`` do; zero bytes
    after the last stream are padding and ignored; anything else there is an
    error, as are truncated or corrupt data and output past ``limit``: each a
    FetchError naming ``name``, raised by the read that meets it.
    """

    def __init__(self, data: bytes, name: str, limit: int) -> None:
        super().__init__()
        self.kind = compression_of(data)
        if self.kind is None and len(data) > limit:
            raise FetchError(f"{name}: larger than {limit} bytes")
        self.name = name
        self.limit = limit
        self._data = data
        self._view = memoryview(data)
        self._position = 0  # of the next input byte in data
        self._stream = _decompressor(self.kind) if self.kind else None
        self._size = 0  # bytes given out so far
        self._output = b""
        self._finished = self._stream is None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = self._next(len(buffer))
        buffer[:len(out)] = out
        return len(out)

    def readall(self) -> bytes:
        if self.kind is None:  # not compressed: the data itself, not a copy
            rest = self._data if self._position == 0 else self._view[self._position:].tobytes()
            self._position = len(self._data)
            return rest
        return b"".join(iter(lambda: self._next(CHUNK * 16), b""))

    def _next(self, size: int) -> bytes:
        """Up to ``size`` bytes of output; b"" at the end."""
        if self.kind is None:
            out = self._view[self._position:self._position + size].tobytes()
            self._position += len(out)
            return out
        while not self._output and not self._finished and size > 0:
            self._step(size)
        out, self._output = self._output[:size], self._output[size:]
        return out

    def _step(self, size: int) -> None:
        stream = self._stream
        if stream.eof:
            self._next_stream()
            return
        chunk = b""
        if stream.needs_input:
            if self._position >= len(self._data):
                raise FetchError(f"{self.name}: truncated {self.kind} data")
            chunk = self._view[self._position:self._position + CHUNK].tobytes()
            self._position += len(chunk)
        try:
            out = stream.decompress(chunk, size)
        except Exception as err:  # lzma.LZMAError, zlib.error, OSError, zstandard.ZstdError...
            raise FetchError(f"{self.name}: corrupt {self.kind} data: {err}") from None
        self._size += len(out)
        if self._size > self.limit:
            raise FetchError(f"{self.name}: decompresses to more than {self.limit} bytes")
        self._output = out

    def _next_stream(self) -> None:
        """After a stream's end: another stream of the kind, padding, or an error."""
        self._position -= len(self._stream.unused_data)
        rest = self._view[self._position:]
        if compression_of(rest[:8].tobytes()) == self.kind:
            self._stream = _decompressor(self.kind)
        elif not rest.tobytes().strip(b"\0"):
            self._finished = True
        else:
            raise FetchError(f"{self.name}: {len(rest)} bytes of trailing data after the "
                             f"{self.kind} data")


def decompress(data: bytes, name: str, limit: int) -> bytes:
    """``data`` decompressed (or as it is, if not compressed), at most ``limit`` bytes.

    All of what DecompressingReader reads, with its rules and errors.
    """
    with DecompressingReader(data, name, limit) as reader:
        return reader.read()

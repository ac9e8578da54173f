"""The Packages downloader: what it refuses, when it gives up, and how it decompresses.

Servers run on 127.0.0.1 (port 0) in threads and stop at the end of their test.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import http.server
import lzma
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import lxml.etree
import pytest
import zstandard

from bcfg2.plugins.packages import yum
from bcfg2.plugins.packages.fetch import (
    DecompressingReader,
    Fetcher,
    FetchError,
    NotFound,
    decompress,
)
from bcfg2.plugins.packages.sources import Source, parse_source

if TYPE_CHECKING:
    from conftest import TLSMaterial

Route = tuple[int, dict[str, str], bytes]


@contextlib.contextmanager
def answering(routes: dict[str, Route], tls: TLSMaterial | None = None
              ) -> Iterator[tuple[str, list[str]]]:
    """An HTTP (or with ``tls``, HTTPS) server answering each path as ``routes`` says.

    Other paths are 404. Yields its URL and the list of paths asked for;
    ``routes`` may be filled in after the server has started (a redirect
    needs to know the URL).
    """
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            status, headers, body = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- what is not there: NotFound, so a caller can try the next name ---------------

@pytest.mark.parametrize("status", [404, 410])
def test_a_missing_file_over_http_is_not_found(status: int) -> None:
    with answering({"/gone": (status, {}, b"")}) as (url, _), \
            pytest.raises(NotFound, match=f"HTTP {status}"):
        Fetcher(timeout=5).get(f"{url}/gone")


def test_other_http_errors_are_fetch_errors_but_not_not_found() -> None:
    with answering({"/broken": (500, {}, b"")}) as (url, _), \
            pytest.raises(FetchError, match="HTTP 500") as caught:
        Fetcher(timeout=5).get(f"{url}/broken")
    assert not isinstance(caught.value, NotFound)


def test_a_missing_file_url_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="No such file"):
        Fetcher().get((tmp_path / "Packages.xz").as_uri())


def test_an_html_page_is_still_refused() -> None:
    with answering({"/Release": (200, {"Content-Type": "text/html"}, b"<html></html>")}) \
            as (url, _), pytest.raises(FetchError, match="HTML page"):
        Fetcher(timeout=5).get(f"{url}/Release")


# -- file: URLs read regular files only ----------------------------------------------

def _open_for_writing(fifo: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "Packages"
    os.mkfifo(fifo)
    # not synchronisation: only if the fetch blocks in open() does this writer
    # release it after a while, so that such a regression fails instead of hanging
    rescue = threading.Timer(5.0, _open_for_writing, [fifo])
    rescue.start()
    try:
        with pytest.raises(FetchError, match="not a regular file"):
            Fetcher().get(fifo.as_uri())
    finally:
        rescue.cancel()
        rescue.join()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="not a regular file"):
        Fetcher().get(tmp_path.as_uri())


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_device_is_refused() -> None:
    with pytest.raises(FetchError, match="not a regular file"):
        Fetcher().get("file:///dev/null")


def test_a_regular_file_is_read_up_to_the_limit(tmp_path: Path) -> None:
    (tmp_path / "Release").write_bytes(b"Suite: test\n")
    assert Fetcher().get((tmp_path / "Release").as_uri()) == b"Suite: test\n"
    with pytest.raises(FetchError, match="larger than 4 bytes"):
        Fetcher(max_size=4).get((tmp_path / "Release").as_uri())


# -- redirects: within http and https, never down from https -----------------------

def test_a_redirect_to_ftp_is_refused_before_it_is_followed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as ftp:
        ftp.setblocking(False)
        target = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/Packages"
        with answering({"/Packages": (302, {"Location": target}, b"")}) as (url, _), \
                pytest.raises(FetchError, match=r"/Packages: refused a redirect to a ftp URL"):
            Fetcher(timeout=5).get(f"{url}/Packages")
        with pytest.raises(BlockingIOError):  # nobody connected to the ftp "server"
            ftp.accept()


def test_a_redirect_to_a_file_url_is_refused() -> None:
    with answering({"/Release": (301, {"Location": "file:///etc/passwd"}, b"")}) as (url, _), \
            pytest.raises(FetchError, match=r"/Release: refused a redirect to a file URL "
                                            r"\(file:///etc/passwd\)"):
        Fetcher(timeout=5).get(f"{url}/Release")


def test_a_redirect_from_https_down_to_http_is_refused(tls: TLSMaterial) -> None:
    with answering({"/Release": (200, {}, b"Suite: test\n")}) as (plain, asked), \
            answering({"/Release": (302, {"Location": f"{plain}/Release"}, b"")}, tls) \
            as (secure, _):
        fetcher = Fetcher(timeout=5, ssl_context=tls.client_context())
        with pytest.raises(FetchError, match="refused a redirect from https to http"):
            fetcher.get(f"{secure}/Release")
    assert asked == []


def test_redirects_within_http_and_up_to_https_are_followed(tls: TLSMaterial) -> None:
    routes: dict[str, Route] = {"/Release": (200, {}, b"Suite: test\n")}
    with answering(routes, tls) as (secure, _), answering({}) as (plain, _):
        fetcher = Fetcher(timeout=5, ssl_context=tls.client_context())
        routes["/moved"] = (307, {"Location": "/Release"}, b"")
        assert fetcher.get(f"{secure}/moved") == b"Suite: test\n"
    with answering(routes) as (plain, _):
        assert Fetcher(timeout=5).get(f"{plain}/moved") == b"Suite: test\n"


# -- one deadline for the whole download ------------------------------------------

@contextlib.contextmanager
def trickling(answer: bytes, fast: int) -> Iterator[str]:
    """A server that sends the first ``fast`` bytes of ``answer`` at once, then one
    byte every 20 ms, until the client goes or the test ends. Yields its URL."""
    done = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            try:
                conn.sendall(answer[:fast])
                for position in range(fast, len(answer)):
                    if done.wait(0.02):  # the slow peer: its pace, not the test's
                        return
                    conn.sendall(answer[position:position + 1])
            except OSError:  # the client hung up
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/Packages"
    finally:
        done.set()
        with contextlib.suppress(OSError):  # unblock accept() if nobody came
            socket.create_connection(listener.getsockname(), timeout=1).close()
        thread.join()
        listener.close()


SLOW_HEADERS = b"HTTP/1.1 200 OK\r\n" + b"".join(
    b"X-Slow-%d: %s\r\n" % (n, b"a" * 20) for n in range(10)) + b"Content-Length: 2\r\n\r\nok"
SLOW_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b"b" * 300
SLOW_ENDLESS_BODY = b"HTTP/1.0 200 OK\r\n\r\n" + b"b" * 300


@pytest.mark.parametrize(("answer", "fast"), [
    pytest.param(SLOW_HEADERS, 3, id="status-line-and-headers"),
    pytest.param(SLOW_BODY, SLOW_BODY.index(b"\r\n\r\n") + 4, id="body"),
    pytest.param(SLOW_ENDLESS_BODY, SLOW_ENDLESS_BODY.index(b"\r\n\r\n") + 4,
                 id="body-without-length"),
])
def test_a_server_trickling_bytes_is_cut_off_at_the_deadline(answer: bytes, fast: int) -> None:
    # each byte comes well within the socket timeout, the whole answer takes ~5 s
    with trickling(answer, fast) as url:
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"not downloaded within 0.5 s"):
            Fetcher(timeout=0.5).get(url)
        assert time.monotonic() - start < 3


def test_a_body_shorter_than_its_content_length_is_an_error() -> None:
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nshort"
    with trickling(answer, len(answer)) as url, \
            pytest.raises(FetchError, match="closed after 5 of 10 bytes"):
        Fetcher(timeout=5).get(url)


# -- decompression: concatenated streams, bounded, one reader --------------------

COMPRESS = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}
kinds = pytest.mark.parametrize("kind", sorted(COMPRESS))


@kinds
def test_concatenated_streams_decompress_to_the_concatenation(kind: str) -> None:
    compress = COMPRESS[kind]
    first, second = b"Package: a\n" * 5000, b"Package: b\n" * 7000
    assert decompress(compress(first) + compress(second) + compress(b""), kind,
                      2**20) == first + second


@kinds
def test_the_limit_counts_every_stream(kind: str) -> None:
    member = COMPRESS[kind](b"\0" * 600_000)
    assert len(decompress(member, kind, 1_000_000)) == 600_000
    with pytest.raises(FetchError, match="decompresses to more than 1000000 bytes"):
        decompress(member + member, kind, 1_000_000)


@kinds
def test_trailing_garbage_is_an_error_and_zero_padding_is_not(kind: str) -> None:
    packed = COMPRESS[kind](b"Package: a\n")
    assert decompress(packed + b"\0" * 12, kind, 2**20) == b"Package: a\n"
    with pytest.raises(FetchError, match=f"{kind}: 7 bytes of trailing data after the {kind}"):
        decompress(packed + b"garbage", kind, 2**20)


@kinds
def test_a_truncated_second_stream_is_an_error(kind: str) -> None:
    compress = COMPRESS[kind]
    second = compress(b"Package: b\n" * 100)
    with pytest.raises(FetchError, match="truncated"):
        decompress(compress(b"Package: a\n") + second[:len(second) // 2], kind, 2**20)


def test_uncompressed_data_is_given_back_as_it_is() -> None:
    data = b"Package: a\n"
    assert decompress(data, "Packages", 100) is data
    with pytest.raises(FetchError, match="larger than 4 bytes"):
        decompress(data, "Packages", 4)


@kinds
def test_the_reader_gives_small_reads_and_fails_at_the_limit_before_the_end(kind: str) -> None:
    data = random.Random(0).randbytes(2**20)  # incompressible: output comes as input goes
    reader = DecompressingReader(COMPRESS[kind](data), kind, len(data))
    pieces = list(iter(lambda: reader.read(1000), b""))
    assert max(len(piece) for piece in pieces) <= 1000
    assert b"".join(pieces) == data
    reader = DecompressingReader(COMPRESS[kind](data), kind, 300_000)
    assert len(reader.read(100_000)) <= 100_000
    with pytest.raises(FetchError, match="more than 300000 bytes"):
        while reader.read(100_000):
            pass


def test_a_limit_met_inside_iterparse_is_the_fetch_error() -> None:
    xml = b"<metadata>" + b"<package/>" * 100_000 + b"</metadata>"
    with pytest.raises(FetchError, match="more than 10000 bytes"):
        for _ in lxml.etree.iterparse(DecompressingReader(gzip.compress(xml), "primary",
                                                          10_000)):
            pass


# -- Yum reads primary.xml as it decompresses -------------------------------------

PRIMARY = b"""<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common"
          xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="%d">
%s
</metadata>
"""
PACKAGE = b"""<package type="rpm"><name>pkg%d</name><arch>noarch</arch>
<version epoch="0" ver="1.0" rel="1"/><format><rpm:requires>
<rpm:entry name="pkg%d"/></rpm:requires></format></package>"""


def write_yum_metadata(root: Path, count: int, compress: Callable[[bytes], bytes]) -> Path:
    """repodata/repomd.xml listing a primary.xml of ``count`` packages, compressed."""
    body = b"\n".join(PACKAGE % (n, (n + 1) % count) for n in range(count))
    packed = compress(PRIMARY % (count, body))
    repodata = root / "repodata"
    repodata.mkdir(parents=True)
    (repodata / "primary.xml.gz").write_bytes(packed)
    (repodata / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
        f'<checksum type="sha256">{hashlib.sha256(packed).hexdigest()}</checksum>'
        '<location href="repodata/primary.xml.gz"/></data></repomd>')
    return root


def yum_source(root: Path) -> Source:
    return parse_source(lxml.etree.fromstring(
        f'<Source type="yum" rawurl="{root.as_uri()}"><Arch>x86_64</Arch></Source>'), (),
        "sources.xml", "")


def test_yum_primary_is_parsed_from_the_decompressing_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Streamed(DecompressingReader):
        def readall(self) -> bytes:
            raise AssertionError(f"{self.name} decompressed whole")

    monkeypatch.setattr(yum, "DecompressingReader", Streamed)
    root = write_yum_metadata(tmp_path / "el", 3000, gzip.compress)
    loaded = yum.load(yum_source(root), "x86_64", Fetcher())
    assert loaded is not None
    _, index, _ = loaded
    assert len(index.packages) == 3000
    assert index.packages["pkg7"][2] == [["pkg8"]]


def test_yum_primary_over_the_limit_is_a_fetch_error(tmp_path: Path) -> None:
    root = write_yum_metadata(tmp_path / "el", 3000, gzip.compress)
    with pytest.raises(FetchError, match="decompresses to more than 100000 bytes"):
        yum.load(yum_source(root), "x86_64", Fetcher(max_size=100_000))


def test_yum_primary_cut_short_is_a_fetch_error(tmp_path: Path) -> None:
    root = write_yum_metadata(tmp_path / "el", 3000,
                              lambda data: gzip.compress(data)[:5000])
    with pytest.raises(FetchError, match="truncated gzip data"):
        yum.load(yum_source(root), "x86_64", Fetcher())

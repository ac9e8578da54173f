"""The Packages downloader: what it refuses, when it gives up, and how it decompresses.

Servers run on 127.0.0.1 (port 0) in threads and stop at the end of their test.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcfg2.plugins.packages.fetch import Fetcher, FetchError, NotFound

Route = tuple[int, dict[str, str], bytes]


@contextlib.contextmanager
def answering(routes: dict[str, Route]) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering each path as ``routes`` says (404 for the others).

    Yields its URL and the list of paths asked for; ``routes`` may be filled in
    after the server has started (a redirect needs to know the URL).
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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
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

"""The protocol floor of the load benchmark: what serving a configuration costs at least.

A TLS XML-RPC server that answers GetConfig with a reply made before it
listens (every client's configuration, built once with the same repository
and bcfg2.conf, marshalled into its HTTP response), and the other agent
calls with their constant answers. It does what any server must do per call
(accept, the TLS handshake, read the request, find the caller, write the
reply) and nothing else, in one process per CPU sharing the listening
socket, so a server's CPU per GetConfig can be compared with it in the same
run on the same machine (``load.py`` starts it as the core ``floor``).

Usage: python tests/bench/floor.py -C bcfg2.conf -Q REPO --state-dir DIR
       --ssl-cert CERT --ssl-key KEY [--processes N]
"""

from __future__ import annotations

import argparse
import base64
import http.server
import os
import re
import signal
import socket
import socketserver
import ssl
import sys
import xmlrpc.client
from typing import Any

#: the method of a request, from its body (the floor parses no more than that)
METHOD = re.compile(rb"<methodName>\s*([A-Za-z_.]+)\s*</methodName>")


def build_replies(conf: str, repository: str, state_dir: str) -> dict[str, bytes]:
    """Every client's GetConfig answer as an XML-RPC response body, by uuid and by name."""
    from bcfg2 import options
    from bcfg2.core import LocalCore
    from bcfg2.xml import tostring

    setup = options.build(conf, {"server.repository": repository, "server.state_dir": state_dir,
                                 "server.filemonitor": "pseudo", "logging.syslog": "false"})
    core = LocalCore(setup)
    try:
        replies = {}
        for name in core.metadata.list_clients():
            body = xmlrpc.client.dumps((tostring(core.BuildConfiguration(name)),),
                                       methodresponse=True, encoding="utf-8").encode("utf-8")
            meta = core.build_metadata(name)
            replies[name] = body
            if meta.uuid:
                replies[meta.uuid] = body
        return replies
    finally:
        core.shutdown()


def constant(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True, encoding="utf-8").encode("utf-8")


class Handler(http.server.BaseHTTPRequestHandler):
    """One request per connection: the reply for its caller and method."""

    protocol_version = "HTTP/1.1"
    replies: dict[str, bytes] = {}
    others = {"DeclareVersion": constant(True), "RecvStats": constant(True),
              "RecvProbeData": constant(True), "GetProbes": constant("<probes/>")}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        user = ""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user = base64.b64decode(auth[6:]).decode("utf-8", "replace").partition(":")[0]
        found = METHOD.search(body)
        method = found.group(1).decode() if found else ""
        reply = self.replies.get(user) if method == "GetConfig" else self.others.get(method)
        if reply is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Nothing: the servers measured log no line per request either."""


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Threads per connection; the TLS handshake is made in the connection's thread."""

    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-C", dest="conf", required=True)
    parser.add_argument("-Q", dest="repository", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--ssl-cert", required=True)
    parser.add_argument("--ssl-key", required=True)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args, _unknown = parser.parse_known_args(argv)  # the server's other options: ignored
    Handler.replies = build_replies(args.conf, args.repository, args.state_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.ssl_cert, args.ssl_key)
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.context = context
    server.allow_reuse_address = True
    server.server_bind()
    server.socket.listen(256)
    children = []
    for _ in range(max(1, args.processes) - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)

    def stop(signum: int, frame: Any) -> None:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"floor listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr,
          flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

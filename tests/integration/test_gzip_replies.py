"""A kept configuration travels gzip-coded to an agent that accepts it, on every core.

The configuration cache keeps a configuration escaped and packed as one gzip
member; an agent whose request says ``Accept-Encoding: gzip`` (Python 2.7's
and 3's xmlrpc clients say so, and so does an upstream 1.4 agent, whose
transport reads replies through xmlrpclib's own ``parse_response``) is sent
it as it is, between the gzip members of the rest of the response; any other
agent gets the same document uncoded.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import http.client
import os
import shutil
import subprocess
import xmlrpc.client

import lxml.etree
import pytest
from conftest import CORES, Repo

MOTD = "Hello & <welcome> \u00e9\n" * 200  # escaped by XML-RPC, and not ASCII


def kept_repo(repo: Repo) -> Repo:
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    repo.write("Cfg/etc/motd/motd", MOTD)
    return repo


def post(server, accept: str | None) -> tuple[http.client.HTTPResponse, bytes]:  # noqa: ANN001
    """GetConfig as client1, with this Accept-Encoding (None: the header left out)."""
    conn = http.client.HTTPSConnection("127.0.0.1", server.port,
                                       context=server.tls.client_context(), timeout=30)
    try:
        conn.putrequest("POST", "/RPC2", skip_accept_encoding=True)
        credentials = base64.b64encode(b"uuid-client1:pw1").decode()
        conn.putheader("Authorization", f"Basic {credentials}")
        conn.putheader("Content-Type", "text/xml")
        if accept is not None:
            conn.putheader("Accept-Encoding", accept)
        body = xmlrpc.client.dumps((), "GetConfig").encode()
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("core", CORES)
def test_a_kept_configuration_is_sent_gzip_coded_to_who_accepts_it(
        repo: Repo, network_server, core: str) -> None:
    server = network_server(kept_repo(repo), core=core, server__children="1")
    config = server.proxy("uuid-client1", "pw1").GetConfig()  # built, kept; read through gzip
    assert lxml.etree.fromstring(config.encode()).findtext("Bundle/Path") == MOTD
    plain, plain_body = post(server, None)
    packed, packed_body = post(server, "gzip")
    declined, declined_body = post(server, "gzip;q=0, identity")
    assert plain.getheader("Content-Encoding") is None
    assert declined.getheader("Content-Encoding") is None
    assert packed.getheader("Content-Encoding") == "gzip"
    assert packed.getheader("Vary") == "Accept-Encoding"
    assert gzip.decompress(packed_body) == plain_body == declined_body
    assert xmlrpc.client.loads(plain_body)[0][0] == config
    # the same document as marshalling the text gives, byte for byte
    assert plain_body == xmlrpc.client.dumps((config,), methodresponse=True, allow_none=True,
                                             encoding="utf-8").encode()
    assert len(packed_body) < len(plain_body) / 5


def python27() -> str | None:
    """A Python 2.7 interpreter (on PATH or under pyenv), or None."""
    candidates = [shutil.which("python2.7"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/python2.7")))]
    for candidate in filter(None, candidates):
        try:
            if subprocess.run([candidate, "-c", "import xmlrpclib, ssl"], capture_output=True,
                              timeout=30).returncode == 0:
                return candidate
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


AGENT27 = """
import hashlib, ssl, sys, xmlrpclib
context = ssl.create_default_context(cafile=sys.argv[2])
context.check_hostname = False  # 2.7 matches no IP address; the CA is still checked
proxy = xmlrpclib.ServerProxy(sys.argv[1], context=context, allow_none=True)
for _ in range(2):  # the second one from the cache
    config = proxy.GetConfig()
    sys.stdout.write(hashlib.sha256(config.encode("utf-8")).hexdigest() + "\\n")
"""


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_python_27s_xmlrpclib_reads_the_gzip_coded_configuration(
        repo: Repo, network_server, core: str) -> None:
    interpreter = python27()
    if interpreter is None:
        pytest.skip("no Python 2.7 here (upstream's agent runs on it): its xmlrpclib cannot "
                    "be checked against gzip-coded replies")
    server = network_server(kept_repo(repo), core=core, server__children="1")
    expected = server.proxy("uuid-client1", "pw1").GetConfig()
    url = f"https://uuid-client1:pw1@127.0.0.1:{server.port}/RPC2"
    done = subprocess.run([interpreter, "-c", AGENT27, url, server.tls.ca_cert],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(expected.encode()).hexdigest()
    assert done.stdout.split() == [digest, digest]

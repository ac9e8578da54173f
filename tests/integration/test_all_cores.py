"""The same agents get the same answers from every network core.

Each test runs against builtin, multiprocessing and cherrypy: full agent runs
on repo-example and on a generated repository (configurations byte-identical
across cores), 50 concurrent agents, and hostile input.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import ssl
import threading
import xmlrpc.client
from pathlib import Path

import lxml.etree
import pytest
from conftest import CORES, REPO_EXAMPLE, Repo, RunningServer
from test_builtin_core import expected_whitelist

STATS = ('<upload-statistics><Statistics total="1" version="2.0" revision="-1" good="1" '
         'state="clean"><Flags/><Good/><Bad/><Modified/><Extra/></Statistics>'
         '</upload-statistics>')


def example_clients() -> list[tuple[str, str, str]]:
    root = lxml.etree.parse(str(REPO_EXAMPLE / "Metadata/clients.xml")).getroot()
    return [(c.get("uuid"), c.get("password"), c.get("name")) for c in root.iter("Client")]


def agent_run(server: RunningServer, uuid: str, password: str) -> str:
    """One agent run as a Bcfg2 1.4 agent does it; returns the configuration."""
    assert server.proxy(uuid, password).DeclareVersion("1.4.0") is True
    assert lxml.etree.fromstring(server.proxy(uuid, password).GetProbes().encode()).tag == \
        "probes"
    assert server.proxy(uuid, password).RecvProbeData("<ProbeData/>") is True
    assert server.proxy(uuid, password).GetDecisionList("whitelist") == \
        expected_whitelist(server.core.repository)
    config = server.proxy(uuid, password).GetConfig()
    assert server.proxy(uuid, password).RecvStats(STATS) is True
    return config


def generate_repository(root: Path, clients: int = 12) -> list[tuple[str, str, str]]:
    """A repository with profiles, categories, conditionals, specific and binary files."""
    repo = Repo(root)
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="web" profile="true" public="true"><Group name="debian"/>
            <Group name="frontend"/></Group>
          <Group name="db" profile="true" public="true"><Group name="rhel"/></Group>
          <Group name="debian" category="os"/><Group name="rhel" category="os"/>
          <Group name="web"><Bundle name="base"/><Bundle name="front"/></Group>
          <Group name="db"><Bundle name="base"/><Bundle name="store"/></Group>
          <Group name="frontend"><Group name="rhel"/></Group>
        </Groups>""")
    entries = []
    for n in range(clients):
        profile = "web" if n % 2 else "db"
        entries.append((f"uuid-{n}", f"pw-{n}", f"host{n}.example.com", profile))
    repo.write("Metadata/clients.xml", "<Clients version='3.0'>" + "".join(
        f'<Client name="{name}" profile="{profile}" uuid="{uuid}" password="{pw}"/>'
        for uuid, pw, name, profile in entries) + "</Clients>")
    base = "".join(f'<Path name="/etc/base/f{i}"/>' for i in range(20))
    repo.write("Bundler/base.xml", f'<Bundle>{base}<Package name="curl"/>'
               '<Group name="rhel"><Service name="crond"/></Group>'
               '<Group name="debian"><Service name="cron"/></Group></Bundle>')
    repo.write("Bundler/front.xml", '<Bundle><Path name="/var/www/logo.png"/>'
               '<Path name="/etc/empty"/><Package name="nginx"/></Bundle>')
    repo.write("Bundler/store.xml", '<Bundle independent="true"><Package name="postgresql"/>'
               '<Path name="/etc/base/f1" altsrc="/etc/base/f2"/></Bundle>')
    for i in range(20):
        repo.write(f"Cfg/etc/base/f{i}/f{i}", f"file {i} for everyone\n")
        repo.write(f"Cfg/etc/base/f{i}/f{i}.G50_rhel", f"file {i} for rhel\n")
        repo.write(f"Cfg/etc/base/f{i}/f{i}.H_host3.example.com", f"file {i} for host3 <&>\n")
    repo.write("Cfg/etc/base/f0/info.xml",
               '<FileInfo><Group name="rhel"><Info owner="adm" mode="0640"/></Group>'
               '<Info owner="root" group="root" mode="0644"/></FileInfo>')
    repo.write("Cfg/var/www/logo.png/logo.png", bytes(range(256)) * 4)
    repo.write("Cfg/etc/empty/empty", b"")
    repo.write("Rules/packages.xml", '<Rules priority="1"><Package name="curl" type="deb"/>'
               '<Package name="nginx" type="deb"/><Group name="rhel">'
               '<Package name="curl" type="yum"/><Package name="postgresql" type="yum"/>'
               '</Group></Rules>')
    repo.write("Rules/services.xml", '<Rules priority="0"><Service name="cron" status="on"/>'
               '<Service name="crond" status="on"/></Rules>')
    repo.write("Defaults/defaults.xml", '<Defaults priority="0"><Service name=".*" '
               'type="systemd"/><Package name=".*" version="auto"/></Defaults>')
    return [(uuid, pw, name) for uuid, pw, name, _ in entries]


@pytest.fixture(params=CORES)
def core_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Repo, list[tuple[str, str, str]]]:
    clients = generate_repository(tmp_path / "generated")
    return Repo(tmp_path / "generated"), clients


def reference_configs(repo: Repo, clients, network_server) -> dict[str, str]:
    """Configurations from the builtin core: the reference the other cores must match."""
    reference = network_server(repo, core="builtin")
    return {name: reference.proxy(uuid, pw).GetConfig() for uuid, pw, name in clients}


def test_full_agent_runs_on_repo_example_are_byte_identical_across_cores(
        core_name: str, example_repo: Repo, network_server) -> None:
    clients = example_clients()
    server = network_server(example_repo, core=core_name)
    configs = {name: agent_run(server, uuid, pw) for uuid, pw, name in clients}
    for name, config in configs.items():
        doc = lxml.etree.fromstring(config.encode())
        assert doc.tag == "Configuration" and not doc.xpath("//*[@failure]"), name
    assert configs == reference_configs(example_repo, clients, network_server)


def test_full_agent_runs_on_a_generated_repository_are_byte_identical_across_cores(
        core_name: str, generated, network_server) -> None:
    repo, clients = generated
    server = network_server(repo, core=core_name)
    configs = {name: agent_run(server, uuid, pw) for uuid, pw, name in clients}
    host3 = lxml.etree.fromstring(configs["host3.example.com"].encode())
    assert host3.xpath("//Path[@name='/etc/base/f5']")[0].text == "file 5 for host3 <&>\n"
    logo = lxml.etree.fromstring(configs["host1.example.com"].encode()).xpath(
        "//Path[@name='/var/www/logo.png']")[0]
    assert base64.b64decode(logo.text) == bytes(range(256)) * 4
    for name, config in configs.items():
        assert not lxml.etree.fromstring(config.encode()).xpath("//*[@failure]"), name
    assert configs == reference_configs(repo, clients, network_server)


def test_fifty_concurrent_agents_three_runs_each(core_name: str, generated,
                                                  network_server) -> None:
    repo, clients = generated
    expected = reference_configs(repo, clients, network_server)
    server = network_server(repo, core=core_name)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def agent(n: int) -> None:
        uuid, pw, name = clients[n % len(clients)]
        try:
            for _ in range(3):
                results.append((name, agent_run(server, uuid, pw) == expected[name]))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors[:3]
    assert len(results) == 150
    assert all(ok for _, ok in results), [name for name, ok in results if not ok][:5]


# -- hostile input ------------------------------------------------------------------------


def raw_post(server: RunningServer, body: bytes, auth: str | None = "uuid-1:pw-1",
             length: int | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=timeout,
                                       context=server.tls.client_context())
    try:
        conn.putrequest("POST", "/RPC2")
        conn.putheader("Content-Type", "text/xml")
        conn.putheader("Content-Length", str(len(body) if length is None else length))
        if auth is not None:
            conn.putheader("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        conn.endheaders()
        try:
            conn.send(body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server refused before reading the whole body
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def files_outside(root: Path, repo: Repo) -> dict[str, str]:
    """Every file below ``root`` that is not in the repository or the state dir, hashed."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and repo.path not in path.parents and "state" not in path.parts:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def still_serving(server: RunningServer) -> bool:
    return lxml.etree.fromstring(server.proxy("uuid-1", "pw-1").GetConfig().encode()).tag \
        == "Configuration"


def test_hostile_input_is_refused_and_the_server_keeps_serving(
        core_name: str, generated, network_server, tmp_path: Path) -> None:
    repo, _clients = generated
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    server = network_server(repo, core=core_name, server__connection_timeout="2")
    before = files_outside(tmp_path, repo)

    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">'
                        for i in range(1, 10))
              + ']><methodCall><methodName>&lol9;</methodName></methodCall>').encode()
    status, body = raw_post(server, laughs)
    assert status == 200 and b"-32700" in body and b"lollol" not in body

    xxe = (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>'
           '<methodCall><methodName>&s;</methodName></methodCall>').encode()
    status, body = raw_post(server, xxe)
    assert b"TOP-SECRET" not in body and (status != 200 or b"-32700" in body)

    big = b"<methodCall>" + b" " * (20 * 1024 * 1024) + b"</methodCall>"
    status, _ = raw_post(server, big)
    assert status == 413

    call = xmlrpc.client.dumps((), "GetConfig").encode()
    assert raw_post(server, call, auth=None)[0] == 401

    traversal = raw_post(server, call, auth="../../../etc/passwd:globalpw")
    assert traversal[0] == 401
    with pytest.raises(xmlrpc.client.Fault):
        server.proxy("uuid-1", "pw-1").AssertProfile("../../../../etc/passwd")

    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        tls = server.tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: 1000\r\n"
                    b"Authorization: Basic " + base64.b64encode(b"uuid-1:pw-1") +
                    b"\r\n\r\n<methodCall>")
        assert still_serving(server)  # a truncated request holds nobody up
        tls.settimeout(30)
        try:
            answer = tls.recv(65536)  # the server gives up on it after its timeout
        except (ConnectionResetError, OSError):
            answer = b""
        assert b"200 OK" not in answer
        tls.close()

    assert still_serving(server)
    assert files_outside(tmp_path, repo) == before  # nothing read into answers, nothing written

"""The builtin and CherryPy cores, driven over HTTPS exactly as a Bcfg2 1.4 agent does.

Expected configurations are derived from the content of repo-example/ (its
groups, bundles, Rules and Cfg files), never from the server's own output.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import logging
import socket
import ssl
import threading
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
from conftest import REPO_EXAMPLE, Repo, state_clients

GLOBAL_PASSWORD = "globalpw"
TIMEOUT = 15.0


@dataclass(frozen=True)
class ExampleClient:
    """A client of repo-example/Metadata/clients.xml and its groups per groups.xml."""

    name: str
    uuid: str
    password: str
    groups: frozenset[str]


#: read off repo-example/Metadata: profile -> member groups, conditional groups
EXAMPLE_CLIENTS = [
    ExampleClient("web1.example.com", "5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret",
                  frozenset({"webserver", "linux", "debian", "web"})),
    ExampleClient("web2.example.com", "5c3f7a62-9d0e-4c1b-8f53-web2", "web2-secret",
                  frozenset({"webserver", "linux", "debian", "web", "no-admin"})),
    ExampleClient("db1.example.com", "5c3f7a62-9d0e-4c1b-8f53-db1", "db1-secret",
                  frozenset({"dbserver", "linux", "rhel", "db", "ntp-server"})),
    ExampleClient("desk1.example.com", "5c3f7a62-9d0e-4c1b-8f53-desk1", "desk1-secret",
                  frozenset({"workstation", "linux", "debian"})),
]
BY_NAME = {c.name: c for c in EXAMPLE_CLIENTS}


# -- expectations from the repository ---------------------------------------------


@pytest.fixture(params=["builtin", "cherrypy"])
def served_by(request: pytest.FixtureRequest, network_server):
    """Factory: the core under test (both cores of threads in one process) over a repository."""
    return lambda repository, **kwargs: network_server(repository, core=request.param, **kwargs)

def cfg_text(relative: str) -> str:
    return (REPO_EXAMPLE / "Cfg" / relative).read_text()


def motd_source(client: ExampleClient) -> str:
    """The most specific Cfg/etc/motd file: host, then group, then the base file."""
    directory = REPO_EXAMPLE / "Cfg/etc/motd"
    host = directory / f"motd.H_{client.name}"
    if host.exists():
        return host.read_text()
    by_group = {}
    for path in directory.glob("motd.G*_*"):
        priority, group = path.name[len("motd.G"):].split("_", 1)
        by_group[group] = (int(priority), path)
    mine = [by_group[g] for g in client.groups if g in by_group]
    if mine:
        return max(mine)[1].read_text()
    return (directory / "motd").read_text()


Entries = dict[tuple[str, str], dict[str, str]]


def expected_config(client: ExampleClient) -> dict[str, tuple[str, Entries]]:
    """Bundle name -> (element tag, entries with the attributes/text they must have)."""
    rhel = "rhel" in client.groups
    pkg = {"type": "yum" if rhel else "deb", "version": "auto"}
    sshd_file = "sshd_config.G50_rhel" if rhel else "sshd_config"
    ntp_file = "ntp.conf.G50_ntp-server" if "ntp-server" in client.groups else "ntp.conf"
    admin: Entries = {}
    if "no-admin" not in client.groups:
        admin = {
            ("POSIXGroup", "admin"): {"gid": "2000"},
            ("POSIXUser", "admin"): {"uid": "2000", "group": "admin", "shell": "/bin/bash",
                                     "home": "/home/admin"},
            ("Path", "/home/admin/.ssh"): {"type": "directory", "owner": "admin",
                                           "mode": "0700"},
            ("Path", "/home/admin/.ssh/authorized_keys"): {
                "type": "file", "owner": "admin", "group": "admin", "mode": "0600",
                "secontext": ("system_u:object_r:ssh_home_t:s0" if rhel else "__default__"),
                "text": cfg_text("home/admin/.ssh/authorized_keys/authorized_keys")},
        }
    return {
        "sshd": ("Bundle", {
            ("Path", "/etc/ssh/sshd_config"): {
                "type": "file", "owner": "root", "group": "root", "mode": "0600",
                "text": cfg_text(f"etc/ssh/sshd_config/{sshd_file}")},
            ("Package", "openssh-server"): pkg,
            ("Service", "sshd" if rhel else "ssh"): {"status": "on", "type": "systemd"},
        }),
        "ntp": ("Bundle", {
            ("Package", "chrony"): pkg,
            ("Path", "/etc/ntp.conf"): {"type": "file", "mode": "644",
                                        "text": cfg_text(f"etc/ntp.conf/{ntp_file}")},
            ("Service", "chronyd"): {"status": "on", "type": "systemd"},
        }),
        "motd": ("Independent", {
            ("Path", "/etc/motd"): {"type": "file", "owner": "root", "mode": "644",
                                    "text": motd_source(client)},
        }),
        "admin-user": ("Bundle", admin),
        **({} if rhel else {"Packages": ("Independent", debian_dependencies(client))}),
    }


#: what Packages adds for the example's Debian packages from repo-example's mirror: the
#: Essential set, the dependencies, mawk for "awk", tzdata for "tzdata | tzdata-legacy"
DEBIAN_DEPENDENCIES = (
    "adduser base-files bash debconf debianutils dpkg gcc-12-base init-system-helpers iproute2 "
    "libc6 libgcc-s1 libpam0g libssl3 libtinfo6 mawk openssh-client openssh-sftp-server passwd "
    "perl-base procps runit-helper sensible-utils tar tzdata ucf").split()
GUEST_AGENT_DEPENDENCIES = "libblkid1 libffi8 libglib2.0-0 libmount1".split()


def debian_dependencies(client: ExampleClient) -> Entries:
    names = DEBIAN_DEPENDENCIES + (GUEST_AGENT_DEPENDENCIES if "virtual" in client.groups else [])
    return {("Package", name): {"type": "deb", "version": "auto", "origin": "Packages"}
            for name in names}


def check_config(config: lxml.etree._Element, client: ExampleClient) -> None:
    """The configuration is exactly what the repository defines for the client."""
    assert config.tag == "Configuration"
    assert config.get("version") == "2.0"
    assert config.get("revision")
    failed = [f"{e.tag}:{e.get('name')}: {e.get('failure')}" for e in config.iter()
              if e.get("failure") is not None]
    assert not failed, f"{client.name}: unbound entries {failed}"
    expected = expected_config(client)
    got = {b.get("name"): b for b in config}
    assert set(got) == set(expected), client.name
    for name, (tag, entries) in expected.items():
        bundle = got[name]
        assert bundle.tag == tag, f"{client.name}: bundle {name}"
        found = {(e.tag, e.get("name")): e for e in bundle}
        assert set(found) == set(entries), f"{client.name}: bundle {name}"
        for key, attrs in entries.items():
            entry = found[key]
            for attr, value in attrs.items():
                actual = entry.text if attr == "text" else entry.get(attr)
                assert actual == value, f"{client.name}: {key} {attr}"


# -- talking to the server ---------------------------------------------------------

class TimeoutTransport(xmlrpc.client.SafeTransport):
    """An agent's transport with a deadline, so a stuck server fails the test."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(context=context)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


def agent(server: Any, user: str | None, password: str | None,
          cert: tuple[str, str] | None = None) -> xmlrpc.client.ServerProxy:
    """An XML-RPC proxy as an agent has it (no user: no Authorization header)."""
    auth = "" if user is None else f"{user}:{password}@"
    return xmlrpc.client.ServerProxy(
        f"https://{auth}127.0.0.1:{server.port}/RPC2", allow_none=True,
        transport=TimeoutTransport(server.tls.client_context(cert), TIMEOUT))


def client_agent(server: Any, client: ExampleClient) -> xmlrpc.client.ServerProxy:
    return agent(server, client.uuid, client.password)


def statistics_for(config: lxml.etree._Element) -> str:
    """The <upload-statistics> an agent sends after a clean run of ``config``."""
    entries = [e for bundle in config for e in bundle]
    upload = lxml.etree.Element("upload-statistics")
    stats = lxml.etree.SubElement(upload, "Statistics", total=str(len(entries)),
                                  version="2.0", revision=config.get("revision"),
                                  good=str(len(entries)), state="clean")
    flags = lxml.etree.SubElement(stats, "Flags")
    lxml.etree.SubElement(flags, "Flag", name="dry_run", value="False")
    lxml.etree.SubElement(stats, "Modified")
    lxml.etree.SubElement(stats, "Extra")
    good = lxml.etree.SubElement(stats, "Good")
    for entry in entries:
        copy = lxml.etree.SubElement(good, entry.tag, dict(entry.attrib))
        copy.set("qtext", "")
    lxml.etree.SubElement(stats, "Bad")
    now = time.time()
    lxml.etree.SubElement(stats, "OpStamps", start=str(now), finished=str(now))
    return lxml.etree.tostring(upload, encoding="unicode")


def expected_whitelist(repository: str) -> list[list[str]]:
    """The (type, name) pairs of the repository's Decisions/whitelist.xml, if any."""
    path = Path(repository) / "Decisions/whitelist.xml"
    if not path.exists():
        return []
    return [[d.get("type"), d.get("name")] for d in lxml.etree.parse(str(path)).iter("Decision")]


def full_run(server: Any, client: ExampleClient) -> lxml.etree._Element:
    """One upstream agent run, a new connection per call; returns the configuration."""
    proxy = client_agent(server, client)
    assert proxy.DeclareVersion("1.4.0pre2") is True
    probes = lxml.etree.fromstring(proxy.GetProbes().encode())
    assert probes.tag == "probes"
    assert proxy.RecvProbeData("<ProbeData/>") is True
    assert proxy.GetDecisionList("whitelist") == expected_whitelist(server.core.repository)
    config = lxml.etree.fromstring(proxy.GetConfig().encode())
    assert proxy.RecvStats(statistics_for(config)) is True
    return config


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def tls_connect(server: Any, context: ssl.SSLContext | None = None,
                timeout: float = TIMEOUT) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        return (context or server.tls.client_context()).wrap_socket(
            sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise


def request_head(headers: dict[str, str]) -> bytes:
    lines = ["POST /RPC2 HTTP/1.0", "Host: 127.0.0.1", "Content-Type: text/xml"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read()


def raw_post(server: Any, body: bytes | None, headers: dict[str, str] | None = None,
             auth: tuple[str, str] | None = ("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret"),
             send_body: bool = True) -> tuple[int, bytes]:
    """POST bytes over a fresh TLS connection; returns (HTTP status, body)."""
    all_headers = dict(headers or {})
    if auth is not None:
        all_headers["Authorization"] = basic_auth(*auth)
    if body is not None and "Content-Length" not in all_headers:
        all_headers["Content-Length"] = str(len(body))
    with tls_connect(server) as sock:
        sock.sendall(request_head(all_headers) + (body if body and send_body else b""))
        return read_response(sock)


def fault_of(body: bytes) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(body)
    return info.value


def web1_works(server: Any) -> None:
    """A good agent call is served (the server is still up and not stuck)."""
    config = lxml.etree.fromstring(client_agent(server, BY_NAME["web1.example.com"])
                                   .GetConfig().encode())
    check_config(config, BY_NAME["web1.example.com"])


# -- the agent sequence --------------------------------------------------------------

@pytest.mark.parametrize("client", EXAMPLE_CLIENTS, ids=lambda c: c.name.split(".")[0])
def test_full_agent_run_gives_each_client_its_configuration(example_repo, served_by,
                                                            client):
    server = served_by(example_repo)
    check_config(full_run(server, client), client)


def test_declared_version_is_recorded_in_state_dir_not_in_repository(example_repo,
                                                                     served_by):
    clients_xml = example_repo.path / "Metadata/clients.xml"
    before = clients_xml.read_bytes()
    server = served_by(example_repo)
    assert client_agent(server, BY_NAME["desk1.example.com"]).DeclareVersion("1.4.0") is True
    assert state_clients(example_repo.path.parent / "state")["desk1.example.com"]["version"] == \
        "1.4.0"
    assert clients_xml.read_bytes() == before


# -- authentication --------------------------------------------------------------------

def test_wrong_password_is_401_and_the_server_keeps_serving(example_repo, served_by):
    server = served_by(example_repo)
    web1 = BY_NAME["web1.example.com"]
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        agent(server, web1.uuid, "not-the-password").GetConfig()
    assert info.value.errcode == 401
    web1_works(server)


def test_secure_client_refuses_the_global_password(example_repo, served_by):
    server = served_by(example_repo)
    db1 = BY_NAME["db1.example.com"]
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        agent(server, db1.uuid, GLOBAL_PASSWORD).GetConfig()
    assert info.value.errcode == 401
    # a client that is not secure may use the global password
    web1 = BY_NAME["web1.example.com"]
    config = lxml.etree.fromstring(agent(server, web1.uuid, GLOBAL_PASSWORD).GetConfig().encode())
    check_config(config, web1)


def test_no_credentials_is_401(example_repo, served_by):
    server = served_by(example_repo)
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        agent(server, None, None).GetConfig()
    assert info.value.errcode == 401
    status, _ = raw_post(server, xmlrpc.client.dumps((), "GetConfig").encode(), auth=None)
    assert status == 401
    web1_works(server)


def test_unknown_client_without_default_profile_is_refused(repo, served_by):
    repo.write("Bundler/base.xml", '<Bundle><Service name="cron"/></Bundle>')
    repo.write("Rules/services.xml",
               '<Rules priority="0"><Service name="cron" status="on" type="systemd"/></Rules>')
    server = served_by(repo)
    stranger = agent(server, "stranger.example.com", GLOBAL_PASSWORD)
    for call in (lambda: stranger.DeclareVersion("1.4.0pre2"), lambda: stranger.GetProbes(),
                 lambda: stranger.GetConfig()):
        with pytest.raises(xmlrpc.client.Fault) as info:
            call()
        assert info.value.faultCode == -32500
        assert "stranger.example.com" in info.value.faultString
    # a known client (profile basic -> linux -> bundle base) is still served
    config = lxml.etree.fromstring(agent(server, "uuid-client1", "pw1").GetConfig().encode())
    assert [b.get("name") for b in config] == ["base"]
    assert [(e.tag, e.get("name"), e.get("status")) for e in config[0]] == [
        ("Service", "cron", "on")]
    assert "stranger" not in state_clients(repo.path.parent / "state")


def _state_client(example_repo: Repo, name: str) -> list[dict[str, str]]:
    recorded = state_clients(example_repo.path.parent / "state")
    return [recorded[name]] if name in recorded else []


def test_unknown_client_is_registered_with_the_default_profile(example_repo, served_by):
    clients_xml = example_repo.path / "Metadata/clients.xml"
    before = clients_xml.read_bytes()
    server = served_by(example_repo)
    # an unknown uuid is taken as the client name; the default profile is "workstation"
    newcomer = ExampleClient("new1.example.com", "new1.example.com", GLOBAL_PASSWORD,
                             frozenset({"workstation", "linux", "debian"}))
    check_config(full_run(server, newcomer), newcomer)
    [node] = _state_client(example_repo, "new1.example.com")
    assert node.get("profile") == "workstation"
    assert node.get("version") == "1.4.0pre2"
    assert clients_xml.read_bytes() == before
    assert "new1.example.com" in server.admin().Metadata.list_clients()


# -- hostile and broken requests ---------------------------------------------------

def test_malformed_body_is_a_parse_fault_and_the_server_keeps_serving(example_repo,
                                                                      served_by):
    server = served_by(example_repo)
    status, body = raw_post(server, b"<methodCall><methodName>GetConfig</methodName><par")
    assert status == 200
    assert fault_of(body).faultCode == -32700
    status, body = raw_post(server, b"\x00\xffnot xml at all")
    assert status == 200
    assert fault_of(body).faultCode == -32700
    web1_works(server)


def test_billion_laughs_is_refused_without_expansion(example_repo, served_by):
    server = served_by(example_repo)
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    body = ('<?xml version="1.0"?>\n<!DOCTYPE methodCall [' + "".join(entities) + "]>\n"
            "<methodCall><methodName>&lol9;</methodName><params/></methodCall>").encode()
    status, reply = raw_post(server, body)
    assert status == 200
    assert fault_of(reply).faultCode == -32700
    assert b"lollol" not in reply
    assert len(reply) < 2000
    web1_works(server)


def test_external_entity_is_refused_and_the_file_never_leaks(example_repo, served_by,
                                                             tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a9c")
    server = served_by(example_repo)
    doctype = f'<!DOCTYPE methodCall [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    bodies = [
        # an unknown method name would be echoed back in the fault
        f"<?xml version='1.0'?>{doctype}<methodCall><methodName>&xxe;</methodName>"
        "<params/></methodCall>",
        # a declared version would be recorded in the state directory
        f"<?xml version='1.0'?>{doctype}<methodCall><methodName>DeclareVersion</methodName>"
        "<params><param><value><string>&xxe;</string></value></param></params></methodCall>",
    ]
    for body in bodies:
        status, reply = raw_post(server, body.encode())
        assert status == 200
        assert fault_of(reply).faultCode == -32700
        assert b"TOP-SECRET" not in reply
    for path in (example_repo.path.parent / "state").rglob("*"):
        if path.is_file():
            assert b"TOP-SECRET" not in path.read_bytes()
    web1_works(server)


def test_oversized_request_is_413_unread(example_repo, served_by):
    server = served_by(example_repo, server__max_request_size="1000")
    # the body is never sent: the 413 comes from the headers alone
    call = xmlrpc.client.dumps(("9.9.9-" + "x" * 2000,), "DeclareVersion").encode()
    status, reply = raw_post(server, call, send_body=False)
    assert status == 413
    assert b"1000" in reply
    # sent in full, it is not processed either: the version is not recorded
    status, _ = raw_post(server, call)
    assert status == 413
    assert state_clients(example_repo.path.parent / "state").get(
        "web1.example.com", {}).get("version") != "9.9.9"
    # a request under the limit is served
    assert client_agent(server, BY_NAME["web1.example.com"]).DeclareVersion("1.4.0") is True


def test_missing_content_length_is_411(example_repo, served_by):
    server = served_by(example_repo)
    with tls_connect(server) as sock:
        sock.sendall(request_head({"Authorization": basic_auth("5c3f7a62-9d0e-4c1b-8f53-web1",
                                                               "web1-secret")}))
        sock.sendall(xmlrpc.client.dumps((), "GetConfig").encode())
        status, _ = read_response(sock)
    assert status == 411
    web1_works(server)


def test_truncated_body_times_out_without_holding_up_others(example_repo, served_by):
    server = served_by(example_repo, server__connection_timeout="1")
    call = xmlrpc.client.dumps((), "GetConfig").encode()
    with tls_connect(server) as stalled:
        stalled.sendall(request_head({
            "Authorization": basic_auth("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret"),
            "Content-Length": str(len(call) + 100)}) + call)
        web1_works(server)  # while the truncated request is open
        start = time.monotonic()
        try:
            leftover = stalled.recv(65536)  # the server gives up: EOF or an error reply
        except (ConnectionError, ssl.SSLError):
            leftover = b""
        assert time.monotonic() - start < TIMEOUT - 5
        assert not leftover.startswith(b"HTTP/1.0 200")
    web1_works(server)


def test_silent_connection_does_not_block_other_agents(example_repo, served_by):
    server = served_by(example_repo)  # connection_timeout 30 s: it stays open
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        silent.settimeout(TIMEOUT)
        for client in EXAMPLE_CLIENTS:
            check_config(full_run(server, client), client)
    web1_works(server)


# -- methods ---------------------------------------------------------------------------

def test_unknown_method_and_wrong_parameter_count(example_repo, served_by):
    server = served_by(example_repo)
    proxy = client_agent(server, BY_NAME["web1.example.com"])
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.NoSuchMethod()
    assert info.value.faultCode == -32601
    assert "NoSuchMethod" in info.value.faultString
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.GetConfig("unexpected")
    assert info.value.faultCode == -32602
    with pytest.raises(xmlrpc.client.Fault) as info:
        proxy.DeclareVersion()
    assert info.value.faultCode == -32602


def test_plugin_rmi_with_the_admin_identity(example_repo, served_by):
    server = served_by(example_repo)
    proxy = server.admin()
    assert proxy.Metadata.list_clients() == sorted(BY_NAME)
    declared = lxml.etree.parse(str(REPO_EXAMPLE / "Metadata/groups.xml")).xpath("//Group/@name")
    assert set(proxy.Metadata.get_all_group_names()) == set(declared)


def test_ping_returns_its_arguments(example_repo, served_by):
    server = served_by(example_repo)
    assert server.admin().ping(1, "two", [3]) == [1, "two", [3]]


# -- broken repository files ---------------------------------------------------------

def logged_with_location(caplog: pytest.LogCaptureFixture, path: Path, line: int) -> bool:
    return any(f"{path}:{line}" in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)


def test_broken_bundle_is_logged_and_spares_other_clients(example_repo, served_by,
                                                          caplog):
    groups = example_repo.path / "Metadata/groups.xml"
    groups.write_text(groups.read_text().replace(
        '<Group name="ntp-server"/>', '<Group name="ntp-server"/>\n    <Bundle name="broken"/>'))
    broken = example_repo.write("Bundler/broken.xml",
                                '<Bundle>\n  <Path name="/etc/broken">\n</Bundle>\n')
    server = served_by(example_repo)
    assert logged_with_location(caplog, broken, 3), caplog.text
    for client in EXAMPLE_CLIENTS:
        if "db" not in client.groups:
            check_config(full_run(server, client), client)
    # the client that wants the broken bundle still gets all the others
    db1 = BY_NAME["db1.example.com"]
    config = lxml.etree.fromstring(client_agent(server, db1).GetConfig().encode())
    assert {b.get("name") for b in config} == set(expected_config(db1))


def test_broken_rules_file_is_logged_and_spares_every_client(example_repo, served_by,
                                                             caplog):
    broken = example_repo.write("Rules/broken.xml",
                                '<Rules priority="1">\n  <Service name="x" status="on"\n'
                                '</Rules>\n')
    server = served_by(example_repo)
    assert logged_with_location(caplog, broken, 3), caplog.text
    for client in EXAMPLE_CLIENTS:
        check_config(full_run(server, client), client)


# -- client certificates -------------------------------------------------------------

def test_client_certificate_identifies_the_client(example_repo, served_by, tls):
    server = served_by(example_repo, ca=True)
    web2 = BY_NAME["web2.example.com"]
    cert = tls.client_cert(web2.name)
    # the agent's default user is root; the certificate says who it is
    config = lxml.etree.fromstring(agent(server, "root", web2.password, cert=cert)
                                   .GetConfig().encode())
    check_config(config, web2)


def test_cert_only_client_is_refused_without_a_certificate(example_repo, served_by, tls):
    clients = example_repo.path / "Metadata/clients.xml"
    clients.write_text(clients.read_text().replace(
        'uuid="5c3f7a62-9d0e-4c1b-8f53-desk1"', 'uuid="5c3f7a62-9d0e-4c1b-8f53-desk1" auth="cert"'))
    server = served_by(example_repo, ca=True)
    desk1 = BY_NAME["desk1.example.com"]
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        client_agent(server, desk1).GetConfig()
    assert info.value.errcode == 401
    config = lxml.etree.fromstring(agent(server, "root", desk1.password,
                                         cert=tls.client_cert(desk1.name)).GetConfig().encode())
    check_config(config, desk1)


# -- TLS ------------------------------------------------------------------------------

def legacy_context(tls: Any, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context able to speak TLS 1.0 and 1.1 (as old agents do)."""
    ctx = tls.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maximum
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(example_repo, served_by, tls):
    server = served_by(example_repo)
    with pytest.raises(ssl.SSLError) as info:
        tls_connect(server, legacy_context(tls, ssl.TLSVersion.TLSv1_1)).close()
    assert "PROTOCOL_VERSION" in str(info.value)  # the server's alert
    web1_works(server)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_1_2_and_1_3_are_served(example_repo, served_by, tls, version, name):
    server = served_by(example_repo)
    with tls_connect(server, legacy_context(tls, version)) as sock:
        assert sock.version() == name
        body = xmlrpc.client.dumps(("1.4.0pre2",), "DeclareVersion").encode()
        sock.sendall(request_head({
            "Authorization": basic_auth("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret"),
            "Content-Length": str(len(body))}) + body)
        status, reply = read_response(sock)
    assert status == 200
    assert xmlrpc.client.loads(reply)[0] == (True,)


# -- concurrency -----------------------------------------------------------------------

def test_concurrent_agent_runs_each_get_their_own_configuration(example_repo, served_by):
    server = served_by(example_repo)
    runs = [EXAMPLE_CLIENTS[i % len(EXAMPLE_CLIENTS)] for i in range(20)]
    barrier = threading.Barrier(len(runs), timeout=TIMEOUT)

    def run(client: ExampleClient) -> tuple[ExampleClient, lxml.etree._Element]:
        barrier.wait()
        return client, full_run(server, client)

    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        results = [f.result(timeout=60) for f in
                   [pool.submit(run, client) for client in runs]]
    assert len(results) == len(runs)
    for client, config in results:
        check_config(config, client)

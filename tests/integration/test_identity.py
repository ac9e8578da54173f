"""Admin rights by identity, not by address, on every core; plain HTTP on the TLS port.

Every test server listens on 127.0.0.1, so every agent here calls from the
loopback address: upstream made each of them an admin.
"""

from __future__ import annotations

import socket
import xmlrpc.client

import pytest
from conftest import CORES, PLUGINS, RunningServer

from bcfg2.errors import ACCESS_DENIED

AGENT = ("uuid-client1", "pw1")


@pytest.fixture(params=CORES)
def core_name(request: pytest.FixtureRequest) -> str:
    return request.param


def denied(call) -> bool:
    with pytest.raises(xmlrpc.client.Fault) as info:
        call()
    return info.value.faultCode == ACCESS_DENIED


def registered_newcomer(server: RunningServer) -> str:
    """A client the server registers on first contact (the repository knows no client3)."""
    assert server.proxy("client3", "globalpw").DeclareVersion("1.4.0") is True
    assert "client3" in server.admin().Metadata.list_clients()
    return "client3"


def test_an_agent_on_loopback_may_not_call_admin_methods_and_nothing_changes(
        repo, network_server, core_name):
    groups = repo.path / "Metadata/groups.xml"
    groups.write_text(groups.read_text().replace(
        'profile="true" public="true"', 'profile="true" public="true" default="true"', 1))
    server = network_server(repo, core=core_name, caching__client_metadata="aggressive")
    agent = server.proxy(*AGENT)
    newcomer = registered_newcomer(server)
    assert agent.GetProbes()  # client1's metadata is now cached (in the parent, too)
    debug = server.core.debug_flag

    assert denied(lambda: agent.Metadata.remove_client(newcomer))
    assert denied(agent.toggle_debug)
    assert denied(lambda: agent.expire_metadata_cache(["client1"]))
    assert denied(agent.listMethods)
    assert newcomer in server.admin().Metadata.list_clients()
    assert server.core.debug_flag is debug
    assert "client1" in server.core.metadata_cache

    admin = server.admin()
    assert admin.expire_metadata_cache(["client1"]) is True
    assert "client1" not in server.core.metadata_cache
    assert admin.toggle_debug() is (not debug)
    assert admin.toggle_debug() is debug
    assert admin.Metadata.remove_client(newcomer) is True
    assert newcomer not in admin.Metadata.list_clients()
    # the admin is no client: it has no configuration
    with pytest.raises(xmlrpc.client.Fault, match="admin, not a client"):
        admin.GetConfig()


def test_a_client_defined_in_the_repository_is_removed_there(repo, network_server):
    server = network_server(repo)
    with pytest.raises(xmlrpc.client.Fault, match="bcfg2-admin client del client1"):
        server.admin().Metadata.remove_client("client1")
    assert "client1" in server.admin().Metadata.list_clients()


def test_a_wrong_admin_password_is_refused(repo, network_server):
    server = network_server(repo)
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        server.proxy("admin", "guess").listMethods()
    assert info.value.errcode == 401


def test_trust_loopback_restores_upstreams_rule_with_a_warning(repo, network_server, caplog,
                                                               core_name):
    server = network_server(repo, core=core_name, communication__trust_loopback="true")
    assert "trust_loopback is on" in caplog.text
    agent = server.proxy(*AGENT)
    assert agent.Metadata.list_clients() == ["client1", "client2"]
    before = server.core.debug_flag
    assert agent.toggle_debug() is (not before)
    assert agent.toggle_debug() is before
    assert agent.GetConfig()  # still a client


def test_a_client_certificate_listed_as_admin_is_an_admin(repo, network_server, tls):
    server = network_server(repo, ca=True, communication__admin_cns="ops.example.com")
    cert = tls.client_cert("ops.example.com")
    assert server.proxy("", "", cert=cert).Metadata.list_clients() == ["client1", "client2"]
    other = tls.client_cert("client1")
    assert denied(lambda: server.proxy("", "pw1", cert=other).Metadata.list_clients())


def test_plain_http_on_the_tls_port_gets_a_clear_400_and_the_server_keeps_serving(
        repo, network_server, core_name):
    server = network_server(repo, core=core_name, server__plugins=PLUGINS)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert b"This port speaks HTTPS" in answer
    assert server.proxy(*AGENT).GetConfig()


def test_one_canonical_name_system_only_before_introspection(repo, network_server):
    server = network_server(repo)
    agent, admin = server.proxy(*AGENT), server.admin()
    with pytest.raises(xmlrpc.client.Fault) as info:
        getattr(agent, "system.AssertProfile")("basic")
    assert info.value.faultCode == -32601
    assert "GetConfig" in getattr(admin, "system.listMethods")()
    assert getattr(admin, "system.methodSignature")("GetConfig") == "signatures not supported"
    assert denied(lambda: getattr(agent, "system.listMethods")())

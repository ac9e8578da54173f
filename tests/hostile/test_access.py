"""Ways around the access rules: each must be impossible, on every core."""

from __future__ import annotations

import base64
import shutil
import socket
import sqlite3
import xmlrpc.client
from pathlib import Path

import pytest
from attack import assert_served, call_body, fault_of, raw_call
from conftest import REPO_EXAMPLE, WEB1
from connattack import WEB2

from bcfg2.errors import ACCESS_DENIED, INVALID_PARAMS, UNKNOWN_METHOD, StorageError
from bcfg2.identity import valid_client_name

EXAMPLE_CLIENTS = ["web1.example.com", "web2.example.com", "db1.example.com",
                   "desk1.example.com"]

DENY_ASSERT_PROFILE = """\
<ACL>
  <Deny address="127.0.0.0" netmask="8" method="AssertProfile"/>
</ACL>
"""


@pytest.mark.parametrize("name", ["system.AssertProfile", "System.AssertProfile",
                                  "system.system.AssertProfile", "AssertProfile "])
def test_method_name_aliases_reach_no_method(hostile, name: str) -> None:
    """An alias of a denied method names no method; the denied name itself is denied."""
    server = hostile()
    status, body = raw_call(server, call_body(name, "dbserver"))
    assert status == 200
    fault = fault_of(body)
    assert fault is not None and fault.faultCode == UNKNOWN_METHOD
    assert_served(server)


def test_denied_method_stays_denied_under_any_spelling(hostile, tmp_path) -> None:
    """With ip.xml denying AssertProfile, no spelling of it changes the client's profile."""
    repo = tmp_path / "acl-repo"
    shutil.copytree(REPO_EXAMPLE, repo)
    (repo / "ACL").mkdir()
    (repo / "ACL" / "ip.xml").write_text(DENY_ASSERT_PROFILE)
    server = hostile(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults,Probes,"
                     "Properties,TemplateHelper,GroupPatterns,Decisions,Reporting,ACL")
    for name in ("AssertProfile", "system.AssertProfile"):
        fault = fault_of(raw_call(server, call_body(name, "dbserver"))[1])
        assert fault is not None and fault.faultCode in (ACCESS_DENIED, UNKNOWN_METHOD), name
    with pytest.raises(xmlrpc.client.Fault):
        server.proxy(*WEB1).AssertProfile("dbserver")
    assert server.core.build_metadata("web1.example.com").profile == "webserver"
    assert_served(server)


@pytest.mark.parametrize("name", [
    # reserved: names that mean this machine
    "localhost", "LOCALHOST", "localhost.", "localhost.localdomain",
    # lookalikes: a trailing newline or other oddity beside a real (secure) client's name
    "db1.example.com\n", "db1.example.com\r", "web9.example.com\n", "db1.example.com\x00",
    "db1.example.com/../x",
])
def test_reserved_and_lookalike_names_never_register(hostile, name: str) -> None:
    """First contact (global password) with such a name neither registers nor authenticates."""
    server = hostile()
    status, _ = raw_call(server, call_body("DeclareVersion", "1.4.0"), user=name,
                         password="globalpw")
    assert status == 401
    clients = server.admin().Metadata.list_clients()
    assert all(valid_client_name(c) for c in clients)
    assert sorted(clients) == sorted(EXAMPLE_CLIENTS)
    assert_served(server)


def call_from(server, source: tuple[str, int], body: bytes, user: str, password: str) -> int:
    """POST one call from a fixed source (address, port); the HTTP status."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    raw.settimeout(30)
    raw.bind(source)
    raw.connect(("127.0.0.1", server.port))
    with server.tls.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        conn.sendall(f"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\n"
                     f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_no_identity_is_borrowed_from_a_reused_source_port(hostile) -> None:
    """root-by-address from the (ip, port) web1 just used is not web1 (no session table)."""
    server = hostile()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    source = probe.getsockname()
    probe.close()
    assert call_from(server, source, call_body("DeclareVersion", "1.4.0"), *WEB1) == 200
    # root: identified by address; 127.0.0.1 belongs to no client and resolves to localhost
    status = call_from(server, source, call_body("GetConfig"), "root", "globalpw")
    assert status == 401
    assert_served(server)


def test_an_oversized_version_is_refused_and_state_stays_writable(hostile, tmp_path) -> None:
    """Ten million characters of version: refused; every client's state is still written."""
    server = hostile()
    status, body = raw_call(server, call_body("DeclareVersion", "1" * 10_000_000))
    assert status == 200
    fault = fault_of(body)
    assert fault is not None and fault.faultCode == INVALID_PARAMS
    assert len(fault.faultString) < 200
    for bad in ("1.4.0\nClient web2.example.com declared version 9", "1.4 0", ""):
        fault = fault_of(raw_call(server, call_body("DeclareVersion", bad))[1])
        assert fault is not None and fault.faultCode == INVALID_PARAMS, bad
    assert server.proxy(*WEB2).DeclareVersion("1.4.0pre2") is True
    assert server.core.build_metadata("web2.example.com").version == "1.4.0pre2"
    assert_served(server)


def test_an_oversized_profile_is_refused(hostile) -> None:
    """AssertProfile with a huge or control-character name is refused before any lookup."""
    server = hostile()
    for bad in ("w" * 100_000, "webserver\n", "web server"):
        fault = fault_of(raw_call(server, call_body("AssertProfile", bad))[1])
        assert fault is not None and fault.faultCode == INVALID_PARAMS
    assert server.core.build_metadata("web1.example.com").profile == "webserver"
    assert_served(server)


def test_faults_say_what_failed_not_where(hostile, monkeypatch) -> None:
    """A state write that fails is a Fault naming no server path; the log has the path."""
    server = hostile()
    state = server.core.metadata.state
    where = f"{state.name}: disk I/O error"

    def broken(*args: object) -> None:
        raise StorageError(where)  # what the storage layer makes of an SQLite error

    monkeypatch.setattr(state.db, "update", broken)
    with pytest.raises(xmlrpc.client.Fault) as failed:
        server.proxy(*WEB1).DeclareVersion("1.4.9")
    assert "Unable to set version for web1.example.com" in failed.value.faultString
    assert "server's log" in failed.value.faultString
    assert state.name not in failed.value.faultString

    def unexpected(*args: object) -> None:
        raise sqlite3.OperationalError(where)  # an error no layer was written to expect

    monkeypatch.setattr(state.db, "update", unexpected)
    with pytest.raises(xmlrpc.client.Fault) as failed:
        server.proxy(*WEB1).DeclareVersion("1.4.10")
    assert failed.value.faultString.endswith("DeclareVersion failed on the server "
                                             "(OperationalError); the server's log says why")
    assert "/" not in failed.value.faultString
    monkeypatch.undo()
    assert_served(server)


ADMIN_GROUP_ACL = """\
<ACL>
  <Group name="admins"><Allow method="*.*"/></Group>
  <Allow method="*"/>
</ACL>
"""
ALL_PLUGINS = ("Metadata,Bundler,Cfg,Rules,Defaults,Probes,Properties,TemplateHelper,"
               "GroupPatterns,Decisions,Reporting,ACL")


def acl_repo(tmp_path: Path) -> Path:
    """repo-example with a group ``admins`` that ACL/metadata.xml lets call plugin methods,
    and a public profile ``ops`` that is a member of it."""
    repo = tmp_path / "acl-groups"
    shutil.copytree(REPO_EXAMPLE, repo)
    groups = repo / "Metadata" / "groups.xml"
    groups.write_text(groups.read_text().replace(
        "</Groups>", '<Group name="ops" profile="true" public="true"><Group name="admins"/>'
        '<Group name="linux"/></Group><Group name="admins"/></Groups>'))
    (repo / "ACL").mkdir()
    (repo / "ACL" / "metadata.xml").write_text(ADMIN_GROUP_ACL)
    return repo


def assert_no_plugin_rights(server) -> None:
    """web1 may not remove another client (admins may), and a real agent is served."""
    with pytest.raises(xmlrpc.client.Fault) as denied:
        server.proxy(*WEB1).Metadata.remove_client("web2.example.com")
    assert denied.value.faultCode == ACCESS_DENIED
    assert "web2.example.com" in server.admin().Metadata.list_clients()
    assert_served(server)


def test_probe_groups_never_decide_access(hostile, tmp_path) -> None:
    """Probe output group:admins puts web1 in admins for its configuration, not for the ACL."""
    server = hostile(acl_repo(tmp_path), server__plugins=ALL_PLUGINS,
                     probes__allowed_groups=".*")
    agent = server.proxy(*WEB1)
    assert agent.RecvProbeData('<ProbeData><probe name="virt" source="Probes">kvm\n'
                               'group:admins</probe></ProbeData>') is True
    assert "admins" in server.core.build_metadata("web1.example.com").groups
    assert_no_plugin_rights(server)


def test_an_asserted_profile_never_decides_access(hostile, tmp_path) -> None:
    """AssertProfile to public ops gives web1 ops's configuration, not the ACL rights of ops."""
    server = hostile(acl_repo(tmp_path), server__plugins=ALL_PLUGINS)
    assert server.proxy(*WEB1).AssertProfile("ops") is True
    meta = server.core.build_metadata("web1.example.com")
    assert meta.profile == "ops" and "admins" in meta.groups
    assert_no_plugin_rights(server)


def test_repository_groups_still_decide_access(hostile, tmp_path) -> None:
    """The same rule grants a client that clients.xml puts in ops (the control case)."""
    repo = acl_repo(tmp_path)
    clients = repo / "Metadata" / "clients.xml"
    clients.write_text(clients.read_text().replace(
        'name="desk1.example.com" profile="workstation"', 'name="desk1.example.com" profile="ops"'))
    server = hostile(repo, server__plugins=ALL_PLUGINS)
    desk1 = ("5c3f7a62-9d0e-4c1b-8f53-desk1", "desk1-secret")
    assert "web2.example.com" in server.proxy(*desk1).Metadata.list_clients()
    with pytest.raises(xmlrpc.client.Fault) as denied:
        server.proxy(*WEB1).Metadata.list_clients()
    assert denied.value.faultCode == ACCESS_DENIED
    assert_served(server)

"""Authentication modes: password, cert, cert+password, bootstrap, and secure clients.

The Metadata plugin decides for every network core, so the modes are checked
on AuthenticateConnection with certificates in the form
``ssl.SSLSocket.getpeercert()`` gives them; the last tests present real client
certificates to the builtin core over TLS.
"""

from __future__ import annotations

import logging
import socket
import xmlrpc.client
from pathlib import Path

import lxml.etree
import pytest
from conftest import BASIC_GROUPS, rewrite
from conftest import state_clients as recorded_state

from bcfg2.errors import StorageError

GLOBAL_PW = "globalpw"

CLIENTS = """\
<Clients version="3.0">
  <Client name="both" profile="basic" uuid="uuid-both" password="bothpw" floating="true"/>
  <Client name="certonly" profile="basic" uuid="uuid-certonly" password="certpw" auth="cert"
          floating="true"/>
  <Client name="boot" profile="basic" uuid="uuid-boot" password="bootpw" auth="bootstrap"
          floating="true"/>
  <Client name="vault" profile="basic" uuid="uuid-vault" password="vaultpw" secure="true"
          floating="true"/>
  <Client name="fixed" profile="basic" address="10.0.0.5" password="fixedpw" auth="cert"/>
  <Client name="pinned" profile="basic" address="10.0.0.7" password="pinnedpw"/>
</Clients>
"""


def cert_for(*common_names: str) -> dict:
    """A verified peer certificate as ssl.SSLSocket.getpeercert() gives it."""
    subject = [(("organizationName", "Example"),)]
    subject += [(("commonName", name),) for name in common_names]
    return {"subject": tuple(subject)}


#: every address here is in clients.xml (or must not reach the metadata phase)
pytestmark = pytest.mark.usefixtures("no_reverse_dns")


@pytest.fixture
def make_core(repo, local_core, tmp_path):
    """Factory: a core over ``repo`` with CLIENTS, the global password and state in tmp_path."""
    repo.write("Metadata/clients.xml", CLIENTS)

    def factory(**overrides):
        overrides.setdefault("communication__password", GLOBAL_PW)
        overrides.setdefault("server__state_dir", str(tmp_path / "state"))
        return local_core(repo, **overrides)
    return factory


class Connections:
    """AuthenticateConnection, each call from a new source port (one call per connection)."""

    def __init__(self, core) -> None:
        self.core = core
        self.port = 50000

    def __call__(self, cert: dict | None, user: str, password: str,
                 ip: str = "127.0.0.1") -> str | None:
        """The client the connection is authenticated as, or None if it is refused."""
        self.port += 1
        caller = self.core.authenticate(cert, user, password, (ip, self.port))
        if caller is None:
            return None
        return self.core.resolve_client(caller, metadata=False)[0]


@pytest.fixture
def connect(make_core):
    return Connections(make_core())


def state_clients(tmp_path: Path) -> dict[str, dict[str, str]]:
    return recorded_state(tmp_path / "state")


# -- password identification (no certificate) ---------------------------------------------

@pytest.mark.parametrize(("user", "password", "ip", "client"), [
    ("uuid-both", "bothpw", "127.0.0.1", "both"),
    ("uuid-both", GLOBAL_PW, "127.0.0.1", "both"),
    ("uuid-both", "wrong", "127.0.0.1", None),
    ("uuid-both", "", "127.0.0.1", None),
    ("uuid-both", "certpw", "127.0.0.1", None),       # another client's password
    ("root", "pinnedpw", "10.0.0.7", "pinned"),        # identified by address
    ("root", GLOBAL_PW, "10.0.0.7", "pinned"),
    ("root", "bothpw", "10.0.0.7", None),
    ("uuid-boot", "bootpw", "127.0.0.1", "boot"),      # bootstrap: a password until a cert
])
def test_without_a_certificate_a_password_identifies(connect, user, password, ip, client):
    assert connect(None, user, password, ip) == client


# -- cert+password (the default) ---------------------------------------------------------

@pytest.mark.parametrize(("password", "client"), [
    ("bothpw", "both"), (GLOBAL_PW, "both"), ("wrong", None), ("", None)])
def test_cert_password_wants_the_password_with_the_certificate(connect, password, client):
    assert connect(cert_for("both"), "root", password) == client


def test_cert_password_is_the_default_mode(make_core):
    connect = Connections(make_core(communication__authentication="cert"))
    assert connect(None, "uuid-both", "bothpw") is None
    assert connect(cert_for("both"), "root", "") == "both"
    connect = Connections(make_core())
    assert connect(cert_for("both"), "root", "") is None


# -- cert ----------------------------------------------------------------------------------

def test_cert_needs_a_certificate_and_nothing_else(connect):
    assert connect(cert_for("certonly"), "root", "") == "certonly"
    assert connect(None, "uuid-certonly", "certpw") is None
    assert connect(None, "uuid-certonly", GLOBAL_PW) is None
    assert connect(None, "certonly", GLOBAL_PW) is None           # by name
    assert connect(None, "root", "fixedpw", "10.0.0.5") is None    # by address
    assert connect(cert_for("fixed"), "root", "", "10.0.0.5") == "fixed"


def test_a_certificate_of_a_fixed_client_is_only_good_from_its_address(connect):
    assert connect(cert_for("fixed"), "root", "", "10.0.0.7") is None
    assert connect(cert_for("pinned"), "root", "pinnedpw", "10.0.0.5") is None
    assert connect(cert_for("pinned"), "root", "pinnedpw", "10.0.0.7") == "pinned"


@pytest.mark.parametrize("user", ["uuid-certonly", "certonly", "fixed", "uuid-vault"])
def test_a_certificate_never_lets_its_holder_claim_another_client(connect, user):
    assert connect(cert_for("both"), user, GLOBAL_PW) is None


def test_a_user_that_names_no_client_does_not_matter_with_a_certificate(connect):
    assert connect(cert_for("both"), "uuid-fixed", GLOBAL_PW) == "both"


def test_a_certificate_names_its_holder_whatever_the_address_says(connect):
    # "both" is floating: from the address of "pinned" it is still "both"
    assert connect(cert_for("both"), "root", "bothpw", "10.0.0.7") == "both"
    assert connect(cert_for("both"), "uuid-both", "bothpw") == "both"


@pytest.mark.parametrize("names", [("both", "certonly"), ()])
def test_a_certificate_without_exactly_one_common_name_is_refused(connect, names):
    assert connect(cert_for(*names), "root", GLOBAL_PW) is None


# -- secure --------------------------------------------------------------------------------

@pytest.mark.parametrize(("cert", "password", "client"), [
    (None, "vaultpw", "vault"),
    (None, GLOBAL_PW, None),
    (cert_for("vault"), "vaultpw", "vault"),
    (cert_for("vault"), GLOBAL_PW, None),
])
def test_a_secure_client_needs_its_own_password(connect, cert, password, client):
    assert connect(cert, "uuid-vault" if cert is None else "root", password) == client


def test_a_secure_client_without_a_password_is_refused(repo, make_core):
    core = make_core()
    rewrite(repo.path / "Metadata/clients.xml", CLIENTS.replace(
        'password="vaultpw" ', ""))
    core.refresh()
    connect = Connections(core)
    assert connect(None, "uuid-vault", GLOBAL_PW) is None
    assert connect(None, "uuid-vault", "") is None


# -- bootstrap -----------------------------------------------------------------------------

def test_bootstrap_ends_with_the_first_certificate(repo, make_core, tmp_path):
    repo_clients = (repo.path / "Metadata/clients.xml")
    core = make_core()
    connect = Connections(core)
    assert connect(None, "uuid-boot", "bootpw") == "boot"
    assert connect(None, "uuid-boot", "bootpw") == "boot"
    assert connect(cert_for("boot"), "root", "") == "boot"
    assert connect(None, "uuid-boot", "bootpw") is None
    assert connect(None, "uuid-boot", GLOBAL_PW) is None
    assert connect(cert_for("boot"), "root", "") == "boot"
    # recorded in the server's state, not in the repository
    assert state_clients(tmp_path)["boot"]["auth"] == "cert"
    assert repo_clients.read_text() == CLIENTS
    # and still in force after a restart
    connect = Connections(make_core())
    assert connect(None, "uuid-boot", "bootpw") is None
    assert connect(cert_for("boot"), "root", "") == "boot"


def test_a_bootstrap_ends_even_when_the_state_cannot_be_written(repo, make_core, tmp_path,
                                                                monkeypatch):
    """A failing disk never lets the password work again after the certificate was shown;
    the switch is written with the client's next change once the disk works."""
    repo.write("Metadata/groups.xml", BASIC_GROUPS.replace(
        '<Group name="other" profile="true"/>', '<Group name="other" profile="true" default="true"/>'))
    core = make_core(communication__authentication="bootstrap")
    connect = Connections(core)
    assert connect(None, "uuid-boot", "bootpw") == "boot"

    def full(*args, **kwargs):
        raise StorageError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(core.metadata.state.db, "update", full)
        assert connect(cert_for("boot"), "root", "") == "boot"
        assert connect(None, "uuid-boot", "bootpw") is None
        # a client the server has not met yet: registered and switched, in memory
        core.metadata._end_bootstrap("newboot")
        assert connect(None, "newboot", GLOBAL_PW) is None
    assert "auth" not in state_clients(tmp_path).get("boot", {})
    core.metadata.set_version("boot", "1.4.0")  # the next change writes the switch too
    assert state_clients(tmp_path)["boot"]["auth"] == "cert"
    assert connect(None, "uuid-boot", "bootpw") is None


def test_bootstrap_writes_through_when_the_state_is_the_repository(repo, make_core):
    core = make_core(server__state_dir=str(repo.path))
    connect = Connections(core)
    assert connect(cert_for("boot"), "root", "") == "boot"
    core.refresh()
    clients = {n.get("name"): n for n in
               lxml.etree.parse(str(repo.path / "Metadata/clients.xml")).iter("Client")}
    assert clients["boot"].get("auth") == "cert"
    assert clients["boot"].get("password") == "bootpw"
    assert connect(None, "uuid-boot", "bootpw") is None


def test_a_bootstrap_written_through_ends_even_when_clients_xml_cannot_be_written(
        repo, make_core, monkeypatch):
    core = make_core(server__state_dir=str(repo.path))
    connect = Connections(core)
    before = (repo.path / "Metadata/clients.xml").read_bytes()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bcfg2.plugins.metadata.atomic_write", full)
    assert connect(cert_for("boot"), "root", "") == "boot"
    assert connect(None, "uuid-boot", "bootpw") is None
    assert (repo.path / "Metadata/clients.xml").read_bytes() == before


def test_an_admin_who_changes_the_mode_later_wins(repo, make_core):
    core = make_core()
    connect = Connections(core)
    assert connect(cert_for("boot"), "root", "") == "boot"
    assert connect(None, "uuid-boot", "bootpw") is None
    rewrite(repo.path / "Metadata/clients.xml",
            CLIENTS.replace('auth="bootstrap"', 'auth="cert+password"'))
    core.refresh()
    assert connect(None, "uuid-boot", "bootpw") == "boot"
    assert connect(cert_for("boot"), "root", "") is None


def test_bootstrap_as_the_default_mode_registers_and_switches_new_clients(
        repo, make_core, tmp_path, monkeypatch):
    def reverse_dns(sockaddr, flags):
        assert sockaddr[0] == "10.0.0.9", f"unexpected reverse DNS lookup {sockaddr}"
        return "newcomer", "0"
    monkeypatch.setattr(socket, "getnameinfo", reverse_dns)
    repo.write("Metadata/groups.xml", BASIC_GROUPS.replace(
        '<Group name="other" profile="true"/>',
        '<Group name="other" profile="true" default="true"/>'))
    core = make_core(communication__authentication="bootstrap")
    connect = Connections(core)
    assert connect(None, "uuid-both", "bothpw") == "both"
    assert connect(cert_for("both"), "root", "") == "both"
    assert connect(None, "uuid-both", "bothpw") is None
    assert connect(None, "newcomer", GLOBAL_PW) == "newcomer"
    assert connect(cert_for("newcomer"), "root", "", "10.0.0.9") == "newcomer"
    assert connect(None, "newcomer", GLOBAL_PW) is None
    state = state_clients(tmp_path)
    assert state["newcomer"]["profile"] == "other" and state["newcomer"]["auth"] == "cert"
    assert core.build_metadata("newcomer").profile == "other"
    # clients in another mode are not switched
    assert connect(cert_for("certonly"), "root", "") == "certonly"
    assert "certonly" not in state_clients(tmp_path)
    # the recorded switch holds only while the mode is bootstrap
    connect = Connections(make_core(communication__authentication="cert+password"))
    assert connect(None, "newcomer", GLOBAL_PW) == "newcomer"


def test_an_unknown_auth_mode_keeps_the_last_good_clients_xml(repo, make_core, caplog):
    core = make_core()
    with caplog.at_level(logging.ERROR):
        rewrite(repo.path / "Metadata/clients.xml",
                CLIENTS.replace('auth="cert"\n', 'auth="certificate"\n'))
        core.refresh()
    assert "clients.xml:" in caplog.text and "client certonly has auth='certificate'" in caplog.text
    assert Connections(core)(None, "uuid-certonly", "certpw") is None


# -- real client certificates through the builtin core ---------------------------------------

@pytest.fixture
def tls_server(repo, network_server):
    repo.write("Metadata/clients.xml", CLIENTS)
    return network_server(repo, password=GLOBAL_PW, ca=True)


def refused(call) -> bool:
    try:
        call()
    except xmlrpc.client.ProtocolError as err:
        return err.errcode == 401
    return False


def test_cert_mode_over_tls(tls_server, tls):
    cert = tls.client_cert("certonly")
    assert refused(lambda: tls_server.proxy("uuid-certonly", "certpw").DeclareVersion("1.4"))
    assert tls_server.proxy("root", "", cert=cert).DeclareVersion("1.4") is True
    config = lxml.etree.fromstring(tls_server.proxy("root", "", cert=cert).GetConfig().encode())
    assert config.tag == "Configuration"
    assert tls_server.core.build_metadata("certonly").version == "1.4"


def test_cert_password_over_tls(tls_server, tls):
    cert = tls.client_cert("both")
    assert refused(lambda: tls_server.proxy("root", "", cert=cert).DeclareVersion("1.4"))
    assert tls_server.proxy("root", "bothpw", cert=cert).DeclareVersion("1.4") is True
    # the certificate of "both" cannot speak for "certonly"
    assert refused(lambda: tls_server.proxy("uuid-certonly", GLOBAL_PW, cert=cert)
                   .DeclareVersion("1.4"))


def test_bootstrap_over_tls(tls_server, tls, tmp_path):
    assert tls_server.proxy("uuid-boot", "bootpw").DeclareVersion("1.3") is True
    assert tls_server.proxy("root", "", cert=tls.client_cert("boot")).DeclareVersion("1.4")
    assert refused(lambda: tls_server.proxy("uuid-boot", "bootpw").DeclareVersion("1.5"))
    assert state_clients(tmp_path)["boot"] == {"version": "1.4", "auth": "cert"}

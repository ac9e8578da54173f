"""Cfg creators: SSH keys, TLS keys and certificates made once and kept; authorized_keys."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo, make_setup, rewrite
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from bcfg2.core import LocalCore
from bcfg2.plugins.cfg import creators

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"><Group name="linux"/><Group name="dev"/></Group>
  <Group name="other" profile="true"><Group name="linux"/><Group name="dev"/></Group>
  <Group name="third" profile="true"><Group name="linux"/><Group name="prod"/></Group>
  <Group name="linux"><Bundle name="base"/></Group>
  <Group name="dev" category="environment"/>
  <Group name="prod" category="environment"/>
</Groups>
"""

CLIENTS = """\
<Clients version="3.0">
  <Client name="client1.example.com" profile="basic">
    <Alias name="www.example.com"/>
  </Client>
  <Client name="client2.example.com" profile="other"/>
  <Client name="client3.example.com" profile="third"/>
</Clients>
"""
C1, C2, C3 = "client1.example.com", "client2.example.com", "client3.example.com"
KEY = "/root/.ssh/id_test"
PUB = KEY + ".pub"


@pytest.fixture
def crepo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Cfg/etc/motd/motd", "hello\n")
    return repo


def bundle(repo: Repo, *paths: str) -> None:
    repo.write("Bundler/base.xml", "<Bundle>\n" + "".join(
        f'<Path name="{path}"/>\n' for path in ("/etc/motd", *paths)) + "</Bundle>\n")


@pytest.fixture
def cores() -> Iterator[Callable[..., LocalCore]]:
    """Factory: a LocalCore over a repository, with extra bcfg2.conf text; shut down after."""
    made: list[LocalCore] = []

    def factory(repository: Repo, conf: str = "", **overrides: str) -> LocalCore:
        setup = make_setup(repository, **overrides)
        if conf:
            setup.raw.read_string(conf)
        core = LocalCore(setup)
        made.append(core)
        return core

    yield factory
    for core in made:
        core.shutdown()


def paths(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    config = core.BuildConfiguration(client)
    return {el.get("name"): el for el in config.iter("Path")}


def ok(entry: lxml.etree._Element) -> str:
    assert "failure" not in entry.attrib, entry.get("failure")
    return entry.text


# -- SSH keys -------------------------------------------------------------------

@pytest.mark.parametrize(("params", "key_class", "prefix"), [
    ('<Params type="rsa" bits="2048"/>', rsa.RSAPrivateKey, "ssh-rsa "),
    ('<Params type="ecdsa" bits="384"/>', ec.EllipticCurvePrivateKey, "ecdsa-sha2-nistp384 "),
    ('<Params type="ed25519"/>', ed25519.Ed25519PrivateKey, "ssh-ed25519 "),
])
def test_ssh_key_pair_is_created_once_stored_and_served_again(
        crepo: Repo, cores, params: str, key_class: type, prefix: str) -> None:
    bundle(crepo, KEY, PUB)
    crepo.write(f"Cfg{KEY}/privkey.xml", f"<PrivateKey>{params}</PrivateKey>")
    core = cores(crepo)
    first = paths(core, C1)
    private, public = ok(first[KEY]), ok(first[PUB])
    key = serialization.load_ssh_private_key(private.encode(), None)
    assert isinstance(key, key_class)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()
    assert public.startswith(prefix) and public.split()[:2] == derived.split()
    assert (first[KEY].get("mode"), first[KEY].get("sensitive")) == ("0600", "true")
    assert first[PUB].get("mode") == "644"

    # stored where upstream stores them, the private key readable by the server only
    stored = crepo.path / f"Cfg{KEY}/id_test.H_{C1}"
    assert stored.read_text() == private
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert (crepo.path / f"Cfg{PUB}/id_test.pub.H_{C1}").read_text() == public

    again = paths(core, C1)
    assert (again[KEY].text, again[PUB].text) == (private, public)
    restarted = paths(cores(crepo), C1)
    assert (restarted[KEY].text, restarted[PUB].text) == (private, public)
    other = paths(core, C2)
    assert ok(other[KEY]) != private


def test_an_rsa_key_without_params_has_3072_bits_and_a_passphrase_protects_it(
        crepo: Repo, cores) -> None:
    bundle(crepo, KEY)
    crepo.write(f"Cfg{KEY}/privkey.xml", """\
        <PrivateKey>
          <Group name="prod"><Passphrase>s3cret phrase</Passphrase></Group>
        </PrivateKey>""")
    core = cores(crepo)
    plain = serialization.load_ssh_private_key(ok(paths(core, C1)[KEY]).encode(), None)
    assert isinstance(plain, rsa.RSAPrivateKey) and plain.key_size == 3072
    protected = ok(paths(core, C3)[KEY]).encode()
    with pytest.raises((ValueError, TypeError)):
        serialization.load_ssh_private_key(protected, None)
    assert serialization.load_ssh_private_key(protected, b"s3cret phrase").key_size == 3072


def test_an_encrypted_passphrase_element_is_decrypted_with_its_named_passphrase(
        crepo: Repo, cores) -> None:
    from bcfg2.encryption import Encryption

    sealed = Encryption({"keys": "outer"}).encrypt(b"inner phrase", "keys", width=None)
    bundle(crepo, KEY)
    crepo.write(f"Cfg{KEY}/privkey.xml", f"""\
        <PrivateKey><Params type="ed25519"/>
          <Passphrase encrypted="keys">{sealed}</Passphrase>
        </PrivateKey>""")
    key = ok(paths(cores(crepo, encryption__passphrases={"keys": "outer"}), C1)[KEY]).encode()
    assert serialization.load_ssh_private_key(key, b"inner phrase") is not None
    failure = paths(cores(crepo, encryption__passphrases={"keys": "wrong"}), C2)[KEY]
    assert "Passphrase" in failure.get("failure") and "inner phrase" not in failure.get("failure")


def test_keys_per_group_with_a_category_and_per_host_with_perhost(crepo: Repo, cores) -> None:
    bundle(crepo, KEY, PUB, "/root/.ssh/id_host")
    crepo.write(f"Cfg{KEY}/privkey.xml",
                '<PrivateKey category="environment"><Params type="ed25519"/></PrivateKey>')
    crepo.write("Cfg/root/.ssh/id_host/privkey.xml",
                '<PrivateKey category="environment" perhost="true">'
                '<Params type="ed25519"/></PrivateKey>')
    core = cores(crepo)
    one, two, three = (paths(core, c) for c in (C1, C2, C3))
    assert ok(one[KEY]) == ok(two[KEY]) != ok(three[KEY])
    assert ok(one[PUB]) == ok(two[PUB]) != ok(three[PUB])
    assert sorted(os.listdir(crepo.path / f"Cfg{KEY}")) == [
        "id_test.G50_dev", "id_test.G50_prod", "privkey.xml"]
    assert sorted(os.listdir(crepo.path / f"Cfg{PUB}")) == [
        "id_test.pub.G50_dev", "id_test.pub.G50_prod"]
    assert ok(one["/root/.ssh/id_host"]) != ok(two["/root/.ssh/id_host"])


def test_the_sshkeys_category_option_makes_group_keys(crepo: Repo, cores) -> None:
    bundle(crepo, KEY)
    crepo.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    core = cores(crepo, sshkeys__category="environment")
    assert ok(paths(core, C1)[KEY]) == ok(paths(core, C2)[KEY])
    assert (crepo.path / f"Cfg{KEY}/id_test.G50_dev").exists()


def test_asking_for_the_public_key_creates_the_pair_through_pubkey_xml(
        crepo: Repo, cores) -> None:
    bundle(crepo, PUB)
    crepo.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    crepo.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    core = cores(crepo)
    public = ok(paths(core, C1)[PUB])
    private = (crepo.path / f"Cfg{KEY}/id_test.H_{C1}").read_bytes()
    key = serialization.load_ssh_private_key(private, None)
    assert public.split()[:2] == key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode().split()


def test_pubkey_xml_alone_fails_clearly_until_a_private_key_exists(crepo: Repo, cores) -> None:
    bundle(crepo, PUB)
    crepo.mkdir(f"Cfg{KEY}")
    crepo.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    core = cores(crepo)
    failure = paths(core, C1)[PUB].get("failure")
    assert "no private key for client1.example.com" in failure and "privkey.xml" in failure
    key = ed25519.Ed25519PrivateKey.generate()
    crepo.write(f"Cfg{KEY}/id_test.H_{C1}", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    assert core.refresh()
    public = ok(paths(core, C1)[PUB])
    assert public.split()[:2] == key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode().split()


def test_two_builds_at_once_create_one_key(crepo: Repo, cores,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bundle(crepo, KEY, PUB)
    crepo.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    core = cores(crepo)
    made: list[object] = []
    both_waiting = threading.Barrier(2, timeout=30)
    real = creators.new_private_key

    def counted(kind: str, bits: int):
        made.append(kind)
        return real(kind, bits)
    monkeypatch.setattr(creators, "new_private_key", counted)
    results: list[tuple[str, str]] = []

    def build() -> None:
        both_waiting.wait()
        served = paths(core, C1)
        results.append((ok(served[KEY]), ok(served[PUB])))
    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0] == results[1]
    assert made == ["ed25519"]


def test_a_key_on_disk_is_never_made_again_and_a_lost_public_key_is_derived(
        crepo: Repo, cores, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle(crepo, KEY, PUB)
    crepo.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    crepo.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    first = paths(cores(crepo), C1)
    (crepo.path / f"Cfg{PUB}/id_test.pub.H_{C1}").unlink()
    monkeypatch.setattr(creators, "new_private_key", None)  # any generation would fail
    again = paths(cores(crepo), C1)
    assert (ok(again[KEY]), ok(again[PUB])) == (first[KEY].text, first[PUB].text)


def test_a_storage_passphrase_keeps_created_private_keys_encrypted(
        crepo: Repo, cores) -> None:
    from bcfg2.encryption import Encryption

    bundle(crepo, KEY, PUB)
    crepo.write(f"Cfg{KEY}/privkey.xml",
                '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    crepo.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    settings = {"sshkeys__passphrase": "site",
                "encryption__passphrases": {"site": "s3cret pass"}}
    first = paths(cores(crepo, **settings), C1)
    private = ok(first[KEY])
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert sorted(os.listdir(crepo.path / f"Cfg{KEY}")) == [
        f"id_test.H_{C1}.crypt", "privkey.xml"]
    sealed = (crepo.path / f"Cfg{KEY}/id_test.H_{C1}.crypt").read_bytes()
    assert b"PRIVATE KEY" not in sealed
    assert Encryption({"site": "s3cret pass"}).decrypt(sealed)[0].decode() == private
    assert (crepo.path / f"Cfg{PUB}/id_test.pub.H_{C1}").read_text() == ok(first[PUB])
    again = paths(cores(crepo, **settings), C1)  # a restart reads the stored key
    assert (ok(again[KEY]), ok(again[PUB])) == (private, ok(first[PUB]))
    failure = paths(cores(crepo, sshkeys__passphrase="nosuch",
                          encryption__passphrases={"site": "s3cret pass"}), C2)[KEY]
    assert "no passphrase named 'nosuch'" in failure.get("failure")
    assert not (crepo.path / f"Cfg{KEY}/id_test.H_{C2}").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("<PrivateKey><Params type='rsa'", "privkey.xml:1:"),
    ("<PrivateKey>\n  <Params type='dsa'/>\n</PrivateKey>", "privkey.xml:2: key type 'dsa'"),
    ("<PrivateKey>\n\n  <Params bits='12'/>\n</PrivateKey>", "privkey.xml:3: rsa keys have"),
    ("<PublicKey/>", "privkey.xml:1: expected <PrivateKey>"),
])
def test_a_bad_creator_file_fails_only_its_entry_with_file_and_line(
        crepo: Repo, cores, caplog: pytest.LogCaptureFixture, text: str, message: str) -> None:
    bundle(crepo, KEY)
    crepo.write(f"Cfg{KEY}/privkey.xml", text, dedent=False)
    with caplog.at_level(logging.ERROR):
        served = paths(cores(crepo), C1)
    assert ok(served["/etc/motd"]) == "hello\n"
    assert message in served[KEY].get("failure")
    assert message in caplog.text


# -- TLS keys and certificates -------------------------------------------------------

CA_PASSPHRASE = b"ca passphrase"
TLS_KEY, TLS_CERT = "/etc/pki/tls/private/host.key", "/etc/pki/tls/certs/host.crt"


@pytest.fixture
def ca(tmp_path: Path) -> dict[str, object]:
    """A CA laid out as openssl ca wants it: openssl.cnf, encrypted key, certificate."""
    base = tmp_path / "CA"
    (base / "private").mkdir(parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (base / "private/cakey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(CA_PASSPHRASE)))
    (base / "cacert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (base / "openssl.cnf").write_text(f"""\
dir = {base}   # where everything is kept
[ ca ]
default_ca = CA_default
[ CA_default ]
certificate = $dir/cacert.pem
private_key = ${{dir}}/private/cakey.pem
[ req ]
distinguished_name = req_distinguished_name
[ req_distinguished_name ]
countryName_default = NL
0.organizationName_default = "Example Org"
""")
    conf = (f"[sslca_default]\nconfig = {base}/openssl.cnf\n"
            f"passphrase = {CA_PASSPHRASE.decode()}\n")
    return {"cert": cert, "dir": base, "conf": conf}


def tls_repo(repo: Repo, cert_xml: str = "") -> None:
    bundle(repo, TLS_KEY, TLS_CERT)
    repo.write(f"Cfg{TLS_KEY}/sslkey.xml", "<KeyInfo/>")
    repo.write(f"Cfg{TLS_CERT}/sslcert.xml", cert_xml or f"""\
        <CertInfo>
          <subjectAltName>service.example.com</subjectAltName>
          <subjectAltName>192.0.2.7</subjectAltName>
          <Cert key="{TLS_KEY}" days="30" ou="Ops"/>
        </CertInfo>""")


def san(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {
        str(a) for a in ext.get_values_for_type(x509.IPAddress)}


def test_a_certificate_is_issued_by_the_ca_for_the_configured_names(
        crepo: Repo, cores, ca, tmp_path: Path) -> None:
    tls_repo(crepo)
    served = paths(cores(crepo, conf=ca["conf"]), C1)
    key_pem, cert_pem = ok(served[TLS_KEY]).encode(), ok(served[TLS_CERT]).encode()
    assert served[TLS_KEY].get("mode") == "0600"
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca["cert"])
    assert cert.public_key() == key.public_key()
    assert san(cert) == {C1, "www.example.com", "service.example.com", "192.0.2.7"}
    subject = {a.oid: a.value for a in cert.subject}
    assert subject == {NameOID.COMMON_NAME: C1, NameOID.COUNTRY_NAME: "NL",
                       NameOID.ORGANIZATION_NAME: "Example Org",
                       NameOID.ORGANIZATIONAL_UNIT_NAME: "Ops"}
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)
    # the way a TLS client checks it
    from cryptography.x509.verification import DNSName, PolicyBuilder, Store
    PolicyBuilder().store(Store([ca["cert"]])).build_server_verifier(
        DNSName("service.example.com")).verify(cert, [])
    if shutil.which("openssl"):
        (tmp_path / "leaf.pem").write_bytes(cert_pem)
        proc = subprocess.run(["openssl", "verify", "-CAfile", str(ca["dir"] / "cacert.pem"),
                               str(tmp_path / "leaf.pem")], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (crepo.path / f"Cfg{TLS_CERT}/host.crt.H_{C1}").read_bytes() == cert_pem
    assert (crepo.path / f"Cfg{TLS_KEY}/host.key.H_{C1}").read_bytes() == key_pem


def test_a_valid_certificate_is_kept_and_issued_anew_when_names_or_key_change(
        crepo: Repo, cores, ca) -> None:
    tls_repo(crepo)
    core = cores(crepo, conf=ca["conf"])
    first = ok(paths(core, C1)[TLS_CERT])
    assert ok(paths(core, C1)[TLS_CERT]) == first
    assert ok(paths(cores(crepo, conf=ca["conf"]), C1)[TLS_CERT]) == first

    # a new alias: the names changed, so the certificate is issued anew
    rewrite(crepo.path / "Metadata/clients.xml",
            CLIENTS.replace('<Alias name="www.example.com"/>',
                            '<Alias name="www.example.com"/><Alias name="api.example.com"/>'))
    core = cores(crepo, conf=ca["conf"])
    renamed = x509.load_pem_x509_certificate(ok(paths(core, C1)[TLS_CERT]).encode())
    assert "api.example.com" in san(renamed)

    # the key is removed: a new key, and a certificate for it
    (crepo.path / f"Cfg{TLS_KEY}/host.key.H_{C1}").unlink()
    served = paths(cores(crepo, conf=ca["conf"]), C1)
    key = serialization.load_pem_private_key(ok(served[TLS_KEY]).encode(), None)
    assert x509.load_pem_x509_certificate(ok(served[TLS_CERT]).encode()).public_key() == \
        key.public_key()


def test_a_certificate_from_another_ca_is_replaced_and_append_chain_adds_the_ca(
        crepo: Repo, cores, ca) -> None:
    tls_repo(crepo, f'<CertInfo><Cert key="{TLS_KEY}" append_chain="true"/></CertInfo>')
    core = cores(crepo, conf=ca["conf"])
    key_pem = ok(paths(core, C1)[TLS_KEY]).encode()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, C1)])
    now = datetime.datetime.now(datetime.UTC)
    foreign = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(serialization.load_pem_private_key(key_pem, None).public_key())
               .serial_number(5).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=9))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.DNSName(C1), x509.DNSName("www.example.com")]), critical=False)
               .sign(other, hashes.SHA256()))
    crepo.write(f"Cfg{TLS_CERT}/host.crt.H_{C1}", foreign.public_bytes(serialization.Encoding.PEM))
    core = cores(crepo, conf=ca["conf"])
    served = ok(paths(core, C1)[TLS_CERT]).encode()
    chain = x509.load_pem_x509_certificates(served)
    assert len(chain) == 2 and chain[1] == ca["cert"]
    chain[0].verify_directly_issued_by(ca["cert"])


def test_a_ca_key_that_will_not_open_fails_only_the_certificates_and_is_logged_once(
        crepo: Repo, cores, ca, caplog: pytest.LogCaptureFixture) -> None:
    tls_repo(crepo)
    conf = ca["conf"].replace(CA_PASSPHRASE.decode(), "wrong passphrase")
    core = cores(crepo, conf=conf)
    with caplog.at_level(logging.ERROR, logger="bcfg2.plugins.cfg.sslca"):
        for _ in range(2):
            served = paths(core, C1)
            assert ok(served[TLS_KEY]).startswith("-----BEGIN PRIVATE KEY-----")
            assert ok(served["/etc/motd"]) == "hello\n"
            assert "CA default: key" in served[TLS_CERT].get("failure")
    logged = [r for r in caplog.records if r.name == "bcfg2.plugins.cfg.sslca"]
    assert len(logged) == 1 and "cakey.pem cannot be opened" in logged[0].getMessage()
    assert "wrong passphrase" not in caplog.text
    assert not (crepo.path / f"Cfg{TLS_CERT}/host.crt.H_{C1}").exists()


def test_an_unknown_ca_fails_the_certificate_with_the_section_it_needs(crepo: Repo, cores,
                                                                       ca) -> None:
    tls_repo(crepo, f'<CertInfo><Cert key="{TLS_KEY}" ca="other"/></CertInfo>')
    failure = paths(cores(crepo, conf=ca["conf"]), C1)[TLS_CERT].get("failure")
    assert "[sslca_other]" in failure


# -- authorized_keys ------------------------------------------------------------------

def test_authorized_keys_holds_exactly_the_allowed_keys(crepo: Repo, cores) -> None:
    literal = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKcpZCs1Bbzj1yGf1NkzVHEFNtt1H0SG3ru1wV0C6r7W vendor"
    bundle(crepo, PUB, "/root/.ssh/authorized_keys")
    crepo.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    crepo.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    crepo.write("Cfg/root/.ssh/authorized_keys/authorized_keys.xml", f"""\
        <AuthorizedKeys>
          <Allow from="{PUB}" host="{C2}">
            <Option name="command" value='/usr/bin/backup "now"'/>
            <Option name="no-X11-forwarding"/>
          </Allow>
          <Allow from="{PUB}" host="no-such-host.example.com"/>
          <Group name="prod">
            <Allow from="{PUB}" host="{C3}"/>
          </Group>
          <Allow from="{PUB}"><Params no-pty=""/></Allow>
          <Allow>
            {literal}
          </Allow>
        </AuthorizedKeys>""")
    core = cores(crepo)
    lines = ok(paths(core, C1)["/root/.ssh/authorized_keys"]).splitlines()
    own, two = ok(paths(core, C1)[PUB]).strip(), ok(paths(core, C2)[PUB]).strip()
    assert own != two
    assert lines == [f'command="/usr/bin/backup \\"now\\"",no-X11-forwarding {two}',
                     f"no-pty {own}", literal]
    # client3 is in prod: it also allows its own key from the prod block
    three = ok(paths(core, C3)["/root/.ssh/authorized_keys"]).splitlines()
    assert len(three) == 4


def test_a_bad_sshd_option_fails_authorized_keys_with_its_line(crepo: Repo, cores) -> None:
    bundle(crepo, "/root/.ssh/authorized_keys")
    crepo.write("Cfg/root/.ssh/authorized_keys/authorized_keys.xml",
                "<AuthorizedKeys>\n<Allow>\n<Option name='bad name'/>k</Allow>\n</AuthorizedKeys>")
    served = paths(cores(crepo), C1)
    assert "authorized_keys.xml:3: 'bad name' is not an sshd option name" in \
        served["/root/.ssh/authorized_keys"].get("failure")
    assert ok(served["/etc/motd"]) == "hello\n"


def test_openssl_config_variables_are_expanded(tmp_path: Path) -> None:
    from bcfg2.plugins.cfg.sslca import read_openssl_config
    (tmp_path / "c.cnf").write_text(
        "top = /srv\n[ a ]\ndir = $top/ca\nkey = ${dir}/k # comment\n"
        "[ b ]\nother = $a::dir/x\nhome = $ENV::HOME_FOR_TEST\n")
    os.environ["HOME_FOR_TEST"] = "/home/t"
    try:
        sections = read_openssl_config(str(tmp_path / "c.cnf"))
    finally:
        del os.environ["HOME_FOR_TEST"]
    assert sections["a"] == {"dir": "/srv/ca", "key": "/srv/ca/k"}
    assert sections["b"] == {"other": "/srv/ca/x", "home": "/home/t"}


def test_an_expired_certificate_is_issued_anew(crepo: Repo, cores, ca) -> None:
    tls_repo(crepo, f'<CertInfo><Cert key="{TLS_KEY}"/></CertInfo>')
    core = cores(crepo, conf=ca["conf"])
    served = paths(core, C1)
    key = serialization.load_pem_private_key(ok(served[TLS_KEY]).encode(), None)
    current = x509.load_pem_x509_certificate(ok(served[TLS_CERT]).encode())
    ca_key = serialization.load_pem_private_key(
        (ca["dir"] / "private/cakey.pem").read_bytes(), CA_PASSPHRASE)
    now = datetime.datetime.now(datetime.UTC)
    expired = (x509.CertificateBuilder().subject_name(current.subject)
               .issuer_name(ca["cert"].subject).public_key(key.public_key()).serial_number(7)
               .not_valid_before(now - datetime.timedelta(days=10))
               .not_valid_after(now - datetime.timedelta(days=1))
               .add_extension(current.extensions.get_extension_for_class(
                   x509.SubjectAlternativeName).value, critical=False)
               .sign(ca_key, hashes.SHA256()))
    crepo.write(f"Cfg{TLS_CERT}/host.crt.H_{C1}", expired.public_bytes(serialization.Encoding.PEM))
    renewed = x509.load_pem_x509_certificate(
        ok(paths(cores(crepo, conf=ca["conf"]), C1)[TLS_CERT]).encode())
    assert renewed.serial_number != 7 and renewed.not_valid_after_utc > now
    assert san(renewed) == san(current)

"""Generated secrets once for a fleet: servers with their own checkouts on one PostgreSQL.

Two LocalCores, each over its own copy of one repository and its own state
directory, share a PostgreSQL database (``tests/pg.py``). Asked at the same
moment for the same host's key, they mint one and serve the same bytes; a
server whose checkout lacks a file another server generated writes it from
the ``generated_files`` table on first use.
"""

from __future__ import annotations

import datetime
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PLUGINS, Repo, make_setup
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bcfg2.core import LocalCore
from bcfg2.encryption import Encryption
from bcfg2.generated import SharedFiles, shared_files
from bcfg2.plugins.cfg import creators

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                  reason="ssh-keygen is not installed")

CLIENTS = """\
<Clients version="3.0">
  <Client name="client1.example.com" profile="basic"/>
  <Client name="client2.example.com" profile="basic"/>
</Clients>
"""
GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"><Bundle name="base"/></Group>
</Groups>
"""
C1 = "client1.example.com"
SSH_KEY, SSH_PUB = "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"
KEY, PUB = "/root/.ssh/id_test", "/root/.ssh/id_test.pub"
TLS_KEY, TLS_CERT = "/etc/pki/tls/private/site.key", "/etc/pki/tls/certs/site.crt"
SECRETS = {"sshkeys__passphrase": "site", "encryption__passphrases": {"site": "s3cret pass"}}


def write_repo(repo: Repo, *paths: str) -> None:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Bundler/base.xml", "<Bundle>\n" + "".join(
        f'<Path name="{path}"/>\n' for path in paths) + "</Bundle>\n")
    repo.mkdir("SSHbase")


@pytest.fixture
def fleet(tmp_path: Path, pg_database: Any) -> Iterator[Callable[..., LocalCore]]:
    """Factory: server N over checkout N (a copy of ``tmp_path/origin``) on the test's
    PostgreSQL database, with its own state directory and server name."""
    made: list[LocalCore] = []

    def server(number: int, conf: str = "", **overrides: Any) -> LocalCore:
        checkout = tmp_path / f"checkout{number}"
        if not checkout.exists():
            shutil.copytree(tmp_path / "origin", checkout)
        setup = make_setup(checkout, tmp_path / f"state{number}",
                           server__plugins=PLUGINS + ",SSHbase",
                           server__name=f"server{number}", **pg_database.overrides,
                           **overrides)
        if conf:
            setup.raw.read_string(conf)
        core = LocalCore(setup)
        made.append(core)
        return core

    yield server
    for core in made:
        core.shutdown()


def served(core: LocalCore, client: str = C1) -> dict[str, str]:
    config = core.BuildConfiguration(client)
    out = {}
    for entry in config.iter("Path"):
        assert "failure" not in entry.attrib, entry.get("failure")
        out[entry.get("name")] = entry.text
    return out


def at_once(*cores: LocalCore) -> list[dict[str, str]]:
    """What each core serves client1 when all are asked at the same moment."""
    barrier = threading.Barrier(len(cores), timeout=30)
    results: list[dict[str, str] | BaseException] = [RuntimeError("no answer")] * len(cores)

    def build(index: int) -> None:
        barrier.wait()
        try:
            results[index] = served(cores[index])
        except BaseException as err:  # reported by the test, not lost in the thread
            results[index] = err

    threads = [threading.Thread(target=build, args=(i,)) for i in range(len(cores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def table(pg_database: Any) -> dict[str, tuple[bytes, int, str]]:
    return {path: (bytes(content), mode, server) for path, content, mode, server in
            pg_database.query("SELECT path, content, mode, server FROM generated_files")}


@needs_keygen
def test_two_servers_asked_at_once_mint_one_ssh_host_key(tmp_path: Path, fleet,
                                                         pg_database: Any) -> None:
    write_repo(Repo(tmp_path / "origin"), SSH_KEY, SSH_PUB)
    one, two = fleet(1), fleet(2)
    first, second = at_once(one, two)
    assert first[SSH_KEY].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (first[SSH_KEY], first[SSH_PUB]) == (second[SSH_KEY], second[SSH_PUB])
    names = [f"SSHbase/ssh_host_ed25519_key.H_{C1}", f"SSHbase/ssh_host_ed25519_key.pub.H_{C1}"]
    for number in (1, 2):
        checkout = tmp_path / f"checkout{number}"
        assert (checkout / names[0]).read_text() == first[SSH_KEY]
        assert (checkout / names[1]).read_text() == first[SSH_PUB]
        assert (checkout / names[0]).stat().st_mode & 0o777 == 0o600
    recorded = table(pg_database)
    assert sorted(recorded) == sorted(names)
    assert recorded[names[0]][:2] == (first[SSH_KEY].encode(), 0o600)
    assert len({server for _, _, server in recorded.values()}) == 1  # one server made both
    # another host gets a key of its own, and a third server started later serves both
    other = served(two, "client2.example.com")[SSH_KEY]
    assert other != first[SSH_KEY]
    three = fleet(3)
    assert served(three)[SSH_KEY] == first[SSH_KEY]
    assert served(three, "client2.example.com")[SSH_KEY] == other


def test_two_servers_asked_at_once_mint_one_encrypted_cfg_key(
        tmp_path: Path, fleet, pg_database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = Repo(tmp_path / "origin")
    write_repo(origin, KEY, PUB)
    origin.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    origin.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    made: list[str] = []
    real = creators.new_private_key

    def counted(kind: str, bits: int) -> Any:
        made.append(kind)
        return real(kind, bits)
    monkeypatch.setattr(creators, "new_private_key", counted)
    one, two = fleet(1, **SECRETS), fleet(2, **SECRETS)
    first, second = at_once(one, two)
    assert made == ["ed25519"]
    assert (first[KEY], first[PUB]) == (second[KEY], second[PUB])
    sealed = f"Cfg{KEY}/id_test.H_{C1}.crypt"
    assert (tmp_path / "checkout1" / sealed).read_bytes() == \
        (tmp_path / "checkout2" / sealed).read_bytes()
    assert not (tmp_path / "checkout2" / f"Cfg{KEY}/id_test.H_{C1}").exists()
    recorded = table(pg_database)
    assert sorted(recorded) == sorted([sealed, f"Cfg{PUB}/id_test.pub.H_{C1}"])
    assert b"PRIVATE KEY" not in recorded[sealed][0]  # the table holds what is on disk
    assert Encryption({"site": "s3cret pass"}).decrypt(recorded[sealed][0])[0].decode() == \
        first[KEY]


def test_a_server_whose_checkout_lacks_a_generated_tls_key_and_cert_writes_them(
        tmp_path: Path, fleet, pg_database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = Repo(tmp_path / "origin")
    write_repo(origin, TLS_KEY, TLS_CERT)
    origin.write(f"Cfg{TLS_KEY}/sslkey.xml", "<KeyInfo/>")
    origin.write(f"Cfg{TLS_CERT}/sslcert.xml",
                 f'<CertInfo><Cert key="{TLS_KEY}" days="30"/></CertInfo>')
    conf = make_ca(tmp_path / "CA")
    first = served(fleet(1, conf=conf))
    assert first[TLS_CERT].startswith("-----BEGIN CERTIFICATE-----")
    key_file = f"Cfg{TLS_KEY}/site.key.H_{C1}"
    cert_file = f"Cfg{TLS_CERT}/site.crt.H_{C1}"
    assert not (tmp_path / "checkout2" / key_file).exists()
    monkeypatch.setattr(creators, "new_private_key", None)  # a generation would fail
    second = served(fleet(2, conf=conf))
    assert (second[TLS_KEY], second[TLS_CERT]) == (first[TLS_KEY], first[TLS_CERT])
    assert (tmp_path / "checkout2" / key_file).read_text() == first[TLS_KEY]
    assert (tmp_path / "checkout2" / cert_file).read_text() == first[TLS_CERT]
    assert {server for _, _, server in table(pg_database).values()} == {"server1"}
    assert sorted(table(pg_database)) == sorted([key_file, cert_file])


def make_ca(base: Path) -> str:
    """A CA as openssl ca lays it out; the bcfg2.conf text naming it."""
    (base / "private").mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fleet CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (base / "private/cakey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (base / "cacert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (base / "openssl.cnf").write_text(
        f"dir = {base}\n[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\n"
        "certificate = $dir/cacert.pem\nprivate_key = $dir/private/cakey.pem\n")
    return f"[sslca_default]\nconfig = {base}/openssl.cnf\n"


def test_with_sqlite_nothing_is_shared(tmp_path: Path, repo: Repo) -> None:
    assert shared_files(make_setup(repo)) is None


def test_a_path_from_the_table_never_leaves_the_repository(tmp_path: Path) -> None:
    files = SharedFiles.__new__(SharedFiles)
    files.repository = str(tmp_path)
    assert files.absolute("Cfg/a/b.H_x") == str(tmp_path / "Cfg/a/b.H_x")
    for bad in ("../outside", "/etc/passwd", "Cfg/../../x", ""):
        with pytest.raises(ValueError):
            files.absolute(bad)
    with pytest.raises(ValueError):
        files.relative("/etc/passwd")


@needs_keygen
def test_a_table_that_cannot_be_read_fails_only_the_keys_still_to_generate(
        tmp_path: Path, fleet, pg_database: Any) -> None:
    write_repo(Repo(tmp_path / "origin"), SSH_KEY, SSH_PUB, "/etc/ssh/ssh_known_hosts")
    one = fleet(1)
    before = served(one)
    pg_database.query("ALTER TABLE generated_files RENAME TO generated_files_away")
    config = one.BuildConfiguration("client2.example.com")
    entries = {entry.get("name"): entry for entry in config.iter("Path")}
    failure = entries[SSH_KEY].get("failure") or ""
    assert "the ed25519 host key of client2.example.com" in failure
    assert 'relation "generated_files" does not exist' in failure
    assert "failure" not in entries["/etc/ssh/ssh_known_hosts"].attrib
    assert not list((tmp_path / "checkout1" / "SSHbase").glob("*client2*"))  # nothing written
    assert served(one)[SSH_KEY] == before[SSH_KEY]  # keys on disk are served as before
    pg_database.query("ALTER TABLE generated_files_away RENAME TO generated_files")
    assert served(one, "client2.example.com")[SSH_KEY] != before[SSH_KEY]

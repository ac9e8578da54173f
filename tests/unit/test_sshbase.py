"""SSHbase: host keys generated once per host, and ssh_known_hosts."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import PLUGINS, Repo, rewrite, wait_until

from bcfg2.core import LocalCore
from bcfg2.errors import PluginExecutionError
from bcfg2.plugins import sshbase

Factory = Callable[..., LocalCore]

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                  reason="ssh-keygen is not installed")

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Bundle name="ssh"/>
  </Group>
  <Group name="other" profile="true">
    <Bundle name="ssh"/>
  </Group>
</Groups>
"""

CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" address="10.0.0.1">
    <Alias name="www.example.com" address="10.0.0.80"/>
  </Client>
  <Client name="client2" profile="other"/>
</Clients>
"""

SSH_PATHS = ("/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub",
             "/etc/ssh/ssh_known_hosts")


class FakeDNS:
    """What DNS says in these tests (no test asks the real one): names and addresses."""

    def __init__(self) -> None:
        self.forward: dict[str, str] = {}
        self.reverse: dict[str, tuple[str, ...]] = {}
        self.asked: list[str] = []
        #: set to make every look-up wait for it (a DNS server that does not answer)
        self.hold: threading.Event | None = None

    def lookup(self, table: dict, key: str) -> tuple[str, ...]:
        self.asked.append(key)
        if self.hold is not None:
            self.hold.wait(30)
        if key not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        value = table[key]
        return (value,) if isinstance(value, str) else value


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(sshbase, "forward_lookup", lambda name: fake.lookup(fake.forward, name))
    monkeypatch.setattr(sshbase, "reverse_lookup",
                        lambda address: fake.lookup(fake.reverse, address))
    yield fake
    if fake.hold is not None:
        fake.hold.set()


@pytest.fixture
def ssh_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Bundler/ssh.xml", "<Bundle>\n" + "".join(
        f'<Path name="{path}"/>\n' for path in SSH_PATHS) + "</Bundle>\n")
    repo.mkdir("SSHbase")
    return repo


def make_core(local_core: Factory, repo: Repo) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",SSHbase")


def paths(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    config = core.BuildConfiguration(client)
    return {el.get("name"): el for el in config.iter("Path")}


@needs_keygen
def test_key_generated_once_and_reused(ssh_repo: Repo, local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    first = paths(core, "client1")
    key = first["/etc/ssh/ssh_host_ed25519_key"]
    pub = first["/etc/ssh/ssh_host_ed25519_key.pub"]
    assert "failure" not in key.attrib and "failure" not in pub.attrib
    assert key.text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pub.text.startswith("ssh-ed25519 ")
    assert (key.get("mode"), key.get("sensitive")) == ("0600", "true")
    assert pub.get("mode") == "0644"

    again = paths(core, "client1")
    assert again["/etc/ssh/ssh_host_ed25519_key"].text == key.text
    restarted = paths(make_core(local_core, ssh_repo), "client1")
    assert restarted["/etc/ssh/ssh_host_ed25519_key"].text == key.text
    assert restarted["/etc/ssh/ssh_host_ed25519_key.pub"].text == pub.text


@needs_keygen
def test_an_admin_regenerates_a_hosts_keys(ssh_repo: Repo, local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    old = paths(core, "client1")["/etc/ssh/ssh_host_ed25519_key.pub"].text
    other = paths(core, "client2")["/etc/ssh/ssh_host_ed25519_key.pub"].text
    made = core.rmi["SSHbase.regenerate_keys"]("client1")
    assert "ed25519" in made
    new = paths(core, "client1")["/etc/ssh/ssh_host_ed25519_key.pub"].text
    assert new.startswith("ssh-ed25519 ") and new != old
    assert paths(core, "client2")["/etc/ssh/ssh_host_ed25519_key.pub"].text == other
    assert core.rmi["SSHbase.regenerate_keys"]("nokeys.example.com") == []
    with pytest.raises(PluginExecutionError):
        core.rmi["SSHbase.regenerate_keys"]("../client1")


@needs_keygen
def test_keys_stored_with_upstream_names_and_private_mode(ssh_repo: Repo,
                                                          local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    served = paths(core, "client1")
    private = ssh_repo.path / "SSHbase" / "ssh_host_ed25519_key.H_client1"
    public = ssh_repo.path / "SSHbase" / "ssh_host_ed25519_key.pub.H_client1"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text() == served["/etc/ssh/ssh_host_ed25519_key"].text
    assert public.read_text() == served["/etc/ssh/ssh_host_ed25519_key.pub"].text
    # nothing else is left behind (no temporary directory, no other key type)
    assert sorted(os.listdir(ssh_repo.path / "SSHbase")) == [
        "ssh_host_ed25519_key.H_client1", "ssh_host_ed25519_key.pub.H_client1"]


@needs_keygen
def test_hosts_get_different_keys_and_known_hosts_lists_both(ssh_repo: Repo,
                                                             local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    one = paths(core, "client1")
    two = paths(core, "client2")
    assert one["/etc/ssh/ssh_host_ed25519_key"].text != two["/etc/ssh/ssh_host_ed25519_key"].text
    pub1 = one["/etc/ssh/ssh_host_ed25519_key.pub"].text.strip()
    pub2 = two["/etc/ssh/ssh_host_ed25519_key.pub"].text.strip()

    lines = paths(core, "client2")["/etc/ssh/ssh_known_hosts"].text.splitlines()
    assert f"10.0.0.1,10.0.0.80,client1,www,www.example.com {pub1}" in lines
    assert f"client2 {pub2}" in lines
    assert f"localhost,localhost.localdomain,127.0.0.1 {pub2}" in lines
    assert f"localhost,localhost.localdomain,127.0.0.1 {pub1}" not in lines


@needs_keygen
def test_known_hosts_follows_key_and_static_file_changes(ssh_repo: Repo,
                                                         local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    paths(core, "client1")
    ssh_repo.write("SSHbase/ssh_host_rsa_key.pub.H_unmanaged", "ssh-rsa AAAAseeded\n")
    ssh_repo.write("SSHbase/a.static", "static.example.com ssh-rsa AAAAstatic\n")
    core.refresh()
    lines = paths(core, "client2")["/etc/ssh/ssh_known_hosts"].text.splitlines()
    assert "unmanaged ssh-rsa AAAAseeded" in lines
    assert "static.example.com ssh-rsa AAAAstatic" in lines

    os.unlink(ssh_repo.path / "SSHbase" / "ssh_host_ed25519_key.pub.H_client1")
    os.unlink(ssh_repo.path / "SSHbase" / "ssh_host_ed25519_key.H_client1")
    core.refresh()
    known = paths(core, "client2")["/etc/ssh/ssh_known_hosts"].text
    assert not any("client1," in line for line in known.splitlines())


@needs_keygen
def test_known_hosts_follows_client_changes(ssh_repo: Repo, local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    paths(core, "client1")
    pub = paths(core, "client2")["/etc/ssh/ssh_host_ed25519_key.pub"].text.strip()
    core.refresh()  # the monitor reports the new key files
    assert f"client2 {pub}" in paths(core, "client1")["/etc/ssh/ssh_known_hosts"].text
    rewrite(ssh_repo.path / "Metadata" / "clients.xml", CLIENTS.replace(
        '<Client name="client2" profile="other"/>',
        '<Client name="client2" profile="other"><Alias name="db.example.com"/></Client>'))
    core.refresh()
    lines = paths(core, "client1")["/etc/ssh/ssh_known_hosts"].text.splitlines()
    assert f"client2,db,db.example.com {pub}" in lines


@needs_keygen
def test_concurrent_requests_generate_one_key(ssh_repo: Repo, local_core: Factory) -> None:
    core = make_core(local_core, ssh_repo)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def build() -> None:
        barrier.wait()
        results.append(paths(core, "client1")["/etc/ssh/ssh_host_ed25519_key"].text)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    stored = (ssh_repo.path / "SSHbase" / "ssh_host_ed25519_key.H_client1").read_text()
    assert results[0] == stored


def test_preseeded_key_and_info_xml_are_served(ssh_repo: Repo, local_core: Factory) -> None:
    ssh_repo.write("SSHbase/ssh_host_ed25519_key.H_client1", "PRIVATE\n")
    ssh_repo.write("SSHbase/ssh_host_ed25519_key.pub.H_client1", "ssh-ed25519 AAAApub\n")
    ssh_repo.write("SSHbase/info.xml", """\
        <FileInfo>
          <Path name="/etc/ssh/ssh_host_ed25519_key">
            <Info owner="root" group="wheel" mode="0640"/>
          </Path>
        </FileInfo>
        """)
    core = make_core(local_core, ssh_repo)
    served = paths(core, "client1")
    key = served["/etc/ssh/ssh_host_ed25519_key"]
    assert key.text == "PRIVATE\n"
    assert (key.get("group"), key.get("mode")) == ("wheel", "0640")
    assert served["/etc/ssh/ssh_host_ed25519_key.pub"].get("mode") == "0644"


def test_static_known_hosts_for_a_host(ssh_repo: Repo, local_core: Factory) -> None:
    ssh_repo.write("SSHbase/ssh_known_hosts.H_client1", "fixed ssh-rsa AAAA\n")
    core = make_core(local_core, ssh_repo)
    assert paths(core, "client1")["/etc/ssh/ssh_known_hosts"].text == "fixed ssh-rsa AAAA\n"


def test_missing_keygen_fails_only_key_entries(ssh_repo: Repo, local_core: Factory,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_repo.write("Bundler/ssh.xml", "<Bundle>\n" + "".join(
        f'<Path name="{path}"/>\n' for path in SSH_PATHS) + '<Path name="/etc/motd"/>\n'
        "</Bundle>\n")
    ssh_repo.write("Cfg/etc/motd/motd", "hello\n")
    core = make_core(local_core, ssh_repo)
    monkeypatch.setenv("PATH", str(ssh_repo.path / "no-such-bin"))
    served = paths(core, "client1")
    for name in SSH_PATHS[:2]:
        assert "ssh-keygen is not installed" in served[name].get("failure")
    assert "failure" not in served["/etc/ssh/ssh_known_hosts"].attrib
    assert served["/etc/motd"].text == "hello\n"
    assert os.listdir(ssh_repo.path / "SSHbase") == []


#: host names that only look like client1's: a trailing newline, a control character
LOOKALIKES = ("client1\n", "client1\x7f", "client1\n\n")


def test_key_files_of_a_lookalike_name_are_no_keys_of_the_victim(
        ssh_repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    """``ssh_host_*.H_client1\\n`` (a file name may hold a newline) is ignored, not client1's."""
    ssh_repo.write("SSHbase/ssh_host_ed25519_key.H_client1", "VICTIM-PRIVATE\n")
    ssh_repo.write("SSHbase/ssh_host_ed25519_key.pub.H_client1", "ssh-ed25519 AAAAvictim\n")
    ssh_repo.write("SSHbase/ssh_host_ed25519_key.pub.H_client2", "ssh-ed25519 AAAAtwo\n")
    ssh_repo.write("SSHbase/ssh_host_ed25519_key.H_client2", "TWO-PRIVATE\n")
    for n, name in enumerate(LOOKALIKES):
        ssh_repo.write(f"SSHbase/ssh_host_ed25519_key.H_{name}", f"IMPOSTOR{n}-PRIVATE\n")
        ssh_repo.write(f"SSHbase/ssh_host_ed25519_key.pub.H_{name}",
                       f"ssh-ed25519 AAAAimpostor{n}\n")
    core = make_core(local_core, ssh_repo)
    victim = paths(core, "client1")
    assert all("failure" not in victim[name].attrib for name in SSH_PATHS)
    assert victim["/etc/ssh/ssh_host_ed25519_key"].text == "VICTIM-PRIVATE\n"
    assert victim["/etc/ssh/ssh_host_ed25519_key.pub"].text == "ssh-ed25519 AAAAvictim\n"
    for client in ("client1", "client2"):
        known = paths(core, client)["/etc/ssh/ssh_known_hosts"].text
        assert "impostor" not in known.lower()
        assert [line for line in known.splitlines() if "AAAAvictim" in line
                and not line.startswith("localhost,")] == [
            "10.0.0.1,10.0.0.80,client1,www,www.example.com ssh-ed25519 AAAAvictim"]
    assert "ssh_host_ed25519_key.H_client1\\n" in caplog.text  # logged escaped, on one line


@pytest.mark.parametrize("name", LOOKALIKES)
def test_no_keys_are_generated_for_a_lookalike_name(ssh_repo: Repo, local_core: Factory,
                                                    name: str) -> None:
    core = make_core(local_core, ssh_repo)
    with pytest.raises(PluginExecutionError, match="refusing to store keys"):
        core.plugins["SSHbase"].generate_keys(name, "ed25519")
    assert os.listdir(ssh_repo.path / "SSHbase") == []


# -- the names of ssh_known_hosts, as Bcfg2 1.4 writes them ---------------------------

LUCID_CLIENTS = """\
<Clients version="3.0">
  <Client name="lucid1.example.com" profile="basic"/>
  <Client name="web1.example.com" profile="other" address="192.0.2.10">
    <Alias name="www.example.com" address="192.0.2.80"/>
  </Client>
  <Client name="db1.example.com" profile="other"/>
</Clients>
"""

CLUSTER_GROUPS = GROUPS.replace("</Groups>", """\
  <Client name="web1.example.com"><Group name="cluster"/></Client>
  <Client name="db1.example.com"><Group name="cluster"/></Client>
</Groups>""")


@pytest.fixture
def lucid_repo(ssh_repo: Repo) -> Repo:
    ssh_repo.write("Metadata/groups.xml", CLUSTER_GROUPS)
    ssh_repo.write("Metadata/clients.xml", LUCID_CLIENTS)
    ssh_repo.write("Bundler/ssh.xml",
                   '<Bundle><Path name="/etc/ssh/ssh_known_hosts"/></Bundle>\n')
    for host in ("lucid1.example.com", "web1.example.com"):
        ssh_repo.write(f"SSHbase/ssh_host_dsa_key.pub.H_{host}", f"ssh-dss AAAA{host[:4]}\n")
    return ssh_repo


def known_hosts(core: LocalCore, client: str = "lucid1.example.com") -> list[str]:
    entry = paths(core, client)["/etc/ssh/ssh_known_hosts"]
    assert "failure" not in entry.attrib
    return [line for line in entry.text.splitlines() if not line.startswith("localhost,")]


def test_known_hosts_lists_short_names_aliases_and_addresses(lucid_repo: Repo,
                                                             local_core: Factory,
                                                             dns: FakeDNS) -> None:
    core = make_core(local_core, lucid_repo)
    assert known_hosts(core) == [
        "lucid1,lucid1.example.com ssh-dss AAAAluci",
        "192.0.2.10,192.0.2.80,web1,web1.example.com,www,www.example.com ssh-dss AAAAweb1"]
    assert set(dns.asked) == {"lucid1.example.com", "web1.example.com", "www.example.com"}


def test_known_hosts_adds_what_dns_says(lucid_repo: Repo, local_core: Factory,
                                        dns: FakeDNS) -> None:
    dns.forward["lucid1.example.com"] = "198.51.100.7"
    dns.reverse["198.51.100.7"] = ("lucid1.example.com.", "lucid-old.example.com",
                                   "bad name,with comma")
    dns.forward["www.example.com"] = "192.0.2.80"  # already in clients.xml: listed once
    dns.reverse["192.0.2.80"] = ("www.example.com",)
    core = make_core(local_core, lucid_repo)
    assert known_hosts(core) == [
        "198.51.100.7,lucid-old.example.com,lucid1,lucid1.example.com ssh-dss AAAAluci",
        "192.0.2.10,192.0.2.80,web1,web1.example.com,www,www.example.com ssh-dss AAAAweb1"]
    asked = len(dns.asked)
    # answers are cached: a rebuild (a new key) asks DNS nothing
    lucid_repo.write("SSHbase/ssh_host_rsa_key.pub.H_db1.example.com", "ssh-rsa AAAAdb1\n")
    core.refresh()
    assert "db1,db1.example.com ssh-rsa AAAAdb1" in known_hosts(core)
    assert set(dns.asked[asked:]) == {"db1.example.com"}


def test_group_keys_are_listed_under_every_member(lucid_repo: Repo, local_core: Factory) -> None:
    lucid_repo.write("SSHbase/ssh_host_rsa_key.pub.G50_cluster", "ssh-rsa AAAAcluster\n")
    lucid_repo.write("SSHbase/ssh_host_rsa_key.pub.G50_nobody", "ssh-rsa AAAAnobody\n")
    core = make_core(local_core, lucid_repo)
    lines = known_hosts(core)
    assert "db1,db1.example.com,192.0.2.10,192.0.2.80,web1,web1.example.com,www," \
           "www.example.com ssh-rsa AAAAcluster" in lines
    assert not any("AAAAnobody" in line for line in lines)


def test_dns_that_does_not_answer_delays_a_build_at_most_dns_timeout(
        lucid_repo: Repo, local_core: Factory, dns: FakeDNS) -> None:
    dns.forward["lucid1.example.com"] = "198.51.100.7"
    dns.hold = threading.Event()
    core = local_core(lucid_repo, server__plugins=PLUGINS + ",SSHbase",
                      sshbase__dns_timeout="0.2")
    started = time.monotonic()
    assert known_hosts(core)[0] == "lucid1,lucid1.example.com ssh-dss AAAAluci"
    assert time.monotonic() - started < 5
    dns.hold.set()  # the answers come in: the next build has them, without any other change
    wait_until(lambda: "198.51.100.7,lucid1,lucid1.example.com ssh-dss AAAAluci"
               in known_hosts(core), 10, "the late DNS answer in ssh_known_hosts")


def test_dns_can_be_turned_off(lucid_repo: Repo, local_core: Factory, dns: FakeDNS) -> None:
    dns.forward["lucid1.example.com"] = "198.51.100.7"
    core = local_core(lucid_repo, server__plugins=PLUGINS + ",SSHbase", sshbase__dns="false")
    assert known_hosts(core)[0] == "lucid1,lucid1.example.com ssh-dss AAAAluci"
    assert dns.asked == []

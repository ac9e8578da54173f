"""Cfg creators through network cores: keys made once, served alike by every core."""

from __future__ import annotations

import os
import threading

import lxml.etree
from conftest import Repo
from cryptography.hazmat.primitives import serialization

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"><Bundle name="keys"/></Group>
</Groups>
"""
CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1"/>
  <Client name="client2" profile="basic" uuid="uuid-client2" password="pw2"/>
</Clients>
"""
KEY, PUB = "/root/.ssh/id_ed25519", "/root/.ssh/id_ed25519.pub"


def key_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.write("Bundler/keys.xml", f'<Bundle><Path name="{KEY}"/><Path name="{PUB}"/></Bundle>')
    repo.write(f"Cfg{KEY}/privkey.xml", '<PrivateKey><Params type="ed25519"/></PrivateKey>')
    repo.write(f"Cfg{PUB}/pubkey.xml", "<PublicKey/>")
    return repo


def keys(server, uuid: str, password: str) -> tuple[str, str]:
    """(private, public) key an agent run receives."""
    config = lxml.etree.fromstring(server.proxy(uuid, password).GetConfig().encode())
    entries = {el.get("name"): el for el in config.iter("Path")}
    for name in (KEY, PUB):
        assert "failure" not in entries[name].attrib, entries[name].get("failure")
    return entries[KEY].text, entries[PUB].text


def test_an_agent_run_through_the_builtin_core_gets_a_key_kept_across_restarts(
        repo: Repo, network_server) -> None:
    key_repo(repo)
    server = network_server(repo, core="builtin")
    private, public = keys(server, "uuid-client1", "pw1")
    key = serialization.load_ssh_private_key(private.encode(), None)
    assert public.split()[:2] == key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode().split()
    assert keys(server, "uuid-client1", "pw1") == (private, public)
    server.stop()
    assert keys(network_server(repo, core="builtin"), "uuid-client1", "pw1") == (private, public)


def test_concurrent_runs_through_the_multiprocessing_core_make_one_key(
        repo: Repo, network_server) -> None:
    key_repo(repo)
    server = network_server(repo, core="multiprocessing", server__children="2",
                            server__filemonitor="inotify")
    start = threading.Barrier(2, timeout=60)
    results: list[tuple[str, str]] = []

    def run() -> None:
        start.wait()
        results.append(keys(server, "uuid-client1", "pw1"))
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and results[0] == results[1]
    assert sorted(os.listdir(repo.path / f"Cfg{KEY}")) == ["id_ed25519.H_client1", "privkey.xml"]
    assert keys(server, "uuid-client2", "pw2") != results[0]
    # another core over the same repository serves the same bytes
    assert keys(network_server(repo, core="builtin"), "uuid-client1", "pw1") == results[0]

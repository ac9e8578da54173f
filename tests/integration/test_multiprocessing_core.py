"""The multiprocessing core: rendering in children, children dying, stopping, freshness."""

from __future__ import annotations

import os
import signal
import threading
import time
import xmlrpc.client

import lxml.etree
import pytest
from conftest import Repo, RunningServer

WEB1 = ("5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret")
DB1 = ("5c3f7a62-9d0e-4c1b-8f53-db1", "db1-secret")


def start(network_server, repo: Repo, **overrides) -> RunningServer:
    overrides.setdefault("server__children", "2")
    return network_server(repo, core="multiprocessing", server__filemonitor="inotify",
                          **overrides)


def ready_children(server: RunningServer, count: int) -> list:
    """The children, once ``count`` of them have loaded the repository (bounded wait)."""
    core = server.core
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = [c for c in core.pool() if c.ready and c.process.is_alive()]
        if len(children) == count:
            return children
        # children report ready on their pipe; this waits on their processes, not a clock
        alive = [c.process.sentinel for c in core.pool()]
        from multiprocessing.connection import wait
        wait(alive, timeout=0.1)
    raise AssertionError(f"the pool did not reach {count} ready children")


def test_configurations_are_rendered_by_children_and_match_the_builtin_core(
        example_repo: Repo, network_server) -> None:
    mp = start(network_server, example_repo)
    builtin = network_server(example_repo, core="builtin")
    for who in (WEB1, DB1):
        assert mp.proxy(*who).GetConfig() == builtin.proxy(*who).GetConfig()
    pids = {c.process.pid for c in ready_children(mp, 2)}
    assert len(pids) == 2 and os.getpid() not in pids


def test_a_child_killed_while_holding_a_request_is_replaced_and_the_request_answered(
        example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo)
    core = server.core
    ready_children(server, 2)
    rpc = core.rpc
    killed: list[int] = []

    def kill_then_call(child, method, *args, **kwargs):
        if method == "GetConfig" and not killed:
            os.kill(child.process.pid, signal.SIGKILL)  # dies holding this request
            child.process.join(10)
            killed.append(child.process.pid)
        return rpc(child, method, *args, **kwargs)

    core.rpc = kill_then_call
    config = lxml.etree.fromstring(server.proxy(*WEB1).GetConfig().encode())
    assert config.tag == "Configuration" and not config.xpath("//*[@failure]")
    assert killed
    children = ready_children(server, 2)  # the pool is whole again
    assert killed[0] not in {c.process.pid for c in children}


def test_no_request_hangs_when_every_child_fails(example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo)
    core = server.core
    ready_children(server, 2)
    rpc = core.rpc

    def always_kill(child, method, *args, **kwargs):
        if method == "GetConfig":
            os.kill(child.process.pid, signal.SIGKILL)
            child.process.join(10)
        return rpc(child, method, *args, **kwargs)

    core.rpc = always_kill
    with pytest.raises(xmlrpc.client.Fault) as info:
        server.proxy(*WEB1).GetConfig()
    assert info.value.faultCode == -32500
    core.rpc = rpc
    ready_children(server, 2)
    assert lxml.etree.fromstring(server.proxy(*WEB1).GetConfig().encode()).tag == "Configuration"


def test_an_idle_child_that_dies_is_replaced(example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo)
    victim = ready_children(server, 2)[0]
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.join(10)
    children = ready_children(server, 2)
    assert victim.process.pid not in {c.process.pid for c in children}
    assert server.proxy(*WEB1).GetConfig()


def test_an_edit_is_seen_by_the_very_next_request(example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo)
    ready_children(server, 2)
    for n in range(6):  # both children, several times: no waiting between edit and request
        text = f"edit {n}\n"
        (example_repo.path / "Cfg/etc/motd/motd.G10_web").write_text(text)
        config = lxml.etree.fromstring(server.proxy(*WEB1).GetConfig().encode())
        assert config.xpath("//Path[@name='/etc/motd']")[0].text == text


def test_a_profile_asserted_in_the_parent_is_used_by_the_children(example_repo: Repo,
                                                                  network_server) -> None:
    server = start(network_server, example_repo)
    agent = server.proxy(*WEB1)
    assert agent.AssertProfile("dbserver") is True
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    sshd = config.xpath("//Path[@name='/etc/ssh/sshd_config']")[0]
    assert "RHEL flavour" in sshd.text


def test_concurrent_runs_each_get_their_own_configuration(example_repo: Repo,
                                                          network_server) -> None:
    server = start(network_server, example_repo)
    expected = {who: server.proxy(*who).GetConfig() for who in (WEB1, DB1)}
    assert expected[WEB1] != expected[DB1]
    results: list[bool] = []

    def run(who) -> None:
        for _ in range(3):
            results.append(server.proxy(*who).GetConfig() == expected[who])

    threads = [threading.Thread(target=run, args=(who,)) for who in (WEB1, DB1) * 5]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 30 and all(results)


def test_a_stuck_child_is_killed_at_shutdown(example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo, server__shutdown_timeout="1")
    children = ready_children(server, 2)
    os.kill(children[0].process.pid, signal.SIGSTOP)  # it will never answer "stop"
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
    for child in children:
        assert not child.process.is_alive()


def test_every_expiry_in_the_parent_reaches_the_children(example_repo: Repo,
                                                        network_server) -> None:
    server = start(network_server, example_repo, caching__client_metadata="aggressive")
    core = server.core
    published: list[tuple] = []
    publish = core.publish

    def recording_publish(method, *args):
        published.append((method, *args))
        publish(method, *args)

    core.publish = recording_publish
    clients = example_repo.path / "Metadata/clients.xml"
    server.proxy(*WEB1).GetConfig()
    # a plugin in the parent expiring a client (here Metadata, for a changed record)
    clients.write_text(clients.read_text().replace("desk1-secret", "desk1-changed"))
    core.catch_up()
    expiries = [args for method, *args in published if method == "expire"]
    generation, names, tag = expiries[-1]
    assert (names, tag) == (["desk1.example.com"], "Metadata")
    assert generation == core.metadata_cache.generation
    # and an admin's expire_metadata_cache of everything: published once, not per plugin
    del published[:]
    assert server.admin().expire_metadata_cache() is True
    expiries = [args for method, *args in published if method == "expire"]
    assert expiries == [[core.metadata_cache.generation, None, "expire_metadata_cache"]]


def test_shutdown_closes_what_the_network_core_opened(example_repo: Repo, network_server) -> None:
    server = start(network_server, example_repo)
    core = server.core
    assert core._stop_r >= 0 and core._stop_w >= 0
    server.stop()
    assert (core._stop_r, core._stop_w) == (-1, -1)  # NetworkCore.shutdown closed its pipe

"""Probes end to end: an agent's probe output assigns groups that its configuration uses."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import lxml.etree
import pytest
from conftest import BASIC_CLIENTS, Repo
from test_server_cli import ServerProcess, proxy, write_conf

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes"
GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"/>
  <Group name="webserver"><Bundle name="web"/></Group>
</Groups>
"""
CLIENT1 = ("uuid-client1", "pw1")
UPLOAD = ('<ProbeData><probe-data name="role" source="Probes">group:webserver\n'
          'nginx\n</probe-data></ProbeData>')


@pytest.fixture
def probes_repo(tmp_path) -> Repo:
    repo = Repo(tmp_path / "repo")
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Metadata/clients.xml", BASIC_CLIENTS)
    repo.write("Bundler/web.xml", '<Bundle name="web"><Package name="nginx"/></Bundle>')
    repo.write("Probes/role", "#!/bin/sh\necho group:webserver\n")
    for name in ("Cfg", "Rules", "Defaults"):
        repo.mkdir(name)
    return repo


def bundles(agent) -> set[str]:
    config = lxml.etree.fromstring(agent.GetConfig().encode())
    return {b.get("name") for b in config.iter("Bundle")}


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_probe_groups_decide_the_bundles_of_the_next_config(probes_repo: Repo, network_server,
                                                            core: str) -> None:
    server = network_server(probes_repo, core=core, server__plugins=PLUGINS,
                            probes__allowed_groups="webserver", server__children="2",
                            caching__client_metadata="aggressive")
    agent = server.proxy(*CLIENT1)
    assert bundles(agent) == set()  # also fills the metadata caches
    probes = lxml.etree.fromstring(agent.GetProbes().encode())
    probe = probes.find("probe")
    assert (probe.get("name"), probe.get("interpreter")) == ("role", "/bin/sh")
    assert agent.RecvProbeData(UPLOAD) is True
    for _ in range(4):  # every child, not only the one that happened to answer
        assert bundles(agent) == {"web"}


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    """bcfg2-server processes a test starts; killed at teardown."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


def test_probe_data_survives_sigkill_of_the_server(probes_repo: Repo, tls, tmp_path,
                                                   server_processes) -> None:
    conf = write_conf(tmp_path / "bcfg2.conf", probes_repo, tls)
    conf.write_text(conf.read_text().replace(
        "plugins = Metadata, Bundler, Cfg, Rules, Defaults",
        "plugins = Metadata, Bundler, Cfg, Rules, Defaults, Probes") +
        "\n[probes]\nallowed_groups = webserver\n")
    server = ServerProcess(["-C", str(conf), "-v"])
    server_processes.append(server)
    agent = proxy(tls, server.port(), *CLIENT1)
    assert agent.RecvProbeData(UPLOAD) is True
    server.proc.send_signal(signal.SIGKILL)
    assert server.proc.wait(timeout=10) == -signal.SIGKILL
    again = ServerProcess(["-C", str(conf), "-v"])
    server_processes.append(again)
    assert bundles(proxy(tls, again.port(), *CLIENT1)) == {"web"}


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_fifty_agents_sending_probe_data_at_once_each_keep_their_own(probes_repo: Repo,
                                                                    network_server,
                                                                    core: str) -> None:
    clients = [(f"host{n:02d}.example.com", f"uuid-{n}", f"pw-{n}") for n in range(50)]
    probes_repo.write("Metadata/clients.xml", "<Clients version='3.0'>" + "".join(
        f'<Client name="{name}" profile="basic" uuid="{uuid}" password="{pw}"/>'
        for name, uuid, pw in clients) + "</Clients>")
    server = network_server(probes_repo, core=core, server__plugins=PLUGINS,
                            probes__allowed_groups="webserver", server__children="2")
    errors: list[BaseException] = []

    def agent(name: str, uuid: str, pw: str) -> None:
        group = "group:webserver\n" if name.endswith(("0.example.com", "5.example.com")) else ""
        upload = (f'<ProbeData><probe-data name="role" source="Probes">{group}'
                  f'data of {name}\n</probe-data></ProbeData>')
        try:
            assert server.proxy(uuid, pw).RecvProbeData(upload) is True
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=agent, args=client) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]
    for name, uuid, pw in clients:
        metadata = server.core.build_metadata(name)
        assert metadata.Probes["role"] == f"data of {name}\n"
        in_group = name.endswith(("0.example.com", "5.example.com"))
        assert ("webserver" in metadata.groups) == in_group, name
        assert bundles(server.proxy(uuid, pw)) == ({"web"} if in_group else set()), name

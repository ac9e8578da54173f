"""Client strings never forge a line of the server's log, on any core (a server process)."""

from __future__ import annotations

import re
import shutil
import xmlrpc.client

import pytest
from attack import assert_served, call_body, raw_call
from conftest import CORES, PLUGINS, REPO_EXAMPLE, Repo, ServerProcess, write_conf

FORGED = "2026-01-01 00:00:00,000 ERROR FORGED"


class Served:
    """Enough of RunningServer for the attack helpers: a port and TLS material."""

    def __init__(self, port: int, tls) -> None:
        self.port = port
        self.tls = tls

    def proxy(self, user: str, password: str) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(f"https://{user}:{password}@127.0.0.1:{self.port}/RPC2",
                                         context=self.tls.client_context(), allow_none=True)


@pytest.mark.parametrize("core", CORES)
def test_client_strings_never_forge_log_lines(core, tls, tmp_path) -> None:
    """Newlines in a method name, profile, version, probe name or user stay inside one line."""
    repo = Repo(tmp_path / "repo")
    shutil.copytree(REPO_EXAMPLE, repo.path, dirs_exist_ok=True)
    conf = write_conf(tmp_path / "bcfg2.conf", repo, tls,
                      server_extra=f"backend = {core}\nchildren = 1\n")
    conf.write_text(re.sub(r"(?m)^plugins = .*$", f"plugins = {PLUGINS}", conf.read_text()))
    server = ServerProcess(["-C", str(conf), "-v"])
    try:
        served = Served(server.port(), tls)
        attacks = [
            call_body(f"GetConfig\n{FORGED} method"),
            call_body("AssertProfile", f"webserver\n{FORGED} profile"),
            call_body("DeclareVersion", f"1.4.0\n{FORGED} version"),
            call_body("RecvProbeData", f'<ProbeData><probe name="virt&#10;{FORGED} probe" '
                      f'source="Probes&#10;{FORGED} source">x</probe></ProbeData>'),
            call_body("RecvProbeData", f'<ProbeData><probe name="virt&#10;{FORGED} probe" '
                      f'source="Probes">group:x&#10;{FORGED} group</probe></ProbeData>'),
            call_body("RecvStats", f'<upload-statistics><Statistics version="2.0" '
                      f'state="dirty&#10;{FORGED} state" total="1" good="0"><Bad>'
                      f'<Path name="/etc/x&#10;{FORGED} entry" qtext="x&#10;{FORGED}"/>'
                      f'</Bad></Statistics></upload-statistics>'),
        ]
        for body in attacks:
            raw_call(served, body)
        raw_call(served, call_body("GetConfig"), user=f"nobody\n{FORGED} user")
        assert_served(served)
        # the last line the attacks caused is logged before the agent's run ends
        server.wait_for(re.compile(r"reported state clean"))
    finally:
        server.proc.terminate()
        status, lines = server.finish()
    assert not [line for line in lines if "FORGED" in line.split(" ", 3)[:3]
                or line.startswith(FORGED[:10] + " 00:00:00")], "".join(lines)
    assert any("FORGED" in line for line in lines)  # the attempts are logged, as data

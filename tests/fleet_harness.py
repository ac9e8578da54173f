"""Several servers on one PostgreSQL database behind one HAProxy, for the fleet tests.

``Fleet`` starts each server as a network core in this process (or, for a
server a test kills with SIGKILL, as a ``bcfg2-server`` process), every one
with its own state directory, ``[server] proxy_protocol`` naming HAProxy's
address and a health port; then HAProxy on 127.0.0.1, configured from
``examples/haproxy.cfg`` with the test's ports. The example balances by
source address, which keeps every test agent (all on 127.0.0.1) on one
server; the fleet tests balance round-robin instead, so each call of one
run lands on the next server, as nothing of a run may live in one
server's memory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT, Repo, ServerProcess, TLSMaterial, wait_until

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy",
                                                                      os.X_OK) else None)
#: seconds between HAProxy's health checks in the tests (the example checks every 2 s)
CHECK_INTERVAL_MS = 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def haproxy_config(listen: int, servers: list[tuple[int, int]], stats: Path | None = None,
                   roundrobin: bool = True) -> str:
    """examples/haproxy.cfg for ``servers`` ((TLS port, health port) each), listening on
    ``listen``, checking often, without the daemon-wide settings; round-robin unless
    asked to keep the example's balancing, with a stats socket at ``stats`` if given
    (where a test reads which servers HAProxy has up)."""
    text = (ROOT / "examples" / "haproxy.cfg").read_text()
    text = re.sub(r"^(\s*)(user|group|chroot|daemon|log)\b.*$", r"\1# \2 (test)", text,
                  flags=re.M)
    if stats is not None:
        text = text.replace("global\n", f"global\n    stats socket {stats} mode 600\n", 1)
    text = text.replace("*:6789", f"127.0.0.1:{listen}")
    if roundrobin:
        text = re.sub(r"^(\s*)balance source$", r"\1balance roundrobin", text, flags=re.M)
    text = text.replace("inter 2s", f"inter {CHECK_INTERVAL_MS}ms")
    lines = "\n".join(f"    server bcfg2-{n} 127.0.0.1:{tls} check port {health}"
                      for n, (tls, health) in enumerate(servers, 1))
    text = re.sub(r"^\s*server bcfg2-1 .*$", lines, text, flags=re.M)
    return re.sub(r"^\s*server bcfg2-[2-9] 127\.0\.0\.1:680\d.*$\n?", "", text, flags=re.M)


@dataclass
class Member:
    """One server of the fleet: in this process (``running``) or a process (``process``)."""

    name: str
    port: int
    health: int
    running: Any = None
    process: ServerProcess | None = None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing of the server runs its shutdown."""
        assert self.process is not None, "only a server in its own process can be killed"
        self.process.proc.send_signal(signal.SIGKILL)
        self.process.proc.wait(timeout=10)


class Fleet:
    """Servers sharing one database, and the HAProxy in front of them."""

    def __init__(self, repo: Repo, tls: TLSMaterial, network_server: Any, database: Any,
                 root: Path, plugins: str, **options: str) -> None:
        self.repo, self.tls, self.network_server = repo, tls, network_server
        self.database, self.root = database, root
        self.plugins, self.options = plugins, options
        self.members: list[Member] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.port = 0
        root.mkdir(parents=True, exist_ok=True)

    def add(self, core: str = "builtin") -> Member:
        """A server in this process, counting the calls it serves."""
        name = f"server{len(self.members) + 1}"
        running = self.network_server(
            self.repo, core=core, server__plugins=self.plugins,
            server__state_dir=str(self.root / name), server__children="2",
            server__proxy_protocol="127.0.0.1", server__health_port="127.0.0.1:0",
            **self.database.overrides, **self.options)
        member = Member(name, running.port, running.core.health.port, running=running)
        self.members.append(member)
        return member

    def add_process(self, processes: list[ServerProcess]) -> Member:
        """A ``bcfg2-server`` process (which a test may kill), on the same database."""
        name = f"server{len(self.members) + 1}"
        health = free_port()
        sections: dict[str, dict[str, str]] = {
            "server": {"repository": str(self.repo.path), "plugins": self.plugins,
                       "state_dir": str(self.root / name), "proxy_protocol": "127.0.0.1",
                       "health_port": f"127.0.0.1:{health}"},
            "components": {"bcfg2": "https://127.0.0.1:0"},
            "communication": {"password": "globalpw", "key": self.tls.key,
                              "certificate": self.tls.cert},
            "logging": {"syslog": "false"},
        }
        for key, value in {**self.database.overrides, **self.options}.items():
            section, option = key.split("__", 1)
            sections.setdefault(section, {})[option] = str(value)
        conf = self.root / f"{name}.conf"
        conf.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in
                                                          values.items()) + "\n"
                                for section, values in sections.items()))
        process = ServerProcess(["-C", str(conf), "-v"])
        processes.append(process)
        member = Member(name, process.port(), health, process=process)
        self.members.append(member)
        return member

    def start_haproxy(self) -> None:
        """HAProxy in front of every member, once it has found them all healthy."""
        assert HAPROXY is not None
        self.port = free_port()
        config = self.root / "haproxy.cfg"
        self.stats = self.root / "haproxy.sock"
        config.write_text(haproxy_config(self.port, [(m.port, m.health)
                                                     for m in self.members], self.stats))
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, daemon=True).start()

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 20, "haproxy to listen")
        self.wait_up(len(self.members))

    def up(self) -> list[str]:
        """The servers HAProxy has up now (from its stats socket)."""
        return [row[1] for row in self._stat() if row[17].startswith("UP")]

    def sessions(self) -> dict[str, int]:
        """How many connections HAProxy passed to each server (health checks not counted)."""
        return {row[1]: int(row[7] or 0) for row in self._stat()}

    def _stat(self) -> list[list[str]]:
        """HAProxy's ``show stat`` rows of the fleet's servers."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(self.stats))
                sock.sendall(b"show stat\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError:
            return []
        rows = [line.split(",") for line in data.decode().splitlines() if line]
        return [row for row in rows if len(row) > 17 and row[0] == "bcfg2-servers"
                and row[1].startswith("bcfg2-")]

    def wait_up(self, count: int) -> None:
        """Until HAProxy has ``count`` servers up (its health checks passed)."""
        wait_until(lambda: len(self.up()) == count, 60, f"haproxy to have {count} servers up")

    def _drain(self) -> None:
        assert self.haproxy is not None and self.haproxy.stderr is not None
        for _ in self.haproxy.stderr:
            pass

    def proxy(self, user: str, password: str) -> xmlrpc.client.ServerProxy:
        """An agent's XML-RPC client, through HAProxy (as ``RunningServer.proxy``)."""
        return xmlrpc.client.ServerProxy(
            f"https://{user}:{password}@127.0.0.1:{self.port}/RPC2",
            context=self.tls.client_context(), allow_none=True)

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait(timeout=10)
        for member in self.members:  # before the test's database is dropped
            if member.process is not None:
                member.process.kill()
            elif member.running is not None:
                member.running.stop()

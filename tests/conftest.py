"""Shared fixtures: small repositories, local cores, TLS material, running servers."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from bcfg2 import options
from bcfg2.core import LocalCore

ROOT = Path(__file__).resolve().parent.parent
REPO_EXAMPLE = ROOT / "repo-example"
sys.path.insert(0, str(ROOT / "tests" / "bench"))
import genrepo  # noqa: E402
from connattack import WEB1 as WEB1  # noqa: E402  (web1 of repo-example, shared with the benchmarks)
from pg import pg_cluster, pg_database, storage_engine, store_database  # noqa: E402, F401

PLUGINS = ("Metadata,Bundler,Cfg,Rules,Defaults,Probes,Properties,TemplateHelper,GroupPatterns,"
           "Decisions,Reporting,Packages")
#: plugins a generated repository needs (genrepo writes no Probes, Properties...)
GEN_PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults"
#: a small generated repository of 12 clients; profile p has groups bench-g(2p % 3) and
#: bench-g((2p+1) % 3), so bundle bench-b0 (of group bench-g0) goes to the clients of
#: profiles bench-p0 and bench-p1
SMALL_SPEC = genrepo.RepoSpec(clients=12, profiles=3, groups=3, groups_per_profile=2,
                              bundles=3, entries=12, files_per_entry=3, file_size=200,
                              info_every=4, packages=6, services=3)


def tool_argv(repository: Path | Repo | str, tmp_path: Path, *words: str,
              plugins: str = PLUGINS) -> list[str]:
    """A command line of a tool over a repository, with no bcfg2.conf and a private state dir."""
    return ["-C", "/dev/null", "-Q", str(repository), "--state-dir", str(tmp_path / "state"),
            "--plugins", plugins, *words]


def probe_groups_repo(repo: Repo) -> None:
    """Groups alpha and beta, each bringing a bundle of its name, joined by probe output."""
    groups = repo.path / "Metadata/groups.xml"
    groups.write_text(groups.read_text().replace(
        "</Groups>", '<Group name="alpha"><Bundle name="alpha"/></Group>'
                     '<Group name="beta"><Bundle name="beta"/></Group></Groups>'))
    for name in ("alpha", "beta"):
        repo.write(f"Bundler/{name}.xml", f'<Bundle><Path name="/etc/{name}"/></Bundle>')
        repo.write(f"Cfg/etc/{name}/{name}", name)
    repo.write("Probes/role", "#!/bin/sh\necho group:alpha\n")


def make_distribution(root: Path, name: str, modules: dict[str, str],
                      plugins: dict[str, str] | None = None,
                      cores: dict[str, str] | None = None) -> Path:
    """An installed distribution in ``root`` (put it on sys.path or PYTHONPATH).

    ``modules`` maps module file names to their source; ``plugins`` and
    ``cores`` map entry-point names to ``module:Class`` in the bcfg2.plugins
    and bcfg2.cores groups, as a wheel would install them.
    """
    root.mkdir(parents=True, exist_ok=True)
    for filename, source in modules.items():
        (root / filename).write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    groups = []
    for group, points in (("bcfg2.plugins", plugins), ("bcfg2.cores", cores)):
        if points:
            groups.append(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    (info / "entry_points.txt").write_text("\n".join(groups))
    return root


BASIC_GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
  </Group>
  <Group name="other" profile="true"/>
  <Group name="linux">
    <Bundle name="base"/>
  </Group>
</Groups>
"""

#: both profiles get bundle "base" (client1 through group linux)
ALL_BASE_GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
  </Group>
  <Group name="other" profile="true">
    <Bundle name="base"/>
  </Group>
  <Group name="linux">
    <Bundle name="base"/>
  </Group>
</Groups>
"""

BASIC_CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1" floating="true"/>
  <Client name="client2" profile="other" uuid="uuid-client2" password="pw2" floating="true"/>
</Clients>
"""


class Repo:
    """A repository under construction in a temporary directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, content: str | bytes, dedent: bool = True) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content) if dedent else content)
        return target

    def mkdir(self, relative: str) -> Path:
        target = self.path / relative
        target.mkdir(parents=True, exist_ok=True)
        return target

    def __str__(self) -> str:
        return str(self.path)


def rewrite(path: Path, text: str) -> None:
    """Rewrite a file so that a scanning file monitor surely sees the change."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A minimal repository: groups.xml, clients.xml and empty plugin directories."""
    r = Repo(tmp_path / "repo")
    r.write("Metadata/groups.xml", BASIC_GROUPS)
    r.write("Metadata/clients.xml", BASIC_CLIENTS)
    for name in ("Bundler", "Cfg", "Rules", "Defaults"):
        r.mkdir(name)
    return r


@pytest.fixture
def example_repo(tmp_path: Path) -> Repo:
    """A private copy of repo-example/ that a test may modify."""
    target = tmp_path / "repo-example"
    shutil.copytree(REPO_EXAMPLE, target)
    return Repo(target)


def make_setup(repository: Repo | Path | str, state_dir: Path | str | None = None,
               **overrides: Any) -> options.Setup:
    """A Setup for a repository; overrides are "section.name" = raw value.

    Keyword arguments use a double underscore for the dot:
    ``make_setup(repo, caching__client_metadata="aggressive")``.
    """
    repository = str(repository)
    cli: dict[str, Any] = {
        "server.repository": repository,
        "server.plugins": PLUGINS,
        "server.state_dir": str(state_dir) if state_dir else os.path.join(
            os.path.dirname(repository), "state"),
        "server.filemonitor": "pseudo",
        "logging.syslog": "false",
    }
    for key, value in overrides.items():
        # a dict is a whole names option: make_setup(repo, encryption__passphrases={...})
        cli[key.replace("__", ".")] = value if isinstance(value, str | dict) else str(value)
    return options.build("/dev/null", cli)


@pytest.fixture
def register() -> Iterator[Callable[..., None]]:
    """Make plugin classes loadable by name for one test (the plugin manager's seam)."""
    from bcfg2.plugin import manager

    names: list[str] = []

    def add(*classes: Any) -> None:
        for cls in classes:
            manager.register(cls)
            names.append(cls.name)

    yield add
    for name in names:
        manager.unregister(name)


@pytest.fixture
def no_reverse_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any reverse DNS lookup (every address it uses is known)."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"unexpected reverse DNS lookup {args}")
    monkeypatch.setattr(socket, "getnameinfo", refuse)


@pytest.fixture
def local_core() -> Iterator[Callable[..., LocalCore]]:
    """Factory: a LocalCore over a repository; shut down after the test."""
    cores: list[LocalCore] = []

    def factory(repository: Repo | Path | str, **overrides: Any) -> LocalCore:
        core = LocalCore(make_setup(repository, **overrides))
        cores.append(core)
        return core

    yield factory
    for core in cores:
        core.shutdown()


class TLSMaterial:
    """A throwaway CA, a server certificate for 127.0.0.1, and client certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.key = str(directory / "server.key")
        self.cert = str(directory / "server.crt")
        self.ca_cert = str(directory / "ca.crt")
        server.private_key_pem.write_to_path(self.key)
        server.cert_chain_pems[0].write_to_path(self.cert)
        self.ca.cert_pem.write_to_path(self.ca_cert)

    def client_cert(self, common_name: str) -> tuple[str, str]:
        """A client certificate (cert path, key path) whose CN is ``common_name``."""
        leaf = self.ca.issue_cert(common_name, common_name=common_name)
        cert = str(self.dir / f"{common_name}.crt")
        key = str(self.dir / f"{common_name}.key")
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)
        return cert, key

    def client_context(self, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return TLSMaterial(tmp_path_factory.mktemp("tls"))


class RunningServer:
    """A network core serving on 127.0.0.1 in a thread of this process."""

    def __init__(self, core: Any, thread: threading.Thread, tls: TLSMaterial) -> None:
        self.core = core
        self.thread = thread
        self.tls = tls

    @property
    def port(self) -> int:
        return self.core.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/RPC2"

    def proxy(self, user: str, password: str,
              cert: tuple[str, str] | None = None) -> xmlrpc.client.ServerProxy:
        """An XML-RPC client as an agent has it: basic auth, TLS, one call per connection."""
        return xmlrpc.client.ServerProxy(
            f"https://{user}:{password}@127.0.0.1:{self.port}/RPC2",
            context=self.tls.client_context(cert), allow_none=True)

    def admin(self) -> xmlrpc.client.ServerProxy:
        """An XML-RPC client with the admin identity every test server has (ADMIN_USER)."""
        return self.proxy(ADMIN_USER, ADMIN_PASSWORD)

    def stop(self) -> None:
        self.core.terminate.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "server did not stop"


#: the admin identity of every test server (RunningServer.admin)
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-secret"

#: the network cores every core-independent integration test runs against
CORES = ("builtin", "multiprocessing", "cherrypy")


@pytest.fixture
def network_server(tls: TLSMaterial) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start a network core (``core=`` name) on 127.0.0.1 port 0 over a repository."""
    from bcfg2.server import load_core

    servers: list[RunningServer] = []

    def factory(repository: Repo | Path | str, password: str = "globalpw",
                ca: bool = False, core: str = "builtin", **overrides: Any) -> RunningServer:
        extra = {
            "components__bcfg2": "https://127.0.0.1:0",
            "communication__password": password,
            "communication__key": tls.key,
            "communication__certificate": tls.cert,
            "communication__admin_user": ADMIN_USER,
            "communication__admin_password": ADMIN_PASSWORD,
            "server__backend": core,  # so the core's own options are read
        }
        if ca:
            extra["communication__ca"] = tls.ca_cert
        extra.update(overrides)
        instance = load_core(core)(make_setup(repository, **extra))
        started = threading.Event()
        original_run = instance._run

        def run_and_signal() -> bool:
            ok = original_run()
            started.set()
            return ok

        instance._run = run_and_signal  # type: ignore[method-assign]
        thread = threading.Thread(target=instance.run, name="test-server", daemon=True)
        thread.start()
        assert started.wait(60), "server did not start"
        server = RunningServer(instance, thread, tls)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def builtin_server(network_server: Callable[..., RunningServer]) -> Callable[..., RunningServer]:
    """Factory: start the builtin core on 127.0.0.1 port 0 over a repository."""
    return network_server


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"

@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of daemons a test starts (they are not our children); killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


STARTUP = 30.0
LISTENING = re.compile(r"Listening on https://127\.0\.0\.1:(\d+)")
DAEMONIZED = re.compile(r"Daemonized; pid (\d+)")


def write_conf(path: Path, repo: Repo, tls, *, password: str | None = "globalpw",
               server_extra: str = "", logging_extra: str = "") -> Path:
    """A bcfg2.conf with the upstream section and option names."""
    password_line = f"password = {password}\n" if password is not None else ""
    path.write_text(
        "[server]\n"
        f"repository = {repo.path}\n"
        "plugins = Metadata, Bundler, Cfg, Rules, Defaults\n"
        f"state_dir = {repo.path.parent / 'state'}\n"
        f"{server_extra}"
        "\n[components]\n"
        "bcfg2 = https://127.0.0.1:0\n"
        "\n[communication]\n"
        f"{password_line}"
        f"key = {tls.key}\n"
        f"certificate = {tls.cert}\n"
        "\n[logging]\n"
        "syslog = false\n"
        f"{logging_extra}")
    return path


class ServerProcess:
    """``python -m bcfg2.server`` with its stderr read line by line in a thread."""

    def __init__(self, args: list[str], **popen: Any) -> None:
        """``popen``: more subprocess.Popen arguments (e.g. a preexec_fn setting rlimits)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bcfg2.server", *args], cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, **popen)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="stderr-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = STARTUP) -> re.Match[str]:
        """The first (new) stderr line matching ``pattern``; fails at the deadline or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line matching {pattern.pattern!r} within {timeout}s; "
                            f"stderr so far: {''.join(self.lines)}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"stderr closed before {pattern.pattern!r} "
                            f"(exit {self.proc.poll()}): {''.join(self.lines)}")
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match

    def port(self) -> int:
        return int(self.wait_for(LISTENING).group(1))

    def finish(self, timeout: float = 10.0) -> tuple[int, list[str]]:
        """Wait for the exit; the exit status and every stderr line."""
        status = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return status, self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self._reader.join(timeout=10)
            self.proc.stderr.close()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll an explicit condition until it holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """bcfg2-server processes a test starts; killed at teardown."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture(params=CORES)
def hostile(request: pytest.FixtureRequest, network_server: Callable[..., RunningServer],
            tmp_path: Path) -> Callable[..., RunningServer]:
    """Factory, once per network core: a server over a copy of repo-example (or ``repository``)."""

    def start(repository: Repo | Path | str | None = None, **overrides: Any) -> RunningServer:
        if repository is None:
            target = tmp_path / "repo"
            if not target.exists():
                shutil.copytree(REPO_EXAMPLE, target)
            repository = target
        return network_server(repository, core=request.param, **overrides)

    start.core = request.param  # type: ignore[attr-defined]
    return start


def state_clients(state_dir: Path | str) -> dict[str, dict[str, str]]:
    """What the server recorded about clients in a state directory (bcfg2.clientstate)."""
    from bcfg2.clientstate import ClientState, database_path

    path = database_path(str(state_dir))
    if not os.path.exists(path):
        return {}
    store = ClientState(path)
    try:
        return store.load()
    finally:
        store.close()

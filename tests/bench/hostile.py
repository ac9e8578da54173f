"""Hostile-network benchmark: how long a real agent run takes while bcfg2-server is attacked.

For each network core (``--cores``: builtin, multiprocessing, cherrypy) it
starts a real ``bcfg2-server`` over a copy of repo-example (127.0.0.1, port
0, its plugins with Reporting, the default limits of the README's security
section but ``[reporting] max_runs_per_hour = 0``, so that every run of the
agent is stored as a real one is; ``--set`` changes any option), makes a
few unmeasured agent runs, then for each scenario (``--attacks``) starts the
attack, waits ``--lead`` seconds once it is under way, and makes ``--runs``
whole agent runs of web1 from 127.0.0.2 (``connattack.agent_run``:
DeclareVersion, GetProbes, RecvProbeData, GetDecisionList, GetConfig,
RecvStats, each call a new TLS connection), in a process of its own, while
the attack goes on from another:

- ``rest``: no attack, the baseline;
- ``flood``: ``--flood`` idle TCP connections from 127.0.0.1, more than
  ``max_connections``; one the server cuts after keeping it is opened again;
- ``flood-sources``: ``--flood-sources`` idle connections spread over ten
  sources (127.0.0.10-19), enough to fill ``max_connections`` itself;
- ``slowloris``: ``--slow`` connections from 127.0.0.1 (more than CherryPy's
  former 32 workers) sending their request headers a byte a second; each one
  cut starts again;
- ``bruteforce``: ``--threads`` clients from 127.0.0.3 guessing web1's
  password as fast as they are answered;
- ``stats``: ``--uploads`` clients sending web2's RecvStats of 360,000 empty
  entries (9 MB each) one after the other;
- ``register``: ``--threads`` clients making first contact with the global
  password under new names, as fast as they are answered;
- ``ping``: ``--threads`` admin clients calling ``ping`` with what XML-RPC
  cannot carry: an integer beyond 32 bits, 900 and 100,000 nested arrays.

Per scenario it reports the agent-run latency (p50, p95, max; failed runs
counted apart), how many attack requests (or connections) were made and
how the server answered them (held, refused, cut, 401, Faults by code...),
and of the server process (for the multiprocessing core its parent, which
accepts every connection and answers every call but GetConfig): its peak
open file descriptors and threads (sampled every 20 ms), its peak RSS
growth (``VmHWM`` after writing 5 to ``/proc/<pid>/clear_refs`` at the start
of the scenario, minus the RSS then) and the CPU its process tree used.

Agents and attackers share the machine's CPUs with the server, so a busy
attacker slows the agent twice: through the server and through the CPU it
takes. It is a report, not a test: the exit status is 1 only when something
could not be measured (a server that did not start, an agent process that
did not answer); failed agent runs are a result.

Usage: python tests/bench/hostile.py [--quick] [--cores builtin,cherrypy]
       [--attacks flood,stats] [--runs 20] [--json FILE]   (``make bench-hostile``)
"""

from __future__ import annotations

import argparse
import collections
import configparser
import dataclasses
import http.client
import itertools
import json
import math
import multiprocessing
import os
import queue
import secrets
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import load
from connattack import (
    OTHER,
    THIRD,
    WEB1,
    WEB2,
    FromSource,
    agent_run,
    call_body,
    closed_by_server,
    connect,
    fault_of,
    fd_count,
    flood_body,
    nested_arrays,
    peak_growth,
    raw_call,
    status_field,
    trickle,
)

from bcfg2.devcert import make_self_signed

REPO_EXAMPLE = Path(__file__).resolve().parents[2] / "repo-example"
#: the plugins repo-example uses (as ``make run`` and tests/conftest.py PLUGINS)
PLUGINS = ("Metadata, Bundler, Cfg, Rules, Defaults, Probes, Properties, TemplateHelper, "
           "GroupPatterns, Decisions, Reporting")
ATTACKS = ("rest", "flood", "flood-sources", "slowloris", "bruteforce", "stats", "register",
           "ping")
#: the ten sources of the flood-sources scenario
FLOOD_SOURCES = tuple(f"127.0.0.{n}" for n in range(10, 20))
#: seconds the slowloris clients wait between two bytes
SLOW_EVERY = 1.0
#: a connection the server closes within this many seconds of its opening was refused
REFUSED_WITHIN = 1.0
#: seconds between two samples of the server's descriptors and threads
SAMPLE_EVERY = 0.02
#: agent runs after the first, not measured, before the scenarios (caches filled, code loaded)
WARMUP_RUNS = 3

BenchError = load.BenchError


class BenchTLS:
    """The benchmark's self-signed certificate as the attack helpers want it (``client_context``).

    One context per process, made on first use: an agent makes its TLS
    context once, not once per call.
    """

    def __init__(self, cafile: str) -> None:
        self.cafile = cafile
        self._context: ssl.SSLContext | None = None

    def client_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self.cafile)
        return self._context

    def __getstate__(self) -> dict[str, Any]:
        return {"cafile": self.cafile, "_context": None}


# -- what the server answered -----------------------------------------------------------


class Tally:
    """Counts of how attack requests were answered, shared by an attack's threads."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests = 0
        #: what the counts do not say (when the server cut the connections)
        self.detail = ""
        self._lock = threading.Lock()

    def add(self, outcome: str | None, request: bool = True) -> None:
        """Count an answer (None: none yet, e.g. a connection still open) and its request."""
        with self._lock:
            if outcome is not None:
                self.counts[outcome] += 1
            self.requests += request


def answer(call: Callable[[], tuple[int, bytes]]) -> str:
    """How the server answered one raw call: ok, "Fault <code>", an HTTP status, refused, cut.

    refused: the connection was reset or refused (a connection cap resets it
    as it arrives); cut: it was closed before a whole answer came back.
    """
    try:
        status, body = call()
    except (ConnectionRefusedError, ConnectionResetError):
        return "refused"
    except (http.client.RemoteDisconnected, http.client.IncompleteRead, BrokenPipeError,
            ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return "cut"
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException) as err:
        return type(err).__name__
    if status != 200:
        return str(status)
    fault = fault_of(body)
    return "ok" if fault is None else f"Fault {fault.faultCode}"


# -- the attacks (each runs in an attacker process until ``stop``) ----------------------


@dataclasses.dataclass
class AttackSpec:
    """What an attacker process needs: the server, its secrets, and the attack's size."""

    port: int
    cafile: str
    global_password: str
    admin: tuple[str, str]
    flood: int
    flood_sources: int
    slow: int
    uploads: int
    threads: int
    prefix: str


@dataclasses.dataclass
class Held:
    """An idle connection of a flood: when it was opened, and whether the server kept it."""

    sock: socket.socket
    source: str
    opened: float
    kept: bool = False


def _hold(spec: AttackSpec, sources: tuple[str, ...], count: int, tally: Tally,
          stop: threading.Event, ready: threading.Event) -> None:
    """Open ``count`` idle connections over ``sources`` and hold them; one the server cuts
    after keeping it is opened again, as an attacker keeping up the pressure would.

    A connection still open ``REFUSED_WITHIN`` seconds after its opening was
    kept; one closed by the server before it was seen kept was refused.
    """
    held: list[Held] = []

    def open_one(source: str) -> None:
        try:
            held.append(Held(connect(spec.port, source), source, time.monotonic()))
            tally.add(None)
        except (ConnectionResetError, ConnectionRefusedError):
            tally.add("refused")
        except OSError as err:
            tally.add(type(err).__name__)

    def reap(reopen: bool) -> None:
        now = time.monotonic()
        for conn in list(held):
            if not closed_by_server(conn.sock):
                conn.kept = conn.kept or now - conn.opened >= REFUSED_WITHIN
                continue
            held.remove(conn)
            conn.sock.close()
            tally.add("cut" if conn.kept else "refused", request=False)
            if conn.kept and reopen:
                open_one(conn.source)

    try:
        for n in range(count):
            open_one(sources[n % len(sources)])
            if n % 50 == 49:
                reap(reopen=False)
        ready.set()
        while not stop.wait(0.1):
            reap(reopen=True)
        reap(reopen=False)
        tally.counts["held"] += len(held)
    finally:
        for conn in held:
            conn.sock.close()


def attack_flood(spec: AttackSpec, tally: Tally, stop: threading.Event,
                 ready: threading.Event) -> None:
    _hold(spec, ("127.0.0.1",), spec.flood, tally, stop, ready)


def attack_flood_sources(spec: AttackSpec, tally: Tally, stop: threading.Event,
                         ready: threading.Event) -> None:
    _hold(spec, FLOOD_SOURCES, spec.flood_sources, tally, stop, ready)


def attack_slowloris(spec: AttackSpec, tally: Tally, stop: threading.Event,
                     ready: threading.Event) -> None:
    target = FromSource(spec.port, BenchTLS(spec.cafile), "127.0.0.1")
    cut: list[float] = []

    def slow_client() -> None:
        while not stop.is_set():
            mine: list[float] = []
            try:
                trickle(target, "headers", SLOW_EVERY, mine, stop)
            except (ConnectionResetError, ConnectionRefusedError, ssl.SSLEOFError):
                tally.add("refused")
                stop.wait(0.1)
                continue
            except OSError as err:
                tally.add(type(err).__name__)
                stop.wait(0.1)
                continue
            tally.add("cut" if mine else "held")
            cut.extend(mine)

    workers = [threading.Thread(target=slow_client, daemon=True) for _ in range(spec.slow)]
    for worker in workers:
        worker.start()
    ready.set()  # the main process waits for the server to hold the connections
    stop.wait()
    for worker in workers:
        worker.join(timeout=35)
    if cut:
        tally.detail = f"cuts noticed {min(cut):.1f}-{max(cut):.1f} s after connecting"


def _calls(spec: AttackSpec, tally: Tally, stop: threading.Event, ready: threading.Event,
           threads: int, one: Callable[[int], tuple[int, bytes]]) -> None:
    """``threads`` clients, each making ``one(n)`` calls one after another until ``stop``."""
    counter = itertools.count()

    def client() -> None:
        while not stop.is_set():
            tally.add(answer(lambda: one(next(counter))))
            ready.set()

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    stop.wait()
    for worker in workers:
        worker.join(timeout=300)


def attack_bruteforce(spec: AttackSpec, tally: Tally, stop: threading.Event,
                      ready: threading.Event) -> None:
    target = FromSource(spec.port, BenchTLS(spec.cafile), THIRD)
    body = call_body("GetProbes")
    _calls(spec, tally, stop, ready, spec.threads, lambda n: raw_call(
        target, body, WEB1[0], f"guess-{n}", source=THIRD, timeout=30))


def attack_stats(spec: AttackSpec, tally: Tally, stop: threading.Event,
                 ready: threading.Event) -> None:
    target = FromSource(spec.port, BenchTLS(spec.cafile), "127.0.0.1")
    body = flood_body("Bad")
    ready.set()  # sending starts at once
    _calls(spec, tally, stop, threading.Event(), spec.uploads, lambda n: raw_call(
        target, body, *WEB2, timeout=300))


def attack_register(spec: AttackSpec, tally: Tally, stop: threading.Event,
                    ready: threading.Event) -> None:
    target = FromSource(spec.port, BenchTLS(spec.cafile), "127.0.0.1")
    body = call_body("DeclareVersion", "1.4.0")
    _calls(spec, tally, stop, ready, spec.threads, lambda n: raw_call(
        target, body, f"{spec.prefix}-{n}.bench.example", spec.global_password, timeout=30))


def attack_ping(spec: AttackSpec, tally: Tally, stop: threading.Event,
                ready: threading.Event) -> None:
    target = FromSource(spec.port, BenchTLS(spec.cafile), "127.0.0.1")
    bodies = [nested_arrays(0, "<value><i8>1099511627776</i8></value>"), nested_arrays(900),
              nested_arrays(100_000)]
    _calls(spec, tally, stop, ready, spec.threads, lambda n: raw_call(
        target, bodies[n % len(bodies)], *spec.admin, timeout=30))


ATTACK_FUNCTIONS: dict[str, Callable[[AttackSpec, Tally, threading.Event, threading.Event],
                                     None]] = {
    "flood": attack_flood, "flood-sources": attack_flood_sources,
    "slowloris": attack_slowloris, "bruteforce": attack_bruteforce, "stats": attack_stats,
    "register": attack_register, "ping": attack_ping,
}


def _attacker_main(name: str, spec: AttackSpec, ready: Any, stop: Any, results: Any) -> None:
    """Entry point of an attacker process: run one attack until told to stop; its tally."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    tally = Tally()
    local_stop, local_ready = threading.Event(), threading.Event()
    started = time.monotonic()

    def relay() -> None:
        local_ready.wait()
        ready.set()
        stop.wait()
        local_stop.set()

    threading.Thread(target=relay, daemon=True).start()
    try:
        ATTACK_FUNCTIONS[name](spec, tally, local_stop, local_ready)
        results.put({"requests": tally.requests, "answers": dict(tally.counts),
                     "detail": tally.detail, "seconds": time.monotonic() - started})
    except BaseException as err:  # noqa: BLE001 - report whatever went wrong to the parent
        ready.set()
        results.put({"fatal": f"{type(err).__name__}: {err}"})


# -- the agent (a process of its own for the whole benchmark) ---------------------------


def _agent_main(commands: Any, results: Any) -> None:
    """Entry point of the agent process: on ("run", port, cafile, runs, interval, timeout),
    make that many runs of web1 from 127.0.0.2 and put their (seconds, error) pairs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tls: BenchTLS | None = None
    results.put("ready")
    while True:
        command = commands.get()
        if command[0] != "run":
            return
        _, port, cafile, runs, interval, timeout = command
        socket.setdefaulttimeout(timeout)  # every call of the agent's xmlrpc.client
        if tls is None or tls.cafile != cafile:
            tls = BenchTLS(cafile)
        agent = FromSource(port, tls, OTHER)
        out: list[tuple[float, str | None]] = []
        for n in range(runs):
            if n:
                time.sleep(interval)
            started = time.monotonic()
            try:
                agent_run(agent)
                error = None
            except Exception as err:  # noqa: BLE001 - a failed run is a result
                error = f"{type(err).__name__}: {err}"[:300]
            out.append((time.monotonic() - started, error))
        results.put(out)


class AgentProcess:
    """The agent process and its two queues."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_agent_main, args=(self.commands, self.results),
                                name="agent", daemon=True)
        load._workers.append(self.proc)  # load.stop_everything stops it, also on Ctrl-C
        self.proc.start()
        try:
            self.results.get(timeout=60)
        except queue.Empty as err:
            raise BenchError("the agent process did not start within 60 s") from err

    def runs(self, port: int, cafile: str, runs: int, interval: float,
             timeout: float) -> list[tuple[float, str | None]]:
        self.commands.put(("run", port, cafile, runs, interval, timeout))
        deadline = runs * (interval + 6 * timeout) + 60
        try:
            return self.results.get(timeout=deadline)
        except queue.Empty as err:
            raise BenchError(f"the agent process did not answer in {deadline:g} s") from err

    def stop(self) -> None:
        self.commands.put(("stop",))
        self.proc.join(timeout=2)
        if self.proc.is_alive():  # still in a run (interrupted)
            self.proc.kill()
            self.proc.join(timeout=5)
        load._workers.remove(self.proc)


# -- one scenario -----------------------------------------------------------------------


class Sampler:
    """Peak open descriptors and threads of a process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fds = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def sample(self) -> tuple[int, int]:
        try:
            fds, threads = fd_count(self.pid), status_field(self.pid, "Threads")
        except (OSError, KeyError):
            return 0, 0
        self.fds, self.threads = max(self.fds, fds), max(self.threads, threads)
        return fds, threads

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def settle(pid: int, fds: int, timeout: float) -> bool:
    """Wait until the server holds no more descriptors than at rest (two more at most).

    Threads are not waited for: the server's burst logs keep a thread each
    until their burst of refusals ends, up to 10 s after an attack.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if fd_count(pid) <= fds + 2:
                return True
        except OSError:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def at_rest(pid: int, seconds: float = 0.3) -> tuple[int, int]:
    """The fewest descriptors and threads the server holds over ``seconds`` with no request."""
    fds = threads = 10**9
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fds, threads = min(fds, fd_count(pid)), min(threads, status_field(pid, "Threads"))
        time.sleep(SAMPLE_EVERY)
    return fds, threads


def run_scenario(name: str, server: load.CoreServer, port: int, spec: AttackSpec,
                 agent: AgentProcess, rest: tuple[int, int],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Agent runs under one attack (none for ``rest``); latency, answers, the server's peaks."""
    pid = server.pid
    began = time.monotonic()
    result: dict[str, Any] = {"attack": name}
    ctx = multiprocessing.get_context("spawn")

    def phase() -> None:
        attacker = None
        if name != "rest":
            ready, stop, answers = ctx.Event(), ctx.Event(), ctx.Queue()
            attacker = ctx.Process(target=_attacker_main, args=(name, spec, ready, stop, answers),
                                   name=f"attack-{name}", daemon=True)
            load._workers.append(attacker)
            attacker.start()
        try:
            with Sampler(pid) as sampler:
                if attacker is not None:
                    if not ready.wait(60):
                        raise BenchError(f"the {name} attack did not start within 60 s")
                    if name == "slowloris":  # its clients are held once the server has them
                        deadline = time.monotonic() + 15
                        while (fd_count(pid) < rest[0] + spec.slow * 0.9
                               and time.monotonic() < deadline):
                            time.sleep(0.05)
                    time.sleep(args.lead)
                cpu0, wall0 = server.cpu_seconds(), time.monotonic()
                runs = agent.runs(port, spec.cafile, args.runs, args.interval, args.timeout)
                cpu1, wall1 = server.cpu_seconds(), time.monotonic()
                if attacker is not None:
                    stop.set()
                    try:
                        got = answers.get(timeout=330)
                    except queue.Empty as err:
                        raise BenchError(f"the {name} attacker did not report") from err
                    if "fatal" in got:
                        raise BenchError(f"the {name} attacker failed: {got['fatal']}")
                    result.update(requests=got["requests"], answers=got["answers"],
                                  detail=got["detail"], attack_seconds=got["seconds"])
            result.update(peak_fds=sampler.fds, peak_threads=sampler.threads,
                          server_cpu_cores=(cpu1 - cpu0) / max(wall1 - wall0, 1e-9))
        finally:
            if attacker is not None:
                stop.set()
                attacker.join(timeout=30)
                if attacker.is_alive():
                    attacker.kill()
                    attacker.join(timeout=5)
                load._workers.remove(attacker)
        seconds = [s for s, error in runs if error is None]
        errors = [error for _, error in runs if error is not None]
        result.update(runs=len(runs), ok=len(seconds), failed=len(errors),
                      errors=sorted(set(errors))[:3],
                      p50_s=load.percentile(seconds, 50), p95_s=load.percentile(seconds, 95),
                      max_s=max(seconds) if seconds else math.nan)

    server.check_alive()
    result["rss_growth_mb"] = peak_growth(pid, phase) / 2**20
    result["settled"] = settle(pid, rest[0], args.settle)
    server.check_alive()
    result["seconds"] = time.monotonic() - began
    return result


# -- a core ----------------------------------------------------------------------------


class Workspace:
    """The temporary directory of a run: TLS material, a copy of repo-example, the secrets."""

    def __init__(self, root: str, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.cert = os.path.join(root, "server.crt")
        self.key = os.path.join(root, "server.key")
        make_self_signed(self.cert, self.key)
        self.repo = os.path.join(root, "repo")
        shutil.copytree(REPO_EXAMPLE, self.repo)
        self.password = secrets.token_hex(8)
        self.admin = ("bench-admin", secrets.token_hex(8))

    def conf(self, core: str) -> str:
        """A bcfg2.conf for ``core``: repo-example's plugins, a fresh state directory, the
        default limits but for runs stored per hour (no limit: every run of the agent is a
        whole run), and the ``--set`` options."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_dict({
            "server": {"repository": self.repo, "plugins": PLUGINS, "backend": core,
                       "state_dir": os.path.join(self.root, f"state-{core}")},
            "components": {"bcfg2": "https://127.0.0.1:0"},
            "communication": {"password": self.password, "key": self.key,
                              "certificate": self.cert, "admin_user": self.admin[0],
                              "admin_password": self.admin[1]},
            "probes": {"allowed_groups": "virtual"},
            "reporting": {"max_runs_per_hour": "0"},
            "logging": {"syslog": "false"},
        })
        if self.args.children:
            parser["server"]["children"] = str(self.args.children)
        for section, option, value in self.args.set:
            if not parser.has_section(section):
                parser.add_section(section)
            parser[section][option] = value
        path = os.path.join(self.root, f"bcfg2-{core}.conf")
        with open(path, "w", encoding="utf-8") as fh:
            parser.write(fh)
        return path


def measure_core(ws: Workspace, core: str, agent: AgentProcess,
                 args: argparse.Namespace) -> dict[str, Any]:
    """Start a server of ``core``, run every scenario against it, stop it."""
    data: dict[str, Any] = {"scenarios": [], "errors": []}
    server = load.CoreServer([*load.server_argv(), "-C", ws.conf(core)], cwd=ws.root,
                             rss_interval=1.0)
    try:
        deadline = time.monotonic() + args.startup_timeout
        port = server.port(deadline)
        while (error := agent.runs(port, ws.cert, 1, 0, args.timeout)[0][1]) is not None:
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"no agent run succeeded within {args.startup_timeout:g} s: "
                                 f"{error}\n{server.stderr_tail()}")
            time.sleep(0.1)
        data["startup_s"] = time.monotonic() - server.started
        warm = agent.runs(port, ws.cert, WARMUP_RUNS, args.interval, args.timeout)
        if any(error for _, error in warm):
            raise BenchError(f"a warm-up agent run failed: {warm}\n{server.stderr_tail()}")
        rest = at_rest(server.pid)
        data["rest"] = {"fds": rest[0], "threads": rest[1],
                        "rss_mb": status_field(server.pid, "VmRSS") / 1024}
        spec = AttackSpec(port=port, cafile=ws.cert, global_password=ws.password,
                          admin=ws.admin, flood=args.flood, flood_sources=args.flood_sources,
                          slow=args.slow, uploads=args.uploads, threads=args.threads,
                          prefix=f"reg-{core}")
        for name in args.attacks:
            print(f"[{core}] {name} ...", end="", file=sys.stderr, flush=True)
            try:
                scenario = run_scenario(name, server, port, spec, agent, rest, args)
                data["scenarios"].append(scenario)
                print(f" {scenario['seconds']:.1f} s", file=sys.stderr, flush=True)
            except (BenchError, OSError) as err:  # OSError: the server's /proc files went away
                print(" failed", file=sys.stderr, flush=True)
                data["errors"].append(f"{name}: {err}")
                server.check_alive()
    except BenchError as err:
        data["errors"].append(str(err))
    finally:
        server.stop()
    return data


# -- the report --------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 1000:.0f}"


def _answers(scenario: dict[str, Any]) -> str:
    answers = scenario.get("answers") or {}
    text = ", ".join(f"{count} {what}" for what, count in sorted(
        answers.items(), key=lambda item: -item[1])) or "-"
    return f"{text}; {scenario['detail']}" if scenario.get("detail") else text


def format_report(results: dict[str, Any]) -> str:
    """One table per core: a row per scenario."""
    env = results["environment"]
    run = results["run"]
    lines = [
        f"bcfg2-server under attack ({load.machine_line(env)} shared by the server, the agent "
        f"and the attackers)",
        f"  agent: web1 of repo-example from 127.0.0.2, {run['runs']} whole runs per scenario "
        f"({run['interval']:g} s apart, each call a new TLS connection), starting "
        f"{run['lead']:g} s into the attack",
        f"  attacks: flood {run['flood']} idle connections from 127.0.0.1; flood-sources "
        f"{run['flood_sources']} from 127.0.0.10-19; slowloris {run['slow']} clients trickling "
        f"headers a byte a second; bruteforce, register, ping {run['threads']} clients each; "
        f"stats {run['uploads']} clients sending 9 MB RecvStats",
        f"  server options beyond repo-example's: {run['set'] or 'none'} (and [reporting] "
        f"max_runs_per_hour = 0)",
        "",
    ]
    for core, data in results["cores"].items():
        if "not_available" in data:
            lines += [f"== {core}: not available ({data['not_available']})", ""]
            continue
        rest = data.get("rest")
        head = f"== {core}"
        if "startup_s" in data:
            head += f": first agent run done {data['startup_s']:.1f} s after start"
        if rest:
            head += (f"; at rest {rest['fds']} fds, {rest['threads']} threads, "
                     f"{rest['rss_mb']:.0f} MB RSS")
        lines.append(head)
        rows = [("attack", "runs ok", "p50 ms", "p95 ms", "max ms", "p50 x rest", "requests",
                 "answers", "fds", "threads", "RSS +MB", "server CPU")]
        base = next((s["p50_s"] for s in data["scenarios"] if s["attack"] == "rest"), None)
        for s in data["scenarios"]:
            ratio = (f"{s['p50_s'] / base:.1f}" if base and s["ok"] else "-")
            rows.append((s["attack"], f"{s['ok']}/{s['runs']}", _ms(s["p50_s"]),
                         _ms(s["p95_s"]), _ms(s["max_s"]), ratio,
                         str(s.get("requests", "-")), _answers(s), str(s["peak_fds"]),
                         str(s["peak_threads"]), str(round(s["rss_growth_mb"])),
                         f"{s['server_cpu_cores']:.2f}"))
        if len(rows) > 1:
            lines += ["   " + line for line in load._table(rows)]
        for s in data["scenarios"]:
            if s["errors"]:
                lines.append(f"   {s['attack']}: failed runs, e.g. {s['errors'][0]}")
            if not s["settled"]:
                lines.append(f"   {s['attack']}: the server still held more descriptors than "
                             f"at rest {results['run']['settle']:g} s after it")
        for error in data["errors"]:
            lines.append(f"   ERROR: {error}")
        lines.append("")
    lines.append("fds and threads: peaks of the server process (the multiprocessing core's "
                 "parent, which accepts every connection); RSS +MB: its peak RSS over its RSS "
                 "when the scenario began; server CPU: cores its process tree used while the "
                 "agent ran. requests: connections opened (floods, slowloris) or calls made; "
                 "refused: reset as it arrived, cut: closed by the server before a whole "
                 "answer, held: still open at the end, 401: authentication refused.")
    return "\n".join(lines)


# -- the command line --------------------------------------------------------------------


def _setting(value: str) -> tuple[str, str, str]:
    key, sep, setting = value.partition("=")
    section, dot, option = key.partition(".")
    if not (sep and dot and section and option):
        raise argparse.ArgumentTypeError("SECTION.OPTION=VALUE, e.g. server.request_deadline=5")
    return section.strip(), option.strip(), setting.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` sets short defaults unless they are given explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=load._names(load.CORES), default=list(load.CORES),
                        help=f"comma-separated cores (default {','.join(load.CORES)})")
    parser.add_argument("--attacks", type=load._names(ATTACKS), default=list(ATTACKS),
                        help=f"comma-separated scenarios (default {','.join(ATTACKS)})")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 5 agent runs per scenario, 2 uploaders, shorter pauses")
    parser.add_argument("--runs", type=int, default=None,
                        help="agent runs per scenario (default 20, 5 with --quick)")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between two agent runs (default 0.1, 0.05 with --quick)")
    parser.add_argument("--lead", type=float, default=None,
                        help="seconds an attack goes on before the first agent run (default 1, "
                             "0.3 with --quick)")
    parser.add_argument("--flood", type=int, default=600,
                        help="idle connections of the flood from 127.0.0.1 (default 600, over "
                             "max_connections 512)")
    parser.add_argument("--flood-sources", type=int, default=1100,
                        help="idle connections of flood-sources over ten sources (default 1100)")
    parser.add_argument("--slow", type=int, default=48,
                        help="slowloris clients (default 48, over CherryPy's former 32 workers)")
    parser.add_argument("--uploads", type=int, default=None,
                        help="clients sending 9 MB statistics uploads (default 4, 2 with --quick)")
    parser.add_argument("--threads", type=int, default=4,
                        help="clients of bruteforce, register and ping (default 4)")
    parser.add_argument("--set", type=_setting, action="append", default=[],
                        metavar="SECTION.OPTION=VALUE",
                        help="a server option for every core, e.g. server.request_deadline=5 "
                             "(repeatable)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the server may take after an attack to hold no more "
                             "descriptors than at rest (default 10)")
    load.add_server_arguments(parser)
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in (("runs", 20, 5), ("interval", 0.1, 0.05), ("lead", 1.0, 0.3),
                              ("uploads", 4, 2)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.runs < 1 or min(args.flood, args.flood_sources, args.slow, args.uploads,
                            args.threads) < 1:
        parser.error("--runs and the sizes of the attacks must be positive")
    if args.interval < 0 or args.lead < 0:
        parser.error("--interval and --lead must not be negative")
    return args


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    """Measure every core; the results as a dict."""
    ws = Workspace(root, args)
    results: dict[str, Any] = {
        "environment": load.environment(),
        "run": {"runs": args.runs, "interval": args.interval, "lead": args.lead,
                "flood": args.flood, "flood_sources": args.flood_sources, "slow": args.slow,
                "uploads": args.uploads, "threads": args.threads, "settle": args.settle,
                "attacks": args.attacks,
                "set": ", ".join(f"[{s}] {o} = {v}" for s, o, v in args.set)},
        "cores": {},
    }
    agent = AgentProcess()
    try:
        for core in args.cores:
            reason = load.core_available(core)
            if reason is not None:
                results["cores"][core] = {"not_available": reason}
                continue
            results["cores"][core] = measure_core(ws, core, agent, args)
    finally:
        agent.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every available core was measured."""
    args = parse_args(argv)
    if not os.path.isdir("/proc/self/task"):
        print("hostile: needs Linux /proc to read the server's descriptors and memory",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, load._on_sigterm)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bcfg2-hostile-") as root:
            try:
                results = run(args, root)
            finally:
                load.stop_everything()
    except KeyboardInterrupt:
        load.stop_everything()
        print("hostile: interrupted; servers, agent and attackers stopped", file=sys.stderr)
        return 130
    results["seconds"] = time.monotonic() - started
    print(format_report(results))
    print(f"({results['seconds']:.0f} s in all)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(load._rounded(results), fh, indent=2)
            fh.write("\n")
    measured = [data for data in results["cores"].values() if "not_available" not in data]
    return 1 if not measured or any(data["errors"] for data in measured) else 0


if __name__ == "__main__":
    sys.exit(main())

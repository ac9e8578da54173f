"""Load benchmark of the network cores: how many agents a bcfg2-server serves.

It generates a repository (``genrepo.LOAD_SPEC`` by default: 1,000 clients
whose configurations hold 280 entries and about 150 KB), then for each
network core (``--backend builtin``, ``multiprocessing``, ``cherrypy``):

1. starts a real ``bcfg2-server`` on it (127.0.0.1, port 0, its own process
   session, logging warnings only as by default, so the port is read from
   /proc; ``--server-verbose`` adds ``-v``) and measures the start-up time
   to the first served configuration;
2. verifies a few clients' configurations (entry counts per tag, size, no
   ``failure`` attribute, the expected Cfg version of each Path) and records
   how the server treats a connection (HTTP version; closed after the
   response?); afterwards the configurations of all cores are compared
   byte for byte;
3. drives it with N concurrent simulated agents, each one a separate
   process (so the generator's GIL caps nothing), each call a new TCP+TLS
   connection as real agents make them, every request for another client:
   - ``getconfig``: GetConfig only -> configurations per second, latency
     p50/p95/p99;
   - ``run``: whole agent runs, DeclareVersion, GetProbes, GetConfig,
     RecvStats with a statistics document shaped like an agent's (every
     entry of the client's profile without content, one of them bad) ->
     runs per second, latency of the whole run (the four calls, without the
     agent's own work between them) p50/p95/p99;
4. samples the memory of the server's process tree (every process in the
   server's session: the parent and, for multiprocessing, its children)
   every ``--rss-interval`` seconds; "peak RSS" is the peak of the sum of
   their VmRSS (for a single process, its VmHWM, the exact peak, which is
   never below the samples), and the peak of the sum of their PSS is
   reported beside it (processes share the pages of their libraries, which
   a sum of RSS counts once per process);
5. measures the CPU the server tree and the load generator (agent processes
   plus this process) use during each level: client and server share the
   machine's cores, so the generator's share is printed next to every result.

Responses are checked cheaply by default (HTTP 200, a methodResponse without
a fault, for GetConfig a Configuration without ``failure=``): fully parsing a
150 KB XML-RPC answer costs the agent about 1 ms, CPU the server would then
not get. ``--parse-responses`` parses every answer as xmlrpc.client does.

Then it prints a table per core and the targets with PASS or MISS. It is a
report, not a test: the exit status is 0 when targets are missed and 1 only
when something could not be measured. A core whose module does not exist
(yet) is reported as not available and does not change the exit status.

Usage: python tests/bench/load.py [--quick] [--cores builtin,multiprocessing]
       [--concurrency 1,8] [--duration 10] [--json FILE]   (``make bench-load``)
"""

from __future__ import annotations

import argparse
import base64
import collections
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import math
import multiprocessing
import os
import pickle
import platform
import queue
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from dataclasses import asdict, fields
from typing import Any

import lxml.etree
from genrepo import AGENT_VERSION, LOAD_SPEC, Client, Repository, RepoSpec, generate
from live_repository import LISTENING, server_command

from bcfg2.devcert import make_self_signed

CORES = ("builtin", "multiprocessing", "cherrypy")
KINDS = ("getconfig", "run")
KIND_LABEL = {"getconfig": "GetConfig", "run": "agent run"}

#: the targets of the load benchmark (issue 4)
TARGET_CONFIGS_PER_S = 200.0  # best core, GetConfig at concurrency 8
TARGET_RUNS_PER_S = 100.0  # best core, whole agent runs at concurrency 8
TARGET_P50_S = 0.005  # best core, GetConfig p50 at concurrency 1
TARGET_SPEEDUP = 1.7  # multiprocessing / builtin, GetConfig/s at concurrency 8
TARGET_RSS_MB = 60.0  # builtin, peak RSS at 1,000 clients
TARGET_CONCURRENCY = 8
#: a core with its configuration cache warm, against the protocol floor (floor.py), same run
TARGET_CPU_VS_FLOOR = 3.0  # server CPU per GetConfig at concurrency 8, at most this many times
TARGET_RATE_VS_FLOOR = 0.7  # GetConfig/s at concurrency 8, at least this share
#: a core measured with its configuration cache off is reported under this name
COLD = "{core} (cold)"
FLOOR = "floor"

#: for scale: upstream Bcfg2 1.4 on this kind of machine, GetConfig at concurrency 1
UPSTREAM_NOTE = "upstream Bcfg2 1.4 served about 5 GetConfig/s at concurrency 1 (p50 180 ms)"

#: seconds between two attempts to get the first configuration at start-up
STARTUP_POLL = 0.02


class BenchError(Exception):
    """A measurement could not be made (the server failed, a deadline passed)."""


class AgentError(Exception):
    """One call of a simulated agent failed (connection, HTTP status, fault, content)."""


# -- one XML-RPC call over a new TLS connection -------------------------------------


def request_bytes(method: str, params: tuple[Any, ...], user: str, password: str,
                  port: int) -> bytes:
    """The HTTP request xmlrpc.client sends for a call (POST /RPC2, basic auth, gzip accepted)."""
    body = xmlrpc.client.dumps(params, method, encoding="utf-8").encode("utf-8")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    head = (f"POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: gzip\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: text/xml\r\n"
            f"User-Agent: Python-xmlrpc/{sys.version_info.major}.{sys.version_info.minor}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


@dataclasses.dataclass
class Response:
    """What came back for one call."""

    version: str
    status: int
    headers: dict[str, str]
    body: bytes
    #: True if the server closed the connection after the response (only when asked)
    closed: bool | None = None


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            raise AgentError("truncated chunked body")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]


def call(port: int, context: ssl.SSLContext, request: bytes, timeout: float,
         check_close: bool = False) -> Response:
    """Send one request on a new TCP+TLS connection and read the whole response."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # as http.client does: without it, Nagle's algorithm holds the last TLS record of a
        # large request (RecvStats) until the server's delayed ACK, about 40 ms later
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as err:
        raise AgentError(f"connect: {err}") from err
    try:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    except (OSError, ssl.SSLError) as err:
        raw.close()
        raise AgentError(f"TLS handshake: {err}") from err
    try:
        sock.sendall(request)
        buf = bytearray()
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise AgentError(f"connection closed before the response headers ({len(buf)} "
                                 f"bytes)")
            buf += chunk
        lines = bytes(buf[:end]).decode("iso-8859-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest.split(" ", 1)[0])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        body = bytearray(buf[end + 4:])
        length = headers.get("content-length")
        if length is not None:
            want = int(length)
            while len(body) < want:
                chunk = sock.recv(max(65536, want - len(body)))
                if not chunk:
                    raise AgentError(f"connection closed after {len(body)} of {want} bytes")
                body += chunk
            closed = None
            if check_close:
                sock.settimeout(2.0)
                try:
                    closed = sock.recv(1) == b""
                except TimeoutError:
                    closed = False
        else:  # read to the end, or the last chunk
            while not (headers.get("transfer-encoding") == "chunked"
                       and body.endswith(b"0\r\n\r\n")):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            closed = True if check_close else None
        data = bytes(body)
        if headers.get("transfer-encoding") == "chunked":
            data = _dechunk(data)
        if headers.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        return Response(version, status, headers, data, closed)
    except (OSError, ssl.SSLError, ValueError) as err:
        raise AgentError(f"{type(err).__name__}: {err}") from err
    finally:
        sock.close()


def check_response(method: str, resp: Response, parse: bool) -> Any:
    """The result of a call; AgentError on an HTTP error, a fault or a failed configuration."""
    if resp.status != 200:
        raise AgentError(f"{method}: HTTP {resp.status}: {resp.body[:200]!r}")
    body = resp.body
    if method == "GetConfig" and not parse:
        if b"<fault>" in body or b"<methodResponse>" not in body:
            raise AgentError(f"GetConfig: not a configuration: {body[:300]!r}")
        if b"Configuration" not in body[:400] or b"failure=" in body:
            raise AgentError(f"GetConfig: an error or failed entries: {body[:300]!r}")
        return None
    try:
        (result,), _ = xmlrpc.client.loads(body)
    except xmlrpc.client.Fault as err:
        raise AgentError(f"{method}: fault {err.faultCode}: {err.faultString}") from err
    except Exception as err:  # noqa: BLE001 - any unparsable answer is a failed call
        raise AgentError(f"{method}: unparsable response: {err}") from err
    if method == "GetConfig" and (not str(result).startswith("<Configuration")
                                  or "failure=" in str(result)):
        raise AgentError(f"GetConfig: an error or failed entries: {str(result)[:300]}")
    if method in ("DeclareVersion", "RecvStats") and result is not True:
        raise AgentError(f"{method} returned {result!r}")
    return result


# -- the simulated agents (each in a process of its own) -----------------------------


@dataclasses.dataclass
class WorkerSpec:
    """What one agent process does: which clients, which calls, for how long."""

    port: int
    cafile: str
    kind: str
    #: (uuid, password, statistics document) of the clients it calls for, in order
    clients: list[tuple[str, str, str]]
    duration: float | None
    requests: int | None
    warmup: float
    warmup_requests: int
    timeout: float
    parse: bool
    start_timeout: float


def _worker_main(spec: WorkerSpec, ready: Any, go: Any, start_at: Any, results: Any) -> None:
    """Entry point of an agent process: prepare, wait for the start, call, report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        results.put(_worker_loop(spec, ready, go, start_at))
    except BaseException as err:  # noqa: BLE001 - report whatever went wrong to the parent
        results.put({"pid": os.getpid(), "fatal": f"{type(err).__name__}: {err}"})


def _worker_loop(spec: WorkerSpec, ready: Any, go: Any, start_at: Any) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=spec.cafile)
    port = spec.port
    prepared = []
    for uuid, password, stats in spec.clients:
        calls = [("GetConfig", request_bytes("GetConfig", (), uuid, password, port))]
        if spec.kind == "run":
            calls = [("DeclareVersion", request_bytes("DeclareVersion", (AGENT_VERSION,), uuid,
                                                      password, port)),
                     ("GetProbes", request_bytes("GetProbes", (), uuid, password, port)),
                     *calls,
                     ("RecvStats", request_bytes("RecvStats", (stats,), uuid, password, port))]
        prepared.append(calls)
    ready.put(os.getpid())
    if not go.wait(spec.start_timeout):
        return {"pid": os.getpid(), "fatal": "never told to start"}
    begin = start_at.value
    measure_from = begin + spec.warmup
    stop_at = measure_from + spec.duration if spec.duration is not None else math.inf
    while time.monotonic() < begin:
        time.sleep(max(0.0, begin - time.monotonic()))
    samples: list[tuple[float, float, bool]] = []
    call_times: dict[str, list[float]] = collections.defaultdict(list)
    errors: list[str] = []
    error_count = 0
    done = measured = 0
    cpu0 = wall0 = None
    i = 0
    while True:
        now = time.monotonic()
        if now >= stop_at:
            break
        if spec.requests is not None and measured >= spec.requests:
            break
        in_window = (now >= measure_from if spec.requests is None
                     else done >= spec.warmup_requests)
        if in_window and cpu0 is None:
            cpu0, wall0 = time.process_time(), now
        calls = prepared[i % len(prepared)]
        i += 1
        start = time.monotonic()
        ok = True
        durations = []
        for method, request in calls:
            t = time.monotonic()
            try:
                check_response(method, call(port, context, request, spec.timeout), spec.parse)
            except AgentError as err:
                ok = False
                error_count += 1
                if len(errors) < 5:
                    errors.append(str(err)[:500])
                break
            durations.append((method, time.monotonic() - t))
        end = time.monotonic()
        done += 1
        if in_window:
            measured += 1
            samples.append((start, end, ok))
            if ok:
                for method, seconds in durations:
                    call_times[method].append(seconds)
        if not ok:
            if error_count > 100 and error_count > 2 * done // 3:
                errors.append("stopped after too many errors")
                break
            time.sleep(0.05)  # a failing server is not hammered
    cpu = time.process_time() - cpu0 if cpu0 is not None else 0.0
    wall = time.monotonic() - wall0 if wall0 is not None else 0.0
    return {"pid": os.getpid(), "samples": samples, "calls": dict(call_times),
            "errors": error_count, "messages": errors, "cpu_s": cpu, "wall_s": wall}


# -- the server process tree ---------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat[stat.rindex(")") + 2:].split()


def session_pids(sid: int) -> list[int]:
    """Every live process of a session: a server started with its own session and its children."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields_ = _stat_fields(int(name))
            # from the third field of proc(5): state ppid pgrp session
            if fields_ is not None and fields_[3] == str(sid) and fields_[0] != "Z":
                out.append(int(name))
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is within user)
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    steal = values[7] if len(values) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, steal / tick


def listening_port(pids: list[int]) -> int | None:
    """The port of a TCP socket listening on 127.0.0.1 that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    if not inodes:
        return None
    table = _read("/proc/net/tcp") or ""
    for line in table.splitlines()[1:]:
        cols = line.split()
        # sl local_address rem_address st ... inode (the tenth column)
        if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:
            address, _, port = cols[1].partition(":")
            if address == "0100007F":
                return int(port, 16)
    return None


def _status_kb(text: str, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


class CoreServer:
    """A ``bcfg2-server --backend CORE`` process, its children, its stderr and its memory."""

    def __init__(self, argv: list[str], cwd: str, rss_interval: float) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)
        _servers.append(self)
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, name="server-stderr",
                                        daemon=True)
        self._reader.start()
        self.rss_interval = rss_interval
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.max_processes = 0
        self.hwm_kb: dict[int, int] = {}
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample_memory, name="rss-sampler",
                                         daemon=True)
        self._sampler.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.tail.append(line.rstrip("\n"))
                if len(self._lines) < 1000:
                    self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _sample_memory(self) -> None:
        while not self._sampling.is_set():
            self.sample_memory()
            self._sampling.wait(self.rss_interval)

    def sample_memory(self) -> tuple[int, int]:
        """One sample of the tree's RSS and PSS in kB (each process's VmHWM is noted too)."""
        rss = pss = count = 0
        for pid in session_pids(self.pid):
            status = _read(f"/proc/{pid}/status")
            if status is None:
                continue
            count += 1
            rss += _status_kb(status, "VmRSS")
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), _status_kb(status, "VmHWM"))
            rollup = _read(f"/proc/{pid}/smaps_rollup")
            if rollup is not None:
                pss += _status_kb(rollup, "Pss")
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.max_processes = max(self.max_processes, count)
        return rss, pss

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr, indented."""
        with self._cond:
            return "\n".join(f"    {line}" for line in self.tail) or "    (nothing)"

    def port(self, deadline: float) -> int:
        """The port the server listens on: from /proc, or its "Listening on" line if verbose.

        The server runs without ``-v`` by default, as deployed (warnings only):
        the listening TCP socket of a process of its session tells the port.
        """
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    match = LISTENING.search(line)
                    if match:
                        return int(match.group(1))
                seen = len(self._lines)
                port = listening_port(session_pids(self.pid))
                if port is not None:
                    return port
                if self._eof or self.proc.poll() is not None:
                    raise BenchError(f"the server exited (status {self.proc.wait()}) before "
                                     f"listening:\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"the server did not listen in time:\n{self.stderr_tail()}")
                self._cond.wait(min(remaining, 0.01))

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the server exited with status {self.proc.returncode}:\n"
                             f"{self.stderr_tail()}")

    def cpu_seconds(self) -> float:
        """utime + stime of every live process of the tree (children reaped count in cutime)."""
        total = 0
        for pid in session_pids(self.pid):
            fields_ = _stat_fields(pid)
            if fields_ is not None:
                # utime stime cutime cstime are fields 14-17 of proc(5)
                total += sum(int(value) for value in fields_[11:15])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server, SIGKILL it after ``timeout``; then kill what is left of its session."""
        self._sampling.set()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            deadline = time.monotonic() + 5
            while (left := session_pids(self.pid)) and time.monotonic() < deadline:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            self._sampler.join(timeout=5)
            self._reader.join(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            if self in _servers:
                _servers.remove(self)


#: every server process started and not yet stopped, every agent process, every profiler
_servers: list[CoreServer] = []
_workers: list[Any] = []
_profilers: list[subprocess.Popen] = []


def stop_everything() -> None:
    """Stop every agent process, profiler and server tree; one failure does not spare the rest."""
    for prof in list(_profilers):
        try:
            prof.kill()
            prof.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _profilers.remove(prof)
    for proc in list(_workers):
        try:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        except (OSError, ValueError):
            pass
        _workers.remove(proc)
    for server in list(_servers):
        try:
            server.stop()
        except BaseException:  # noqa: BLE001 - keep stopping the rest; kill as a last resort
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except OSError:
                pass
            if server in _servers:
                _servers.remove(server)


# -- the benchmark -----------------------------------------------------------------


class Workspace:
    """The temporary directory of one run: TLS material, bcfg2.conf, the repository."""

    def __init__(self, root: str, children: int, verbose: bool = False) -> None:
        self.root = root
        self.verbose = verbose
        self.cert = os.path.join(root, "server.crt")
        self.key = os.path.join(root, "server.key")
        make_self_signed(self.cert, self.key)
        self.password = base64.b32encode(os.urandom(10)).decode("ascii")
        self.conf = os.path.join(root, "bcfg2.conf")
        with open(self.conf, "w", encoding="utf-8") as fh:
            fh.write("[logging]\nsyslog = false\n")
            if children:
                fh.write(f"[server]\nchildren = {children}\n")
        #: the same, with the configuration cache off: every GetConfig a build
        self.conf_cold = os.path.join(root, "bcfg2-cold.conf")
        with open(self.conf, encoding="utf-8") as src, \
                open(self.conf_cold, "w", encoding="utf-8") as fh:
            fh.write(src.read() + "[caching]\nconfigurations = 0\n")
        self.context = ssl.create_default_context(cafile=self.cert)
        self._runs = 0

    def start_server(self, repo: Repository, core: str, rss_interval: float,
                     cold: bool = False) -> CoreServer:
        """Start bcfg2-server with ``--backend core`` on ``repo`` (fresh state dir, port 0);
        ``cold``: with its configuration cache off; core ``floor``: floor.py instead."""
        self._runs += 1
        state = os.path.join(self.root, f"state-{self._runs}-{core}")
        if core == FLOOR:
            argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "floor.py"),
                    "-C", self.conf, "-Q", repo.root, "--state-dir", state,
                    "--ssl-cert", self.cert, "--ssl-key", self.key]
            return CoreServer(argv, cwd=self.root, rss_interval=rss_interval)
        argv = [*server_argv(), "-C", self.conf_cold if cold else self.conf,
                *(["-v"] if self.verbose else []),
                "-Q", repo.root, "--state-dir", state,
                "-S", "https://127.0.0.1:0",
                "--ssl-cert", self.cert, "--ssl-key", self.key,
                "-x", self.password, "--backend", core]
        return CoreServer(argv, cwd=self.root, rss_interval=rss_interval)


def server_argv() -> list[str]:
    """The server command: ``$BCFG2_BENCH_SERVER`` (split like a shell) or bcfg2-server.

    The variable lets the same benchmark run another installation or a wrapper
    script that patches something before calling ``bcfg2.server.main``, to
    compare a change before making it.
    """
    override = os.environ.get("BCFG2_BENCH_SERVER", "").strip()
    return shlex.split(override) if override else server_command()


def environment() -> dict[str, Any]:
    """Where a benchmark runs: Python, the system, its CPUs, the server command."""
    return {"python": platform.python_version(),
            "platform": f"{platform.system()} {platform.release()}",
            "cpus": os.cpu_count(), "server": server_argv()}


def machine_line(env: dict[str, Any]) -> str:
    """``environment()`` in a report's first line: "Python 3.11.7, Linux 6.1, 2 CPUs"."""
    return f"Python {env['python']}, {env['platform']}, {env['cpus']} CPUs"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark driving bcfg2-server processes has: children, timeouts, json."""
    parser.add_argument("--children", type=int, default=0,
                        help="[server] children for the multiprocessing core (default 0: one "
                             "per CPU)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="socket timeout of every call (default 30)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="deadline for a server to serve its first config (default 120)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")


def core_available(core: str) -> str | None:
    """None if the core's module exists; otherwise why it is not available."""
    try:
        from bcfg2.plugin.manager import BUILTIN_CORES as SERVER_CORES
    except ImportError as err:
        return f"bcfg2.plugin.manager cannot be imported: {err}"
    target = SERVER_CORES.get(core)
    if target is None:
        return f"bcfg2.server knows no core {core!r}"
    module = target.partition(":")[0]
    try:
        if importlib.util.find_spec(module) is None:
            return f"{module} does not exist yet"
    except ImportError as err:
        return f"{module} cannot be found: {err}"
    return None


def best_core() -> str:
    """The core ``--backend best`` chooses on this machine."""
    from bcfg2.plugin.manager import best_core as chosen

    return chosen()


def xmlrpc_call(port: int, client: Client, context: ssl.SSLContext, method: str,
                *params: Any, timeout: float = 30.0) -> Any:
    """One call with xmlrpc.client and a fresh transport (a new connection), as an agent makes it."""

    class Transport(xmlrpc.client.SafeTransport):
        def make_connection(self, host: Any) -> Any:
            conn = super().make_connection(host)
            conn.timeout = timeout
            return conn

    url = f"https://{client.uuid}:{client.password}@127.0.0.1:{port}/RPC2"
    with xmlrpc.client.ServerProxy(url, transport=Transport(context=context)) as proxy:
        return getattr(proxy, method)(*params)


def verify_config(config: str, repo: Repository, client: Client) -> dict[str, Any]:
    """Check a served configuration against what the generator wrote; its counts and size."""
    expected = repo.expected_entries(client)
    root = lxml.etree.fromstring(config.encode("utf-8"))
    counts = collections.Counter(el.tag for el in root.iter() if el.getparent() is not None
                                 and el.getparent().tag in ("Bundle", "Independent"))
    failures = [f"{el.tag}:{el.get('name')}: {el.get('failure')}" for el in root.iter()
                if el.get("failure") is not None]
    if root.tag != "Configuration" or failures:
        raise BenchError(f"{client.name}: {root.tag} with {len(failures)} failed entries: "
                         f"{failures[:3]}")
    got = {tag: counts.get(tag, 0) for tag in expected}
    if got != expected or sum(counts.values()) != sum(expected.values()):
        raise BenchError(f"{client.name}: expected entries {expected}, got {dict(counts)}")
    paths = {el.get("name"): el for el in root.iter("Path")}
    for entry in repo.entries_of(client):
        served = os.path.basename(repo.served_file(entry, client))
        text = paths[repo.entry_name(entry)].text or ""
        if not text.startswith(f"# {repo.entry_name(entry)} {served}"):
            raise BenchError(f"{client.name}: {repo.entry_name(entry)} is not served from "
                             f"{served}: {text[:80]!r}")
    return {"entries": sum(counts.values()), "by_tag": got, "bytes": len(config.encode())}


def statistics_document(config: str) -> str:
    """An agent's statistics for a configuration: every entry without content, one bad."""
    root = lxml.etree.fromstring(config.encode("utf-8"))
    entries = [el for el in root.iter() if el.getparent() is not None
               and el.getparent().tag in ("Bundle", "Independent")]
    upload = lxml.etree.Element("upload-statistics")
    stats = lxml.etree.SubElement(upload, "Statistics", total=str(len(entries)),
                                  version="2.0", revision=root.get("revision", "-1"),
                                  good=str(len(entries) - 1), state="dirty")
    flags = lxml.etree.SubElement(stats, "Flags")
    for name in ("dry_run", "only_important"):
        lxml.etree.SubElement(flags, "Flag", name=name, value="False")
    groups = {name: lxml.etree.SubElement(stats, name)
              for name in ("Modified", "Extra", "Good", "Bad")}
    for n, el in enumerate(entries):
        copy = lxml.etree.SubElement(groups["Bad" if n == 0 else "Good"], el.tag,
                                     attrib=dict(el.attrib))
        copy.set("qtext", "")
        if n == 0:
            copy.set("current_mode", "0600")
    lxml.etree.SubElement(groups["Extra"], "Package", name="bench-extra", type="deb",
                          current_version="0.1-1")
    now = 1_700_000_000.0
    lxml.etree.SubElement(stats, "OpStamps", **{
        phase: f"{now + n * 0.25:.6f}" for n, phase in enumerate(
            ("start", "initialization", "probe_download", "probe_upload", "config_download",
             "config_parse", "inventory", "finished"))})
    return lxml.etree.tostring(upload, encoding="unicode")


def start_profiler(pyspy: str, pid: int, out: str, seconds: float, rate: int) -> subprocess.Popen:
    """py-spy sampling the server tree (all threads, child processes) for ``seconds``."""
    argv = [pyspy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
            "--rate", str(rate), "--duration", str(max(1, math.ceil(seconds))),
            "--format", "raw", "--output", out]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    _profilers.append(proc)
    return proc


def finish_profiler(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for py-spy to write its output; its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    finally:
        if proc in _profilers:
            _profilers.remove(proc)
    return err or ""


def summarize_profile(path: str, top: int = 15) -> dict[str, Any]:
    """Top functions of py-spy's collapsed stacks: own samples and samples with it on the stack.

    Shares are of all samples taken in the server tree (idle threads are not
    sampled); line numbers are dropped, so a function counts once per stack.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    processes: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            procs = [f for f in frames if f.startswith("process ")]
            funcs = [re.sub(r":\d+\)$", ")", f) for f in frames if not f.startswith("process ")]
            total += n
            label = procs[-1].split(":", 1)[1] if procs else "?"
            processes["child" if "multiprocessing" in label and "spawn" in label
                      else "parent"] += n
            if funcs:
                own[funcs[-1]] += n
            for func in set(funcs):
                inclusive[func] += n
    share = 100.0 / max(total, 1)
    return {
        "samples": total,
        "processes": {name: n * share for name, n in processes.items()},
        "self": [(n * share, func) for func, n in own.most_common(top)],
        "inclusive": [(n * share, func) for func, n in inclusive.most_common(top * 4)
                      if n * share < 95][:top * 2],
    }


def _profile_text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['samples']} samples; by process: "
             + ", ".join(f"{name} {pct:.0f}%" for name, pct in summary["processes"].items()),
             "", "own time (the function itself):"]
    lines += [f"  {pct:5.1f}%  {func}" for pct, func in summary["self"]]
    lines += ["", "inclusive (the function on the stack):"]
    lines += [f"  {pct:5.1f}%  {func}" for pct, func in summary["inclusive"]]
    return "\n".join(lines) + "\n"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_level(server: CoreServer, port: int, ws: Workspace, kind: str, concurrency: int,
              order: list[tuple[str, str, str]], args: argparse.Namespace,
              label: str) -> dict[str, Any]:
    """Drive the server with ``concurrency`` agent processes; throughput, latency, CPU.

    With ``--profile``, py-spy samples the server tree during the measured window.
    """
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    per_worker = math.ceil(args.requests / concurrency) if args.requests else None
    profiler: subprocess.Popen | None = None
    profile_out = ""
    procs = []
    for w in range(concurrency):
        spec = WorkerSpec(port=port, cafile=ws.cert, kind=kind, clients=order[w::concurrency],
                          duration=None if args.requests else args.duration,
                          requests=per_worker, warmup=0.0 if args.requests else args.warmup,
                          warmup_requests=args.warmup_requests, timeout=args.timeout,
                          parse=args.parse_responses, start_timeout=60.0)
        proc = ctx.Process(target=_worker_main, args=(spec, ready, go, start_at, results),
                           name=f"agent-{w}", daemon=True)
        _workers.append(proc)
        procs.append(proc)
        proc.start()
    try:
        deadline = time.monotonic() + 60
        for _ in range(concurrency):
            try:
                ready.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty as err:
                raise BenchError(f"agent processes not ready within 60 s: {err!r}") from err
        begin = time.monotonic() + 0.05
        start_at.value = begin
        go.set()
        server.check_alive()
        if args.requests is None:
            t0 = begin + args.warmup
            time.sleep(max(0.0, t0 - time.monotonic()))
            if args.profile:
                profile_out = os.path.join(args.profile, f"{label}.txt")
                profiler = start_profiler(args.py_spy, server.pid, profile_out, args.duration,
                                          args.profile_rate)
            server_cpu0, own_cpu0, machine0 = (server.cpu_seconds(), time.process_time(),
                                               machine_cpu())
            time.sleep(max(0.0, t0 + args.duration - time.monotonic()))
            server_cpu1, own_cpu1, machine1 = (server.cpu_seconds(), time.process_time(),
                                               machine_cpu())
            window = (t0, t0 + args.duration)
        else:
            server_cpu0, own_cpu0, machine0 = (server.cpu_seconds(), time.process_time(),
                                               machine_cpu())
        collected = []
        deadline = time.monotonic() + (args.timeout * 4 + 30 if args.requests is None
                                       else args.timeout * (per_worker or 1) + 60)
        while len(collected) < concurrency:
            try:
                collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty as err:
                raise BenchError(f"agent processes did not finish in time: {err!r}") from err
            except (EOFError, OSError, pickle.UnpicklingError) as err:
                raise BenchError(f"an agent process's results were lost: {err!r}") from err
        if args.requests is not None:
            server_cpu1, own_cpu1, machine1 = (server.cpu_seconds(), time.process_time(),
                                               machine_cpu())
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc in _workers:
                _workers.remove(proc)
    profile = None
    if profiler is not None:
        err = finish_profiler(profiler, args.duration + 30)
        if not os.path.exists(profile_out):
            raise BenchError(f"py-spy wrote no profile: {err.strip()[-500:]}")
        profile = summarize_profile(profile_out)
        profile["file"] = profile_out
        with open(os.path.join(args.profile, f"{label}.top.txt"), "w", encoding="utf-8") as fh:
            fh.write(_profile_text(profile))
    fatal = [r["fatal"] for r in collected if "fatal" in r]
    if fatal:
        raise BenchError(f"agent process failed: {fatal[0]}")
    samples = [s for r in collected for s in r["samples"]]
    if args.requests is not None:
        if not samples:
            raise BenchError("no request was measured")
        window = (min(s[0] for s in samples), max(s[1] for s in samples))
    length = max(window[1] - window[0], 1e-9)
    ok = [s for s in samples if s[2]]
    completed = [s for s in ok if window[0] <= s[1] <= window[1]]
    latencies = [s[1] - s[0] for s in ok if s[0] >= window[0]]
    if not latencies:
        raise BenchError(f"no {KIND_LABEL[kind]} succeeded: "
                         f"{[m for r in collected for m in r['messages']][:3]}")
    calls: dict[str, list[float]] = collections.defaultdict(list)
    for r in collected:
        for method, values in r["calls"].items():
            calls[method].extend(values)
    agents_cpu = sum(r["cpu_s"] for r in collected)
    agents_wall = max((r["wall_s"] for r in collected), default=length)
    return {
        "kind": kind,
        "concurrency": concurrency,
        "window_s": length,
        "completed": len(completed),
        "per_s": len(completed) / length,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies),
        "errors": sum(r["errors"] for r in collected),
        "error_messages": [m for r in collected for m in r["messages"]][:5],
        "call_p50_s": {method: percentile(values, 50) for method, values in calls.items()},
        "server_cpu_cores": (server_cpu1 - server_cpu0) / length,
        "agents_cpu_cores": agents_cpu / max(agents_wall, 1e-9),
        "bench_cpu_cores": (own_cpu1 - own_cpu0) / length,
        "machine_cpu_cores": (machine1[0] - machine0[0]) / length,
        "steal_cpu_cores": (machine1[1] - machine0[1]) / length,
        "profile": profile,
        "other_cpu_cores": max(0.0, (machine1[0] - machine0[0]
                                     - (server_cpu1 - server_cpu0) - (own_cpu1 - own_cpu0))
                               / length - agents_cpu / max(agents_wall, 1e-9)),
    }


def warm_up(server: CoreServer, port: int, ws: Workspace, repo: Repository,
            args: argparse.Namespace) -> dict[str, Any]:
    """GetConfig for every client, ``--warm-passes`` times, 8 at a time: the caches of
    every child (each request goes to any one of them) then hold most configurations."""
    import concurrent.futures

    requests = [request_bytes("GetConfig", (), c.uuid, c.password, port) for c in repo.clients]
    start, cpu0 = time.monotonic(), server.cpu_seconds()
    with concurrent.futures.ThreadPoolExecutor(TARGET_CONCURRENCY) as pool:
        for _ in range(args.warm_passes):
            for resp in pool.map(lambda req: call(port, ws.context, req, args.timeout), requests):
                check_response("GetConfig", resp, False)
    return {"passes": args.warm_passes, "requests": args.warm_passes * len(requests),
            "wall_s": time.monotonic() - start, "server_cpu_s": server.cpu_seconds() - cpu0}


def measure_core(ws: Workspace, repo: Repository, core: str, args: argparse.Namespace,
                 stats_docs: dict[str, str], cold: bool = False) -> dict[str, Any]:
    """Start-up, verification, every load level and the memory of one core (``cold``: its
    configuration cache off; else warmed up first)."""
    data: dict[str, Any] = {"levels": [], "errors": []}
    verify_clients = [repo.clients[round(i * (len(repo.clients) - 1) / max(1, args.verify - 1))]
                      for i in range(args.verify)]
    server = ws.start_server(repo, core, args.rss_interval, cold)
    try:
        deadline = time.monotonic() + args.startup_timeout
        port = server.port(deadline)
        listening = time.monotonic() - server.started
        client = repo.clients[0]
        request = request_bytes("GetConfig", (), client.uuid, client.password, port)
        while True:
            try:
                check_response("GetConfig", call(port, ws.context, request, args.timeout), True)
                break
            except AgentError as err:
                server.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"no configuration served within "
                                     f"{args.startup_timeout:g} s: {err}") from err
                time.sleep(STARTUP_POLL)
        first = time.monotonic() - server.started
        rss, pss = server.sample_memory()
        data["startup"] = {"first_config_s": first, "listening_s": listening,
                           "cpu_s": server.cpu_seconds(), "rss_mb": rss / 1024,
                           "pss_mb": pss / 1024}

        # what one connection looks like, and what an agent run gets back
        resp = call(port, ws.context, request, args.timeout, check_close=True)
        check_response("GetConfig", resp, True)
        data["connection"] = {"http_version": resp.version, "closed_after_response": resp.closed,
                              "content_encoding": resp.headers.get("content-encoding", "")}
        data["configs"] = {}
        for vc in verify_clients:
            try:
                config = xmlrpc_call(port, vc, ws.context, "GetConfig", timeout=args.timeout)
            except (OSError, xmlrpc.client.Error) as err:
                raise BenchError(f"GetConfig for {vc.name} failed: {err}") from err
            info = verify_config(config, repo, vc)
            info["sha256"] = hashlib.sha256(config.encode()).hexdigest()
            data["configs"][vc.name] = info
            if vc.profile not in stats_docs:
                stats_docs[vc.profile] = statistics_document(config)
        for profile in sorted({c.profile for c in repo.clients} - set(stats_docs)):
            pc = next(c for c in repo.clients if c.profile == profile)
            stats_docs[profile] = statistics_document(
                xmlrpc_call(port, pc, ws.context, "GetConfig", timeout=args.timeout))
        vc = verify_clients[0]
        try:
            declared = xmlrpc_call(port, vc, ws.context, "DeclareVersion", AGENT_VERSION)
            probes = xmlrpc_call(port, vc, ws.context, "GetProbes")
            recv = xmlrpc_call(port, vc, ws.context, "RecvStats", stats_docs[vc.profile])
        except (OSError, xmlrpc.client.Error) as err:
            raise BenchError(f"agent run for {vc.name} failed: {err}") from err
        if declared is not True or recv is not True or "probes" not in str(probes):
            raise BenchError(f"unexpected agent-run answers: DeclareVersion {declared!r}, "
                             f"GetProbes {str(probes)[:100]!r}, RecvStats {recv!r}")
        probe_count = len(lxml.etree.fromstring(str(probes).encode()))
        if probe_count:
            raise BenchError(f"GetProbes returned {probe_count} probes; the benchmark "
                             "repository has none (agent runs skip RecvProbeData)")

        if not cold and core != FLOOR and args.warm_passes:
            print(f"[{core}] warming the configuration cache ...", file=sys.stderr, flush=True)
            data["warm_up"] = warm_up(server, port, ws, repo, args)
        rng = random.Random(4)
        order = [(c.uuid, c.password, stats_docs[c.profile]) for c in repo.clients]
        rng.shuffle(order)
        for kind in args.kinds:
            for concurrency in args.concurrency:
                print(f"[{core}] {KIND_LABEL[kind]} at concurrency {concurrency} ...",
                      file=sys.stderr, flush=True)
                server.check_alive()
                try:
                    level = run_level(server, port, ws, kind, concurrency, order, args,
                                      f"{core}-{kind}-c{concurrency}")
                except BenchError as err:
                    data["errors"].append(f"{KIND_LABEL[kind]} at concurrency {concurrency}: "
                                          f"{err}")
                    continue
                data["levels"].append(level)
                if level["errors"]:
                    data["errors"].append(
                        f"{KIND_LABEL[kind]} at concurrency {concurrency}: {level['errors']} "
                        f"failed calls, e.g. {level['error_messages'][:1]}")
        server.check_alive()
        server.sample_memory()
    except BenchError as err:
        data["errors"].append(str(err))
    finally:
        if server.proc.poll() is None:
            server.sample_memory()
        server.stop()
    peak_kb = server.peak_rss_kb
    if server.max_processes == 1:
        peak_kb = max(peak_kb, sum(server.hwm_kb.values()))
    data["memory"] = {"peak_rss_mb": peak_kb / 1024,
                      "peak_pss_mb": server.peak_pss_kb / 1024,
                      "sum_vmhwm_mb": sum(server.hwm_kb.values()) / 1024,
                      "processes": server.max_processes}
    return data


# -- the report ---------------------------------------------------------------------


def _level(data: dict[str, Any] | None, kind: str, concurrency: int) -> dict[str, Any] | None:
    if not data:
        return None
    for level in data.get("levels", []):
        if level["kind"] == kind and level["concurrency"] == concurrency:
            return level
    return None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the value measured and PASS, MISS or "not measured"."""
    cores = results["cores"]
    best = results["best_core"]
    c = TARGET_CONCURRENCY
    targets = []

    def add(name: str, value: float | None, target: str, ok: bool | None, unit: str) -> None:
        status = ("not measured" if value is None or ok is None else "info" if not target
                  else "PASS" if ok else "MISS")
        targets.append({"target": name, "value": value, "unit": unit, "goal": target,
                        "status": status})

    level = _level(cores.get(best), "getconfig", c)
    value = level["per_s"] if level else None
    add(f"{best} (best) GetConfig/s at concurrency {c}", value, f">= {TARGET_CONFIGS_PER_S:g}",
        None if value is None else value >= TARGET_CONFIGS_PER_S, "/s")
    level = _level(cores.get(best), "run", c)
    value = level["per_s"] if level else None
    add(f"{best} (best) agent runs/s at concurrency {c}", value, f">= {TARGET_RUNS_PER_S:g}",
        None if value is None else value >= TARGET_RUNS_PER_S, "/s")
    level = _level(cores.get(best), "getconfig", 1)
    value = level["p50_s"] * 1000 if level else None
    add(f"{best} (best) GetConfig p50 at concurrency 1", value, f"<= {TARGET_P50_S * 1000:g} ms",
        None if value is None else value <= TARGET_P50_S * 1000, "ms")
    # the children's parallel rendering: measured where both cores build (the cache off)
    # when that was run; with the cache warm neither core renders
    cold = all(COLD.format(core=name) in cores for name in ("multiprocessing", "builtin"))
    mp, bi = (_level(cores.get(COLD.format(core=name) if cold else name), "getconfig", c)
              for name in ("multiprocessing", "builtin"))
    value = mp["per_s"] / bi["per_s"] if mp and bi and bi["per_s"] else None
    add(f"multiprocessing / builtin GetConfig/s at concurrency {c}"
        f"{' (cold)' if cold else ''}", value,
        f">= {TARGET_SPEEDUP:g}x", None if value is None else value >= TARGET_SPEEDUP, "x")
    floor = _level(cores.get(FLOOR), "getconfig", c)
    for name in (best, COLD.format(core=best)):
        level = _level(cores.get(name), "getconfig", c)
        ratio = (cpu_per_call(level) / cpu_per_call(floor)) if level and floor else None
        if name == best:
            add(f"{best} (cache warm) server CPU per GetConfig vs the floor's, concurrency {c}",
                ratio, f"<= {TARGET_CPU_VS_FLOOR:g}x",
                None if ratio is None else ratio <= TARGET_CPU_VS_FLOOR, "x")
            share = level["per_s"] / floor["per_s"] if level and floor else None
            add(f"{best} (cache warm) GetConfig/s vs the floor's, concurrency {c}", share,
                f">= {TARGET_RATE_VS_FLOOR:g}x",
                None if share is None else share >= TARGET_RATE_VS_FLOOR, "x")
        elif level:
            add(f"{name} server CPU per GetConfig, concurrency {c}",
                cpu_per_call(level) * 1000, "", True, "ms")
    builtin = cores.get("builtin") or {}
    memory = builtin.get("memory")
    value = memory["peak_rss_mb"] if memory and memory["peak_rss_mb"] else None
    add(f"builtin peak RSS at {results['repository']['spec']['clients']:,} clients", value,
        f"<= {TARGET_RSS_MB:g} MB", None if value is None else value <= TARGET_RSS_MB, "MB")
    return targets


def cpu_per_call(level: dict[str, Any]) -> float:
    """Server CPU seconds per completed call of a level (CPU time: fair on a busy machine)."""
    return level["server_cpu_cores"] * level["window_s"] / max(level["completed"], 1)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.rjust(width) if 0 < i < len(row) else cell.ljust(width)
                             for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
                   .rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return out


def format_report(results: dict[str, Any]) -> str:
    """The human-readable report: one table per core, the comparison and the targets."""
    env = results["environment"]
    rep = results["repository"]
    run = results["run"]
    lines = [
        f"bcfg2-server load benchmark ({machine_line(env)}; agents and server share them)",
        f"  repository: {rep['files']:,} files, {rep['spec']['clients']:,} clients; a "
        f"configuration holds {rep['entries_per_config']} entries "
        f"({', '.join(f'{n} {t}' for t, n in rep['by_tag'].items())}), about "
        f"{rep['config_kb']:.0f} KB; statistics documents about {rep['stats_kb']:.0f} KB",
        f"  load: {run['what']}; concurrency {', '.join(map(str, run['concurrency']))}; every "
        f"call a new TLS connection; each request for another client; responses "
        f"{'parsed' if run['parse_responses'] else 'checked without a full XML-RPC parse'}; "
        f"server {'verbose (-v)' if run['server_verbose'] else 'logging warnings only'}",
        f"  {UPSTREAM_NOTE}",
        "",
    ]
    for core, data in results["cores"].items():
        if "not_available" in data:
            lines += [f"== {core}: not available ({data['not_available']})", ""]
            continue
        head = f"== {core}"
        st = data.get("startup")
        if st:
            head += (f": start-up to first config {st['first_config_s']:.2f} s (listening at "
                     f"{st['listening_s']:.2f} s)")
        mem = data.get("memory")
        if mem:
            head += (f"; peak RSS {mem['peak_rss_mb']:.1f} MB (PSS {mem['peak_pss_mb']:.1f} MB, "
                     f"{mem['processes']} process{'es' if mem['processes'] != 1 else ''}")
            if st:
                head += f"; {st['rss_mb']:.1f} MB RSS after the first config"
            head += ")"
        lines.append(head)
        conn = data.get("connection")
        if conn:
            closed = {True: "closes the connection after each response",
                      False: "keeps the connection open after a response",
                      None: "(connection handling unknown)"}[conn["closed_after_response"]]
            lines.append(f"   server answers {conn['http_version']} and {closed}"
                         + (f"; {conn['content_encoding']}" if conn["content_encoding"] else ""))
        if data.get("configs"):
            sizes = sorted({info["bytes"] for info in data["configs"].values()})
            lines.append(f"   verified {len(data['configs'])} clients: "
                         f"{next(iter(data['configs'].values()))['entries']} entries, "
                         f"{sizes[0]:,}-{sizes[-1]:,} bytes, no failures")
        warm = data.get("warm_up")
        if warm:
            lines.append(f"   configuration cache warmed by {warm['passes']} passes over every "
                         f"client ({warm['requests']:,} GetConfig, {warm['wall_s']:.1f} s, "
                         f"server CPU {warm['server_cpu_s']:.1f} s)")
        rows = [("load", "conc", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "calls ok",
                 "errors", "CPU ms/call", "server CPU", "agents CPU", "other CPU")]
        for level in data.get("levels", []):
            rows.append((KIND_LABEL[level["kind"]], str(level["concurrency"]),
                         f"{level['per_s']:.1f}", f"{level['p50_s'] * 1000:.1f}",
                         f"{level['p95_s'] * 1000:.1f}", f"{level['p99_s'] * 1000:.1f}",
                         f"{level['max_s'] * 1000:.1f}", str(level["completed"]),
                         str(level["errors"]), f"{cpu_per_call(level) * 1000:.2f}",
                         f"{level['server_cpu_cores']:.2f}",
                         f"{level['agents_cpu_cores'] + level['bench_cpu_cores']:.2f}",
                         f"{level['other_cpu_cores']:.2f}"))
        if len(rows) > 1:
            lines += ["   " + line for line in _table(rows)]
            for level in data["levels"]:
                prof = level.get("profile")
                if prof:
                    top = ", ".join(f"{func.split(' (')[0]} {pct:.0f}%"
                                    for pct, func in prof["self"][:6])
                    lines.append(f"   profile of {KIND_LABEL[level['kind']]} at concurrency "
                                 f"{level['concurrency']} ({prof['file'][:-4]}.top.txt); "
                                 f"most own time: {top}")
            runs = [lv for lv in data["levels"] if lv["kind"] == "run"]
            for level in runs:
                parts = ", ".join(f"{m} {v * 1000:.1f}" for m, v in level["call_p50_s"].items())
                lines.append(f"   agent run at concurrency {level['concurrency']}, p50 per call "
                             f"(ms): {parts}")
        for error in data.get("errors", []):
            lines.append(f"   ERROR: {error}")
        lines.append("")
    lines.append("CPU columns are cores used during the measured window: 'server CPU' for "
                 "the server's process tree, 'agents CPU' for the load generator (agent "
                 "processes and this one), 'other CPU' for the rest of the machine (other "
                 "processes, interrupts): the machine has "
                 f"{env['cpus']} cores in all. 'CPU ms/call' is the server's CPU time per "
                 "completed call (CPU time, not wall time: it holds on a busy machine).")
    ident = results.get("identical")
    if ident is not None:
        lines.append(f"Configurations for the verified clients: {ident}")
    comparisons = []
    for kind in results["run"]["kinds"]:
        mp = _level(results["cores"].get("multiprocessing"), kind, TARGET_CONCURRENCY)
        bi = _level(results["cores"].get("builtin"), kind, TARGET_CONCURRENCY)
        if mp and bi and bi["per_s"]:
            comparisons.append(f"{KIND_LABEL[kind]} {mp['per_s'] / bi['per_s']:.2f}x")
    if comparisons:
        lines.append(f"Speed-up of multiprocessing over builtin at concurrency "
                     f"{TARGET_CONCURRENCY}: {', '.join(comparisons)}")
    lines += ["", "Targets:"]
    rows = [("target", "measured", "goal", "status")]
    for t in results["targets"]:
        value = "-" if t["value"] is None else (
            f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f} {t['unit']}")
        rows.append((t["target"], value, t["goal"], t["status"]))
    lines += ["  " + line for line in _table(rows)]
    return "\n".join(lines)


def _identical(results: dict[str, Any]) -> str | None:
    """Whether every core served byte-identical configurations to the verified clients."""
    digests: dict[str, dict[str, str]] = {}
    for core, data in results["cores"].items():
        for client, info in (data.get("configs") or {}).items():
            digests.setdefault(client, {})[core] = info["sha256"]
    cores = sorted({core for per in digests.values() for core in per})
    if len(cores) < 2:
        return None if not cores else f"only {cores[0]} served them (nothing to compare)"
    differ = [client for client, per in digests.items() if len(set(per.values())) > 1
              or len(per) != len(cores)]
    if differ:
        return (f"DIFFER between {', '.join(cores)} for {len(differ)} of {len(digests)} "
                f"clients (e.g. {differ[0]})")
    return f"byte-identical across {', '.join(cores)} ({len(digests)} clients)"


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    """Generate the repository and measure every core; the results as a dict."""
    ws = Workspace(root, args.children, args.server_verbose)
    print(f"generating the repository ({args.spec.clients:,} clients) ...", file=sys.stderr,
          flush=True)
    repo = generate(os.path.join(root, "repo"), args.spec)
    sample = repo.clients[0]
    by_tag = repo.expected_entries(sample)
    results: dict[str, Any] = {
        "environment": environment(),
        "repository": {"files": repo.files, "spec": asdict(repo.spec),
                       "entries_per_config": sum(by_tag.values()), "by_tag": by_tag,
                       "config_kb": 0.0, "stats_kb": 0.0},
        "run": {"what": (f"{args.requests} requests per level" if args.requests else
                         f"{args.duration:g} s per level after {args.warmup:g} s warm-up"),
                "concurrency": args.concurrency, "kinds": args.kinds,
                "duration_s": None if args.requests else args.duration,
                "requests": args.requests, "parse_responses": args.parse_responses,
                "server_verbose": args.server_verbose,
                "children": args.children},
        "best_core": best_core(),
        "cores": {},
    }
    stats_docs: dict[str, str] = {}
    for core in args.cores:
        reason = core_available(core)
        if reason is not None:
            results["cores"][core] = {"not_available": reason, "levels": [], "errors": []}
            print(f"[{core}] not available: {reason}", file=sys.stderr, flush=True)
            continue
        for cold in {"warm": [False], "cold": [True], "both": [False, True]}[args.cache]:
            name = COLD.format(core=core) if cold else core
            print(f"[{name}] start-up and verification ...", file=sys.stderr, flush=True)
            results["cores"][name] = measure_core(ws, repo, core, args, stats_docs, cold)
    if args.floor:
        print(f"[{FLOOR}] building every reply, start-up and verification ...",
              file=sys.stderr, flush=True)
        results["cores"][FLOOR] = measure_core(ws, repo, FLOOR, args, stats_docs)
    for data in results["cores"].values():
        if data.get("configs"):
            sizes = [info["bytes"] for info in data["configs"].values()]
            results["repository"]["config_kb"] = sum(sizes) / len(sizes) / 1024
            break
    if stats_docs:
        results["repository"]["stats_kb"] = (sum(len(d.encode()) for d in stats_docs.values())
                                             / len(stats_docs) / 1024)
    results["identical"] = _identical(results)
    results["targets"] = evaluate_targets(results)
    return results


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _names(choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return names
    return parse


def _levels(value: str) -> list[int]:
    try:
        levels = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels are positive integers")
    return levels


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` sets short levels unless they are given explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=_names(CORES), default=list(CORES),
                        help="comma-separated cores to measure (default "
                             f"{','.join(CORES)})")
    parser.add_argument("--kinds", type=_names(KINDS), default=list(KINDS),
                        help="loads: getconfig (GetConfig only), run (whole agent runs); "
                             "default both")
    parser.add_argument("--concurrency", type=_levels, default=[1, TARGET_CONCURRENCY],
                        help=f"comma-separated numbers of concurrent agents (default "
                             f"1,{TARGET_CONCURRENCY})")
    parser.add_argument("--duration", type=float, default=None,
                        help="measured seconds per level (default 10, 2 with --quick)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before each measured window (default 1, 0.5 "
                             "with --quick)")
    parser.add_argument("--requests", type=int, default=None,
                        help="measure this many requests (or runs) per level instead of a "
                             "duration")
    parser.add_argument("--warmup-requests", type=int, default=2,
                        help="unmeasured requests per agent before --requests (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 2 s per level, 0.5 s warm-up, 3 verified clients")
    parser.add_argument("--verify", type=int, default=None,
                        help="clients whose configuration is verified per core (default 5, "
                             "3 with --quick)")
    parser.add_argument("--cache", choices=("warm", "cold", "both"), default="both",
                        help="measure each core with its configuration cache warm (after "
                             "--warm-passes over every client), off ('cold'), or both "
                             "(default)")
    parser.add_argument("--warm-passes", type=int, default=4,
                        help="GetConfig passes over every client before a warm core is "
                             "measured (default 4: a multiprocessing child caches what it "
                             "served, and a request may go to any child)")
    parser.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the protocol floor (floor.py: precomputed replies "
                             "over the same TLS XML-RPC), the yardstick of the cache targets")
    add_server_arguments(parser)
    parser.add_argument("--server-verbose", action="store_true",
                        help="run the server with -v (a log line per configuration, as "
                             "[logging] verbose does); by default it logs warnings only")
    parser.add_argument("--parse-responses", action="store_true",
                        help="parse every response with xmlrpc.client as an agent does "
                             "(costs the generator about 1 ms per configuration)")
    parser.add_argument("--rss-interval", type=float, default=0.1,
                        help="seconds between two memory samples of the server tree "
                             "(default 0.1)")
    parser.add_argument("--profile", metavar="DIR",
                        help="sample the server tree with py-spy during every measured window "
                             "and write DIR/CORE-KIND-cN.txt (collapsed stacks) and .top.txt "
                             "(top functions); py-spy takes CPU from the server, so profiled "
                             "numbers are lower")
    parser.add_argument("--py-spy", metavar="PATH", default=None,
                        help="the py-spy executable (default: py-spy beside this Python or "
                             "on PATH)")
    parser.add_argument("--profile-rate", type=int, default=100,
                        help="py-spy samples per second (default 100)")
    group = parser.add_argument_group("repository (defaults: genrepo.LOAD_SPEC)")
    for field in fields(RepoSpec):
        group.add_argument(f"--{field.name.replace('_', '-')}", type=int, dest=f"spec_{field.name}",
                           metavar="N", help=f"default {getattr(LOAD_SPEC, field.name)}")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if args.verify is None:
        args.verify = 3 if args.quick else 5
    if args.duration <= 0 or args.warmup < 0 or args.verify < 1:
        parser.error("--duration must be positive, --warmup not negative, --verify at least 1")
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be positive")
    if args.profile:
        if args.requests is not None:
            parser.error("--profile needs measured windows of a --duration, not --requests")
        args.py_spy = args.py_spy or shutil.which(
            "py-spy", path=os.pathsep.join([os.path.dirname(sys.executable),
                                            os.environ.get("PATH", "")]))
        if not args.py_spy:
            parser.error("--profile needs py-spy (pip install py-spy, or --py-spy PATH)")
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)
    values = {f.name: getattr(args, f"spec_{f.name}") for f in fields(RepoSpec)
              if getattr(args, f"spec_{f.name}") is not None}
    try:
        args.spec = dataclasses.replace(LOAD_SPEC, **values)
    except ValueError as err:
        parser.error(f"repository: {err}")
    args.verify = min(args.verify, args.spec.clients)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every available core was measured, targets met or not."""
    args = parse_args(argv)
    if not os.path.isdir("/proc/self/task"):
        print("load: needs Linux /proc to read the server's memory and CPU", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="bcfg2-load-") as root:
            try:
                results = run(args, root)
            finally:
                stop_everything()
    except KeyboardInterrupt:
        stop_everything()
        print("load: interrupted; servers and agents stopped", file=sys.stderr)
        return 130
    print(format_report(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(_rounded(results), fh, indent=2)
            fh.write("\n")
    measured = [data for data in results["cores"].values() if "not_available" not in data]
    failed = not measured or any(data["errors"] for data in measured)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the live repository: how fast bcfg2-server notices and serves changes.

For each file-monitor backend (inotify and pseudo) this starts real
``bcfg2-server`` processes on generated repositories, talks to them over
HTTPS as an agent does (stdlib xmlrpc.client, one connection per call, the
client's uuid and password), and reports:

1. edit latency: from just before a Cfg file is rewritten until the first
   GetConfig whose configuration holds the new content (median, min and max
   over ``--edits`` edits, alternating in-place writes and editor-style saves
   to a temporary file renamed over the original), on a small repository;
2. start-up time: from the start of the process until the first GetConfig
   succeeds, on a repository of about 20,000 files;
3. idle CPU: the server's utime + stime (``/proc/<pid>/stat``) over
   ``--idle-seconds`` with no requests, once start-up has settled.

It is a report, not a test: the exit status is 0 when a target is missed
and non-zero only when something could not be measured.

Usage: python tests/bench/live_repository.py [--idle-seconds 60] [--edits 20] [--json FILE]
(``make bench``).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from dataclasses import asdict
from typing import Any

from genrepo import LATENCY_SPEC, STARTUP_SPEC, Client, Repository, content, generate

from bcfg2.devcert import make_self_signed

BACKENDS = ("inotify", "pseudo")
LISTENING = re.compile(r"Listening on https://127\.0\.0\.1:(\d+)")

#: targets: median edit latency and idle CPU are set for inotify; start-up for every backend
TARGET_LATENCY = 0.100
TARGET_STARTUP = 5.0
TARGET_IDLE_CPU = 0.1

#: what a failed GetConfig raises: connection and TLS errors, HTTP errors, XML-RPC faults
AGENT_ERRORS = (OSError, http.client.HTTPException, xmlrpc.client.Error)

#: every server process this run started, stopped at the end whatever happens
_servers: list[ServerProcess] = []


class BenchError(Exception):
    """A measurement could not be made (the server failed, a deadline passed)."""


# -- the server process -----------------------------------------------------------


def server_command() -> list[str]:
    """How an admin starts the server: the bcfg2-server script of this Python's environment."""
    script = shutil.which("bcfg2-server", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "bcfg2.server"]


class ServerProcess:
    """A ``bcfg2-server`` process whose stderr is read line by line in a thread."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        _servers.append(self)
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="server-stderr", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.tail.append(line.rstrip("\n"))
                if len(self._lines) < 1000:  # only start-up lines are searched
                    self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr, indented (callable under the lock)."""
        with self._cond:
            return "\n".join(f"    {line}" for line in self.tail) or "    (nothing)"

    def wait_for(self, pattern: re.Pattern[str], deadline: float) -> re.Match[str]:
        """The first stderr line matching ``pattern``; BenchError at the deadline or exit."""
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                if self._eof:
                    raise BenchError(f"the server exited (status {self.proc.wait()}) before "
                                     f"logging {pattern.pattern!r}:\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"the server did not log {pattern.pattern!r} in time:\n"
                                     f"{self.stderr_tail()}")
                self._cond.wait(remaining)

    def port(self, deadline: float) -> int:
        """The port from the "Listening on https://127.0.0.1:PORT" line."""
        return int(self.wait_for(LISTENING, deadline).group(1))

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the server exited with status {self.proc.returncode}:\n"
                             f"{self.stderr_tail()}")

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads) so far."""
        self.check_alive()
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(")") + 2:].split()
        # fields from the third of proc(5): state ppid ... utime is the 14th, stime the 15th
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def context_switches(self) -> int:
        """Voluntary context switches of every thread: roughly, how often it woke up."""
        total = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{task}/status", encoding="ascii") as fh:
                    for line in fh:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
        return total

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after 15 s."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self in _servers:
            _servers.remove(self)


def stop_all_servers() -> None:
    """Stop every server still running; one failing to stop does not spare the others."""
    for server in list(_servers):
        try:
            server.stop()
        except BaseException:  # noqa: BLE001 - keep stopping the rest; kill as a last resort
            try:
                server.proc.kill()
            except OSError:
                pass
            if server in _servers:
                _servers.remove(server)


class Workspace:
    """The temporary directory of one run: TLS material, bcfg2.conf, repositories, state."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.cert = os.path.join(root, "server.crt")
        self.key = os.path.join(root, "server.key")
        make_self_signed(self.cert, self.key)
        self.password = secrets.token_hex(16)
        self.conf = os.path.join(root, "bcfg2.conf")
        with open(self.conf, "w", encoding="utf-8") as fh:
            # only what the command line does not say: keep the benchmark out of syslog
            fh.write("[logging]\nsyslog = false\n")
        self.context = ssl.create_default_context(cafile=self.cert)
        self._runs = 0

    def start_server(self, repo: Repository, backend: str) -> ServerProcess:
        """Start bcfg2-server on ``repo`` with a fresh state directory, port 0, verbose."""
        self._runs += 1
        state = os.path.join(self.root, f"state-{self._runs}-{backend}")
        argv = [*server_command(), "-C", self.conf, "-v",
                "-Q", repo.root, "--state-dir", state,
                "-S", "https://127.0.0.1:0",
                "--ssl-cert", self.cert, "--ssl-key", self.key,
                "-x", self.password, "--filemonitor", backend]
        return ServerProcess(argv, cwd=self.root)


# -- the agent ------------------------------------------------------------------


class _Transport(xmlrpc.client.SafeTransport):
    """SafeTransport with a socket timeout, so no call waits forever."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(context=context)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class Agent:
    """Calls the server as a Bcfg2 agent does: HTTPS, basic auth, one connection per call."""

    def __init__(self, port: int, client: Client, context: ssl.SSLContext,
                 timeout: float = 30.0) -> None:
        self.url = f"https://{client.uuid}:{client.password}@127.0.0.1:{port}/RPC2"
        self.context = context
        self.timeout = timeout

    def get_config(self) -> str:
        """The client's configuration document."""
        transport = _Transport(self.context, self.timeout)
        with xmlrpc.client.ServerProxy(self.url, transport=transport) as proxy:
            return str(proxy.GetConfig())


def check_config(config: str, repo: Repository, client: Client) -> int:
    """Check that a configuration holds what the generator says; return its Path count."""
    expected = repo.entries_of(client)
    paths = config.count("<Path ")
    if paths != len(expected) or "failure=" in config:
        raise BenchError(f"{client.name}: expected {len(expected)} Path entries without "
                         f"failures, got {paths}: {config[:500]}")
    for entry in expected[:50]:
        label = f"# {repo.entry_name(entry)} {os.path.basename(repo.served_file(entry, client))}"
        if label not in config:
            raise BenchError(f"{client.name}: {repo.entry_name(entry)} is not served from "
                             f"{repo.served_file(entry, client)}")
    return paths


# -- measurements ---------------------------------------------------------------


def write_in_place(path: str, text: str) -> None:
    """Rewrite a file where it is (truncate and write), as ``echo > file`` does."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_and_rename(path: str, text: str) -> None:
    """Save as many editors do: write a temporary file beside it, rename it over the file.

    The temporary name ends in ``~``, which the server's default ignore_files skip.
    """
    directory, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix="~")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def measure_latency(ws: Workspace, repo: Repository, backend: str, edits: int,
                    startup_timeout: float, edit_timeout: float, poll: float) -> dict[str, Any]:
    """Median, min and max time from a Cfg write to the first GetConfig that serves it."""
    server = ws.start_server(repo, backend)
    try:
        port = server.port(time.monotonic() + startup_timeout)
        client = repo.clients[0]
        agent = Agent(port, client, ws.context)
        check_config(agent.get_config(), repo, client)
        entries = repo.entries_of(client)
        samples: list[float] = []
        polls: list[int] = []
        styles: list[str] = []
        for i in range(edits):
            # vary the moment of the edit, so a polling monitor is caught at every phase
            time.sleep(0.05 + (i * 0.618034) % 1.0)
            entry = entries[i % len(entries)]
            path = repo.served_file(entry, client)
            token = f"bench-edit-{i}-{secrets.token_hex(8)}"
            text = content(f"{repo.entry_name(entry)} {os.path.basename(path)}",
                           repo.spec.file_size) + f"\n# {token}\n"
            style = "in-place" if i % 2 == 0 else "rename"
            start = time.perf_counter()
            (write_in_place if style == "in-place" else write_and_rename)(path, text)
            deadline = start + edit_timeout
            count = 0
            while True:
                config = agent.get_config()
                count += 1
                if token in config:
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"edit {i + 1} ({style}) of {path} was not served within "
                                     f"{edit_timeout:g} s")
                time.sleep(poll)
            samples.append(time.perf_counter() - start)
            polls.append(count)
            styles.append(style)
        server.check_alive()
    except AGENT_ERRORS as err:
        raise BenchError(f"GetConfig failed: {err!r}\n{server.stderr_tail()}") from err
    finally:
        server.stop()
    return {
        "edits": edits,
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": samples,
        "styles": styles,
        "getconfig_calls": polls,
    }


def measure_startup_and_idle(ws: Workspace, repo: Repository, backend: str, idle_seconds: float,
                             settle: float, startup_timeout: float) -> dict[str, Any]:
    """Start-up time to the first served configuration, then idle CPU over a window."""
    client = repo.clients[0]
    start = time.perf_counter()
    server = ws.start_server(repo, backend)
    try:
        deadline = time.monotonic() + startup_timeout
        port = server.port(deadline)
        listening = time.perf_counter() - start
        agent = Agent(port, client, ws.context)
        while True:
            try:
                config = agent.get_config()
                break
            except AGENT_ERRORS as err:
                server.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"no configuration served within {startup_timeout:g} s: "
                                     f"{err}") from err
                time.sleep(0.01)
        first_config = time.perf_counter() - start
        startup_cpu = server.cpu_seconds()
        paths = check_config(config, repo, client)

        time.sleep(settle)
        cpu_before, switches_before = server.cpu_seconds(), server.context_switches()
        window_start = time.monotonic()
        end = window_start + idle_seconds
        while (remaining := end - time.monotonic()) > 0:
            time.sleep(min(remaining, 1.0))
            server.check_alive()
        cpu_after, switches_after = server.cpu_seconds(), server.context_switches()
        window = time.monotonic() - window_start
        threads = server.threads()
    except OSError as err:  # /proc of a server that exited meanwhile
        raise BenchError(f"cannot read the server's /proc entries: {err}\n"
                         f"{server.stderr_tail()}") from err
    finally:
        server.stop()
    return {
        "startup": {
            "first_config_s": first_config,
            "listening_s": listening,
            "cpu_s": startup_cpu,
            "config_paths": paths,
            "config_bytes": len(config.encode()),
        },
        "idle_cpu": {
            "window_s": window,
            "settle_s": settle,
            "cpu_s": cpu_after - cpu_before,
            "wakeups": switches_after - switches_before,
            "threads": threads,
        },
    }


# -- the report -----------------------------------------------------------------


def _status(value: float | None, target: float) -> str:
    if value is None:
        return "ERROR"
    return "PASS" if value < target else "MISS"


def format_table(results: dict[str, Any]) -> str:
    """The human-readable report."""
    env = results["environment"]
    reps = results["repositories"]
    lines = [
        f"bcfg2-server live-repository benchmark (Python {env['python']}, {env['platform']}, "
        f"{env['cpus']} CPUs)",
        f"  latency repository:  {reps['latency']['files']:,} files, "
        f"{reps['latency']['client_entries']} Cfg entries for the measured client",
        f"  start-up repository: {reps['startup']['files']:,} files, "
        f"{reps['startup']['client_entries']} Cfg entries for the measured client",
        "",
    ]
    rows = [("backend", "measurement", "result", "target", "status")]
    for backend, data in results["backends"].items():
        lat = data.get("edit_latency")
        if lat:
            rows.append((backend, f"edit latency, median of {lat['edits']}",
                         f"{lat['median_s'] * 1000:.1f} ms (min {lat['min_s'] * 1000:.1f}, "
                         f"max {lat['max_s'] * 1000:.1f})",
                         f"< {TARGET_LATENCY * 1000:.0f} ms",
                         _status(lat["median_s"], TARGET_LATENCY)))
        else:
            rows.append((backend, "edit latency", "not measured", f"< {TARGET_LATENCY * 1000:.0f} ms",
                         "ERROR"))
        st = data.get("startup")
        if st:
            rows.append((backend, "start-up to first config",
                         f"{st['first_config_s']:.2f} s (listening at {st['listening_s']:.2f} s, "
                         f"{st['cpu_s']:.2f} s CPU)",
                         f"< {TARGET_STARTUP:g} s", _status(st["first_config_s"], TARGET_STARTUP)))
        else:
            rows.append((backend, "start-up to first config", "not measured",
                         f"< {TARGET_STARTUP:g} s", "ERROR"))
        idle = data.get("idle_cpu")
        if idle:
            rows.append((backend, f"idle CPU over {idle['window_s']:.0f} s",
                         f"{idle['cpu_s']:.2f} s ({idle['wakeups'] / idle['window_s']:.1f} "
                         f"wake-ups/s, {idle['threads']} threads)",
                         f"< {TARGET_IDLE_CPU:g} s", _status(idle["cpu_s"], TARGET_IDLE_CPU)))
        else:
            rows.append((backend, "idle CPU", "not measured", f"< {TARGET_IDLE_CPU:g} s", "ERROR"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("")
    lines.append("Edit-latency and idle-CPU targets are set for inotify; pseudo scans every "
                 "watched path once a second by design.")
    for backend, data in results["backends"].items():
        for error in data.get("errors", []):
            lines.append(f"ERROR ({backend}): {error}")
    return "\n".join(lines)


def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    """Generate the repositories and measure every backend; the results as a dict."""
    ws = Workspace(root)
    latency_repo = generate(os.path.join(root, "latency-repo"), LATENCY_SPEC)
    startup_repo = generate(os.path.join(root, "startup-repo"), STARTUP_SPEC)
    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.release()}",
            "cpus": os.cpu_count(),
            "server": server_command(),
        },
        "targets": {"edit_latency_median_s": TARGET_LATENCY, "startup_s": TARGET_STARTUP,
                    "idle_cpu_s": TARGET_IDLE_CPU},
        "repositories": {
            name: {"files": repo.files, "spec": asdict(repo.spec),
                   "client_entries": len(repo.entries_of(repo.clients[0]))}
            for name, repo in (("latency", latency_repo), ("startup", startup_repo))
        },
        "backends": {},
    }
    for backend in args.backends:
        data: dict[str, Any] = {"errors": []}
        results["backends"][backend] = data
        print(f"[{backend}] start-up and {args.idle_seconds:g} s idle on "
              f"{startup_repo.files:,} files ...", file=sys.stderr, flush=True)
        try:
            data.update(measure_startup_and_idle(ws, startup_repo, backend, args.idle_seconds,
                                                 args.settle, args.startup_timeout))
        except BenchError as err:
            data["errors"].append(f"start-up/idle: {err}")
        print(f"[{backend}] {args.edits} edits on {latency_repo.files:,} files ...",
              file=sys.stderr, flush=True)
        try:
            data["edit_latency"] = measure_latency(ws, latency_repo, backend, args.edits,
                                                   args.startup_timeout, args.edit_timeout,
                                                   args.poll_interval)
        except BenchError as err:
            data["errors"].append(f"edit latency: {err}")
    return results


def _rounded(value: Any) -> Any:
    """Floats rounded to microseconds, for a readable JSON file."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _backends(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BACKENDS)}")
    return names


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every number was measured, targets met or not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=_backends, default=list(BACKENDS),
                        help="comma-separated file monitors to measure (default inotify,pseudo)")
    parser.add_argument("--edits", type=int, default=20, help="edits to time (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="length of the idle-CPU window (default 60)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between the first served config and the idle window "
                             "(default 1)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="deadline for a server to serve its first config (default 120)")
    parser.add_argument("--edit-timeout", type=float, default=10.0,
                        help="deadline for an edit to be served (default 10)")
    parser.add_argument("--poll-interval", type=float, default=0.005,
                        help="pause between two GetConfig calls while waiting for an edit "
                             "(default 0.005)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args(argv)
    if args.edits < 1 or args.idle_seconds <= 0:
        parser.error("--edits and --idle-seconds must be positive")
    if not os.path.isdir("/proc/self/task"):
        print("live_repository: needs Linux /proc to read the server's CPU time", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="bcfg2-bench-") as root:
            try:
                results = run(args, root)
            finally:
                stop_all_servers()
    except KeyboardInterrupt:
        print("live_repository: interrupted; servers stopped", file=sys.stderr)
        return 130
    print(format_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(_rounded(results), fh, indent=2)
            fh.write("\n")
    return 1 if any(data["errors"] for data in results["backends"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())

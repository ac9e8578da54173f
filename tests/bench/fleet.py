"""Fleet benchmark: 1, 2 and 3 bcfg2-server processes on one PostgreSQL behind HAProxy.

Everything runs on this machine, on 127.0.0.1, and is removed at the end:
a throwaway PostgreSQL cluster (``tests/pg.py``), a generated repository of
100 clients (``genrepo``) with the Probes plugin and two probe-set groups
(``conftest.probe_groups_repo``: ``alpha`` and ``beta``, a bundle each),
``bcfg2-server`` processes on the builtin core (separate processes, so no
GIL is shared between servers) and HAProxy from ``examples/haproxy.cfg``
(``tests/fleet_harness.py``). HAProxy balances round-robin: every agent
connects from 127.0.0.1, so ``balance source`` would keep them all on one
server; round-robin sends each call of a run to the next server.

Steps:

1. for 1, 2 and 3 servers on PostgreSQL: GetConfig only, then whole agent
   runs (DeclareVersion, GetProbes, RecvProbeData, GetConfig, RecvStats),
   each by ``--concurrency`` agent processes for ``--seconds``, every call a
   new TLS connection through HAProxy, every run for another client;
   throughput and p50/p99 latency per call type;
2. with the most servers: a probe upload sent to server A directly (from
   source address 127.0.0.2, which is not a balancer, so no PROXY header is
   expected), then GetConfig polled on server B, also directly, until B
   serves the bundle of the group the upload set; ``--trials`` times,
   alternating between the groups;
3. one server on SQLite, agent runs as in 1: the ratio of PostgreSQL to
   SQLite agent runs per second;
4. the CPU (utime + stime from /proc/PID/stat) each server, PostgreSQL,
   HAProxy and the agents used in each measured window, divided by the runs
   served (the calls HAProxy passed on, five a run): the cost of a run, from
   which the capacity of a machine with more cores follows. On 2 cores the
   agents, the balancer and the database share the CPUs with the servers,
   and one server process uses at most about one core (the GIL), so more
   servers than cores cannot add throughput.

It is a report, not a test: the exit status is 1 only when something could
not be measured.

Usage: python tests/bench/fleet.py [--quick] [--seconds 20] [--json FILE]
       (``make bench-fleet``)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import json
import math
import multiprocessing
import os
import queue
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from conftest import Repo, ServerProcess, TLSMaterial, probe_groups_repo  # noqa: E402
from fleet_harness import HAPROXY, Fleet  # noqa: E402
from genrepo import AGENT_VERSION, RepoSpec, generate  # noqa: E402
from load import (  # noqa: E402
    AgentError,
    _rounded,
    _stat_fields,
    _table,
    call,
    check_response,
    environment,
    finish_profiler,
    machine_cpu,
    machine_line,
    percentile,
    request_bytes,
    start_profiler,
    statistics_document,
)
from pg import Cluster, PgDatabase, binaries  # noqa: E402

#: about 100 clients whose configurations hold about 80 entries
FLEET_SPEC = RepoSpec(clients=100, profiles=10, groups=20, groups_per_profile=3, bundles=20,
                      entries=400, files_per_entry=3, file_size=512, info_every=4,
                      packages=120, services=40)
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes,Reporting"
#: the builtin core (a bcfg2-server process without [server] backend runs the best core,
#: multiprocessing, whose children would share the two CPUs once more)
OPTIONS = {"server__backend": "builtin", "probes__allowed_groups": "alpha beta"}
RUN_CALLS = ("DeclareVersion", "GetProbes", "RecvProbeData", "GetConfig", "RecvStats")
#: the source address of the direct calls of step 2: not a balancer of [server] proxy_protocol
DIRECT_SOURCE = "127.0.0.2"
#: seconds between two polls of server B (step 2); each poll is a whole GetConfig as well
POLL_PAUSE = 0.002

TARGET_PROPAGATION_S = 0.100  # median, probe upload on A to the groups served by B
TARGET_PG_RATIO = 0.8  # agent runs/s, PostgreSQL / SQLite, one server


class BenchError(Exception):
    """A measurement could not be made."""


def upload(group: str) -> str:
    """The RecvProbeData document of an agent whose probe ``role`` printed ``group:GROUP``."""
    return (f'<ProbeData><probe-data name="role" source="Probes">group:{group}\n'
            f'</probe-data></ProbeData>')


# -- the simulated agents (a process each) ----------------------------------------------


@dataclasses.dataclass
class AgentSpec:
    """What one agent process does: which clients, which load, when, for how long."""

    port: int
    cafile: str
    kind: str  # "getconfig" or "run"
    clients: list[tuple[str, str, str]]  # uuid, password, statistics document
    warmup: float
    seconds: float
    timeout: float


def _agent_main(spec: AgentSpec, ready: Any, go: Any, start_at: Any, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        results.put(_agent_loop(spec, ready, go, start_at))
    except BaseException as err:  # noqa: BLE001 - whatever went wrong goes to the parent
        results.put({"fatal": f"{type(err).__name__}: {err}"})


def _agent_loop(spec: AgentSpec, ready: Any, go: Any, start_at: Any) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=spec.cafile)
    port = spec.port
    prepared = []
    for uuid, password, stats in spec.clients:
        params: dict[str, tuple[Any, ...]] = {
            "DeclareVersion": (AGENT_VERSION,), "GetProbes": (), "RecvProbeData": (upload("alpha"),),
            "GetConfig": (), "RecvStats": (stats,)}
        methods = RUN_CALLS if spec.kind == "run" else ("GetConfig",)
        prepared.append([(m, request_bytes(m, params[m], uuid, password, port)) for m in methods])
    ready.put(os.getpid())
    if not go.wait(60):
        return {"fatal": "never told to start"}
    begin = start_at.value
    t0, t1 = begin + spec.warmup, begin + spec.warmup + spec.seconds
    time.sleep(max(0.0, begin - time.monotonic()))
    runs: list[tuple[float, float]] = []  # (start, end) of each successful unit in the window
    calls: dict[str, list[float]] = collections.defaultdict(list)
    errors, messages, i = 0, [], 0
    cpu0 = None
    while (now := time.monotonic()) < t1:
        if now >= t0 and cpu0 is None:
            cpu0 = time.process_time()
        durations, ok = [], True
        for method, request in prepared[i % len(prepared)]:
            t = time.monotonic()
            try:
                check_response(method, call(port, context, request, spec.timeout), False)
            except AgentError as err:
                ok = False
                errors += 1
                if len(messages) < 3:
                    messages.append(str(err)[:300])
                break
            durations.append((method, time.monotonic() - t))
        i += 1
        end = time.monotonic()
        if ok and end >= t0:
            runs.append((now, end))
            if now >= t0:
                for method, seconds in durations:
                    calls[method].append(seconds)
        elif not ok:
            time.sleep(0.05)  # a failing fleet is not hammered
    cpu = time.process_time() - (cpu0 if cpu0 is not None else time.process_time())
    return {"runs": runs, "calls": dict(calls), "errors": errors, "messages": messages,
            "cpu_s": cpu}


# -- CPU of the processes involved ------------------------------------------------------


def cpu_of(pid: int, children: bool = False) -> float:
    """utime + stime of a process (with ``children``, also of its waited-for children)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # proc(5) fields 14-17 (utime stime cutime cstime) are 11-14 after the command
    return sum(int(v) for v in fields[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(cluster: Cluster) -> float:
    """CPU seconds of the PostgreSQL postmaster and every live backend it forked."""
    try:
        postmaster = int(Path(cluster.data, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = cpu_of(postmaster, children=True)
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and fields[1] == str(postmaster):
                total += cpu_of(int(name))
    return total


def snapshot(fleet: Fleet, cluster: Cluster | None) -> dict[str, Any]:
    """CPU seconds so far of each server, PostgreSQL, HAProxy and the machine."""
    return {"servers": [cpu_of(m.process.proc.pid) for m in fleet.members if m.process],
            "postgres": postgres_cpu(cluster) if cluster is not None else 0.0,
            "haproxy": cpu_of(fleet.haproxy.pid) if fleet.haproxy else 0.0,
            "machine": machine_cpu()[0], "calls": dict(fleet.sessions())}


# -- one measured load ------------------------------------------------------------------


def run_load(fleet: Fleet, cluster: Cluster | None, kind: str, order: list[tuple[str, str, str]],
             args: argparse.Namespace, cafile: str) -> dict[str, Any]:
    """``args.concurrency`` agent processes through HAProxy for ``args.seconds``: the numbers."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = []
    try:
        for w in range(args.concurrency):
            spec = AgentSpec(fleet.port, cafile, kind, order[w::args.concurrency], args.warmup,
                             args.seconds, args.timeout)
            proc = ctx.Process(target=_agent_main, args=(spec, ready, go, start_at, results),
                               daemon=True)
            procs.append(proc)
            proc.start()
        for _ in procs:
            try:
                ready.get(timeout=60)
            except queue.Empty:
                raise BenchError("agent processes not ready within 60 s") from None
        begin = time.monotonic() + 0.05
        start_at.value = begin
        go.set()
        time.sleep(max(0.0, begin + args.warmup - time.monotonic()))
        before = snapshot(fleet, cluster)
        spies = profile(fleet, kind, args)
        time.sleep(max(0.0, begin + args.warmup + args.seconds - time.monotonic()))
        after = snapshot(fleet, cluster)
        for spy, out in spies:
            err = finish_profiler(spy, args.seconds + 30)
            if not os.path.exists(out):
                raise BenchError(f"py-spy wrote no profile {out}: {err.strip()[-300:]}")
        collected = []
        for _ in procs:
            try:
                collected.append(results.get(timeout=args.timeout * len(RUN_CALLS) + 30))
            except queue.Empty:
                raise BenchError("agent processes did not finish in time") from None
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    fatal = [r["fatal"] for r in collected if "fatal" in r]
    if fatal:
        raise BenchError(f"an agent process failed: {fatal[0]}")
    window = (begin + args.warmup, begin + args.warmup + args.seconds)
    units = [u for r in collected for u in r["runs"]]
    completed = sum(1 for u in units if u[1] <= window[1])
    latencies = [u[1] - u[0] for u in units if u[0] >= window[0]]
    if not latencies:
        raise BenchError(f"no {kind} succeeded: {[m for r in collected for m in r['messages']]}")
    per_call: dict[str, list[float]] = collections.defaultdict(list)
    for r in collected:
        for method, values in r["calls"].items():
            per_call[method].extend(values)
    length = window[1] - window[0]
    server_cpu = [b - a for a, b in zip(before["servers"], after["servers"], strict=True)]
    calls_served = {name: after["calls"].get(name, 0) - before["calls"].get(name, 0)
                    for name in after["calls"]}
    return {
        "kind": kind, "servers": len(fleet.members), "window_s": length,
        "completed": completed, "per_s": completed / length,
        "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
        "calls": {m: {"p50_s": percentile(v, 50), "p99_s": percentile(v, 99), "count": len(v)}
                  for m, v in per_call.items()},
        "errors": sum(r["errors"] for r in collected),
        "error_messages": [m for r in collected for m in r["messages"]][:3],
        "cpu_s": {"servers": server_cpu, "postgres": after["postgres"] - before["postgres"],
                  "haproxy": after["haproxy"] - before["haproxy"],
                  "agents": sum(r["cpu_s"] for r in collected),
                  "machine": after["machine"] - before["machine"]},
        "calls_served": calls_served,
    }


def profile(fleet: Fleet, kind: str, args: argparse.Namespace,
            ) -> list[tuple[subprocess.Popen, str]]:
    """With ``--profile DIR``: py-spy records every server through the measured window of
    a run load, as collapsed stacks in DIR (one file per engine, fleet size and server);
    (each py-spy, its output file)."""
    if not args.profile or kind != "run":
        return []
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    os.makedirs(args.profile, exist_ok=True)
    label = "sqlite" if not fleet.database.overrides else "postgresql"
    spies = []
    for n, member in enumerate((m for m in fleet.members if m.process), 1):
        out = os.path.join(args.profile, f"{label}-{len(fleet.members)}-server{n}.txt")
        spies.append((start_profiler(spy, member.process.proc.pid, out, args.seconds, 100), out))
    return spies


# -- direct calls (step 2) --------------------------------------------------------------


class DirectTransport(xmlrpc.client.SafeTransport):
    """A new connection per call from DIRECT_SOURCE, so the server expects no PROXY header."""

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        self._connection = (None, None)  # never reuse one: an agent does not
        conn = super().make_connection(host)
        conn.source_address = (DIRECT_SOURCE, 0)
        conn.timeout = 30
        return conn


def direct(port: int, uuid: str, password: str, context: ssl.SSLContext) -> Any:
    """An XML-RPC proxy straight to one server, bypassing HAProxy."""
    return xmlrpc.client.ServerProxy(f"https://{uuid}:{password}@127.0.0.1:{port}/RPC2",
                                     transport=DirectTransport(context=context))


def propagation(fleet: Fleet, client: Any, trials: int, context: ssl.SSLContext,
                timeout: float = 10.0) -> dict[str, Any]:
    """Upload probe data on the first server; seconds until the second serves its groups."""
    a, b = fleet.members[0], fleet.members[1]
    on_a = direct(a.port, client.uuid, client.password, context)
    on_b = direct(b.port, client.uuid, client.password, context)
    after_ack, after_start, polls, poll_s, missed = [], [], [], [], 0
    for trial in range(trials):
        group, other = ("beta", "alpha") if trial % 2 == 0 else ("alpha", "beta")
        start = time.monotonic()
        if on_a.RecvProbeData(upload(group)) is not True:
            raise BenchError("RecvProbeData on server A did not return True")
        acked = time.monotonic()
        n = 0
        while True:
            t = time.monotonic()
            config = on_b.GetConfig()
            poll_s.append(time.monotonic() - t)
            n += 1
            if f'Bundle name="{group}"' in config and f'Bundle name="{other}"' not in config:
                seen = time.monotonic()
                break
            if time.monotonic() - acked > timeout:
                seen = None
                break
            time.sleep(POLL_PAUSE)
        if seen is None:
            missed += 1
            continue
        after_ack.append(seen - acked)
        after_start.append(seen - start)
        polls.append(n)
    return {"trials": trials, "missed": missed, "timeout_s": timeout,
            "median_s": percentile(after_ack, 50), "p90_s": percentile(after_ack, 90),
            "max_s": max(after_ack, default=math.nan),
            "median_from_upload_start_s": percentile(after_start, 50),
            "poll_getconfig_p50_s": percentile(poll_s, 50),
            "polls_median": percentile([float(p) for p in polls], 50),
            "seen_on_first_poll": sum(1 for p in polls if p == 1)}


# -- one fleet --------------------------------------------------------------------------


def start_fleet(root: Path, name: str, repo: Repo, tls: TLSMaterial, database: Any, servers: int,
                processes: list[ServerProcess]) -> Fleet:
    fleet = Fleet(repo, tls, None, database, root / name, PLUGINS, **OPTIONS)
    for _ in range(servers):
        fleet.add_process(processes)
    for member in fleet.members:  # HAProxy counts a server up before its first check
        wait_healthy(member.health)
    fleet.start_haproxy()
    return fleet


def wait_healthy(port: int, timeout: float = 120.0) -> None:
    """Until a server's health endpoint answers 200 (it serves)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"the server of health port {port} was not healthy in "
                             f"{timeout:g} s")
        time.sleep(0.02)


def prepare(fleet: Fleet, generated: Any, context: ssl.SSLContext) -> list[tuple[str, str, str]]:
    """Statistics documents (one per profile, from a configuration after the probe upload
    the runs make) and the order in which the agents go through the clients."""
    docs: dict[str, str] = {}
    for client in generated.clients:
        if client.profile in docs:
            continue
        proxy = xmlrpc.client.ServerProxy(
            f"https://{client.uuid}:{client.password}@127.0.0.1:{fleet.port}/RPC2",
            context=context)
        proxy.RecvProbeData(upload("alpha"))
        config = proxy.GetConfig()
        if 'Bundle name="alpha"' not in config or "failure=" in config:
            raise BenchError(f"{client.name}: the configuration lacks bundle alpha or has "
                             f"failed entries: {config[:300]}")
        docs[client.profile] = statistics_document(config)
    order = [(c.uuid, c.password, docs[c.profile]) for c in generated.clients]
    # the agents split the clients by stride: shuffle deterministically so profiles mix
    return order[::3] + order[1::3] + order[2::3]


def measure(root: Path, label: str, repo: Repo, generated: Any, tls: TLSMaterial,
            database: Any, cluster: Cluster | None, servers: int, kinds: tuple[str, ...],
            args: argparse.Namespace, trials: int = 0) -> dict[str, Any]:
    """Start a fleet of ``servers``; measure ``kinds`` and, if asked, the propagation."""
    processes: list[ServerProcess] = []
    fleet = None
    out: dict[str, Any] = {"servers": servers, "engine": label, "loads": [], "errors": []}
    try:
        print(f"[{label}, {servers} server(s)] starting ...", file=sys.stderr, flush=True)
        fleet = start_fleet(root, f"{label}-{servers}", repo, tls, database, servers, processes)
        context = tls.client_context()
        order = prepare(fleet, generated, context)
        for kind in kinds:
            print(f"[{label}, {servers} server(s)] {kind} for {args.seconds:g} s ...",
                  file=sys.stderr, flush=True)
            load = run_load(fleet, cluster, kind, order, args, tls.ca_cert)
            out["loads"].append(load)
            if load["errors"]:
                out["errors"].append(f"{kind}: {load['errors']} failed calls, e.g. "
                                     f"{load['error_messages'][:1]}")
        if trials:
            print(f"[{label}, {servers} server(s)] probe propagation, {trials} trials ...",
                  file=sys.stderr, flush=True)
            out["propagation"] = propagation(fleet, generated.clients[-1], trials, context)
        for process in processes:
            if process.proc.poll() is not None:
                out["errors"].append(f"a server exited with {process.proc.returncode}")
    except (BenchError, OSError, xmlrpc.client.Error, pytest.fail.Exception) as err:
        out["errors"].append(f"{type(err).__name__}: {err}")
        for n, process in enumerate(processes, 1):
            out["errors"].append(f"server{n} stderr, last lines:\n" + stderr_tail(process))
    finally:
        if fleet is not None:
            fleet.stop()
        for process in processes:
            process.kill()
    return out


def stderr_tail(process: ServerProcess, lines: int = 8) -> str:
    """The last lines a server process wrote to stderr (what its reader thread queued)."""
    while True:
        try:
            line = process._queue.get_nowait()
        except queue.Empty:
            break
        if line is not None:
            process.lines.append(line)
    return "".join(f"    {line}" for line in process.lines[-lines:]).rstrip()


def new_database(cluster: Cluster) -> PgDatabase:
    name = f"bench_{secrets.token_hex(6)}"
    with cluster.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
    return PgDatabase(cluster, name)


def drop_database(database: PgDatabase) -> None:
    with database.cluster.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every step; the results as a dict."""
    root.joinpath("tls").mkdir()
    tls = TLSMaterial(root.joinpath("tls"))
    print(f"generating the repository ({FLEET_SPEC.clients} clients) ...", file=sys.stderr,
          flush=True)
    generated = generate(str(root / "repo"), FLEET_SPEC)
    repo = Repo(Path(generated.root))
    probe_groups_repo(repo)
    results: dict[str, Any] = {
        "environment": environment(),
        "run": {"seconds": args.seconds, "warmup_s": args.warmup,
                "concurrency": args.concurrency, "clients": FLEET_SPEC.clients,
                "balance": "roundrobin", "core": "builtin", "plugins": PLUGINS},
        "fleets": []}
    bindir = binaries()
    if bindir is None:
        raise BenchError("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = Cluster(bindir)
    try:
        cluster.start()
        most = max(args.servers)
        for n in args.servers:
            database = new_database(cluster)
            try:
                results["fleets"].append(measure(
                    root, "postgresql", repo, generated, tls, database, cluster, n,
                    ("getconfig", "run"), args, trials=args.trials if n == most and n > 1 else 0))
            finally:
                drop_database(database)
        results["fleets"].append(measure(root, "sqlite", repo, generated, tls,
                                         SimpleNamespace(overrides={}), None, 1, ("run",), args))
    finally:
        cluster.stop()
    for fleet in results["fleets"]:
        for load in fleet["loads"]:
            load["cost_per_run_s"] = cost_per_run(load)
    results["targets"] = targets(results)
    return results


# -- the report -------------------------------------------------------------------------


def _find(results: dict[str, Any], engine: str, servers: int, kind: str) -> dict[str, Any] | None:
    for fleet in results["fleets"]:
        if fleet["engine"] == engine and fleet["servers"] == servers:
            for load in fleet["loads"]:
                if load["kind"] == kind:
                    return load
    return None


def cost_per_run(load: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds per agent run (or GetConfig) served: of each server, of all servers, of
    PostgreSQL, of HAProxy and of the agents. Runs are counted from the calls HAProxy passed
    on in the window (five per run), so runs cut by the window's edges count by their part."""
    cpu = load["cpu_s"]
    served = list(load["calls_served"].values())
    per_unit = len(RUN_CALLS) if load["kind"] == "run" else 1
    runs = sum(served) / per_unit or math.nan
    per_server = [seconds / (served[n] / per_unit) if n < len(served) and served[n]
                  else math.nan for n, seconds in enumerate(cpu["servers"])]
    return {"runs": runs, "server_each_s": per_server, "servers_s": sum(cpu["servers"]) / runs,
            "postgres_s": cpu["postgres"] / runs, "haproxy_s": cpu["haproxy"] / runs,
            "agents_s": cpu["agents"] / runs}


def cpu_ratio(results: dict[str, Any]) -> float | None:
    """SQLite's CPU per run over PostgreSQL's (its server and database processes), one server."""
    pg, lite = _find(results, "postgresql", 1, "run"), _find(results, "sqlite", 1, "run")
    if not pg or not lite:
        return None
    pg_cost = pg["cost_per_run_s"]["servers_s"] + pg["cost_per_run_s"]["postgres_s"]
    lite_cost = lite["cost_per_run_s"]["servers_s"]
    return lite_cost / pg_cost if pg_cost and not math.isnan(pg_cost) else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    prop = next((f["propagation"] for f in results["fleets"] if "propagation" in f), None)
    value = prop["median_s"] if prop and not math.isnan(prop["median_s"]) else None
    out.append({"target": "probe upload on A to groups served by B, median",
                "value": None if value is None else value * 1000, "unit": "ms",
                "goal": f"< {TARGET_PROPAGATION_S * 1000:g} ms",
                "status": "not measured" if value is None else
                "PASS" if value < TARGET_PROPAGATION_S else "MISS"})
    pg, lite = _find(results, "postgresql", 1, "run"), _find(results, "sqlite", 1, "run")
    ratio = pg["per_s"] / lite["per_s"] if pg and lite and lite["per_s"] else None
    out.append({"target": "one server, agent runs/s PostgreSQL / SQLite", "value": ratio,
                "unit": "x", "goal": f">= {TARGET_PG_RATIO:g}x",
                "status": "not measured" if ratio is None else
                "PASS" if ratio >= TARGET_PG_RATIO else "MISS"})
    ratio = cpu_ratio(results)
    out.append({"target": "one server, CPU per run SQLite / PostgreSQL", "value": ratio,
                "unit": "x", "goal": f">= {TARGET_PG_RATIO:g}x",
                "status": "not measured" if ratio is None else
                "PASS" if ratio >= TARGET_PG_RATIO else "MISS"})
    return out


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def format_report(results: dict[str, Any]) -> str:
    env, run_ = results["environment"], results["run"]
    lines = [f"bcfg2 fleet benchmark ({machine_line(env)}; agents, HAProxy, PostgreSQL and "
             f"the servers share them)",
             f"  {run_['clients']} clients; {run_['concurrency']} agent processes for "
             f"{run_['seconds']:g} s per load after {run_['warmup_s']:g} s warm-up; every call "
             f"a new TLS connection through HAProxy (balance {run_['balance']}); servers are "
             f"bcfg2-server processes on the {run_['core']} core (-v)", ""]
    rows = [("engine", "servers", "load", "per s", "p50 ms", "p99 ms", "errors", "servers CPU",
             "pg CPU", "haproxy CPU", "agents CPU", "other CPU")]
    for fleet in results["fleets"]:
        for load in fleet["loads"]:
            w, cpu = load["window_s"], load["cpu_s"]
            other = max(0.0, cpu["machine"] - sum(cpu["servers"]) - cpu["postgres"]
                        - cpu["haproxy"] - cpu["agents"])
            rows.append((fleet["engine"], str(fleet["servers"]),
                         "GetConfig" if load["kind"] == "getconfig" else "agent run",
                         f"{load['per_s']:.1f}", _ms(load["p50_s"]), _ms(load["p99_s"]),
                         str(load["errors"]), f"{sum(cpu['servers']) / w:.2f}",
                         f"{cpu['postgres'] / w:.2f}", f"{cpu['haproxy'] / w:.2f}",
                         f"{cpu['agents'] / w:.2f}", f"{other / w:.2f}"))
    lines += ["  " + line for line in _table(rows)]
    lines.append("  (CPU columns: cores used during the measured window; 'other' is the rest of "
                 "the machine: this process, the kernel's share of loopback traffic, other "
                 "users of the machine)")
    lines += ["", "Agent runs, latency per call (p50 / p99 ms):"]
    rows = [("engine", "servers", *RUN_CALLS)]
    for fleet in results["fleets"]:
        for load in fleet["loads"]:
            if load["kind"] == "run":
                rows.append((fleet["engine"], str(fleet["servers"]),
                             *(f"{_ms(load['calls'][m]['p50_s'])} / {_ms(load['calls'][m]['p99_s'])}"
                               if m in load["calls"] else "-" for m in RUN_CALLS)))
    lines += ["  " + line for line in _table(rows)]
    lines += ["", "CPU per agent run or GetConfig served (ms):"]
    rows = [("engine", "servers", "load", "each server", "all servers", "postgres", "haproxy",
             "agents")]
    capacity = None
    for fleet in results["fleets"]:
        for load in fleet["loads"]:
            cost = load["cost_per_run_s"]
            rows.append((fleet["engine"], str(fleet["servers"]),
                         "GetConfig" if load["kind"] == "getconfig" else "agent run",
                         ", ".join(_ms(s) for s in cost["server_each_s"]),
                         _ms(cost["servers_s"]), _ms(cost["postgres_s"]), _ms(cost["haproxy_s"]),
                         _ms(cost["agents_s"])))
            if fleet["engine"] == "postgresql" and fleet["servers"] == 1 and load["kind"] == "run":
                capacity = cost
    lines += ["  " + line for line in _table(rows)]
    if capacity is not None:
        fleet_cost = capacity["servers_s"] + capacity["postgres_s"] + capacity["haproxy_s"]
        server_cost = capacity["servers_s"]
        lines.append(
            f"  one server spends {server_cost * 1000:.1f} ms of CPU per run, so one server "
            f"core serves about {1 / server_cost:.0f} runs/s; with PostgreSQL and HAProxy "
            f"{fleet_cost * 1000:.1f} ms per run: about {1 / fleet_cost:.0f} runs/s per core "
            f"of a fleet machine, e.g. {8 / fleet_cost:.0f} runs/s on 8 cores or "
            f"{32 / fleet_cost:.0f} on 32 (agents on other machines)")
    lines.append(f"  Note: this machine has {env['cpus']} cores, shared by the agents, HAProxy, "
                 "PostgreSQL and every server. One builtin server uses at most about one core "
                 "(the GIL), so a second one can still add throughput here; beyond that more "
                 "servers cannot add throughput, they only split the same CPU. The cost per "
                 "run is what carries over to bigger machines.")
    for fleet in results["fleets"]:
        prop = fleet.get("propagation")
        if prop:
            lines += ["", f"Probe upload on server A to server B serving the groups "
                          f"({fleet['servers']} servers, direct calls, {prop['trials']} trials):",
                      f"  median {_ms(prop['median_s'])} ms, p90 {_ms(prop['p90_s'])} ms, max "
                      f"{_ms(prop['max_s'])} ms after A acknowledged the upload (median "
                      f"{_ms(prop['median_from_upload_start_s'])} ms from the upload's start); "
                      f"{prop['missed']} not seen within {prop['timeout_s']:g} s; B polled with "
                      f"GetConfig every {POLL_PAUSE * 1000:g} ms (a poll takes "
                      f"{_ms(prop['poll_getconfig_p50_s'])} ms p50, "
                      f"{prop['polls_median']:.0f} polls median; B served the new groups on "
                      f"its first poll in {prop['seen_on_first_poll']} of "
                      f"{prop['trials'] - prop['missed']} trials, so there the time is one "
                      f"GetConfig's)"]
    pg, lite = _find(results, "postgresql", 1, "run"), _find(results, "sqlite", 1, "run")
    if pg and lite:
        lines += ["", f"One server, agent runs/s: PostgreSQL {pg['per_s']:.1f}, SQLite "
                      f"{lite['per_s']:.1f} (the throughput moves with the machine's other "
                      f"load; the CPU per run does not)"]
        ratio = cpu_ratio(results)
        if ratio is not None:
            lines.append(f"  by CPU per run (servers and PostgreSQL): SQLite / PostgreSQL "
                         f"{ratio:.2f}x, what the throughput ratio comes to where CPU is "
                         f"the limit")
    for fleet in results["fleets"]:
        for error in fleet["errors"]:
            lines.append(f"ERROR ({fleet['engine']}, {fleet['servers']} servers): {error}")
    lines += ["", "Targets:"]
    rows = [("target", "measured", "goal", "status")]
    for t in results["targets"]:
        value = "-" if t["value"] is None else (
            f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.1f} {t['unit']}")
        rows.append((t["target"], value, t["goal"], t["status"]))
    lines += ["  " + line for line in _table(rows)]
    return "\n".join(lines)


def _servers(value: str) -> list[int]:
    try:
        counts = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("server counts are positive")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured seconds per load (default 20, 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before each measured window (default 1, 0.5 with "
                             "--quick)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="agent processes (default 8)")
    parser.add_argument("--servers", type=_servers, default=[1, 2, 3],
                        help="comma-separated fleet sizes on PostgreSQL (default 1,2,3)")
    parser.add_argument("--trials", type=int, default=None,
                        help="probe propagation trials (default 30, 10 with --quick)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="socket timeout of every call (default 30)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 3 s per load, 10 propagation trials")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    parser.add_argument("--profile", metavar="DIR",
                        help="record every server's stacks with py-spy during the run loads "
                             "(collapsed-stack files in DIR)")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 20.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if args.trials is None:
        args.trials = 10 if args.quick else 30
    if args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or args.trials < 1:
        parser.error("--seconds and --concurrency must be positive, --warmup not negative, "
                     "--trials at least 1")
    return args


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when everything was measured, targets met or not."""
    args = parse_args(argv)
    if HAPROXY is None:
        print("fleet: haproxy is not installed (apt-get install haproxy)", file=sys.stderr)
        return 2
    if not os.path.isdir("/proc/self/task"):
        print("fleet: needs Linux /proc to read CPU times", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="bcfg2-fleet-") as root:
            results = run(args, Path(root))
    except KeyboardInterrupt:
        print("fleet: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BenchError as err:
        print(f"fleet: {err}", file=sys.stderr)
        return 1
    print(format_report(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(_rounded(results), fh, indent=2)
            fh.write("\n")
    return 1 if any(f["errors"] for f in results["fleets"]) else 0


if __name__ == "__main__":
    sys.exit(main())

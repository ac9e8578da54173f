"""What a connection flood may cost a server process: descriptors, threads, memory, CPU.

These start real ``python -m bcfg2.server`` processes (one per core) and
read their figures from /proc, asserting the bounds the server enforces:
``[server] max_connections`` bounds descriptors and threads whatever is
opened, the soft limit on open files is raised at start-up, and out of
descriptors the accept loop pauses instead of spinning. A real agent is
served meanwhile, from another source.
"""

from __future__ import annotations

import re
import resource
import time

import pytest
from attack import assert_served
from conftest import CORES, STARTUP, ServerProcess, wait_until, write_conf
from connattack import (
    OTHER,
    FromSource,
    closed_by_server,
    closing,
    cpu_seconds,
    fd_count,
    fd_limits,
    flood,
    status_field,
)

from bcfg2.limits import FD_CEILING

#: descriptors and threads a server may add, beyond one per connection, under a flood
#: (the deadline and log-summary threads, a log file rotating...)
MARGIN = 8


def start(core: str, repo, tls, tmp_path, processes: list[ServerProcess], nofile: tuple[int, int],
          **server: object) -> tuple[ServerProcess, int]:
    """A server process of ``core`` with RLIMIT_NOFILE ``nofile`` and [server] options; its port."""
    if core == "multiprocessing":
        server.setdefault("children", 1)
    extra = f"backend = {core}\n" + "".join(f"{k} = {v}\n" for k, v in server.items())
    conf = write_conf(tmp_path / "bcfg2.conf", repo, tls, server_extra=extra)
    process = ServerProcess(["-C", str(conf), "-v"], preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_NOFILE, nofile))
    processes.append(process)
    return process, process.port()


@pytest.mark.parametrize("core", CORES)
def test_a_flood_holds_no_more_descriptors_or_threads_than_max_connections(
        core, example_repo, tls, tmp_path, processes) -> None:
    """300 idle connections against max_connections = 100: descriptors, threads and memory
    grow by at most 100 connections' worth, and an agent from another source is served."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard limit on open files ({hard}) leaves nothing to raise")
    server, port = start(core, example_repo, tls, tmp_path, processes, (256, hard),
                         max_connections=100, max_connections_per_source=1000,
                         request_deadline=30)
    pid = server.proc.pid
    raised = FD_CEILING if hard == resource.RLIM_INFINITY else min(hard, FD_CEILING)
    assert fd_limits(pid)[0] == raised
    assert any(f"Raised the soft limit of open files from 256 to {raised}" in line
               for line in server.lines)
    agent = FromSource(port, tls, OTHER)
    assert_served(agent)
    fds, threads, rss = fd_count(pid), status_field(pid, "Threads"), status_field(pid, "VmRSS")
    with closing(flood(port, 300)) as idle:
        wait_until(lambda: sum(map(closed_by_server, idle)) == 200, 20,
                 "the 200 connections over max_connections to be closed")
        assert fd_count(pid) <= fds + 100 + MARGIN
        assert status_field(pid, "Threads") <= threads + 100 + MARGIN
        assert status_field(pid, "VmRSS") - rss < 64 * 1024, "100 idle connections cost 64 MB"
        assert_served(agent)  # takes the place of one of the flood's connections
        assert fd_count(pid) <= fds + 100 + MARGIN


@pytest.mark.parametrize("core", CORES)
def test_out_of_descriptors_the_accept_loop_pauses_and_then_serves_again(
        core, example_repo, tls, tmp_path, processes) -> None:
    """With 96 descriptors (soft = hard: nothing to raise) and caps far above that, a flood
    exhausts them: the server uses little CPU meanwhile, and serves again after it."""
    limit = 96
    server, port = start(core, example_repo, tls, tmp_path, processes, (limit, limit),
                         max_connections=1000, max_connections_per_source=1000,
                         request_deadline=60)
    pid = server.proc.pid
    assert any("max_connections = 1000 needs about" in line for line in server.lines)
    agent = FromSource(port, tls, "127.0.0.1")
    assert_served(agent)
    with closing(flood(port, limit + 40)):
        server.wait_for(re.compile(r"Cannot accept connections: Too many open files"), STARTUP)
        cpu, started = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)  # the measurement window: how much CPU two seconds out of descriptors cost
        used, wall = cpu_seconds(pid) - cpu, time.monotonic() - started
        assert used < 0.2 * wall, f"{used:.2f}s of CPU in {wall:.2f}s out of descriptors"
    assert_served(agent)

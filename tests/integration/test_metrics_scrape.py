"""bcfg2-server's /metrics, scraped as Prometheus does, after agents called (every core)."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request
import xmlrpc.client
from typing import Any

import pytest
from conftest import CORES, WEB1, ServerProcess, wait_until, write_conf
from prometheus_client.parser import text_string_to_metric_families

from bcfg2 import metrics

METRICS_ON = re.compile(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics")
TOKEN = "scrape-token-0123"


def scrape(port: int, token: str | None = TOKEN) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=15) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def agent(tls, port: int, user: str, password: str) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"https://{user}:{password}@127.0.0.1:{port}/RPC2",
                                     context=tls.client_context(), allow_none=True)


@pytest.mark.parametrize("backend", CORES)
def test_a_running_server_counts_what_agents_do(backend, example_repo, tls, tmp_path,
                                                processes):
    extra = f"backend = {backend}\n" + ("children = 2\n" if backend == "multiprocessing" else "")
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls, server_extra=extra)
    conf.write_text(conf.read_text() + f"\n[metrics]\nenabled = true\nlisten = 127.0.0.1:0\n"
                                       f"token = {TOKEN}\n")
    server = ServerProcess(["-C", str(conf), "-v"])
    processes.append(server)
    metrics_port = int(server.wait_for(METRICS_ON).group(1))
    port = server.port()

    web1 = agent(tls, port, *WEB1)
    assert web1.DeclareVersion("1.4.0") is True
    web1.GetProbes()
    for _ in range(2):
        assert "<Configuration" in web1.GetConfig()
    with pytest.raises(xmlrpc.client.ProtocolError) as refused:
        agent(tls, port, WEB1[0], "wrong").GetConfig()
    assert refused.value.errcode == 401
    with pytest.raises(xmlrpc.client.Fault):
        getattr(web1, "Made.up")()

    with pytest.raises(urllib.error.HTTPError) as forbidden:
        scrape(metrics_port, token=None)
    assert forbidden.value.code == 403
    if backend == "multiprocessing":
        wait_until(lambda: sample(scrape(metrics_port), "bcfg2_children_alive") == 2, 60,
                   "both children alive on /metrics")
    found = scrape(metrics_port)
    assert sample(found, "bcfg2_requests_total", method="GetConfig", outcome="ok") == 2
    assert sample(found, "bcfg2_requests_total", method="DeclareVersion", outcome="ok") == 1
    assert sample(found, "bcfg2_requests_total", method="other", outcome="unauthorized") == 1
    assert sample(found, "bcfg2_requests_total", method="other",
                  outcome="unknown_method") == 1
    assert sample(found, "bcfg2_request_seconds_count", method="GetConfig") == 2
    # built in the children with the multiprocessing core: their counts reached the parent
    for phase in metrics.PHASES:
        assert sample(found, "bcfg2_build_phase_seconds_count", phase=phase) == 2, phase
    assert sample(found, "bcfg2_metadata_cache_lookups_total", result="miss") >= 2
    assert sample(found, "bcfg2_storage_seconds_count", engine="sqlite", operation="write") >= 1
    assert sample(found, "bcfg2_file_events_total", action="exists") > 0
    assert sample(found, "bcfg2_metrics_refused_total", reason="token") == 1
    assert not any(value for (name, labels), value in found.items()
                   if any(WEB1[0] in v or "web1" in v for _, v in labels))

    server.proc.send_signal(signal.SIGTERM)
    status, _ = server.finish(timeout=30)
    assert status == 0
    with pytest.raises(urllib.error.URLError):
        scrape(metrics_port)


def test_a_metrics_port_in_use_stops_the_start(example_repo, tls, tmp_path, processes):
    first_conf = write_conf(tmp_path / "first.conf", example_repo, tls,
                            server_extra="backend = builtin\n")
    first_conf.write_text(first_conf.read_text()
                          + "\n[metrics]\nenabled = true\nlisten = 127.0.0.1:0\n")
    first = ServerProcess(["-C", str(first_conf), "-v"])
    processes.append(first)
    taken = int(first.wait_for(METRICS_ON).group(1))
    first.port()
    conf = write_conf(tmp_path / "second.conf", example_repo, tls,
                      server_extra="backend = builtin\n")
    conf.write_text(conf.read_text() + f"\n[metrics]\nenabled = true\n"
                                       f"listen = 127.0.0.1:{taken}\n")
    second = ServerProcess(["-C", str(conf), "-v"])
    processes.append(second)
    second.wait_for(re.compile(r"Cannot listen on 127\.0\.0\.1:\d+ for the metrics"))
    status, _ = second.finish(timeout=30)
    assert status == 1


def test_listen_without_enabled_is_refused_at_start(example_repo, tls, tmp_path, processes):
    conf = write_conf(tmp_path / "bcfg2.conf", example_repo, tls)
    conf.write_text(conf.read_text() + "\n[metrics]\nlisten = 127.0.0.1:0\n")
    server = ServerProcess(["-C", str(conf)])
    processes.append(server)
    status, lines = server.finish(timeout=30)
    assert status == 1
    assert any("[metrics] enabled" in line for line in lines), lines


def test_getconfig_through_a_running_server_in_this_process(builtin_server, example_repo,
                                                            tls) -> Any:
    fresh = metrics.Metrics()
    previous = metrics.use(fresh)
    try:
        server = builtin_server(example_repo)
        server.proxy(*WEB1).GetConfig()
        get = fresh.registry.get_sample_value
        assert get("bcfg2_requests_total", {"method": "GetConfig", "outcome": "ok"}) == 1
        assert get("bcfg2_build_phase_seconds_count", {"phase": "bind"}) == 1
    finally:
        metrics.use(previous)

"""Each metric moves when its thing happens; labels stay bounded; /metrics has its own access rule."""

from __future__ import annotations

import io
import os
import time
import urllib.error
import urllib.request
import xmlrpc.client
from typing import Any

import pytest
from conftest import make_setup
from prometheus_client.parser import text_string_to_metric_families

from bcfg2 import metrics
from bcfg2 import xmlrpc as door
from bcfg2.cache import MetadataCache
from bcfg2.errors import ConfigError, StorageError
from bcfg2.filemonitor import Event
from bcfg2.filemonitor.pseudo import Pseudo
from bcfg2.identity import Caller
from bcfg2.metadata import ClientMetadata, MetadataQuery
from bcfg2.storage import SQLiteDatabase

ADMIN = ("admin", "s3cret")
AGENT = ("uuid-client1", "pw1")


@pytest.fixture
def counted() -> Any:
    """A fresh Metrics as this process's for one test (what the modules report goes to it)."""
    fresh = metrics.Metrics()
    previous = metrics.use(fresh)
    yield fresh
    metrics.use(previous)


def value(m: metrics.Metrics, name: str, **labels: str) -> float:
    """A sample as /metrics shows it (0 if absent)."""
    return m.registry.get_sample_value(name, labels) or 0.0


def scrape(app: Any, address: str = "127.0.0.1", authorization: str | None = None,
           path: str = "/metrics", method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    """One request to a WSGI app: its status, headers and body."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
               "REMOTE_ADDR": address, "SERVER_NAME": "test", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http"}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


# -- requests through the door -------------------------------------------------------------


@pytest.fixture
def core(repo, local_core):
    core = local_core(repo, server__plugins="Metadata,Bundler",
                      communication__admin_user=ADMIN[0],
                      communication__admin_password=ADMIN[1])
    yield core
    door.forget_throttle(core)


def call(core, credentials, method: str, *params: Any) -> door.Result:
    body = xmlrpc.client.dumps(params, method).encode()
    return door.handle(core, door.Request(body, ("127.0.0.1", 40000), None, *credentials))


def test_a_call_is_counted_by_method_and_outcome_and_timed(core, counted):
    assert call(core, AGENT, "DeclareVersion", "1.4.0").outcome == "ok"
    assert call(core, AGENT, "DeclareVersion", "1.4.0").outcome == "ok"
    assert value(counted, "bcfg2_requests_total", method="DeclareVersion", outcome="ok") == 2
    assert value(counted, "bcfg2_request_seconds_count", method="DeclareVersion") == 2


def test_faults_are_counted_by_the_class_of_their_code(core, counted):
    call(core, AGENT, "DeclareVersion")  # a parameter missing
    call(core, AGENT, "expire_metadata_cache")  # an admin method, refused to an agent
    call(core, AGENT, "NoSuchMethod")
    assert value(counted, "bcfg2_requests_total", method="DeclareVersion",
                 outcome="invalid_params") == 1
    assert value(counted, "bcfg2_requests_total", method="expire_metadata_cache",
                 outcome="access_denied") == 1
    assert value(counted, "bcfg2_requests_total", method="other", outcome="unknown_method") == 1


def test_a_refused_login_is_counted_as_unauthorized(core, counted):
    assert call(core, ("uuid-client1", "wrong"), "DeclareVersion", "1.4.0").unauthorized
    assert value(counted, "bcfg2_requests_total", method="other", outcome="unauthorized") == 1


def test_a_thousand_made_up_method_names_make_one_label_set(core, counted):
    for number in range(1000):
        call(core, ADMIN, f"Made.up{number}")
        call(core, ADMIN, f"madeUp{number}")
    call(core, ADMIN, "DeclareVersion", "1.4.0")  # an admin is no client: a fault
    label_sets = {tuple(sorted(sample.labels.items()))
                  for family in counted.registry.collect() if family.name == "bcfg2_requests"
                  for sample in family.samples}
    assert value(counted, "bcfg2_requests_total", method="other",
                 outcome="unknown_method") == 2000
    assert label_sets == {(("method", "other"), ("outcome", "unknown_method")),
                          (("method", "DeclareVersion"), ("outcome", "application_error"))}


def test_a_method_name_no_core_exposes_is_other_whoever_reports_it(core):
    assert metrics.method_label(core, "GetConfig") == "GetConfig"
    assert metrics.method_label(core, "Bundler.nothing") == "other"
    assert metrics.method_label(core, "") == "other"


# -- builds ------------------------------------------------------------------------------


def test_a_getconfig_times_every_build_phase(repo, local_core, counted):
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    repo.write("Cfg/etc/motd/motd", "hello\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg")
    config = str(core.GetConfig(Caller(("127.0.0.1", 1), client="client1")))
    assert "/etc/motd" in config
    for phase in metrics.PHASES:
        assert value(counted, "bcfg2_build_phase_seconds_count", phase=phase) == 1, phase
    assert value(counted, "bcfg2_build_phase_seconds_sum", phase="bind") > 0


# -- the metadata cache, file events, storage ---------------------------------------------------


def cache(mode: str) -> MetadataCache:
    built = MetadataCache(mode)
    built.bind(lambda name: ClientMetadata(name, "basic", {"basic"}, (), (), (), {}, None, None,
                                           None, MetadataQuery()),
               lambda imd: imd)
    return built


@pytest.mark.parametrize("mode, hits, misses", [
    ("aggressive", 2, 1), ("cautious", 2, 1), ("initial", 2, 1), ("off", 0, 3)])
def test_metadata_cache_lookups_count_hits_and_misses(mode, hits, misses, counted):
    kept = cache(mode)
    for _ in range(3):
        kept.fetch("client1")
    assert value(counted, "bcfg2_metadata_cache_lookups_total", result="hit") == hits
    assert value(counted, "bcfg2_metadata_cache_lookups_total", result="miss") == misses


def test_an_expired_client_is_a_miss_again(counted):
    kept = cache("aggressive")
    kept.fetch("client1")
    kept.expire("client1")
    kept.fetch("client1")
    assert value(counted, "bcfg2_metadata_cache_lookups_total", result="miss") == 2


class Handler:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        self.events.append(event)


def test_file_events_handed_to_a_handler_are_counted_by_action(tmp_path, counted):
    (tmp_path / "a.xml").write_text("<a/>")
    (tmp_path / "a.xml~").write_text("backup")
    monitor = Pseudo(ignore=["*~"])
    handler = Handler()
    monitor.AddMonitor(str(tmp_path), handler)
    monitor.handle_event_set()
    monitor.queue(Event(1, "a.xml", "changed", str(tmp_path / "a.xml")))
    monitor.handle_event_set()
    assert [e.action for e in handler.events] == ["exists", "endExist", "changed"]
    assert value(counted, "bcfg2_file_events_total", action="exists") == 1  # not the backup
    assert value(counted, "bcfg2_file_events_total", action="endExist") == 1
    assert value(counted, "bcfg2_file_events_total", action="changed") == 1


def test_storage_transactions_are_timed_by_engine_and_operation(storage_engine, tmp_path,
                                                                request, counted):
    if storage_engine == "sqlite":
        db = SQLiteDatabase(str(tmp_path / "state.sqlite"))
    else:
        from bcfg2.storage.postgresql import PostgreSQLDatabase

        db = PostgreSQLDatabase(request.getfixturevalue("pg_database").settings())
    try:
        db.run(lambda tx: tx.execute("CREATE TABLE t (x INTEGER)"), write=True)
        db.run(lambda tx: tx.execute("INSERT INTO t VALUES (?)", (1,)), True)
        assert db.run(lambda tx: tx.execute("SELECT COUNT(*) FROM t").scalar()) == 1
        with pytest.raises(StorageError):
            db.run(lambda tx: tx.execute("SELECT * FROM missing"))
    finally:
        db.close()
    engine = storage_engine
    assert value(counted, "bcfg2_storage_seconds_count", engine=engine, operation="write") == 2
    assert value(counted, "bcfg2_storage_seconds_count", engine=engine, operation="read") == 2
    assert value(counted, "bcfg2_storage_errors_total", engine=engine, operation="read") == 1
    assert value(counted, "bcfg2_storage_errors_total", engine=engine, operation="write") == 0


# -- gauges, and what children relay ------------------------------------------------------------


def test_packages_index_ages_are_the_oldest_by_source_type(counted):
    now = time.time()
    metrics.packages_indices([("apt", now - 7200), ("apt", now - 60), ("yum", now - 30),
                              ("apt", 0.0)])  # never written: no age to tell
    age = value(counted, "bcfg2_packages_index_age_seconds", type="apt")
    assert 7200 <= age < 7200 + 600
    assert value(counted, "bcfg2_packages_indices", type="apt") == 2
    assert value(counted, "bcfg2_packages_indices", type="yum") == 1


def test_the_packages_plugin_reports_the_indices_it_serves(repo, local_core, counted,
                                                          monkeypatch, tmp_path):
    from bcfg2.plugins.packages import drivers
    from bcfg2.plugins.packages.index import Index

    index = Index("deb")
    index.add("libc6", version="2.36")
    monkeypatch.setattr(drivers, "load", lambda source, arch, fetcher, known_key=None:
                        drivers.Loaded(key="k1", index=index, files=[source.base_url]))
    repo.write("Metadata/groups.xml", GROUPS_WITH_DEBIAN)
    repo.write("Bundler/base.xml", '<Bundle><Package name="libc6"/></Bundle>')
    repo.write("Packages/sources.xml", APT_SOURCES)
    local_core(repo, server__plugins="Metadata,Bundler,Packages").BuildConfiguration("client1")
    assert value(counted, "bcfg2_packages_indices", type="apt") == 2  # one per architecture
    assert value(counted, "bcfg2_packages_index_age_seconds", type="apt") < 600
    hour_ago = time.time() - 3600
    for cached in (tmp_path / "state" / "Packages" / "cache").glob("*.json"):
        os.utime(cached, (hour_ago, hour_ago))
    local_core(repo, server__plugins="Metadata,Bundler,Packages")  # reads the cache at start
    assert 3600 <= value(counted, "bcfg2_packages_index_age_seconds", type="apt") < 3600 + 600


GROUPS_WITH_DEBIAN = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="debian"/><Group name="amd64"/>
  </Group>
  <Bundle name="base"/>
</Groups>
"""
APT_SOURCES = """\
<Sources>
  <Group name="debian">
    <Source type="apt" url="http://mirror.invalid/debian" version="bookworm">
      <Component>main</Component><Arch>amd64</Arch><Arch>arm64</Arch>
    </Source>
  </Group>
</Sources>
"""


class Pool:
    def __init__(self, alive: int) -> None:
        self.count = alive

    def alive(self) -> int:
        return self.count


def test_children_alive_follow_the_pool_and_vanish_with_it(counted):
    pool = Pool(3)
    metrics.watch_children(pool.alive)
    assert value(counted, "bcfg2_children_alive") == 3
    pool.count = 2
    assert value(counted, "bcfg2_children_alive") == 2
    del pool
    assert counted.registry.get_sample_value("bcfg2_children_alive") is None


def test_what_a_child_does_is_counted_by_the_parent_once(counted):
    child = metrics.Metrics(relay=True)
    with metrics.phase("bind"):
        pass  # counted by the parent's own (current) metrics
    previous = metrics.use(child)
    try:
        for _ in range(3):
            with metrics.phase("bind"):
                pass
        metrics.metadata_cache(hit=False)
        metrics.file_event("changed")
    finally:
        metrics.use(previous)
    assert child.registry.get_sample_value("bcfg2_build_phase_seconds_count",
                                           {"phase": "bind"}) is None  # kept, not counted
    events = child.drain()
    assert child.drain() == []
    counted.relay(events)
    assert value(counted, "bcfg2_build_phase_seconds_count", phase="bind") == 4
    assert value(counted, "bcfg2_build_phase_seconds_bucket", phase="bind", le="+Inf") == 4
    assert value(counted, "bcfg2_metadata_cache_lookups_total", result="miss") == 1
    # every child watches the same files as the parent: each change is counted once
    assert value(counted, "bcfg2_file_events_total", action="changed") == 0


def test_a_child_keeps_a_bounded_number_of_events(counted):
    child = metrics.Metrics(relay=True)
    for _ in range(metrics.MAX_PENDING + 50):
        child.record("metadata_cache", ("hit",))
    assert len(child.drain()) == metrics.MAX_PENDING


def test_malformed_relayed_events_are_ignored(counted):
    counted.relay([("made_up", ("x",), 1.0), ("metadata_cache", ("hit", "extra"), 1.0),
                   ("metadata_cache", (1,), 1.0), ("metadata_cache", ("hit",), -1.0),
                   ("metadata_cache", ("hit",), float("nan")), ("metadata_cache",),
                   "not an event", ("metadata_cache", ("hit",), 2.0)])
    counted.relay("not a list")  # type: ignore[arg-type]
    assert value(counted, "bcfg2_metadata_cache_lookups_total", result="hit") == 2


# -- who may scrape ---------------------------------------------------------------------------


def app_for(counted: metrics.Metrics, **options: str) -> Any:
    return metrics.make_app(make_setup("/nonexistent", **{f"metrics__{k}": v
                                                          for k, v in options.items()}), counted)


def test_the_endpoint_is_off_unless_enabled(counted):
    status, _, body = scrape(app_for(counted))
    assert status.startswith("404") and b"[metrics] enabled" in body


def test_an_allowed_address_gets_the_text_format(counted):
    metrics.file_event("created")
    status, headers, body = scrape(app_for(counted, enabled="true"))
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/plain")
    found = families(body.decode())
    assert {"bcfg2_requests", "bcfg2_build_phase_seconds", "bcfg2_file_events",
            "bcfg2_metadata_cache_lookups", "bcfg2_storage_seconds"} <= set(found)
    assert [s.value for s in found["bcfg2_file_events"].samples
            if s.name == "bcfg2_file_events_total"] == [1.0]
    assert not any(name.endswith("_created") for name in found)


def test_a_scrape_from_a_disallowed_address_is_refused_and_counted(counted):
    app = app_for(counted, enabled="true", allow="10.1.0.0/16, ::1")
    status, _, body = scrape(app, address="10.2.0.5")
    assert status.startswith("403") and b"[metrics] allow" in body
    assert b"bcfg2_" not in body
    assert scrape(app, address="10.1.200.3")[0].startswith("200")
    assert scrape(app, address="::ffff:10.1.0.9")[0].startswith("200")  # a dual-stack listener
    assert scrape(app, address="127.0.0.1")[0].startswith("403")
    assert scrape(app, address="not an address")[0].startswith("403")
    assert value(counted, "bcfg2_metrics_refused_total", reason="address") == 3


def test_a_token_is_required_when_set(counted):
    app = app_for(counted, enabled="true", token="s3cret-token")
    for authorization in (None, "Bearer wrong", "Basic s3cret-token", "Bearer"):
        status, headers, body = scrape(app, authorization=authorization)
        assert status.startswith("403"), authorization
        assert headers["WWW-Authenticate"] == "Bearer" and b"bearer token" in body
    assert scrape(app, authorization="Bearer s3cret-token")[0].startswith("200")
    assert scrape(app, authorization="bearer  s3cret-token ")[0].startswith("200")
    assert value(counted, "bcfg2_metrics_refused_total", reason="token") == 4
    # the address is checked first: the right token from elsewhere is still refused
    assert scrape(app, address="192.0.2.1",
                  authorization="Bearer s3cret-token")[0].startswith("403")
    assert value(counted, "bcfg2_metrics_refused_total", reason="address") == 1


def test_the_app_answers_at_metrics_and_at_its_mount_point_only(counted):
    app = app_for(counted, enabled="true")
    assert scrape(app, path="")[0].startswith("200")  # grafted at /metrics by the web page
    assert scrape(app, path="/elsewhere")[0].startswith("404")
    assert scrape(app, method="POST")[0].startswith("405")


@pytest.mark.parametrize("option, text, why", [
    ("allow", "10.0.0.0/33", r"\[metrics\] allow: '10.0.0.0/33' is not an address"),
    ("listen", "localhost:9100", r"\[metrics\] listen: 'localhost' is not an IP address"),
    ("listen", "127.0.0.1", r"\[metrics\] listen: '127.0.0.1' is not HOST:PORT"),
    ("listen", "127.0.0.1:99999", r"\[metrics\] listen: '127.0.0.1:99999' is not HOST:PORT"),
])
def test_bad_options_are_clear_errors(option, text, why):
    with pytest.raises(ConfigError, match=why):
        metrics.Endpoint(make_setup("/nonexistent", metrics__enabled="true",
                                    **{f"metrics__{option}": text}))


def test_listen_without_enabled_says_to_enable(counted):
    with pytest.raises(ConfigError, match="enabled = true"):
        metrics.Endpoint(make_setup("/nonexistent", metrics__listen="127.0.0.1:0"))


def test_listen_addresses():
    assert metrics.listen_address("") is None
    assert metrics.listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert metrics.listen_address("[::1]:9100") == ("::1", 9100)


def test_the_standalone_listener_serves_and_stops(counted):
    endpoint = metrics.Endpoint(make_setup("/nonexistent", metrics__enabled="true",
                                           metrics__listen="127.0.0.1:0"))
    assert endpoint.start()
    try:
        port = endpoint.port
        assert port
        assert endpoint.start()  # a second start does nothing
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert "bcfg2_requests" in families(resp.read().decode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert refused.value.code == 404
    finally:
        endpoint.stop()
    endpoint.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)


def test_a_listener_that_cannot_bind_says_so(counted, caplog):
    first = metrics.Endpoint(make_setup("/nonexistent", metrics__enabled="true",
                                        metrics__listen="127.0.0.1:0"))
    assert first.start()
    try:
        second = metrics.Endpoint(make_setup("/nonexistent", metrics__enabled="true",
                                             metrics__listen=f"127.0.0.1:{first.port}"))
        assert not second.start()
        assert "Cannot listen on 127.0.0.1" in caplog.text and "[metrics] listen" in caplog.text
    finally:
        first.stop()

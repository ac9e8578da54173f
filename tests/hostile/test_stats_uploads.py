"""Statistics uploads (RecvStats) from a hostile client, on every core.

Each attack is one agent's own credentials (web1 of repo-example) sending
what a real agent never would: hundreds of thousands of entries, several at
once, megabytes of file content every run, floods of runs, attributes by the
hundred thousand, newlines meant to forge report rows. Each must cost the
server a bounded amount of memory and disk, and a real agent is served
meanwhile.

Memory is measured on a ``bcfg2-server`` process of its own (the in-process
servers share the test's memory): its peak RSS (``VmHWM``, reset through
``/proc/<pid>/clear_refs``) over the RSS before the attack.
"""

from __future__ import annotations

import logging
import shutil
import threading
import xmlrpc.client
from pathlib import Path

import pytest
from attack import STATS, assert_served, call_body, fault_of, raw_call
from conftest import CORES, REPO_EXAMPLE, WEB1, Repo, ServerProcess, write_conf
from connattack import flood_body, peak_growth, upload

import bcfg2.admin
from bcfg2.errors import APPLICATION_ERROR
from bcfg2.reportdb import MARKER, RunStore

MB = 1024 * 1024


def store_of(server) -> RunStore:
    return RunStore(str(Path(server.core.setup.server.state_dir) / "Reporting"
                        / "reporting.sqlite"))


# -- memory: one flood, four at once ---------------------------------------------------

class Agent:
    """A bcfg2-server process as the attack helpers see a server: its port, TLS, proxies."""

    def __init__(self, tls, port: int) -> None:
        self.tls = tls
        self.port = port

    def proxy(self, user: str, password: str) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(f"https://{user}:{password}@127.0.0.1:{self.port}/RPC2",
                                         context=self.tls.client_context())


@pytest.fixture(params=CORES)
def server_process(request, tls, tmp_path: Path):
    """A bcfg2-server process per core over a copy of repo-example, with Reporting."""
    repo = Repo(tmp_path / "repo")
    shutil.copytree(REPO_EXAMPLE, repo.path, dirs_exist_ok=True)
    conf = write_conf(tmp_path / "bcfg2.conf", repo, tls, server_extra=(
        f"backend = {request.param}\nchildren = 1\n"))
    conf.write_text(conf.read_text().replace(
        "plugins = Metadata, Bundler, Cfg, Rules, Defaults",
        "plugins = Metadata, Bundler, Cfg, Rules, Defaults, Probes, Properties, "
        "TemplateHelper, GroupPatterns, Decisions, Reporting"))
    # a large upload waits for its turn as long as it takes: every reply is a stored run
    conf.write_text(conf.read_text() + "\n[reporting]\nlarge_upload_wait = 120\n")
    process = ServerProcess(["-C", str(conf), "-v"])
    try:
        yield process, Agent(tls, process.port())
    finally:
        process.kill()


def test_floods_of_entries_cost_a_small_multiple_of_their_size(server_process) -> None:
    """360,000 empty bad entries (8 MB as a body): one upload, then four at once.

    Before the upload was read incrementally one cost 400 MB and four 1.3 GB.
    """
    process, agent = server_process
    assert agent.proxy(*WEB1).RecvStats(STATS) is True  # warm: the run database is open
    body = flood_body("Bad")
    replies: list[tuple[int, bytes]] = []

    def send() -> None:
        replies.append(raw_call(agent, body, timeout=120))

    def four_at_once() -> None:
        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    one = peak_growth(process.proc.pid, send)
    four = peak_growth(process.proc.pid, four_at_once)
    print(f"\nbody {len(body) / MB:.1f} MiB; peak RSS growth: one {one / MB:.0f} MiB, "
          f"four at once {four / MB:.0f} MiB")
    assert [(code, fault_of(reply)) for code, reply in replies] == [(200, None)] * 5
    assert one < 6 * len(body)
    assert four < 16 * len(body)
    assert_served(agent)


# -- what is kept of one upload ------------------------------------------------------------

def test_entries_beyond_max_entries_are_counted_not_kept(hostile) -> None:
    """60,000 entries: every one counted, a thousand kept, the bad ones first."""
    server = hostile(reporting__max_entries="1000")
    entries = '<Path name="/x" type="file"/>' * 20_000
    document = upload("Extra", entries).replace(
        "</Extra>", f"</Extra><Good>{entries}</Good><Bad>{entries}</Bad>")
    assert server.proxy(*WEB1).RecvStats(document) is True
    store = store_of(server)
    try:
        run = store.latest("web1.example.com")
        assert (run.bad, run.extra) == (20_000, 20_000)
        assert len(run.entries) == 1000 and {e.kind for e in run.entries} == {"Bad"}
        assert run.dropped == 39_000
    finally:
        store.close()
    assert_served(server)


def test_large_uploads_wait_their_turn_or_are_told_to_try_later(hostile) -> None:
    """With the one slot for large uploads taken, another large one gets a Fault; small pass."""
    server = hostile(reporting__large_uploads="1", reporting__large_upload_entries="100",
                     reporting__large_upload_wait="0.1")
    large = call_body("RecvStats", upload("Bad", '<Path name="/x"/>' * 1000))
    with server.core.upload_gate.turn() as held:
        held.kept(10**9)  # an upload being read holds the slot
        fault = fault_of(raw_call(server, large)[1])
        assert fault is not None and fault.faultCode == APPLICATION_ERROR
        assert "try later" in fault.faultString
        assert_served(server)  # an ordinary run is small: it never waits
    status, body = raw_call(server, large)
    assert status == 200 and fault_of(body) is None


# -- what a client can store -------------------------------------------------------------

def test_file_contents_and_runs_per_hour_are_capped(hostile, caplog) -> None:
    """8 MB of current_bfile per run, fat runs, more runs than the hour allows: all bounded."""
    server = hostile(reporting__max_runs_per_hour="3", reporting__max_run_content="300000")
    agent = server.proxy(*WEB1)
    content = "QUJD" * (2 * MB)  # 8 MB of base64
    fat = "".join(f'<Path name="/etc/f{i}" type="file" current_bdiff="{"A" * 70_000}"/>'
                  for i in range(50))
    runs = [upload("Bad", f'<Path name="/etc/big" type="file" current_bfile="{content}"/>'),
            upload("Bad", fat)] + [STATS] * 3
    assert [agent.RecvStats(run) for run in runs] == [True] * 5  # never a failed agent run
    store = store_of(server)
    try:
        stored = store.runs("web1.example.com", limit=100)
        assert len(stored) == 3
        big = stored[-1].entries[0]
        assert big.truncated == ("current_bfile",)
        assert len(big.attrs["current_bfile"]) == 64 * 1024 + len(MARKER)
        assert 0 < len(stored[-2].entries) < 50 and stored[-2].dropped == 50 - len(
            stored[-2].entries)
        assert store.dropped_runs()["web1.example.com"][0] == 2
        volume = store.db.run(lambda tx: tx.execute(
            "SELECT SUM(LENGTH(attrs) + LENGTH(name) + LENGTH(reason)) FROM entries").scalar())
        assert volume < 400_000  # 8.5 MB and 3.5 MB were sent
    finally:
        store.close()
    assert_served(server)  # over the cap too: counted, and the agent still gets True
    bursts = [r for r in caplog.records if "runs an hour" in r.getMessage()]
    assert len(bursts) == 1


# -- client data as data -----------------------------------------------------------------

def admin_main(argv: list[str]) -> int:
    """bcfg2-admin in this process, the root logger's handlers (pytest's too) put back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return bcfg2.admin.main(argv)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


FORGED_ROW = "db1.example.com  2030-01-01 00:00:00  clean  99/99  0  0  0  0"


def test_client_strings_cannot_forge_report_rows_or_log_lines(hostile, capsys, caplog) -> None:
    """Newlines in the state, revision, entry names and values stay data, escaped on output."""
    server = hostile()
    entries = (f'<Path name="/etc/x&#10;{FORGED_ROW}" type="file" current_mode="1&#10;{FORGED_ROW}"'
               f' mode="0644"/>')
    document = upload("Bad", entries, state=f"clean&#10;{FORGED_ROW}", revision="r&#10;x",
                      client="db1.example.com")
    assert server.proxy(*WEB1).RecvStats(document) is True
    store = store_of(server)
    try:
        assert {r.client for r in store.latest_runs()} == {"web1.example.com"}
        run = store.latest("web1.example.com")
        assert (run.state, run.revision) == ("dirty", "")
        assert run.entries[0].name == f"/etc/x\n{FORGED_ROW}"  # stored as sent
    finally:
        store.close()
    setup = server.core.setup
    base = ["-C", "/dev/null", "-Q", setup.server.repository, "--state-dir",
            setup.server.state_dir, "reports"]
    for extra in ([], ["--dirty"], ["--client", "web1.example.com"]):
        assert admin_main([*base, *extra]) == 0
        out = capsys.readouterr().out
        assert not any(line.startswith(("db1.example.com  2030", "2030")) for line in
                       out.splitlines()), out
        if extra:
            assert "\\n" + FORGED_ROW in out
    logged = [r.getMessage() for r in caplog.records]
    assert not any(FORGED_ROW in m and "\n" in m for m in logged)
    assert_served(server)


@pytest.mark.parametrize("name, document", [
    ("a DTD", '<!DOCTYPE a [<!ENTITY x "xx">]>' + upload()),
    ("an attribute flood", upload("Bad", "<Path " + " ".join(
        f'a{i}=""' for i in range(100_000)) + "/>")),
    ("two runs in one", upload().replace("</upload-statistics>", upload()[19:])),
    ("an old format", upload(version="1.0")),
    ("not XML", "<upload-statistics"),
    ("not a string", 42),
])
def test_uploads_that_cannot_be_read_store_nothing(hostile, name: str, document) -> None:
    server = hostile()
    fault = fault_of(raw_call(server, call_body("RecvStats", document))[1])
    assert fault is not None and fault.faultCode == APPLICATION_ERROR, name
    assert "\n" not in fault.faultString
    assert not (Path(server.core.setup.server.state_dir) / "Reporting").exists()
    assert_served(server)

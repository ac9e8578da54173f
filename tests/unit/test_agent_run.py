"""One agent run (bcfg2.client.run) with a recording server and drivers under tmp_path."""

from __future__ import annotations

import fcntl
import io
from pathlib import Path
from typing import Any

import lxml.etree
import pytest

from bcfg2 import options
from bcfg2.client import registry
from bcfg2.client.drivers.base import Driver, EntryState, entry_key
from bcfg2.client.errors import LockedError, ProbeError
from bcfg2.client.run import Flags, Run


class FakePackages(Driver):
    """Package entries of type deb, "installed" in a set; records what it is asked."""

    name = "FakePkg"
    handles = frozenset({("Package", "deb")})
    installed: set[str] = set()
    extra: list[str] = []
    calls: list[tuple[str, list[str]]] = []

    def verify(self, entry, modlist):
        if entry.get("name") == "explodes":
            raise RuntimeError("the package database is locked")
        ok = entry.get("name") in self.installed
        return EntryState(ok, [] if ok else ["not installed"])

    def install(self, entries):
        names = [e.get("name") for e in entries]
        self.calls.append(("install", names))
        self.installed.update(names)
        return {entry_key(e): True for e in entries}

    def find_extra(self):
        return [lxml.etree.Element("Package", name=n, type="deb") for n in self.extra]

    def remove(self, entries):
        self.calls.append(("remove", [e.get("name") for e in entries]))
        return {entry_key(e): True for e in entries}

    def bundle_updated(self, bundle, changed):
        self.calls.append(("updated", [bundle.get("name")]))

    def bundle_not_updated(self, bundle):
        self.calls.append(("not updated", [bundle.get("name")]))


@pytest.fixture(autouse=True)
def fake_driver(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(registry.DRIVERS, "FakePkg", "test_agent_run:FakePackages")
    FakePackages.installed = set()
    FakePackages.extra = []
    FakePackages.calls = []


class Server:
    """Answers the agent's calls as a server would; records them."""

    def __init__(self, config: str, probes: str = "<probes/>",
                 decisions: list[list[str]] | None = None) -> None:
        self.config = config
        self.probes = probes
        self.decisions = decisions or []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, setup) -> Server:
        return self

    def call(self, method: str, *params: Any) -> Any:
        self.calls.append((method, params))
        return {"GetProbes": self.probes, "GetConfig": self.config,
                "GetDecisionList": self.decisions}.get(method, True)

    def close(self) -> None:
        pass

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    def stats(self) -> lxml.etree._Element:
        [document] = [p[0] for m, p in self.calls if m == "RecvStats"]
        return lxml.etree.fromstring(document).find("Statistics")


def config(*bundles: str) -> str:
    return f'<Configuration revision="42" version="2.0">{"".join(bundles)}</Configuration>'


def bundle(name: str, *entries: str, tag: str = "Bundle") -> str:
    return f'<{tag} name="{name}">{"".join(entries)}</{tag}>'


def file(name: str, text: str = "x\n", **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (f'<Path name="{name}" type="file" owner="root" group="root" mode="0644"{extra}>'
            f"{text}</Path>")


def action(name: str, command: str, **attrs: str) -> str:
    attrs = {"timing": "post", "when": "modified", "status": "check", **attrs}
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<Action name="{name}" command="{command}" shell="true"{extra}/>'


def package(name: str) -> str:
    return f'<Package name="{name}" type="deb" version="1"/>'


def run(tmp_path: Path, server: Server, conf: str = "", ask=None, out=None,
        **flags: Any) -> Run:
    (tmp_path / "root").mkdir(exist_ok=True)
    path = tmp_path / "bcfg2.conf"
    path.write_text(f"[components]\nlockfile = {tmp_path / 'lock'}\n[client]\n"
                    f"drivers = POSIX, Action, FakePkg\n{conf}")
    setup = options.build_client(str(path))
    agent = Run(setup, Flags(root=str(tmp_path / "root"), **flags), out=out or io.StringIO(),
                ask=ask or (lambda q: pytest.fail(f"asked {q}")), proxy=server)
    assert agent.execute() == 0
    return agent


def test_the_calls_of_a_run_in_upstreams_order_and_the_statistics(tmp_path: Path) -> None:
    server = Server(config(bundle("web", file("/etc/web.conf"), package("nginx"),
                                  '<Service name="nginx" type="systemd" status="on"/>',
                                  '<Path name="/etc/unbound" type="file" failure="no Cfg"/>')),
                    probes='<probes><probe name="role" source="Probes" interpreter="/bin/sh">'
                           "#!/bin/sh\necho group:web\nprintf ' two spaces \\n'</probe></probes>")
    run(tmp_path, server, "profile = webserver\n")
    assert server.methods() == ["AssertProfile", "DeclareVersion", "GetProbes",
                                "RecvProbeData", "GetConfig", "RecvStats"]
    assert server.calls[0] == ("AssertProfile", ("webserver",))
    [probe_data] = [p[0] for m, p in server.calls if m == "RecvProbeData"]
    assert probe_data == ('<ProbeData><probe-data name="role" source="Probes">group:web\n'
                          " two spaces \n</probe-data></ProbeData>")
    stats = server.stats()
    assert {k: stats.get(k) for k in ("total", "good", "state", "revision", "version")} == {
        "total": "4", "good": "2", "state": "dirty", "revision": "42", "version": "2.0"}
    assert [(e.tag, e.get("name")) for e in stats.find("Bad")] == [
        ("Service", "nginx"), ("Path", "/etc/unbound")]  # no driver; a bind failure
    assert sorted(e.get("name") for e in stats.find("Modified")) == ["/etc/web.conf", "nginx"]
    good = stats.find("Good")
    assert all(e.text is None and e.get("qtext") == "" for e in good)
    assert {f.get("name"): f.get("value") for f in stats.find("Flags")} == {
        "dry_run": "False", "only_important": "False"}
    stamps = stats.find("OpStamps").attrib
    assert {"start", "probe_download", "config_download", "inventory", "finished"} <= set(stamps)
    assert float(stamps["start"]) <= float(stamps["finished"])
    assert (tmp_path / "root/etc/web.conf").read_text() == "x\n"


def test_a_failing_probe_stops_the_run_unless_told_otherwise(tmp_path: Path) -> None:
    probes = '<probes><probe name="bad" source="Probes">#!/bin/sh\nexit 3\n</probe></probes>'
    server = Server(config(), probes=probes)
    with pytest.raises(ProbeError, match="probe bad exited with status 3"):
        run(tmp_path, server)
    assert "GetConfig" not in server.methods()
    server = Server(config(), probes=probes)
    run(tmp_path, server, "exit_on_probe_failure = false\n")
    assert '<probe-data name="bad" source="Probes"></probe-data>' in server.calls[2][1][0]
    assert server.methods()[-1] == "RecvStats"


def test_no_probes_no_probe_upload(tmp_path: Path) -> None:
    server = Server(config())
    run(tmp_path, server)
    assert "RecvProbeData" not in server.methods()


@pytest.mark.parametrize("mode, installed", [("whitelist", {"a"}), ("blacklist", {"b", "c"})])
def test_decision_lists(tmp_path: Path, mode: str, installed: set[str]) -> None:
    server = Server(config(bundle("b", package("a"), package("b"), package("c"),
                                  action("post", "echo ran >> " + str(tmp_path / "ran")))),
                    decisions=[["Package", "a"], ["Action", "*"]])
    out = io.StringIO()
    run(tmp_path, server, f"decision = {mode}\n", out=out)
    assert ("GetDecisionList", (mode,)) in server.calls
    assert FakePackages.installed == installed
    assert (tmp_path / "ran").exists() == (mode == "whitelist")
    bad = {e.get("name") for e in server.stats().find("Bad")}
    assert bad == {"a", "b", "c"} - installed


def test_only_and_except_bundles_and_independent_entries(tmp_path: Path) -> None:
    cfg = config(bundle("one", package("p1")), bundle("two", package("p2")),
                 bundle("indep", package("p3"), tag="Independent"))
    run(tmp_path, Server(cfg), only_bundles=["one"])
    assert FakePackages.installed == {"p1"}
    FakePackages.installed = set()
    run(tmp_path, Server(cfg), except_bundles=["one"])
    assert FakePackages.installed == {"p2", "p3"}
    FakePackages.installed = set()
    run(tmp_path, Server(cfg), only_independent=True)
    assert FakePackages.installed == {"p3"}
    FakePackages.installed = set()
    run(tmp_path, Server(cfg), skip_independent=True)
    assert FakePackages.installed == {"p1", "p2"}


def test_bundle_quick_verifies_only_the_bundles_given_and_uploads_nothing(tmp_path) -> None:
    server = Server(config(bundle("one", package("p1")), bundle("two", package("explodes"))))
    agent = run(tmp_path, server, only_bundles=["one"], bundle_quick=True)
    assert [e.get("name") for e in agent.states] == ["p1"]
    assert "RecvStats" not in server.methods()


def test_a_failing_pre_action_keeps_its_bundle_from_being_installed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server = Server(config(
        bundle("guarded", file("/etc/guarded"), action("check", "false", timing="pre")),
        bundle("ok", file("/etc/ok"),
               action("before", f"test ! -e {root}/etc/ok &amp;&amp; echo ran > {tmp_path}/pre",
                      timing="pre"))))
    run(tmp_path, server)
    assert not (root / "etc/guarded").exists()
    assert (root / "etc/ok").exists()
    assert (tmp_path / "pre").read_text() == "ran\n"  # ran before the file was written
    bad = {(e.tag, e.get("name")) for e in server.stats().find("Bad")}
    assert bad == {("Action", "check"), ("Path", "/etc/guarded")}


def test_post_actions_when_modified_and_always_and_in_build_mode(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = config(bundle("b", file("/etc/f"),
                        action("modified", f"echo modified >> {log}"),
                        action("always", f"echo always >> {log}", when="always"),
                        action("nobuild", f"echo nobuild >> {log}", when="always",
                               build="false"),
                        action("fails", "exit 1", when="always", status="ignore")))
    server = Server(cfg)
    run(tmp_path, server)
    assert log.read_text().splitlines() == ["modified", "always", "nobuild"]
    assert server.stats().get("state") == "clean"  # status="ignore" keeps a failure good
    run(tmp_path, Server(cfg), "servicemode = build\n")
    assert log.read_text().splitlines() == ["modified", "always", "nobuild", "always"]
    rc = {e.get("name"): e.get("rc") for e in server.stats().find("Good")}
    assert rc["fails"] == "1"


def test_interactive_mode_asks_per_entry(tmp_path: Path) -> None:
    asked: list[str] = []

    def ask(question: str) -> bool:
        asked.append(question)
        return "yes" in question

    out = io.StringIO()
    server = Server(config(bundle("b", file("/etc/yes", "new\n"), file("/etc/no"),
                                  action("post", "true"))))
    run(tmp_path, server, ask=ask, out=out, interactive=True)
    assert asked == ["Install Path:file:/etc/yes (does not exist)?",
                     "Install Path:file:/etc/no (does not exist)?", "Run Action post: true?"]
    assert "+new" in out.getvalue()  # the diff shown before the question
    assert (tmp_path / "root/etc/yes").exists() and not (tmp_path / "root/etc/no").exists()


def test_extra_entries_are_reported_and_removed_in_the_modes_asked(tmp_path: Path) -> None:
    FakePackages.extra = ["telnetd"]
    server = Server(config(bundle("b", package("nginx"))))
    run(tmp_path, server, remove="services")
    assert ("remove", ["telnetd"]) not in FakePackages.calls
    assert [e.get("name") for e in server.stats().find("Extra")] == ["telnetd"]
    server = Server(config(bundle("b", package("nginx"))))
    run(tmp_path, server, remove="packages")
    assert ("remove", ["telnetd"]) in FakePackages.calls
    assert len(server.stats().find("Extra")) == 0
    FakePackages.calls = []
    out = io.StringIO()
    run(tmp_path, Server(config()), out=out, remove="all", dry_run=True)
    assert not any(call[0] == "remove" for call in FakePackages.calls)
    assert "Would remove Package:deb:telnetd: not in the configuration\n" in out.getvalue()


def test_important_entries_go_first_and_bundles_hear_what_changed(tmp_path: Path) -> None:
    cfg = config(bundle("a", package("late")),
                 bundle("b", '<Package name="early" type="deb" important="true"/>'),
                 bundle("c", package("there")))
    FakePackages.installed = {"there"}
    run(tmp_path, Server(cfg))
    assert FakePackages.calls[:2] == [("install", ["early"]), ("install", ["late"])]
    assert ("updated", ["a"]) in FakePackages.calls
    assert ("updated", ["b"]) in FakePackages.calls
    assert ("not updated", ["c"]) in FakePackages.calls


def test_dry_run_installs_nothing_and_says_so(tmp_path: Path) -> None:
    out = io.StringIO()
    server = Server(config(bundle("b", package("nginx"), file("/etc/f", "hello\n"),
                                  '<Service name="ssh" type="systemd"/>', package("explodes"),
                                  action("post", "touch " + str(tmp_path / "ran")))))
    run(tmp_path, server, out=out, dry_run=True)
    assert not any(c[0] == "install" for c in FakePackages.calls)
    assert not (tmp_path / "ran").exists() and not (tmp_path / "root/etc").exists()
    text = out.getvalue()
    assert "Would install Package:deb:nginx: not installed\n" in text
    assert "Would install Path:file:/etc/f: does not exist\n" in text and "+hello\n" in text
    assert "Would not install Service:systemd:ssh: no driver handles it\n" in text
    assert ("Would install Package:deb:explodes: verification failed: the package "
            "database is locked\n") in text
    assert "Would run Action:post: touch" in text
    flags = {f.get("name"): f.get("value") for f in server.stats().find("Flags")}
    assert flags["dry_run"] == "True"


def test_a_configuration_from_a_file_talks_to_no_server(tmp_path: Path) -> None:
    path = tmp_path / "config.xml"
    path.write_text(config(bundle("b", file("/etc/from-file"))))

    def no_server(setup):
        raise AssertionError("the server was called")

    (tmp_path / "root").mkdir()
    setup = options.build_client("/dev/null", {"components.lockfile": str(tmp_path / "l")})
    setup.client.drivers = ["POSIX"]
    assert Run(setup, Flags(root=str(tmp_path / "root"), file=str(path)),
               proxy=no_server).execute() == 0
    assert (tmp_path / "root/etc/from-file").exists()


def test_a_configuration_from_a_file_ignores_the_decision_mode(tmp_path: Path) -> None:
    """-f asks no server for a decision list: whitelist mode must not hold back the
    entries, nor the actions, of the file."""
    ran = tmp_path / "ran"
    path = tmp_path / "config.xml"
    path.write_text(config(bundle("b", package("a"), action("post", f"echo ran >> {ran}"))))
    (tmp_path / "root").mkdir()
    setup = options.build_client("/dev/null", {"components.lockfile": str(tmp_path / "l"),
                                               "client.decision": "whitelist"})
    setup.client.drivers = ["Action", "FakePkg"]
    assert Run(setup, Flags(root=str(tmp_path / "root"), file=str(path)),
               proxy=Server(config())).execute() == 0
    assert FakePackages.installed == {"a"} and ran.exists()


def test_two_runs_never_overlap_unless_told(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with open(lock, "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(LockedError, match="another bcfg2 run holds the lock file"):
            run(tmp_path, Server(config()))
        run(tmp_path, Server(config()), no_lock=True)
    run(tmp_path, Server(config()))  # released


def test_cache_only_important_and_kevlar(tmp_path: Path) -> None:
    cfg = config(bundle("b", package("plain"),
                        '<Package name="key" type="deb" important="true"/>'))
    cache = tmp_path / "cached.xml"
    server = Server(cfg)
    run(tmp_path, server, cache=str(cache), only_important=True)
    assert cache.read_text() == cfg
    assert FakePackages.installed == {"key"}
    assert [e.get("name") for e in server.stats().find("Good")] == ["key"]  # -i: only those
    assert server.stats().get("total") == "1"
    FakePackages.calls = []
    agent = run(tmp_path, Server(cfg), kevlar=True)
    assert FakePackages.installed == {"key", "plain"}
    assert all(agent.states.values())


def test_a_diff_cannot_send_escape_sequences_to_the_terminal(tmp_path: Path) -> None:
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/f").write_text("\x1b]0;owned\x07\tkept tab\n")
    out = io.StringIO()
    run(tmp_path, Server(config(bundle("b", file("/etc/f", "clean\n")))), out=out, dry_run=True)
    assert "-\\x1b]0;owned\\x07\tkept tab\n+clean\n" in out.getvalue()
    assert "\x1b" not in out.getvalue()

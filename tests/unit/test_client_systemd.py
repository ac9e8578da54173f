"""The Systemd driver through a stub ``systemctl`` on PATH that records what it is asked and
answers from a state file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import lxml.etree
import pytest

from bcfg2.client.drivers import Context
from bcfg2.client.drivers.systemd import Systemd

STUB = """#!{python} -S
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
root = None
if args[:1] == ["--root"]:
    root, args = args[1], args[2:]
path = os.environ["STUB_STATE"]
with open(path) as fh:
    units = json.load(fh)
cmd, rest = args[0], args[1:]
unit = units.get(rest[0]) if rest else None
if cmd == "list-unit-files":
    for name, u in sorted(units.items()):
        if u["enabled"] == "enabled":
            print(name, "enabled", "enabled")
    sys.exit(0)
if cmd == "is-enabled":
    print(unit["enabled"] if unit else "not-found")
    sys.exit(0 if unit and unit["enabled"] in ("enabled", "static") else 1)
if cmd == "is-active":
    print("active" if unit and unit["active"] else "inactive")
    sys.exit(0 if unit and unit["active"] else 3)
if unit is None or unit.get("broken"):
    print("Failed", file=sys.stderr)
    sys.exit(1)
if cmd in ("start", "stop", "restart", "reload") and root is not None:
    print("Cannot be used with --root", file=sys.stderr)
    sys.exit(1)
if cmd in ("enable", "disable", "mask", "unmask"):
    if unit["enabled"] == "masked" and cmd in ("enable", "disable"):
        print("Unit is masked", file=sys.stderr)
        sys.exit(1)
    unit["enabled"] = dict(enable="enabled", disable="disabled", mask="masked",
                           unmask="disabled")[cmd]
elif cmd in ("start", "restart", "reload"):
    unit["active"] = True
elif cmd == "stop":
    unit["active"] = False
with open(path, "w") as fh:
    json.dump(units, fh)
"""


class Stub:
    """A stub systemctl in a directory of its own, with its state and its log."""

    def __init__(self, tmp: Path, units: dict[str, dict]) -> None:
        self.dir = tmp / "bin"
        self.dir.mkdir()
        script = self.dir / "systemctl"
        script.write_text(STUB.format(python=sys.executable))
        script.chmod(0o755)
        self.state = tmp / "units.json"
        self.state.write_text(json.dumps(units))
        self.log = tmp / "calls.log"
        self.env = {"PATH": f"{self.dir}:{os.environ.get('PATH', '')}",
                    "STUB_LOG": str(self.log), "STUB_STATE": str(self.state)}

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def changes(self) -> list[list[str]]:
        """The calls that change something (not is-enabled, is-active)."""
        return [c for c in self.calls() if not {"is-enabled", "is-active"} & set(c)]

    def units(self) -> dict[str, dict]:
        return json.loads(self.state.read_text())

    def driver(self, root: str = "/", dry_run: bool = False, **client: object) -> Systemd:
        setup = SimpleNamespace(client=SimpleNamespace(**client)) if client else None
        return Systemd(Context(root=root, env=self.env, dry_run=dry_run, setup=setup))


def service(name: str, **attrs: str) -> lxml.etree._Element:
    return lxml.etree.Element("Service", name=name, type="systemd", **attrs)


@pytest.fixture
def stub(tmp_path: Path) -> Stub:
    return Stub(tmp_path, {
        "ssh.service": {"enabled": "enabled", "active": True},
        "cron.service": {"enabled": "disabled", "active": False},
        "cups.service": {"enabled": "enabled", "active": True},
        "telnet.service": {"enabled": "masked", "active": False},
        "broken.service": {"enabled": "disabled", "active": False, "broken": True},
            })


def test_available_where_systemd_runs_the_machine_or_in_a_root(
        stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bcfg2.client.drivers import systemd

    monkeypatch.setattr(systemd, "BOOTED_MARKER", str(tmp_path / "run-systemd-system"))
    assert not Systemd.available(Context(env=stub.env))
    assert Systemd.available(Context(root=str(tmp_path / "image"), env=stub.env))
    (tmp_path / "run-systemd-system").mkdir()
    assert Systemd.available(Context(env=stub.env))


def test_a_correct_service_is_only_looked_at(stub: Stub) -> None:
    drv = stub.driver()
    assert drv.verify(service("ssh", status="on"), []).correct
    assert stub.calls() == [["is-enabled", "ssh.service"], ["is-active", "ssh.service"]]


def test_a_stopped_disabled_service_is_enabled_and_started(stub: Stub) -> None:
    drv = stub.driver()
    cron = service("cron", status="on")
    state = drv.verify(cron, [])
    assert state.reasons == ["bootstatus is off, should be on", "status is off, should be on"]
    assert cron.get("current_status") == "off"
    assert drv.install([cron]) == {("Service", "cron"): True}
    assert stub.changes() == [["enable", "cron.service"], ["start", "cron.service"]]
    assert stub.units()["cron.service"] == {"enabled": "enabled", "active": True}


def test_bootstatus_apart_from_status_and_ignore(stub: Stub) -> None:
    drv = stub.driver()
    cups = service("cups", status="off", bootstatus="on")
    assert drv.verify(cups, []).reasons == ["status is on, should be off"]
    assert drv.install([cups]) == {("Service", "cups"): True}
    assert stub.changes() == [["stop", "cups.service"]]
    # status ignore without bootstatus: nothing to check but the unit is looked at once
    assert drv.verify(service("cron", status="ignore"), []).correct
    assert drv.verify(service("cron", status="ignore", bootstatus="on"), []).reasons == [
        "bootstatus is off, should be on"]


def test_masking_and_unmasking(stub: Stub) -> None:
    drv = stub.driver()
    cron = service("cron", bootstatus="masked", status="off")
    assert drv.verify(cron, []).reasons == ["bootstatus is off, should be masked"]
    telnet = service("telnet", status="on")
    assert drv.verify(telnet, []).reasons == ["bootstatus is masked, should be on",
                                              "status is off, should be on"]
    assert drv.install([cron, telnet]) == {("Service", "cron"): True,
                                           ("Service", "telnet"): True}
    assert stub.changes() == [["mask", "cron.service"], ["unmask", "telnet.service"],
                              ["enable", "telnet.service"], ["start", "telnet.service"]]


def test_install_false_and_failures_leave_the_entry_wrong(stub: Stub) -> None:
    drv = stub.driver()
    manual = service("cron", status="on", install="false")
    broken = service("broken", status="on")
    assert not drv.verify(manual, []).correct and not drv.verify(broken, []).correct
    assert drv.install([manual, broken]) == {("Service", "cron"): False,
                                             ("Service", "broken"): False}
    # the broken unit was not started after enabling it failed
    assert stub.changes() == [["enable", "broken.service"]]
    assert stub.units()["cron.service"]["enabled"] == "disabled"


def test_under_a_root_only_the_boot_state_is_managed(stub: Stub, tmp_path: Path) -> None:
    root = str(tmp_path / "image")
    drv = stub.driver(root=root)
    cron = service("cron", status="on")
    assert drv.verify(cron, []).reasons == ["bootstatus is off, should be on"]
    assert drv.install([cron]) == {("Service", "cron"): True}
    assert all(c[:2] == ["--root", root] for c in stub.calls())
    assert stub.changes() == [["--root", root, "enable", "cron.service"]]
    drv.bundle_updated(lxml.etree.Element("Bundle"), {})
    assert stub.units()["cron.service"]["active"] is False


def test_dry_run_changes_nothing(stub: Stub) -> None:
    drv = stub.driver(dry_run=True)
    cron = service("cron", status="on")
    drv.verify(cron, [])
    assert drv.install([cron]) == {("Service", "cron"): False}
    bundle = lxml.etree.Element("Bundle")
    bundle.append(service("ssh", status="on"))
    drv.bundle_updated(bundle, {})
    assert stub.changes() == []


def test_malformed_entries_never_reach_systemctl(stub: Stub) -> None:
    drv = stub.driver()
    entries = [service("--root=/", status="on"), service("cron", status="up"),
               service("cron", status="on", bootstatus="yes")]
    assert [drv.verify(e, []).reasons for e in entries] == [
        ["'--root=/' is not a unit name"], ["status 'up' is not one of on, off, ignore"],
        ["bootstatus 'yes' is not one of on, off, masked"]]
    assert drv.install(entries) == {("Service", "--root=/"): False, ("Service", "cron"): False}
    drv.bundle_updated(bundle_of(*entries), {})
    assert stub.calls() == []


def bundle_of(*entries: lxml.etree._Element) -> lxml.etree._Element:
    bundle = lxml.etree.Element("Bundle", name="b")
    for entry in entries:
        bundle.append(entry)
    bundle.append(lxml.etree.Element("Path", name="/etc/x", type="file"))
    return bundle


def test_bundle_updated_restarts_as_restart_says(stub: Stub) -> None:
    drv = stub.driver()
    bundle = bundle_of(service("ssh", status="on"),
                       service("cron", status="on", restart="false"),
                       service("cups", status="on", restart="interactive"),
                       service("telnet", status="off"),
                       service("broken", status="ignore"),
                       lxml.etree.Element("Service", name="other", type="chkconfig",
                                          status="on"))
    drv.bundle_updated(bundle, {})
    assert stub.changes() == [["restart", "ssh.service"], ["stop", "telnet.service"]]
    # a service of two changed bundles is restarted once
    drv.bundle_updated(bundle_of(service("ssh", status="on")), {})
    assert stub.changes() == [["restart", "ssh.service"], ["stop", "telnet.service"]]


def test_interactive_restarts_ask_and_target_is_the_command(stub: Stub) -> None:
    drv = stub.driver(interactive=True)
    asked: list[str] = []
    drv.ask = lambda q: asked.append(q) or q.endswith("cups?")
    drv.bundle_updated(bundle_of(service("ssh", status="on", target="reload"),
                                 service("cups", status="on", restart="interactive")), {})
    assert asked == ["Restart service ssh?", "Restart service cups?"]
    assert stub.changes() == [["restart", "cups.service"]]
    drv.ask = lambda q: True
    drv.bundle_updated(bundle_of(service("ssh", status="on", target="reload")), {})
    assert stub.changes()[-1] == ["reload", "ssh.service"]


def test_service_modes(stub: Stub) -> None:
    disabled = stub.driver(servicemode="disabled")
    cron = service("cron", status="on")
    disabled.verify(cron, [])
    disabled.install([cron])
    disabled.bundle_updated(bundle_of(service("ssh", status="on")), {})
    assert stub.changes() == [["enable", "cron.service"]]
    build = stub.driver(servicemode="build")
    ssh = service("ssh", status="on")
    build.verify(ssh, [])
    build.install([ssh])
    build.bundle_updated(bundle_of(service("cups", status="on")), {})
    assert stub.changes()[1:] == [["stop", "ssh.service"], ["stop", "cups.service"]]

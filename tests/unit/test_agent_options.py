"""The agent's options (upstream's bcfg2.conf names and flags), probes, the Action driver,
the driver registry and the terminal's questions."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import lxml.etree
import pytest
from conftest import wait_until

from bcfg2 import options
from bcfg2.client import cli, probes, registry
from bcfg2.client.drivers.action import Action, decision_allows
from bcfg2.client.drivers.base import Context, Driver
from bcfg2.client.errors import AgentError, ProbeError
from bcfg2.client.run import terminal_ask

UPSTREAM_CONF = """\
[components]
bcfg2 = https://bcfg2.example.com:6789
lockfile = /run/bcfg2.lock

[communication]
user = 5c3f7a62-uuid
password = from-the-file
ca = /etc/bcfg2/ca.pem
key = /etc/bcfg2/client.key
certificate = /etc/bcfg2/client.crt
serverCommonNames = bcfg2.example.com:bcfg2
retries = 5
retry_delay = 2
timeout = 30

[client]
drivers = POSIX, Action
decision = whitelist
paranoid = true

[paranoid]
path = /var/backups/bcfg2
max_copies = 5

[server]
repository = /var/lib/bcfg2
"""


def test_an_upstream_bcfg2_conf_is_read_with_its_names(tmp_path: Path) -> None:
    conf = tmp_path / "bcfg2.conf"
    conf.write_text(UPSTREAM_CONF)
    setup = options.build_client(str(conf))
    comm = setup.communication
    assert (setup.components.bcfg2, setup.components.lockfile) == (
        "https://bcfg2.example.com:6789", "/run/bcfg2.lock")
    assert (comm.user, comm.password, comm.ca, comm.key, comm.certificate) == (
        "5c3f7a62-uuid", "from-the-file", "/etc/bcfg2/ca.pem", "/etc/bcfg2/client.key",
        "/etc/bcfg2/client.crt")
    assert comm.serverCommonNames == ["bcfg2.example.com", "bcfg2"]
    assert (comm.retries, comm.retry_delay, comm.timeout) == (5, 2.0, 30.0)
    assert setup.client.drivers == ["POSIX", "Action"]
    assert (setup.client.decision, setup.client.paranoid) == ("whitelist", True)
    assert (setup.paranoid.path, setup.paranoid.max_copies) == ("/var/backups/bcfg2", 5)


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "bcfg2.conf"
    conf.write_text(UPSTREAM_CONF)
    ns = cli.parser().parse_args(["-C", str(conf), "-x", "flag-pw", "-u", "other-uuid",
                                  "--ca-cert", "/tmp/ca.pem", "-S", "https://10.0.0.1:6790",
                                  "-D", "POSIX", "--ssl-cns", "a:b", "-l", "none", "-P",
                                  "-b", "web:db", "-r", "Services"])
    setup = options.build_client(ns.config, vars(ns))
    assert (setup.communication.password, setup.communication.user) == ("flag-pw",
                                                                        "other-uuid")
    assert setup.communication.ca == "/tmp/ca.pem"
    assert setup.components.bcfg2 == "https://10.0.0.1:6790"
    assert setup.client.drivers == ["POSIX"]
    assert setup.communication.serverCommonNames == ["a", "b"]
    assert setup.client.decision == "none"
    assert (ns.only_bundles, ns.remove) == (["web", "db"], "services")


def test_bad_values_and_flags_are_one_line_errors(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[communication]\nretries = many\n")
    assert cli.main(["-C", str(conf)]) == 2
    assert capsys.readouterr().err == (f"bcfg2: {conf}: [communication] retries: 'many' is not "
                                       "an integer\n")
    conf.write_text("[logging]\nsyslog = false\n")
    assert cli.main(["-C", str(conf), "-Q", "-O"]) == 1
    assert "-Q needs the bundles to verify (-b or -B)" in capsys.readouterr().err
    assert cli.main(["-C", str(conf), "-O", "--root", str(tmp_path / "none")]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert cli.main(["-C", str(conf), "-O", "-D", "Nonsense", "-f", "/dev/null"]) == 1
    assert "unknown driver(s) Nonsense" in capsys.readouterr().err


def probe(text: str, **attrs: str) -> lxml.etree._Element:
    element = lxml.etree.Element("probe", name="p", source="Probes", **attrs)
    element.text = text
    return element


def test_probe_interpreters_and_output() -> None:
    assert probes.interpreter_of(probe("#!/bin/sh\n", interpreter="/usr/bin/env python3")) \
        == ["/usr/bin/env", "python3"]
    assert probes.interpreter_of(probe("#! /usr/bin/perl -w\nprint 1;\n")) == ["/usr/bin/perl",
                                                                              "-w"]
    assert probes.interpreter_of(probe("echo no shebang\n")) == ["/bin/sh"]
    script = f"#!{sys.executable}\nprint('group:py')\nprint('\\x01 ok')\n"
    data = probes.run_probe(probe(script), timeout=30, exit_on_failure=True)
    assert data.text == "group:py\n\ufffd ok\n"  # verbatim, with what XML cannot carry replaced
    assert (data.get("name"), data.get("source")) == ("p", "Probes")


def test_probes_that_fail_or_hang(caplog, tmp_path: Path, monkeypatch) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(ProbeError, match="probe p ran longer than 1 s and was killed"):
        probes.run_probe(probe(f"#!/bin/sh\nsleep 60 & echo $! > {pidfile}\nsleep 5\n"),
                         timeout=1, exit_on_failure=True)
    # what the probe started went with it (gone, or a zombie no reaper has collected yet;
    # a SIGKILL is delivered when the kernel gets to it)
    stat = Path(f"/proc/{int(pidfile.read_text())}/stat")

    def dead() -> bool:
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except FileNotFoundError:
            return True
    wait_until(dead, 10, "the probe's background process to be killed")
    with pytest.raises(ProbeError, match=r"probe p cannot be run: .*\(run by /no/such/shell\)"):
        probes.run_probe(probe("#!/no/such/shell\n"), timeout=5, exit_on_failure=True)
    monkeypatch.setattr(probes, "MAX_OUTPUT", 1000)
    with pytest.raises(ProbeError, match="probe p wrote more than 1000 bytes"):
        probes.run_probe(probe("#!/bin/sh\nyes\n"), timeout=5, exit_on_failure=True)
    with caplog.at_level(logging.ERROR):
        data = probes.run_probe(probe("#!/bin/sh\necho partial; exit 2\n"), timeout=5,
                                exit_on_failure=False)
    assert data.text == "" and "probe p exited with status 2" in caplog.text


def actions(tmp_path: Path, conf: str = "", dry_run: bool = False) -> Action:
    path = tmp_path / "bcfg2.conf"
    path.write_text(f"[client]\n{conf}")
    return Action(Context(root=str(tmp_path), dry_run=dry_run,
                          setup=options.build_client(str(path))))


def action(command: str, **attrs: str) -> lxml.etree._Element:
    return lxml.etree.Element("Action", name="a", command=command, **attrs)


def test_action_commands_status_and_timeouts(tmp_path: Path) -> None:
    driver = actions(tmp_path, "command_timeout = 0.5\n")
    out = tmp_path / "out"
    assert driver.run_action(action(f"touch '{out} with space'"))
    assert (tmp_path / "out with space").exists()  # split as a shell would, no shell
    assert driver.run_action(action(f"touch {tmp_path}/$HOME"))
    assert (tmp_path / "$HOME").exists()  # no expansion
    assert driver.run_action(action(f"echo $((1+1)) > {out}", shell="true"))
    assert out.read_text() == "2\n"
    failing = action("false")
    assert not driver.run_action(failing) and failing.get("rc") == "1"
    assert driver.run_action(action("false", status="ignore"))
    slow = action("sleep 5")
    assert not driver.run_action(slow) and slow.get("rc") == "-1"
    assert not driver.run_action(action("/no/such/command"))
    assert not actions(tmp_path, dry_run=True).run_action(action(f"touch {tmp_path}/dry"))
    assert not (tmp_path / "dry").exists()


def test_pre_actions_run_on_install_post_ones_after_their_bundle(tmp_path: Path) -> None:
    log = tmp_path / "log"
    driver = actions(tmp_path)
    bundle = lxml.etree.Element("Bundle", name="b")
    for name, timing, when in (("pre", "pre", "modified"), ("post", "post", "modified"),
                               ("both", "both", "always")):
        lxml.etree.SubElement(bundle, "Action", name=name, timing=timing, when=when,
                              command=f"sh -c 'echo {name} >> {log}'")
    assert driver.install(list(bundle)) == {("Action", "pre"): True, ("Action", "both"): True}
    assert log.read_text().split() == ["pre", "both"]
    log.unlink()
    assert driver.bundle_not_updated(bundle) == {("Action", "both"): True}
    assert driver.bundle_updated(bundle, {}) == {("Action", "post"): True,
                                                 ("Action", "both"): True}
    assert log.read_text().split() == ["both", "post", "both"]


def test_decision_lists_match_tag_and_name_with_wildcards() -> None:
    entry = lxml.etree.Element("Action", name="apt-key")
    assert decision_allows(entry, "whitelist", [("Action", "*")])
    assert not decision_allows(entry, "whitelist", [("Path", "*")])
    assert not decision_allows(entry, "blacklist", [("*", "apt-key")])
    assert decision_allows(entry, "blacklist", [("Action", "other")])
    assert decision_allows(entry, "none", [("*", "*")])


class Unavailable(Driver):
    name = "Unavailable"

    @classmethod
    def available(cls, context):
        return False


def test_drivers_are_found_by_name_and_missing_ones_are_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    (tmp_path / "broken_driver.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.DRIVERS, "Missing", "bcfg2.client.drivers.nosuch:Missing")
    monkeypatch.setitem(registry.DRIVERS, "Unavailable", "test_agent_options:Unavailable")
    monkeypatch.setitem(registry.DRIVERS, "Broken", "broken_driver:Broken")
    context = Context(root=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        loaded = registry.load_drivers(context, ["POSIX", "Missing", "Unavailable", "Action"])
    assert [d.name for d in loaded] == ["POSIX", "Action"]
    assert "Driver Missing is not installed" in caplog.text
    assert "Driver Unavailable cannot be used on this machine" in caplog.text
    with pytest.raises(AgentError, match="driver Broken cannot be loaded: RuntimeError: "
                                         "half written"):
        registry.load_drivers(context, ["Broken"])
    with pytest.raises(AgentError, match="unknown driver"):
        registry.load_drivers(context, ["posix"])
    caplog.clear()
    everything = [d.name for d in registry.load_drivers(context)]  # Broken is said, skipped
    assert everything[0] == "POSIX" and everything[-1] == "Action" and "Broken" not in everything
    assert "driver Broken cannot be loaded: RuntimeError: half written; going on" in caplog.text


def test_the_terminal_is_asked_and_only_y_is_yes(monkeypatch: pytest.MonkeyPatch,
                                                 capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\nn\nyes\n"))
    assert [terminal_ask("Install Path:/etc/motd?") for _ in range(4)] == [
        True, False, False, False]  # the last: end of input
    assert capsys.readouterr().out.startswith("Install Path:/etc/motd? (y/N): ")

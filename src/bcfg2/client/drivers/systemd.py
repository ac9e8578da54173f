"""Service entries of type systemd, through ``systemctl``.

As upstream: ``bootstatus`` (``on``/``off``; unset: ``status`` unless that is ``ignore``) is
checked with ``systemctl is-enabled`` and set with ``enable``/``disable``; ``status``
(``on``/``off``/``ignore``) with ``is-active`` and ``start``/``stop``. ``bootstatus="masked"``
(beyond upstream's schema) masks the unit; a masked unit is unmasked before it is enabled
or disabled. ``install="false"`` entries are verified but never changed. When a bundle
changed, its services are restarted (``target``, default ``restart``) as ``restart`` says:
``true``, ``false``, or ``interactive`` (only when the run is interactive, after asking).
The ``-s`` service mode of the run is honoured: ``disabled`` touches no running service,
``build`` stops the services it would start.

Under a root other than ``/`` only the boot state is managed (``systemctl --root``): the
running services are the host's, not the root's. As upstream's Systemd tool, it reports no
extra services: ``-r services`` leaves unconfigured units alone.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence

from bcfg2.client.drivers._common import client_option, truthy, which
from bcfg2.client.drivers.base import Context, Driver, Element, EntryState, entry_key
from bcfg2.untrusted import escaped

#: the suffixes of systemd unit names; a name without one is a service
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".target", ".path", ".mount",
                 ".automount", ".swap", ".slice", ".scope", ".device")
ACTIVE = ("active", "activating", "reloading")
#: what a unit name may be (never an option of systemctl)
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]{0,254}")
BOOT_STATES = ("on", "off", "masked")
STATUSES = ("on", "off", "ignore")
#: exists when systemd runs the machine (sd_booted(3)); systemctl alone proves nothing
BOOTED_MARKER = "/run/systemd/system"


def ask_on_terminal(question: str) -> bool:
    """Ask a yes/no question on the terminal (no: anything but y/yes, or no terminal)."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} (y/N) ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


class Systemd(Driver):
    """Boot and running state of systemd services."""

    name = "Systemd"
    handles = frozenset({("Service", "systemd")})

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.systemctl = which(context, "systemctl") or "systemctl"
        #: how interactive restarts ask: the run's prompt (the context's), else the terminal
        self.ask: Callable[[str], bool] = getattr(context, "ask", None) or ask_on_terminal
        self.restarted: set[str] = set()
        #: what verify found, per unit: (boot state, running state or None)
        self.current: dict[str, tuple[str, str | None]] = {}

    @classmethod
    def available(cls, context: Context) -> bool:
        """systemctl, and (on the machine itself, not in a root) systemd as its init."""
        if which(context, "systemctl") is None:
            return False
        return context.root not in ("", "/") or os.path.isdir(BOOTED_MARKER)

    # the run's choices

    @property
    def service_mode(self) -> str:
        """The run's ``-s`` (``[client] servicemode``): default, disabled or build."""
        return str(client_option(self.context, "servicemode", "default"))

    @property
    def interactive(self) -> bool:
        return bool(client_option(self.context, "interactive", False))

    @property
    def chrooted(self) -> bool:
        return self.context.root not in ("", "/")

    # helpers

    @staticmethod
    def unit(entry: Element) -> str:
        name = entry.get("name", "")
        return name if name.endswith(UNIT_SUFFIXES) else f"{name}.service"

    @staticmethod
    def bootstatus(entry: Element) -> str | None:
        """The wanted boot state: ``bootstatus``, else ``status`` unless it is ``ignore``."""
        if entry.get("bootstatus"):
            return entry.get("bootstatus")
        status = entry.get("status", "off")
        return None if status == "ignore" else status

    def _systemctl(self, *args: str, boot: bool = False) -> tuple[int, str]:
        argv = [self.systemctl]
        if boot and self.chrooted:
            argv += ["--root", self.context.root]
        result = self.context.run([*argv, *args])
        out = result.stdout.decode("utf-8", "replace").strip() if result.stdout else ""
        return result.returncode, out

    def _boot_state(self, unit: str) -> str:
        code, out = self._systemctl("is-enabled", unit, boot=True)
        if out.startswith("masked"):
            return "masked"
        return "on" if code == 0 else "off"

    def _running_state(self, unit: str) -> str:
        _, out = self._systemctl("is-active", unit)
        return "on" if out.partition("\n")[0] in ACTIVE else "off"

    def _do(self, action: str, unit: str, boot: bool = False) -> bool:
        code, _ = self._systemctl(action, unit, boot=boot)
        if code != 0:
            self.log.error("systemctl %s %s failed (exit %s)", action, unit, code)
        return code == 0

    # the interface

    @classmethod
    def malformed(cls, entry: Element) -> str | None:
        """Why an entry cannot be acted on (a bad name, bootstatus or status), or None."""
        if not UNIT_NAME.fullmatch(cls.unit(entry)):
            return f"'{escaped(entry.get('name', ''), 64)}' is not a unit name"
        if entry.get("status", "off") not in STATUSES:
            status = escaped(entry.get("status", ""), 64)
            return f"status '{status}' is not one of {', '.join(STATUSES)}"
        if cls.bootstatus(entry) not in (*BOOT_STATES, None):
            boot = escaped(entry.get("bootstatus", ""), 64)
            return f"bootstatus '{boot}' is not one of {', '.join(BOOT_STATES)}"
        return None

    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        unit = self.unit(entry)
        problem = self.malformed(entry)
        if problem:
            return EntryState(False, [problem])
        want_boot = self.bootstatus(entry)
        status = entry.get("status", "off")
        boot = self._boot_state(unit)
        running = None if status == "ignore" or self.chrooted else self._running_state(unit)
        self.current[unit] = (boot, running)
        entry.set("target_status", status)  # for the statistics, as upstream
        entry.set("current_bootstatus", boot)
        if running is not None:
            entry.set("current_status", running)
        reasons = []
        if want_boot is not None and boot != want_boot:
            reasons.append(f"bootstatus is {boot}, should be {want_boot}")
        if running is not None and running != status:
            reasons.append(f"status is {running}, should be {status}")
        return EntryState(not reasons, reasons)

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        results = {entry_key(e): False for e in entries}
        if self.context.dry_run:
            return results
        for entry in entries:
            if not truthy(entry.get("install"), True):
                self.log.info("service %s: install is false, left as it is",
                              escaped(entry.get("name", ""), 64))
                continue
            if self.malformed(entry):
                continue
            if self._install_one(entry):
                results[entry_key(entry)] = self.verify(entry, ()).correct
        return results

    def _install_one(self, entry: Element) -> bool:
        unit = self.unit(entry)
        want_boot = self.bootstatus(entry)
        boot, running = self.current.get(unit) or (self._boot_state(unit), None)
        if want_boot is not None and boot != want_boot:
            if want_boot == "masked":
                if not self._do("mask", unit, boot=True):
                    return False
            else:
                if boot == "masked" and not self._do("unmask", unit, boot=True):
                    return False
                if not self._do("enable" if want_boot == "on" else "disable", unit, boot=True):
                    return False
        status = entry.get("status", "off")
        if self.chrooted or status == "ignore" or self.service_mode == "disabled":
            return True
        if running is None:
            running = self._running_state(unit)
        if self.service_mode == "build":
            return running == "off" or self._do("stop", unit)
        if running != status:
            return self._do("start" if status == "on" else "stop", unit)
        return True

    def bundle_updated(self, bundle: Element, changed: Mapping[tuple[str, str], bool]) -> None:
        """Restart (or, in build mode or for status="off", stop) the bundle's services."""
        if self.service_mode == "disabled" or self.chrooted or self.context.dry_run:
            return
        for entry in bundle.iter("Service"):
            if (not self.handles_entry(entry) or not truthy(entry.get("install"), True)
                    or self.malformed(entry)):
                continue
            restart = (entry.get("restart") or "true").lower()
            status = entry.get("status", "off")
            if restart == "false" or status == "ignore":
                continue
            if restart == "interactive" and not self.interactive:
                continue
            unit = self.unit(entry)
            if status != "on" or self.service_mode == "build":
                self._do("stop", unit)
                continue
            if unit in self.restarted:
                continue
            if self.interactive and not self.ask(f"Restart service {entry.get('name')}?"):
                continue
            if self._do(entry.get("target") or "restart", unit):
                self.restarted.add(unit)

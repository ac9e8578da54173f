"""Actions: commands run before a bundle is installed, after it, or both.

An Action always verifies as correct. ``timing="pre"`` and ``"both"``
actions run before their bundle's entries are installed (when the bundle
has something to install, or always with ``when="always"``), and one that
fails (``status="check"``, the default) keeps the bundle from being
installed. ``"post"`` and ``"both"`` actions run after the bundle was
modified, or after every run with ``when="always"``. In build service mode
(``-s build``) an action with ``build="false"`` is deferred. The decision
list (``-l``) also applies to actions.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence

from bcfg2.client.drivers.base import Driver, Element, EntryState, entry_key
from bcfg2.untrusted import escaped


def decision_allows(entry: Element, mode: str, decisions: Sequence[Sequence[str]]) -> bool:
    """Whether the decision list of ``mode`` (whitelist, blacklist, none) lets ``entry``
    be changed; a decision's tag and name may be ``*``."""
    if mode not in ("whitelist", "blacklist"):
        return True
    matched = any(tag in ("*", entry.tag) and name in ("*", entry.get("name"))
                  for tag, name in decisions)
    return matched if mode == "whitelist" else not matched


class Action(Driver):
    """Runs Action (and upstream's deprecated PostInstall) entries."""

    name = "Action"
    handles = frozenset({("Action", None), ("PostInstall", None)})

    def handles_entry(self, entry: Element) -> bool:
        return entry.tag in ("Action", "PostInstall")

    def verify(self, entry: Element, modlist: Sequence[str]) -> EntryState:
        return EntryState(True)

    def install(self, entries: Sequence[Element]) -> dict[tuple[str, str], bool]:
        """Run the pre and both actions given (the bundle is about to be installed)."""
        done: dict[tuple[str, str], bool] = {}
        for entry in entries:
            if entry.tag == "PostInstall":
                self.log.warning("PostInstall %s is deprecated: use an Action",
                                 entry.get("name"))
                continue  # runs after the bundle, as timing="post"
            if entry.get("timing", "post") != "post":
                done[entry_key(entry)] = self.run_action(entry)
        return done

    def bundle_updated(self, bundle: Element, changed: Mapping[tuple[str, str], bool]
                       ) -> dict[tuple[str, str], bool]:
        return self._post(bundle, always_only=False)

    def bundle_not_updated(self, bundle: Element) -> dict[tuple[str, str], bool]:
        return self._post(bundle, always_only=True)

    def _post(self, bundle: Element, always_only: bool) -> dict[tuple[str, str], bool]:
        done: dict[tuple[str, str], bool] = {}
        for entry in bundle:
            if entry.tag == "PostInstall":
                timing, when = "post", "modified"
            elif entry.tag == "Action":
                timing, when = entry.get("timing", "post"), entry.get("when", "modified")
            else:
                continue
            if timing not in ("post", "both") or (always_only and when != "always"):
                continue
            if not self._allowed(entry):
                continue
            done[entry_key(entry)] = self.run_action(entry)
        return done

    def _allowed(self, entry: Element) -> bool:
        client = getattr(self.context.setup, "client", None)
        mode = getattr(client, "decision", "none")
        if decision_allows(entry, mode, getattr(client, "decision_list", [])):
            return True
        self.log.info("In %s mode: not running Action %s", mode, entry.get("name"))
        return False

    def command_of(self, entry: Element) -> list[str]:
        """The argv of an action: through /bin/sh with ``shell="true"``, else split as a
        shell would split it (no expansions)."""
        command = entry.get("command", "")
        if entry.get("shell", "false").lower() == "true":
            return ["/bin/sh", "-c", command]
        return shlex.split(command)

    def run_action(self, entry: Element) -> bool:
        """Run one action; whether it counts as a success."""
        name, command = entry.get("name", ""), entry.get("command", "")
        if self.context.dry_run:
            self.log.info("In dry-run mode: not running Action %s (%s)", name, escaped(command))
            return False
        if self.context.ask is not None and not self.context.ask(
                f"Run Action {name}: {command}?"):
            return False
        client = getattr(self.context.setup, "client", None)
        if getattr(client, "servicemode", "default") == "build" \
                and entry.get("build", "true").lower() == "false":
            self.log.debug("Action %s deferred in build mode", name)
            return False
        try:
            argv = self.command_of(entry)
        except ValueError as err:
            self.log.error("Action %s: cannot split its command: %s", name, err)
            return False
        if not argv:
            self.log.error("Action %s has no command", name)
            return False
        timeout = getattr(client, "command_timeout", 0) or None
        self.log.info("Running Action %s", name)
        try:
            done = self.context.run(argv, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log.error("Action %s ran longer than %g s and was killed", name, timeout)
            entry.set("rc", "-1")
            return entry.get("status", "check") == "ignore"
        except OSError as err:
            self.log.error("Action %s cannot run %s: %s", name, argv[0], err.strerror)
            entry.set("rc", "-1")
            return entry.get("status", "check") == "ignore"
        entry.set("rc", str(done.returncode))
        for stream, text in (("output", done.stdout), ("error output", done.stderr)):
            if text:
                self.log.debug("Action %s %s: %s", name, stream,
                               escaped(text.decode("utf-8", "replace"), 500))
        if done.returncode != 0:
            (self.log.info if entry.get("status") == "ignore" else self.log.error)(
                "Action %s exited with status %d", name, done.returncode)
        return entry.get("status", "check") == "ignore" or done.returncode == 0

"""One agent run, in upstream's order.

(AssertProfile with ``-p``) -> DeclareVersion -> GetProbes -> run the probes
-> RecvProbeData -> GetDecisionList (``-l``) -> GetConfig -> verify every
entry through its driver -> install the important entries -> pre Actions ->
install what is wrong, one batch per driver -> entries a bundle's installs
clobbered, once more -> each bundle told whether it changed (post Actions,
service restarts) -> remove extra entries (``-r``) -> RecvStats.

An entry no driver handles, or that the server could not bind, counts as
bad, as upstream counts it, and is reported, never fatal.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from bcfg2.client import probes
from bcfg2.client.drivers.action import decision_allows
from bcfg2.client.drivers.base import Context, Driver, Element, entry_key
from bcfg2.client.errors import AgentError, ConfigurationError, LockedError, ProtocolError
from bcfg2.client.proxy import VERSION, Proxy
from bcfg2.client.registry import load_drivers
from bcfg2.client.stats import statistics
from bcfg2.errors import UntrustedInputError
from bcfg2.options import Setup
from bcfg2.untrusted import escaped
from bcfg2.xml import parse_untrusted

log = logging.getLogger("bcfg2.client")

#: -r modes and the entry tags each removes
REMOVAL = {"all": None, "services": ("Service",), "packages": ("Package",),
           "users": ("POSIXUser", "POSIXGroup")}


@dataclass
class Flags:
    """What the command line asks of this run beyond bcfg2.conf."""

    dry_run: bool = False
    quick: bool = False
    interactive: bool = False
    only_bundles: list[str] = field(default_factory=list)
    except_bundles: list[str] = field(default_factory=list)
    bundle_quick: bool = False
    remove: str = ""
    file: str = ""
    cache: str = ""
    show_extra: bool = False
    kevlar: bool = False
    only_independent: bool = False
    skip_independent: bool = False
    no_lock: bool = False
    only_important: bool = False
    root: str = "/"


#: what a diff may not carry to the terminal: control characters but tab and newline
TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """A diff fit for a terminal: control characters (escape sequences...) escaped."""
    return TERMINAL_UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                               text)


def describe(entry: Element) -> str:
    """``Tag:type:name`` (``Tag:name`` without a type), as upstream's agent logs entries."""
    kind = entry.get("type")
    name = escaped(entry.get("name", ""), 300)
    return f"{entry.tag}:{kind}:{name}" if kind else f"{entry.tag}:{name}"


@contextlib.contextmanager
def run_lock(path: str, skip: bool) -> Iterator[None]:
    """Hold the lock file for the run; LockedError if another run holds it. A lock file
    that cannot be opened is logged and the run goes on, as upstream's does."""
    if skip:
        yield
        return
    try:
        fh: IO[str] | None = open(path, "a")  # noqa: SIM115 (held for the whole run)
    except OSError as err:
        log.error("Cannot open the lock file %s: %s; running without it", path, err.strerror)
        fh = None
    try:
        if fh is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another bcfg2 run holds the lock file {path} (-O runs "
                                  "without it)") from None
        yield
    finally:
        if fh is not None:
            fh.close()


def terminal_ask(question: str) -> bool:
    """Ask on the terminal; only y or Y is yes (end of input is no)."""
    sys.stdout.write(f"{question} (y/N): ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        sys.stdout.write("\n")
    return answer.strip() in ("y", "Y")


class Run:
    """One run of the agent over the options and flags given."""

    def __init__(self, setup: Setup, flags: Flags, out: IO[str] | None = None,
                 ask: Callable[[str], bool] = terminal_ask,
                 proxy: Callable[[Setup], Proxy] = Proxy.from_setup) -> None:
        self.setup = setup
        self.flags = flags
        self.out = out or sys.stdout
        self._ask = ask
        self._proxy_factory = proxy
        self.proxy: Proxy | None = None
        self.times: dict[str, float] = {}
        self.config: Element | None = None
        self.drivers: list[Driver] = []
        self.driver_of: dict[Element, Driver | None] = {}
        self.states: dict[Element, bool] = {}
        self.reasons: dict[Element, list[str]] = {}
        self.diffs: dict[Element, str] = {}
        # ordered sets (dicts): membership is asked for every entry of every bundle
        self.modified: dict[Element, None] = {}
        self.extra: list[Element] = []
        self.extra_driver: dict[Element, Driver] = {}
        self.whitelist: dict[Element, None] = {}
        self.modlist: list[str] = []
        # what the drivers read of the command line, next to bcfg2.conf's [client]
        for name in ("quick", "kevlar", "interactive"):
            setup.set("client", name, getattr(flags, name))
        setup.set("client", "decision_list", [])
        if flags.file:  # no server to ask for a decision list: every driver sees no mode
            setup.set("client", "decision", "none")

    # --- the whole run ---------------------------------------------------------------------
    def execute(self) -> int:
        """Run; 0 when the run went through (clean or not), AgentError when it cannot."""
        self.times["start"] = time.time()
        with run_lock(self.setup.components.lockfile, self.flags.no_lock):
            try:
                return self._execute()
            finally:
                if self.proxy is not None:
                    self.proxy.close()

    def _execute(self) -> int:
        context = Context(root=self.flags.root, dry_run=self.flags.dry_run, setup=self.setup,
                          ask=self._ask if self.flags.interactive else None)
        self.drivers = load_drivers(context, self.setup.client.drivers)
        self.times["initialization"] = time.time()
        self.config = self._get_config()
        if self.flags.bundle_quick:
            self._keep_chosen_bundles()
        self._inventory()
        self.times["inventory"] = time.time()
        self._display("initial")
        self._decide_and_install()
        self.times["finished"] = time.time()
        self._display("final")
        if self.flags.dry_run:
            self._dry_run_report()
        if not self.flags.file and not self.flags.bundle_quick:
            self._upload_statistics()
        return 0

    # --- talking to the server -------------------------------------------------------------
    def _server(self) -> Proxy:
        if self.proxy is None:
            self.proxy = self._proxy_factory(self.setup)
        return self.proxy

    def _get_config(self) -> Element:
        if self.flags.file:
            try:
                with open(self.flags.file, "rb") as fh:
                    data = fh.read()
            except OSError as err:
                raise ConfigurationError(f"cannot read {self.flags.file}: {err.strerror}") \
                    from None
            self.times["config_download"] = time.time()
            return self._parse_config(data, self.flags.file)
        proxy = self._server()
        if self.setup.client.profile:
            proxy.call("AssertProfile", self.setup.client.profile)
        proxy.call("DeclareVersion", VERSION)
        probe_list = probes.parse_probes(self._string(proxy.call("GetProbes"), "GetProbes"))
        self.times["probe_download"] = time.time()
        if probe_list:
            results = [probes.run_probe(probe, self.setup.client.probe_timeout,
                                        self.setup.client.exit_on_probe_failure,
                                        self.setup.components.encoding)
                       for probe in probe_list]
            proxy.call("RecvProbeData", probes.probe_data(results))
        self.times["probe_upload"] = time.time()
        mode = self.setup.client.decision
        if mode in ("whitelist", "blacklist"):
            self.setup.client.decision_list = self._decision_list(
                proxy.call("GetDecisionList", mode))
            log.info("Got %s of %d decisions from the server", mode,
                     len(self.setup.client.decision_list))
        data = self._string(proxy.call("GetConfig"), "GetConfig")
        self.times["config_download"] = time.time()
        if self.flags.cache:
            try:
                with open(self.flags.cache, "w", encoding="utf-8") as fh:
                    fh.write(data)
            except OSError as err:
                log.error("Cannot cache the configuration in %s: %s", self.flags.cache,
                          err.strerror)
        return self._parse_config(data, "the server's configuration")

    @staticmethod
    def _string(answer: Any, method: str) -> str:
        if not isinstance(answer, str):
            raise ProtocolError(f"the server answered {method} with a "
                                f"{type(answer).__name__}, not a string")
        return answer

    @staticmethod
    def _decision_list(answer: Any) -> list[tuple[str, str]]:
        if not isinstance(answer, list) or not all(
                isinstance(item, list) and len(item) == 2
                and all(isinstance(part, str) for part in item) for item in answer):
            raise ProtocolError("the server's decision list is not a list of [tag, name] pairs")
        return [(tag, name) for tag, name in answer]

    def _parse_config(self, data: str | bytes, what: str) -> Element:
        try:
            config = parse_untrusted(data, "configuration")
        except UntrustedInputError as err:
            raise ConfigurationError(f"{what} cannot be read: {err}") from None
        if config.tag == "error":
            raise ConfigurationError(f"the server could not build the configuration: "
                                     f"{escaped(config.get('type', 'unknown error'), 200)}")
        if config.tag != "Configuration":
            raise ConfigurationError(f"{what} is a <{escaped(str(config.tag), 40)}>, "
                                     "not a <Configuration>")
        self.times["config_parse"] = time.time()
        return config

    def _upload_statistics(self) -> None:
        assert self.config is not None
        states = self.states
        if self.flags.only_important:
            states = {e: ok for e, ok in states.items() if _important(e)}
        document = statistics(self.config.get("revision", "-1"), states, self.modified,
                              self.extra, self.times,
                              {"dry_run": self.flags.dry_run,
                               "only_important": self.flags.only_important})
        self._server().call("RecvStats", document)
        log.info("Statistics uploaded")

    # --- bundles ---------------------------------------------------------------------------
    def structures(self) -> list[Element]:
        assert self.config is not None
        return [s for s in self.config if s.tag in ("Bundle", "Independent")]

    def _keep_chosen_bundles(self) -> None:
        """-Q: only the bundles -b names (or not -B) are verified at all."""
        assert self.config is not None
        for struct in self.structures():
            name = struct.get("name", "")
            chosen = name in self.flags.only_bundles if self.flags.only_bundles \
                else name not in self.flags.except_bundles
            if struct.tag != "Bundle" or not chosen:
                self.config.remove(struct)

    def _installable(self, struct: Element) -> bool:
        """Whether -b, -B, -z and -Z let this bundle's entries be installed."""
        name = struct.get("name", "")
        if struct.tag == "Bundle":
            if self.flags.only_independent:
                return False
            if self.flags.only_bundles and name not in self.flags.only_bundles:
                return False
            return name not in self.flags.except_bundles
        return not self.flags.skip_independent and not self.flags.only_bundles

    # --- verification ----------------------------------------------------------------------
    def _entries(self) -> Iterator[tuple[Element, Element]]:
        for struct in self.structures():
            for entry in struct:
                if isinstance(entry.tag, str):
                    yield struct, entry

    def _inventory(self) -> None:
        self.modlist = [e.get("name", "") for _, e in self._entries() if e.tag == "Path"]
        seen: dict[tuple[str, str], Element] = {}
        for _, entry in self._entries():
            key = entry_key(entry)
            if key in seen:
                log.warning("Entry %s appears more than once in the configuration",
                            describe(entry))
            seen[key] = entry
            driver = next((d for d in self.drivers if d.handles_entry(entry)), None)
            self.driver_of[entry] = driver
            self.states[entry] = False
            if "failure" in entry.attrib:
                self.reasons[entry] = [f"the server could not bind it: "
                                       f"{escaped(entry.get('failure', ''), 200)}"]
                log.error("Entry %s reports a bind failure: %s", describe(entry),
                          escaped(entry.get("failure", ""), 200))
                continue
            if driver is None:
                self.reasons[entry] = ["no driver handles it"]
                log.error("Entry %s: no driver handles it", describe(entry))
                continue
            self._verify(entry)
        for driver in self.drivers:
            try:
                found = driver.find_extra()
            except Exception:
                log.error("%s failed to find extra entries", driver.name, exc_info=True)
                continue
            for entry in found:
                self.extra.append(entry)
                self.extra_driver[entry] = driver

    def _verify(self, entry: Element) -> bool:
        driver = self.driver_of[entry]
        assert driver is not None
        try:
            state = driver.verify(entry, self.modlist)
        except Exception as err:
            log.error("%s failed to verify %s: %s", driver.name, describe(entry), err,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self.states[entry] = False
            self.reasons[entry] = [f"verification failed: {err}"]
            return False
        self.states[entry] = state.correct
        self.reasons[entry] = list(state.reasons)
        self.diffs[entry] = state.diff
        if not state.correct:
            log.info("%s is wrong: %s", describe(entry), "; ".join(state.reasons))
        return state.correct

    # --- deciding and installing -----------------------------------------------------------
    def _decide_and_install(self) -> None:
        self.whitelist = {e: None for _, e in self._entries()
                          if not self.states[e] and self.driver_of[e] is not None
                          and "failure" not in e.attrib}
        mode = self.setup.client.decision
        if mode in ("whitelist", "blacklist"):
            decisions = self.setup.client.decision_list
            kept = {e: None for e in self.whitelist if decision_allows(e, mode, decisions)}
            for entry in self.whitelist:
                if entry not in kept:
                    self.reasons[entry].append(f"not installed: the server's {mode} says so")
            self.whitelist = kept
        chosen = [s for s in self.structures() if self._installable(s)]
        for struct in self.structures():
            if struct not in chosen:
                for entry in struct:
                    self.whitelist.pop(entry, None)
        self._install_important()
        if self.flags.only_important or self.flags.dry_run:
            return
        for struct in chosen:
            self._pre_actions(struct)
        if self.flags.interactive:
            for entry in list(self.whitelist):
                if not self._ask_entry(entry):
                    del self.whitelist[entry]
        self._install(list(self.whitelist))
        self.times["install"] = time.time()
        modified_bundles = [s for s in self.structures() if s.tag == "Bundle"
                            and any(e in self.modified for e in s)]
        if modified_bundles:
            log.info("Modified bundles: %s", ", ".join(s.get("name", "") for s in
                                                       modified_bundles))
            self._reinstall_clobbered(modified_bundles)
        for struct in self.structures():
            if struct.tag == "Bundle" and self.flags.only_bundles \
                    and struct.get("name") not in self.flags.only_bundles:
                continue
            changed = {entry_key(e): True for e in struct if e in self.modified}
            self._tell_drivers(struct, struct in modified_bundles, changed)
        self._remove_extra()
        if self.flags.kevlar and self.modified:
            log.info("Rechecking the whole configuration (kevlar)")
            for _, entry in self._entries():
                if self.driver_of[entry] is not None and "failure" not in entry.attrib:
                    self._verify(entry)

    def _install_important(self) -> None:
        """Entries with important="true" go first (a package manager's configuration)."""
        important = [e for e in self.whitelist if _important(e)]
        if not important or self.flags.dry_run:
            return
        if self.flags.interactive:
            important = [e for e in important if self._ask_entry(e)]
        self._install(important)
        for entry in important:
            self.whitelist.pop(entry, None)

    def _pre_actions(self, struct: Element) -> None:
        """Run a bundle's pre actions; one that fails keeps the bundle from being installed."""
        wanted = any(e in self.whitelist for e in struct) if struct.tag == "Bundle" else False
        actions = [e for e in struct if e.tag == "Action"
                   and e.get("timing", "post") in ("pre", "both")
                   and (wanted or e.get("when", "modified") == "always")
                   and decision_allows(e, self.setup.client.decision,
                                       self.setup.client.decision_list)]
        if not actions:
            return
        self._install(actions, count_modified=False)
        if struct.tag != "Bundle" or all(self.states[a] for a in actions):
            return
        log.info("Bundle %s failed a prerequisite action: its entries are not installed",
                 struct.get("name"))
        for entry in struct:
            if entry in self.whitelist:
                del self.whitelist[entry]
                self.reasons[entry].append("not installed: a pre action of its bundle failed")

    def _ask_entry(self, entry: Element) -> bool:
        why = "; ".join(self.reasons.get(entry, [])) or "wrong"
        diff = self.diffs.get(entry, "")
        if diff:
            self.out.write(printable(diff) + "\n")
        return self._ask(f"Install {describe(entry)} ({why})?")

    def _install(self, entries: Sequence[Element], count_modified: bool = True) -> None:
        """Install entries, one batch per driver; states follow the drivers' answers."""
        batches: dict[int, tuple[Driver, list[Element]]] = {}
        for entry in entries:
            driver = self.driver_of.get(entry)
            if driver is not None:
                batches.setdefault(id(driver), (driver, []))[1].append(entry)
        for driver, batch in batches.values():
            try:
                answers = driver.install(batch)
            except Exception as err:
                log.error("%s failed to install %d entries: %s", driver.name, len(batch), err,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                answers = {}
            for entry in batch:
                ok = bool(answers.get(entry_key(entry), False))
                self.states[entry] = ok
                if ok and count_modified:
                    self.modified[entry] = None
                if not ok:
                    log.error("Failed to install %s", describe(entry))

    def _reinstall_clobbered(self, bundles: Sequence[Element]) -> None:
        """Entries of modified bundles that an install broke again (a package overwriting
        a file) are installed once more."""
        clobbered = []
        for struct in bundles:
            for entry in struct:
                # an entry held back (decision list, a failed prerequisite) is still wrong
                if self.driver_of.get(entry) is None or "failure" in entry.attrib \
                        or not self.states.get(entry):
                    continue
                if not self._verify(entry):
                    clobbered.append(entry)
        if clobbered:
            log.info("Installing again entries another install changed: %s",
                     ", ".join(describe(e) for e in clobbered))
            if not self.flags.interactive:
                self._install(clobbered)

    def _tell_drivers(self, struct: Element, modified: bool,
                      changed: dict[tuple[str, str], bool]) -> None:
        entries = {entry_key(e): e for e in struct if isinstance(e.tag, str)}
        for driver in self.drivers:
            try:
                if modified:
                    answers = driver.bundle_updated(struct, changed)
                else:
                    answers = driver.bundle_not_updated(struct)
            except Exception as err:
                log.error("%s failed on bundle %s: %s", driver.name, struct.get("name"), err,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                continue
            for key, ok in (answers or {}).items():
                if key in entries:
                    self.states[entries[key]] = bool(ok)

    def _remove_extra(self) -> None:
        if not self.flags.remove:
            return
        tags = REMOVAL[self.flags.remove]
        removal = [e for e in self.extra if tags is None or e.tag in tags]
        if self.flags.interactive:
            removal = [e for e in removal if self._ask(f"Remove {describe(e)}?")]
        batches: dict[int, tuple[Driver, list[Element]]] = {}
        for entry in removal:
            driver = self.extra_driver[entry]
            batches.setdefault(id(driver), (driver, []))[1].append(entry)
        for driver, batch in batches.values():
            try:
                answers = driver.remove(batch)
            except Exception as err:
                log.error("%s failed to remove %d entries: %s", driver.name, len(batch), err)
                continue
            for entry in batch:
                if answers.get(entry_key(entry)):
                    self.extra.remove(entry)
                    log.info("Removed %s", describe(entry))
                else:
                    log.error("Failed to remove %s", describe(entry))
        self.times["remove"] = time.time()

    # --- what the admin sees ---------------------------------------------------------------
    def _display(self, phase: str) -> None:
        good = sum(self.states.values())
        bad = len(self.states) - good
        log.info("Phase: %s", phase)
        log.info("Correct entries:        %d", good)
        log.info("Incorrect entries:      %d", bad)
        if phase == "final":
            for entry in sorted((e for e, ok in self.states.items() if not ok), key=describe):
                log.info("  %s", describe(entry))
        log.info("Total managed entries:  %d", len(self.states))
        log.info("Unmanaged entries:      %d", len(self.extra))
        if phase == "final" and self.flags.show_extra:
            for entry in sorted(self.extra, key=describe):
                log.info("  %s", describe(entry))
        if not bad and not self.extra:
            log.info("All entries correct.")

    def _dry_run_report(self) -> None:
        """What would change and why, with a diff for each file (none for sensitive ones)."""
        out = self.out
        wrong = [e for _, e in self._entries() if not self.states[e]]
        for entry in wrong:
            why = "; ".join(self.reasons.get(entry, [])) or "wrong"
            verb = "Would install" if entry in self.whitelist else "Would not install"
            out.write(f"{verb} {describe(entry)}: {why}\n")
            diff = self.diffs.get(entry)
            if diff:
                out.write(printable(diff.rstrip("\n")) + "\n")
        for struct in self.structures():
            if not self._installable(struct):
                continue
            modified = struct.tag == "Bundle" and any(e in self.whitelist for e in struct)
            for action in struct:
                if action.tag == "Action" and (modified or action.get("when") == "always"):
                    out.write(f"Would run {describe(action)}: "
                              f"{escaped(action.get('command', ''), 300)}\n")
        if self.flags.remove:
            tags = REMOVAL[self.flags.remove]
            for entry in self.extra:
                if tags is None or entry.tag in tags:
                    out.write(f"Would remove {describe(entry)}: not in the configuration\n")
        out.write(f"Dry run: {len(wrong)} of {len(self.states)} entries are not as the "
                  "configuration says; nothing was changed.\n")


def _important(entry: Element) -> bool:
    return entry.get("important", "false").lower() == "true"


def check_root(root: str) -> str:
    """The --root directory as an absolute path; an AgentError if it is no directory."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise AgentError(f"--root {root}: no such directory")
    return root


"""PuppetENC: groups and template data from Puppet external node classifiers.

Every executable file in ``PuppetENC/`` is an ENC: it is run with the
client's host name as its only argument and prints a YAML document in the
Puppet 2.6.5+ ENC format. ``classes`` (or ``groups``) become the client's
groups; ``parameters``, together with the parameters of parameterised
classes, become ``metadata.PuppetENC`` (a shallow merge over all ENCs, in
the order of their file names, later ones winning). ``environment`` is not
supported and is skipped with a warning.

The results for a client are kept until a client run ends (upstream's
rule): the ENCs run once per run, not once per metadata build. An ENC runs
without a shell, with a time limit and a limit on what it may print; one
that fails, hangs or prints something that is not an ENC document gives
nothing, is logged with its name, and the other ENCs still count.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from bcfg2.command import CommandError, run_bounded
from bcfg2.identity import valid_client_name
from bcfg2.options import Option
from bcfg2.plugin import Caching, ClientRunHooks, Connector, Plugin, PluginInitError, executables
from bcfg2.untrusted import GROUP_NAME, MAX_GROUP_NAME, escaped

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

#: hidden, backup and editor files (the whole name must match): never run
#: bytes read from a pipe at a time
CHUNK = 64 * 1024


class ENCError(Exception):
    """One ENC could not be run or its output was refused (the message says why)."""


@dataclass
class ENCResult:
    """What the ENCs said about one client: its groups and merged parameters."""

    groups: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_enc_output(output: bytes) -> tuple[list[str], dict[str, Any], bool]:
    """(groups, parameters, has environment) of one ENC's YAML output; ENCError if it is none.

    ``classes`` (or ``groups``) is a list of names or a mapping of names to
    their parameters (or nothing); class parameters are merged into
    ``parameters``.
    """
    try:
        doc = yaml.safe_load(output)
    except yaml.YAMLError as err:
        raise ENCError(f"did not print YAML: {escaped(str(err), 200)}") from None
    except RecursionError:
        raise ENCError("printed YAML nested too deeply") from None
    if doc is None:
        return [], {}, False
    if not isinstance(doc, dict):
        raise ENCError(f"printed a YAML {type(doc).__name__}, not a mapping")
    classes = doc.get("classes", doc.get("groups"))
    parameters: dict[str, Any] = {}
    groups: list[str] = []
    if isinstance(classes, dict):
        for name, params in classes.items():
            groups.append(name)
            if params is None:
                continue
            if not isinstance(params, dict):
                raise ENCError(f"the parameters of class {escaped(str(name), 80)} are "
                               f"not a mapping")
            parameters.update(params)
    elif isinstance(classes, list):
        groups.extend(classes)
    elif classes is not None:
        raise ENCError("'classes' is neither a list nor a mapping")
    for name in groups:
        if not isinstance(name, str) or len(name) > MAX_GROUP_NAME \
                or GROUP_NAME.fullmatch(name) is None:
            raise ENCError(f"'{escaped(str(name), 80)}' is not a group name")
    params = doc.get("parameters")
    if isinstance(params, dict):
        parameters.update(params)
    elif params is not None:
        raise ENCError("'parameters' is not a mapping")
    return groups, parameters, "environment" in doc


class PuppetENC(Plugin, Connector, ClientRunHooks, Caching):
    """Runs the ENCs in PuppetENC/ for a client; their classes are groups, parameters data."""

    __rmi__ = [*Plugin.__rmi__, "expire_cache"]

    options = (
        Option("puppetenc", "timeout", 30.0,
               "Seconds one ENC may run for a client before it is killed (it then gives "
               "nothing).", type="float"),
        Option("puppetenc", "max_output", 1024 * 1024,
               "Most bytes one ENC may write to its output (or its error output) before "
               "it is killed (it then gives nothing).", type="int"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        self.timeout = float(core.setup.puppetenc.timeout)
        self.max_output = int(core.setup.puppetenc.max_output)
        if self.timeout <= 0 or self.max_output <= 0:
            raise PluginInitError("[puppetenc] timeout and max_output must be positive")
        self._lock = threading.Lock()
        self._results: dict[str, ENCResult] = {}
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: PuppetENC runs no ENCs", self.data)
        if core.metadata_cache.mode == "aggressive":
            self.logger.warning("PuppetENC cannot tell when an ENC's answer changes: with "
                                "[caching] client_metadata = aggressive a client's metadata "
                                "is expired after each of its runs; cautious or initial "
                                "suit it better")

    def scripts(self) -> list[str]:
        """The executable files in PuppetENC/, sorted by name (the order their data merges in)."""
        return executables(self.data, self.logger)

    def run_encs(self, hostname: str) -> ENCResult:
        """Run every ENC for a client; one that fails is logged and gives nothing."""
        result = ENCResult()
        if not valid_client_name(hostname):
            self.logger.error("PuppetENC: no ENC run for '%s': not a host name",
                              escaped(hostname, 80))
            return result
        for script in self.scripts():
            name = os.path.basename(script)
            try:
                try:
                    done = run_bounded([script, hostname], self.data, self.timeout,
                                       self.max_output)
                except CommandError as failed:
                    raise ENCError(str(failed)) from None
                status, out, err = done.status, done.stdout, done.stderr
                if status != 0:
                    raise ENCError(f"exited with status {status}: "
                                   f"{escaped(err.decode(errors='replace').strip(), 300)}")
                groups, params, environment = parse_enc_output(out)
            except ENCError as error:
                self.logger.error("PuppetENC: ENC %s for %s %s; its groups and data are "
                                  "left out", name, hostname, error)
                continue
            if err.strip():
                self.logger.warning("PuppetENC: ENC %s for %s wrote to stderr: %s", name,
                                    hostname, escaped(err.decode(errors="replace").strip(), 300))
            if environment:
                self.logger.warning("PuppetENC: ENC %s for %s gives an environment, which "
                                    "Bcfg2 does not support; skipped", name, hostname)
            self.debug_log(f"PuppetENC: ENC {name} for {hostname}: groups {groups}")
            result.groups.extend(g for g in groups if g not in result.groups)
            result.parameters.update(params)
        return result

    def result_for(self, hostname: str) -> ENCResult:
        """The ENCs' answer for a client, run once until its cache entry is expired."""
        with self._lock:
            kept = self._results.get(hostname)
        if kept is not None:
            return kept
        result = self.run_encs(hostname)
        with self._lock:
            return self._results.setdefault(hostname, result)

    def get_additional_groups(self, metadata: ClientMetadata) -> list[str]:
        """The classes (groups) every ENC gives the client."""
        return list(self.result_for(metadata.hostname).groups)

    def get_additional_data(self, metadata: ClientMetadata) -> dict[str, Any]:
        """The merged parameters, a copy per build (a template cannot change another's)."""
        return copy.deepcopy(self.result_for(metadata.hostname).parameters)

    def expire_cache(self, key: str | None = None) -> None:
        """Forget the ENCs' answers for one client (or all): they run again when next asked."""
        with self._lock:
            if key is None:
                self._results.clear()
            else:
                self._results.pop(key, None)

    def end_client_run(self, metadata: ClientMetadata) -> None:
        """Forget every answer, so the next run of each client runs its ENCs again.

        All of them, not only this client's: templates may have asked for
        other clients' metadata during the run. With aggressive metadata
        caching nothing else would ever rebuild this client's metadata, so
        it is expired here.
        """
        self.expire_cache()
        if self.core.metadata_cache.mode == "aggressive":
            self.expire_metadata(metadata.hostname)

    def end_statistics(self, metadata: ClientMetadata) -> None:
        """The statistics close a run too (as upstream)."""
        self.end_client_run(metadata)


__all__ = ["ENCError", "ENCResult", "PuppetENC", "parse_enc_output"]

"""Probes: the scripts the server sends, run here, their output sent back.

Each probe runs with the interpreter the server names (the script's ``#!``
line, ``/bin/sh`` without one) from a private temporary file, with a time
limit. Its standard output goes back verbatim, trailing newline included;
``group:NAME`` lines in it are the server's business (they add the client
to groups), so they are sent as they are and only logged here.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import tempfile

import lxml.etree

from bcfg2.client.errors import ProbeError, ProtocolError
from bcfg2.command import CommandError, run_bounded
from bcfg2.errors import UntrustedInputError
from bcfg2.untrusted import escaped
from bcfg2.xml import parse_untrusted

log = logging.getLogger("bcfg2.client.probes")

GROUP_LINE = re.compile(r"\s*group:\s*(\S+)\s*")
SHEBANG = re.compile(r"#!\s*(\S.*?)\s*")
#: characters XML cannot carry (a probe printing them gets U+FFFD in their place)
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def interpreter_of(probe: lxml.etree._Element) -> list[str]:
    """The command line of a probe's interpreter: its ``interpreter`` attribute, else its
    ``#!`` line, else ``/bin/sh``."""
    given = probe.get("interpreter")
    if not given:
        first = (probe.text or "").split("\n", 1)[0]
        match = SHEBANG.fullmatch(first)
        given = match.group(1) if match else "/bin/sh"
    return shlex.split(given)


def parse_probes(document: str) -> list[lxml.etree._Element]:
    """The ``<probe>`` elements of a GetProbes answer."""
    try:
        root = parse_untrusted(document, "probe list")
    except UntrustedInputError as err:
        raise ProtocolError(f"the server's probe list cannot be read: {err}") from None
    if root.tag != "probes":
        raise ProtocolError(f"the server's probe list is a <{escaped(str(root.tag), 40)}>, "
                            "not <probes>")
    return [probe for probe in root if probe.tag == "probe" and probe.get("name")]


#: the most output read from one probe: the server drops more than [probes] max_probe_size
#: (256 KiB by default) anyway
MAX_OUTPUT = 4 * 1024 * 1024
#: "no limit" for a probe's running time (0 in bcfg2.conf)
FOREVER = 10.0 ** 9

def run_probe(probe: lxml.etree._Element, timeout: float, exit_on_failure: bool,
              encoding: str = "utf-8") -> lxml.etree._Element:
    """Run one probe; its ``<probe-data>`` (empty text if it failed and the run goes on).

    A probe that cannot run, exits non-zero or outlasts ``timeout`` seconds
    (0: no limit) raises ProbeError when ``exit_on_failure``; otherwise it is
    logged and its result is empty.
    """
    name = probe.get("name", "")
    data = lxml.etree.Element("probe-data", name=name, source=probe.get("source", "Probes"))
    fd, script = tempfile.mkstemp(prefix="bcfg2-probe-")
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            fh.write(probe.text or "")
        os.chmod(script, 0o700)
        argv = [*interpreter_of(probe), script]
        log.info("Running probe %s", name)
        try:  # in a session of its own: what it starts is killed with it
            done = run_bounded(argv, tempfile.gettempdir(), timeout or FOREVER, MAX_OUTPUT,
                               stderr_limit=4096)
        except CommandError as err:
            return _failed(data, f"probe {name} {err} (run by {argv[0]})", exit_on_failure)
    finally:
        os.unlink(script)
    if done.stderr:
        log.warning("Probe %s has error output: %s", name,
                    escaped(done.stderr.decode(encoding, "replace"), 500))
    if done.status != 0:
        return _failed(data, f"probe {name} exited with status {done.status}",
                       exit_on_failure)
    text = NOT_XML.sub("\ufffd", done.stdout.decode(encoding, "replace"))
    groups = [m.group(1) for line in text.splitlines() if (m := GROUP_LINE.fullmatch(line))]
    if groups:
        log.info("Probe %s asks for groups %s", name, ", ".join(groups))
    log.debug("Probe %s has result: %s", name, escaped(text, 500))
    data.text = text
    return data


def _failed(data: lxml.etree._Element, why: str, exit_on_failure: bool) -> lxml.etree._Element:
    if exit_on_failure:
        raise ProbeError(f"{why} ([client] exit_on_probe_failure is on)")
    log.error("%s", why)
    data.text = ""
    return data


def probe_data(results: list[lxml.etree._Element]) -> str:
    """The RecvProbeData document of the probes' results (no XML declaration)."""
    root = lxml.etree.Element("ProbeData")
    root.extend(results)
    return lxml.etree.tostring(root, encoding="unicode")

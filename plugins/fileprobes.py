"""FileProbes: fetch files from clients into Cfg.

``FileProbes/config.xml`` lists ``<FileProbe name="/etc/foo.conf"/>`` entries,
under ``<Group>``/``<Client>`` conditionals, with ``update="true"`` to keep
the repository's copy current with the client's and ``encoding="base64"``
for files that are not text. A client gets a probe for every listed file
that applies to it, except a file Cfg (or another generator) already serves
it when ``update`` is off: nothing could be done with the answer.

The probe reports the file's content (base64), owner, group and mode. The
first answer for a file is written as ``Cfg/<path>/<file>.H_<host>`` with an
``info.xml`` holding the owner, group and mode it reported (and the encoding
from config.xml). info.xml is never rewritten, so later edits to it stand.
After that, an answer that differs from what the client is served rewrites
the host's file only with ``update="true"``; otherwise the repository wins.

What a client sends is checked before it touches the repository: only
files config.xml gives that client, the host name and path matched whole
(no ``..``, no separator in the host name), owner, group and mode by
pattern, content valid base64 of at most ``[fileprobes] max_file_size``.
Files are written atomically, and a file that must not be replaced is
created with a link that fails if it exists.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shlex
import threading
from typing import Any

import lxml.etree

from bcfg2.errors import UntrustedInputError
from bcfg2.identity import valid_client_name
from bcfg2.metadata import ClientMetadata
from bcfg2.options import Option
from bcfg2.plugin import (
    Plugin,
    PluginExecutionError,
    PluginInitError,
    Probing,
    RepositoryError,
    StructFile,
    as_bool,
    default_path_metadata,
)
from bcfg2.untrusted import escaped
from bcfg2.xml import atomic_write, parse_untrusted, tostring

__all__ = ["FileProbes", "probe_script", "valid_path"]

MAX_PATH = 1024
#: an absolute path of names without whitespace or control characters (matched whole)
PATH = re.compile(r"(?:/[^/\x00-\x20\x7f]{1,255}){1,64}")
#: a user or group name as the probe reports it (a name, or a number it could not map)
ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
MODE = re.compile(r"[0-7]{3,4}")
ANSWER_TAG = "ProbedFileData"

#: run by the agent's /bin/sh; finds a Python and reads the file named by its argument
PROBE_TEMPLATE = """\
#!/bin/sh
# FileProbes: report a file's content, owner, group and mode to the Bcfg2 server.
for py in python3 python python2; do
    if command -v "$py" >/dev/null 2>&1; then
        exec "$py" -c '
import base64, grp, os, pwd, stat, sys
from xml.sax.saxutils import quoteattr
path = sys.argv[1]
try:
    st = os.stat(path)
except OSError:
    sys.exit(0)
if not stat.S_ISREG(st.st_mode):
    sys.exit(0)
try:
    owner = pwd.getpwuid(st.st_uid)[0]
except KeyError:
    owner = str(st.st_uid)
try:
    group = grp.getgrgid(st.st_gid)[0]
except KeyError:
    group = str(st.st_gid)
try:
    fh = open(path, "rb")
    try:
        data = fh.read()
    finally:
        fh.close()
except (IOError, OSError):
    sys.stderr.write("FileProbes: cannot read %s\\n" % path)
    sys.exit(0)
sys.stdout.write("<ProbedFileData name=%s owner=%s group=%s mode=%s>%s</ProbedFileData>\\n" % (
    quoteattr(path), quoteattr(owner), quoteattr(group),
    quoteattr("%04o" % stat.S_IMODE(st.st_mode)), base64.b64encode(data).decode("ascii")))
' {path}
    fi
done
echo "FileProbes: no Python interpreter found" >&2
"""


def valid_path(path: str) -> bool:
    """An absolute, normalised path (no ``.`` or ``..`` parts) of at most MAX_PATH characters."""
    if len(path) > MAX_PATH or PATH.fullmatch(path) is None:
        return False
    return not any(part in (".", "..") for part in path.split("/"))


def probe_script(path: str) -> str:
    """The shell script that reports ``path`` (a valid path, passed quoted as an argument)."""
    return PROBE_TEMPLATE.replace("{path}", shlex.quote(path))


def write_file(path: str, data: bytes, replace: bool, mode: int = 0o644) -> bool:
    """Write ``path`` atomically; unless ``replace``, only if it does not exist yet.

    Returns whether the file was written (``bcfg2.xml.atomic_write``).
    """
    return atomic_write(path, data, mode, replace=replace)


class ProbeConfig(StructFile):
    """FileProbes/config.xml; every FileProbe is checked when the file is read."""

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "FileProbes":
            raise RepositoryError(f"{self.name}:{root.sourceline}: the root element must be "
                                  f"<FileProbes>, not <{root.tag}>")
        for probe in root.iter("FileProbe"):
            where = f"{self.name}:{probe.sourceline}"
            name = probe.get("name", "")
            if not valid_path(name):
                raise RepositoryError(f"{where}: {name!r} is no absolute, normalised path "
                                      f"without spaces")
            if probe.get("encoding") not in (None, "base64", "ascii"):
                raise RepositoryError(f"{where}: encoding must be base64 or ascii (the "
                                      f"default)")

    def removed(self) -> None:
        self.xdata = None

    def probes(self, metadata: ClientMetadata) -> dict[str, lxml.etree._Element]:
        """Path -> its FileProbe element, for the files this client is to be probed for."""
        return {el.get("name"): el for el in self.Match(metadata) if el.tag == "FileProbe"}


class FileProbes(Plugin, Probing):
    """Probes clients for the files in config.xml and writes the answers into Cfg."""

    options = (
        Option("fileprobes", "max_file_size", 1024 * 1024,
               "Largest file, in bytes, FileProbes accepts from a client; a larger one is "
               "refused and nothing is written.", type="int"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        Probing.__init__(self)
        self.max_file_size = int(core.setup.fileprobes.max_file_size)
        if self.max_file_size < 0:
            raise PluginInitError("[fileprobes] max_file_size must not be negative")
        self.cfg = os.path.join(core.repository, "Cfg")
        self.default_info = default_path_metadata(core.setup)
        self.write_lock = threading.Lock()
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: no files are probed", self.data)
        self.config = ProbeConfig(os.path.join(self.data, "config.xml"), core.fam,
                                  should_monitor=True)

    # -- what the client is served now -------------------------------------------

    def served(self, path: str, metadata: ClientMetadata) -> bytes | None:
        """What the client gets for ``path`` now, or None when no generator has a version for it.

        A generator that fails for another reason than having no version
        (a template error, two generators) counts as serving the file: it is
        the admin's to fix, not FileProbes' to paper over.
        """
        entry = lxml.etree.Element("Path", name=path, type="file")
        handlers = self.core.generators_for(entry, metadata)
        if not handlers:
            return None
        if len(handlers) > 1:
            return b""
        try:
            handlers[0][1](entry, metadata)
        except PluginExecutionError:
            return None
        except Exception:
            self.logger.exception("%s for %s: its generator failed", path, metadata.hostname)
            return b""
        if entry.get("empty") == "true":
            return b""
        if entry.get("encoding") == "base64":
            return base64.b64decode(entry.text or "")
        return (entry.text or "").encode("utf-8")

    # -- Probing -----------------------------------------------------------------

    def GetProbes(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """A probe for each configured file that applies to the client and is still wanted."""
        out = []
        for path, probe in sorted(self.config.probes(metadata).items()):
            if not as_bool(probe.get("update", "false")) and \
                    self.served(path, metadata) is not None:
                self.debug_log(f"{path} is served to {metadata.hostname}; not probed")
                continue
            element = lxml.etree.Element("probe", name=path, source=self.name,
                                         interpreter="/bin/sh")
            element.text = probe_script(path)
            out.append(element)
        return out

    def ReceiveData(self, metadata: ClientMetadata,  # noqa: N802
                    datalist: list[lxml.etree._Element]) -> None:
        """Write each acceptable answer into Cfg; refuse (and log) each bad one alone."""
        wanted = self.config.probes(metadata)
        for item in datalist:
            name = item.get("name", "")
            try:
                self.receive(metadata, wanted, name, item.text or "")
            except UntrustedInputError as err:
                self.logger.warning("file probe %s from %s refused: %s", escaped(name, 200),
                                    escaped(metadata.hostname, 200), err)

    def receive(self, metadata: ClientMetadata, wanted: dict[str, lxml.etree._Element],
                name: str, text: str) -> None:
        """Check one answer and store it; UntrustedInputError says why one is refused."""
        hostname = metadata.hostname
        if not valid_client_name(hostname):
            raise UntrustedInputError("the client's name cannot be part of a file name")
        if not valid_path(name):
            raise UntrustedInputError("not an absolute, normalised path")
        probe = wanted.get(name)
        if probe is None:
            raise UntrustedInputError("config.xml asks this client for no such file")
        # base64 of the largest file, its attributes and the markup around them
        if len(text) > 4 * (self.max_file_size // 3 + 1) + MAX_PATH + 1024:
            raise UntrustedInputError(f"larger than [fileprobes] max_file_size "
                                      f"({self.max_file_size} bytes)")
        if not text.strip():
            self.logger.info("%s has no file %s (or cannot read it)", hostname, name)
            return
        answer = parse_untrusted(text, "file probe answer")
        if answer.tag != ANSWER_TAG or answer.get("name") != name or len(answer):
            raise UntrustedInputError(f"not a <{ANSWER_TAG}> answer for this file")
        info = {key: answer.get(key, "") for key in ("owner", "group", "mode")}
        for key, pattern in (("owner", ACCOUNT), ("group", ACCOUNT), ("mode", MODE)):
            if pattern.fullmatch(info[key]) is None:
                raise UntrustedInputError(f"{key} '{escaped(info[key], 40)}' is not valid")
        try:
            content = base64.b64decode("".join((answer.text or "").split()), validate=True)
        except (binascii.Error, ValueError):
            raise UntrustedInputError("the content is not valid base64") from None
        if len(content) > self.max_file_size:
            raise UntrustedInputError(f"{len(content)} bytes, more than "
                                      f"[fileprobes] max_file_size ({self.max_file_size})")
        with self.write_lock:
            self.store(metadata, probe, content, info)

    def store(self, metadata: ClientMetadata, probe: lxml.etree._Element, content: bytes,
              info: dict[str, str]) -> None:
        """Write a checked answer as the host's version in Cfg (and info.xml, once)."""
        path = probe.get("name")
        directory = os.path.join(self.cfg, *path.strip("/").split("/"))
        cfg = os.path.realpath(self.cfg)  # the repository itself may be reached by a symlink
        if os.path.commonpath([cfg, os.path.realpath(directory)]) != cfg:
            raise UntrustedInputError("the Cfg directory of this path leads out of Cfg")
        target = os.path.join(directory, f"{os.path.basename(path)}.H_{metadata.hostname}")
        current = self.served(path, metadata)
        update = as_bool(probe.get("update", "false"))
        try:
            if current is None:
                # info.xml first: once the content can be served, so can its owner and mode
                self.write_info(directory, probe, info)
                if write_file(target, content, replace=update):
                    self.logger.info("wrote %s, probed from %s", target, metadata.hostname)
            elif current == content:
                self.debug_log(f"{path} of {metadata.hostname} is as served")
            elif update:
                write_file(target, content, replace=True)
                self.logger.info("updated %s, probed from %s", target, metadata.hostname)
            else:
                self.logger.info("%s of %s differs from the repository's; kept the "
                                 "repository's (update is off)", path, metadata.hostname)
        except OSError as err:
            self.logger.error("cannot write %s: %s", target, err.strerror)

    def write_info(self, directory: str, probe: lxml.etree._Element,
                   info: dict[str, str]) -> None:
        """Create the directory's info.xml from what the client reported, unless it has one."""
        root = lxml.etree.Element("FileInfo")
        attrs = {key: info.get(key) or self.default_info[key] for key in ("owner", "group", "mode")}
        encoding = probe.get("encoding")
        if encoding is not None:
            attrs["encoding"] = encoding
        lxml.etree.SubElement(root, "Info", attrib=attrs)
        infoxml = os.path.join(directory, "info.xml")
        if write_file(infoxml, tostring(root, pretty=True).encode("utf-8"), replace=False):
            self.logger.info("wrote %s", infoxml)

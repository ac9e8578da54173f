"""Ohai: the JSON that Chef's ohai tool prints about a client, for templates.

Every client is sent one probe, which runs ``ohai`` (or prints ``{}`` where
it is not installed). What comes back must be one JSON object of at most
``[ohai] max_size`` bytes; it is kept per client as ``<client>.json`` in
the ``Ohai/`` directory of the repository (where upstream keeps it) or,
with ``[ohai] storage = state``, in ``state_dir/Ohai/``. Templates see it
as ``metadata.Ohai`` (a dict; ``{}`` for a client that sent nothing yet).

Each file is replaced atomically, and read again whenever it was replaced,
so every process serving clients (the multiprocessing children) sees the
latest upload. An upload that is not a JSON object, or is too large, is
refused with a warning and the client keeps its previous data.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.identity import valid_client_name
from bcfg2.options import Option
from bcfg2.plugin import Caching, Connector, Plugin, PluginInitError, Probing
from bcfg2.untrusted import escaped
from bcfg2.xml import atomic_write

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

#: the probe every client runs: ohai's JSON, or an empty object without ohai
PROBE_SCRIPT = """\
#!/bin/sh
PATH="$PATH:/sbin:/usr/sbin:/usr/local/bin:/opt/chef/bin"
if command -v ohai >/dev/null 2>&1; then
    exec ohai
fi
echo '{}'
"""


class OhaiError(Exception):
    """An Ohai upload (or stored file) that cannot be used; the message says why."""


def parse_ohai(text: str | bytes, limit: int) -> dict[str, Any]:
    """The JSON object in ``text`` (at most ``limit`` bytes), or OhaiError."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > limit:
        raise OhaiError(f"{size} bytes, more than [ohai] max_size ({limit})")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise OhaiError(f"not JSON: {escaped(str(err), 120)}") from None
    except RecursionError:
        raise OhaiError("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise OhaiError(f"a JSON {type(data).__name__}, not an object")
    return data


class Ohai(Plugin, Probing, Connector, Caching):
    """Sends the ohai probe and gives templates its output as ``metadata.Ohai``."""

    #: what a client says about itself: never grounds for an access check
    client_supplied = True

    options = (
        Option("ohai", "max_size", 8 * 1024 * 1024,
               "Largest ohai output accepted from one client, in bytes; a larger one is "
               "refused and the client keeps its previous data.", type="int"),
        Option("ohai", "storage", "repository",
               "Where each client's ohai output is kept: repository (Ohai/<client>.json, "
               "as upstream) or state (state_dir/Ohai/<client>.json).",
               type="choice", choices=("repository", "state")),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        self.max_size = int(core.setup.ohai.max_size)
        if self.max_size <= 0:
            raise PluginInitError("[ohai] max_size must be positive")
        if core.setup.ohai.storage == "state":
            self.directory = os.path.join(core.setup.server.state_dir, "Ohai")
        else:
            self.directory = self.data
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as err:
            raise PluginInitError(f"cannot create {self.directory}: {err}") from err
        self._lock = threading.Lock()
        #: client -> ((inode, mtime, size) of its file, the file's text)
        self._read: dict[str, tuple[tuple[int, int, int], str]] = {}
        #: client -> (file stamp, error) last logged, so a bad file is logged once
        self._reported: dict[str, tuple[tuple[int, int, int], str]] = {}

    def path_for(self, client: str) -> str:
        """The file a client's data is kept in (the name was checked: it is a client name)."""
        if not valid_client_name(client):
            raise OhaiError(f"'{escaped(client, 80)}' is not a client name")
        return os.path.join(self.directory, f"{client}.json")

    # -- Probing ----------------------------------------------------------------

    def GetProbes(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """The one probe, the same for every client."""
        probe = lxml.etree.Element("probe", name="Ohai", source="Ohai", interpreter="/bin/sh")
        probe.text = PROBE_SCRIPT
        return [probe]

    def ReceiveData(self, metadata: ClientMetadata,  # noqa: N802
                    datalist: list[lxml.etree._Element]) -> None:
        """Keep the client's ohai output if it is a JSON object within the size limit.

        A refused upload is only logged: raising would also lose the data of
        the other probes in the same upload.
        """
        client = metadata.hostname
        items = [item for item in datalist if item.get("name") == "Ohai"]
        if not items:
            return
        try:
            data = parse_ohai(items[0].text or "", self.max_size)
            path = self.path_for(client)
        except OhaiError as err:
            self.logger.warning("Ohai data from %s refused (%s); its previous data stays",
                                client, err)
            return
        text = json.dumps(data, sort_keys=True, indent=1)
        with self._lock:
            if self._text(client, path) == text:
                return
            atomic_write(path, text, mode=0o600)
            self._read.pop(client, None)
        self.expire_metadata(client)

    # -- Connector --------------------------------------------------------------

    def _text(self, client: str, path: str) -> str | None:
        """The stored text of a client's file, read again only when it was replaced (lock held)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._read.pop(client, None)
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        kept = self._read.get(client)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        if st.st_size > self.max_size:
            raise OhaiError(f"{path}: {st.st_size} bytes, more than [ohai] max_size")
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(self.max_size + 1)
        self._read[client] = (stamp, text)
        return text

    def get_additional_data(self, metadata: ClientMetadata) -> dict[str, Any]:
        """The client's ohai output (parsed anew for each build, so templates share nothing).

        A stored file that cannot be used gives ``{}``; it is logged once per
        version of the file.
        """
        client = metadata.hostname
        try:
            path = self.path_for(client)
            with self._lock:
                text = self._text(client, path)
            return {} if text is None else parse_ohai(text, self.max_size)
        except (OhaiError, OSError) as err:
            message = str(err)
            with self._lock:
                stamp = self._read.get(client, ((0, 0, 0), ""))[0]
                first = self._reported.get(client) != (stamp, message)
                self._reported[client] = (stamp, message)
            if first:
                self.logger.error("Ohai data of %s cannot be used: %s", client, message)
            return {}

    def cache_key(self, metadata: ClientMetadata) -> str:
        """The client's stored file as it is now (an upload or an edit by hand replaces
        it): what ``get_additional_data`` reads again when it changed."""
        try:
            st = os.stat(self.path_for(metadata.hostname))
        except (OhaiError, OSError):
            return "none"
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def expire_cache(self, key: str | None = None) -> None:
        """Read the stored file(s) again on the next build."""
        with self._lock:
            if key is None:
                self._read.clear()
            else:
                self._read.pop(key, None)


__all__ = ["PROBE_SCRIPT", "Ohai", "OhaiError", "parse_ohai"]

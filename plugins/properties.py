"""Properties: data from XML, JSON and YAML files in ``Properties/`` for templates.

Templates see ``metadata.Properties[<file name>]``. An XML file gives an
object with ``xdata`` (the root element), ``entries`` (its children),
``xpath()``, ``Match(metadata)`` and ``XMLMatch(metadata)``, which resolve
the Group/Client conditionals for a client. With automatch (``[properties]
automatch`` or ``automatch="true"`` on the root element, which also turns it
off per file with ``"false"``) the value is the result of ``XMLMatch`` for
the client instead. JSON files give ``.json``; YAML files (``*.yaml``,
``*.yml``) give ``.yaml``. Every file also
gives ``.data``, its raw text.

Each client gets its own copies: the parsed data is copied the first time a
template touches it, so one client's template cannot change what another
one sees. Files are reread when they change; a file that does not parse is
logged with its path and line and the last good version stays in service.

The text of XML elements with ``encrypted="NAME"`` is decrypted when the
file is read, with the passphrase NAME of ``[encryption]``
(``bcfg2.encryption``; ``.data`` keeps the encrypted text). If an element
cannot be decrypted, a strict file (the default, ``[encryption] decrypt``;
``lax_decryption`` on the root element overrides it) is not used, as if it
did not parse; a lax one is used with that element's text still encrypted,
and a warning names the file and the element's line.

Not implemented: writing back to property files (``write()``, ``writes_enabled``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from functools import cached_property
from typing import TYPE_CHECKING, Any

import lxml.etree
import yaml

from bcfg2.encryption import Encryption, decrypt_elements
from bcfg2.errors import RepositoryError
from bcfg2.options import Option
from bcfg2.plugin import (
    Connector,
    DirectoryBacked,
    FileBacked,
    Plugin,
    PluginExecutionError,
    PropertyFiles,
    StructFile,
    as_bool,
    depends_on,
    match_element,
)

if TYPE_CHECKING:
    from bcfg2.filemonitor import Event, FileMonitor
    from bcfg2.metadata import ClientMetadata

YAML_SUFFIXES = (".yaml", ".yml")
logger = logging.getLogger(__name__)
#: failed elements named in one message of a file that cannot be decrypted
MAX_REPORTED = 5


class XMLPropertyFile(StructFile):
    """An XML property file; ``snapshot`` is the version in service (or None).

    The snapshot is (root, automatch attribute or None, raw text), replaced
    as a whole on each successful reload.
    """

    snapshot: tuple[lxml.etree._Element, bool | None, str] | None = None

    def __init__(self, name: str, fam: FileMonitor | None = None,
                 encryption: Encryption | None = None) -> None:
        super().__init__(name, fam)
        self.encryption = encryption if encryption is not None else Encryption()

    #: the last lax-decryption warning, so that one is logged once
    decrypt_warning: str | None = None

    def load_xml(self, root: lxml.etree._Element) -> None:
        failures, lax = decrypt_elements(root, self.encryption, self.name)
        message = None
        if failures:
            more = len(failures) - MAX_REPORTED
            message = "; ".join(failures[:MAX_REPORTED]) + (f"; and {more} more" if more > 0 else "")
            if not lax:
                raise RepositoryError(f"{message} (strict decryption)")
            if message != self.decrypt_warning:
                logger.warning("%s (lax decryption: the text stays encrypted)", message)
        self.decrypt_warning = message
        value = root.get("automatch")
        encoding = root.getroottree().docinfo.encoding or "utf-8"
        text = self.data.decode(encoding, errors="replace")
        self.snapshot = (root, None if value is None else as_bool(value), text)


class DataPropertyFile(FileBacked):
    """A JSON or YAML property file; ``snapshot`` is (loaded data, raw text) or None."""

    snapshot: tuple[Any, str] | None = None

    def Index(self) -> None:  # noqa: N802
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = self.data[:err.start].count(b"\n") + 1
            raise RepositoryError(f"{self.name}:{line}: not UTF-8 text") from None
        if self.name.endswith(YAML_SUFFIXES):
            parsed = self._load_yaml(text)
        else:
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as err:
                raise RepositoryError(f"{self.name}:{err.lineno}: {err.msg}") from None
        self.snapshot = (parsed, text)

    def _load_yaml(self, text: str) -> Any:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            reason = getattr(err, "problem", None) or str(err)
            raise RepositoryError(f"{self.name}{line}: {reason}") from None


class DataProperties:
    """What a template sees of a JSON or YAML file: ``.json``/``.yaml`` and ``.data``."""

    def __init__(self, name: str, parsed: Any, text: str) -> None:
        self.name = name
        self._parsed = parsed
        self.data = text

    @cached_property
    def json(self) -> Any:
        """The loaded data (a copy for this client)."""
        return copy.deepcopy(self._parsed)

    @property
    def yaml(self) -> Any:
        """The same data as ``json``, under the name YAML templates use."""
        return self.json

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.name}>"


class XMLProperties:
    """What a template sees of an XML property file without automatch.

    It keeps the version that was in service when the client's metadata was
    built, so one build never mixes two versions of the file.
    """

    def __init__(self, source: XMLPropertyFile, root: lxml.etree._Element, text: str) -> None:
        self.name = source.name
        self._root = root
        self.data = text

    @cached_property
    def xdata(self) -> lxml.etree._Element:
        """The root element (a copy for this client)."""
        return copy.deepcopy(self._root)

    @property
    def entries(self) -> list[lxml.etree._Element]:
        """The element children of the root."""
        return [el for el in self.xdata if isinstance(el.tag, str)]

    def xpath(self, expression: str, **variables: Any) -> Any:
        """Evaluate an XPath expression on this client's copy of the document."""
        return self.xdata.xpath(expression, **variables)

    def Match(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        """The elements that apply to the client, Group/Client tags flattened (copies)."""
        return [el for child in self._root for el in match_element(child, metadata)]

    def XMLMatch(self, metadata: ClientMetadata) -> lxml.etree._Element:  # noqa: N802
        """A copy of the document with only what applies to the client."""
        return xml_match(self._root, metadata)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.name}>"


def xml_match(root: lxml.etree._Element, metadata: ClientMetadata) -> lxml.etree._Element:
    """A new root like ``root`` holding only what applies to the client."""
    out = lxml.etree.Element(root.tag, attrib=dict(root.attrib))
    out.text = root.text
    for child in root:
        out.extend(match_element(child, metadata))
    return out


class Properties(Plugin, Connector, PropertyFiles, DirectoryBacked):
    """Property files from ``Properties/`` as ``metadata.Properties``."""

    options = (
        Option("properties", "automatch", False,
               "Resolve Group/Client conditionals of every XML property file for the client "
               "(XMLMatch) unless the file says automatch=\"false\".", type="bool"),
    )

    patterns = re.compile(r"[^.].*\.(xml|json" + "".join(
        f"|{suffix[1:]}" for suffix in YAML_SUFFIXES) + r")")

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        self.automatch = bool(core.setup.get("properties", "automatch"))
        self.encryption = Encryption.from_setup(core.setup)
        DirectoryBacked.__init__(self, self.data, core.fam)

    def add_entry(self, relative: str, event: Event) -> None:
        path = os.path.join(self.data, relative)
        fam: FileMonitor = self.fam
        entry: FileBacked = (XMLPropertyFile(path, fam, self.encryption) if path.endswith(".xml")
                             else DataPropertyFile(path, fam))
        entry.HandleEvent(event)
        self.entries[relative] = entry

    def HandleEvent(self, event: Event) -> None:  # noqa: N802
        """Reread what changed; cached client metadata holds the old data, so expire it."""
        DirectoryBacked.HandleEvent(self, event)
        if event.action != "endExist":
            self.expire_metadata()

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing beyond the property files: any template may read any of them."""
        depends_on(self.data)
        return ""

    def list_property_files(self) -> list[str]:
        """Names of the property files, relative to Properties/, sorted."""
        return sorted(self.entries)

    def match_property_file(self, name: str,
                            metadata: ClientMetadata) -> tuple[lxml.etree._Element, bool]:
        """An XML file with its conditionals resolved for a client, and whether automatch is on."""
        entry = self.entries.get(name)
        if not isinstance(entry, XMLPropertyFile):
            raise PluginExecutionError(f"unknown XML property file {name!r} in {self.data}")
        snapshot = entry.snapshot
        if snapshot is None:
            raise PluginExecutionError(f"{name} cannot be used: {entry.error or 'not read yet'}")
        root, auto, _text = snapshot
        return xml_match(root, metadata), self.automatch if auto is None else auto

    def get_additional_data(self, metadata: ClientMetadata) -> dict[str, Any]:
        """File name -> property data for this client (see the module docstring)."""
        out: dict[str, Any] = {}
        for name, entry in sorted(self.entries.items()):
            if isinstance(entry, XMLPropertyFile) and entry.snapshot is not None:
                root, auto, text = entry.snapshot
                if self.automatch if auto is None else auto:
                    out[name] = xml_match(root, metadata)
                else:
                    out[name] = XMLProperties(entry, root, text)
            elif isinstance(entry, DataPropertyFile) and entry.snapshot is not None:
                parsed, text = entry.snapshot
                out[name] = DataProperties(name, parsed, text)
        return out


__all__ = ["DataProperties", "Properties", "XMLProperties"]

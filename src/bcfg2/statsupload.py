"""Statistics uploads (``RecvStats``) read into a bounded document.

An agent's ``<upload-statistics>`` may hold hundreds of thousands of
entries; as a whole lxml tree, 8 MB of empty ones took 130 MB, and 400 MB
once stored. The upload is parsed incrementally instead
(``bcfg2.xml.iterparse_untrusted``; one of up to 256 K characters, nearly
every agent's, is parsed whole and walked, its tree a few megabytes at most)
and only what a Statistics plugin uses is kept:

- the ``<Statistics>`` element's attributes, its ``<Flags>`` and
  ``<OpStamps>``;
- every section's entry count, as ``received`` on one ``<Good>``, ``<Bad>``,
  ``<Modified>`` and ``<Extra>`` each (the agent's sections of a kind merged);
- at most ``max_entries`` bad, modified and extra entries, their attributes
  only (no text, no children), bad ones first, then modified, then extra;
  good entries are counted, never kept.

Anything else (other sections, text, a second ``<Statistics>``) is dropped
or refused. ``UploadGate`` lets only a few large uploads be read at once.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import lxml.etree

from bcfg2.errors import CriticalError, UntrustedInputError
from bcfg2.options import Setup
from bcfg2.xml import iterparse_untrusted

#: the entry sections that are kept, most important first
KINDS = ("Bad", "Modified", "Extra")
#: the section whose entries are only counted
GOOD = "Good"
#: flags of a run that are kept (agents send a handful)
MAX_FLAGS = 64
#: the oldest statistics format the server reads
MIN_VERSION = (2, 0)
VERSION = re.compile(r"\d{1,4}(?:\.\d{1,4}){0,3}")


def statistics_element(document: lxml.etree._Element) -> lxml.etree._Element:
    """The document's ``<Statistics>``; refused unless of format 2.0 or later (as upstream)."""
    stats = document if document.tag == "Statistics" else document.find(".//Statistics")
    version = "" if stats is None else stats.get("version", "")
    if stats is None or not VERSION.fullmatch(version) \
            or tuple(map(int, version.split("."))) < MIN_VERSION:
        raise UntrustedInputError("statistics without a <Statistics> element of version 2.0 "
                                  "or later")
    return stats


def _free(element: lxml.etree._Element) -> None:
    """Forget an element the parser is done with, and its earlier siblings."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


class _Reader:
    """The state of one upload being read: the document kept so far and the counts."""

    def __init__(self, max_entries: int, turn: Turn | None) -> None:
        self.max_entries = max(max_entries, 0)
        self.turn = turn
        self.root = lxml.etree.Element("upload-statistics")
        self.stats: lxml.etree._Element | None = None
        self.flags: lxml.etree._Element | None = None
        self.sections: dict[str, lxml.etree._Element] = {}
        self.received = dict.fromkeys((*KINDS, GOOD), 0)
        self.kept = 0

    def open_statistics(self, element: lxml.etree._Element) -> None:
        if self.stats is not None:
            raise UntrustedInputError("statistics with more than one <Statistics> element")
        self.stats = lxml.etree.SubElement(self.root, "Statistics", dict(element.attrib))
        for kind in (*KINDS, GOOD):
            self.sections[kind] = lxml.etree.SubElement(self.stats, kind)

    def section_done(self, element: lxml.etree._Element) -> None:
        """A child of <Statistics> ended: OpStamps is kept, the rest were handled."""
        assert self.stats is not None
        if element.tag == "OpStamps" and self.stats.find("OpStamps") is None:
            lxml.etree.SubElement(self.stats, "OpStamps", dict(element.attrib))

    def entry_done(self, section: str, element: lxml.etree._Element) -> None:
        """An entry of a section ended: count it, and keep it if it matters and fits."""
        assert self.stats is not None
        if section == "Flags":
            if element.tag == "Flag":
                if self.flags is None:
                    self.flags = lxml.etree.SubElement(self.stats, "Flags")
                if len(self.flags) < MAX_FLAGS:
                    lxml.etree.SubElement(self.flags, "Flag", dict(element.attrib))
            return
        if section not in self.received:
            return
        self.received[section] += 1
        if section == GOOD:
            return
        if self.kept >= self.max_entries and not self._make_room(section):
            return
        lxml.etree.SubElement(self.sections[section], element.tag, dict(element.attrib))
        self.kept += 1
        if self.turn is not None:
            self.turn.kept(self.kept)

    def _make_room(self, section: str) -> bool:
        """Drop the last kept entry of a less important kind than ``section``, if any."""
        for kind in reversed(KINDS[KINDS.index(section) + 1:]):
            kept = self.sections[kind]
            if len(kept):
                del kept[-1]
                self.kept -= 1
                return True
        return False

    def document(self) -> lxml.etree._Element:
        if self.stats is None:
            raise UntrustedInputError("statistics without a <Statistics> element")
        for kind, count in self.received.items():
            self.sections[kind].set("received", str(count))
        return self.root


def read_statistics(data: str | bytes, max_entries: int,
                    turn: Turn | None = None) -> lxml.etree._Element:
    """An upload as the bounded ``<upload-statistics>`` document described above.

    ``<Statistics>`` must be the root or a child of the root. Raises
    UntrustedInputError for what cannot be read, and CriticalError if the
    upload turns out large and ``turn``'s gate has no slot for it.
    """
    if not isinstance(data, (str, bytes)):
        raise UntrustedInputError(f"statistics must be a string, not {type(data).__name__}")
    reader = _Reader(max_entries, turn)
    depth = 0
    top = 0  # the depth of <Statistics> while it is open
    section = ""
    for event, element in iterparse_untrusted(data, "statistics"):
        if event == "start":
            depth += 1
            if not top and depth <= 2 and element.tag == "Statistics":
                reader.open_statistics(element)
                top = depth
            elif top and depth == top + 1:
                section = element.tag
            continue
        if top and depth == top + 2:
            reader.entry_done(section, element)
        elif top and depth == top + 1:
            reader.section_done(element)
        elif depth == top:
            top = 0
        if depth > 1:
            _free(element)
        depth -= 1
    return reader.document()


class UploadGate:
    """At most ``slots`` large statistics uploads are read and stored at once.

    What reading costs is the entries kept (good ones are only counted), so
    an upload becomes large once more than ``large`` entries are kept. It
    then waits up to ``wait`` seconds for a slot, and is refused with a
    Fault asking the agent to try later if none frees; the slot is held
    until the Statistics plugins are done with the document. Nearly every
    real run stays small and never waits.
    """

    def __init__(self, slots: int, large: int, wait: float) -> None:
        self.slots = max(slots, 1)
        self.large = max(large, 0)
        self.wait = max(wait, 0.0)
        self._semaphore = threading.BoundedSemaphore(self.slots)

    @classmethod
    def from_setup(cls, setup: Setup) -> UploadGate:
        """The gate of ``[reporting] large_uploads``, ``large_upload_entries`` and
        ``large_upload_wait``."""
        reporting = setup.reporting
        return cls(reporting.large_uploads, reporting.large_upload_entries,
                   reporting.large_upload_wait)

    @contextlib.contextmanager
    def turn(self) -> Iterator[Turn]:
        """One upload's passage: the slot it may take is given back when the block ends."""
        turn = Turn(self)
        try:
            yield turn
        finally:
            if turn.holding:
                self._semaphore.release()

    def take(self) -> None:
        """Take a slot, waiting up to ``wait`` seconds; CriticalError if none frees."""
        if not self._semaphore.acquire(timeout=self.wait):
            raise CriticalError(f"the server is reading {self.slots} other large statistics "
                                "uploads; try later")


class Turn:
    """One upload going through an ``UploadGate``: a slot is taken once it turns out large."""

    def __init__(self, gate: UploadGate) -> None:
        self.gate = gate
        self.holding = False

    def kept(self, entries: int) -> None:
        """``entries`` are kept so far: past the gate's threshold, wait for a slot."""
        if entries > self.gate.large and not self.holding:
            self.gate.take()
            self.holding = True

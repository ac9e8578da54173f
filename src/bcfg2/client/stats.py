"""The statistics document an agent uploads with RecvStats, as upstream's agent writes it."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import lxml.etree

Element = lxml.etree._Element


def _copy(entry: Element) -> Element:
    """An entry as the statistics carry it: its attributes and children, no text."""
    out = copy.deepcopy(entry)
    out.text = None
    out.tail = None
    out.set("qtext", "")
    return out


def statistics(revision: str, states: Mapping[Element, bool], modified: Iterable[Element],
               extra: Iterable[Element], times: Mapping[str, float],
               flags: Mapping[str, bool]) -> str:
    """``<upload-statistics>``: counts, state, flags, the Modified, Extra, Good and Bad
    entries and the time each phase of the run ended (no XML declaration)."""
    upload = lxml.etree.Element("upload-statistics")
    good = [entry for entry, ok in states.items() if ok]
    bad = [entry for entry, ok in states.items() if not ok]
    stats = lxml.etree.SubElement(upload, "Statistics", total=str(len(states)), version="2.0",
                                  revision=revision, good=str(len(good)),
                                  state="dirty" if bad else "clean")
    flag_list = lxml.etree.SubElement(stats, "Flags")
    for name, value in flags.items():
        lxml.etree.SubElement(flag_list, "Flag", name=name, value=str(bool(value)))
    for name, entries in (("Modified", modified), ("Extra", extra), ("Good", good),
                          ("Bad", bad)):
        section = lxml.etree.SubElement(stats, name)
        section.extend(_copy(entry) for entry in entries)
    lxml.etree.SubElement(stats, "OpStamps", {event: f"{when:.6f}"
                                              for event, when in times.items()})
    return lxml.etree.tostring(upload, encoding="unicode")

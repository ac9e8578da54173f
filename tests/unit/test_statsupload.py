"""bcfg2.statsupload: an upload read into a bounded document, and the gate for large ones."""

from __future__ import annotations

import threading

import lxml.etree
import pytest

from bcfg2.errors import CriticalError, UntrustedInputError
from bcfg2.statsupload import UploadGate, read_statistics, statistics_element

UPLOAD = """\
<upload-statistics>
  <Statistics total="6" version="2.0" revision="abc" good="2" state="dirty">
    <Flags><Flag name="dry_run" value="False"/><Flag name="only_important" value="False"/></Flags>
    <Modified><Service name="sshd" type="systemd" qtext="">text<Child/></Service></Modified>
    <Extra><Package name="telnetd" type="deb"/></Extra>
    <Good><Path name="/etc/motd" type="file"/><Path name="/etc/hosts" type="file"/></Good>
    <Bad><Path name="/etc/ntp.conf" type="file" current_mode="0600" mode="0644"/>
         <Package name="chrony" type="deb"/></Bad>
    <Bad><Path name="/etc/issue" type="file"/></Bad>
    <Surprise><Path name="/ignored"/></Surprise>
    <OpStamps start="1.0" finished="2.0"/>
  </Statistics>
</upload-statistics>
"""


def names(section: lxml.etree._Element) -> list[str]:
    return [entry.get("name") for entry in section]


def test_an_upload_keeps_what_plugins_use_and_counts_every_entry() -> None:
    doc = read_statistics(UPLOAD, max_entries=100)
    stats = statistics_element(doc)
    assert dict(stats.attrib) == {"total": "6", "version": "2.0", "revision": "abc",
                                  "good": "2", "state": "dirty"}
    assert [child.tag for child in stats] == ["Bad", "Modified", "Extra", "Good", "Flags",
                                              "OpStamps"]
    bad = stats.find("Bad")
    assert bad.get("received") == "3" and names(bad) == ["/etc/ntp.conf", "chrony", "/etc/issue"]
    assert bad[0].attrib["current_mode"] == "0600"
    good = stats.find("Good")
    assert good.get("received") == "2" and len(good) == 0  # counted, never kept
    service = stats.find("Modified")[0]
    assert service.text is None and len(service) == 0  # attributes only
    assert [f.get("name") for f in stats.find("Flags")] == ["dry_run", "only_important"]
    assert stats.find("OpStamps").get("finished") == "2.0"
    assert doc.find(".//Surprise") is None


def test_an_upload_reads_the_same_parsed_whole_or_pulled(monkeypatch) -> None:
    """A small upload is parsed whole and walked, a large one pulled a chunk at a time:
    the document read is the same."""
    from bcfg2 import xml

    walked = lxml.etree.tostring(read_statistics(UPLOAD, max_entries=2))
    monkeypatch.setattr(xml, "WHOLE_PARSE", -1)
    assert lxml.etree.tostring(read_statistics(UPLOAD, max_entries=2)) == walked


def test_statistics_may_be_the_root() -> None:
    doc = read_statistics('<Statistics version="2.0" state="clean"><Good><Path name="/a"/>'
                          "</Good></Statistics>", max_entries=10)
    assert statistics_element(doc).find("Good").get("received") == "1"


def test_over_the_cap_bad_entries_push_out_extra_and_modified_ones() -> None:
    doc = read_statistics(UPLOAD, max_entries=2)
    stats = statistics_element(doc)
    assert names(stats.find("Bad")) == ["/etc/ntp.conf", "chrony"]
    assert len(stats.find("Modified")) == 0 and len(stats.find("Extra")) == 0
    assert [stats.find(kind).get("received") for kind in ("Bad", "Modified", "Extra")] == [
        "3", "1", "1"]
    assert len(read_statistics(UPLOAD, max_entries=0).find(".//Bad")) == 0


def test_a_huge_upload_keeps_at_most_max_entries() -> None:
    entries = '<Path name="/x" type="file"/>' * 30_000
    doc = read_statistics(f'<upload-statistics><Statistics version="2.0"><Good>{entries}</Good>'
                          f'<Extra>{entries}</Extra><Bad>{entries}</Bad></Statistics>'
                          '</upload-statistics>', max_entries=1_000)
    stats = statistics_element(doc)
    assert sum(1 for _ in stats.iter()) == 1 + 4 + 1_000  # Statistics, sections, kept entries
    assert [stats.find(k).get("received") for k in ("Good", "Extra", "Bad")] == ["30000"] * 3
    assert len(stats.find("Bad")) == 1_000


@pytest.mark.parametrize("upload, message", [
    ("<a><Statistics version='2.0'/><Statistics version='2.0'/></a>", "more than one"),
    ("<Statistics version='2.0'><Statistics/></Statistics><!-- -->", None),
    ("<a><b><Statistics version='2.0'/></b></a>", "without a <Statistics>"),
    ("<upload-statistics/>", "without a <Statistics>"),
    ("<!DOCTYPE a><a/>", "DTD"),
    ("<a><Statistics>", "malformed"),
])
def test_uploads_that_cannot_be_read_are_refused(upload: str, message: str | None) -> None:
    if message is None:  # a nested <Statistics> is just an unknown section
        assert statistics_element(read_statistics(upload, 10)).find("Statistics") is None
        return
    with pytest.raises(UntrustedInputError, match=message):
        read_statistics(upload, 10)


def test_only_a_string_is_read() -> None:
    with pytest.raises(UntrustedInputError, match="must be a string"):
        read_statistics(42, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("version, ok", [
    ("2.0", True), ("2.1", True), ("10.0", True), ("3", True), ("1.9", False),
    ("2.0\nforged", False), ("", False), ("two", False), ("2." + "0" * 50, False)])
def test_statistics_of_format_2_0_or_later_are_read(version: str, ok: bool) -> None:
    doc = lxml.etree.Element("upload-statistics")
    lxml.etree.SubElement(doc, "Statistics", version=version)
    if ok:
        assert statistics_element(doc).get("version") == version
    else:
        with pytest.raises(UntrustedInputError, match="version 2.0"):
            statistics_element(doc)


def bad_entries(count: int) -> str:
    return ('<upload-statistics><Statistics version="2.0"><Bad>'
            + '<Path name="/x"/>' * count + "</Bad></Statistics></upload-statistics>")


def test_a_small_upload_never_waits_for_the_gate() -> None:
    gate = UploadGate(slots=1, large=10, wait=0)
    with gate.turn():
        gate.take()  # every slot taken
        with gate.turn() as turn:
            read_statistics(bad_entries(10), 100, turn)
            assert not turn.holding


def test_a_large_upload_takes_a_slot_and_gives_it_back() -> None:
    gate = UploadGate(slots=1, large=10, wait=0)
    with gate.turn() as turn:
        read_statistics(bad_entries(11), 100, turn)
        assert turn.holding
        with pytest.raises(CriticalError, match="try later"), gate.turn() as other:
            read_statistics(bad_entries(11), 100, other)
    with gate.turn() as turn:  # given back, also after the refusal
        read_statistics(bad_entries(11), 100, turn)
        assert turn.holding
    with pytest.raises(UntrustedInputError), gate.turn() as turn:
        read_statistics(bad_entries(11) + "<junk/>", 100, turn)
    gate.take()  # the slot came back after the error too


def test_a_large_upload_waits_for_a_slot_that_frees() -> None:
    gate = UploadGate(slots=1, large=0, wait=30)
    waiting = threading.Event()
    done = threading.Event()

    def upload() -> None:
        with gate.turn() as turn:
            waiting.set()
            read_statistics(bad_entries(1), 10, turn)
        done.set()

    worker = threading.Thread(target=upload)
    with gate.turn() as held:
        read_statistics(bad_entries(1), 10, held)  # the one slot is taken
        worker.start()
        assert waiting.wait(10)
        assert not done.is_set()
    worker.join(10)  # the slot was given back: the waiting upload went through
    assert done.is_set()

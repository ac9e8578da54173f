"""bcfg2.xml: hardened parsing of network data, repository files with XInclude,
and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import lxml.etree
import pytest

from bcfg2 import xml
from bcfg2.errors import RepositoryError, UntrustedInputError

XI = 'xmlns:xi="http://www.w3.org/2001/XInclude"'
SECRET = "s3cr3t-c0ntent-of-a-local-file"


# -- untrusted input -----------------------------------------------------------


def iterparse_all(data: str | bytes, what: str = "XML") -> lxml.etree._Element:
    """Every event of iterparse_untrusted; the root, as the parser built it (nothing freed)."""
    events = list(xml.iterparse_untrusted(data, what))
    assert events[0][0] == "start" and events[-1] == ("end", events[0][1])
    return events[0][1]


def pulled_all(data: str | bytes, what: str = "XML") -> lxml.etree._Element:
    """``iterparse_all`` with the pull parser however small the document is."""
    whole, xml.WHOLE_PARSE = xml.WHOLE_PARSE, -1
    try:
        return iterparse_all(data, what)
    finally:
        xml.WHOLE_PARSE = whole


#: every way of parsing network data refuses the same things: whole, events of a small
#: document parsed whole (walked), events of the pull parser (incremental)
UNTRUSTED = pytest.mark.parametrize("parse", [xml.parse_untrusted, iterparse_all, pulled_all],
                                    ids=["whole", "walked", "incremental"])


@UNTRUSTED
def test_untrusted_plain_document_is_parsed(parse) -> None:
    root = parse('<probe-data><probe name="os" source="Probes">linux</probe>'
                 "</probe-data>")
    assert root.tag == "probe-data"
    assert root[0].get("name") == "os"
    assert root[0].text == "linux"


@UNTRUSTED
def test_untrusted_document_with_dtd_is_refused(parse) -> None:
    with pytest.raises(UntrustedInputError, match="DTD"):
        parse('<!DOCTYPE stats SYSTEM "stats.dtd"><stats/>')


@UNTRUSTED
def test_untrusted_billion_laughs_is_refused(parse) -> None:
    levels = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    doc = f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(levels)}]><lolz>&lol9;</lolz>'
    with pytest.raises(UntrustedInputError) as info:
        parse(doc, "statistics")
    assert "lol" not in str(info.value)  # nothing was expanded into the message


@UNTRUSTED
@pytest.mark.parametrize("template", [
    '<!DOCTYPE a [<!ENTITY leak SYSTEM "file://{secret}">]><a>&leak;</a>',
    '<!DOCTYPE a [<!ENTITY % ext SYSTEM "file://{dtd}"> %ext;]><a>&leak;</a>',
    '<!DOCTYPE a SYSTEM "file://{dtd}"><a>&leak;</a>',
])
def test_untrusted_external_entity_never_reads_the_file(tmp_path: Path, template: str,
                                                        parse) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY leak "{SECRET}">')
    doc = template.format(secret=secret, dtd=dtd).encode()
    with pytest.raises(UntrustedInputError) as info:
        parse(doc)
    assert SECRET not in str(info.value)
    # the parser itself never loads the file either (not only the check after it)
    parsed = lxml.etree.fromstring(doc, parser=xml.untrusted_parser())
    assert SECRET not in lxml.etree.tostring(parsed, encoding="unicode")


@UNTRUSTED
def test_untrusted_malformed_input_names_what_was_refused(parse) -> None:
    with pytest.raises(UntrustedInputError) as info:
        parse(b"<stats><unclosed></stats>", "statistics")
    message = str(info.value)
    assert "malformed statistics" in message
    assert "unclosed" in message


@UNTRUSTED
def test_untrusted_text_that_is_no_unicode_is_refused(parse) -> None:
    """A lone surrogate (a str no UTF-8 can carry) is refused with a clear error."""
    with pytest.raises(UntrustedInputError, match="probe data is not valid Unicode"):
        parse("<a>\ud800</a>", "probe data")


@UNTRUSTED
@pytest.mark.parametrize("data", [b"", "", "<a>", "<a/><b/>"])
def test_untrusted_empty_or_unfinished_input_is_refused(parse, data: str | bytes) -> None:
    with pytest.raises(UntrustedInputError):
        parse(data, "probe data")


@UNTRUSTED
def test_untrusted_attribute_flood_is_refused_before_parsing(parse) -> None:
    """libxml2 holds one start tag's attributes at once: too many are refused unparsed."""
    def element(count: int, quote: str = '"') -> str:
        return "<a " + " ".join(f"x{i}={quote}{quote}" for i in range(count)) + "/>"

    assert len(parse(f"<r>{element(xml.MAX_ATTRIBUTES)}</r>")[0].attrib) == xml.MAX_ATTRIBUTES
    for flood in (element(xml.MAX_ATTRIBUTES + 1), element(5000, "'"),
                  f"<r>{element(10, chr(39))}{element(xml.MAX_ATTRIBUTES + 1)}</r>"):
        with pytest.raises(UntrustedInputError, match="more than 256 attributes"):
            parse(flood, "statistics")
        with pytest.raises(UntrustedInputError, match="more than 256 attributes"):
            parse(flood.encode(), "statistics")
    # many equals signs inside one value are no attributes
    assert parse(f'<a d="{"k=v " * 1000}"/>').get("d").count("=") == 1000


def test_incremental_parsing_reads_across_chunks_as_a_whole_parse_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xml, "FEED_CHUNK", 3)
    doc = '<r><e n="&lt;&amp;&quot;é€" m=\'x\'>t&#233;xt</e><e/>tail</r>'
    whole = xml.parse_untrusted(doc)
    walked = list(xml.iterparse_untrusted(doc))
    root = pulled_all(doc)
    assert lxml.etree.tostring(root) == lxml.etree.tostring(whole)
    assert root[0].get("n") == '<&"é€'
    # the same events, whichever way the document was parsed
    monkeypatch.setattr(xml, "WHOLE_PARSE", -1)
    pulled = list(xml.iterparse_untrusted(doc))
    assert [(e, el.tag) for e, el in walked] == [(e, el.tag) for e, el in pulled]


def test_incremental_parsing_lets_the_caller_free_what_it_read() -> None:
    """Clearing each ended element and its earlier siblings keeps the tree to one chunk's worth."""
    one = '<e a="1"><c/></e>'
    doc = "<r>" + one * 20_000 + "</r>"
    widest = 0
    for event, element in xml.iterparse_untrusted(doc):
        if event == "end" and element.tag == "e":
            parent = element.getparent()
            widest = max(widest, len(parent))
            element.clear()
            while element.getprevious() is not None:
                del parent[0]
    assert widest <= xml.FEED_CHUNK // len(one) + 2 < 20_000


# -- repository files ----------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_repository_syntax_error_reports_path_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "groups.xml", "<Groups>\n  <Group name='a'>\n</Groups>\n")
    with pytest.raises(RepositoryError) as info:
        xml.parse_repository_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert "mismatch" in message


def test_repository_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    with pytest.raises(RepositoryError, match=str(missing)):
        xml.parse_repository_file(str(missing))


def test_repository_comments_are_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "b.xml", "<Bundle><!-- note --><Package name='a'/></Bundle>")
    root, includes = xml.parse_repository_file(str(path))
    assert [child.tag for child in root] == ["Package"]
    assert includes == []


def test_xinclude_of_a_file(tmp_path: Path) -> None:
    inc = write(tmp_path / "more.xml", "<Groups><Group name='more'/></Groups>")
    path = write(tmp_path / "groups.xml",
                 f'<Groups {XI}><Group name="own"/><xi:include href="more.xml"/></Groups>')
    root, includes = xml.parse_repository_file(str(path))
    assert [g.get("name") for g in root.iter("Group")] == ["own", "more"]
    assert includes == [str(inc)]


def test_xinclude_wildcard_includes_every_match_sorted(tmp_path: Path) -> None:
    names = ["web", "db", "mail"]
    for name in names:
        write(tmp_path / "groups" / f"{name}.xml", f"<Groups><Group name='{name}'/></Groups>")
    write(tmp_path / "groups" / "notes.txt", "<Groups><Group name='txt'/></Groups>")
    path = write(tmp_path / "groups.xml", f'<Groups {XI}><xi:include href="groups/*.xml"/></Groups>')
    root, includes = xml.parse_repository_file(str(path))
    assert [g.get("name") for g in root.iter("Group")] == sorted(names)
    assert includes == [str(tmp_path / "groups" / f"{name}.xml") for name in sorted(names)]


def test_xinclude_wildcard_never_includes_the_file_itself(tmp_path: Path) -> None:
    write(tmp_path / "extra.xml", "<Bundle><Package name='extra'/></Bundle>")
    path = write(tmp_path / "all.xml",
                 f'<Bundle {XI}><Package name="own"/><xi:include href="*.xml"/></Bundle>')
    root, includes = xml.parse_repository_file(str(path))
    assert sorted(p.get("name") for p in root.iter("Package")) == ["extra", "own"]
    assert includes == [str(tmp_path / "extra.xml")]


def test_xinclude_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "groups.xml",
                 f'<Groups {XI}>\n<xi:include href="their-groups.xml"/>\n</Groups>')
    with pytest.raises(RepositoryError) as info:
        xml.parse_repository_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: ")
    assert "their-groups.xml" in message


def test_xinclude_missing_file_with_fallback_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "groups.xml",
                 f'<Groups {XI}><Group name="own"/>'
                 f'<xi:include href="their-groups.xml"><xi:fallback/></xi:include></Groups>')
    root, includes = xml.parse_repository_file(str(path))
    assert [g.get("name") for g in root.iter("Group")] == ["own"]
    # still reported, so that the file is picked up once it is created
    assert includes == [str(tmp_path / "their-groups.xml")]


def test_xinclude_wildcard_without_match_is_an_error_naming_the_pattern(tmp_path: Path) -> None:
    path = write(tmp_path / "groups.xml", f'<Groups {XI}><xi:include href="groups/*.xml"/></Groups>')
    with pytest.raises(RepositoryError) as info:
        xml.parse_repository_file(str(path))
    assert str(info.value).startswith(f"{path}:1: ")
    assert "groups/*.xml" in str(info.value)


def test_xinclude_wildcard_without_match_with_fallback_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "groups.xml",
                 f'<Groups {XI}><xi:include href="groups/*.xml"><xi:fallback>'
                 f'<Group name="fallback"/></xi:fallback></xi:include></Groups>')
    root, includes = xml.parse_repository_file(str(path))
    assert [g.get("name") for g in root.iter("Group")] == ["fallback"]
    assert includes == []


def test_xinclude_syntax_error_is_reported_in_the_included_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "more.xml", "<Groups>\n<Group name='x'>\n</Groups>\n")
    path = write(tmp_path / "groups.xml", f'<Groups {XI}><xi:include href="more.xml"/></Groups>')
    with pytest.raises(RepositoryError) as info:
        xml.parse_repository_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{bad}:3: ")
    assert str(path) in message


# -- atomic writes -------------------------------------------------------------


def test_atomic_write_new_content_is_visible(tmp_path: Path) -> None:
    target = tmp_path / "state" / "probed.xml"
    xml.atomic_write(str(target), "<Probed/>", mode=0o640)
    assert target.read_text() == "<Probed/>"
    assert target.stat().st_mode & 0o777 == 0o640
    xml.atomic_write(str(target), b"<Probed>\xc3\xa9</Probed>")
    assert target.read_bytes() == b"<Probed>\xc3\xa9</Probed>"
    assert os.listdir(target.parent) == ["probed.xml"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_interrupted_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 failing: str) -> None:
    target = tmp_path / "clients.xml"
    old = b"<Clients>\n  <Client name='a'/>\n</Clients>\n"
    target.write_bytes(old)

    def interrupted(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, interrupted)
    with pytest.raises(OSError):
        xml.atomic_write(str(target), b"<Clients/>" * 100)
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["clients.xml"]


def test_atomic_write_interrupted_creates_nothing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        xml.atomic_write(str(tmp_path / "new.xml"), "<New/>")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []

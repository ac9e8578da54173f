"""The file-backed plugin helpers: StructFile conditionals, reloads that keep the
last good version, directories, specificity, entry sets and info.xml."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import lxml.etree
import pytest
from conftest import make_setup, rewrite

from bcfg2.errors import PluginExecutionError, SpecificityError
from bcfg2.filemonitor import Event
from bcfg2.filemonitor.pseudo import Pseudo
from bcfg2.metadata import ClientMetadata, MetadataQuery
from bcfg2.plugin import (
    EntrySet,
    InfoXML,
    SpecificData,
    Specificity,
    StructFile,
    XMLDirectoryBacked,
    XMLFileBacked,
    match_element,
)

XI = 'xmlns:xi="http://www.w3.org/2001/XInclude"'


def meta(hostname: str, groups: Iterable[str] = (), aliases: Iterable[str] = ()) -> ClientMetadata:
    """Client metadata as the Metadata plugin would build it."""
    return ClientMetadata(hostname, "", groups, [], aliases, [], {}, None, None, None,
                          MetadataQuery())


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path




def names(elements: Iterable[lxml.etree._Element]) -> list[str]:
    return [el.get("name") for el in elements]


def load(cls: type[XMLFileBacked], path: Path) -> XMLFileBacked:
    obj = cls(str(path))
    obj.HandleEvent()
    return obj


# -- StructFile ----------------------------------------------------------------

BUNDLE = """\
<Bundle>
  <Package name="common"/>
  <Group name="rpm">
    <Package name="openssh"/>
    <Group name="fedora">
      <Group name="fedora14" negate="true">
        <Package name="openssh-clients"/>
      </Group>
      <Package name="openssh-server"/>
    </Group>
  </Group>
  <Group name="deb">
    <Package name="ssh"/>
  </Group>
  <Group name="deb" negate="true">
    <Package name="not-deb"/>
  </Group>
  <Client name="trust.example.com">
    <Path name="/etc/ssh/shosts.equiv"/>
  </Client>
  <Client name="trust.example.com" negate="true">
    <Path name="/etc/untrusted"/>
  </Client>
</Bundle>
"""


@pytest.mark.parametrize(("hostname", "groups", "expected"), [
    ("a.example.com", [], ["common", "not-deb", "/etc/untrusted"]),
    ("a.example.com", ["deb"], ["common", "ssh", "/etc/untrusted"]),
    ("a.example.com", ["rpm"], ["common", "openssh", "not-deb", "/etc/untrusted"]),
    # nested conditionals are conjunctive: fedora alone is not enough
    ("a.example.com", ["fedora"], ["common", "not-deb", "/etc/untrusted"]),
    ("a.example.com", ["rpm", "fedora"],
     ["common", "openssh", "openssh-clients", "openssh-server", "not-deb", "/etc/untrusted"]),
    ("a.example.com", ["rpm", "fedora", "fedora14"],
     ["common", "openssh", "openssh-server", "not-deb", "/etc/untrusted"]),
    ("trust.example.com", ["deb"], ["common", "ssh", "/etc/ssh/shosts.equiv"]),
])
def test_structfile_match_resolves_nested_and_negated_conditionals(
        tmp_path: Path, hostname: str, groups: list[str], expected: list[str]) -> None:
    sf = load(StructFile, write(tmp_path / "ssh.xml", BUNDLE))
    matched = sf.Match(meta(hostname, groups))
    assert names(matched) == expected
    assert not [el for el in matched if el.tag in ("Group", "Client")]


def test_structfile_client_matches_by_alias(tmp_path: Path) -> None:
    sf = load(StructFile, write(tmp_path / "b.xml", BUNDLE))
    by_alias = meta("host17.internal", ["deb"], aliases=["trust.example.com"])
    assert names(sf.Match(by_alias)) == ["common", "ssh", "/etc/ssh/shosts.equiv"]


def test_match_element_resolves_one_element_for_a_client() -> None:
    group = lxml.etree.fromstring(
        '<Group name="web"><Path name="/a"/><Group name="db" negate="true">'
        '<Package name="p"><!-- c --><Client name="h"><Option name="o"/></Client></Package>'
        '</Group></Group>')
    matched = match_element(group, meta("h", ["web"]))
    assert [(el.tag, el.get("name")) for el in matched] == [("Path", "/a"), ("Package", "p")]
    assert [child.tag for child in matched[1]] == ["Option"]  # comment dropped, Client resolved
    assert match_element(group, meta("h", ["db"])) == []
    assert [el.get("name") for el in match_element(group, meta("h", ["web", "db"]))] == ["/a"]
    # admits decides every element; the original is never changed
    no_paths = match_element(group, meta("h", ["web"]), admits=lambda el: el.tag != "Path")
    assert [el.tag for el in no_paths] == ["Package"]
    assert len(group) == 2


def test_structfile_xmlmatch_flattens_into_a_copy(tmp_path: Path) -> None:
    sf = load(StructFile, write(tmp_path / "b.xml", BUNDLE.replace("<Bundle>",
                                                                   '<Bundle independent="true">')))
    doc = sf.XMLMatch(meta("a.example.com", ["rpm", "fedora"]))
    assert doc.tag == "Bundle"
    assert doc.get("independent") == "true"
    assert names(doc) == ["common", "openssh", "openssh-clients", "openssh-server", "not-deb",
                          "/etc/untrusted"]
    # the result belongs to the caller: changing it leaves the file's data alone
    doc[0].set("name", "changed")
    doc.remove(doc[1])
    again = sf.XMLMatch(meta("a.example.com", ["rpm", "fedora"]))
    assert names(again)[:2] == ["common", "openssh"]


def test_structfile_keeps_children_and_text_of_entries(tmp_path: Path) -> None:
    sf = load(StructFile, write(tmp_path / "b.xml", """\
        <Bundle>
          <Path name="/etc/foo" type="file">content
            <Group name="a"><ACL scope="user" user="a" perms="r"/></Group>
            <Group name="b"><ACL scope="user" user="b" perms="r"/></Group>
          </Path>
        </Bundle>""".replace("        ", "")))
    [entry] = sf.Match(meta("h", ["b"]))
    assert entry.text.strip() == "content"
    assert [(acl.tag, acl.get("user")) for acl in entry] == [("ACL", "b")]


def test_structfile_never_parsed(tmp_path: Path) -> None:
    sf = load(StructFile, write(tmp_path / "b.xml", "<Bundle>"))
    assert sf.Match(meta("h")) == []
    with pytest.raises(PluginExecutionError, match="b.xml"):
        sf.XMLMatch(meta("h"))


# -- reloads ---------------------------------------------------------------------


def test_bad_edit_keeps_last_good_version_and_logs_once(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "b.xml", "<Bundle><Package name='good'/></Bundle>")
    sf = load(StructFile, path)
    client = meta("h")
    caplog.set_level(logging.WARNING)

    rewrite(path, "<Bundle><Package name='broken'></Bundle>")
    sf.HandleEvent()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"{path}:1:" in errors[0].getMessage()
    assert sf.error is not None

    for _ in range(3):
        assert names(sf.Match(client)) == ["good"]
        assert names(sf.XMLMatch(client)) == ["good"]
    sf.HandleEvent()  # the same broken file seen again: no second report
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    rewrite(path, "<Bundle><Package name='fixed'/></Bundle>")
    sf.HandleEvent()
    assert names(sf.Match(client)) == ["fixed"]
    assert sf.error is None
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert any("fixed" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_first_version_broken_serves_nothing_until_fixed(tmp_path: Path) -> None:
    path = write(tmp_path / "b.xml", "<Bundle><Package name='x'></Bundle>")
    sf = load(StructFile, path)
    assert sf.Match(meta("h")) == []
    rewrite(path, "<Bundle><Package name='x'/></Bundle>")
    sf.HandleEvent()
    assert names(sf.Match(meta("h"))) == ["x"]


def test_xincluded_file_change_rereads_the_including_file(tmp_path: Path) -> None:
    # the included file's root is a conditional, so its entries join the parent's
    included = write(tmp_path / "inc" / "extra.xml",
                     "<Group name='linux'><Package name='one'/></Group>")
    path = write(tmp_path / "b.xml",
                 f'<Bundle {XI}><Package name="own"/><xi:include href="inc/extra.xml"/></Bundle>')
    fam = Pseudo()
    sf = StructFile(str(path), fam, should_monitor=True)
    fam.handle_event_set()
    assert sf.extras == [str(included)]
    assert names(sf.Match(meta("h", ["linux"]))) == ["own", "one"]
    assert names(sf.Match(meta("h"))) == ["own"]

    rewrite(included, "<Group name='linux'><Package name='one'/><Package name='two'/></Group>")
    fam.poll()
    fam.handle_event_set()
    assert names(sf.Match(meta("h", ["linux"]))) == ["own", "one", "two"]

    # the included file goes away: an error, the last good version stays
    included.unlink()
    fam.poll()
    fam.handle_event_set()
    assert "extra.xml" in sf.error
    assert names(sf.Match(meta("h", ["linux"]))) == ["own", "one", "two"]

    # it comes back: served again
    write(included, "<Group name='linux'><Package name='three'/></Group>")
    fam.poll()
    fam.handle_event_set()
    assert sf.error is None
    assert names(sf.Match(meta("h", ["linux"]))) == ["own", "three"]


# -- directories ---------------------------------------------------------------


def test_directory_backed_follows_new_and_deleted_files_and_dirs(tmp_path: Path) -> None:
    base = tmp_path / "Bundler"
    write(base / "a.xml", "<Bundle><Package name='a'/></Bundle>")
    write(base / "readme.txt", "not xml")
    fam = Pseudo()
    backed = XMLDirectoryBacked(str(base), fam)
    fam.handle_event_set()
    assert sorted(backed.entries) == ["a.xml"]

    write(base / "b.xml", "<Bundle><Package name='b'/></Bundle>")
    write(base / "sub" / "deeper" / "c.xml", "<Bundle><Package name='c'/></Bundle>")
    rewrite(base / "a.xml", "<Bundle><Package name='a2'/></Bundle>")
    fam.poll()
    fam.handle_event_set()
    assert sorted(backed.entries) == ["a.xml", "b.xml", os.path.join("sub", "deeper", "c.xml")]
    assert names(backed.entries["a.xml"].entries) == ["a2"]
    assert names(backed.entries[os.path.join("sub", "deeper", "c.xml")].entries) == ["c"]

    (base / "b.xml").unlink()
    shutil.rmtree(base / "sub")
    fam.poll()
    fam.handle_event_set()
    assert sorted(backed.entries) == ["a.xml"]

    # a directory created again later is watched again
    write(base / "sub" / "d.xml", "<Bundle/>")
    fam.poll()
    fam.handle_event_set()
    assert sorted(backed.entries) == ["a.xml", os.path.join("sub", "d.xml")]


# -- specificity -----------------------------------------------------------------


def test_specificity_order() -> None:
    everyone = Specificity(all=True)
    low = Specificity(group="web", prio=10)
    high = Specificity(group="db", prio=50)
    same_as_high = Specificity(group="mail", prio=50)
    host = Specificity(hostname="h.example.com")
    assert everyone < low < high < host
    assert Specificity(group="a", prio=0) > everyone  # any group beats all
    assert host > Specificity(group="db", prio=99)  # a host beats any group
    assert high == same_as_high
    assert sorted([host, everyone, high, low]) == [everyone, low, high, host]


def test_specificity_matches() -> None:
    client = meta("h.example.com", ["web"])
    assert Specificity(all=True).matches(client)
    assert Specificity(group="web", prio=1).matches(client)
    assert not Specificity(group="db", prio=1).matches(client)
    assert Specificity(hostname="h.example.com").matches(client)
    assert not Specificity(hostname="other.example.com").matches(client)


# -- entry sets ------------------------------------------------------------------


def entry_set(tmp_path: Path, files: dict[str, str]) -> EntrySet:
    """An EntrySet for /etc/motd fed with the files as the file monitor would."""
    directory = tmp_path / "Cfg" / "etc" / "motd"
    directory.mkdir(parents=True)
    es = EntrySet("motd", str(directory), SpecificData, make_setup(tmp_path / "repo"))
    for fname, content in files.items():
        write(directory / fname, content)
        es.handle_event(Event(1, fname, "exists", str(directory / fname)))
    return es


def chosen(es: EntrySet, client: ClientMetadata) -> str:
    return os.path.basename(es.best_matching(client).name)


def test_entryset_most_specific_version_wins(tmp_path: Path) -> None:
    es = entry_set(tmp_path, {"motd": "all", "motd.G10_web": "web", "motd.G90_db": "db",
                              "motd.H_special.example.com": "host"})
    assert chosen(es, meta("x", [])) == "motd"
    assert chosen(es, meta("x", ["web"])) == "motd.G10_web"
    assert chosen(es, meta("x", ["web", "db"])) == "motd.G90_db"
    assert chosen(es, meta("special.example.com", ["web", "db"])) == "motd.H_special.example.com"
    assert es.best_matching(meta("x", ["web"])).data == b"web"


def test_entryset_tie_between_applying_groups_names_both_files(tmp_path: Path) -> None:
    es = entry_set(tmp_path, {"motd": "all", "motd.G50_web": "web", "motd.G50_db": "db"})
    with pytest.raises(SpecificityError) as info:
        es.best_matching(meta("both.example.com", ["web", "db"]))
    message = str(info.value)
    assert "motd.G50_web" in message and "motd.G50_db" in message
    assert "both.example.com" in message
    # a tie that only exists on paper is fine
    assert chosen(es, meta("x", ["web"])) == "motd.G50_web"
    assert chosen(es, meta("x", ["db"])) == "motd.G50_db"


def test_entryset_nothing_applies(tmp_path: Path) -> None:
    es = entry_set(tmp_path, {"motd.G50_web": "web"})
    with pytest.raises(PluginExecutionError, match="nobody.example.com"):
        es.best_matching(meta("nobody.example.com", ["db"]))


def test_entryset_ignores_unparseable_names_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    es = entry_set(tmp_path, {"motd": "all", "motd.bak": "old", "motd.G50web": "typo",
                              "motd~": "editor backup", ".motd.swp": "swap"})
    assert sorted(es.entries) == ["motd"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "motd.bak" in warned and "motd.G50web" in warned
    assert "motd~" not in warned  # editor droppings are skipped silently
    assert chosen(es, meta("x", ["web"])) == "motd"


def test_entryset_follows_changes_and_deletions(tmp_path: Path) -> None:
    es = entry_set(tmp_path, {"motd": "all", "motd.G50_web": "web"})
    directory = Path(es.path)
    rewrite(directory / "motd.G50_web", "web, edited")
    es.handle_event(Event(1, "motd.G50_web", "changed", str(directory / "motd.G50_web")))
    assert es.best_matching(meta("x", ["web"])).data == b"web, edited"
    (directory / "motd.G50_web").unlink()
    es.handle_event(Event(1, "motd.G50_web", "deleted", str(directory / "motd.G50_web")))
    assert chosen(es, meta("x", ["web"])) == "motd"


# -- info.xml --------------------------------------------------------------------

INFO = """\
<FileInfo>
  <Path name="/etc/bcfg2-web.conf">
    <Info owner="root" group="apache" mode="0640"/>
  </Path>
  <Path name="/etc/bcfg2-web.conf" negate="true">
    <Client name="special.example.com">
      <Info owner="special" mode="0400"/>
    </Client>
    <Group name="bcfg2-server">
      <Info owner="bcfg2" group="bcfg2" mode="0600">
        <ACL type="access" scope="user" user="backup" perms="r"/>
      </Info>
    </Group>
    <Group name="bcfg2-server" negate="true">
      <Info owner="root" group="root" mode="0644"/>
    </Group>
  </Path>
</FileInfo>
"""


def bound(info: InfoXML, name: str, client: ClientMetadata,
          realname: str | None = None) -> lxml.etree._Element:
    entry = lxml.etree.Element("Path", name=name)
    if realname is not None:
        entry.set("realname", realname)
    assert info.BindEntry(entry, client)
    return entry


def test_infoxml_per_path_group_and_client(tmp_path: Path) -> None:
    info = load(InfoXML, write(tmp_path / "info.xml", INFO))
    web = bound(info, "/etc/bcfg2-web.conf", meta("x", ["bcfg2-server"]))
    assert (web.get("owner"), web.get("group"), web.get("mode")) == ("root", "apache", "0640")
    assert len(web) == 0

    server = bound(info, "/etc/bcfg2.conf", meta("x", ["bcfg2-server"]))
    assert (server.get("owner"), server.get("group"), server.get("mode")) == \
        ("bcfg2", "bcfg2", "0600")
    assert [(acl.tag, acl.get("user"), acl.get("perms")) for acl in server] == \
        [("ACL", "backup", "r")]

    other = bound(info, "/etc/bcfg2.conf", meta("x", []))
    assert (other.get("owner"), other.get("mode")) == ("root", "0644")
    assert len(other) == 0


def test_infoxml_first_matching_info_wins(tmp_path: Path) -> None:
    info = load(InfoXML, write(tmp_path / "info.xml", INFO))
    # the Client block comes first, so it wins over the group's Info
    entry = bound(info, "/etc/bcfg2.conf", meta("special.example.com", ["bcfg2-server"]))
    assert (entry.get("owner"), entry.get("mode")) == ("special", "0400")
    assert entry.get("group") is None
    assert len(entry) == 0


def test_infoxml_path_matches_the_real_name_of_an_altsrc_entry(tmp_path: Path) -> None:
    info = load(InfoXML, write(tmp_path / "info.xml", INFO))
    entry = bound(info, "/etc/template.conf", meta("x", []), realname="/etc/bcfg2-web.conf")
    assert (entry.get("group"), entry.get("mode")) == ("apache", "0640")


def test_infoxml_nothing_matches(tmp_path: Path) -> None:
    info = load(InfoXML, write(tmp_path / "info.xml", """\
        <FileInfo><Group name="web"><Info mode="0600"/></Group></FileInfo>"""))
    entry = lxml.etree.Element("Path", name="/etc/x", mode="0644")
    assert not info.BindEntry(entry, meta("x", ["db"]))
    assert entry.get("mode") == "0644"

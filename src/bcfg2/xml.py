"""XML parsing and writing shared by the whole server.

Two kinds of XML reach the server: repository files, written by admins and
trusted (XInclude allowed, local files only), and data from the network
(probe data, statistics), which is untrusted: no entities, no DTD, no
network access, bounded size, a bounded number of attributes per element
(libxml2 holds all of one start tag's attributes at once), and for large
documents an incremental parse (``iterparse_untrusted``) whose caller keeps
only what it needs.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import tempfile
from collections.abc import Iterable, Iterator

import lxml.etree

from bcfg2.errors import RepositoryError, UntrustedInputError
from bcfg2.untrusted import escaped

XI_NAMESPACE = "http://www.w3.org/2001/XInclude"
XI_INCLUDE = f"{{{XI_NAMESPACE}}}include"
XI_FALLBACK = f"{{{XI_NAMESPACE}}}fallback"


#: the most attributes one element of untrusted XML may have
MAX_ATTRIBUTES = 256
#: characters of untrusted text handed to the incremental parser at a time
FEED_CHUNK = 1 << 16
#: the largest untrusted document ``iterparse_untrusted`` parses whole (characters)
WHOLE_PARSE = 256 * 1024

_UNTRUSTED = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}


def untrusted_parser() -> lxml.etree.XMLParser:
    """A parser for data from clients: nothing outside the bytes is read."""
    return lxml.etree.XMLParser(**_UNTRUSTED)


@functools.lru_cache(maxsize=8)
def _attribute_flood(limit: int, binary: bool) -> re.Pattern:
    """A start tag with more than ``limit`` attributes.

    A literal ``<`` starts markup everywhere but in comments and CDATA, so a
    match is a start tag (or, refused all the same, one quoted in a comment);
    no repetition in the pattern is ambiguous, so it runs in linear time.
    """
    attribute = r"""\s+[^\s=<>]+\s*=\s*(?:"[^"<]*"|'[^'<]*')"""
    pattern = rf"<[^\s<>/!?=]+(?:{attribute}){{{limit + 1}}}"
    return re.compile(pattern.encode() if binary else pattern)


def _check_untrusted(data: str | bytes, what: str, max_attributes: int) -> None:
    """Refuse what the parser would hold in memory unbounded before any check."""
    if _attribute_flood(max_attributes, isinstance(data, bytes)).search(data):
        raise _flood(what, max_attributes)


def _flood(what: str, max_attributes: int) -> UntrustedInputError:
    return UntrustedInputError(f"{what} with an element of more than {max_attributes} "
                               "attributes is refused")


def _refuse_dtd(tree: lxml.etree._ElementTree, what: str) -> None:
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise UntrustedInputError(f"{what} with a DTD is refused")


def parse_untrusted(data: str | bytes, what: str = "XML",
                    max_attributes: int = MAX_ATTRIBUTES) -> lxml.etree._Element:
    """Parse XML received from the network; refuse DTDs, entities and attribute floods."""
    _check_untrusted(data, what, max_attributes)
    return _parse_whole(data, what)


def _parse_whole(data: str | bytes, what: str) -> lxml.etree._Element:
    """Parse untrusted XML whole (its attributes checked before, or bounded by its size)."""
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        root = lxml.etree.fromstring(raw, parser=untrusted_parser())
    except lxml.etree.XMLSyntaxError as err:
        raise UntrustedInputError(f"malformed {what}: {escaped(str(err), 200)}") from None
    except UnicodeEncodeError:
        raise UntrustedInputError(f"{what} is not valid Unicode") from None
    if root is None:
        raise UntrustedInputError(f"empty {what}")
    _refuse_dtd(root.getroottree(), what)
    return root


def iterparse_untrusted(data: str | bytes, what: str = "XML",
                        max_attributes: int = MAX_ATTRIBUTES
                        ) -> Iterator[tuple[str, lxml.etree._Element]]:
    """The ``start`` and ``end`` events of network XML, parsed a chunk at a time.

    The refusals of ``parse_untrusted`` apply (the DTD check before the
    first event). The parser builds the tree as it goes: the caller keeps
    memory bounded by clearing each element it is done with and deleting
    its earlier siblings (never an element that is still open). A document
    of up to ``WHOLE_PARSE`` characters (nearly every agent's statistics)
    is parsed whole and then walked, the same events at a third of the cost:
    its tree takes a few megabytes at most, and what libxml2 holds of one
    start tag is bounded by the size, so its attributes are counted as it is
    walked rather than scanned for first.
    """
    if len(data) <= WHOLE_PARSE:
        for event, element in lxml.etree.iterwalk(_parse_whole(data, what),
                                                  events=("start", "end")):
            if event == "start" and len(element.attrib) > max_attributes:
                raise _flood(what, max_attributes)
            yield event, element
        return
    _check_untrusted(data, what, max_attributes)
    parser = lxml.etree.XMLPullParser(events=("start", "end"), **_UNTRUSTED)

    def fed() -> Iterator[None]:
        """Hand the parser one chunk at a time (the end after the last)."""
        for offset in range(0, len(data), FEED_CHUNK):
            piece = data[offset:offset + FEED_CHUNK]
            parser.feed(piece.encode("utf-8") if isinstance(piece, str) else piece)
            yield
        parser.close()
        yield

    checked = False
    try:
        for _ in fed():
            events = parser.read_events()
            if not checked:
                for first in events:
                    _refuse_dtd(first[1].getroottree(), what)
                    checked = True
                    yield first
                    break
            yield from events
    except lxml.etree.XMLSyntaxError as err:
        raise UntrustedInputError(f"malformed {what}: {escaped(str(err), 200)}") from None
    except UnicodeEncodeError:
        raise UntrustedInputError(f"{what} is not valid Unicode") from None


def repository_parser() -> lxml.etree.XMLParser:
    """A parser for repository files: comments dropped, no network access."""
    return lxml.etree.XMLParser(
        remove_blank_text=True, remove_comments=True, no_network=True, huge_tree=True
    )


def _expand_wildcard_includes(root: lxml.etree._Element, path: str) -> None:
    """Turn ``<xi:include href="dir/*.xml"/>`` into one include per match.

    A pattern that matches nothing (but the file itself) is an error naming
    the pattern, unless the include has an ``<xi:fallback>``, which then
    applies.
    """
    basedir = os.path.dirname(path)
    for inc in list(root.iter(XI_INCLUDE)):
        href = inc.get("href", "")
        if not glob.has_magic(href):
            continue
        # a pattern never includes the file itself (as upstream Bcfg2)
        matches = [match for match in sorted(glob.glob(os.path.join(basedir, href)))
                   if os.path.abspath(match) != os.path.abspath(path)]
        parent = inc.getparent()
        pos = parent.index(inc)
        for offset, match in enumerate(matches):
            new = lxml.etree.Element(XI_INCLUDE, href=os.path.relpath(match, basedir))
            for key, val in inc.attrib.items():
                if key != "href":
                    new.set(key, val)
            parent.insert(pos + offset, new)
        if matches:
            parent.remove(inc)
        elif inc.find(XI_FALLBACK) is None:
            raise RepositoryError(
                f"{path}:{inc.sourceline}: XInclude failed: no file matches {href}")
        else:
            # like a missing file: the fallback applies
            inc.set("href", os.path.join(basedir, ".bcfg2-no-match-" + os.path.basename(href)))


def _xinclude_error(path: str, err: lxml.etree.XIncludeError) -> RepositoryError:
    """The first error of a failed XInclude, as ``file:line: reason``.

    A syntax error in an included file is reported in that file, not in the
    file that includes it.
    """
    for entry in err.error_log:
        if entry.level >= lxml.etree.ErrorLevels.ERROR:
            where = entry.filename if entry.filename and entry.filename != "<string>" else path
            origin = "" if where == path else f" (included from {path})"
            return RepositoryError(
                f"{where}:{entry.line}: XInclude failed: {entry.message}{origin}")
    return RepositoryError(f"{path}: XInclude failed: {err}")


def included_files(root: lxml.etree._Element, basedir: str) -> list[str]:
    """Absolute paths of the files a document includes (before inclusion)."""
    paths = []
    for inc in root.iter(XI_INCLUDE):
        href = inc.get("href", "")
        if glob.has_magic(href):
            paths.extend(sorted(glob.glob(os.path.join(basedir, href))))
        elif href:
            paths.append(os.path.normpath(os.path.join(basedir, href)))
    return paths


def nested_included_files(paths: list[str]) -> list[str]:
    """``paths`` and, recursively, every file they include in turn."""
    seen: list[str] = []
    pending = list(paths)
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.append(path)
        try:
            root = lxml.etree.parse(path, repository_parser()).getroot()
        except (OSError, lxml.etree.XMLSyntaxError):
            continue  # missing or broken: watched all the same, reported when included
        pending.extend(included_files(root, os.path.dirname(path)))
    return seen


def parse_repository_file(path: str, data: bytes | None = None) -> tuple[lxml.etree._Element, list[str]]:
    """Parse a repository XML file with XInclude (wildcards too).

    Returns the root element and every file it includes (nested too), so the caller
    can watch them. Raises RepositoryError naming the path, line and reason.
    """
    if data is None:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as err:
            raise RepositoryError(f"{path}: cannot read: {err.strerror}") from None
    try:
        root = lxml.etree.fromstring(data, parser=repository_parser(), base_url=path)
    except lxml.etree.XMLSyntaxError as err:
        line = err.lineno if err.lineno else "?"
        raise RepositoryError(f"{path}:{line}: {err.msg}") from None
    if root is None:
        raise RepositoryError(f"{path}: empty document")
    includes: list[str] = []
    if any(True for _ in root.iter(XI_INCLUDE)):
        basedir = os.path.dirname(path)
        _expand_wildcard_includes(root, path)
        includes = nested_included_files(included_files(root, basedir))
        tree = root.getroottree()
        try:
            tree.xinclude()
        except lxml.etree.XIncludeError as err:
            raise _xinclude_error(path, err) from None
        root = tree.getroot()
    return root, includes


def atomic_write(path: str, data: bytes | str, mode: int = 0o644,
                 replace: bool = True) -> bool:
    """Write a file so that readers see either the old or the new content.

    The data goes to a temporary file in the same directory (named
    ``.#<name>.XXXX``, which the file monitors and entry sets ignore, as
    editors' lock files), is flushed to disk, and is renamed over the target.
    An interruption at any point leaves the old file intact. With
    ``replace=False`` the file is only created: an existing one is left as
    it is and False returned, and of two writers racing to create it one
    wins. True when the file was written.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".#" + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def tostring(element: lxml.etree._Element, pretty: bool = False) -> str:
    """Serialise an element to a str without an XML declaration."""
    return lxml.etree.tostring(element, encoding="unicode", pretty_print=pretty)


def text_children(elements: Iterable[lxml.etree._Element]) -> list[lxml.etree._Element]:
    """Only real elements: comments and processing instructions removed."""
    return [el for el in elements if isinstance(el.tag, str)]

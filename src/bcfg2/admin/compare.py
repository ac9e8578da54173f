"""Compare two built configurations (files or directories of them) entry by entry."""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import os
import sys
from dataclasses import dataclass, field

import lxml.etree

from bcfg2.options import Setup
from bcfg2.tools import ToolError

RED, GREEN, CYAN, BOLD, RESET = "\033[31m", "\033[32m", "\033[36m", "\033[1m", "\033[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """OLD NEW, -d/--diff-lines, -q/--quiet, -c/--color."""
    parser.add_argument("old", help="old configuration file (or directory of them)")
    parser.add_argument("new", help="new configuration file (or directory of them)")
    parser.add_argument("-d", "--diff-lines", dest="diff_lines", type=int, default=None,
                        metavar="N", help="show at most N lines of each content diff")
    parser.add_argument("-q", "--quiet", dest="quiet", action="store_true",
                        help="only say which entries differ, not how")
    parser.add_argument("-c", "--color", dest="color", action="store_true",
                        help="colour the output even when it is not a terminal")


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Exit 0 when identical, 1 when different; errors are ToolError (status 2)."""
    if args.diff_lines is not None and args.diff_lines < 0:
        raise ToolError("--diff-lines must not be negative", status=2)
    out = Output(color=args.color or sys.stdout.isatty(), quiet=args.quiet,
                 diff_lines=args.diff_lines)
    for path in (args.old, args.new):
        if not os.path.exists(path):
            raise ToolError(f"{path}: no such file or directory", status=2)
    if os.path.isdir(args.old) and os.path.isdir(args.new):
        differ = compare_dirs(args.old, args.new, out)
    elif os.path.isdir(args.old) or os.path.isdir(args.new):
        raise ToolError("compare two files or two directories, not one of each", status=2)
    else:
        differ = compare_files(args.old, args.new, out)
    for line in out.lines:
        print(line)
    return 1 if differ else 0


@dataclass
class Output:
    """The report being written, with optional colours."""

    color: bool = False
    quiet: bool = False
    diff_lines: int | None = None
    lines: list[str] = field(default_factory=list)

    def paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{RESET}" if self.color else text

    def add(self, text: str, colour: str = "") -> None:
        self.lines.append(self.paint(text, colour) if colour else text)


def load(path: str) -> lxml.etree._Element:
    """Parse a configuration document; a bad file is a one-line ToolError."""
    parser = lxml.etree.XMLParser(remove_blank_text=True, remove_comments=True,
                                  resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = lxml.etree.parse(path, parser).getroot()
    except lxml.etree.XMLSyntaxError as err:
        raise ToolError(f"{path}:{err.lineno}: {err.msg}", status=2) from None
    except OSError as err:
        raise ToolError(f"{path}: cannot read: {err}", status=2) from None
    if root is None:
        raise ToolError(f"{path}: empty document", status=2)
    return root


def entries(root: lxml.etree._Element) -> dict[tuple[str, str], lxml.etree._Element]:
    """Structures (Bundle, Independent...) and their entries, keyed by (tag, name).

    A structure is keyed as ``("Bundle", name)``; an entry as ``(tag, name)``
    wherever it is bound. The first of two same-named entries wins.
    """
    out: dict[tuple[str, str], lxml.etree._Element] = {}
    for structure in root:
        if not isinstance(structure.tag, str):
            continue
        out.setdefault((structure.tag, structure.get("name", "")), structure)
        for entry in structure:
            if isinstance(entry.tag, str) and entry.get("name") is not None:
                out.setdefault((entry.tag, entry.get("name")), entry)
    return out


def _content(entry: lxml.etree._Element) -> tuple[str | None, bytes | None]:
    """The text of an entry (base64 decoded), or its raw bytes when it is not text."""
    text = entry.text
    if text is None:
        return None, None
    if entry.get("encoding") == "base64":
        try:
            data = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            return text, None
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return None, data
    return text, None


def _children(entry: lxml.etree._Element) -> list[str]:
    return [lxml.etree.tostring(child, encoding="unicode", with_tail=False)
            for child in entry if isinstance(child.tag, str)]


def compare_entry(key: tuple[str, str], old: lxml.etree._Element, new: lxml.etree._Element,
                  out: Output) -> bool:
    """Report how one entry differs; True if it does."""
    label = f"{key[0]}:{key[1]}"
    details: list[str] = []
    old_parent, new_parent = _structure(old), _structure(new)
    if old_parent != new_parent:
        details.append(f"moved from {old_parent} to {new_parent}")
    old_attrs, new_attrs = dict(old.attrib), dict(new.attrib)
    if old_attrs != new_attrs:
        changes = []
        for name in sorted(set(old_attrs) | set(new_attrs)):
            before, after = old_attrs.get(name), new_attrs.get(name)
            if before != after:
                changes.append(f"{name}: {_show(before)} -> {_show(after)}")
        details.append(out.paint("attributes differ: ", BOLD) + "; ".join(changes))
    diff: list[str] = []
    if key[0] not in ("Bundle", "Independent"):
        (old_text, old_bin), (new_text, new_bin) = _content(old), _content(new)
        if (old_text, old_bin) != (new_text, new_bin):
            if old_bin is not None or new_bin is not None:
                details.append(f"binary content differs ({_size(old_text, old_bin)} -> "
                               f"{_size(new_text, new_bin)} bytes)")
            else:
                details.append("content differs")
                diff = _diff(old_text or "", new_text or "", out)
        if _children(old) != _children(new):
            details.append("child elements differ")
            diff += _diff("\n".join(_children(old)), "\n".join(_children(new)), out)
    if not details:
        return False
    if out.quiet:
        out.add(f"  {label} differs", CYAN)
    else:
        out.add(f"  {label}:", CYAN)
        out.lines.extend(f"    {detail}" for detail in details)
        out.lines.extend(f"      {line}" for line in diff)
    return True


def _structure(entry: lxml.etree._Element) -> str:
    """The structure an entry is bound in, as ``Tag:name`` ("" for a structure)."""
    parent = entry.getparent()
    if parent is None or parent.getparent() is None:
        return ""
    return f"{parent.tag}:{parent.get('name', '')}"


def _show(value: str | None) -> str:
    return "(none)" if value is None else repr(value)


def _size(text: str | None, data: bytes | None) -> int:
    if data is not None:
        return len(data)
    return len((text or "").encode("utf-8"))


def _diff(old: str, new: str, out: Output) -> list[str]:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), "old", "new",
                                      lineterm=""))
    if out.diff_lines is not None and len(lines) > out.diff_lines:
        hidden = len(lines) - out.diff_lines
        lines = lines[:out.diff_lines] + [f"... ({hidden} more lines)"]
    painted = []
    for line in lines:
        if line.startswith(("+++", "---")):
            painted.append(out.paint(line, BOLD))
        elif line.startswith("+"):
            painted.append(out.paint(line, GREEN))
        elif line.startswith("-"):
            painted.append(out.paint(line, RED))
        else:
            painted.append(line)
    return painted


def compare_files(old_path: str, new_path: str, out: Output) -> bool:
    """Compare two configuration documents; True if they differ."""
    old, new = entries(load(old_path)), entries(load(new_path))
    start = len(out.lines)
    out.add(f"{old_path} -> {new_path}:", BOLD)
    differ = False
    for key in sorted(set(old) | set(new)):
        label = f"{key[0]}:{key[1]}"
        if key not in new:
            out.add(f"  {label} only in old", RED)
            differ = True
        elif key not in old:
            out.add(f"  {label} only in new", GREEN)
            differ = True
        elif compare_entry(key, old[key], new[key], out):
            differ = True
    if not differ:
        del out.lines[start:]
    return differ


def compare_dirs(old_dir: str, new_dir: str, out: Output) -> bool:
    """Compare the files of two directories matched by name; True if any differ."""
    def files(directory: str) -> set[str]:
        return {name for name in os.listdir(directory)
                if os.path.isfile(os.path.join(directory, name))}

    old, new = files(old_dir), files(new_dir)
    differ = False
    for name in sorted(old | new):
        if name not in new:
            out.add(f"{name} only in {old_dir}", RED)
            differ = True
        elif name not in old:
            out.add(f"{name} only in {new_dir}", GREEN)
            differ = True
        elif compare_files(os.path.join(old_dir, name), os.path.join(new_dir, name), out):
            differ = True
    return differ

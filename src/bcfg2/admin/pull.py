"""Bring a client's current version of a file, from its last run, into Cfg."""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import os
import posixpath
import re
import sys

from bcfg2.admin.reports import latest_run
from bcfg2.identity import valid_client_name
from bcfg2.options import Setup
from bcfg2.reportdb import CONTENT_ATTRS, Entry
from bcfg2.tools import ToolError
from bcfg2.xml import atomic_write

#: a group name fit for a Cfg file name (matched whole: no trailing newline)
SAFE_NAME = re.compile(r"[A-Za-z0-9_.@+-]+")
PERMISSIONS = ("owner", "group", "mode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which entry, and which Cfg file gets it (host-specific by default)."""
    parser.add_argument("client", help="the client whose copy to take")
    parser.add_argument("type", metavar="entry-type", help="the entry's tag: Path")
    parser.add_argument("name", metavar="entry-name", help="the entry's name, e.g. /etc/motd")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--host", action="store_true",
                       help="write the host-specific file <name>.H_<client> (the default)")
    where.add_argument("--group", metavar="GROUP",
                       help="write the group-specific file <name>.G<priority>_<GROUP>")
    where.add_argument("--all", action="store_true",
                       help="write the file every client gets")
    parser.add_argument("--priority", type=int, default=50,
                        help="with --group: the file's priority (default 50)")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="print what would be written instead of writing it")


def current_content(entry: Entry) -> bytes:
    """The client's copy of the file, as its agent reported it.

    Agents send binary files whole (``current_bfile``) and text files as an
    ndiff from their copy to the wanted one (``current_bdiff``), both in
    base64; nothing for sensitive files. Content the server cut at
    ``[reporting] max_entry_content`` cannot be restored.
    """
    if any(attr in entry.truncated for attr in CONTENT_ATTRS):
        raise ToolError(f"{entry.tag}:{entry.name}: the reported content was cut at "
                        "[reporting] max_entry_content when it was stored; cannot restore "
                        "the file")
    try:
        if "current_bfile" in entry.attrs:
            return base64.b64decode(entry.attrs["current_bfile"], validate=True)
        if "current_bdiff" in entry.attrs:
            delta = base64.b64decode(entry.attrs["current_bdiff"], validate=True)
            lines = delta.decode("utf-8").split("\n")
            if not all(line[:2] in ("  ", "- ", "+ ", "? ") for line in lines if line):
                raise ToolError(f"{entry.tag}:{entry.name}: the reported difference is not "
                                "in the agent's diff format; cannot restore the file")
            return "\n".join(difflib.restore(lines, 1)).encode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ToolError(f"{entry.tag}:{entry.name}: the reported content is garbled: "
                        f"{err}") from None
    raise ToolError(f"{entry.tag}:{entry.name}: the client did not report its content "
                    "(a sensitive file, or only its permissions differ)")


def target(setup: Setup, args: argparse.Namespace) -> str:
    """The Cfg file the content goes to."""
    name = args.name
    if not name.startswith("/") or posixpath.normpath(name) != name or name == "/" \
            or "\0" in name:
        raise ToolError(f"{name!r} is not a normalised absolute path")
    directory = os.path.join(setup.server.repository, "Cfg", name.lstrip("/"))
    base = posixpath.basename(name)
    if args.all:
        return os.path.join(directory, base)
    if args.group:
        if not SAFE_NAME.fullmatch(args.group):
            raise ToolError(f"{args.group!r} is not a valid group name")
        if not 0 <= args.priority <= 99:
            raise ToolError("--priority must be between 0 and 99")
        return os.path.join(directory, f"{base}.G{args.priority:02d}_{args.group}")
    if not valid_client_name(args.client):
        raise ToolError(f"{args.client!r} is not a valid client name")
    return os.path.join(directory, f"{base}.H_{args.client}")


def run(setup: Setup, args: argparse.Namespace) -> int:
    if args.type != "Path":
        raise ToolError(f"only Path entries can be pulled into Cfg, not {args.type}")
    if not os.path.isdir(setup.server.repository):
        raise ToolError(f"repository {setup.server.repository} does not exist")
    path = target(setup, args)
    latest = latest_run(setup, args.client)
    found = [e for e in latest.entries if e.kind in ("Bad", "Modified")
             and e.tag == args.type and e.name == args.name]
    if not found:
        raise ToolError(f"{args.type}:{args.name} is not among the bad or modified entries "
                        f"of {args.client}'s last run")
    entry = found[0]
    content = current_content(entry)
    relative = os.path.relpath(path, setup.server.repository)
    if args.dry_run:
        print(f"would write {len(content)} bytes to {relative}:", file=sys.stderr)
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
    else:
        atomic_write(path, content)
        print(f"wrote {len(content)} bytes to {relative}")
    differing = [f"{attr} {entry.attrs[f'current_{attr}']!r} (repository: "
                 f"{entry.attrs.get(attr, 'unset')!r})" for attr in PERMISSIONS
                 if f"current_{attr}" in entry.attrs
                 and entry.attrs[f"current_{attr}"] != entry.attrs.get(attr)]
    if differing:
        print(f"note: on {args.client} the file also has {', '.join(differing)}; "
              "info.xml decides those", file=sys.stderr)
    return 0

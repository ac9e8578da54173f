"""Write the extra entries of a client's last run as a bundle."""

from __future__ import annotations

import argparse
import os
import sys

import lxml.etree

from bcfg2.admin.reports import latest_run
from bcfg2.options import Setup
from bcfg2.tools import ToolError
from bcfg2.xml import atomic_write, tostring

#: the attributes that say which entry an extra one is (the rest describes the host's copy)
IDENTITY = ("name", "type")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The client, where to write, and the groups to nest the entries in."""
    parser.add_argument("client", help="the client whose extra entries to collect")
    parser.add_argument("-f", "--outfile", metavar="FILE",
                        help="write the bundle to FILE (default: standard output)")
    parser.add_argument("-g", "--groups", default="", metavar="G1,G2",
                        help="nest the entries in these groups, outermost first")
    parser.add_argument("--bundle", metavar="NAME",
                        help="the bundle's name (default: <client>-extra)")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(setup: Setup, args: argparse.Namespace) -> int:
    latest = latest_run(setup, args.client)
    extra = latest.of_kind("Extra")
    if not extra:
        print(f"{args.client} has no extra entries in its last run", file=sys.stderr)
        return 0
    bundle = lxml.etree.Element("Bundle", name=args.bundle or f"{args.client}-extra")
    parent = bundle
    for group in (g.strip() for g in args.groups.split(",")):
        if group:
            parent = lxml.etree.SubElement(parent, "Group", name=group)
    seen = set()
    for entry in sorted(extra, key=lambda e: (e.tag, e.name)):
        identity = tuple((attr, entry.attrs[attr]) for attr in IDENTITY if attr in entry.attrs)
        if (entry.tag, identity) in seen:
            continue
        seen.add((entry.tag, identity))
        lxml.etree.SubElement(parent, entry.tag, dict(identity))
    text = tostring(bundle, pretty=True)
    if args.outfile:
        if os.path.exists(args.outfile) and not args.force:
            raise ToolError(f"{args.outfile} exists (use --force to overwrite)")
        atomic_write(args.outfile, text)
        print(f"wrote {len(seen)} entries to {args.outfile}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

"""Draw groups, bundles and clients as a Graphviz diagram."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Any

from bcfg2 import tools
from bcfg2.options import Setup
from bcfg2.tools import ToolError

#: fill colours of the node kinds (also shown by the key)
COLOURS = {"profile": "lightblue", "group": "white", "bundle": "palegreen",
           "client": "lightyellow"}
SOURCE_FORMATS = ("dot", "gv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """-H, -b, -k, -c NAME, -o FILE, --format FMT."""
    parser.add_argument("-H", "--includehosts", dest="viz_hosts", action="store_true",
                        help="include the clients")
    parser.add_argument("-b", "--includebundles", dest="viz_bundles", action="store_true",
                        help="include the bundles")
    parser.add_argument("-k", "--includekey", dest="viz_key", action="store_true",
                        help="add a key of shapes and colours")
    parser.add_argument("-c", "--only-client", dest="viz_client", metavar="NAME",
                        help="only the groups and bundles of this client")
    parser.add_argument("-o", "--outfile", dest="viz_outfile", metavar="FILE",
                        help="write to FILE, in the format of its extension (.dot for the "
                             "DOT source; others need graphviz's dot program)")
    parser.add_argument("--format", dest="viz_format", metavar="FMT",
                        help="output format: dot (the source, the default without -o) or "
                             "any format of graphviz's dot program (png, svg, pdf...)")


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Build the DOT source from the repository's metadata; render it if asked."""
    fmt = output_format(args.viz_outfile, args.viz_format)
    dot = None
    if fmt not in SOURCE_FORMATS:
        dot = shutil.which("dot")
        if dot is None:
            raise ToolError(f"{fmt} output needs graphviz (the dot program is not installed); "
                            f"--format dot writes the DOT source without it")
    with tools.local_core(setup) as core:
        source = dot_source(core, hosts=args.viz_hosts, bundles=args.viz_bundles,
                            key=args.viz_key, only=args.viz_client)
    if dot is None:
        if args.viz_outfile:
            with open(args.viz_outfile, "w", encoding="utf-8") as fh:
                fh.write(source)
        else:
            sys.stdout.write(source)
        return 0
    command = [dot, f"-T{fmt}"] + (["-o", args.viz_outfile] if args.viz_outfile else [])
    sys.stdout.flush()
    done = subprocess.run(command, input=source.encode("utf-8"),
                          stdout=None if args.viz_outfile else sys.stdout.buffer,
                          stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise ToolError(f"dot -T{fmt}: {last}")
    return 0


def output_format(outfile: str | None, fmt: str | None) -> str:
    """--format, else the extension of -o, else dot."""
    if fmt:
        return fmt.lower()
    if outfile:
        ext = os.path.splitext(outfile)[1].lstrip(".").lower()
        if not ext:
            raise ToolError(f"{outfile} has no extension: give --format")
        return ext
    return "dot"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{key}={_quote(value)}" for key, value in attrs.items()) + "]"


class Graph:
    """Nodes and edges in insertion order, written as DOT."""

    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}
        self.edges: dict[tuple[str, str], str] = {}

    def node(self, kind: str, name: str, profile: bool = False) -> str:
        ident = f"{kind}:{name}"
        if ident not in self.nodes:
            colour = COLOURS["profile" if profile else kind]
            shape = {"group": "ellipse", "bundle": "box", "client": "box"}[kind]
            style = "rounded,filled" if kind == "client" else "filled"
            self.nodes[ident] = _attrs(label=name, shape=shape, style=style,
                                       fillcolor=colour)
        return ident

    def edge(self, source: str, target: str, **attrs: str) -> None:
        self.edges.setdefault((source, target), _attrs(**attrs) if attrs else "")


def dot_source(core: Any, hosts: bool = False, bundles: bool = False, key: bool = False,
               only: str | None = None) -> str:
    """The DOT source of the metadata served by ``core``."""
    plugin = core.metadata
    if plugin is None:
        raise ToolError("the Metadata plugin is not loaded (see --plugins)")
    model = getattr(plugin, "groups_model", None)
    if model is None:
        raise ToolError(f"{plugin.groups_file.name} cannot be read (see the error above)")
    clients_file = getattr(plugin, "clients_file", None)
    if clients_file is not None and clients_file.records is None \
            and os.path.exists(clients_file.name):
        raise ToolError(f"{clients_file.name} cannot be read (see the error above)")
    records = plugin.clients_model.clients
    keep_groups: set[str] | None = None
    keep_bundles: set[str] | None = None
    keep_clients = set(records)
    graph = Graph()
    if only is not None:
        name = plugin.resolve_name(only)
        if name is None:
            raise ToolError(f"unknown client {only!r}")
        meta = core.build_metadata(name)
        keep_groups, keep_bundles, keep_clients = set(meta.groups), set(meta.bundles), {name}
        client = graph.node("client", name)
        for group in sorted(meta.groups):
            declared = model.groups.get(group)
            graph.node("group", group, profile=bool(declared and declared.profile))
        graph.edge(client, f"group:{meta.profile}")
        for group in sorted(getattr(meta, "additional_groups", ()) or ()):
            graph.edge(client, f"group:{group}", style="dotted")
        if bundles:
            for bundle in sorted(meta.bundles):
                graph.node("bundle", bundle)
    else:
        for group in sorted(model.groups.values(), key=lambda g: g.name):
            graph.node("group", group.name, profile=group.profile)

    def wanted_group(name: str) -> bool:
        return keep_groups is None or name in keep_groups

    def source(conds: tuple[tuple[str, str, bool], ...]) -> tuple[str, dict[str, str]] | None:
        """The node an edge starts from (the innermost condition) and its style."""
        if not conds:
            return None
        tag, name, negate = conds[-1]
        if tag == "Client":
            if not (hosts or only is not None) or name not in keep_clients:
                return None
            ident = graph.node("client", name)
        else:
            if not wanted_group(name):
                return None
            ident = f"group:{name}"
        return ident, ({"style": "dashed"} if negate else {})

    def label(conds: tuple[tuple[str, str, bool], ...]) -> dict[str, str]:
        if len(conds) < 2:
            return {}
        return {"label": "if " + " and ".join(("not " if neg else "") + name
                                              for _tag, name, neg in conds[:-1])}

    for conds, name in model.membership:
        start = source(conds)
        if start is not None and wanted_group(name):
            graph.edge(start[0], graph.node("group", name), **start[1], **label(conds))
    for conds, name in model.negated:
        start = source(conds)
        if start is not None and wanted_group(name):
            graph.edge(start[0], graph.node("group", name), style="dashed", color="red",
                       arrowhead="tee", **label(conds))
    if bundles:
        for conds, name in model.bundles:
            start = source(conds)
            if start is not None and (keep_bundles is None or name in keep_bundles):
                graph.edge(start[0], graph.node("bundle", name), **start[1], **label(conds))
    if hosts and only is None:
        for name in sorted(records):
            graph.edge(graph.node("client", name), graph.node("group", records[name].profile))
    lines = ["digraph groups {", '  graph [rankdir="LR", fontsize="10"];',
             '  node [fontsize="10"];']
    lines += [f"  {_quote(ident)} {attrs};" for ident, attrs in graph.nodes.items()]
    lines += [f"  {_quote(a)} -> {_quote(b)}{' ' + attrs if attrs else ''};"
              for (a, b), attrs in graph.edges.items()]
    if key:
        lines += _key(hosts, bundles)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _key(hosts: bool, bundles: bool) -> list[str]:
    entries = [("profile group", "ellipse", "filled", COLOURS["profile"]),
               ("group", "ellipse", "filled", COLOURS["group"])]
    if bundles:
        entries.append(("bundle", "box", "filled", COLOURS["bundle"]))
    if hosts:
        entries.append(("client", "box", "rounded,filled", COLOURS["client"]))
    lines = ["  subgraph cluster_key {", '    label="Key";', '    style="solid";']
    for text, shape, style, colour in entries:
        lines.append(f"    {_quote('key:' + text)} "
                     f"{_attrs(label=text, shape=shape, style=style, fillcolor=colour)};")
    lines.append(f"    {_quote('key:member')} {_attrs(label='member', shape='plaintext')};")
    lines.append(f"    {_quote('key:not member')} "
                 f"{_attrs(label='not a member', shape='plaintext')};")
    lines.append(f"    {_quote('key:member')} -> {_quote('key:not member')} "
                 f"{_attrs(style='dashed', color='red', arrowhead='tee')};")
    lines.append("  }")
    return lines

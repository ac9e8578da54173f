"""Print the server's execution-time statistics."""

from __future__ import annotations

import argparse
from typing import Any

from bcfg2.admin.xcmd import call
from bcfg2.options import Setup
from bcfg2.tools import ToolError

HEADER = ("Name", "Min (ms)", "Max (ms)", "Mean (ms)", "Count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments: the server is -S, the identity -u/-x."""


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Call get_statistics and print a table sorted by name."""
    data = call(setup, lambda server: server.get_statistics())
    if not isinstance(data, dict):
        raise ToolError(f"get_statistics returned {type(data).__name__}, not a table")
    print(format_table(data))
    return 0


def format_table(data: dict[str, Any]) -> str:
    """name -> (min, max, mean, count) in seconds, as aligned columns in milliseconds."""
    rows = [HEADER]
    for name in sorted(data):
        low, high, mean, count = data[name]
        rows.append((name, f"{low * 1000:.3f}", f"{high * 1000:.3f}", f"{mean * 1000:.3f}",
                     str(int(count))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width)
                                             for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    if len(rows) == 1:
        lines.append("(no statistics yet)")
    return "\n".join(lines)

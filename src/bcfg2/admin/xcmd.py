"""(not written yet) the xcmd mode."""

from __future__ import annotations

import argparse

from bcfg2.options import Setup
from bcfg2.tools import ToolError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments yet."""


def run(setup: Setup, args: argparse.Namespace) -> int:
    raise ToolError("xcmd: not written yet")

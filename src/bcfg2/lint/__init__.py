"""bcfg2-lint: check a repository without starting a server (not written yet)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("bcfg2-lint: not written yet")

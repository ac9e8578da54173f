"""bcfg2-test: build every client's configuration and report failures (not written yet)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("bcfg2-test: not written yet")

"""Checks of what clients send, and log lines that stay one line whatever a client sends."""

from __future__ import annotations

import io
import logging

import pytest

from bcfg2.errors import InvalidParams
from bcfg2.logger import OneLineFormatter
from bcfg2.untrusted import VERSION, client_text, one_line


@pytest.mark.parametrize("value", ["1.4.0\n", "1.4.0\r\nx", "", "1" * 65, "1.4 0", None, 14])
def test_a_version_must_match_whole_and_be_bounded(value) -> None:
    with pytest.raises(InvalidParams):
        client_text(value, "version", VERSION, 64)


@pytest.mark.parametrize("value", ["1.4.0", "1.4.0pre2", "1.3.4", "2.0.0~rc1+deb12u1", "1" * 64])
def test_real_versions_pass(value) -> None:
    assert client_text(value, "version", VERSION, 64) == value


def test_one_line_escapes_every_control_character_and_keeps_the_rest() -> None:
    assert one_line("a\nb\r\tc\x1b[31m\x00\u2028é") == "a\\nb\\r\\tc\\x1b[31m\\x00\\u2028é"


def test_a_logged_newline_never_starts_a_line_of_its_own() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test.untrusted")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("refused %s", "GetConfig\nERROR forged line")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed for %s", "x\ny")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "WARNING refused GetConfig\\nERROR forged line"
    assert lines[1] == "ERROR failed for x\\ny"
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert not any(line.startswith("ERROR forged") for line in lines)

"""What clients send: checked by length and a whole-string pattern, escaped when shown.

Every string an agent sends that the server stores or acts on (a declared
version, a profile name, a client name) passes ``client_text`` first: too
long, not a string, or not matching its pattern as a whole (``fullmatch``:
a trailing newline is a character like any other) is an ``InvalidParams``
the caller sees as a Fault. Text from clients that reaches a log line or a
tool's output goes through ``escaped``.
"""

from __future__ import annotations

import re
from typing import Any

from bcfg2.errors import InvalidParams

#: a version as agents declare it (``1.4.0pre2``, ``1.3.4``, ``2.0.0~rc1+deb12``)
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~:-]*")
MAX_VERSION = 64
#: a group or profile name a client names (it must then exist in groups.xml)
GROUP_NAME = re.compile(r"[^\x00-\x20\x7f-\x9f]+")
MAX_GROUP_NAME = 256


#: what would break a log line or a row of output: C0 and C1 controls, Unicode line breaks
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """Text with every control character escaped (``\\n``, ``\\x1b``): one line, as data."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def escaped(text: str, limit: int = 512) -> str:
    """Text a client sent, fit for one log line: control characters escaped, length bounded."""
    out = text.encode("unicode_escape").decode("ascii")
    return out if len(out) <= limit else out[:limit] + "..."


def client_text(value: Any, what: str, pattern: re.Pattern[str], limit: int) -> str:
    """``value`` if it is a string of at most ``limit`` characters that ``pattern`` matches whole."""
    if not isinstance(value, str):
        raise InvalidParams(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidParams(f"{what} of {len(value)} characters exceeds the limit of {limit}")
    if pattern.fullmatch(value) is None:
        raise InvalidParams(f"{what} '{escaped(value, 80)}' is not valid")
    return value


__all__ = ["CONTROL", "GROUP_NAME", "MAX_GROUP_NAME", "MAX_VERSION", "VERSION", "client_text", "escaped",
           "one_line"]

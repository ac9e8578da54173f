"""Where the health endpoint listens: ``[server] health_port`` read, loopback only."""

from __future__ import annotations

import pytest

from bcfg2.errors import ConfigError
from bcfg2.health import health_address


@pytest.mark.parametrize(("value", "address"), [
    ("0", None), ("", None), ("6901", ("127.0.0.1", 6901)), ("127.0.0.2:6901", ("127.0.0.2", 6901)),
    ("[::1]:6901", ("::1", 6901)), ("127.0.0.1:0", ("127.0.0.1", 0)),
])
def test_a_port_or_a_loopback_address_and_port(value, address):
    assert health_address(value) == address


@pytest.mark.parametrize(("value", "why"), [
    ("0.0.0.0:6901", "0.0.0.0 is not a loopback address"),
    ("[::]:6901", ":: is not a loopback address"),
    ("10.0.0.1:6901", "10.0.0.1 is not a loopback address"),
    ("localhost:6901", "'localhost' is not an IP address"),
    ("70000", "'70000' is not a port number"),
    ("127.0.0.1:http", "'http' is not a port number"),
])
def test_anything_else_is_refused_saying_why(value, why):
    with pytest.raises(ConfigError, match=f"health_port: {why}"):
        health_address(value)

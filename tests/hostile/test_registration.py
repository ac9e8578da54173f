"""First contact with the global password: registrations are capped and rate-limited."""

from __future__ import annotations

import xmlrpc.client

from attack import assert_served, call_body, fault_of, raw_call
from conftest import state_clients

EXAMPLE = {"web1.example.com", "web2.example.com", "db1.example.com", "desk1.example.com"}


def register(server, count: int, prefix: str = "new") -> list[str]:
    """First contact of ``count`` new names; the names registered."""
    registered = []
    for n in range(count):
        name = f"{prefix}{n}.example.com"
        fault = fault_of(raw_call(server, call_body("DeclareVersion", "1.4.0"), user=name,
                                  password="globalpw")[1])
        if fault is None:
            registered.append(name)
        else:
            assert "refusing to register" in fault.faultString
    return registered


def test_a_flood_of_first_contacts_is_rate_limited(hostile) -> None:
    """Three hundred first contacts at once register a burst of them; the rest are refused."""
    server = hostile(metadata__registrations_per_minute=20)
    registered = register(server, 300)
    # the bucket holds 20; a few more may trickle in while the flood runs
    assert 20 <= len(registered) <= 30
    state = state_clients(server.core.setup.server.state_dir)
    assert set(registered) <= set(state) and len(set(state) - EXAMPLE) == len(registered)
    assert_served(server)


def test_the_number_of_registered_clients_is_capped(hostile) -> None:
    """Beyond max_registered, first contact is refused until an admin adds the client."""
    server = hostile(metadata__max_registered=5, metadata__registrations_per_minute=0)
    registered = register(server, 12)
    assert len(registered) == 5
    clients = set(server.admin().Metadata.list_clients())
    assert clients == EXAMPLE | set(registered)
    # a registered newcomer gets its configuration (rendered by a child process too)
    config = server.proxy(registered[0], "globalpw").GetConfig()
    assert "<Configuration" in config
    try:
        server.proxy("late.example.com", "globalpw").GetConfig()
    except xmlrpc.client.Fault as fault:
        assert "max_registered" in fault.faultString
    else:
        raise AssertionError("a sixth client was registered")
    assert_served(server)

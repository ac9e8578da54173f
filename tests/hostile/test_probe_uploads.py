"""What a client can store through its probe data: bounded, and no say in its own groups.

The attacker is web2 with its own password, uploading through RecvProbeData
as its agent would; web1 is the real agent that must be served meanwhile.
"""

from __future__ import annotations

import time

import lxml.etree
from attack import assert_served, call_body, fault_of, raw_call
from conftest import RunningServer
from connattack import WEB2

ATTACKER = "web2.example.com"


def upload(*probes: tuple[str, str]) -> bytes:
    """A RecvProbeData request body with (probe name, output) pairs."""
    root = lxml.etree.Element("ProbeData")
    for name, text in probes:
        lxml.etree.SubElement(root, "probe-data", name=name, source="Probes").text = text
    return call_body("RecvProbeData", lxml.etree.tostring(root, encoding="unicode"))


def send(server: RunningServer, body: bytes) -> None:
    """Send probe data as web2; the call must be answered with True."""
    status, reply = raw_call(server, body, *WEB2)
    assert status == 200 and fault_of(reply) is None, reply[:300]


def stored(server: RunningServer) -> tuple[dict[str, str], list[str]]:
    """What the server keeps of web2's probe data: (probe name -> output, groups)."""
    return server.core.plugins["Probes"].store.load(ATTACKER)


def groups_of(server: RunningServer) -> set[str]:
    return set(server.core.build_metadata(ATTACKER).groups)


def get_config(server: RunningServer) -> str:
    return server.proxy(*WEB2).GetConfig()


def test_70000_group_lines_are_capped_and_getconfig_stays_small(hostile) -> None:
    server = hostile(probes__allowed_groups="virtual g[0-9]+",
                     probes__max_probe_size=str(2 * 1024 * 1024),
                     probes__max_data_size=str(2 * 1024 * 1024))
    own = groups_of(server)
    send(server, upload(("virt", "kvm\ngroup:virtual\n")))
    baseline = get_config(server)  # motd.G60_virtual lists every group of the client
    lines = "".join(f"group:g{n}\n" for n in range(70_000))
    send(server, upload(("virt", "kvm\ngroup:virtual\n" + lines)))
    assert len(stored(server)[1]) == 100
    assert groups_of(server) - own == {"virtual", *(f"g{n}" for n in range(99))}
    started = time.monotonic()
    config = get_config(server)
    elapsed = time.monotonic() - started
    print(f"GetConfig with the capped groups: {len(config)} bytes "
          f"(baseline {len(baseline)}), {elapsed * 1000:.0f} ms")
    assert len(config) - len(baseline) < 99 * len("g99, ") + 200
    assert_served(server)


def test_a_probe_cannot_put_its_client_in_any_group_by_default(hostile) -> None:
    server = hostile()
    own = groups_of(server)
    assert "webserver" in own and "admins" not in own
    send(server, upload(("virt", "kvm\ngroup:admins\ngroup:dbserver\ngroup:db\n"
                                 "group:virtual\n")))
    assert groups_of(server) == own
    assert stored(server) == ({"virt": "kvm\n"}, [])
    bundles = {b.get("name") for b in lxml.etree.fromstring(get_config(server).encode())}
    assert "guest-agent" not in bundles  # the bundle of group virtual
    assert_served(server)


def test_group_names_that_are_odd_or_oversized_are_refused(hostile) -> None:
    server = hostile(probes__allowed_groups=".*")
    own = groups_of(server)
    odd = ["g" * 129, "g1\x7f", "g2 g3", "../g4", "g5;id", "<g6/>", "g7..x", ""]
    send(server, upload(("virt", "kvm\n" + "".join(f"group:{g}\n" for g in odd)
                                 + "group:fine\ngroup:g10\r\n")))
    assert groups_of(server) - own == {"fine", "g10"}
    assert_served(server)


def test_probe_names_huge_or_with_a_line_end_store_nothing(hostile) -> None:
    server = hostile()
    send(server, upload(("virt", "kvm\n")))
    # &#10; in the attribute keeps the newline (a literal one would become a space)
    body = upload(("virt", "vmware\n"), ("x" * 200_000, "huge"), ("virt\n", "impostor"),
                  ("other", "not offered"), *((f"p{n}", "") for n in range(5_000)))
    send(server, body.replace(b'name="virt\n"', b'name="virt&#10;"'))
    data, _ = stored(server)
    assert data == {"virt": "vmware\n"}
    assert_served(server)


def test_probe_data_over_the_caps_is_refused(hostile) -> None:
    server = hostile(probes__max_data_size=str(64 * 1024), probes__max_probe_size="1024")
    send(server, upload(("virt", "kvm\n")))
    status, reply = raw_call(server, upload(("virt", "x" * (65 * 1024))), *WEB2)
    fault = fault_of(reply)
    assert status == 200 and fault is not None and "too large" in fault.faultString
    assert stored(server)[0] == {"virt": "kvm\n"}  # the previous upload stays
    send(server, upload(("virt", "y" * 2048)))  # under the total, over one probe's cap
    assert stored(server)[0] == {}
    assert_served(server)

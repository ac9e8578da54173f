"""repo-example's dynamic parts end to end: a probe's group and output change what an agent gets.

Probes/virt puts virtual machines in the group "virtual", which brings the
guest-agent bundle and the G60_virtual versions of /etc/ntp.conf (Jinja2) and
/etc/motd (Genshi); both templates print the probe's output and the time
sources of Properties/ntp.xml, and ntp.conf a line from TemplateHelper/clock.py.
Every expectation is read off the repository files.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import lxml.etree
from conftest import REPO_EXAMPLE, Repo

CLIENTS = lxml.etree.parse(str(REPO_EXAMPLE / "Metadata/clients.xml")).getroot()
PROPERTIES = lxml.etree.parse(str(REPO_EXAMPLE / "Properties/ntp.xml")).getroot()
CLOCK = runpy.run_path(str(REPO_EXAMPLE / "TemplateHelper/clock.py"))
NTP_DIR = REPO_EXAMPLE / "Cfg/etc/ntp.conf"
MOTD_DIR = REPO_EXAMPLE / "Cfg/etc/motd"


def credentials(name: str) -> tuple[str, str]:
    [client] = CLIENTS.xpath("Client[@name=$n]", n=name)
    return client.get("uuid"), client.get("password")


def ntp_properties(groups: set[str], tag: str) -> list[str]:
    """The <tag> values of Properties/ntp.xml that apply to a client in these groups."""
    out = []
    for group in PROPERTIES.iter("Group"):
        member = group.get("name") in groups
        if member != (group.get("negate") == "true"):
            out.extend(el.text for el in group.iter(tag))
    return out


def upload(output: str) -> str:
    data = lxml.etree.Element("ProbeData")
    lxml.etree.SubElement(data, "probe-data", name="virt", source="Probes").text = output
    return lxml.etree.tostring(data, encoding="unicode")


class Agent:
    """One client's view of the server: its configuration, bundle by bundle."""

    def __init__(self, server, name: str) -> None:
        self.server = server
        self.name = name
        self.proxy = server.proxy(*credentials(name))

    def config(self) -> lxml.etree._Element:
        config = lxml.etree.fromstring(self.proxy.GetConfig().encode())
        failed = [f"{e.tag}:{e.get('name')}: {e.get('failure')}" for e in config.iter()
                  if e.get("failure") is not None]
        assert not failed
        return config

    def groups(self) -> set[str]:
        return set(self.server.core.build_metadata(self.name).groups)


def bundles(config: lxml.etree._Element) -> set[str]:
    return {b.get("name") for b in config}


def text_of(config: lxml.etree._Element, path: str) -> str:
    [entry] = config.xpath("//Path[@name=$p]", p=path)
    return entry.text


def test_probe_output_drives_groups_bundles_and_templates(example_repo: Repo, network_server):
    server = network_server(example_repo, probes__allowed_groups="virtual")
    web1 = Agent(server, "web1.example.com")
    before = web1.config()
    assert "guest-agent" not in bundles(before)
    assert "virtual" not in web1.groups()
    assert text_of(before, "/etc/ntp.conf") == (NTP_DIR / "ntp.conf").read_text()
    assert text_of(before, "/etc/motd") == (MOTD_DIR / "motd.G10_web").read_text()

    probes = lxml.etree.fromstring(web1.proxy.GetProbes().encode())
    [probe] = probes.findall("probe")
    script = (example_repo.path / "Probes/virt").read_text()
    assert (probe.get("name"), probe.get("interpreter"), probe.text) == (
        "virt", "/bin/sh", script)

    seen_refclocks = set()
    for virt in ("kvm", "microsoft"):
        assert web1.proxy.RecvProbeData(upload(f"{virt}\ngroup:virtual\n")) is True
        groups = web1.groups()
        assert "virtual" in groups and "web" in groups
        config = web1.config()
        assert "guest-agent" in bundles(config)
        [bundle] = config.xpath("Bundle[@name='guest-agent']")
        assert {(e.tag, e.get("name")) for e in bundle} == {
            ("Package", "qemu-guest-agent"), ("Service", "qemu-guest-agent")}
        assert bundle.find("Package").get("type") == "deb"

        servers = ntp_properties(groups, "Server")
        assert servers == ["db1.example.com"]  # web1 is no time server
        ntp = text_of(config, "/etc/ntp.conf")
        assert f"{web1.name} is a virtual machine ({virt})" in ntp
        assert [line for line in ntp.splitlines() if line.startswith("server ")] == [
            f"server {s} iburst" for s in servers]
        refclock = CLOCK["refclock"](virt)
        assert refclock and refclock in ntp.splitlines()
        assert not [line for line in ntp.splitlines() if line.startswith("allow ")]
        seen_refclocks.add(refclock)

        motd = text_of(config, "/etc/motd").splitlines()
        assert motd[0] == f"{web1.name}: a virtual machine ({virt}), managed by Bcfg2."
        assert set(motd[1].removeprefix("Groups: ").split(", ")) == groups
        assert motd[2] == f"Time from: {', '.join(servers)}"
    assert len(seen_refclocks) == 2  # the second upload was not served from a cache

    # back on bare metal: no group line, so the plain versions come back
    assert web1.proxy.RecvProbeData(upload("none\n")) is True
    assert "virtual" not in web1.groups()
    after = web1.config()
    assert "guest-agent" not in bundles(after)
    assert text_of(after, "/etc/ntp.conf") == (NTP_DIR / "ntp.conf").read_text()
    assert text_of(after, "/etc/motd") == (MOTD_DIR / "motd.G10_web").read_text()


def test_a_virtual_time_server_gets_its_own_sources(example_repo: Repo, network_server):
    server = network_server(example_repo, probes__allowed_groups="virtual")
    db1 = Agent(server, "db1.example.com")
    assert db1.proxy.RecvProbeData(upload("vmware\ngroup:virtual\n")) is True
    groups = db1.groups()
    assert {"virtual", "ntp-server", "rhel"} <= groups
    config = db1.config()
    [package] = config.xpath("Bundle[@name='guest-agent']/Package")
    assert package.get("type") == "yum"
    ntp = text_of(config, "/etc/ntp.conf").splitlines()
    servers = ntp_properties(groups, "Server")
    assert "db1.example.com" not in servers and servers
    assert [line for line in ntp if line.startswith("server ")] == [
        f"server {s} iburst" for s in servers]
    assert [line for line in ntp if line.startswith("allow ")] == [
        f"allow {a}" for a in ntp_properties(groups, "Allow")]
    assert CLOCK["refclock"]("vmware") == ""
    assert not [line for line in ntp if line.startswith("refclock")]
    # db1's own motd outranks the virtual-machine template
    assert text_of(config, "/etc/motd") == (MOTD_DIR / "motd.H_db1.example.com").read_text()


def test_what_the_server_learns_stays_out_of_the_repository(example_repo: Repo, network_server):
    before = {p: p.read_bytes() for p in example_repo.path.rglob("*") if p.is_file()}
    server = network_server(example_repo, probes__allowed_groups="virtual")
    web1 = Agent(server, "web1.example.com")
    assert web1.proxy.RecvProbeData(upload("kvm\ngroup:virtual\n")) is True
    assert "guest-agent" in bundles(web1.config())
    server.stop()
    after = {p: p.read_bytes() for p in example_repo.path.rglob("*") if p.is_file()}
    assert after == before
    assert list(Path(example_repo.path.parent / "state").rglob("probes.sqlite"))

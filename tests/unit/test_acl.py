"""The ACL plugin: ip.xml and metadata.xml, through the core's two-phase check."""

from __future__ import annotations

import logging

import lxml.etree
import pytest
from conftest import PLUGINS, rewrite

from bcfg2.identity import Caller
from bcfg2.plugins.acl import method_pattern

ACL_PLUGINS = PLUGINS + ",ACL"

#: client1 (profile basic: groups basic, linux), client2 (profile other), localhost
CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" address="10.0.0.5"/>
  <Client name="client2" profile="other" address="10.0.0.6"/>
  <Client name="localhost" profile="other" address="127.0.0.1"/>
</Clients>
"""

#: the IP example of the ACL documentation
DOCS_IP = """\
<ACL>
  <Allow address="192.168.1.10" method="*.*"/>
  <Deny address="192.168.2.0" netmask="255.255.255.0" method="AssertProfile"/>
  <Allow address="192.168.1.12" method="Git.Update"/>
  <Allow method="*"/>
</ACL>
"""

METADATA = """\
<ACL>
  <Group name="linux">
    <Allow method="Metadata.*"/>
  </Group>
  <Client name="client2">
    <Deny method="AssertProfile"/>
  </Client>
  <Group name="linux" negate="true">
    <Deny method="GetProbes"/>
  </Group>
  <Allow method="*"/>
</ACL>
"""


#: every address here is in clients.xml (or must not reach the metadata phase)
pytestmark = pytest.mark.usefixtures("no_reverse_dns")


@pytest.fixture
def acl_core(repo, local_core, tmp_path):
    """Factory: a core with the ACL plugin over ``repo`` with the given ACL files."""
    repo.write("Metadata/clients.xml", CLIENTS)
    repo.mkdir("ACL")

    def factory(ip: str | None = None, metadata: str | None = None):
        if ip is not None:
            repo.write("ACL/ip.xml", ip)
        if metadata is not None:
            repo.write("ACL/metadata.xml", metadata)
        return local_core(repo, server__plugins=ACL_PLUGINS,
                          server__state_dir=str(tmp_path / "state"))
    return factory


def caller(core, address: str) -> Caller:
    """The client at an address of CLIENTS, as authentication identifies it."""
    return Caller((address, 4000), client=core.metadata.resolve_address(address))


def ip_phase(core, address: str, method: str) -> bool | None:
    return core.plugins["ACL"].check_acl_ip((address, 4000), method)


# -- wildcards ---------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "method", "matches"), [
    ("*", "DeclareVersion", True),
    ("*", "GetProbes", True),
    ("*", "Git.Update", False),
    ("*.*", "Git.Update", True),
    ("*.*", "GetProbes", False),
    ("*.*", "system.listMethods", True),
    ("Metadata.*", "Metadata.list_clients", True),
    ("Metadata.*", "Git.Update", False),
    ("Metadata.*", "Metadata", False),
    ("*.toggle_debug", "Git.toggle_debug", True),
    ("*.toggle_debug", "toggle_debug", False),
    ("*_debug", "toggle_core_debug", True),
    ("*_debug", "set_debug", True),
    ("*_debug", "Git.set_debug", False),
    ("GetConfig", "GetConfig", True),
    ("GetConfig", "GetConfigX", False),
    ("Get?onfig", "GetConfig", False),
    ("[G]etConfig", "GetConfig", False),
    ("Git.Update", "GitxUpdate", False),
])
def test_a_star_is_any_run_of_characters_but_a_dot(pattern, method, matches):
    assert (method_pattern(pattern).fullmatch(method) is not None) is matches


# -- ip.xml ------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "method", "decision"), [
    ("192.168.1.10", "Git.Update", True),       # all plugin methods
    ("192.168.1.10", "Packages.Refresh", True),
    ("192.168.1.10", "GetConfig", True),        # core methods for everyone
    ("192.168.2.7", "AssertProfile", False),    # the /24 (dotted netmask) cannot
    ("192.168.2.255", "AssertProfile", False),
    ("192.168.2.7", "GetConfig", True),
    ("192.168.3.7", "AssertProfile", True),     # just outside the network
    ("192.168.1.12", "Git.Update", True),
    ("192.168.1.12", "Packages.Refresh", None),  # no rule: other machines defer
    ("192.168.1.11", "Git.Update", None),
    ("127.0.0.1", "Git.Update", None),          # no rule: localhost is no exception
])
def test_the_documented_ip_example(acl_core, address, method, decision):
    core = acl_core(ip=DOCS_IP)
    assert ip_phase(core, address, method) is decision


def test_trust_loopback_restores_the_implicit_rules_for_localhost(acl_core, repo, local_core,
                                                                 tmp_path):
    acl_core(ip=DOCS_IP, metadata=METADATA)
    core = local_core(repo, server__plugins=ACL_PLUGINS, communication__trust_loopback=True,
                      server__state_dir=str(tmp_path / "state"))
    assert ip_phase(core, "127.0.0.1", "Git.Update") is True
    assert ip_phase(core, "192.168.1.11", "Git.Update") is None
    assert core.plugins["ACL"].check_acl_metadata(core.build_metadata("localhost"),
                                                  "Git.Update") is True
    assert core.plugins["ACL"].check_acl_metadata(core.build_metadata("client2"),
                                                  "Git.Update") is False


def test_the_first_matching_rule_decides(acl_core, repo):
    core = acl_core(ip='<ACL><Deny address="10.0.0.5" method="GetConfig"/>'
                       '<Allow method="*"/></ACL>')
    assert ip_phase(core, "10.0.0.5", "GetConfig") is False
    assert ip_phase(core, "10.0.0.5", "GetProbes") is True
    rewrite(repo.path / "ACL/ip.xml", '<ACL><Allow method="*"/>'
                                      '<Deny address="10.0.0.5" method="GetConfig"/></ACL>')
    core.refresh()
    assert ip_phase(core, "10.0.0.5", "GetConfig") is True


IP_NETWORKS = """\
<ACL>
  <Allow address="2001:db8:1::5" method="GetConfig"/>
  <Deny address="2001:db8::" netmask="32" method="*"/>
  <Deny address="10.1.0.0" netmask="16" method="*"/>
  <Defer address="10.0.0.0" netmask="8" method="*.*"/>
  <Deny address="::1" method="get_statistics"/>
  <Deny method="*.*"/>
  <Allow method="*"/>
</ACL>
"""


@pytest.mark.parametrize(("address", "method", "decision"), [
    ("2001:db8:1::5", "GetConfig", True),
    ("2001:db8:1:0:0::5", "GetConfig", True),   # the same address, written otherwise
    ("2001:db8:1::6", "GetConfig", False),      # in 2001:db8::/32
    ("2001:db8:1::5", "GetProbes", False),
    ("2001:db9::1", "GetProbes", True),
    ("10.1.200.3", "GetProbes", False),         # integer netmask
    ("10.2.0.1", "GetProbes", True),
    ("10.2.0.1", "Git.Update", None),
    ("::ffff:10.1.0.9", "GetProbes", False),    # IPv4-mapped IPv6 is IPv4
    ("::ffff:10.2.0.9", "Git.Update", None),
    ("192.0.2.1", "Git.Update", False),
    ("::1", "get_statistics", False),
    ("::1", "GetConfig", True),
])
def test_networks_by_prefix_ipv6_and_mapped_addresses(acl_core, address, method, decision):
    core = acl_core(ip=IP_NETWORKS)
    assert ip_phase(core, address, method) is decision


def test_nested_acl_elements_are_read_in_document_order(acl_core):
    core = acl_core(ip='<ACL><ACL><Deny address="10.0.0.5" method="*"/></ACL>'
                       '<Allow method="*"/></ACL>')
    assert ip_phase(core, "10.0.0.5", "GetConfig") is False
    assert ip_phase(core, "10.0.0.6", "GetConfig") is True


# -- metadata.xml, through Core.check_acls ------------------------------------------

@pytest.mark.parametrize(("address", "method", "allowed"), [
    ("10.0.0.5", "Metadata.list_clients", True),   # client1 is in linux
    ("10.0.0.5", "AssertProfile", True),
    ("10.0.0.5", "GetProbes", True),
    ("10.0.0.5", "Git.Update", False),             # no rule: denied
    ("10.0.0.6", "Metadata.list_clients", False),  # client2 is not in linux
    ("10.0.0.6", "AssertProfile", False),          # <Client name="client2">
    ("10.0.0.6", "GetProbes", False),              # negated group
    ("10.0.0.6", "GetConfig", True),
    ("127.0.0.1", "Git.Update", False),            # no rule: localhost is no exception
])
def test_metadata_rules_apply_per_client(acl_core, address, method, allowed):
    core = acl_core(metadata=METADATA)
    assert core.check_acls(caller(core, address), method) is allowed


def test_an_ip_decision_is_final_and_a_deferral_reaches_metadata(acl_core):
    core = acl_core(ip='<ACL><Allow address="10.0.0.6" method="Git.Update"/>'
                       '<Deny address="10.0.0.5" method="GetConfig"/>'
                       '<Defer method="*"/></ACL>',
                    metadata='<ACL><Client name="client1"><Deny method="GetProbes"/></Client>'
                             '<Allow method="GetProbes"/><Allow method="GetConfig"/></ACL>')
    assert core.check_acls(caller(core, "10.0.0.6"), "Git.Update") is True    # metadata would deny
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is False    # metadata would allow
    assert core.check_acls(caller(core, "10.0.0.5"), "GetProbes") is False    # deferred, metadata
    assert core.check_acls(caller(core, "10.0.0.6"), "GetProbes") is True


def test_without_acl_files_the_identity_decides(acl_core):
    core = acl_core()
    assert ip_phase(core, "127.0.0.1", "GetConfig") is None
    admin = Caller(("10.0.0.5", 4000), admin="user:admin")
    for method in ("GetConfig", "Git.Update", "get_statistics", "toggle_debug"):
        assert core.check_acls(caller(core, "10.0.0.5"), method) is (method == "GetConfig")
        assert core.check_acls(admin, method) is True


def test_a_missing_ip_xml_defers_to_metadata_xml(acl_core):
    core = acl_core(metadata='<ACL><Deny method="Git.Update"/></ACL>')
    assert ip_phase(core, "10.0.0.5", "Git.Update") is None
    assert core.check_acls(caller(core, "10.0.0.5"), "Git.Update") is False


def test_a_missing_metadata_xml_leaves_what_ip_xml_defers_to_the_identity(acl_core):
    core = acl_core(ip='<ACL><Defer method="*.*"/><Deny method="*"/></ACL>')
    assert core.check_acls(caller(core, "10.0.0.5"), "Git.Update") is False
    assert core.check_acls(Caller(("10.0.0.5", 4000), admin="user:admin"), "Git.Update") is True
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is False
    # a Deny by address holds for an admin too
    assert core.check_acls(Caller(("10.0.0.5", 4000), admin="user:admin"), "GetConfig") is False


# -- the files change ------------------------------------------------------------------

def test_edits_apply_without_a_restart(acl_core, repo):
    core = acl_core(ip='<ACL><Deny address="10.0.0.5" method="GetConfig"/></ACL>')
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is False
    rewrite(repo.path / "ACL/ip.xml", '<ACL><Allow address="10.0.0.5" method="GetConfig"/></ACL>')
    repo.write("ACL/metadata.xml", '<ACL><Deny method="GetProbes"/></ACL>')
    core.refresh()
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is True
    assert core.check_acls(caller(core, "10.0.0.5"), "GetProbes") is False


def test_a_deleted_file_has_no_opinion_any_more(acl_core, repo):
    core = acl_core(ip='<ACL><Deny method="GetConfig"/></ACL>',
                    metadata='<ACL><Deny method="GetProbes"/></ACL>')
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is False
    assert core.check_acls(caller(core, "10.0.0.5"), "GetProbes") is False
    (repo.path / "ACL/ip.xml").unlink()
    (repo.path / "ACL/metadata.xml").unlink()
    core.refresh()
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is True
    assert core.check_acls(caller(core, "10.0.0.5"), "GetProbes") is True


BROKEN = [
    ('<ACL><Deny method="GetConfig"</ACL>', "ip.xml:1"),
    ('<ACL>\n<Deny address="10.0.0.300" method="GetConfig"/></ACL>', "ip.xml:2"),
    ('<ACL>\n\n<Deny netmask="24" method="GetConfig"/></ACL>', "ip.xml:3"),
    ('<ACL>\n<Deny address="10.0.0.0" netmask="33" method="*"/></ACL>', "ip.xml:2"),
    ('<ACL>\n<Deny address="10.0.0.5"/></ACL>', "ip.xml:2"),
    ('<ACL>\n<Dney method="GetConfig"/></ACL>', "ip.xml:2"),
    ('<Rules><Deny method="GetConfig"/></Rules>', "ip.xml:1"),
]


@pytest.mark.parametrize(("content", "location"), BROKEN)
def test_a_broken_ip_xml_keeps_the_last_good_version(acl_core, repo, caplog, content, location):
    core = acl_core(ip='<ACL><Deny address="10.0.0.5" method="GetConfig"/></ACL>')
    with caplog.at_level(logging.ERROR):
        rewrite(repo.path / "ACL/ip.xml", content)
        core.refresh()
    assert location in caplog.text
    assert ip_phase(core, "10.0.0.5", "GetConfig") is False
    assert ip_phase(core, "10.0.0.6", "GetConfig") is None


@pytest.mark.parametrize("content", [
    '<ACL><Group name="linux"><Allow method="*"/></ACL>',
    '<ACL>\n<Group><Allow method="*"/></Group></ACL>',
    '<ACL>\n<Defer method="*"/></ACL>',
    '<ACL>\n<Allow/></ACL>',
])
def test_a_broken_metadata_xml_keeps_the_last_good_version(acl_core, repo, caplog, content):
    core = acl_core(metadata='<ACL><Deny method="GetProbes"/><Allow method="*"/></ACL>')
    with caplog.at_level(logging.ERROR):
        rewrite(repo.path / "ACL/metadata.xml", content)
        core.refresh()
    assert "metadata.xml:" in caplog.text
    assert core.check_acls(caller(core, "10.0.0.5"), "GetProbes") is False
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is True


def test_a_file_broken_from_the_start_refuses_every_call(acl_core, repo, caplog):
    with caplog.at_level(logging.ERROR):
        core = acl_core(ip='<ACL><Allow method="*"</ACL>')
    assert "ip.xml:1" in caplog.text
    for address in ("10.0.0.5", "127.0.0.1"):
        assert core.check_acls(caller(core, address), "GetConfig") is False
    rewrite(repo.path / "ACL/ip.xml", '<ACL><Allow method="*"/></ACL>')
    core.refresh()
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is True


def test_a_metadata_xml_broken_from_the_start_refuses_every_call(acl_core):
    core = acl_core(metadata='<ACL><Allow method="*"></ACL>')
    assert core.check_acls(caller(core, "10.0.0.5"), "GetConfig") is False
    assert core.check_acls(caller(core, "127.0.0.1"), "GetConfig") is False


def test_decisions_are_logged_in_debug_mode(acl_core, caplog):
    core = acl_core(ip=DOCS_IP)
    core.plugins["ACL"].set_debug(True)
    with caplog.at_level(logging.INFO, logger="bcfg2.plugins.ACL"):
        core.check_acls(Caller(("192.168.2.7", 4000), client="client1"), "AssertProfile")
    assert "192.168.2.7 calls AssertProfile" in caplog.text and "deny" in caplog.text


# -- which groups count -------------------------------------------------------------

OPS_GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"><Group name="linux"/></Group>
  <Group name="other" profile="true"/>
  <Group name="ops" profile="true" public="true"><Group name="admins"/></Group>
  <Group name="linux"/>
  <Group name="admins"/>
  <Group name="virtual"/>
</Groups>
"""
ADMINS_ACL = """\
<ACL>
  <Group name="admins"><Allow method="Metadata.*"/></Group>
  <Allow method="*"/>
</ACL>
"""


def test_grouplogic_over_probe_groups_does_not_decide_access(repo, local_core, tmp_path):
    """GroupLogic making a probe group's members admins counts for the configuration only."""
    repo.write("Metadata/groups.xml", OPS_GROUPS)
    repo.write("ACL/metadata.xml", ADMINS_ACL)
    repo.write("Probes/virt", "#!/bin/sh\necho group:virtual\n")
    repo.write("GroupLogic/groups.xml",
               '<GroupLogic><Group name="virtual"><Group name="admins"/></Group></GroupLogic>')
    core = local_core(repo, server__plugins=ACL_PLUGINS + ",Probes,GroupLogic",
                      server__state_dir=str(tmp_path / "state"), probes__allowed_groups=".*")
    meta = core.build_metadata("client1")
    core.plugins["Probes"].ReceiveData(meta, [lxml.etree.fromstring(
        '<probe name="virt" source="Probes">group:virtual</probe>')])
    assert {"virtual", "admins"} <= core.build_metadata("client1").groups
    trusted = core.trusted_metadata("client1")
    assert "virtual" not in trusted.groups and "admins" not in trusted.groups
    who = Caller(("10.0.0.5", 4000), client="client1")
    assert core.check_acls(who, "Metadata.list_clients") is False
    assert core.check_acls(who, "GetConfig") is True


def test_grouplogic_over_repository_groups_decides_access(repo, local_core, tmp_path):
    """GroupLogic on groups.xml's groups counts: linux members are made admins."""
    repo.write("Metadata/groups.xml", OPS_GROUPS)
    repo.write("ACL/metadata.xml", ADMINS_ACL)
    repo.write("GroupLogic/groups.xml",
               '<GroupLogic><Group name="linux"><Group name="admins"/></Group></GroupLogic>')
    core = local_core(repo, server__plugins=ACL_PLUGINS + ",GroupLogic",
                      server__state_dir=str(tmp_path / "state"))
    assert core.check_acls(Caller(("10.0.0.5", 4000), client="client1"),
                           "Metadata.list_clients") is True
    assert core.check_acls(Caller(("10.0.0.6", 4000), client="client2"),
                           "Metadata.list_clients") is False


@pytest.mark.parametrize("registered", [False, True])
def test_an_asserted_profile_stays_untrusted_after_a_restart(repo, local_core, tmp_path,
                                                           registered):
    """The state file keeps the profile the repository gave, for clients.xml's clients and for
    clients the server registered with the default profile."""
    repo.write("Metadata/groups.xml", OPS_GROUPS.replace(
        '<Group name="other" profile="true"/>', '<Group name="other" profile="true" default="true"/>'))
    repo.write("ACL/metadata.xml", ADMINS_ACL)
    state = str(tmp_path / "state")
    core = local_core(repo, server__plugins=ACL_PLUGINS, server__state_dir=state)
    name = "newhost.example.com" if registered else "client1"
    core.metadata.set_profile(name, "ops", None)
    again = local_core(repo, server__plugins=ACL_PLUGINS, server__state_dir=state)
    assert again.build_metadata(name).profile == "ops"
    assert again.trusted_metadata(name).profile == ("other" if registered else "basic")
    assert again.check_acls(Caller(("10.0.0.9", 4000), client=name),
                            "Metadata.list_clients") is False

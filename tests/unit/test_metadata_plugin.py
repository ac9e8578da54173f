"""The Metadata plugin: groups.xml, clients.xml, client identity and runtime state."""

from __future__ import annotations

import logging
from pathlib import Path

import lxml.etree
import pytest
from conftest import rewrite, state_clients

from bcfg2.clientstate import ClientState
from bcfg2.clientstate import database_path as state_database
from bcfg2.errors import CriticalError, MetadataConsistencyError, StorageError
from bcfg2.identity import Caller

GLOBAL_PW = "globalpw"
XI = "http://www.w3.org/2001/XInclude"






def recorded(tmp_path: Path) -> dict[str, dict[str, str]]:
    """What the server recorded about clients in the state directory under tmp_path."""
    return state_clients(tmp_path / "state")


def clients_in(path: Path) -> dict[str, dict[str, str]]:
    """The <Client> elements of a clients.xml (includes not followed), by name."""
    root = lxml.etree.parse(str(path)).getroot()
    return {node.get("name"): dict(node.attrib) for node in root.iter("Client")}


#: every address here is in clients.xml (or must not reach the metadata phase)
pytestmark = pytest.mark.usefixtures("no_reverse_dns")


@pytest.fixture
def make_core(repo, local_core, tmp_path):
    """A core over the ``repo`` fixture with the global password and the state in tmp_path."""
    def factory(**overrides):
        overrides.setdefault("communication__password", GLOBAL_PW)
        overrides.setdefault("server__state_dir", str(tmp_path / "state"))
        return local_core(repo, **overrides)
    return factory


# -- groups.xml ------------------------------------------------------------------

PROFILES = """\
<Groups>
  <Group name="web" profile="true" public="true">
    <Group name="linux"/>
    <Group name="httpd"/>
  </Group>
  <Group name="db" profile="true">
    <Group name="linux"/>
  </Group>
  <Group name="linux">
    <Bundle name="base"/>
  </Group>
  <Group name="httpd">
    <Bundle name="apache"/>
  </Group>
</Groups>
"""

TWO_CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="{p1}" uuid="uuid-client1" password="pw1" floating="true"/>
  <Client name="client2" profile="{p2}" uuid="uuid-client2" password="pw2" floating="true"/>
</Clients>
"""


def test_a_profile_brings_its_groups_and_their_bundles(repo, make_core):
    repo.write("Metadata/groups.xml", PROFILES)
    repo.write("Metadata/clients.xml", TWO_CLIENTS.format(p1="web", p2="db"))
    core = make_core()
    web = core.build_metadata("client1")
    db = core.build_metadata("client2")
    assert (web.profile, db.profile) == ("web", "db")
    assert web.groups == {"web", "linux", "httpd"}
    assert web.bundles == {"base", "apache"}
    assert db.groups == {"db", "linux"}
    assert db.bundles == {"base"}
    assert core.metadata.get_all_group_names() == ["db", "httpd", "linux", "web"]


NESTED = """\
<Groups>
  <Group name="late">
    <Group name="from-late"/>
  </Group>
  <Group name="server" profile="true">
    <Group name="linux"/>
    <Group name="rhel"/>
    <Group name="rhel">
      <Group name="selinux"/>
      <Group name="linux">
        <Group name="rhel-linux"/>
        <Bundle name="rhel-tools"/>
      </Group>
      <Group name="debian">
        <Group name="never"/>
        <Bundle name="never-bundle"/>
      </Group>
    </Group>
    <Group name="rhel" negate="true">
      <Group name="not-rhel"/>
    </Group>
  </Group>
  <Group name="selinux">
    <Group name="late"/>
  </Group>
  <Group name="desktop" profile="true">
    <Group name="rhel" negate="true">
      <Group name="not-rhel"/>
    </Group>
  </Group>
</Groups>
"""


def test_nested_conditionals_apply_only_to_members(repo, make_core):
    repo.write("Metadata/groups.xml", NESTED)
    repo.write("Metadata/clients.xml", TWO_CLIENTS.format(p1="server", p2="desktop"))
    core = make_core()
    server = core.build_metadata("client1")
    assert {"linux", "rhel", "selinux", "rhel-linux"} <= server.groups
    assert "rhel-tools" in server.bundles
    assert not {"never", "not-rhel"} & server.groups
    assert "never-bundle" not in server.bundles
    # a conditional earlier in the file still applies to a membership found later
    assert {"late", "from-late"} <= server.groups

    desktop = core.build_metadata("client2")
    assert desktop.groups == {"desktop", "not-rhel"}
    assert desktop.bundles == set()


CLIENT_TAGS = """\
<Groups>
  <Group name="basic" profile="true"/>
  <Client name="client2">
    <Group name="special"/>
    <Bundle name="special-bundle"/>
  </Client>
  <Client name="client2" negate="true">
    <Group name="ordinary"/>
  </Client>
  <Group name="special">
    <Bundle name="special-extras"/>
  </Group>
</Groups>
"""


def test_client_tags_single_out_one_client(repo, make_core):
    repo.write("Metadata/groups.xml", CLIENT_TAGS)
    repo.write("Metadata/clients.xml", TWO_CLIENTS.format(p1="basic", p2="basic"))
    core = make_core()
    one, two = core.build_metadata("client1"), core.build_metadata("client2")
    assert one.groups == {"basic", "ordinary"}
    assert one.bundles == set()
    assert two.groups == {"basic", "special"}
    assert two.bundles == {"special-bundle", "special-extras"}


NEGATION = """\
<Groups>
  <Client name="client1">
    <Group name="selinux-enabled" negate="true"/>
  </Client>
  <Group name="foo-server" profile="true">
    <Group name="apache-server"/>
    <Group name="selinux-enabled"/>
    <Group name="every-server"/>
  </Group>
  <Group name="apache-server">
    <Group name="selinux-enabled"/>
  </Group>
  <Group name="every-server">
    <Group name="selinux-enabled"/>
  </Group>
  <Group name="selinux-enabled">
    <Bundle name="selinux"/>
    <Group name="enforcing"/>
  </Group>
</Groups>
"""


def test_one_negation_removes_a_group_however_it_was_reached(repo, make_core):
    repo.write("Metadata/groups.xml", NEGATION)
    repo.write("Metadata/clients.xml", TWO_CLIENTS.format(p1="foo-server", p2="foo-server"))
    core = make_core()
    negated, plain = core.build_metadata("client1"), core.build_metadata("client2")
    assert {"foo-server", "apache-server", "every-server"} <= negated.groups
    assert "selinux-enabled" not in negated.groups
    assert "selinux" not in negated.bundles
    assert {"selinux-enabled", "enforcing"} <= plain.groups
    assert "selinux" in plain.bundles


CATEGORIES = """\
<Groups>
  <Group name="basic" profile="true">
    <Group name="{first}"/>
    <Group name="{second}"/>
  </Group>
  <Group name="debian" category="os">
    <Bundle name="apt"/>
  </Group>
  <Group name="rhel" category="os">
    <Bundle name="yum"/>
  </Group>
</Groups>
"""


@pytest.mark.parametrize(("first", "second"), [("debian", "rhel"), ("rhel", "debian")])
def test_a_client_is_in_one_group_of_a_category_the_first(repo, make_core, caplog, first,
                                                          second):
    repo.write("Metadata/groups.xml", CATEGORIES.format(first=first, second=second))
    repo.write("Metadata/clients.xml", TWO_CLIENTS.format(p1="basic", p2="basic"))
    core = make_core()
    with caplog.at_level(logging.WARNING):
        meta = core.build_metadata("client1")
    assert first in meta.groups and second not in meta.groups
    assert meta.categories == {"os": first}
    assert meta.group_in_category("os") == first
    assert meta.bundles == {"apt" if first == "debian" else "yum"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(second in w and "os" in w for w in warnings)
    assert core.metadata.get_all_groups_in_category("os") == ["debian", "rhel"]


def test_a_connector_group_cannot_break_a_category(repo, make_core):
    repo.write("Metadata/groups.xml", CATEGORIES.format(first="debian", second="debian"))
    repo.write("Metadata/clients.xml", TWO_CLIENTS.format(p1="basic", p2="basic"))
    core = make_core()
    meta = core.build_metadata("client1")
    core.metadata.merge_additional_groups(meta, ["rhel", "extra"])
    assert "extra" in meta.groups
    assert "rhel" not in meta.groups
    assert meta.bundles == {"apt"}


# -- clients.xml -----------------------------------------------------------------

DETAILED_CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1" address="10.0.0.1">
    <Alias name="client1-mgmt" address="10.1.0.1"/>
    <Alias name="www.example.com"/>
  </Client>
  <Clients>
    <Client name="client2" profile="other" uuid="uuid-client2" password="pw2" floating="true"/>
  </Clients>
</Clients>
"""


def test_clients_xml_aliases_addresses_and_nested_clients(repo, make_core):
    repo.write("Metadata/clients.xml", DETAILED_CLIENTS)
    core = make_core()
    assert core.metadata.list_clients() == ["client1", "client2"]
    meta = core.build_metadata("client1")
    assert meta.aliases == {"client1-mgmt", "www.example.com"}
    assert meta.addresses == {"10.0.0.1", "10.1.0.1"}
    assert (meta.uuid, meta.password) == ("uuid-client1", "pw1")
    for alias in ("client1-mgmt", "WWW.Example.COM"):
        assert core.build_metadata(alias).hostname == "client1"
    assert core.build_metadata("client2").profile == "other"


def test_an_address_of_an_alias_identifies_its_client(repo, make_core):
    repo.write("Metadata/clients.xml", DETAILED_CLIENTS)
    core = make_core()
    for address in ("10.0.0.1", "10.1.0.1"):
        assert core.metadata.AuthenticateConnection(None, "root", "pw1", (address, 7000)) \
            == "client1"
        assert core.resolve_client((address, 7001), metadata=False)[0] == "client1"


# -- identity and authentication ---------------------------------------------------

IDENTITY_CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1" floating="true"/>
  <Client name="client2" profile="other" uuid="uuid-client2" password="pw2" floating="true"/>
  <Client name="fixed" profile="basic" address="10.0.0.5" password="fixedpw"/>
  <Client name="twin-a" profile="basic" address="10.0.0.9"/>
  <Client name="twin-b" profile="basic" address="10.0.0.9"/>
  <Client name="vault" profile="basic" uuid="uuid-vault" password="vaultpw" secure="true"
          floating="true"/>
  <Client name="certonly" profile="basic" uuid="uuid-certonly" password="certpw" auth="cert"
          floating="true"/>
</Clients>
"""


@pytest.fixture
def ident(repo, make_core):
    repo.write("Metadata/clients.xml", IDENTITY_CLIENTS)
    return make_core()


def cert_for(common_name: str) -> dict:
    """A peer certificate as ssl.SSLSocket.getpeercert() gives it."""
    return {"subject": ((("countryName", "US"),), (("commonName", common_name),))}


def auth(core, cert, user, password, address) -> Caller | None:
    """The caller the credentials identify (None if refused), as the network cores see it."""
    return core.authenticate(cert, user, password, address)


def test_the_common_name_of_a_certificate_names_the_client(ident):
    caller = auth(ident, cert_for("client1"), "ignored", "pw1", ("127.0.0.1", 41000))
    assert ident.resolve_client(caller, metadata=False)[0] == "client1"
    # cert+password (the default) still needs a password
    assert auth(ident, cert_for("client1"), "root", "wrong", ("127.0.0.1", 41001)) is None


def test_auth_cert_needs_a_certificate_and_nothing_else(ident):
    assert auth(ident, cert_for("certonly"), "root", "", ("127.0.0.1", 41002)) is not None
    assert auth(ident, None, "uuid-certonly", "certpw", ("127.0.0.1", 41003)) is None
    assert auth(ident, None, "uuid-certonly", GLOBAL_PW, ("127.0.0.1", 41004)) is None


def test_a_certificate_of_a_fixed_client_is_only_good_from_its_address(ident):
    assert auth(ident, cert_for("fixed"), "root", "fixedpw", ("10.0.0.9", 41005)) is None
    assert auth(ident, cert_for("fixed"), "root", "fixedpw", ("10.0.0.5", 41006)) is not None


def test_user_root_is_identified_by_source_address(ident):
    assert auth(ident, None, "root", "fixedpw", ("10.0.0.5", 41010)).client == "fixed"
    assert ident.resolve_client(("10.0.0.5", 41011), metadata=False)[0] == "fixed"
    assert auth(ident, None, "root", GLOBAL_PW, ("10.0.0.5", 41012)) is not None
    assert auth(ident, None, "root", "pw1", ("10.0.0.5", 41013)) is None


def test_two_clients_on_one_address_are_refused(ident):
    assert auth(ident, None, "root", GLOBAL_PW, ("10.0.0.9", 41020)) is None
    with pytest.raises(CriticalError) as excinfo:
        ident.resolve_client(("10.0.0.9", 41021))
    assert excinfo.value.fault_code == -32500


def test_any_other_user_is_a_uuid(ident):
    caller = auth(ident, None, "uuid-client2", "pw2", ("127.0.0.1", 41030))
    assert ident.resolve_client(caller, metadata=False)[0] == "client2"


def test_each_request_carries_its_own_client(ident):
    first = auth(ident, None, "uuid-client1", "pw1", ("127.0.0.1", 41040))
    second = auth(ident, None, "uuid-client2", "pw2", ("127.0.0.1", 41040))
    assert ident.resolve_client(first)[1].hostname == "client1"
    assert ident.resolve_client(second)[1].hostname == "client2"


@pytest.mark.parametrize(("user", "password", "accepted"), [
    ("uuid-client1", GLOBAL_PW, True),
    ("uuid-client1", "pw1", True),
    ("uuid-client1", "pw2", False),
    ("uuid-client1", "", False),
    ("uuid-client1", "pw1 ", False),
    ("uuid-vault", "vaultpw", True),
    ("uuid-vault", GLOBAL_PW, False),
])
def test_the_global_password_or_the_clients_own(ident, user, password, accepted):
    assert (auth(ident, None, user, password, ("127.0.0.1", 41050)) is not None) is accepted


def test_without_a_global_password_only_the_clients_own_works(repo, make_core):
    core = make_core(communication__password="")
    assert auth(core, None, "uuid-client1", "pw1", ("127.0.0.1", 41060)) is not None
    assert auth(core, None, "uuid-client1", "", ("127.0.0.1", 41061)) is None


def test_an_unknown_uuid_is_taken_as_the_client_name(ident):
    address = ("127.0.0.1", 41070)
    assert auth(ident, None, "Newcomer.example.com", "pw1", address) is None
    caller = auth(ident, None, "Newcomer.example.com", GLOBAL_PW, address)
    assert ident.metadata.resolve_client(caller) == "newcomer.example.com"


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "x..y", "/abs", ""])
def test_a_client_name_that_could_escape_a_directory_is_refused(ident, name):
    assert auth(ident, None, name, GLOBAL_PW, ("127.0.0.1", 41080)) is None
    assert auth(ident, cert_for(name), "root", GLOBAL_PW, ("127.0.0.1", 41081)) is None


# -- first contact ---------------------------------------------------------------


def default_profile(repo) -> str:
    groups = lxml.etree.parse(str(repo.path / "Metadata" / "groups.xml"))
    return next(g.get("name") for g in groups.iter("Group") if g.get("default") == "true")


def test_an_unknown_client_gets_the_default_profile(example_repo, local_core, tmp_path):
    before = (example_repo.path / "Metadata" / "clients.xml").read_bytes()
    core = local_core(example_repo, server__state_dir=str(tmp_path / "state"),
                      communication__password=GLOBAL_PW)
    address = auth(core, None, "new1.example.com", GLOBAL_PW, ("127.0.0.1", 42000))
    name, meta = core.resolve_client(address)
    assert name == "new1.example.com"
    assert meta.profile == default_profile(example_repo)
    assert "new1.example.com" in core.metadata.list_clients()
    assert recorded(tmp_path)["new1.example.com"]["profile"] == meta.profile
    assert (example_repo.path / "Metadata" / "clients.xml").read_bytes() == before
    # still known after the state file is reread
    core.refresh()
    assert core.build_metadata("new1.example.com").profile == meta.profile


def test_first_contact_by_declare_version_registers_the_client(example_repo, local_core,
                                                               tmp_path):
    core = local_core(example_repo, server__state_dir=str(tmp_path / "state"),
                      communication__password=GLOBAL_PW)
    address = auth(core, None, "new2.example.com", GLOBAL_PW, ("127.0.0.1", 42001))
    assert core.DeclareVersion(address, "1.4.0pre2") is True
    meta = core.build_metadata("new2.example.com")
    assert meta.profile == default_profile(example_repo)
    assert meta.version == "1.4.0pre2"


def test_without_a_default_profile_an_unknown_client_is_refused(make_core, tmp_path):
    core = make_core()
    with pytest.raises(MetadataConsistencyError):
        core.build_metadata("stranger")
    address = auth(core, None, "stranger", GLOBAL_PW, ("127.0.0.1", 42002))
    with pytest.raises(CriticalError) as excinfo:
        core.resolve_client(address)
    assert excinfo.value.fault_code == -32500
    with pytest.raises(CriticalError):
        core.DeclareVersion(address, "1.4.0")
    assert "stranger" not in core.metadata.list_clients()
    assert recorded(tmp_path) == {}


def test_a_bad_name_is_never_registered(example_repo, local_core, tmp_path):
    core = local_core(example_repo, server__state_dir=str(tmp_path / "state"))
    with pytest.raises(MetadataConsistencyError):
        core.build_metadata("../../etc/passwd")
    assert recorded(tmp_path) == {}


# -- AssertProfile and DeclareVersion --------------------------------------------

PUBLIC_PROFILES = """\
<Groups>
  <Group name="basic" profile="true" public="true"/>
  <Group name="desktop" profile="true" public="true">
    <Group name="gui"/>
  </Group>
  <Group name="other" profile="true"/>
</Groups>
"""


@pytest.fixture
def profiles(repo, make_core):
    """A core where basic and desktop are public profiles, other is private."""
    repo.write("Metadata/groups.xml", PUBLIC_PROFILES)

    def factory(**overrides):
        core = make_core(**overrides)
        address = auth(core, None, "uuid-client2", "pw2", ("127.0.0.1", 43000))
        assert address is not None
        return core, address

    return factory


def test_assert_profile_changes_the_profile_in_state_not_in_the_repository(
        repo, profiles, tmp_path):
    repo_clients = repo.path / "Metadata" / "clients.xml"
    before = repo_clients.read_bytes()
    core, address = profiles(caching__client_metadata="aggressive")
    assert core.build_metadata("client2").profile == "other"

    assert core.AssertProfile(address, "desktop") is True
    meta = core.build_metadata("client2")
    assert meta.profile == "desktop" and "gui" in meta.groups
    assert recorded(tmp_path)["client2"]["profile"] == "desktop"
    assert repo_clients.read_bytes() == before
    core.refresh()
    assert core.build_metadata("client2").profile == "desktop"
    assert core.build_metadata("client1").profile == "basic"


def test_a_pinned_client_keeps_its_profile_through_assert_profile(profiles, make_core):
    core, address = profiles(caching__client_metadata="aggressive")
    core.metadata.set_profile("client2", "basic", None)  # an admin's change
    core.metadata.set_pinned("client2", True)
    assert core.metadata.is_pinned("client2")
    assert core.AssertProfile(address, "desktop") is True  # the agent is not refused
    assert core.build_metadata("client2").profile == "basic"
    again = make_core()  # a restart reads the pin from the state
    assert again.metadata.is_pinned("client2")
    again.metadata.set_pinned("client2", False)
    address = auth(again, None, "uuid-client2", "pw2", ("127.0.0.1", 43000))
    assert again.AssertProfile(address, "desktop") is True
    assert again.build_metadata("client2").profile == "desktop"
    with pytest.raises(MetadataConsistencyError):
        again.metadata.set_pinned("nosuchclient", True)


def test_an_admin_may_set_a_private_profile(profiles):
    core, _ = profiles()
    core.metadata.set_profile("client1", "other", None)
    assert core.build_metadata("client1").profile == "other"


@pytest.mark.parametrize("profile", ["other", "gui", "no-such-group"])
def test_only_public_profile_groups_can_be_asserted(profiles, tmp_path, profile):
    core, address = profiles()
    with pytest.raises(CriticalError):
        core.AssertProfile(address, profile)
    assert core.build_metadata("client2").profile == "other"
    assert recorded(tmp_path) == {}


def test_a_failed_state_write_keeps_the_previous_state(profiles, tmp_path, monkeypatch):
    core, address = profiles()
    assert core.AssertProfile(address, "desktop") is True

    def interrupted(*args, **kwargs):
        raise StorageError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(core.metadata.state.db, "update", interrupted)
        with pytest.raises(CriticalError) as failed:
            core.AssertProfile(address, "basic")
        assert "server's log" in str(failed.value)
        assert core.build_metadata("client2").profile == "desktop"

    assert recorded(tmp_path)["client2"]["profile"] == "desktop"
    core.refresh()
    assert core.build_metadata("client2").profile == "desktop"
    # once the disk is fine again, the change goes through
    assert core.AssertProfile(address, "basic") is True
    assert core.build_metadata("client2").profile == "basic"
    assert recorded(tmp_path)["client2"]["profile"] == "basic"


def test_declare_version_is_recorded_in_state(repo, make_core, tmp_path):
    repo_clients = repo.path / "Metadata" / "clients.xml"
    before = repo_clients.read_bytes()
    core = make_core()
    address = auth(core, None, "uuid-client1", "pw1", ("127.0.0.1", 43010))
    assert address is not None
    assert core.DeclareVersion(address, "1.4.0pre2") is True
    assert core.build_metadata("client1").version == "1.4.0pre2"
    assert recorded(tmp_path)["client1"]["version"] == "1.4.0pre2"
    assert repo_clients.read_bytes() == before
    core.refresh()
    assert core.build_metadata("client1").version == "1.4.0pre2"
    assert core.build_metadata("client1").profile == "basic"


def test_the_repository_wins_when_the_admin_changes_a_profile_later(
        example_repo, local_core, tmp_path):
    """A profile the server recorded must not hide a later edit of clients.xml."""
    core = local_core(example_repo, server__state_dir=str(tmp_path / "state"),
                      communication__password=GLOBAL_PW)
    default = default_profile(example_repo)
    assert core.build_metadata("new3.example.com").profile == default
    address = auth(core, None, "5c3f7a62-9d0e-4c1b-8f53-web1", "web1-secret", ("127.0.0.1", 43020))
    assert address is not None
    assert core.AssertProfile(address, "dbserver") is True

    clients = example_repo.path / "Metadata" / "clients.xml"
    text = clients.read_text()
    text = text.replace('name="web1.example.com" profile="webserver"',
                        'name="web1.example.com" profile="workstation"')
    text = text.replace("</Clients>", '  <Client name="new3.example.com" profile="dbserver"/>\n'
                                      "</Clients>")
    rewrite(clients, text)
    core.refresh()
    assert core.build_metadata("new3.example.com").profile == "dbserver"
    assert core.build_metadata("web1.example.com").profile == "workstation"


# -- write-through: state_dir is the repository ------------------------------------

INCLUDING_CLIENTS = f"""\
<Clients version="3.0" xmlns:xi="{XI}">
  <!-- hand-written -->
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1" floating="true"/>
  <Client name="client2" profile="other" uuid="uuid-client2" password="pw2" floating="true"/>
  <xi:include href="more-clients.xml"/>
</Clients>
"""

MORE_CLIENTS = """\
<Clients>
  <Client name="client3" profile="basic" uuid="uuid-client3" password="pw3" floating="true"/>
</Clients>
"""


@pytest.fixture
def write_through(repo, profiles):
    repo.write("Metadata/clients.xml", INCLUDING_CLIENTS)
    repo.write("Metadata/more-clients.xml", MORE_CLIENTS)
    return profiles(server__state_dir=str(repo.path))


def test_write_through_rewrites_the_repository_clients_xml_in_place(repo, write_through):
    core, address = write_through
    repo_clients = repo.path / "Metadata" / "clients.xml"
    before = clients_in(repo_clients)
    assert core.AssertProfile(address, "desktop") is True
    assert core.build_metadata("client2").profile == "desktop"

    after = clients_in(repo_clients)
    assert after["client2"] == {**before["client2"], "profile": "desktop"}
    assert after["client1"] == before["client1"]
    root = lxml.etree.parse(str(repo_clients)).getroot()
    assert [inc.get("href") for inc in root.iter(f"{{{XI}}}include")] == ["more-clients.xml"]

    core.refresh()
    assert core.build_metadata("client2").profile == "desktop"
    assert core.metadata.list_clients() == ["client1", "client2", "client3"]
    assert not (repo.path.parent / "state").exists()


def test_write_through_updates_a_client_where_it_is_defined(repo, write_through):
    core, _address = write_through
    address = auth(core, None, "uuid-client3", "pw3", ("127.0.0.1", 43030))
    assert address is not None
    assert core.DeclareVersion(address, "1.4.0") is True
    core.refresh()
    meta = core.build_metadata("client3")
    assert (meta.profile, meta.version) == ("basic", "1.4.0")
    assert "client3" not in clients_in(repo.path / "Metadata" / "clients.xml")
    assert clients_in(repo.path / "Metadata" / "more-clients.xml")["client3"]["version"] == "1.4.0"
    assert core.metadata.clients_file.error is None


# -- bad edits after start ---------------------------------------------------------

BROKEN_GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux" oops/>
  </Group>
</Groups>
"""

BROKEN_CLIENTS = """\
<Clients version="3.0">
  <Client name="client1" profile="basic"/>
  <Client name="client2" profile="other" oops/>
</Clients>
"""


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_broken_groups_xml_keeps_the_last_good_one(repo, make_core, caplog):
    core = make_core(caching__client_metadata="aggressive")
    groups = repo.path / "Metadata" / "groups.xml"
    good = core.build_metadata("client1")

    rewrite(groups, BROKEN_GROUPS)
    with caplog.at_level(logging.ERROR):
        core.refresh()
    assert any(f"{groups}:3" in line for line in error_lines(caplog))
    meta = core.build_metadata("client1")
    assert (meta.profile, meta.groups, meta.bundles) == (good.profile, good.groups, good.bundles)

    fixed = BROKEN_GROUPS.replace(" oops", "").replace(
        '<Group name="linux"/>', '<Group name="linux"/>\n    <Group name="added"/>')
    rewrite(groups, fixed)
    core.refresh()
    assert core.build_metadata("client1").groups == {"basic", "linux", "added"}


def test_a_broken_clients_xml_keeps_the_last_good_one(repo, make_core, caplog):
    core = make_core()
    clients = repo.path / "Metadata" / "clients.xml"
    rewrite(clients, BROKEN_CLIENTS)
    with caplog.at_level(logging.ERROR):
        core.refresh()
    assert any(f"{clients}:3" in line for line in error_lines(caplog))
    assert core.metadata.list_clients() == ["client1", "client2"]
    assert core.build_metadata("client2").profile == "other"
    assert auth(core, None, "uuid-client1", "pw1", ("127.0.0.1", 44000))

    rewrite(clients, BROKEN_CLIENTS.replace(" oops/>", '/>\n  <Client name="client3" '
                                                       'profile="basic"/>'))
    core.refresh()
    assert core.metadata.list_clients() == ["client1", "client2", "client3"]
    # the rewritten file has no uuid for client1 any more
    assert core.metadata.clients_model.uuids == {}


def test_removing_clients_xml_and_the_state_forgets_what_they_said(repo, make_core, tmp_path):
    core = make_core(caching__client_metadata="aggressive")
    address = auth(core, None, "uuid-client1", "pw1", ("127.0.0.1", 42002))
    assert address is not None
    assert core.DeclareVersion(address, "1.4.0") is True
    assert core.build_metadata("client1").version == "1.4.0"
    # as bcfg2-admin client del does it behind the running server's back
    store = ClientState(state_database(str(tmp_path / "state")))
    assert store.remove("client1")
    store.mark_changed()
    store.close()
    core.refresh()
    assert core.build_metadata("client1").version is None  # the cached copy is gone too
    (repo.path / "Metadata/clients.xml").unlink()
    core.refresh()
    assert core.metadata.list_clients() == []


# -- more than one default profile (as real Bcfg2 1.4 repositories have) ----------

DEFAULTS = """\
<Groups>
  <Group name="first" profile="true" default="true"/>
  <Group name="cond">
    <Group name="nested" profile="true" default="true"/>
  </Group>
  <Group name="second" profile="true" default="true"/>
  <Group name="basic" profile="true" public="true"/>
</Groups>
"""


def default_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "marked default=" in r.getMessage()]


def test_several_default_profiles_serve_the_last_one_bcfg2_reads(repo, make_core, caplog):
    # Bcfg2 reads the top-level declarations first, then the nested ones, and the last
    # one marked default wins: here "nested" (line 4), though "second" (line 6) is later
    caplog.set_level(logging.WARNING, logger="bcfg2")
    repo.write("Metadata/groups.xml", DEFAULTS)
    core = make_core()
    assert core.build_metadata("client1").profile == "basic"  # clients.xml still rules
    assert core.build_metadata("newcomer").profile == "nested"
    warnings = default_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{repo.path}/Metadata/groups.xml:4: ")
    assert "first (" in warnings[0] and "groups.xml:2)" in warnings[0]
    assert "second (" in warnings[0] and "groups.xml:6)" in warnings[0]

    core.build_metadata("newcomer2")
    assert len(default_warnings(caplog)) == 1  # once per read of the file, not per client
    rewrite(repo.path / "Metadata/groups.xml",
            DEFAULTS.replace('name="nested" profile="true" default="true"',
                             'name="nested" profile="true"'))
    core.refresh()
    assert core.build_metadata("newcomer3").profile == "second"
    warnings = default_warnings(caplog)
    assert len(warnings) == 2 and "groups.xml:6:" in warnings[1]


def test_one_default_profile_gives_no_warning(repo, make_core, caplog):
    caplog.set_level(logging.WARNING, logger="bcfg2")
    repo.write("Metadata/groups.xml", DEFAULTS.replace(' default="true"', "", 2))
    core = make_core()
    assert core.build_metadata("newcomer").profile == "second"
    assert default_warnings(caplog) == []

"""The Ldap plugin against a real slapd: groups and data, outages, escaped filters.

Each test starts its own slapd on 127.0.0.1 (a free port found by binding a
socket first: slapd cannot listen on port 0) with a throwaway configuration
and mdb database, loaded with slapadd, and stops it at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo, wait_until

ldap3 = pytest.importorskip("ldap3", reason="the Ldap plugin needs ldap3 (pip install ldap3)")
from bcfg2.plugins.ldap import LdapConnection  # noqa: E402

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SUFFIX = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "ldap-secret"
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Ldap"

LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=hosts,{SUFFIX}
objectClass: organizationalUnit
ou: hosts

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: cn=client1,ou=hosts,{SUFFIX}
objectClass: device
cn: client1
l: Room 101
description: front web server

dn: cn=client2,ou=hosts,{SUFFIX}
objectClass: device
cn: client2
l: Basement
description: database

dn: cn=web7,ou=hosts,{SUFFIX}
objectClass: device
cn: web7
l: Attic
description: spare web server

dn: cn=webservers,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: webservers
member: cn=client1,ou=hosts,{SUFFIX}
member: cn=web7,ou=hosts,{SUFFIX}

dn: cn=backed-up,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: backed-up
member: cn=client1,ou=hosts,{SUFFIX}
member: cn=client2,ou=hosts,{SUFFIX}
"""

#: an upstream-style Ldap/config.py: the 1.4 imports and __queries__, filters joined with
#: + and %; HostGroups also gives groups (get_groups, this server's addition)
CONFIG_PY = """\
from Bcfg2.Server.Plugins.Ldap import LdapConnection, LdapQuery

__queries__ = ['HostInfo', 'HostGroups']

conn_default = LdapConnection(uri="ldap://127.0.0.1:{port}/",
                              binddn="{binddn}", bindpw="{bindpw}")


class HostInfo(LdapQuery):
    base = "ou=hosts,{suffix}"
    scope = "one"
    attrs = ["l", "description"]
    connection = conn_default

    def prepare_query(self, metadata):
        self.filter = "(cn=" + metadata.hostname + ")"

    def process_result(self, metadata):
        if not self.result:
            return {{}}
        return {{"location": self.result[0][1]["l"][0],
                "role": self.result[0][1]["description"][0]}}


class HostGroups(LdapQuery):
    base = "ou=groups,{suffix}"
    attrs = ["cn"]
    connection = conn_default

    def prepare_query(self, metadata):
        self.filter = ("(&(objectClass=groupOfNames)(member=cn=%s,ou=hosts,{suffix}))"
                       % metadata.hostname)

    def process_result(self, metadata):
        return sorted(attrs["cn"][0] for dn, attrs in self.result)

    def get_groups(self, metadata):
        return self.result
"""

GROUPS_XML = """\
<Groups>
  <Group name="basic" profile="true" public="true">
    <Group name="linux"/>
  </Group>
  <Group name="other" profile="true">
    <Group name="linux"/>
  </Group>
  <Group name="linux">
    <Bundle name="base"/>
  </Group>
  <Group name="webservers">
    <Bundle name="web"/>
  </Group>
</Groups>
"""

CLIENTS_XML = """\
<Clients version="3.0">
  <Client name="client1" profile="basic" uuid="uuid-client1" password="pw1"/>
  <Client name="client2" profile="other" uuid="uuid-client2" password="pw2"/>
  <Client name="web*" profile="other" uuid="uuid-star" password="pw3"/>
  <Client name="x)(cn=*" profile="other" uuid="uuid-paren" password="pw4"/>
</Clients>
"""

MOTD = ('Location: ${metadata.Ldap["HostInfo"]["location"] '
        'if metadata.Ldap.get("HostInfo") else "unknown"}\n')


class Slapd:
    """A slapd of a test's own: config and database in temporary directories."""

    def __init__(self, workdir: Path) -> None:
        for tool in ("slapd", "slapadd"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                pytest.skip(f"{tool} is not installed (apt-get install slapd)")
        if not (SCHEMA_DIR / "cosine.schema").exists() or not any(MODULE_DIR.glob("back_mdb*")):
            pytest.skip(f"slapd's schemas ({SCHEMA_DIR}) or back_mdb ({MODULE_DIR}) are missing")
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.as_root = os.geteuid() == 0
        # as root, slapd runs as nobody, and reads its configuration only after switching:
        # nobody cannot enter pytest's private tmp_path, so configuration and database
        # then live in a directory of their own under /tmp (removed by cleanup)
        self.home = Path(tempfile.mkdtemp(prefix="bcfg2-slapd-")) if self.as_root else workdir
        self.dbdir = self.home / "db"
        self.dbdir.mkdir()
        self.conf = self.home / "slapd.conf"
        self.conf.write_text(textwrap.dedent(f"""\
            include {SCHEMA_DIR}/core.schema
            include {SCHEMA_DIR}/cosine.schema
            include {SCHEMA_DIR}/inetorgperson.schema
            modulepath {MODULE_DIR}
            moduleload back_mdb
            database mdb
            suffix "{SUFFIX}"
            rootdn "{ADMIN_DN}"
            rootpw {ADMIN_PW}
            directory {self.dbdir}
            maxsize 10485760
            """))
        ldif = workdir / "data.ldif"
        ldif.write_text(LDIF)
        subprocess.run([self._tool("slapadd"), "-q", "-f", str(self.conf), "-l", str(ldif)],
                       check=True, capture_output=True, timeout=60)
        if self.as_root:
            for path in [self.home, self.conf, self.dbdir, *self.dbdir.iterdir()]:
                os.chown(path, 65534, 65534)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _tool(name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def start(self) -> None:
        """Start slapd: on a free port the first time, on the same port again after stop."""
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        argv = [self._tool("slapd"), "-f", str(self.conf), "-h", f"ldap://127.0.0.1:{self.port}/",
                "-d", "0"]
        if self.as_root:
            argv += ["-u", "nobody", "-g", "nogroup"]
        with open(self.workdir / "slapd.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        wait_until(self._listening, 30, f"slapd listening on port {self.port}")

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"slapd exited: {(self.workdir / 'slapd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def cleanup(self) -> None:
        self.stop()
        if self.as_root:
            shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path / "slapd")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def ldap_repo(path: Path, port: int, bindpw: str = ADMIN_PW) -> Repo:
    repo = Repo(path)
    repo.write("Metadata/groups.xml", GROUPS_XML)
    repo.write("Metadata/clients.xml", CLIENTS_XML)
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    repo.write("Bundler/web.xml", '<Bundle><Path name="/etc/web.conf"/></Bundle>')
    repo.write("Cfg/etc/motd/motd.genshi", MOTD)
    repo.write("Cfg/etc/web.conf/web.conf", "listen 80\n")
    for name in ("Rules", "Defaults"):
        repo.mkdir(name)
    repo.write("Ldap/config.py", CONFIG_PY.format(port=port, binddn=ADMIN_DN, bindpw=bindpw,
                                                  suffix=SUFFIX), dedent=False)
    return repo


def paths(config: lxml.etree._Element) -> dict[str, str]:
    return {p.get("name"): (p.text or "") for p in config.iter("Path")}


def ldap_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("bcfg2.plugins.Ldap") and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("core", ["builtin", "multiprocessing"])
def test_upstream_config_gives_groups_and_data_to_an_agent(tmp_path, slapd, network_server, core,
                                                           monkeypatch):
    repo = ldap_repo(tmp_path / "repo", slapd.port)
    server = network_server(repo, core=core, server__plugins=PLUGINS)

    config = lxml.etree.fromstring(server.proxy("uuid-client1", "pw1").GetConfig().encode())
    files = paths(config)
    assert files["/etc/motd"] == "Location: Room 101\n"
    assert "/etc/web.conf" in files  # bundle of the group the directory gives
    searches = []
    run_query = LdapConnection.run_query
    monkeypatch.setattr(LdapConnection, "run_query",
                        lambda self, query: searches.append(query.name) or run_query(self, query))
    meta = server.core.build_metadata("client1")
    assert sorted(searches) == ["HostGroups", "HostInfo"]  # each query once per build
    assert {"webservers", "backed-up"} <= meta.groups
    assert meta.Ldap == {"HostInfo": {"location": "Room 101", "role": "front web server"},
                         "HostGroups": ["backed-up", "webservers"]}

    # client2 is only in backed-up: no web bundle, its own location
    config = lxml.etree.fromstring(server.proxy("uuid-client2", "pw2").GetConfig().encode())
    files = paths(config)
    assert files["/etc/motd"] == "Location: Basement\n"
    assert "/etc/web.conf" not in files
    assert "backed-up" in server.core.build_metadata("client2").groups


def test_register_query_and_sub_queries_of_bcfg2_1_3(tmp_path, slapd, local_core):
    repo = ldap_repo(tmp_path / "repo", slapd.port)
    repo.write("Ldap/config.py", f"""\
        from Bcfg2.Server.Plugins.Ldap import (LdapConnection, LdapQuery, LdapSubQuery,
                                               register_query)

        conn = LdapConnection(host="127.0.0.1", port={slapd.port})  # anonymous bind

        class Member(LdapSubQuery):
            attrs = ["l"]
            scope = "base"
            connection = conn

            def prepare_query(self, metadata, member_dn):
                self.base = member_dn

            def process_result(self, metadata, member_dn):
                return self.result[0][1]["l"][0]

        class GroupLocations(LdapQuery):
            base = "ou=groups,{SUFFIX}"
            connection = conn
            name = "locations"

            def prepare_query(self, metadata):
                self.filter = "(cn=" + metadata.profile.replace("basic", "webservers") + ")"

            def process_result(self, metadata):
                members = self.result[0][1]["member"]
                return sorted(Member().get_result(metadata, member_dn=m) for m in members)

        register_query(GroupLocations)
        """)
    core = local_core(repo, server__plugins=PLUGINS)
    assert core.build_metadata("client1").Ldap == {"locations": ["Attic", "Room 101"]}


def test_stopped_server_fails_only_the_ldap_part_within_the_timeout(tmp_path, slapd,
                                                                     network_server, caplog):
    repo = ldap_repo(tmp_path / "repo", slapd.port)
    server = network_server(repo, server__plugins=PLUGINS, ldap__timeout="3",
                            ldap__retry_delay="0.2", ldap__retries="2")
    agent = server.proxy("uuid-client1", "pw1")
    assert "/etc/web.conf" in paths(lxml.etree.fromstring(agent.GetConfig().encode()))
    assert ldap_errors(caplog) == []

    slapd.stop()
    for _ in range(3):
        start = time.monotonic()
        config = lxml.etree.fromstring(server.proxy("uuid-client1", "pw1").GetConfig().encode())
        elapsed = time.monotonic() - start
        assert elapsed < 3 + 1.5, f"GetConfig took {elapsed:.1f} s with the directory down"
        files = paths(config)
        assert files["/etc/motd"] == "Location: unknown\n"  # the rest of the run is served
        assert "/etc/web.conf" not in files  # the directory's group is gone
    meta = server.core.build_metadata("client1")
    assert "webservers" not in meta.groups
    assert meta.Ldap == {"HostInfo": None, "HostGroups": None}
    errors = ldap_errors(caplog)
    assert len(errors) == 1, errors
    assert f"127.0.0.1:{slapd.port}" in errors[0] and "does not answer" in errors[0]

    # once it answers again the groups come back (and that is logged, not as an error)
    slapd.start()
    wait_until(lambda: "/etc/web.conf" in paths(lxml.etree.fromstring(
        server.proxy("uuid-client1", "pw1").GetConfig().encode())), 20, "Ldap groups again")


def test_bad_credentials_fail_the_ldap_part_once(tmp_path, slapd, local_core, caplog):
    repo = ldap_repo(tmp_path / "repo", slapd.port, bindpw="wrong")
    core = local_core(repo, server__plugins=PLUGINS, ldap__timeout="3")
    for client in ("client1", "client2"):
        meta = core.build_metadata(client)
        assert meta.Ldap == {"HostInfo": None, "HostGroups": None}
        assert "webservers" not in meta.groups and "backed-up" not in meta.groups
    errors = ldap_errors(caplog)
    assert len(errors) == 1 and "refused" in errors[0], errors


def test_silent_server_is_cut_off_at_the_timeout(tmp_path, local_core, caplog):
    # a listener that accepts connections and never answers: a hung directory
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        repo = ldap_repo(tmp_path / "repo", silent.getsockname()[1])
        core = local_core(repo, server__plugins=PLUGINS, ldap__timeout="1")
        start = time.monotonic()
        meta = core.build_metadata("client1")
        elapsed = time.monotonic() - start
        assert elapsed < 1 + 1.0, f"metadata took {elapsed:.1f} s"
        assert meta.Ldap == {"HostInfo": None, "HostGroups": None}
        core.build_metadata("client2")
    errors = ldap_errors(caplog)
    assert len(errors) == 1 and "no answer within 1 s" in errors[0], errors


@pytest.mark.parametrize("client", ["web*", "x)(cn=*"])
def test_host_name_with_filter_metacharacters_is_escaped(tmp_path, slapd, local_core, client):
    # unescaped, (cn=web*) would match web7 and (member=cn=web*,...) nothing at all, while
    # "x)(cn=*" would turn the filter into one that matches every host
    repo = ldap_repo(tmp_path / "repo", slapd.port)
    core = local_core(repo, server__plugins=PLUGINS)
    meta = core.build_metadata(client)
    assert meta.Ldap == {"HostInfo": {}, "HostGroups": []}
    assert "webservers" not in meta.groups
    # the same queries do find a host whose name is plain
    assert core.build_metadata("client1").Ldap["HostInfo"]["location"] == "Room 101"


def test_config_change_is_reloaded_and_a_broken_one_keeps_the_last_good(tmp_path, slapd,
                                                                        local_core, caplog):
    repo = ldap_repo(tmp_path / "repo", slapd.port)
    core = local_core(repo, server__plugins=PLUGINS)
    assert set(core.build_metadata("client1").Ldap) == {"HostInfo", "HostGroups"}
    plugin = core.plugins["Ldap"]
    config = repo.path / "Ldap/config.py"
    good = config.read_text()
    config.write_text(good.replace("['HostInfo', 'HostGroups']", "['HostInfo']"))
    plugin.config.HandleEvent()
    assert set(core.build_metadata("client1").Ldap) == {"HostInfo"}
    assert "webservers" not in core.build_metadata("client1").groups

    config.write_text(good + "\nthis is not python\n")
    plugin.config.HandleEvent()
    assert any(f"{config}:{len(good.splitlines()) + 2}" in r.getMessage()
               for r in caplog.records if r.levelno >= logging.ERROR), caplog.text
    assert set(core.build_metadata("client1").Ldap) == {"HostInfo"}

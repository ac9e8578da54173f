"""The RELAX NG schemas of bcfg2-lint: what each repository format accepts and refuses."""

from __future__ import annotations

import textwrap

import lxml.etree
import pytest
from unit.test_lint_schemas_plugins import ACCEPTED, REFUSED

from bcfg2.lint import schemas

VALID = {
    "metadata-groups.rng": """\
        <Groups version="3.0" xmlns:xi="http://www.w3.org/2001/XInclude">
          <Group name="web" profile="true" public="true" default="false" comment="web servers">
            <Group name="linux"/>
            <Bundle name="apache"/>
          </Group>
          <Group name="debian" category="os"/>
          <Group name="linux">
            <Group name="debian" negate="true"><Group name="not-debian"/></Group>
            <Client name="special"><Bundle name="extra"/></Client>
          </Group>
          <Client name="web2"><Group name="no-admin"/></Client>
          <Groups><Group name="included"/></Groups>
          <xi:include href="more-groups.xml"><xi:fallback/></xi:include>
        </Groups>""",
    "metadata-clients.rng": """\
        <Clients version="3.0">
          <Client name="web1" profile="web" uuid="u1" password="p" address="10.0.0.1"
                  location="fixed" secure="true" auth="cert" floating="false" version="1.4.0"
                  pingable="Y" pingtime="0">
            <Alias name="web1-mgmt" address="10.1.0.1"/>
            <Alias name="www"/>
          </Client>
          <Clients><Client name="db1" profile="db"/></Clients>
        </Clients>""",
    "bundle.rng": """\
        <Bundle name="web" independent="false">
          <Path name="/etc/motd" altsrc="/etc/motd.web"/>
          <Package name="apache2"><Instance version="2.4" arch="x86_64"/></Package>
          <Service name="apache2" status="on" type="systemd"/>
          <Action name="reload" command="true" timing="post" when="modified" status="check"/>
          <POSIXUser name="www"><MemberOf>web</MemberOf></POSIXUser>
          <POSIXGroup name="www"/>
          <SEBoolean name="httpd_can_network_connect" value="on"/>
          <BoundPath name="/var/www" type="directory" owner="www" group="www" mode="0755"/>
          <Group name="debian">
            <Client name="web1" negate="true"><Package name="mod-ssl"/></Client>
          </Group>
          <RequiredBundle name="base" inherit_modification="true"/>
        </Bundle>""",
    "bundle-genshi.rng": """\
        <Bundle xmlns:py="http://genshi.edgewall.org/">
          <?python
              sites = ['a', 'b']
          ?>
          <Path py:for="site in sites" name="/etc/apache2/sites/${site}.conf"/>
          <py:choose test="metadata.hostname">
            <py:when test="'web1'"><Package name="special"/></py:when>
            <py:otherwise>
              <Group name="debian" py:if="True"><Service name="apache2"/></Group>
            </py:otherwise>
          </py:choose>
          <py:for each="n in range(2)">
            <Path name="/srv/${n}"/>
          </py:for>
        </Bundle>""",
    "rules.rng": """\
        <Rules priority="10">
          <Path name="/etc/link" type="symlink" to="/etc/motd"/>
          <Path name="/srv" type="directory" owner="root" group="root" mode="0755"
                prune="true"/>
          <Path name="/etc/acl" type="permissions" owner="root" group="root" mode="0600">
            <ACL type="access" scope="user" user="www" perms="rw"/>
          </Path>
          <Path name="/dev/null2" type="device" dev_type="char" major="1" minor="3"/>
          <Path name="/etc/gone" type="nonexistent"/>
          <Path name="/etc/file" type="file" owner="root" group="root" mode="0644">text</Path>
          <Package name="vim" type="deb" version="auto"/>
          <Service name="ssh" status="on" type="systemd"/>
          <Group name="rhel"><Client name="db1"><Package name="x" version="1"/></Client></Group>
          <Rules><Package name="nested" version="1"/></Rules>
        </Rules>""",
    "defaults.rng": """\
        <Defaults priority="0">
          <Service name=".*" type="systemd"/>
          <Group name="rhel"><Package name=".*" type="yum"/></Group>
        </Defaults>""",
    "deps.rng": """\
        <Dependencies priority="0">
          <Package name="apache2">
            <Path name="/etc/apache2/apache2.conf"/>
          </Package>
          <Group name="web"><Service name="apache2"><Package name="apache2"/></Service></Group>
        </Dependencies>""",
    "info.rng": """\
        <FileInfo>
          <Group name="rhel">
            <Info owner="root" group="root" mode="0600" secontext="__default__"/>
          </Group>
          <Path name="/etc/special"><Info owner="root" group="wheel" mode="640"/></Path>
          <Info owner="root" group="root" mode="0644" paranoid="true" sensitive="false"
                important="false" encoding="base64">
            <ACL type="default" scope="group" group="admins" perms="rwx"/>
          </Info>
        </FileInfo>""",
    "decisions.rng": """\
        <Decisions>
          <Decision type="Path" name="/etc/motd"/>
          <Group name="web"><Decision type="Service" name="apache2"/></Group>
        </Decisions>""",
    "grouppatterns.rng": """\
        <GroupPatterns>
          <GroupPattern>
            <NamePattern>^web(\\d+)\\.example\\.com$</NamePattern>
            <Group>web</Group>
            <Group>web-$1</Group>
          </GroupPattern>
          <GroupPattern><NameRange>node[[1-32]]</NameRange><Group>cluster</Group></GroupPattern>
        </GroupPatterns>""",
    "grouplogic.rng": """\
        <GroupLogic xmlns:py="http://genshi.edgewall.org/">
          <Group name="web">
            <Group name="frontend"/>
            <Client name="web1" negate="true"><Group name="not-web1"/></Client>
          </Group>
          <py:if test="'db' in metadata.groups"><Group name="backend"/></py:if>
        </GroupLogic>""",
    "acl-ip.rng": """\
        <ACL>
          <Allow address="127.0.0.1" method="*"/>
          <Defer address="10.0.0.0" netmask="8" method="*.*"/>
          <Deny method="Packages.Refresh"/>
        </ACL>""",
    "acl-metadata.rng": """\
        <ACL>
          <Group name="admins"><Allow method="*"/></Group>
          <Client name="web1" negate="true"><Deny method="Git.Update"/></Client>
        </ACL>""",
    "packages-sources.rng": """\
        <Sources xmlns:xi="http://www.w3.org/2001/XInclude">
          <Group name="debian-bookworm">
            <Source type="apt" url="http://deb.debian.org/debian" version="bookworm"
                    recommended="false" essential="true" debsrc="false" priority="600"
                    name="debian-main">
              <Component>main</Component>
              <Component>contrib</Component>
              <Arch>amd64</Arch>
              <Blacklist>nonfree-thing</Blacklist>
              <Options serveronly="true" trusted="yes"/>
            </Source>
          </Group>
          <Client name="build1" negate="true">
            <Source type="yum" rawurl="http://mirror/el9/x86_64/">
              <Arch>x86_64</Arch>
              <GPGKey>http://mirror/RPM-GPG-KEY</GPGKey>
              <Whitelist>bash</Whitelist>
              <Options clientonly="yes" gpgcheck="1"/>
            </Source>
          </Client>
          <Source type="pkgng" url="http://pkg.freebsd.org" version="FreeBSD:14"><Arch>amd64</Arch></Source>
          <Source type="pac" rawurl="http://arch/core/os/x86_64"><Arch>x86_64</Arch></Source>
          <Source type="yum" pulp_id="el9-base"/>
          <Sources><Source type="apt" rawurl="http://local/"><Arch>amd64</Arch></Source></Sources>
          <xi:include href="more-sources.xml"><xi:fallback/></xi:include>
        </Sources>""",
    "pkgmgr.rng": """\
        <PackageList priority="5" type="yum" uri="http://mirror/os/" multiarch="x86_64,i686"
                     srcs="x86_64 i386" xmlns:xi="http://www.w3.org/2001/XInclude">
          <Group name="centos">
            <Group name="x86_64">
              <Package name="bash" version="3.0-19.3"/>
              <Package name="foo" file="foo-1.0.rpm" verify="false" pkg_checks="false"/>
            </Group>
          </Group>
          <Client name="backup" negate="true">
            <Package name="glibc" type="rpm">
              <Instance simplefile="glibc.x86_64.rpm" version="2.3.4" release="2.25"
                        arch="x86_64"><Ignore name="/etc/rpc"/></Instance>
              <Group name="i686"><Instance arch="i686" version="2.3.4"/></Group>
              <Ignore name="/etc/ld.so.cache"/>
            </Package>
          </Client>
          <xi:include href="more.xml"/>
        </PackageList>""",
}

INVALID = {
    "metadata-groups.rng": '<Groups>\n  <Group profile="true"/>\n</Groups>',
    "metadata-clients.rng": '<Clients>\n  <Client name="web1"/>\n</Clients>',
    "bundle.rng": '<Bundle>\n  <Pakage name="vim"/>\n</Bundle>',
    "bundle-genshi.rng": ('<Bundle xmlns:py="http://genshi.edgewall.org/">\n'
                          '  <Path py:if="True"/>\n</Bundle>'),
    "rules.rng": '<Rules priority="high">\n  <Path name="/x" type="fiel"/>\n</Rules>',
    "defaults.rng": '<Defaults>\n  <Bundle name="x"/>\n</Defaults>',
    "deps.rng": '<Dependencies>\n  <Package/>\n</Dependencies>',
    "info.rng": '<FileInfo>\n  <Info owner="root" mode="64x"/>\n</FileInfo>',
    "decisions.rng": '<Decisions>\n  <Decision name="/etc/motd"/>\n</Decisions>',
    "grouppatterns.rng": ('<GroupPatterns>\n  <GroupPattern><NamePattern>x</NamePattern>'
                          '</GroupPattern>\n</GroupPatterns>'),
    "grouplogic.rng": '<GroupLogic>\n  <Bundle name="x"/>\n</GroupLogic>',
    "acl-ip.rng": '<ACL>\n  <Allow address="127.0.0.1"/>\n</ACL>',
    "acl-metadata.rng": '<ACL>\n  <Defer method="*"/>\n</ACL>',
    "packages-sources.rng": ('<Sources>\n  <Source type="zypper" url="http://x/">'
                             '<Arch>x86_64</Arch></Source>\n</Sources>'),
    "pkgmgr.rng": '<PackageList priority="0">\n  <Package version="1"/>\n</PackageList>',
}


def parse(text: str) -> lxml.etree._ElementTree:
    return lxml.etree.ElementTree(lxml.etree.fromstring(textwrap.dedent(text)))


def test_every_format_has_a_valid_and_an_invalid_sample() -> None:
    # the plugins' formats (Cfg creators, NagiosGen...) have theirs in test_lint_schemas_plugins
    refused = {schema for schema, _text, _line in REFUSED}
    assert set(VALID) | set(ACCEPTED) == set(INVALID) | refused == set(schemas.schema_names())


@pytest.mark.parametrize("schema", sorted(VALID))
def test_schema_accepts_what_the_plugins_read(schema: str) -> None:
    rng = schemas.load(schema)
    assert rng.validate(parse(VALID[schema])), rng.error_log


@pytest.mark.parametrize("schema", sorted(INVALID))
def test_schema_refuses_a_mistake_on_its_line(schema: str) -> None:
    rng = schemas.load(schema)
    assert not rng.validate(parse(INVALID[schema]))
    assert any(entry.line in (1, 2) for entry in rng.error_log)


def test_plain_bundles_refuse_genshi_elements() -> None:
    doc = ('<Bundle xmlns:py="http://genshi.edgewall.org/">'
           '<py:if test="True"><Path name="/x"/></py:if></Bundle>')
    assert not schemas.load("bundle.rng").validate(parse(doc))
    assert schemas.load("bundle-genshi.rng").validate(parse(doc))


@pytest.mark.parametrize(("plugin", "relative", "schema"), [
    ("Metadata", "groups.xml", "metadata-groups.rng"),
    ("Metadata", "sub/groups.xml", None),
    ("Bundler", "web.xml", "bundle.rng"),
    ("Bundler", "old.genshi", "bundle-genshi.rng"),
    ("Cfg", "etc/motd/info.xml", "info.rng"),
    ("Cfg", "etc/motd/motd", None),
    ("ACL", "ip.xml", "acl-ip.rng"),
    ("Packages", "sources.xml", "packages-sources.rng"),
    ("Packages", "sub/sources.xml", None),
    ("Packages", "packages.conf", None),
    ("Pkgmgr", "centos/updates.xml", "pkgmgr.rng"),
    ("Properties", "ntp.xml", None),
])
def test_schema_for_a_file(plugin: str, relative: str, schema: str | None) -> None:
    assert schemas.schema_for(plugin, relative) == schema

"""bcfg2-lint's schemas of the Cfg creator files, NagiosGen, FileProbes and AWSTags.

Each schema accepts the forms its plugin reads (those of the upstream
documentation and of the plugin's own tests) and refuses a misspelt element
or attribute, which ``bcfg2-lint`` reports with the file and line.
"""

from __future__ import annotations

import fnmatch
import io
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo
from unit.test_awstags import DOC_CONFIG as AWSTAGS_CONFIG
from unit.test_fileprobes import CONFIG as FILEPROBES_CONFIG
from unit.test_nagiosgen import CONFIG as NAGIOSGEN_CONFIG

import bcfg2.lint
from bcfg2.lint import schemas

ROOT = Path(__file__).resolve().parents[2]
KEY_LINE = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKcpZCs1Bbzj1yGf1NkzVHEFNtt1H0SG3ru1wV0C6r7W "
            "vendor")

#: schema -> documents its plugin reads, as the upstream documentation and the
#: plugin's tests write them (the first is the format's sample in test_lint_schemas)
ACCEPTED: dict[str, list[str]] = {
    "cfg-privkey.rng": [
        "<PrivateKey/>",
        """\
        <PrivateKey category="environment" perhost="false" priority="60">
          <Params bits="2048" type="rsa"/>
          <Group name="secure">
            <Passphrase encrypted="keys">U2FsdGVkX1+sealedpassphrase=</Passphrase>
          </Group>
          <Client name="odd.example.com" negate="true"><Params type="ecdsa" bits="384"/></Client>
        </PrivateKey>""",
        '<PrivateKey><Params type="rsa" bits="2048"/></PrivateKey>',
        '<PrivateKey><Params type="ecdsa" bits="384"/></PrivateKey>',
        '<PrivateKey><Params type="ed25519"/></PrivateKey>',
        '<PrivateKey><Group name="prod"><Passphrase>s3cret phrase</Passphrase></Group>'
        '</PrivateKey>',
        '<PrivateKey category="environment" perhost="true"><Params type="ed25519"/></PrivateKey>',
        '<PrivateKey lax_decryption="true"><Params type="ed25519"/>'
        '<Passphrase encrypted="keys">sealed</Passphrase></PrivateKey>',
    ],
    "cfg-pubkey.rng": ["<PublicKey/>"],
    "cfg-sslkey.rng": [
        "<KeyInfo/>",
        """\
        <KeyInfo perhost="true">
          <Group name="quick"><Key type="rsa" bits="1024"/></Group>
          <Group name="hardened"><Key type="rsa" bits="4096"/></Group>
          <Client name="edge1"><Key type="ecdsa" bits="521"/></Client>
          <KeyInfo><Key/></KeyInfo>
        </KeyInfo>""",
    ],
    "cfg-sslcert.rng": [
        '<CertInfo><Cert key="/etc/pki/tls/private/localhost.key" ca="foo"/></CertInfo>',
        """\
        <CertInfo>
          <subjectAltName>www.example.org</subjectAltName>
          <Group name="apache">
            <Cert key="/etc/pki/tls/private/site.key" days="730"/>
          </Group>
          <Group name="nginx">
            <Cert key="/etc/pki/tls/private/site.key" days="730"
                  append_chain="true"/>
          </Group>
        </CertInfo>""",
        """\
        <CertInfo>
          <subjectAltName>service.example.com</subjectAltName>
          <subjectAltName>192.0.2.7</subjectAltName>
          <subjectAltName>2001:db8::7</subjectAltName>
          <subjectAltName>*.example.com</subjectAltName>
          <Cert key="/etc/pki/tls/private/service.key" days="30" ou="Ops" c="FR" st="Nord"
                l="Lille" o="Example" emailaddress="ops@example.com" format="pem"/>
        </CertInfo>""",
        '<CertInfo><Cert key="/etc/pki/tls/private/service.key" ca="other"/></CertInfo>',
    ],
    "cfg-authorizedkeys.rng": [
        "<AuthorizedKeys/>",
        f"""\
        <AuthorizedKeys>
          <Group name="admins">
            <Allow from="/root/.ssh/id_rsa.pub"/>
            <Allow from="/root/.ssh/id_rsa.pub" group="backup"/>
          </Group>
          <Allow from="/root/.ssh/id_rsa.pub" host="jump.example.com"/>
          <Allow from="/home/deploy/.ssh/id_rsa.pub" category="environment">
            <Option name="command" value="/home/deploy/bin/only-rsync"/>
            <Option name="no-X11-forwarding"/>
            <Client name="c1" negate="true"><Option name="no-pty"/></Client>
          </Allow>
          <Allow>
            {KEY_LINE}
          </Allow>
        </AuthorizedKeys>""",
        f"""\
        <AuthorizedKeys>
          <Allow from="/root/.ssh/id_ed25519.pub" host="client2.example.com">
            <Option name="command" value='/usr/bin/backup "now"'/>
            <Option name="no-X11-forwarding"/>
          </Allow>
          <Allow from="/root/.ssh/id_ed25519.pub" host="no-such-host.example.com"/>
          <Group name="prod">
            <Allow from="/root/.ssh/id_ed25519.pub" host="client3.example.com"/>
          </Group>
          <Allow from="/root/.ssh/id_ed25519.pub"><Params no-pty=""/></Allow>
          <Allow>
            {KEY_LINE}
          </Allow>
          <AuthorizedKeys><Allow>{KEY_LINE}</Allow></AuthorizedKeys>
        </AuthorizedKeys>""",
    ],
    "nagiosgen-config.rng": [
        NAGIOSGEN_CONFIG,
        """\
        <NagiosGen>
           <Group name="rack-7">
              <Option name="parents">rack-7-switch</Option>
           </Group>
           <Group name="staging" negate="true">
              <Option name="notification_period">24x7</Option>
              <Option name="notification_options">d,u,r</Option>
           </Group>
           <Client name="db1.example.com">
              <Option name="max_check_attempts">
                 5
              </Option>
           </Client>
        </NagiosGen>""",
    ],
    "nagiosgen-parents.rng": [
        """\
        <NagiosParents>
          <Depend name="client1" on="core-router"/>
          <Depend name="client2" on="core-router"/>
        </NagiosParents>""",
    ],
    "fileprobes.rng": [
        FILEPROBES_CONFIG,
        """\
        <FileProbes>
          <FileProbe name="/etc/ssh/sshd_config"/>
          <Group name="mail-servers">
            <FileProbe name="/etc/postfix/main.cf" update="true"/>
          </Group>
          <Client name="archive.example.com">
            <FileProbe name="/var/lib/dump.tar.gz" encoding="base64" update="false"/>
          </Client>
          <FileProbe name="/etc/..hidden/.x/y..z" encoding="ascii"/>
        </FileProbes>""",
        "<FileProbes><FileProbe name='/" + "x" * 255 + "'/></FileProbes>",
    ],
    "awstags.rng": [
        AWSTAGS_CONFIG,
        '<AWSTags><Tag name="^role-(.*)$"><Group>$1-server</Group></Tag></AWSTags>',
        '<AWSTags><Tag name="^env$" value="^(prod|test)$"><Group>env-$1</Group>'
        "<Group>ec2</Group></Tag></AWSTags>",
        "<AWSTags/>",
    ],
}

#: (schema, document, line of the mistake): a misspelt element or attribute, or a
#: value the plugin refuses
REFUSED: list[tuple[str, str, int]] = [
    ("cfg-privkey.rng", "<PrivateKey>\n  <Param type='rsa'/>\n</PrivateKey>", 2),
    ("cfg-privkey.rng", "<PrivateKey>\n  <Params typ='rsa'/>\n</PrivateKey>", 2),
    ("cfg-privkey.rng", "<PrivateKey catgory='env'>\n</PrivateKey>", 1),
    # Cfg refuses dsa keys (OpenSSH no longer takes them), and sizes it cannot make
    ("cfg-privkey.rng", "<PrivateKey>\n  <Params bits='1024' type='dsa'/>\n</PrivateKey>", 2),
    ("cfg-privkey.rng", "<PrivateKey>\n\n  <Params bits='12'/>\n</PrivateKey>", 3),
    ("cfg-privkey.rng", "<PrivateKey>\n  <Params type='ecdsa' bits='2048'/>\n</PrivateKey>", 2),
    ("cfg-privkey.rng", "<PrivateKey>\n  <Group><Params/></Group>\n</PrivateKey>", 2),
    ("cfg-privkey.rng", "<PrivateKey priority='high'/>", 1),
    ("cfg-pubkey.rng", "<PublicKey>\n  <Params/>\n</PublicKey>", 2),
    ("cfg-pubkey.rng", "<PrivateKey/>", 1),
    ("cfg-sslkey.rng", "<KeyInfo>\n  <Keys type='rsa'/>\n</KeyInfo>", 2),
    ("cfg-sslkey.rng", "<KeyInfo>\n  <Key type='ed25519'/>\n</KeyInfo>", 2),
    ("cfg-sslkey.rng", "<KeyInfo>\n  <Key type='rsa' size='2048'/>\n</KeyInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <Cert ca='default'/>\n</CertInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <Cert key='/k' dayz='30'/>\n</CertInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <Cert key='etc/k'/>\n</CertInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <Cert key='/k' format='der'/>\n</CertInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <Cert key='/k' c='France'/>\n</CertInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <subjectAltname>x.example.com</subjectAltname>\n"
                        "</CertInfo>", 2),
    ("cfg-sslcert.rng", "<CertInfo>\n  <subjectAltName>not a name</subjectAltName>\n"
                        "</CertInfo>", 2),
    ("cfg-authorizedkeys.rng", "<AuthorizedKeys>\n  <Allows from='/k.pub'/>\n"
                               "</AuthorizedKeys>", 2),
    ("cfg-authorizedkeys.rng", "<AuthorizedKeys>\n  <Allow form='/k.pub'/>\n"
                               "</AuthorizedKeys>", 2),
    ("cfg-authorizedkeys.rng", "<AuthorizedKeys>\n<Allow>\n<Option name='bad name'/>k</Allow>\n"
                               "</AuthorizedKeys>", 3),
    ("cfg-authorizedkeys.rng", "<AuthorizedKeys>\n  <Option name='no-pty'/>\n"
                               "</AuthorizedKeys>", 2),
    ("nagiosgen-config.rng", "<NagiosGen>\n  <Group name='web'><Opton name='x'>1</Opton></Group>\n"
                             "</NagiosGen>", 2),
    ("nagiosgen-config.rng", "<NagiosGen>\n  <Option nme='parents'>sw</Option>\n</NagiosGen>", 2),
    ("nagiosgen-config.rng", "<NagiosGen>\n  <Option name='bad name'>x</Option>\n</NagiosGen>", 2),
    ("nagiosgen-config.rng", "<NagiosGen>\n  <Option name='notes'/>\n</NagiosGen>", 2),
    ("nagiosgen-config.rng", "<NagiosGen>\n  <Option name='notes'>one\ntwo</Option>\n"
                             "</NagiosGen>", 2),
    ("nagiosgen-parents.rng", "<NagiosParents>\n  <Depends name='a' on='b'/>\n"
                              "</NagiosParents>", 2),
    ("nagiosgen-parents.rng", "<NagiosParents>\n  <Depend name='a' of='b'/>\n"
                              "</NagiosParents>", 2),
    ("fileprobes.rng", "<FileProbes>\n  <FileProbes name='/etc/x'/>\n</FileProbes>", 2),
    ("fileprobes.rng", "<FileProbes>\n  <FileProbe name='/etc/x' updat='true'/>\n"
                       "</FileProbes>", 2),
    ("fileprobes.rng", "<FileProbes>\n  <FileProbe name='/etc/x' encoding='hex'/>\n"
                       "</FileProbes>", 2),
    ("awstags.rng", "<AWSTags>\n  <Pattern name='x'/>\n</AWSTags>", 2),
    ("awstags.rng", "<AWSTags>\n  <Tag nam='x'><Group>g</Group></Tag>\n</AWSTags>", 2),
    ("awstags.rng", "<AWSTags>\n  <Tag name='x'/>\n</AWSTags>", 2),
    ("awstags.rng", "<AWSTags>\n  <Group name='x'><Tag name='y'><Group>g</Group></Tag>"
                    "</Group>\n</AWSTags>", 2),
]

#: bad FileProbe names of the plugin's own test, which it refuses
BAD_PROBE_NAMES = ["foo.conf", "/etc/", "a/../../b", "/etc/../x", "/etc/./x", "/etc/foo conf",
                   "/etc//foo", "/" + "x" * 256, "/x" * 65]


def parse(text: str) -> lxml.etree._ElementTree:
    return lxml.etree.ElementTree(lxml.etree.fromstring(textwrap.dedent(text)))


@pytest.mark.parametrize(("schema", "index"), [
    (schema, index) for schema, docs in sorted(ACCEPTED.items()) for index in range(len(docs))])
def test_the_forms_the_plugins_read_are_valid(schema: str, index: int) -> None:
    rng = schemas.load(schema)
    assert rng.validate(parse(ACCEPTED[schema][index])), rng.error_log


@pytest.mark.parametrize(("schema", "text", "line"), REFUSED)
def test_a_mistake_is_refused_on_its_line(schema: str, text: str, line: int) -> None:
    rng = schemas.load(schema)
    assert not rng.validate(parse(text))
    assert line in {entry.line for entry in rng.error_log}, rng.error_log


@pytest.mark.parametrize("name", BAD_PROBE_NAMES)
def test_file_probes_must_name_clean_absolute_paths(name: str) -> None:
    doc = lxml.etree.Element("FileProbes")
    lxml.etree.SubElement(doc, "FileProbe", name=name)
    assert not schemas.load("fileprobes.rng").validate(lxml.etree.ElementTree(doc))


def test_every_new_schema_has_samples_both_ways() -> None:
    assert set(ACCEPTED) == {schema for schema, _text, _line in REFUSED}
    assert set(ACCEPTED) <= set(schemas.schema_names())


@pytest.mark.parametrize(("plugin", "relative", "schema"), [
    ("Cfg", "root/.ssh/id_rsa/privkey.xml", "cfg-privkey.rng"),
    ("Cfg", "root/.ssh/id_rsa.pub/pubkey.xml", "cfg-pubkey.rng"),
    ("Cfg", "etc/pki/tls/private/x.key/sslkey.xml", "cfg-sslkey.rng"),
    ("Cfg", "etc/pki/tls/certs/x.crt/sslcert.xml", "cfg-sslcert.rng"),
    ("Cfg", "root/.ssh/authorized_keys/authorized_keys.xml", "cfg-authorizedkeys.rng"),
    ("Cfg", "root/.ssh/authorized_keys/authorizedkeys.xml", "cfg-authorizedkeys.rng"),
    ("Cfg", "etc/privkey.xml/privkey.xml.H_host", None),
    ("NagiosGen", "config.xml", "nagiosgen-config.rng"),
    ("NagiosGen", "parents.xml", "nagiosgen-parents.rng"),
    ("NagiosGen", "old/config.xml", None),
    ("FileProbes", "config.xml", "fileprobes.rng"),
    ("FileProbes", "sub/config.xml", None),
    ("AWSTags", "config.xml", "awstags.rng"),
    ("SEModules", "foo.pp/foo.pp", None),
])
def test_schema_for_the_plugin_files(plugin: str, relative: str, schema: str | None) -> None:
    assert schemas.schema_for(plugin, relative) == schema


def test_the_schemas_are_package_data() -> None:
    """Every schema file is covered by pyproject's package-data, so a wheel ships it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "bcfg2.lint.rng" in config["tool"]["setuptools"]["packages"]
    patterns = config["tool"]["setuptools"]["package-data"]["bcfg2.lint.rng"]
    shipped = ROOT / "src/bcfg2/lint/rng"
    files = [p.name for p in shipped.iterdir() if p.name not in ("__init__.py", "__pycache__")]
    assert "cfg-privkey.rng" in files and "common.rng" in files
    assert [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []


# -- through bcfg2-lint ------------------------------------------------------------

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,NagiosGen,FileProbes,AWSTags"
FINDING = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.+) "
                     r"\[(?P<name>[a-z-]+)\]$")

#: repository file -> (a valid version, a broken one, the broken line)
FILES = {
    "Cfg/root/.ssh/id_rsa/privkey.xml": (
        ACCEPTED["cfg-privkey.rng"][1], "<PrivateKey>\n  <Params typ='rsa'/>\n</PrivateKey>", 2),
    "Cfg/root/.ssh/id_rsa.pub/pubkey.xml": (
        "<PublicKey/>", "<PublicKey>\n  <Params/>\n</PublicKey>", 2),
    "Cfg/etc/tls/host.key/sslkey.xml": (
        ACCEPTED["cfg-sslkey.rng"][1], "<KeyInfo>\n\n  <Keys type='rsa'/>\n</KeyInfo>", 3),
    "Cfg/etc/tls/host.crt/sslcert.xml": (
        ACCEPTED["cfg-sslcert.rng"][2], "<CertInfo>\n  <Cert key='/k' dayz='30'/>\n</CertInfo>", 2),
    "Cfg/root/.ssh/authorized_keys/authorized_keys.xml": (
        ACCEPTED["cfg-authorizedkeys.rng"][2],
        "<AuthorizedKeys>\n  <Allow form='/k.pub'/>\n</AuthorizedKeys>", 2),
    "Cfg/home/x/.ssh/authorized_keys/authorizedkeys.xml": (
        ACCEPTED["cfg-authorizedkeys.rng"][1],
        "<AuthorizedKeys>\n  <Group name='g'>\n    <Allows/>\n  </Group>\n</AuthorizedKeys>", 3),
    "NagiosGen/config.xml": (
        NAGIOSGEN_CONFIG, "<NagiosGen>\n  <Option nme='parents'>sw</Option>\n</NagiosGen>", 2),
    "NagiosGen/parents.xml": (
        ACCEPTED["nagiosgen-parents.rng"][0],
        "<NagiosParents>\n  <Depends name='a' on='b'/>\n</NagiosParents>", 2),
    "FileProbes/config.xml": (
        FILEPROBES_CONFIG,
        "<FileProbes>\n  <Client name='c'>\n    <FileProbe nam='/x'/>\n  </Client>\n"
        "</FileProbes>", 3),
    "AWSTags/config.xml": (
        AWSTAGS_CONFIG, "<AWSTags>\n  <Tag nam='x'><Group>g</Group></Tag>\n</AWSTags>", 2),
}


def lint(repository: Repo, tmp_path: Path, *checks: str) -> tuple[int, list[dict[str, str]]]:
    """Run bcfg2-lint in this process; its exit status and the findings it printed."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        status = bcfg2.lint.main(["-C", "/dev/null", "-Q", str(repository), "--plugins",
                                  PLUGINS, "--state-dir", str(tmp_path / "state"), *checks])
    finally:
        sys.stdout, sys.stderr = saved
    findings = []
    for line in out.getvalue().splitlines():
        match = FINDING.match(line)
        assert match, f"not a finding line: {line!r}"
        findings.append(match.groupdict())
    return status, findings


def test_lint_finds_nothing_in_valid_plugin_files(repo: Repo, tmp_path: Path) -> None:
    for path, (valid, _broken, _line) in FILES.items():
        repo.write(path, valid)
    status, findings = lint(repo, tmp_path, "Validate", "AWSTags")
    assert findings == [] and status == 0


def test_lint_reports_each_broken_plugin_file_with_its_line(repo: Repo, tmp_path: Path) -> None:
    for path, (_valid, broken, _line) in FILES.items():
        repo.write(path, broken)
    status, findings = lint(repo, tmp_path, "Validate")
    assert status != 0
    assert {(f["path"], int(f["line"]), f["name"]) for f in findings} == {
        (path, line, "xml-failed-to-verify") for path, (_v, _b, line) in FILES.items()}


def test_lint_reports_every_awstags_pattern_that_does_not_compile(repo: Repo,
                                                                   tmp_path: Path) -> None:
    repo.write("AWSTags/config.xml", """\
        <AWSTags>
          <Tag name="^role$" value="^(web|db)$"><Group>$1</Group></Tag>
          <Tag name="(unclosed"><Group>x</Group></Tag>
          <Tag name="^env$" value="[z-a]"><Group>y</Group></Tag>
        </AWSTags>
        """)
    status, findings = lint(repo, tmp_path, "AWSTags")
    assert status != 0
    assert [(f["path"], int(f["line"]), f["name"]) for f in findings] == [
        ("AWSTags/config.xml", 3, "invalid-tag-pattern"),
        ("AWSTags/config.xml", 4, "invalid-tag-pattern")]
    assert "name='(unclosed'" in findings[0]["message"]
    assert "value='[z-a]'" in findings[1]["message"]

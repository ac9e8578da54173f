"""bcfg2-lint's Migration check on a repository seeded with each item of docs/migrating.md,
Python 2 code in Cheetah templates, and Python 2's random numbers back (Python2Random)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Repo
from test_lint import Result

import bcfg2.lint
from bcfg2.errors import CoreInitError
from bcfg2.migration import REMOVED_PLUGINS, Python2Random, python2_hash
from bcfg2.plugin.manager import find_plugin

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Probes,TemplateHelper"

SEEDED = {
    # plugins that are gone, and where their files go
    "TGenshi/etc/motd/template.newtxt": "Welcome to ${metadata.hostname}\n",
    "TGenshi/etc/motd/template.newtxt.H_web1.example.com": "web1\n",
    "TGenshi/etc/issue/template.txt": "#if True\nold syntax\n#end\n",
    "TCheetah/etc/hosts/template": "127.0.0.1 $self.metadata.hostname\n",
    "TCheetah/etc/hosts/info": "mode: 644\n",
    "SSLCA/etc/pki/web.crt/cert.xml": '<CertInfo><Cert key="/etc/pki/web.key"/></CertInfo>\n',
    "SSLCA/etc/pki/web.key/key.xml": '<KeyInfo><Key type="rsa"/></KeyInfo>\n',
    # an agent's bcfg2.conf asking for TLS 1.0: explicitly, and by default
    "Cfg/etc/bcfg2.conf/bcfg2.conf": ("[components]\nbcfg2 = https://bcfg2.example.com:6789\n"
                                      "\n[communication]\nprotocol = xmlrpc/tlsv1\n"
                                      "password = secret\n"),
    "Cfg/etc/bcfg2.conf/bcfg2.conf.G50_old.genshi": ("[communication]\n"
                                                     "password = ${metadata.hostname}\n"),
    "Cfg/etc/bcfg2.conf/bcfg2.conf.H_new.example.com": "[communication]\nprotocol = xmlrpc/ssl\n",
    # upstream's state in the repository
    "Probes/probed.xml": "<Probed/>\n",
    "etc/bcfg2.sqlite": "",
    # random.seed(hostname) in a Genshi text template, a Genshi bundle, a Cheetah template
    # and a TemplateHelper module
    "Cfg/etc/cron.d/backup/backup.genshi": (
        "{% python\n    import random\n    random.seed(metadata.hostname)\n%}\n"
        "${random.randint(0, 59)} 3 * * * root /usr/local/bin/backup\n"),
    "Bundler/cron.xml": ('<Bundle xmlns:py="http://genshi.edgewall.org/">\n'
                         '  <?python\n'
                         '    from random import seed as s\n'
                         '    s(metadata.hostname)\n'
                         '  ?>\n'
                         '  <Path name="/etc/cron.d/backup"/>\n'
                         '</Bundle>\n'),
    "Cfg/etc/cron.d/report/report.cheetah": (
        "#import random\n#silent random.seed($metadata.hostname)\n"
        "$random.randint(0, 59) 4 * * * root report\n"
        "#set $mode = 0755\n"
        "#if $metadata.Properties.has_key('x')\nx\n#end if\n"),
    "TemplateHelper/minute.py": ("import random\n\n\ndef minute(name):\n"
                                 "    rng = random.Random(name)\n    return rng.randint(0, 59)\n"),
    # and in GroupLogic's groups.xml and Ldap's config.py, which hold code as well
    "GroupLogic/groups.xml": ('<GroupLogic xmlns:py="http://genshi.edgewall.org/">\n'
                              '  <?python\n'
                              '    import random; random.seed(metadata.hostname)\n'
                              '  ?>\n'
                              '</GroupLogic>\n'),
    "Ldap/config.py": "import random\nrandom.seed(42)\n__queries__ = []\n",
}

#: (path, line, error name) bcfg2-lint reports for SEEDED
EXPECTED = {
    ("TGenshi/etc/motd/template.newtxt", None, "removed-plugin"),
    ("TGenshi/etc/motd/template.newtxt.H_web1.example.com", None, "removed-plugin"),
    ("TGenshi/etc/issue/template.txt", None, "removed-plugin"),
    ("TCheetah/etc/hosts/template", None, "removed-plugin"),
    ("TCheetah/etc/hosts/info", None, "removed-plugin"),
    ("SSLCA/etc/pki/web.crt/cert.xml", None, "removed-plugin"),
    ("SSLCA/etc/pki/web.key/key.xml", None, "removed-plugin"),
    ("Cfg/etc/bcfg2.conf/bcfg2.conf", 5, "agent-tls-1-0"),
    ("Cfg/etc/bcfg2.conf/bcfg2.conf.G50_old.genshi", 1, "agent-tls-1-0"),
    ("Probes/probed.xml", None, "upstream-state"),
    ("etc/bcfg2.sqlite", None, "upstream-state"),
    ("Cfg/etc/cron.d/backup/backup.genshi", 3, "random-seed"),
    ("Bundler/cron.xml", 4, "random-seed"),
    ("Cfg/etc/cron.d/report/report.cheetah", 2, "random-seed"),
    ("TemplateHelper/minute.py", 5, "random-seed"),
    ("GroupLogic/groups.xml", 3, "random-seed"),
    ("Ldap/config.py", 2, "random-seed"),
    ("Cfg/etc/cron.d/report/report.cheetah", 4, "python2-code"),
    ("Cfg/etc/cron.d/report/report.cheetah", 5, "python2-code"),
}


@pytest.fixture
def seeded(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="linux" profile="true" default="true">
            <Bundle name="cron"/>
          </Group>
        </Groups>
        """)
    for path, text in SEEDED.items():
        repo.write(path, text, dedent=False)
    return repo


def lint(capsys, tmp_path: Path, repository: Repo, *args: str, config: str = "/dev/null",
         plugins: str = PLUGINS) -> Result:
    capsys.readouterr()
    status = bcfg2.lint.main(["-C", config, "-Q", str(repository), "--plugins", plugins,
                              "--state-dir", str(tmp_path / "state"), *args])
    out, err = capsys.readouterr()
    return Result(status, out, err)


def test_each_migration_item_is_found_with_file_and_line(seeded, capsys, tmp_path):
    result = lint(capsys, tmp_path, seeded, "Migration", "Python2")
    assert result.keys() == EXPECTED
    assert result.status == 2  # removed-plugin and python2-code are errors
    messages = {(f["path"], f["name"]): f["message"] for f in result.findings}
    assert "move this file to Cfg/etc/motd/motd.genshi (as it is)" in \
        messages["TGenshi/etc/motd/template.newtxt", "removed-plugin"]
    assert "Cfg/etc/motd/motd.H_web1.example.com.genshi" in \
        messages["TGenshi/etc/motd/template.newtxt.H_web1.example.com", "removed-plugin"]
    assert "NewTextTemplate syntax" in messages["TGenshi/etc/issue/template.txt", "removed-plugin"]
    assert "Cfg/etc/hosts/hosts.cheetah" in messages["TCheetah/etc/hosts/template", "removed-plugin"]
    assert "Cfg/etc/pki/web.crt/sslcert.xml" in \
        messages["SSLCA/etc/pki/web.crt/cert.xml", "removed-plugin"]
    assert "Cfg/etc/pki/web.key/sslkey.xml" in \
        messages["SSLCA/etc/pki/web.key/key.xml", "removed-plugin"]
    assert "protocol = xmlrpc/ssl" in messages["Cfg/etc/bcfg2.conf/bcfg2.conf", "agent-tls-1-0"]
    assert "has no protocol" in \
        messages["Cfg/etc/bcfg2.conf/bcfg2.conf.G50_old.genshi", "agent-tls-1-0"]
    assert "bcfg2-admin dbcopy --from xml" in messages["Probes/probed.xml", "upstream-state"]
    assert "Python2Random" in messages["TemplateHelper/minute.py", "random-seed"]
    python2 = {f["line"]: f["message"] for f in result.findings if f["name"] == "python2-code"}
    assert "0o755" in python2["4"] and "'x' in metadata.Properties" in python2["5"]


def test_a_site_that_moved_has_nothing_to_report(seeded, capsys, tmp_path):
    for top in ("TGenshi", "TCheetah", "SSLCA"):
        shutil.rmtree(seeded.path / top)
    for path in ("Probes/probed.xml", "etc/bcfg2.sqlite", "Bundler/cron.xml",
                 "TemplateHelper/minute.py", "Cfg/etc/cron.d/report/report.cheetah",
                 "GroupLogic/groups.xml", "Ldap/config.py"):
        (seeded.path / path).unlink()
    seeded.write("Cfg/etc/bcfg2.conf/bcfg2.conf",
                 "[communication]\nprotocol = xmlrpc/ssl\npassword = secret\n", dedent=False)
    seeded.write("Cfg/etc/bcfg2.conf/bcfg2.conf.G50_old.genshi",
                 "[communication]\nprotocol = xmlrpc/ssl\n", dedent=False)
    seeded.write("Cfg/etc/cron.d/backup/backup.genshi",
                 "{% python\n    from bcfg2.migration import Python2Random\n%}\n"
                 "${Python2Random(metadata.hostname).randint(0, 59)} 3 * * * root backup\n",
                 dedent=False)
    seeded.write("Bundler/cron.xml", "<Bundle><Path name='/etc/cron.d/backup'/></Bundle>\n")
    result = lint(capsys, tmp_path, seeded, "Migration", "Python2")
    assert result.findings == []
    assert result.status == 0


def test_probe_data_kept_in_the_repository_is_no_finding(seeded, capsys, tmp_path):
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[probes]\nstorage = xml\n")
    result = lint(capsys, tmp_path, seeded, "Migration", config=str(conf))
    assert ("Probes/probed.xml", None, "upstream-state") not in result.keys()


def test_use_database_in_bcfg2_conf_is_found_with_its_line(repo, capsys, tmp_path):
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[server]\nplugins = Metadata\n\n[metadata]\n# upstream\nuse_database = yes\n"
                    "[probes]\nuse_database = no\n")
    result = lint(capsys, tmp_path, repo, "Migration", config=str(conf))
    assert result.keys() == {(str(conf), 6, "upstream-state")}
    assert "Metadata/clients.xml" in result.findings[0]["message"]


def test_tls_1_0_allowed_by_the_server_is_still_reported_and_says_so(seeded, capsys, tmp_path):
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[communication]\ntls_min_version = 1.0\n")
    result = lint(capsys, tmp_path, seeded, "Migration", config=str(conf))
    messages = [f["message"] for f in result.findings if f["name"] == "agent-tls-1-0"]
    assert len(messages) == 2
    assert all("allows it only while [communication] tls_min_version = 1.0" in m
               for m in messages)


def test_the_migration_errors_are_listed_with_their_levels(capsys):
    assert bcfg2.lint.main(["--list-errors"]) == 0
    listed = dict(line.split(" = ") for line in capsys.readouterr().out.splitlines())
    assert {name: listed[name] for name in ("removed-plugin", "agent-tls-1-0", "upstream-state",
                                            "random-seed")} == {
        "removed-plugin": "error", "agent-tls-1-0": "warning", "upstream-state": "warning",
        "random-seed": "warning"}


@pytest.mark.parametrize("name", sorted(REMOVED_PLUGINS))
def test_a_removed_plugin_in_bcfg2_conf_says_what_replaces_it(name):
    with pytest.raises(CoreInitError) as err:
        find_plugin(name)
    assert str(err.value) == (f"no plugin named {name!r}: upstream Bcfg2's {name} is not part "
                              f"of this server; use {REMOVED_PLUGINS[name]} (docs/migrating.md)")


# -- Python 2's random numbers ---------------------------------------------------------

def python2() -> str | None:
    """A Python 2.7 interpreter that runs, if this machine has one (pyenv's included)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p) for p in sorted(root.glob("2.7*/bin/python"), reverse=True)]
    candidates += [found for found in map(shutil.which, ("python2.7", "python2")) if found]
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-c", "import sys; sys.exit(sys.version_info[:2] "
                                   "!= (2, 7))"], capture_output=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0:
            return candidate
    return None


SEEDS = ["web1.example.com", "db1.example.com", "x", "", "a-much-longer-name.site.example.org",
         "h\u00e9bergement.example.com", *(f"node{i:03d}.example.com" for i in range(40))]

PY2_DRAWS = r"""
import json, random, sys
out = []
for s in json.loads(sys.stdin.read()):
    s = s.encode("utf-8")
    r = random.Random(s)
    items = list(range(12))
    random.Random(s).shuffle(items)
    out.append([hash(s), [r.randint(0, 59) for _ in range(6)], r.choice("abcdefghij"),
                r.randrange(3, 1000, 7), r.randrange(10), r.random(), items])
print(json.dumps(out))
"""


def test_python2random_draws_what_python_2_drew():
    interpreter = python2()
    if interpreter is None:
        pytest.skip("no Python 2.7 on this machine to compare with")
    done = subprocess.run([interpreter, "-c", PY2_DRAWS], input=json.dumps(SEEDS),
                          capture_output=True, text=True, timeout=60, check=True)
    want = json.loads(done.stdout)
    assert any(row[0] < 0 for row in want)  # the seeds cover negative Python 2 hashes
    got = []
    for seed in SEEDS:
        r = Python2Random(seed)
        items = list(range(12))
        Python2Random(seed).shuffle(items)
        signed = python2_hash(seed) - (1 << 64 if python2_hash(seed) >= 1 << 63 else 0)
        got.append([signed, [r.randint(0, 59) for _ in range(6)], r.choice("abcdefghij"),
                    r.randrange(3, 1000, 7), r.randrange(10), r.random(), items])
    assert got == want


def test_python3_seeded_with_a_string_gives_other_numbers():
    """Why the lint check warns: the same template gives most clients another minute."""
    differ = sum(random.Random(seed).randint(0, 59) != Python2Random(seed).randint(0, 59)
                 for seed in SEEDS)
    assert differ > len(SEEDS) // 2


def test_python2random_refuses_what_it_cannot_reproduce():
    rng = Python2Random("web1")
    with pytest.raises(ValueError, match="empty range"):
        rng.randint(5, 4)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        rng.randrange(1 << 60)
    with pytest.raises(IndexError):
        rng.choice([])

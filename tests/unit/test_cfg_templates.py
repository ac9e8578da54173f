"""Cfg templates: Genshi and Jinja2 versions of a file, rendered per client."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import Repo, rewrite

from bcfg2 import templates
from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"><Group name="linux"/></Group>
  <Group name="other" profile="true"/>
  <Group name="all"><Bundle name="base"/></Group>
  <Client name="client1"><Group name="all"/></Client>
  <Client name="client2"><Group name="all"/></Client>
</Groups>
"""


def bundle(repo: Repo, *paths: str, extra: str = "") -> None:
    """Both clients get the bundle "base" with these Path entries."""
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/base.xml", "<Bundle>" + "".join(
        f'<Path name="{path}"/>' for path in paths) + extra + "</Bundle>")


def paths(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    return {el.get("name"): el for el in core.BuildConfiguration(client).iter("Path")}


@pytest.mark.parametrize("fname, text", [
    ("motd.jinja2",
     "{{ metadata.hostname }} {{ name }} {{ path }}\n"
     "{% for g in metadata.groups|sort %}{{ g }},{% endfor %}\n"),
    ("motd.genshi",
     "${metadata.hostname} ${name} ${path == source_path}\n"
     "{% for g in sorted(metadata.groups) %}${g},{% end %}\n"),
])
def test_templates_render_metadata(repo: Repo, local_core: Factory, fname: str,
                                   text: str) -> None:
    bundle(repo, "/etc/motd")
    repo.write(f"Cfg/etc/motd/{fname}", text, dedent=False)
    core = local_core(repo)
    first = "client1 /etc/motd /etc/motd" if fname.endswith("jinja2") else "client1 /etc/motd True"
    assert paths(core, "client1")["/etc/motd"].text == first + "\nall,basic,linux,\n"
    assert paths(core, "client2")["/etc/motd"].text.endswith("\nall,other,\n")


def test_source_path_repo_and_probe_data(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/a", "/etc/b")
    repo.write("Cfg/etc/a/a.jinja2", "{{ source_path }}|{{ repo }}|{{ metadata.Probes['os'] }}\n")
    repo.write("Cfg/etc/b/b.genshi", "${source_path}|${repo}|${metadata.Probes['os']}\n")
    repo.write("Probes/os", "uname -s\n")  # data is kept only for a probe the client ran
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Probes")
    datum = lxml.etree.Element("probe-data", name="os", source="Probes")
    datum.text = "Debian 12"
    core.plugins["Probes"].ReceiveData(core.build_metadata("client1"), [datum])
    got = paths(core, "client1")
    assert got["/etc/a"].text == f"{repo.path}/Cfg/etc/a/a.jinja2|{repo.path}|Debian 12\n"
    assert got["/etc/b"].text == f"{repo.path}/Cfg/etc/b/b.genshi|{repo.path}|Debian 12\n"


@pytest.mark.parametrize("fname, text", [
    ("typo.genshi", "os: ${metadata.Probse}\n"),
    ("typo.jinja2", "os: {{ metadata.Probse['os'] }}\n"),
])
def test_a_misspelt_connector_fails_the_entry_instead_of_rendering_empty(
        repo: Repo, local_core: Factory, fname: str, text: str) -> None:
    # a Connector plugin that is loaded reads as {} while it has merged nothing (Probes
    # here, before any probe data); a name that is no loaded connector's is an error
    bundle(repo, "/etc/typo", "/etc/known")
    typo = repo.write(f"Cfg/etc/typo/{fname}", text)
    repo.write("Cfg/etc/known/known.genshi", "${metadata.Probes.get('os', 'none')}\n")
    core = local_core(repo, server__plugins="Metadata,Bundler,Cfg,Probes")
    got = paths(core, "client1")
    assert got["/etc/known"].text == "none\n"
    failure = got["/etc/typo"].get("failure")
    assert failure is not None and f"{typo}:1:" in failure and "'Probse'" in failure
    assert got["/etc/typo"].text is None


def test_templates_compete_with_plain_files_by_specificity(repo: Repo,
                                                           local_core: Factory) -> None:
    bundle(repo, "/etc/motd", "/etc/issue")
    repo.write("Cfg/etc/motd/motd", "plain\n")
    repo.write("Cfg/etc/motd/motd.G50_linux.jinja2", "linux {{ metadata.hostname }}\n")
    repo.write("Cfg/etc/issue/issue.genshi", "generic ${metadata.hostname}\n")
    repo.write("Cfg/etc/issue/issue.H_client2", "host file\n")
    core = local_core(repo)
    one, two = paths(core, "client1"), paths(core, "client2")
    assert one["/etc/motd"].text == "linux client1\n"
    assert two["/etc/motd"].text == "plain\n"
    assert one["/etc/issue"].text == "generic client1\n"
    assert two["/etc/issue"].text == "host file\n"
    assert core.plugins["Cfg"].best_matching("/etc/motd", core.build_metadata("client1")).group \
        == "linux"


@pytest.mark.parametrize("fname, text, line", [
    ("bad.jinja2", "ok\n{{ metadata.hostname }}\n{{ 1 // 0 }}\n", 3),
    ("bad.genshi", "ok\n{% if metadata.hostname %}\nfine\n${1 // 0}\n{% end %}\n", 4),
    ("bad.jinja2", "ok\n\n{{ metadata.nosuchthing.attr }}\n", 3),
])
def test_a_render_error_fails_only_its_entry(repo: Repo, local_core: Factory, fname: str,
                                             text: str, line: int) -> None:
    bundle(repo, "/etc/bad", "/etc/good")
    bad = repo.write(f"Cfg/etc/bad/{fname}", text)
    repo.write("Cfg/etc/good/good.jinja2", "fine {{ metadata.hostname }}\n")
    core = local_core(repo)
    got = paths(core, "client1")
    assert got["/etc/good"].text == "fine client1\n"
    failure = got["/etc/bad"].get("failure")
    assert f"{bad}:{line}:" in failure
    assert "Traceback" not in failure and got["/etc/bad"].text is None


def test_output_size_is_bounded(repo: Repo, local_core: Factory,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_RENDERED", 1000)
    bundle(repo, "/etc/big", "/etc/small")
    repo.write("Cfg/etc/big/big.jinja2", "{% for i in range(100000) %}xxxx{% endfor %}")
    repo.write("Cfg/etc/small/small.genshi", "{% for i in range(10) %}x{% end %}")
    core = local_core(repo)
    got = paths(core, "client1")
    assert "exceeds 1000 characters" in got["/etc/big"].get("failure")
    assert got["/etc/small"].text == "x" * 10


def test_a_syntax_error_keeps_the_last_good_version(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    bundle(repo, "/etc/motd", "/etc/issue")
    motd = repo.write("Cfg/etc/motd/motd.jinja2", "v1 {{ metadata.hostname }}\n")
    issue = repo.write("Cfg/etc/issue/issue.genshi", "v1 ${metadata.hostname}\n")
    repo.write("Cfg/etc/never/never.jinja2", "{% if %}\n")
    core = local_core(repo)
    assert paths(core, "client1")["/etc/motd"].text == "v1 client1\n"
    caplog.set_level(logging.ERROR)
    rewrite(motd, "v2\n\n{% for x in %}\n")
    rewrite(issue, "v2\n{% for x %}\n${1 +}\n")
    core.refresh()
    got = paths(core, "client1")
    assert got["/etc/motd"].text == "v1 client1\n"
    assert got["/etc/issue"].text == "v1 client1\n"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"{motd}:3:" in msg and "last good version" in msg for msg in errors)
    assert any(str(issue) in msg and "last good version" in msg for msg in errors)
    rewrite(motd, "v3 {{ metadata.hostname }}\n")
    core.refresh()
    assert paths(core, "client1")["/etc/motd"].text == "v3 client1\n"


def test_include_and_extends_across_cfg(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/foo", "/etc/bar")
    repo.write("Cfg/etc/foo/common.jinja2_include",
               "[global]\n{% block s %}s = default{% endblock %}\n")
    repo.write("Cfg/etc/foo/linux.jinja2_include", "[linux]\n")
    repo.write("Cfg/etc/foo/foo.jinja2",
               "{% for g in metadata.groups|sort %}"
               "{% include g + '.jinja2_include' ignore missing %}{% endfor %}")
    repo.write("Cfg/etc/foo/foo.H_client2.jinja2",
               '{% extends "common.jinja2_include" %}{% block s %}s = {{ name }}{% endblock %}')
    repo.write("Cfg/shared/header.jinja2_include", "# {{ metadata.hostname }}\n")
    repo.write("Cfg/etc/bar/bar.jinja2", '{% include "shared/header.jinja2_include" %}body\n')
    core = local_core(repo)
    assert "/etc/foo/common.jinja2_include" not in core.plugins["Cfg"].Entries["Path"]
    one, two = paths(core, "client1"), paths(core, "client2")
    assert one["/etc/foo"].text == "[linux]\n"
    assert two["/etc/foo"].text == "[global]\ns = /etc/foo\n"
    assert one["/etc/bar"].text == "# client1\nbody\n"
    # a changed fragment is read again without touching the template that includes it
    rewrite(repo.path / "Cfg/etc/foo/linux.jinja2_include", "[linux2]\n")
    assert paths(core, "client1")["/etc/foo"].text == "[linux2]\n"


def test_altsrc_template_sees_the_real_name(repo: Repo, local_core: Factory) -> None:
    bundle(repo, extra='<Path name="/etc/ifcfg-eth0" altsrc="/etc/ifcfg-template"/>'
                       '<Path name="/etc/ifcfg-eth1" altsrc="/etc/ifcfg-template"/>')
    repo.write("Cfg/etc/ifcfg-template/ifcfg-template.jinja2",
               "DEVICE={{ name.rsplit('-', 1)[1] }} {{ path }}\n")
    core = local_core(repo)
    got = paths(core, "client1")
    assert got["/etc/ifcfg-eth0"].text == "DEVICE=eth0 /etc/ifcfg-eth0\n"
    assert got["/etc/ifcfg-eth1"].text == "DEVICE=eth1 /etc/ifcfg-eth1\n"


def test_cheetah_templates_see_the_variables_as_attributes_of_self(
        repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/motd", "/etc/crontab")
    repo.write("Cfg/etc/motd/motd.cheetah",
               "Hostname is $self.metadata.hostname\nFilename is $self.path $self.name\n"
               "Template is $self.source_path\n#for $group in sorted($self.metadata.groups)\n"
               " * $group\n#end for\n## a Cheetah comment\n\\# kept\n", dedent=False)
    # upstream's documented example: a stable, per-host random time
    repo.write("Cfg/etc/crontab/crontab.G50_linux.cheetah",
               "#import random\n#silent random.seed($self.metadata.hostname)\n"
               "$random.randrange(0, 59) $random.randrange(0, 6) * * * root daily\n",
               dedent=False)
    repo.write("Cfg/etc/crontab/crontab", "plain\n")
    core = local_core(repo)
    one, two = paths(core, "client1"), paths(core, "client2")
    source = repo.path / "Cfg/etc/motd/motd.cheetah"
    assert one["/etc/motd"].text == (
        f"Hostname is client1\nFilename is /etc/motd /etc/motd\nTemplate is {source}\n"
        " * all\n * basic\n * linux\n# kept\n")
    assert two["/etc/motd"].text.startswith("Hostname is client2\n")
    minute, hour = one["/etc/crontab"].text.split()[:2]
    assert 0 <= int(minute) < 59 and 0 <= int(hour) < 6
    assert paths(local_core(repo), "client1")["/etc/crontab"].text == one["/etc/crontab"].text
    assert two["/etc/crontab"].text == "plain\n"  # not in group linux


def test_a_cheetah_error_fails_its_entry_and_a_syntax_error_keeps_the_last_good_version(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    bundle(repo, "/etc/bad", "/etc/motd")
    bad = repo.write("Cfg/etc/bad/bad.cheetah", "ok\n$self.metadata.nosuchthing\n")
    motd = repo.write("Cfg/etc/motd/motd.cheetah", "v1 $self.metadata.hostname\n")
    core = local_core(repo)
    got = paths(core, "client1")
    assert got["/etc/motd"].text == "v1 client1\n"
    failure = got["/etc/bad"].get("failure")
    assert str(bad) in failure and "nosuchthing" in failure and "Traceback" not in failure
    caplog.set_level(logging.ERROR)
    rewrite(motd, "v2\n#for $x in $y\nno end\n")
    core.refresh()
    assert paths(core, "client1")["/etc/motd"].text == "v1 client1\n"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"{motd}:3:" in msg and "last good version" in msg for msg in errors)

"""Bundler templates: Genshi and Jinja2 bundles rendered per client."""

from __future__ import annotations

import logging

import pytest
from conftest import Repo, rewrite
from test_bundler import Factory, children, groups, structures

from bcfg2 import templates

GENSHI_BUNDLE = """\
    <Bundle xmlns:py="http://genshi.edgewall.org/">
      <Path name="/etc/package-${metadata.hostname}"/>
      <Package py:for="pkg in ['a', 'b']" name="${pkg}"/>
      <py:if test="'linux' in metadata.groups">
        <Service name="linux-only"/>
      </py:if>
      <Group name="other"><Package name="other-only"/></Group>
      <Path name="${repo}"/>
    </Bundle>
"""


@pytest.mark.parametrize("fname", ["web.xml", "web.genshi"])
def test_genshi_bundle_with_if_and_for(repo: Repo, local_core: Factory, fname: str) -> None:
    groups(repo, "web")
    repo.write(f"Bundler/{fname}", GENSHI_BUNDLE)
    core = local_core(repo)
    one, two = structures(core, "client1")["web"], structures(core, "client2")["web"]
    assert children(one) == [("Path", "/etc/package-client1"), ("Package", "a"),
                             ("Package", "b"), ("Service", "linux-only"), ("Path", str(repo))]
    assert children(two) == [("Path", "/etc/package-client2"), ("Package", "a"),
                             ("Package", "b"), ("Package", "other-only"), ("Path", str(repo))]


def test_jinja2_bundle_is_rendered_and_escaped(repo: Repo, local_core: Factory) -> None:
    groups(repo, "mail")
    repo.write("Bundler/mail.xml.jinja2", """\
        <Bundle>
        {% for g in metadata.groups|sort %}<Package name="pkg-{{ g }}"/>{% endfor %}
        <Path name="/etc/{{ metadata.hostname }}&lt;{{ '<x>' }}"/>
        <Group name="linux"><Service name="postfix"/></Group>
        </Bundle>
        """)
    core = local_core(repo)
    one, two = structures(core, "client1")["mail"], structures(core, "client2")["mail"]
    assert children(one) == [("Package", "pkg-all-clients"), ("Package", "pkg-basic"),
                             ("Package", "pkg-linux"), ("Path", "/etc/client1<<x>"),
                             ("Service", "postfix")]
    assert children(two)[-1] == ("Path", "/etc/client2<<x>")


def test_a_broken_bundle_template_fails_only_that_bundle(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    groups(repo, "good", "bad", "badjinja", "notxml")
    repo.write("Bundler/good.xml", '<Bundle><Package name="ok"/></Bundle>')
    bad = repo.write("Bundler/bad.xml", """\
        <Bundle xmlns:py="http://genshi.edgewall.org/">
          <Package name="a"/>
          <Package name="${metadata.Probes['missing']}"/>
        </Bundle>
        """)
    badjinja = repo.write("Bundler/badjinja.xml.jinja2",
                          "<Bundle>\n\n{{ 1 // 0 }}\n</Bundle>\n")
    repo.write("Bundler/notxml.xml.jinja2", "<Bundle>{{ '<a' | safe }}</Bundle>\n")
    core = local_core(repo)
    caplog.set_level(logging.ERROR)
    built = structures(core, "client1")
    assert sorted(built) == ["good"]
    assert children(built["good"]) == [("Package", "ok")]
    errors = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{bad}:3:" in errors
    assert f"{badjinja}:3: ZeroDivisionError" in errors
    assert "Bundle notxml cannot be built" in errors
    # the whole configuration is still built, without the broken bundles
    config = core.BuildConfiguration("client2")
    assert [b.get("name") for b in config.iter("Bundle")] == ["good"]


def test_a_template_syntax_error_keeps_the_last_good_bundle(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    groups(repo, "web", "mail")
    web = repo.write("Bundler/web.xml", GENSHI_BUNDLE)
    mail = repo.write("Bundler/mail.xml.jinja2",
                      '<Bundle><Package name="{{ metadata.hostname }}"/></Bundle>')
    core = local_core(repo)
    caplog.set_level(logging.ERROR)
    rewrite(web, '<Bundle xmlns:py="http://genshi.edgewall.org/">\n'
                 '<Package py:for="x in" name="x"/></Bundle>')
    rewrite(mail, "<Bundle>\n{% for %}</Bundle>")
    core.refresh()
    built = structures(core, "client1")
    assert children(built["mail"]) == [("Package", "client1")]
    assert children(built["web"])[0] == ("Path", "/etc/package-client1")
    errors = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{mail}:2:" in errors and str(web) in errors


@pytest.mark.parametrize("fname, text", [
    ("big.xml", '<Bundle xmlns:py="http://genshi.edgewall.org/">'
                '<Package py:for="i in range(100000)" name="p${i}"/></Bundle>'),
    ("big.xml.jinja2", '<Bundle>{% for i in range(100000) %}<Package name="p{{ i }}"/>'
                       '{% endfor %}</Bundle>'),
])
def test_a_bundle_rendering_past_the_cap_is_left_out(
        repo: Repo, local_core: Factory, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, fname: str, text: str) -> None:
    monkeypatch.setattr(templates, "MAX_RENDERED", 1000)
    groups(repo, "big", "small")
    repo.write(f"Bundler/{fname}", text, dedent=False)
    repo.write("Bundler/small.xml", '<Bundle><Package name="ok"/></Bundle>')
    core = local_core(repo)
    caplog.set_level(logging.ERROR)
    assert sorted(structures(core, "client1")) == ["small"]
    assert "rendered output exceeds 1000 characters" in caplog.text

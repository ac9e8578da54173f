"""Bundler templates: Genshi and Jinja2 bundles rendered per client."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]


def groups(repo: Repo, *bundles: str) -> None:
    """Both clients get the named bundles; client1 is in group linux."""
    listed = "".join(f'<Bundle name="{name}"/>' for name in bundles)
    repo.write("Metadata/groups.xml", f"""\
        <Groups>
          <Group name="basic" profile="true" public="true"><Group name="linux"/></Group>
          <Group name="other" profile="true"/>
          <Group name="all-clients">{listed}</Group>
          <Client name="client1"><Group name="all-clients"/></Client>
          <Client name="client2"><Group name="all-clients"/></Client>
        </Groups>""")


def structures(core: LocalCore, client: str) -> dict[str, lxml.etree._Element]:
    built = core.plugins["Bundler"].BuildStructures(core.build_metadata(client))
    return {s.get("name"): s for s in built}


def children(structure: lxml.etree._Element) -> list[tuple[str, str]]:
    return [(el.tag, el.get("name")) for el in structure]


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

"""The Ldap plugin without a directory: escaping, config.py loading, the missing library."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

pytest.importorskip("ldap3", reason="the Ldap plugin needs ldap3 (pip install ldap3)")

from bcfg2.plugins.ldap import FilterText, FilterView, filter_format, plain  # noqa: E402

PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,Ldap"


def test_filter_text_is_escaped_however_it_is_joined():
    host = FilterText("a*)(cn=*\\")
    escaped = "a\\2a\\29\\28cn=\\2a\\5c"
    assert "(cn=" + host + ")" == f"(cn={escaped})"
    assert "(cn=%s)" % host == f"(cn={escaped})"  # noqa: UP031  (as upstream configs do)
    assert f"(cn={host})" == "(cn={})".format(host) == f"(cn={escaped})"  # noqa: UP032
    # the common string methods keep the escaping; comparisons see the text itself
    assert "(cn=" + host.split(")")[0] + ")" == "(cn=a\\2a)"
    assert "(cn=" + host.upper()[:2] + ")" == "(cn=A\\2a)"
    assert host == "a*)(cn=*\\" and plain(host) == "a*)(cn=*\\"
    assert type(plain(host)) is str


def test_filter_format_escapes_every_value_once():
    assert filter_format("(&(cn=%s)(l=%s))", [FilterText("x*"), "R(1)"]) == \
        "(&(cn=x\\2a)(l=R\\281\\29))"


def test_prepare_query_sees_names_as_filter_text(repo, local_core):
    core = local_core(repo, server__plugins="Metadata")
    view = FilterView(core.build_metadata("client1"))
    assert isinstance(view.hostname, FilterText) and view.hostname == "client1"
    assert all(isinstance(g, FilterText) for g in view.groups) and "linux" in view.groups
    assert view.uuid == "uuid-client1"  # other attributes as they are
    with pytest.raises(AttributeError):
        view.hostname = "other"


def ldap_config(repo, text: str):
    repo.write("Ldap/config.py", text)


@pytest.mark.parametrize(("text", "expected"), [
    ("from Bcfg2.Server.Plugins.Ldap import LdapQuery\nclass Q(LdapQuery):\n    pass\n",
     "no __queries__ list"),
    ("__queries__ = ['Missing']\n", "names 'Missing', which is not an LdapQuery"),
    ("x = 1\nraise ValueError('boom')\n", "config.py:2: ValueError: boom"),
    ("from Bcfg2.Server.Plugins.Ldap import LdapConnection\n"
     "c = LdapConnection(options={1: 2})\n", "config.py:2: ValueError: LdapConnection: unknown"),
])
def test_a_broken_config_is_logged_with_its_line(repo, local_core, caplog, text, expected):
    ldap_config(repo, text)
    core = local_core(repo, server__plugins=PLUGINS)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(expected in message for message in errors), errors
    meta = core.build_metadata("client1")  # the rest of the metadata is served
    assert meta.Ldap == {} and "linux" in meta.groups


def test_kept_results_expire_by_client_or_query(repo, local_core):
    ldap_config(repo, "from Bcfg2.Server.Plugins.Ldap import LdapQuery\n"
                      "class A(LdapQuery): pass\nclass B(LdapQuery): pass\n"
                      "__queries__ = ['A', 'B']\n")
    core = local_core(repo, server__plugins=PLUGINS, ldap__cache="on")
    plugin = core.plugins["Ldap"]
    everything = {(q, h): ("r", []) for q in "AB" for h in ("client1", "client2")}
    plugin._kept.update(everything)
    plugin.expire_cache("client1")  # the core's way: a client name
    assert set(plugin._kept) == {("A", "client2"), ("B", "client2")}
    plugin.expire_cache("A")  # upstream's RMI: a query name
    assert set(plugin._kept) == {("B", "client2")}
    plugin._kept.update(everything)
    plugin.expire_cache("B", "client1")
    assert ("B", "client1") not in plugin._kept and len(plugin._kept) == 3
    plugin.expire_cache()
    assert plugin._kept == {}


def test_missing_ldap3_stops_start_up_with_one_line_naming_it(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['ldap3'] = None\n"
        "from bcfg2.errors import CoreInitError\n"
        "from bcfg2.plugin import manager\n"
        "try:\n"
        "    manager.find_plugin('Ldap')\n"
        "except CoreInitError as err:\n"
        "    print(err)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.count("\n") == 1 and "pip install ldap3" in out, out

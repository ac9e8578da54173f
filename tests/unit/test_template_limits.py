"""Template limits: a template that raises, loops on a huge range, reads a missing
property or renders too much fails only its own entry (Cfg) or bundle (Bundler)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from conftest import Repo
from unit.test_bundler_templates import children, groups, structures
from unit.test_cfg_templates import bundle, paths

from bcfg2 import templates
from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]
T = TypeVar("T")

PLUGINS = "Metadata,Bundler,Cfg,Properties,TemplateHelper"
HELPER = """\
def double(x):
    return 2 * x

def boom():
    raise ValueError("boom from the helper")
"""
PROPERTIES = "<Properties><Server>ntp1</Server><Server>ntp2</Server></Properties>"

#: per engine: a huge range, a call that raises, a missing property, the good entry
CFG = {
    "jinja2": ("{% for i in range(10**9) %}{% endfor %}\n",
               "ok\n{{ metadata.TemplateHelper['h'].boom() }}\n",
               "ok\n\n{{ metadata.Properties['missing.xml'].xdata }}\n",
               "{% for s in metadata.Properties['ntp.xml'].xdata.findall('Server') %}"
               "{{ s.text }} {% endfor %}{{ metadata.TemplateHelper['h'].double(21) }}\n"),
    "genshi": ("{% for i in range(10**9) %}{% end %}\n",
               "ok\n${metadata.TemplateHelper['h'].boom()}\n",
               "ok\n\n${metadata.Properties['missing.xml'].xdata}\n",
               "{% for s in metadata.Properties['ntp.xml'].xdata.findall('Server') %}"
               "${s.text} {% end %}${metadata.TemplateHelper['h'].double(21)}\n"),
}


def bounded(build: Callable[[], T], timeout: float = 20) -> T:
    """The result of ``build``, failing the test if it runs longer than ``timeout``."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(build()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "rendering a template was not bounded"
    assert result, "building the configuration raised"
    return result[0]


def setup_repo(repo: Repo) -> None:
    """Properties/ntp.xml and TemplateHelper/h.py for the templates to use."""
    repo.write("Properties/ntp.xml", PROPERTIES)
    repo.write("TemplateHelper/h.py", HELPER, dedent=False)


@pytest.mark.parametrize("engine", ["jinja2", "genshi"])
def test_cfg_template_failures_fail_only_their_entry(repo: Repo, local_core: Factory,
                                                     engine: str) -> None:
    setup_repo(repo)
    bundle(repo, "/etc/loop", "/etc/raises", "/etc/missing", "/etc/good", "/etc/plain")
    huge, raises, missing, good = CFG[engine]
    loop = repo.write(f"Cfg/etc/loop/loop.{engine}", huge, dedent=False)
    raiser = repo.write(f"Cfg/etc/raises/raises.{engine}", raises, dedent=False)
    absent = repo.write(f"Cfg/etc/missing/missing.{engine}", missing, dedent=False)
    repo.write(f"Cfg/etc/good/good.{engine}", good, dedent=False)
    repo.write("Cfg/etc/plain/plain", "plain\n")
    core = local_core(repo, server__plugins=PLUGINS)
    got = bounded(lambda: paths(core, "client1"))
    assert got["/etc/good"].text == "ntp1 ntp2 42\n"
    assert got["/etc/plain"].text == "plain\n"
    # Genshi reports the line its text block starts on, not always the expression's
    line = {"jinja2": "{}", "genshi": r"\d+"}[engine]
    failure = got["/etc/loop"].get("failure")
    assert re.search(f"{re.escape(str(loop))}:{line.format(1)}: OverflowError: .*100000",
                     failure)
    failure = got["/etc/raises"].get("failure")
    assert re.search(f"{re.escape(str(raiser))}:{line.format(2)}: "
                     "ValueError: boom from the helper", failure)
    failure = got["/etc/missing"].get("failure")
    assert re.search(f"{re.escape(str(absent))}:{line.format(3)}: UndefinedError: "
                     "no key or attribute 'missing.xml' in the dict", failure)
    assert "ntp.xml" not in failure  # the message names the key, not the whole dict
    for name in ("/etc/loop", "/etc/raises", "/etc/missing"):
        assert got[name].text is None and "Traceback" not in got[name].get("failure")


@pytest.mark.parametrize("fname, text", [
    ("big.jinja2", "{% for i in range(100000) %}{% for j in range(100000) %}x"
                   "{% endfor %}{% endfor %}"),
    ("big.genshi", "{% for i in range(100000) %}{% for j in range(100000) %}x"
                   "{% end %}{% end %}"),
])
def test_output_is_streamed_and_stops_at_the_cap(repo: Repo, local_core: Factory,
                                                 monkeypatch: pytest.MonkeyPatch, fname: str,
                                                 text: str) -> None:
    monkeypatch.setattr(templates, "MAX_RENDERED", 1000)
    bundle(repo, "/etc/big", "/etc/small")
    repo.write(f"Cfg/etc/big/{fname}", text, dedent=False)
    repo.write("Cfg/etc/small/small.genshi", "{% for i in range(10) %}x{% end %}")
    core = local_core(repo)
    got = bounded(lambda: paths(core, "client1"))
    assert "exceeds 1000 characters" in got["/etc/big"].get("failure")
    assert got["/etc/small"].text == "x" * 10


def test_jinja2_sandbox_blocks_python_internals(repo: Repo, local_core: Factory) -> None:
    bundle(repo, "/etc/escape")
    escape = repo.write("Cfg/etc/escape/escape.jinja2",
                        "{{ metadata.__class__.__init__.__globals__ }}\n", dedent=False)
    core = local_core(repo)
    failure = paths(core, "client1")["/etc/escape"].get("failure")
    assert f"{escape}:1:" in failure and "SecurityError" in failure


def test_genshi_range_keeps_the_builtin_behaviour() -> None:
    assert list(templates.bounded_range(2, 10, 3)) == [2, 5, 8]
    assert len(templates.bounded_range(templates.MAX_RANGE)) == templates.MAX_RANGE
    with pytest.raises(OverflowError, match="more than 100000"):
        templates.bounded_range(templates.MAX_RANGE + 1)


GENSHI_BUNDLE = '<Bundle xmlns:py="http://genshi.edgewall.org/">{}</Bundle>\n'
#: per engine (file suffix): a huge range, a call that raises, a missing property, a good one
BUNDLES = {
    ".xml": (GENSHI_BUNDLE.format('<py:for each="i in range(10**9)"/>'),
             GENSHI_BUNDLE.format("\n<Package name=\"${metadata.TemplateHelper['h'].boom()}\"/>"),
             GENSHI_BUNDLE.format(
                 "\n\n<Path name=\"${metadata.Properties['missing.xml'].xdata}\"/>"),
             GENSHI_BUNDLE.format(
                 "<Package py:for=\"s in metadata.Properties['ntp.xml'].xdata\""
                 " name=\"${s.text}-${metadata.TemplateHelper['h'].double(21)}\"/>")),
    ".xml.jinja2": (
        "<Bundle>{% for i in range(10**9) %}{% endfor %}</Bundle>\n",
        "<Bundle>\n<Package name=\"{{ metadata.TemplateHelper['h'].boom() }}\"/></Bundle>\n",
        "<Bundle>\n\n<Path name=\"{{ metadata.Properties['missing.xml'].xdata }}\"/></Bundle>\n",
        "<Bundle>{% for s in metadata.Properties['ntp.xml'].xdata %}<Package name=\""
        "{{ s.text }}-{{ metadata.TemplateHelper['h'].double(21) }}\"/>{% endfor %}</Bundle>\n"),
}


@pytest.mark.parametrize("suffix", [".xml", ".xml.jinja2"])
def test_bundle_template_failures_fail_only_their_bundle(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture,
        suffix: str) -> None:
    setup_repo(repo)
    groups(repo, "loop", "raises", "missing", "good", "plain")
    huge, raises, missing, good = BUNDLES[suffix]
    loop = repo.write(f"Bundler/loop{suffix}", huge, dedent=False)
    raiser = repo.write(f"Bundler/raises{suffix}", raises, dedent=False)
    absent = repo.write(f"Bundler/missing{suffix}", missing, dedent=False)
    repo.write(f"Bundler/good{suffix}", good, dedent=False)
    repo.write("Bundler/plain.xml", '<Bundle><Package name="plain"/></Bundle>')
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.ERROR)
    built = bounded(lambda: structures(core, "client1"))
    assert sorted(built) == ["good", "plain"]
    assert children(built["good"]) == [("Package", "ntp1-42"), ("Package", "ntp2-42")]
    errors = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{loop}:1: OverflowError" in errors and "100000" in errors
    assert f"{raiser}:2: ValueError: boom from the helper" in errors
    assert (f"{absent}:3: UndefinedError: no key or attribute 'missing.xml' in the dict"
            in errors)
    config = bounded(lambda: core.BuildConfiguration("client2"))
    assert [b.get("name") for b in config.iter("Bundle")] == ["good", "plain"]


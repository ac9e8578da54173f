"""TemplateHelper: helper modules as metadata.TemplateHelper, exports, reloads, broken modules."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from conftest import PLUGINS, Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]

HELLO = """\
__export__ = ["hello", "GREETING"]
__default__ = ["pining"]

GREETING = "Hello"
hidden = "not exported"


def hello(metadata):
    return "%s, %s!" % (GREETING, metadata.hostname)


def pining(text):
    return "It's pinin' for the %s!" % text
"""

PLAIN = """\
import os

from dataclasses import dataclass

VALUE = 42
_private = 1


@dataclass
class Point:
    x: int
"""


@pytest.fixture
def helper_repo(repo: Repo) -> Repo:
    repo.write("TemplateHelper/hello.py", HELLO)
    repo.write("TemplateHelper/plain.py", PLAIN)
    repo.write("TemplateHelper/README", "not a module")
    return repo


def make(local_core: Factory, repo: Repo) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + ",TemplateHelper")


def helpers(core: LocalCore, client: str = "client1") -> dict:
    return core.build_metadata(client).TemplateHelper


def test_export_list(local_core: Factory, helper_repo: Repo) -> None:
    core = make(local_core, helper_repo)
    found = helpers(core)
    assert sorted(found) == ["hello", "plain"]
    hello = found["hello"]
    assert hello.hello(core.build_metadata("client1")) == "Hello, client1!"
    assert hello.GREETING == "Hello"
    for name in ("hidden", "pining"):
        with pytest.raises(AttributeError):
            getattr(hello, name)


def test_without_export_list_public_names(local_core: Factory, helper_repo: Repo) -> None:
    plain = helpers(make(local_core, helper_repo))["plain"]
    assert sorted(dir(plain)) == ["Point", "VALUE", "dataclass"]
    assert plain.Point(3).x == 3
    assert plain.VALUE == 42


def test_helpers_are_read_only(local_core: Factory, helper_repo: Repo) -> None:
    core = make(local_core, helper_repo)
    with pytest.raises(AttributeError):
        helpers(core)["hello"].GREETING = "Goodbye"
    helpers(core)["hello"] = None
    assert helpers(core, "client2")["hello"].GREETING == "Hello"


def test_reload_when_changed(local_core: Factory, helper_repo: Repo) -> None:
    core = make(local_core, helper_repo)
    assert helpers(core)["hello"].GREETING == "Hello"
    rewrite(helper_repo.path / "TemplateHelper/hello.py", HELLO.replace('"Hello"', '"Howdy"'))
    helper_repo.write("TemplateHelper/extra.py", "__export__ = ['x']\nx = 1\n")
    core.refresh()
    found = helpers(core)
    assert found["hello"].hello(core.build_metadata("client2")) == "Howdy, client2!"
    assert found["extra"].x == 1
    (helper_repo.path / "TemplateHelper/extra.py").unlink()
    core.refresh()
    assert "extra" not in helpers(core)


@pytest.mark.parametrize(("source", "line", "error"), [
    ("__export__ = ['x']\nx = (\n", 2, "SyntaxError"),
    ("__export__ = ['x']\nx = 1\nraise ValueError('boom')\n", 3, "ValueError: boom"),
    ("__export__ = ['x', 'nope']\nx = 1\n", None, "nope"),
])
def test_broken_module_keeps_last_good(local_core: Factory, helper_repo: Repo,
                                       caplog: pytest.LogCaptureFixture,
                                       source: str, line: int | None, error: str) -> None:
    core = make(local_core, helper_repo)
    path = helper_repo.path / "TemplateHelper/hello.py"
    rewrite(path, source)
    helper_repo.write("TemplateHelper/other.py", "__export__ = ['y']\ny = 2\n")
    with caplog.at_level(logging.ERROR):
        core.refresh()
    where = f"{path}:{line}" if line else str(path)
    assert where in caplog.text and error in caplog.text
    found = helpers(core)
    assert found["hello"].GREETING == "Hello"
    assert found["other"].y == 2


def test_broken_from_the_start_others_load(local_core: Factory, helper_repo: Repo) -> None:
    helper_repo.write("TemplateHelper/bad.py", "import no_such_module_here\n")
    assert sorted(helpers(make(local_core, helper_repo))) == ["hello", "plain"]


@pytest.mark.parametrize("fname, text", [
    ("motd.genshi", "${pining('fjords')} ${name}\n"),
    ("motd.jinja2", "{{ pining('fjords') }} {{ name }}\n"),
    ("motd.cheetah", "$pining('fjords') $self.name\n"),
])
def test_default_names_are_in_every_cfg_template(local_core: Factory, helper_repo: Repo,
                                                 fname: str, text: str) -> None:
    from conftest import ALL_BASE_GROUPS

    helper_repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    helper_repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    helper_repo.write(f"Cfg/etc/motd/{fname}", text, dedent=False)
    core = make(local_core, helper_repo)
    motd = core.BuildConfiguration("client1").find("Bundle/Path[@name='/etc/motd']")
    assert motd.text == "It's pinin' for the fjords! /etc/motd\n"


def test_a_default_may_not_replace_a_template_variable(
        local_core: Factory, repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    from conftest import ALL_BASE_GROUPS

    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("TemplateHelper/clash.py", '__default__ = ["name", "extra"]\n'
                                          'name = "clobbered"\nextra = "kept"\n')
    repo.write("TemplateHelper/broken.py", '__default__ = ["nothing_here"]\n')
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    repo.write("Cfg/etc/motd/motd.jinja2", "{{ name }} {{ extra }}\n", dedent=False)
    with caplog.at_level(logging.WARNING):
        core = make(local_core, repo)
        motd = core.BuildConfiguration("client1").find("Bundle/Path[@name='/etc/motd']")
    assert motd.text == "/etc/motd kept\n"
    messages = [r.getMessage() for r in caplog.records]
    assert any("name is a template variable" in m for m in messages)
    assert any("__default__ names what the module does not define: nothing_here" in m
               for m in messages)

"""Python 2 code in repository templates and helpers: found by compiling, named with the
Python 3 form, by bcfg2-lint and in the server's error for that bundle or template."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from conftest import PLUGINS, Repo
from test_bundler import groups, structures

from bcfg2.core import LocalCore
from bcfg2.python2 import check_genshi, check_python

Factory = Callable[..., LocalCore]

#: a helper module as Bcfg2 1.4 sites wrote them (each line of Python 2 is marked)
HELPER = """\
import os


def mode_of(path):
    if not os.path.exists(path):
        raise ValueError, "no such file: %s" % path
    try:
        print "looking at", path
    except IOError, err:
        return `err`
    return ur'\\d' + str(0644)


def has(data, key):
    return data.has_key(key)
"""

HELPER_FINDINGS = [
    (6, 'raise ValueError("no such file: %s" % path)'),
    (8, 'print("looking at", path)'),
    (9, "except IOError as err:"),
    (10, "repr(err)"),
    (11, "0o644"),
    (11, r"r'\d'"),
    (15, "key in data"),
]


def forms(found) -> list[tuple[int, str]]:
    return sorted((f.line, f.python3) for f in found)


def test_each_python2_construct_of_a_module_is_named_with_its_python3_form() -> None:
    assert forms(check_python(HELPER)) == sorted(HELPER_FINDINGS)
    messages = {f.line: f.message for f in check_python(HELPER)}
    assert messages[6] == ('Python 2 code (raise E, msg): in Python 3 write '
                           'raise ValueError("no such file: %s" % path)')


@pytest.mark.parametrize("code, python3", [
    ("print >>sys.stderr, 'x'", "print('x', file=sys.stderr)"),
    ("print 'a',", "print('a', end=\" \")"),
    ("if a <> b: pass", "!="),
    ("x = 0755", "0o755"),
])
def test_more_forms(code: str, python3: str) -> None:
    assert [f.python3 for f in check_python(code)] == [python3]


@pytest.mark.parametrize("code", [
    "print('0644 `x` raise E, m')",          # Python 2 text inside strings
    "print (x)\nx = 0o644\nexcept_ = 1",    # Python 3 that looks alike
    "print = 1",
    "def f(\n",                              # another syntax error: no Python 2 hint
])
def test_code_that_compiles_or_has_no_python2_is_not_flagged(code: str) -> None:
    assert check_python(code) == []


MARKUP = """\
<Bundle xmlns:py="http://genshi.edgewall.org/">
  <?python
    names = ['a', 'b']
    print names
  ?>
  <Path name="/etc/${`names`}"/>
  <py:if test="metadata.Probes.has_key('os') and 1 &lt;&gt; 2">
    <Package name="x"/>
  </py:if>
  <Path py:for="name in names" name="/etc/$name" mode="${'%o' % 0644}"/>
  <Path name="$${`literal`}"/>
</Bundle>
"""


def test_python_of_a_genshi_bundle_is_found_with_its_file_line() -> None:
    assert forms(check_genshi(MARKUP, markup=True)) == [
        (4, "print(names)"), (6, "repr(names)"), (7, "!="),
        (7, "'os' in metadata.Probes"), (10, "0o644")]


TEXT = """\
Hello ${metadata.hostname}
{% python
    modes = {}
    raise KeyError, 'x'
%}
{% if metadata.Properties.has_key('x.xml') %}x{% end %}
mode ${ur'\\d'}
"""


def test_python_of_a_cfg_genshi_template_is_found_with_its_file_line() -> None:
    assert forms(check_genshi(TEXT, markup=False)) == [
        (4, "raise KeyError('x')"), (6, "'x.xml' in metadata.Properties"), (7, r"r'\d'")]


# -- the server: the error for that bundle, entry or helper ----------------------------


def errors(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_a_python2_bundle_fails_with_the_hint(repo: Repo, local_core: Factory,
                                              caplog: pytest.LogCaptureFixture) -> None:
    groups(repo, "old", "good")
    old = repo.write("Bundler/old.genshi", MARKUP)
    repo.write("Bundler/good.xml", '<Bundle><Package name="ok"/></Bundle>')
    caplog.set_level(logging.ERROR, logger="bcfg2")
    core = local_core(repo)
    assert sorted(structures(core, "client1")) == ["good"]
    assert f"{old}:4: Python 2 code (print statement): in Python 3 write print(names)" \
        in errors(caplog)
    assert "4 more Python 2 constructs (bcfg2-lint lists them)" in errors(caplog)


def test_a_python2_cfg_template_fails_its_entry_with_the_hint(repo: Repo,
                                                              local_core: Factory) -> None:
    groups(repo, "motd")
    repo.write("Bundler/motd.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    motd = repo.write("Cfg/etc/motd/motd.genshi", TEXT)
    core = local_core(repo)
    entry = core.BuildConfiguration("client1").find(".//Path[@name='/etc/motd']")
    assert f"{motd}:4: Python 2 code (raise E, msg): in Python 3 write raise KeyError('x')" \
        in entry.get("failure")


def test_has_key_fails_when_rendered_with_the_hint(repo: Repo, local_core: Factory) -> None:
    groups(repo, "motd")
    repo.write("Bundler/motd.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    motd = repo.write("Cfg/etc/motd/motd.genshi",
                      "x\n${metadata.categories.has_key('os')}\n")
    core = local_core(repo)
    failure = core.BuildConfiguration("client1").find(".//Path[@name='/etc/motd']") \
        .get("failure")
    assert f"{motd}:" in failure  # Genshi gives the line where the text block starts
    assert "(Python 2 code (d.has_key()): in Python 3 write k in d)" in failure


def test_a_python2_helper_is_refused_with_the_hint(repo: Repo, local_core: Factory,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    helper = repo.write("TemplateHelper/modes.py", HELPER)
    repo.write("TemplateHelper/fine.py", "def has(data, key):\n    return data.has_key(key)\n")
    caplog.set_level(logging.WARNING)
    core = local_core(repo, server__plugins=PLUGINS)
    loaded = core.build_metadata("client1").TemplateHelper
    assert sorted(loaded) == ["fine"]
    assert (f"{helper}:6: Python 2 code (raise E, msg): in Python 3 write "
            f'raise ValueError("no such file: %s" % path); 6 more') in errors(caplog)
    # has_key compiles: the helper is served, with a warning at its line
    assert (f"{repo.path}/TemplateHelper/fine.py:2: Python 2 code (data.has_key()): "
            f"in Python 3 write key in data") in errors(caplog)


# -- bcfg2-lint ------------------------------------------------------------------------


def test_lint_names_each_construct_with_file_and_line(repo: Repo, tmp_path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import bcfg2.lint

    groups(repo, "old")
    repo.write("Bundler/old.genshi", MARKUP)
    repo.write("Cfg/etc/motd/motd.genshi", TEXT)
    repo.write("TemplateHelper/modes.py", HELPER)
    repo.write("Bundler/motd.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')
    status = bcfg2.lint.main(["-C", "/dev/null", "-Q", str(repo), "--plugins", PLUGINS,
                              "--state-dir", str(tmp_path / "state"), "Python2"])
    out = capsys.readouterr().out
    found = sorted(line.split(": error: ")[0] for line in out.splitlines()
                   if line.endswith("[python2-code]"))
    expected = [f"Bundler/old.genshi:{n}" for n in (4, 6, 7, 7, 10)] \
        + [f"Cfg/etc/motd/motd.genshi:{n}" for n in (4, 6, 7)] \
        + [f"TemplateHelper/modes.py:{n}" for n, _ in HELPER_FINDINGS]
    assert found == sorted(expected)
    assert ("TemplateHelper/modes.py:9: error: Python 2 code (except E, e): in Python 3 "
            "write except IOError as err: [python2-code]") in out
    assert status == 2

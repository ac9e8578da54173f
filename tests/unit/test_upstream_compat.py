"""Repository code written for upstream Bcfg2 imports ``Bcfg2.*``: what it gets, what lint says."""

from __future__ import annotations

from collections.abc import Callable

from conftest import ALL_BASE_GROUPS, PLUGINS, Repo
from test_lint import lint  # noqa: F401 - the fixture

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]


def motd(core: LocalCore, client: str = "client1") -> str:
    return core.BuildConfiguration(client).find("Bundle/Path[@name='/etc/motd']").text


def bundle(repo: Repo) -> None:
    repo.write("Metadata/groups.xml", ALL_BASE_GROUPS)
    repo.write("Bundler/base.xml", '<Bundle><Path name="/etc/motd"/></Bundle>')


def test_templates_read_the_options_as_upstream_1_4_and_1_3_did(repo: Repo,
                                                                 local_core: Factory) -> None:
    bundle(repo)
    repo.write("Cfg/etc/motd/motd.genshi", """\
        {% python
            import Bcfg2.Options
            opts = {'repo': Bcfg2.Options.SERVER_REPOSITORY}
            setup = Bcfg2.Options.OptionParser(opts)
            setup.parse('--')
        %}\\
        ${setup['repo'] == Bcfg2.Options.setup.repository} ${Bcfg2.Options.setup.repository}
        """)
    core = local_core(repo)
    assert motd(core) == f"True {repo.path}\n"


def test_a_helper_raises_upstream_s_plugin_errors(repo: Repo, local_core: Factory) -> None:
    bundle(repo)
    repo.write("TemplateHelper/strict.py", """\
        from Bcfg2.Server.Plugin import PluginExecutionError

        __export__ = ["need"]


        def need(metadata, group):
            if group not in metadata.groups:
                raise PluginExecutionError("%s is not in %s" % (metadata.hostname, group))
            return group
        """)
    repo.write("Cfg/etc/motd/motd.jinja2",
               "{{ metadata.TemplateHelper['strict'].need(metadata, 'linux') }}\n")
    core = local_core(repo, server__plugins=PLUGINS)
    assert motd(core, "client1") == "linux\n"
    failed = core.BuildConfiguration("client2").find("Bundle/Path[@name='/etc/motd']")
    assert "client2 is not in linux" in failed.get("failure")


def test_lint_names_upstream_imports_this_server_lacks(repo: Repo, lint) -> None:  # noqa: F811
    bundle(repo)
    repo.write("Cfg/etc/motd/motd.genshi", """\
        {% python
            import Bcfg2.Options
            from Bcfg2.Server.Plugins.Cfg import CfgGenerator
        %}\\
        ${Bcfg2.Options.setup.repository}
        """)
    repo.write("Cfg/etc/issue/issue.cheetah", "#import Bcfg2.Server.Admin\nhello\n")
    repo.write("TemplateHelper/old.py", "import Bcfg2.Client.Tools\n"
                                        "from Bcfg2.Options import setup, get_option_parser\n")
    repo.write("TemplateHelper/fine.py", "from Bcfg2.Server.Plugin import PluginExecutionError\n"
                                         "from Bcfg2.Server.Plugins.Ldap import LdapQuery\n")
    result = lint(repo, plugins=PLUGINS)
    found = {(f["path"].rsplit("/", 1)[-1], f["line"]): f["message"] for f in result.findings
             if f["name"] == "upstream-import"}
    assert set(found) == {("motd.genshi", "3"), ("issue.cheetah", "1"), ("old.py", "1"),
                          ("old.py", "2")}
    assert found[("motd.genshi", "3")].startswith("Bcfg2.Server.Plugins.Cfg is upstream")
    assert "metadata" in found[("motd.genshi", "3")]
    assert "Bcfg2.Options.get_option_parser" in found[("old.py", "2")]
    assert "Bcfg2.Options.setup.NAME" in found[("old.py", "2")]
    assert "agent" in found[("old.py", "1")]

"""bcfg2-lint through its command line, in process: findings, exit status, configuration."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from conftest import PLUGINS, REPO_EXAMPLE, Repo, genrepo

import bcfg2.lint
from bcfg2.lint.base import CHECKS, all_errors

FINDING = re.compile(r"^(?P<path>[^:]+)(?::(?P<line>\d+))?: (?P<level>error|warning): "
                     r"(?P<message>.+) \[(?P<name>[a-z0-9-]+)\]$")


class Result:
    """What one bcfg2-lint run printed, and its exit status."""

    def __init__(self, status: int, out: str, err: str) -> None:
        self.status = status
        self.out = out
        self.err = err
        self.lines = [line for line in out.splitlines() if line]

    @property
    def findings(self) -> list[dict[str, str]]:
        out = []
        for line in self.lines:
            match = FINDING.match(line)
            assert match, f"not a finding line: {line!r}"
            out.append(match.groupdict())
        return out

    def keys(self) -> set[tuple[str, int | None, str]]:
        return {(f["path"], int(f["line"]) if f["line"] else None, f["name"])
                for f in self.findings}

    def levels(self) -> dict[str, str]:
        return {f["name"]: f["level"] for f in self.findings}


@pytest.fixture
def lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Run bcfg2-lint on a repository with the Makefile's plugin list."""
    def run(repository: Repo | Path | str, *args: str, plugins: str = PLUGINS,
            config: str = "/dev/null") -> Result:
        capsys.readouterr()
        status = bcfg2.lint.main(["-C", config, "-Q", str(repository), "--plugins", plugins,
                                  "--state-dir", str(tmp_path / "state"), *args])
        out, err = capsys.readouterr()
        return Result(status, out, err)
    return run


@pytest.fixture
def repo(repo: Repo) -> Repo:
    """conftest's minimal repository, with the bundle its groups.xml names."""
    repo.write("Bundler/base.xml", "<Bundle/>\n")
    return repo


# -- a repository with one mistake of each kind ---------------------------------

SEEDED = {
    "Metadata/groups.xml": """\
        <Groups>
          <Group name="web" profile="true" public="true">
            <Group name="linux"/>
          </Group>
          <Group name="db" profile="true">
            <Group name="linux"/>
          </Group>
          <Group name="web" profile="true"/>
          <Group name="linux">
            <Bundle name="base"/>
            <Bundle name="missing"/>
            <Bundle name="templated"/>
          </Group>
          <Group name="web">
            <Bundle name="web"/>
          </Group>
        </Groups>
        """,
    "Metadata/clients.xml": """\
        <Clients version="3.0">
          <Client name="web1.example.com" profile="web"/>
          <Client name="web2.example.com" profile="web"/>
          <Client name="db1.example.com" profile="db"/>
          <Client name="odd1.example.com" profile="linux"/>
          <Client name="web1.example.com" profile="web"/>
        </Clients>
        """,
    "Bundler/base.xml": """\
        <Bundle>
          <Path name="/etc/motd"/>
          <Path name="/etc/issue"/>
          <Path name="/etc/hosts"/>
        </Bundle>
        """,
    "Bundler/web.xml": """\
        <Bundle>
          <Package name="nginx"/>
          <Path name="/etc/nogen"/>
          <Package name="nginx"/>
        </Bundle>
        """,
    "Bundler/orphan.xml": """\
        <Bundle>
          <Package name="nginx"/>
        </Bundle>
        """,
    "Bundler/templated.xml": """\
        <Bundle xmlns:py="http://genshi.edgewall.org/">
          <Path name="/etc/motd"/>
          <py:for each="x">
            <Package name="${x}"/>
          </py:for>
        </Bundle>
        """,
    "Cfg/etc/motd/motd": "hello\n",
    "Cfg/etc/motd/motd.G10_nosuch": "hello\n",
    "Cfg/etc/motd/info.xml": """\
        <FileInfo>
          <Info owner="root" group="root"/>
        </FileInfo>
        """,
    "Cfg/etc/issue/issue.jinja2": "Welcome\n{{ metadata.hostname( }}\n",
    "Cfg/etc/hosts/hosts.genshi": "127.0.0.1 localhost ${metadata.hostname}\n",
    "Cfg/etc/unused/unused": "nobody wants me\n",
    "Rules/packages.xml": """\
        <Rules priority="0">
          <Package name="nginx" type="deb"/>
          <Group name="ubuntu">
            <Package name="curl" type="deb" version="auto"/>
          </Group>
        </Rules>
        """,
    "Rules/broken.xml": """\
        <Rules priority="1">
          <Package name="vim" type="deb" version="auto">
        </Rules>
        """,
    "Decisions/whitelist.xml": """\
        <Decisions>
          <Decision type="Path" name="/etc/motd"/>
          <Decision name="/etc/issue"/>
        </Decisions>
        """,
    "Probes/arch": "uname -m\n",
    "Defaults/defaults.xml": "<Defaults/>\n",
}

SEEDED_FINDINGS = {
    ("Bundler/orphan.xml", None, "unused-bundle"),
    ("Bundler/templated.xml", 3, "genshi-syntax-error"),
    ("Bundler/web.xml", 3, "unbound-entry"),
    ("Bundler/web.xml", 4, "duplicate-entry"),
    ("Cfg/etc/issue/issue.jinja2", 2, "jinja2-syntax-error"),
    ("Cfg/etc/motd/info.xml", 2, "required-infoxml-attrs-missing"),
    ("Cfg/etc/motd/motd.G10_nosuch", None, "undefined-group"),
    ("Cfg/etc/unused", None, "unused-cfg-entry"),
    ("Decisions/whitelist.xml", 3, "xml-failed-to-verify"),
    ("Metadata/clients.xml", 5, "not-a-profile-group"),
    ("Metadata/clients.xml", 6, "duplicate-client"),
    ("Metadata/groups.xml", 8, "duplicate-group"),
    ("Metadata/groups.xml", 11, "bundle-not-found"),
    ("Probes/arch", 1, "probe-missing-interpreter"),
    ("Rules/broken.xml", 3, "xml-failed-to-parse"),
    ("Rules/packages.xml", 2, "required-attrs-missing"),
    ("Rules/packages.xml", 3, "undefined-group"),
}


@pytest.fixture
def seeded(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "seeded")
    for relative, text in SEEDED.items():
        repo.write(relative, text)
    return repo


def test_repo_example_is_clean(lint) -> None:
    result = lint(REPO_EXAMPLE)
    assert result.lines == []
    assert result.status == 0
    assert "0 errors, 0 warnings" in result.err


def test_each_seeded_mistake_is_reported_at_its_file_and_line(lint, seeded: Repo) -> None:
    result = lint(seeded)
    assert result.keys() == SEEDED_FINDINGS
    assert result.status == 2
    assert result.err.strip().endswith("bcfg2-lint: 11 errors, 6 warnings")


def test_findings_are_sorted_by_path_then_line(lint, seeded: Repo) -> None:
    result = lint(seeded)
    order = [(f["path"], int(f["line"] or 0)) for f in result.findings]
    assert order == sorted(order)


def test_messages_name_what_is_wrong(lint, seeded: Repo) -> None:
    text = lint(seeded).out
    assert ("Bundler/web.xml:3: error: Path /etc/nogen has no generator for clients "
            "web1.example.com, web2.example.com [unbound-entry]") in text
    assert "Package nginx is listed twice in bundle web (also at line 2)" in text
    assert "Info for /etc/motd does not set mode" in text
    assert "client web1.example.com is listed twice (also at line 2)" in text
    assert "bundle missing does not exist" in text
    assert "Package nginx has no version" in text
    assert "group ubuntu is used here but never defined" in text
    assert "Cfg has files for /etc/unused, but no bundle lists it" in text


def test_default_levels_of_seeded_findings(lint, seeded: Repo) -> None:
    levels = lint(seeded).levels()
    assert levels["undefined-group"] == "warning"
    assert levels["unused-cfg-entry"] == "warning"
    assert levels["unbound-entry"] == "error"
    assert levels["xml-failed-to-parse"] == "error"


# -- exit status and error paths --------------------------------------------------

def test_missing_repository_is_one_line_and_status_1(lint, tmp_path: Path) -> None:
    result = lint(tmp_path / "nowhere")
    assert result.status == 1
    assert result.out == ""
    assert len(result.err.strip().splitlines()) == 1
    assert "nowhere" in result.err and result.err.startswith("bcfg2-lint: ")


def test_unreadable_bcfg2_conf_is_status_1(lint, repo: Repo, tmp_path: Path) -> None:
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("this is not an ini file\n")
    result = lint(repo, config=str(conf))
    assert result.status == 1
    assert len(result.err.strip().splitlines()) == 1


def test_malformed_groups_xml_is_reported_with_its_line(lint, repo: Repo) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true">
        </Groups>
        """)
    result = lint(repo)
    assert ("Metadata/groups.xml", 3, "xml-failed-to-parse") in result.keys()
    assert result.status == 2


def test_unknown_check_name_is_one_line(lint, repo: Repo) -> None:
    result = lint(repo, "NoSuchCheck")
    assert result.status == 1
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "NoSuchCheck" in lines[0]


def test_warnings_only_give_status_3(lint, repo: Repo) -> None:
    repo.write("Cfg/etc/unused/unused", "x\n")
    result = lint(repo)
    assert result.keys() == {("Cfg/etc/unused", None, "unused-cfg-entry")}
    assert result.status == 3
    assert "0 errors, 1 warning" in result.err


# -- configuration -----------------------------------------------------------------

def test_lint_config_can_silence_an_error(lint, seeded: Repo, tmp_path: Path) -> None:
    conf = tmp_path / "lint.conf"
    conf.write_text("[errors]\n" + "".join(f"{name} = silent\n" for name in all_errors()))
    result = lint(seeded, "--lint-config", str(conf))
    assert result.lines == []
    assert result.status == 0


def test_lint_config_can_demote_an_error_to_a_warning(lint, repo: Repo, tmp_path: Path) -> None:
    repo.write("Bundler/extra.xml", '<Bundle><Path name="/etc/nogen"/></Bundle>\n')
    (repo.path / "Bundler/base.xml").unlink()
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true"><Bundle name="extra"/></Group>
          <Group name="other" profile="true"/>
        </Groups>
        """)
    assert lint(repo).status == 2
    conf = tmp_path / "lint.conf"
    conf.write_text("[errors]\nunbound-entry = warning\n")
    result = lint(repo, "--lint-config", str(conf))
    assert result.keys() == {("Bundler/extra.xml", 1, "unbound-entry")}
    assert result.levels() == {"unbound-entry": "warning"}
    assert result.status == 3


def test_bcfg2_conf_sections_configure_lint(lint, repo: Repo, tmp_path: Path) -> None:
    repo.write("Cfg/etc/unused/unused", "x\n")
    repo.write("Cfg/etc/unused/info.xml", '<FileInfo><Info owner="root"/></FileInfo>\n')
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[errors]\nunused-cfg-entry = silent\n"
                    "[InfoXML]\nrequired_attrs = owner\n")
    result = lint(repo, config=str(conf))
    assert result.lines == []
    assert result.status == 0


def test_lint_plugins_option_and_command_line_choose_checks(lint, seeded: Repo,
                                                            tmp_path: Path) -> None:
    conf = tmp_path / "lint.conf"
    conf.write_text("[lint]\nplugins = InfoXML, Probes\n")
    result = lint(seeded, "--lint-config", str(conf))
    assert {name for _p, _l, name in result.keys()} == {
        "required-infoxml-attrs-missing", "probe-missing-interpreter"}
    result = lint(seeded, "--lint-config", str(conf), "duplicates")
    assert {name for _p, _l, name in result.keys()} == {
        "duplicate-entry", "duplicate-client", "duplicate-group"}


def test_bad_level_in_lint_config_is_one_line(lint, repo: Repo, tmp_path: Path) -> None:
    conf = tmp_path / "lint.conf"
    conf.write_text("[errors]\nunbound-entry = loud\n")
    result = lint(repo, "--lint-config", str(conf))
    assert result.status == 1
    assert "loud" in result.err and len(result.err.strip().splitlines()) == 1


def test_list_errors_names_every_error_with_its_level(lint, repo: Repo) -> None:
    result = lint(repo, "--list-errors")
    assert result.status == 0
    listed = dict(line.split(" = ") for line in result.out.splitlines())
    assert listed == all_errors()
    assert listed["unbound-entry"] == "error"
    assert listed["undefined-group"] == "warning"


def test_stdin_limits_findings_to_the_listed_files(lint, seeded: Repo,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        "Bundler/web.xml\n" + str(seeded.path / "Rules/packages.xml") + "\n"))
    result = lint(seeded, "--stdin")
    assert result.keys() == {
        ("Bundler/web.xml", 3, "unbound-entry"),
        ("Bundler/web.xml", 4, "duplicate-entry"),
        ("Rules/packages.xml", 2, "required-attrs-missing"),
        ("Rules/packages.xml", 3, "undefined-group"),
    }


# -- what each check sees ----------------------------------------------------------

def test_only_enabled_plugins_are_checked(lint, repo: Repo) -> None:
    repo.write("ACL/ip.xml", "<ACL><Allow/></ACL>\n")
    repo.write("Deps/broken.xml", "<Dependencies>\n")
    assert lint(repo).lines == []
    result = lint(repo, plugins=PLUGINS + ",ACL")
    assert ("ACL/ip.xml", 1, "xml-failed-to-verify") in result.keys()


def test_xincluded_files_are_validated_with_the_including_schema(lint, repo: Repo) -> None:
    repo.write("Metadata/clients.xml", """\
        <Clients version="3.0" xmlns:xi="http://www.w3.org/2001/XInclude">
          <Client name="client1" profile="basic"/>
          <xi:include href="more-clients.xml"/>
          <xi:include href="gone.xml"/>
        </Clients>
        """)
    repo.write("Metadata/more-clients.xml", """\
        <Clients>

          <Client name="client2" profil="other"/>
        </Clients>
        """)
    result = lint(repo)
    assert ("Metadata/more-clients.xml", 3, "xml-failed-to-verify") in result.keys()
    assert ("Metadata/clients.xml", 4, "xinclude-failed") in result.keys()


def test_duplicates_under_other_conditions_are_not_reported(lint, repo: Repo) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true"><Bundle name="base"/></Group>
          <Group name="other" profile="true"><Bundle name="base"/></Group>
        </Groups>
        """)
    repo.write("Bundler/base.xml", """\
        <Bundle>
          <Group name="basic"><Package name="ssh"/></Group>
          <Group name="other"><Package name="ssh"/></Group>
          <Group name="basic"><Package name="ssh"/></Group>
        </Bundle>
        """)
    repo.write("Rules/pkgs.xml", """\
        <Rules priority="1">
          <Group name="basic"><Package name="ssh" version="1"/></Group>
          <Group name="other"><Package name="ssh" version="2"/></Group>
          <Group name="other"><Package name="ssh" version="3"/></Group>
        </Rules>
        """)
    result = lint(repo)
    assert result.keys() == {("Bundler/base.xml", 4, "duplicate-entry"),
                             ("Rules/pkgs.xml", 4, "duplicate-entry")}


def test_unbound_entry_names_few_clients_and_counts_the_rest(lint, repo: Repo) -> None:
    clients = "".join(f'<Client name="c{i}" profile="basic"/>' for i in range(8))
    repo.write("Metadata/clients.xml", f"<Clients>{clients}</Clients>\n")
    repo.write("Metadata/groups.xml", """\
        <Groups><Group name="basic" profile="true"><Bundle name="b"/></Group></Groups>
        """)
    repo.write("Bundler/b.xml", '<Bundle>\n<Service name="nothing"/>\n</Bundle>\n')
    result = lint(repo)
    assert "Service nothing has no generator for clients c0, c1, c2, c3, c4 and 3 more" \
        in result.out
    result = lint(repo, "-v")
    assert "clients c0, c1, c2, c3, c4, c5, c6, c7 [unbound-entry]" in result.out


def test_rules_entries_completed_by_defaults_are_not_missing_attributes(lint,
                                                                        repo: Repo) -> None:
    repo.write("Rules/r.xml", """\
        <Rules priority="1">
          <Package name="ssh"/>
          <Path name="/etc/link" type="symlink"/>
          <Path name="/srv"/>
          <Path name="/etc/ok" type="symlink" to="/etc/motd"/>
        </Rules>
        """)
    repo.write("Defaults/d.xml", '<Defaults><Package name=".*" version="auto"/></Defaults>\n')
    result = lint(repo, "RequiredAttrs")
    assert result.keys() == {("Rules/r.xml", 3, "required-attrs-missing"),
                             ("Rules/r.xml", 4, "required-attrs-missing")}
    assert "Path /etc/link has no to" in result.out
    assert "Path /srv has no type" in result.out


def test_path_with_an_unknown_type_fails_the_schema(lint, repo: Repo) -> None:
    repo.write("Rules/r.xml", '<Rules>\n  <Path name="/etc/x" type="fiel"/>\n</Rules>\n')
    assert ("Rules/r.xml", 2, "xml-failed-to-verify") in lint(repo, "Validate").keys()


def test_templated_bundles_count_as_using_cfg_entries(lint, repo: Repo) -> None:
    (repo.path / "Bundler/base.xml").unlink()
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true"><Bundle name="gen"/><Bundle name="jin"/></Group>
          <Group name="other" profile="true"/>
        </Groups>
        """)
    repo.write("Bundler/gen.xml", """\
        <Bundle xmlns:py="http://genshi.edgewall.org/">
          <Path py:for="n in ['a', 'b']" name="/etc/gen-${n}"/>
        </Bundle>
        """)
    repo.write("Bundler/jin.xml.jinja2", """\
        <Bundle>
        {% for n in ['c'] %}<Path name="/etc/jin-{{ n }}"/>{% endfor %}
        </Bundle>
        """)
    for name in ("gen-a", "gen-b", "jin-c", "nobody"):
        repo.write(f"Cfg/etc/{name}/{name}", "x\n")
    result = lint(repo)
    assert result.keys() == {("Cfg/etc/nobody", None, "unused-cfg-entry")}


def test_bundle_template_failing_for_a_client_is_reported(lint, repo: Repo) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true"><Bundle name="gen"/></Group>
          <Group name="other" profile="true"/>
        </Groups>
        """)
    repo.write("Bundler/gen.xml", """\
        <Bundle xmlns:py="http://genshi.edgewall.org/">

          <Path name="/etc/${metadata.Properties['missing.xml'].xdata}"/>
        </Bundle>
        """)
    result = lint(repo)
    assert ("Bundler/gen.xml", 3, "bundle-render-failed") in result.keys()
    assert "client1" in result.out


def test_groups_from_patterns_and_grouplogic_count_as_defined(lint, repo: Repo) -> None:
    repo.write("GroupPatterns/config.xml", """\
        <GroupPatterns>
          <GroupPattern><NamePattern>^(\\w+)\\d$</NamePattern><Group>role-$1</Group></GroupPattern>
        </GroupPatterns>
        """)
    repo.write("GroupLogic/groups.xml", """\
        <GroupLogic><Group name="basic"><Group name="logical"/></Group></GroupLogic>
        """)
    repo.write("Rules/r.xml", """\
        <Rules>
          <Group name="role-client"><Package name="a" version="1"/></Group>
          <Group name="logical"><Package name="b" version="1"/></Group>
          <Group name="nowhere"><Package name="c" version="1"/></Group>
        </Rules>
        """)
    result = lint(repo, "GroupNames", plugins=PLUGINS + ",GroupLogic")
    assert result.keys() == {("Rules/r.xml", 4, "undefined-group")}


def test_cfg_template_syntax_errors_in_both_engines(lint, repo: Repo) -> None:
    repo.write("Cfg/etc/a/a.jinja2", "ok\n{% if %}\n")
    repo.write("Cfg/etc/b/b.genshi", "{% for x %}\n{% end %}\n")
    result = lint(repo, "Jinja2", "Genshi")
    names = {(path, name) for path, _line, name in result.keys()}
    assert names == {("Cfg/etc/a/a.jinja2", "jinja2-syntax-error"),
                     ("Cfg/etc/b/b.genshi", "genshi-syntax-error")}
    assert ("Cfg/etc/a/a.jinja2", 2, "jinja2-syntax-error") in result.keys()


def test_every_check_has_a_doc_and_known_levels() -> None:
    assert {"Validate", "Generators", "Duplicates", "InfoXML", "Genshi", "Jinja2",
            "GroupNames", "CfgUnused", "Bundles", "Metadata", "RequiredAttrs",
            "Probes", "GroupPatterns"} <= set(CHECKS)
    for chk in CHECKS.values():
        assert chk.doc
        assert set(chk.errors.values()) <= {"error", "warning"}


def test_a_generated_repository_is_clean(lint, tmp_path: Path) -> None:
    spec = genrepo.RepoSpec(clients=6, profiles=2, groups=3, groups_per_profile=2, bundles=3,
                            entries=12, files_per_entry=3, info_every=3, packages=10,
                            services=4)
    genrepo.generate(str(tmp_path / "gen"), spec)
    result = lint(tmp_path / "gen", plugins="Metadata,Bundler,Cfg,Rules,Defaults")
    assert result.lines == []
    assert result.status == 0


def test_group_patterns_are_read_as_the_plugin_reads_them(lint, repo: Repo) -> None:
    repo.write("GroupPatterns/config.xml", """\
        <GroupPatterns>
          <GroupPattern><NamePattern>^web\\d+$</NamePattern><Group>web</Group></GroupPattern>
          <GroupPattern><NamePattern>^(db</NamePattern><Group>db</Group></GroupPattern>
        </GroupPatterns>
        """)
    result = lint(repo, "GroupPatterns")
    assert result.keys() == {("GroupPatterns/config.xml", 3, "invalid-group-pattern")}
    assert "invalid regular expression '^(db'" in result.out


def test_lint_leaves_the_server_loggers_as_it_found_them(lint, seeded: Repo) -> None:
    import logging

    before = logging.getLogger("bcfg2").level
    lint(seeded)
    assert logging.getLogger("bcfg2").level == before


def test_several_default_profiles_are_a_warning_at_the_one_used(lint, repo: Repo) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true" default="true"/>
          <Group name="other" profile="true" default="true"/>
        </Groups>
        """)
    result = lint(repo, "Metadata")
    assert result.keys() == {("Metadata/groups.xml", 3, "multiple-default-groups")}
    assert result.levels() == {"multiple-default-groups": "warning"}
    message = result.findings[0]["message"]
    assert "uses other" in message and "basic (Metadata/groups.xml:2)" in message
    assert result.status == 3


def test_one_default_profile_is_no_finding(lint, repo: Repo) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true" default="true"/>
          <Group name="other" profile="true" default="false"/>
        </Groups>
        """)
    assert lint(repo, "Metadata").keys() == set()

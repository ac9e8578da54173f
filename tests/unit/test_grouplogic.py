"""GroupLogic: groups declared under Group/Client conditionals, live reloads, cache expiry."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lxml.etree
import pytest
from conftest import PLUGINS, Repo, rewrite

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]

GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"><Group name="linux"/></Group>
  <Group name="other" profile="true"/>
  <Group name="webapp-frontend" category="component"/>
  <Group name="dev" category="environment"/>
  <Client name="client1"><Group name="webapp-frontend"/><Group name="dev"/></Client>
  <Client name="client2"><Group name="dev"/></Client>
  <Group name="webapp-frontend-dev"><Bundle name="frontend-dev"/></Group>
</Groups>
"""

LOGIC = """\
<GroupLogic>
  <Group name="webapp-frontend">
    <Group name="dev">
      <Group name="webapp-frontend-dev"/>
    </Group>
  </Group>
  <Group name="linux" negate="true">
    <Group name="not-linux"/>
  </Group>
  <Client name="client2">
    <Group name="second"/>
  </Client>
</GroupLogic>
"""


@pytest.fixture
def logic_repo(repo: Repo) -> Repo:
    repo.write("Metadata/groups.xml", GROUPS)
    repo.write("Bundler/frontend-dev.xml", '<Bundle><Package name="frontend"/></Bundle>')
    repo.write("GroupLogic/groups.xml", LOGIC)
    return repo


def make(local_core: Factory, repo: Repo, plugins: str = ",GroupLogic",
         **overrides: str) -> LocalCore:
    return local_core(repo, server__plugins=PLUGINS + plugins, **overrides)


def logic_groups(core: LocalCore, client: str) -> set[str]:
    return core.build_metadata(client).additional_groups


def test_groups_follow_from_groups_and_bring_their_bundles(logic_repo, local_core) -> None:
    core = make(local_core, logic_repo)
    assert logic_groups(core, "client1") == {"webapp-frontend-dev"}
    assert logic_groups(core, "client2") == {"not-linux", "second"}
    metadata = core.build_metadata("client1")
    assert "frontend-dev" in metadata.bundles
    built = core.plugins["Bundler"].BuildStructures(metadata)
    assert [(el.tag, el.get("name")) for s in built for el in s] == [("Package", "frontend")]
    assert "frontend-dev" not in core.build_metadata("client2").bundles


def test_groups_from_group_patterns_are_conditions(logic_repo, local_core) -> None:
    logic_repo.write("GroupPatterns/config.xml", """\
        <GroupPatterns><GroupPattern><NamePattern>^client(\\d)$</NamePattern>
        <Group>number-$1</Group></GroupPattern></GroupPatterns>""")
    logic_repo.write("GroupLogic/groups.xml", """\
        <GroupLogic><Group name="number-2"><Group name="even"/></Group></GroupLogic>""")
    core = make(local_core, logic_repo, ",GroupLogic,GroupPatterns")
    assert logic_groups(core, "client2") == {"number-2", "even"}
    assert logic_groups(core, "client1") == {"number-1"}


def test_a_live_edit_takes_effect_after_refresh(logic_repo, local_core) -> None:
    core = make(local_core, logic_repo)
    rewrite(logic_repo.path / "GroupLogic/groups.xml",
            LOGIC.replace('<Client name="client2">', '<Client name="client1">'))
    assert core.refresh() > 0
    assert logic_groups(core, "client1") == {"webapp-frontend-dev", "second"}
    assert logic_groups(core, "client2") == {"not-linux"}


@pytest.mark.parametrize(("broken", "message"), [
    ("<GroupLogic>\n<Group name='x'>", "groups.xml:2:"),
    ("<GroupLogic>\n<Bundle name='x'/></GroupLogic>", "groups.xml:2: unknown element <Bundle>"),
    ('<GroupLogic xmlns:py="http://genshi.edgewall.org/">\n\n'
     '<py:if test="1 +"><Group name="x"/></py:if></GroupLogic>',
     "groups.xml:3:"),
])
def test_a_malformed_file_keeps_the_last_good_version(logic_repo, local_core, caplog,
                                                      broken, message) -> None:
    core = make(local_core, logic_repo)
    rewrite(logic_repo.path / "GroupLogic/groups.xml", broken)
    with caplog.at_level(logging.ERROR):
        core.refresh()
    assert message in caplog.text
    assert logic_groups(core, "client1") == {"webapp-frontend-dev"}


def test_aggressive_caching_expires_only_the_clients_whose_groups_change(
        logic_repo, local_core) -> None:
    core = make(local_core, logic_repo, caching__client_metadata="aggressive")
    client1 = core.build_metadata("client1")
    client2 = core.build_metadata("client2")
    assert core.build_metadata("client1") is client1
    rewrite(logic_repo.path / "GroupLogic/groups.xml",
            LOGIC.replace('<Group name="not-linux"/>', '<Group name="unix"/>'))
    core.refresh()
    assert core.build_metadata("client1") is client1
    renewed = core.build_metadata("client2")
    assert renewed is not client2 and "unix" in renewed.groups and "not-linux" not in renewed.groups


def test_a_logic_group_changes_the_configuration_served(logic_repo, network_server) -> None:
    server = network_server(logic_repo, server__plugins=PLUGINS + ",GroupLogic")

    def bundles(user: str, password: str) -> list[str]:
        config = lxml.etree.fromstring(server.proxy(user, password).GetConfig().encode())
        return [b.get("name") for b in config.iter("Bundle")]

    assert "frontend-dev" in bundles("uuid-client1", "pw1")
    assert "frontend-dev" not in bundles("uuid-client2", "pw2")


GENSHI_LOGIC = """\
<GroupLogic xmlns:py="http://genshi.edgewall.org/">
  <py:if test="metadata.hostname == 'client1'">
    <Group name="first"/>
  </py:if>
  <Group name="profile-${metadata.profile}"/>
  <Group name="dev">
    <Group name="dev-${metadata.hostname}"/>
  </Group>
</GroupLogic>
"""


def test_a_genshi_template_is_rendered_for_each_client(logic_repo, local_core, caplog) -> None:
    logic_repo.write("GroupLogic/groups.xml", GENSHI_LOGIC)
    core = make(local_core, logic_repo)
    assert logic_groups(core, "client1") == {"first", "profile-basic", "dev-client1"}
    assert logic_groups(core, "client2") == {"profile-other", "dev-client2"}
    # a template that fails for one client gives that client no GroupLogic groups
    rewrite(logic_repo.path / "GroupLogic/groups.xml", GENSHI_LOGIC.replace(
        "<Group name=\"first\"/>", "<Group name=\"${1 // 0}\"/>"))
    core.refresh()
    with caplog.at_level(logging.ERROR):
        assert logic_groups(core, "client1") == set()
    assert "ZeroDivisionError" in caplog.text and "client1" in caplog.text
    assert logic_groups(core, "client2") == {"profile-other", "dev-client2"}


def test_removing_a_templated_file_removes_its_groups(logic_repo, local_core) -> None:
    logic_repo.write("GroupLogic/groups.xml", GENSHI_LOGIC)
    core = make(local_core, logic_repo)
    assert logic_groups(core, "client2") == {"profile-other", "dev-client2"}
    (logic_repo.path / "GroupLogic/groups.xml").unlink()
    core.refresh()
    assert logic_groups(core, "client2") == set()


# -- what a template sees, and how its errors are logged -----------------------------

REPO_LOGIC = """\
<GroupLogic xmlns:py="http://genshi.edgewall.org/">
  <?python
import os
  ?>
  <Group py:if="os.path.isdir(os.path.join(repo, 'Cfg', 'etc', metadata.hostname))"
         name="has-cfg-dir"/>
  <Group name="dev">
    <Group name="${metadata.hostname}-${len(metadata.hostname)}"/>
  </Group>
</GroupLogic>
"""


def test_a_template_sees_repo_as_in_bcfg2(logic_repo, local_core) -> None:
    logic_repo.write("GroupLogic/groups.xml", REPO_LOGIC)
    logic_repo.mkdir("Cfg/etc/client1")
    core = make(local_core, logic_repo)
    assert logic_groups(core, "client1") == {"has-cfg-dir", "client1-7"}
    assert logic_groups(core, "client2") == {"client2-7"}


def render_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "GroupLogic template failed" in r.getMessage()]


def test_a_render_error_is_logged_once_per_template_version_with_file_and_line(
        logic_repo, local_core, caplog) -> None:
    path = logic_repo.path / "GroupLogic/groups.xml"
    logic_repo.write("GroupLogic/groups.xml", REPO_LOGIC.replace("len(", "1 // 0 + len("))
    core = make(local_core, logic_repo, caching__client_metadata="off")
    with caplog.at_level(logging.DEBUG, logger="bcfg2"):
        for _run in range(3):
            for client in ("client1", "client2"):
                assert logic_groups(core, client) == set()
        errors = [r for r in render_errors(caplog) if r.levelno == logging.ERROR]
        assert len(errors) == 1  # the other five failures at debug level
        assert len(render_errors(caplog)) >= 6
        assert f"{path}:8: ZeroDivisionError" in errors[0].getMessage()
        # a new version of the file is logged again
        rewrite(path, REPO_LOGIC.replace("len(", "undefined_name + len("))
        core.refresh()
        assert logic_groups(core, "client1") == set()
        errors = [r for r in render_errors(caplog) if r.levelno == logging.ERROR]
        assert len(errors) == 2
        assert f"{path}:8: UndefinedError" in errors[1].getMessage()
        assert '"undefined_name" not defined' in errors[1].getMessage()

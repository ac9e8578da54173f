"""What real Bcfg2 1.4 repositories do that the server must take as Bcfg2 does.

Each test runs an agent through the builtin core: the agent must get the
profile and groups the repository gives it, and the server log must say
what in the repository is doubtful, with the file and line.
"""

from __future__ import annotations

import logging

import lxml.etree
from conftest import PLUGINS

TWO_DEFAULTS = """\
<Groups>
  <Group name="basic" profile="true" public="true" default="true">
    <Bundle name="basic-bundle"/>
  </Group>
  <Group name="other" profile="true" default="true">
    <Bundle name="other-bundle"/>
  </Group>
</Groups>
"""

BUNDLE = '<Bundle><Action name="{name}"/></Bundle>\n'
RULES = ('<Rules priority="1">' + "".join(
    f'<Action name="{name}" command="true" when="always" timing="post" status="check"/>'
    for name in ("basic-bundle", "other-bundle")) + "</Rules>\n")


def bundles_of(config: str) -> set[str]:
    return {b.get("name") for b in lxml.etree.fromstring(config.encode()).iter("Bundle")}


def test_two_default_profiles_serve_the_last_one_and_warn_once(repo, network_server, caplog):
    repo.write("Metadata/groups.xml", TWO_DEFAULTS)
    for name in ("basic-bundle", "other-bundle"):
        repo.write(f"Bundler/{name}.xml", BUNDLE.format(name=name))
    repo.write("Rules/rules.xml", RULES)
    caplog.set_level(logging.WARNING, logger="bcfg2")
    server = network_server(repo)
    # a client of clients.xml is served as before
    assert bundles_of(server.proxy("uuid-client1", "pw1").GetConfig()) == {"basic-bundle"}
    # a newcomer gets the default profile: "other", the last one marked, as in Bcfg2
    newcomer = server.proxy("client3", "globalpw")
    assert newcomer.DeclareVersion("1.4.0") is True
    assert bundles_of(newcomer.GetConfig()) == {"other-bundle"}
    assert server.core.build_metadata("client3").profile == "other"
    warnings = [r.getMessage() for r in caplog.records
                if 'more than one group is marked default="true"' in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"{repo.path}/Metadata/groups.xml:5:" in warnings[0]
    assert "groups.xml:2" in warnings[0] and "basic" in warnings[0]


GROUPLOGIC_GROUPS = """\
<Groups>
  <Group name="basic" profile="true" public="true"/>
  <Group name="other" profile="true"/>
  <Group name="has-cfg-dir">
    <Bundle name="special"/>
  </Group>
</Groups>
"""

#: as sites write it: a group for the clients that have a directory in the repository
GROUPLOGIC = """\
<GroupLogic xmlns:py="http://genshi.edgewall.org/">
  <?python
import os
  ?>
  <Group py:if="os.path.isdir(os.path.join(repo, 'Cfg', 'etc', metadata.hostname))"
         name="has-cfg-dir"/>
</GroupLogic>
"""


def test_grouplogic_templates_see_repo_and_give_their_groups(repo, network_server, caplog):
    repo.write("Metadata/groups.xml", GROUPLOGIC_GROUPS)
    repo.write("GroupLogic/groups.xml", GROUPLOGIC)
    repo.write("Bundler/special.xml", BUNDLE.format(name="special"))
    repo.write("Rules/rules.xml", RULES.replace("basic-bundle", "special"))
    repo.mkdir("Cfg/etc/client1")
    caplog.set_level(logging.ERROR, logger="bcfg2")
    server = network_server(repo, server__plugins=PLUGINS + ",GroupLogic")
    config = lxml.etree.fromstring(server.proxy("uuid-client1", "pw1").GetConfig().encode())
    assert {b.get("name") for b in config.iter("Bundle")} == {"special"}
    assert [a.get("name") for a in config.iter("Action")] == ["special"]
    assert "failure" not in config.find(".//Action").attrib
    assert bundles_of(server.proxy("uuid-client2", "pw2").GetConfig()) == set()
    assert "has-cfg-dir" in server.core.build_metadata("client1").groups
    assert [r.getMessage() for r in caplog.records if "GroupLogic" in r.getMessage()] == []

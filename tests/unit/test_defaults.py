"""Defaults: attributes for bound entries that nothing else has set."""

from __future__ import annotations

from collections.abc import Callable

import lxml.etree
import pytest
from conftest import Repo

from bcfg2.core import LocalCore

Factory = Callable[..., LocalCore]


def bundle(repo: Repo, *entries: str) -> None:
    repo.write("Bundler/base.xml", "<Bundle>\n" + "\n".join(entries) + "\n</Bundle>\n")


def entries(config: lxml.etree._Element, tag: str) -> dict[str, lxml.etree._Element]:
    return {el.get("name"): el for el in config.iter(tag)}


def test_defaults_fill_only_unset_attributes(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Service name="sshd"/>', '<Service name="ntpd"/>')
    rules = {"sshd": {"status": "on"}, "ntpd": {"status": "on", "type": "chkconfig"}}
    repo.write("Rules/services.xml", '<Rules priority="0">' + "".join(
        "<Service name='{}' {}/>".format(name, " ".join(f'{k}="{v}"' for k, v in attrs.items()))
        for name, attrs in rules.items()) + "</Rules>")
    default = {"type": "systemd", "status": "off", "restart": "true"}
    repo.write("Defaults/d.xml", '<Defaults priority="0"><Service name=".*" '
               + " ".join(f'{k}="{v}"' for k, v in default.items()) + "/></Defaults>")
    core = local_core(repo)
    services = entries(core.BuildConfiguration("client1"), "Service")
    for name, attrs in rules.items():
        assert dict(services[name].attrib) == {**default, **attrs, "name": name}


def test_defaults_apply_to_bound_entries_without_overriding(repo: Repo,
                                                           local_core: Factory) -> None:
    bundle(repo, '<BoundService name="a" status="on" type="chkconfig"/>',
           '<BoundService name="b" status="on"/>')
    repo.write("Defaults/d.xml", '<Defaults priority="0"><Service name=".*" type="systemd"/>'
                                 '</Defaults>')
    core = local_core(repo)
    services = entries(core.BuildConfiguration("client1"), "Service")
    assert services["a"].get("type") == "chkconfig"
    assert services["b"].get("type") == "systemd"


def test_defaults_names_are_anchored_regexes(repo: Repo, local_core: Factory) -> None:
    names = ["sshd", "ssh", "openssh-server", "sshguard"]
    bundle(repo, *(f'<Package name="{name}"/>' for name in names))
    repo.write("Rules/p.xml", '<Rules priority="0">' + "".join(
        f'<Package name="{name}" version="auto"/>' for name in names) + "</Rules>")
    repo.write("Defaults/d.xml", '<Defaults priority="0"><Package name="ssh.?" type="deb"/>'
                                 '</Defaults>')
    core = local_core(repo)
    packages = entries(core.BuildConfiguration("client1"), "Package")
    typed = sorted(name for name, el in packages.items() if el.get("type") == "deb")
    assert typed == ["ssh", "sshd"]
    assert all(el.get("version") == "auto" for el in packages.values())


def test_defaults_do_not_bind_entries(repo: Repo, local_core: Factory) -> None:
    bundle(repo, '<Service name="only-defaults-knows"/>', '<Service name="sshd"/>')
    repo.write("Rules/r.xml", '<Rules priority="0"><Service name="sshd" status="on"/></Rules>')
    repo.write("Defaults/d.xml", '<Defaults priority="0">'
                                 '<Service name="only-defaults-knows" status="on" type="x"/>'
                                 '<Service name="sshd" type="systemd"/></Defaults>')
    core = local_core(repo)
    services = entries(core.BuildConfiguration("client1"), "Service")
    orphan = services["only-defaults-knows"]
    assert orphan.get("failure") == "no matching generator"
    assert orphan.get("status") is None and orphan.get("type") is None
    assert services["sshd"].get("type") == "systemd"


def test_defaults_conditionals_and_priorities(repo: Repo, local_core: Factory) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true"><Group name="linux"/></Group>
          <Group name="other" profile="true"><Bundle name="base"/></Group>
          <Group name="linux"><Bundle name="base"/></Group>
        </Groups>""")
    bundle(repo, '<Service name="sshd"/>')
    repo.write("Rules/r.xml", '<Rules priority="0"><Service name="sshd" status="on"/></Rules>')
    repo.write("Defaults/low.xml", '<Defaults priority="1"><Service name=".*" type="upstart"/>'
                                   '</Defaults>')
    repo.write("Defaults/high.xml", '<Defaults priority="9"><Group name="linux">'
                                    '<Service name=".*" type="systemd"/></Group></Defaults>')
    core = local_core(repo)
    assert entries(core.BuildConfiguration("client1"), "Service")["sshd"].get("type") == "systemd"
    assert entries(core.BuildConfiguration("client2"), "Service")["sshd"].get("type") == "upstart"


@pytest.mark.parametrize("replace", ["true", "false"])
def test_defaults_replace_name(repo: Repo, local_core: Factory, replace: str) -> None:
    users = ["alice", "bob"]
    bundle(repo, *(f'<POSIXUser name="{user}"/>' for user in users))
    repo.write("Rules/u.xml", '<Rules priority="0">' + "".join(
        f'<POSIXUser name="{user}" uid="{1000 + i}"/>' for i, user in enumerate(users))
        + "</Rules>")
    repo.write("Defaults/d.xml", '<Defaults priority="0">'
                                 '<POSIXUser name=".*" home="/home/%{name}"/></Defaults>')
    core = local_core(repo, defaults__replace_name=replace)
    bound = entries(core.BuildConfiguration("client1"), "POSIXUser")
    for i, user in enumerate(users):
        assert bound[user].get("uid") == str(1000 + i)
        assert bound[user].get("home") == (f"/home/{user}" if replace == "true"
                                           else "/home/%{name}")

"""AWSTags: EC2 tags (from moto's in-process EC2, never a real endpoint) as data and groups."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

import lxml.etree
import pytest
from conftest import Repo, rewrite

from bcfg2.core import LocalCore
from bcfg2.errors import CoreInitError

boto3 = pytest.importorskip("boto3", reason="boto3 is in the test extra: pip install boto3")
moto = pytest.importorskip("moto", reason="moto is in the test extra: pip install moto")

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,AWSTags"
REGION = "us-east-1"
#: an image moto knows (its descriptions are slow to list)
IMAGE = "ami-12c6146b"

#: the example of the Bcfg2 documentation
DOC_CONFIG = """\
<AWSTags>
  <Tag name="^foo$">
    <Group>foo</Group>
  </Tag>
  <Tag name="^bar$" value="^bar$">
    <Group>bar</Group>
  </Tag>
  <Tag name="^bcfg2 group$" value="(.*)">
    <Group>$1</Group>
  </Tag>
</AWSTags>
"""


@pytest.fixture
def ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """moto's EC2, in this process, with fake credentials; nothing leaves the machine."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with moto.mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def instance(ec2, tags: dict[str, str]) -> tuple[str, str]:
    """Start an instance with tags; its (id, private DNS name)."""
    spec = [{"ResourceType": "instance",
             "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    made = ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, TagSpecifications=spec)
    inst = made["Instances"][0]
    return inst["InstanceId"], inst["PrivateDnsName"]


def clients(repo: Repo, *names: str) -> None:
    repo.write("Metadata/clients.xml", "<Clients version='3.0'>" + "".join(
        f'<Client name="{n}" profile="basic" uuid="uuid-{i}" password="pw-{i}"/>'
        for i, n in enumerate(names)) + "</Clients>")


def retag(ec2, instance_id: str, tags: dict[str, str]) -> None:
    old = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"]
    if old:
        ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": t["Key"]} for t in old])
    ec2.create_tags(Resources=[instance_id],
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def test_tags_are_template_data_and_the_documented_patterns_give_groups(
        repo: Repo, local_core: Factory, ec2) -> None:
    _, name = instance(ec2, {"Name": "foo.example.com", "foo": "anything", "bar": "bar",
                             "bcfg2 group": "webserver"})
    _, other = instance(ec2, {"bar": "not bar"})
    clients(repo, name, other)
    repo.write("AWSTags/config.xml", DOC_CONFIG)
    core = local_core(repo, server__plugins=PLUGINS)
    meta = core.build_metadata(name)
    assert meta.AWSTags == {"Name": "foo.example.com", "foo": "anything", "bar": "bar",
                            "bcfg2 group": "webserver"}
    assert {"foo", "bar", "webserver"} <= meta.groups
    other_meta = core.build_metadata(other)
    assert other_meta.AWSTags == {"bar": "not bar"}
    assert not {"foo", "bar", "webserver"} & other_meta.groups


def test_backreferences_of_a_name_only_pattern_come_from_the_name(
        repo: Repo, local_core: Factory, ec2) -> None:
    _, name = instance(ec2, {"role-web": "", "role-db": "yes"})
    clients(repo, name)
    repo.write("AWSTags/config.xml", '<AWSTags><Tag name="^role-(.*)$">'
                                     "<Group>$1-server</Group></Tag></AWSTags>")
    core = local_core(repo, server__plugins=PLUGINS)
    assert {"web-server", "db-server"} <= core.build_metadata(name).groups


def test_a_client_without_an_instance_gets_no_tags(repo: Repo, local_core: Factory,
                                                   ec2) -> None:
    instance(ec2, {"foo": "x"})
    repo.write("AWSTags/config.xml", DOC_CONFIG)
    core = local_core(repo, server__plugins=PLUGINS)
    meta = core.build_metadata("client1")
    assert meta.AWSTags == {} and "foo" not in meta.groups


def test_a_wildcard_name_is_never_sent_to_ec2(repo: Repo, local_core: Factory, ec2) -> None:
    instance(ec2, {"foo": "x"})
    core = local_core(repo, server__plugins=PLUGINS)
    assert core.plugins["AWSTags"].fetch_tags("*") == {}
    assert core.plugins["AWSTags"].fetch_tags("ip-*") == {}


def test_tags_are_kept_until_the_client_starts_a_run(repo: Repo, local_core: Factory,
                                                     ec2) -> None:
    inst, name = instance(ec2, {"foo": "1"})
    clients(repo, name)
    repo.write("AWSTags/config.xml", DOC_CONFIG)
    core = local_core(repo, server__plugins=PLUGINS, caching__client_metadata="aggressive")
    assert "foo" in core.build_metadata(name).groups
    retag(ec2, inst, {"bar": "bar"})
    assert core.build_metadata(name).AWSTags == {"foo": "1"}  # kept
    core.BuildConfiguration(name)  # the run starts with fresh tags, which changed
    meta = core.build_metadata(name)
    assert meta.AWSTags == {"bar": "bar"}
    assert "bar" in meta.groups and "foo" not in meta.groups


def test_without_the_cache_every_build_asks_ec2(repo: Repo, local_core: Factory, ec2) -> None:
    inst, name = instance(ec2, {"foo": "1"})
    clients(repo, name)
    core = local_core(repo, server__plugins=PLUGINS, awstags__cache="false")
    assert core.build_metadata(name).AWSTags == {"foo": "1"}
    retag(ec2, inst, {"foo": "2"})
    assert core.build_metadata(name).AWSTags == {"foo": "2"}


def test_a_tag_value_that_is_no_group_name_gives_no_group(
        repo: Repo, local_core: Factory, ec2, caplog: pytest.LogCaptureFixture) -> None:
    _, name = instance(ec2, {"bcfg2 group": "two words", "foo": ""})
    clients(repo, name)
    repo.write("AWSTags/config.xml", DOC_CONFIG)
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.WARNING)
    groups = core.build_metadata(name).groups
    assert "foo" in groups and "two words" not in groups
    assert "'two words', which is no group name" in caplog.text


def test_a_broken_config_keeps_the_last_good_patterns(
        repo: Repo, local_core: Factory, ec2, caplog: pytest.LogCaptureFixture) -> None:
    _, name = instance(ec2, {"foo": ""})
    clients(repo, name)
    path = repo.write("AWSTags/config.xml", DOC_CONFIG)
    core = local_core(repo, server__plugins=PLUGINS)
    assert "foo" in core.build_metadata(name).groups
    caplog.set_level(logging.ERROR)
    rewrite(path, '<AWSTags>\n  <Tag name="(unclosed"><Group>x</Group></Tag>\n</AWSTags>\n')
    core.refresh()
    assert "config.xml:2: invalid regular expression" in caplog.text
    assert "foo" in core.build_metadata(name).groups
    assert core.BuildConfiguration(name).tag == "Configuration"


@pytest.mark.parametrize("text, message", [
    ('<AWSTags><Tag name="^a$" value="^b$"><Group>$1</Group></Tag></AWSTags>',
     "uses $1, but '^b$' has 0 parenthesised group(s)"),
    ('<AWSTags><Tag value="x"><Group>g</Group></Tag></AWSTags>', "<Tag> without a name"),
    ('<AWSTags><Tag name="x"/></AWSTags>', "<Tag> without a <Group>"),
    ('<AWSTags><Pattern name="x"/></AWSTags>', "unknown element <Pattern>"),
])
def test_config_errors_name_file_and_line(text: str, message: str) -> None:
    from bcfg2.plugins.awstags import parse_patterns

    with pytest.raises(Exception, match="config.xml:1: ") as info:
        parse_patterns(lxml.etree.fromstring(text), "config.xml")
    assert message in str(info.value)


def test_an_ec2_failure_gives_no_tags_and_the_build_goes_on(
        repo: Repo, local_core: Factory, ec2, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import botocore.exceptions

    _, name = instance(ec2, {"foo": ""})
    clients(repo, name)
    core = local_core(repo, server__plugins=PLUGINS)
    plugin = core.plugins["AWSTags"]

    def unreachable(**kwargs):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="https://ec2.invalid")

    monkeypatch.setattr(plugin._ec2, "describe_instances", unreachable)
    caplog.set_level(logging.ERROR)
    assert core.build_metadata(name).AWSTags == {}
    assert f"cannot get the tags of {name} from EC2" in caplog.text
    assert core.BuildConfiguration(name).tag == "Configuration"


def test_without_boto3_only_a_server_listing_awstags_refuses_to_start(
        repo: Repo, local_core: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now fails
    assert local_core(repo, server__plugins="Metadata,Bundler,Cfg,Rules,Defaults") \
        .BuildConfiguration("client1").tag == "Configuration"
    with pytest.raises(CoreInitError) as info:
        local_core(repo, server__plugins=PLUGINS)
    message = str(info.value)
    assert "\n" not in message and "pip install boto3" in message


def test_an_agent_gets_groups_from_its_instance_tags(repo: Repo, network_server, ec2) -> None:
    _, name = instance(ec2, {"bcfg2 group": "webserver", "Name": "web"})
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true"/>
          <Group name="webserver"><Bundle name="web"/></Group>
        </Groups>""")
    clients(repo, name, "client2")
    repo.write("AWSTags/config.xml", DOC_CONFIG)
    repo.write("Bundler/web.xml", '<Bundle><Path name="/etc/instance-name"/></Bundle>')
    repo.write("Cfg/etc/instance-name/instance-name.genshi", "${metadata.AWSTags['Name']}\n")
    server = network_server(repo, server__plugins=PLUGINS)
    config = lxml.etree.fromstring(server.proxy("uuid-0", "pw-0").GetConfig().encode())
    assert [b.get("name") for b in config.iter("Bundle")] == ["web"]
    assert config.find(".//Path[@name='/etc/instance-name']").text == "web\n"
    other = lxml.etree.fromstring(server.proxy("uuid-1", "pw-1").GetConfig().encode())
    assert [b.get("name") for b in other.iter("Bundle")] == []

"""AWSTags: the EC2 tags of a client's instance, as template data and as groups.

The instance is the one whose ``private-dns-name`` is the client's name.
Its tags are ``metadata.AWSTags`` (tag name -> value). ``AWSTags/config.xml``
(optional) turns tags into groups::

    <AWSTags>
      <Tag name="^role$" value="^(web|db)$"><Group>$1-server</Group></Tag>
      <Tag name="^monitored$"><Group>monitored</Group></Tag>
    </AWSTags>

``name`` and ``value`` are regular expressions searched in the tag's name
and value; a Tag with only ``name`` asks that such a tag exists. ``$1``,
``$2``... in a Group stand for the parenthesised groups of ``value`` when it
is given, of ``name`` otherwise. Tags are kept per client (``[awstags]
cache``) and fetched again when the client starts a run; if they changed,
the client's cached metadata is expired.

Needs boto3 (``pip install boto3``), imported only when AWSTags is loaded.
Credentials come from ``[awstags]`` or, when those are empty, from boto3's
usual places (environment, ~/.aws, the instance's role).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.identity import valid_client_name
from bcfg2.options import Option
from bcfg2.plugin import (
    Caching,
    ClientRunHooks,
    Connector,
    Plugin,
    PluginInitError,
    XMLFileBacked,
)
from bcfg2.untrusted import GROUP_NAME, MAX_GROUP_NAME, escaped

if TYPE_CHECKING:
    from bcfg2.filemonitor import FileMonitor
    from bcfg2.metadata import ClientMetadata

#: ``$1`` in a group name
SUBSTITUTION = re.compile(r"\$(\d+)")
#: EC2 allows 50 tags per instance; more than this is not believed
MAX_TAGS = 256


@dataclass(frozen=True)
class TagPattern:
    """One ``<Tag>``: the groups for a client with a matching tag."""

    name: re.Pattern[str]
    value: re.Pattern[str] | None
    groups: tuple[str, ...]

    def process(self, tags: dict[str, str]) -> list[str]:
        """The groups (substituted) for a set of tags; [] if no tag matches."""
        out: list[str] = []
        for key in sorted(tags):
            match = self.name.search(key)
            if match is None:
                continue
            if self.value is not None:
                match = self.value.search(tags[key])
                if match is None:
                    continue
            found = match.groups()
            for group in self.groups:
                name = SUBSTITUTION.sub(lambda m, f=found: f[int(m.group(1)) - 1] or "", group)
                if name not in out:
                    out.append(name)
        return out


def parse_patterns(root: lxml.etree._Element, path: str) -> tuple[TagPattern, ...]:
    """The patterns of an AWSTags/config.xml; RepositoryError with path:line if it is wrong."""
    if root.tag != "AWSTags":
        raise RepositoryError(f"{path}:{root.sourceline}: the root element must be <AWSTags>, "
                              f"not <{root.tag}>")
    out = []
    for node in root:
        if not isinstance(node.tag, str):
            continue
        if node.tag != "Tag":
            raise RepositoryError(f"{path}:{node.sourceline}: unknown element <{node.tag}> "
                                  f"(Tag expected)")
        out.append(_pattern(node, path))
    return tuple(out)


def _pattern(node: lxml.etree._Element, path: str) -> TagPattern:
    where = f"{path}:{node.sourceline}"
    if node.get("name") is None:
        raise RepositoryError(f"{where}: <Tag> without a name attribute")
    regexes: dict[str, re.Pattern[str]] = {}
    for attr in ("name", "value"):
        text = node.get(attr)
        if text is None:
            continue
        try:
            regexes[attr] = re.compile(text)
        except re.error as err:
            raise RepositoryError(f"{where}: invalid regular expression {attr}={text!r}: "
                                  f"{err}") from None
    groups = []
    for child in node:
        if not isinstance(child.tag, str):
            continue
        if child.tag != "Group" or not (child.text or "").strip():
            raise RepositoryError(f"{path}:{child.sourceline}: a <Tag> holds only non-empty "
                                  f"<Group> elements")
        groups.append(child.text.strip())
    if not groups:
        raise RepositoryError(f"{where}: <Tag> without a <Group>")
    referenced = regexes.get("value", regexes["name"])
    for group in groups:
        for ref in SUBSTITUTION.findall(group):
            if not 1 <= int(ref) <= referenced.groups:
                raise RepositoryError(f"{where}: group {group!r} uses ${ref}, but "
                                      f"{referenced.pattern!r} has {referenced.groups} "
                                      f"parenthesised group(s)")
    return TagPattern(regexes["name"], regexes.get("value"), tuple(groups))


class PatternsFile(XMLFileBacked):
    """AWSTags/config.xml; ``patterns`` is empty until it is parsed (and after removal)."""

    def __init__(self, name: str, fam: FileMonitor | None, plugin: AWSTags) -> None:
        self.plugin = plugin
        self.patterns: tuple[TagPattern, ...] = ()
        super().__init__(name, fam, should_monitor=True)

    def removed(self) -> None:
        self.patterns = ()
        self.plugin.expire_metadata_if_groups_change()

    def load_xml(self, root: lxml.etree._Element) -> None:
        self.patterns = parse_patterns(root, self.name)
        self.plugin.expire_metadata_if_groups_change()


def _import_boto3() -> Any:
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as err:
        raise PluginInitError(f"AWSTags needs boto3, which cannot be imported ({err}): "
                              f"pip install boto3") from None
    return boto3, botocore


class AWSTags(Plugin, Connector, ClientRunHooks, Caching):
    """Tags of the client's EC2 instance as ``metadata.AWSTags``, and groups from them."""

    __rmi__ = [*Plugin.__rmi__, "expire_cache"]

    options = (
        Option("awstags", "access_key_id", "",
               "AWS access key ID; empty: boto3 finds credentials itself (environment, "
               "~/.aws, the instance's role)."),
        Option("awstags", "secret_access_key", "", "AWS secret access key."),
        Option("awstags", "region", "",
               "The EC2 region to ask; empty: boto3's default (AWS_DEFAULT_REGION, ~/.aws)."),
        Option("awstags", "cache", True,
               "Keep each client's tags until it starts its next run (otherwise EC2 is "
               "asked at every metadata build).", type="bool"),
        Option("awstags", "timeout", 10.0,
               "Seconds to wait for EC2 to connect or answer.", type="float"),
    )

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        boto3, botocore = _import_boto3()
        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
        conf = core.setup.awstags
        if bool(conf.access_key_id) != bool(conf.secret_access_key):
            raise PluginInitError("[awstags] access_key_id and secret_access_key go together")
        timeout = float(conf.timeout)
        try:
            session = boto3.session.Session(
                aws_access_key_id=conf.access_key_id or None,
                aws_secret_access_key=conf.secret_access_key or None,
                region_name=conf.region or None)
            self._ec2 = session.client("ec2", config=botocore.config.Config(
                connect_timeout=timeout, read_timeout=timeout,
                retries={"max_attempts": 2, "mode": "standard"}))
        except self._errors as err:
            raise PluginInitError(f"cannot set up the EC2 client: {err}") from None
        self.keep = bool(conf.cache)
        self._lock = threading.Lock()
        #: client -> its tags as last fetched
        self._tags: dict[str, dict[str, str]] = {}
        self.config = PatternsFile(os.path.join(self.data, "config.xml"), core.fam, self)

    def fetch_tags(self, hostname: str) -> dict[str, str]:
        """The tags of the instance whose private DNS name is ``hostname``, from EC2.

        {} when there is none or EC2 cannot be asked (logged). Only a client
        name is sent: it cannot hold EC2's filter wildcards (``*``, ``?``).
        """
        if not valid_client_name(hostname):
            self.logger.error("AWSTags: not asking EC2 about '%s': not a host name",
                              escaped(hostname, 80))
            return {}
        try:
            answer = self._ec2.describe_instances(
                Filters=[{"Name": "private-dns-name", "Values": [hostname]}])
        except self._errors as err:
            self.logger.error("AWSTags: cannot get the tags of %s from EC2: %s", hostname, err)
            return {}
        instances = [inst for res in answer.get("Reservations", [])
                     for inst in res.get("Instances", [])]
        if not instances:
            self.debug_log(f"AWSTags: no instance has private-dns-name={hostname}")
            return {}
        if len(instances) > 1:
            self.logger.warning("AWSTags: %d instances have private-dns-name=%s; using %s",
                                len(instances), hostname, instances[0].get("InstanceId"))
        tags = instances[0].get("Tags", [])[:MAX_TAGS]
        return {str(t.get("Key", "")): str(t.get("Value", "")) for t in tags}

    def get_tags(self, hostname: str) -> dict[str, str]:
        """A client's tags: kept ones (with ``cache``), else fetched (and kept)."""
        if self.keep:
            with self._lock:
                kept = self._tags.get(hostname)
            if kept is not None:
                return kept
        tags = self.fetch_tags(hostname)
        with self._lock:
            self._tags[hostname] = tags
        return tags

    def groups_for(self, hostname: str, tags: dict[str, str]) -> list[str]:
        """The groups the patterns give a set of tags; unusable names are refused and logged."""
        out: list[str] = []
        for pattern in self.config.patterns:
            for group in pattern.process(tags):
                if len(group) > MAX_GROUP_NAME or GROUP_NAME.fullmatch(group) is None:
                    self.logger.warning("AWSTags: the tags of %s give '%s', which is no group "
                                        "name; ignored", hostname, escaped(group, 80))
                elif group not in out:
                    out.append(group)
        return out

    def get_additional_groups(self, metadata: ClientMetadata) -> list[str]:
        return self.groups_for(metadata.hostname, self.get_tags(metadata.hostname))

    def get_additional_data(self, metadata: ClientMetadata) -> dict[str, str]:
        return dict(self.get_tags(metadata.hostname))

    def start_client_run(self, metadata: ClientMetadata) -> None:
        """A run starts: fetch the client's tags anew; expire its metadata if they changed."""
        hostname = metadata.hostname
        with self._lock:
            before = self._tags.get(hostname)
        tags = self.fetch_tags(hostname)
        with self._lock:
            self._tags[hostname] = tags
        if before is not None and before != tags:
            self.expire_metadata(hostname)

    def expire_cache(self, key: str | None = None) -> None:
        """Forget the kept tags of one client (or all): EC2 is asked again when next needed."""
        with self._lock:
            if key is None:
                self._tags.clear()
            else:
                self._tags.pop(key, None)


__all__ = ["AWSTags", "PatternsFile", "TagPattern", "parse_patterns"]

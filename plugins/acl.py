"""ACL: which client may call which XML-RPC method, by address and by metadata.

``ACL/ip.xml`` holds Allow, Deny and Defer rules by address (one address, or
a network given by ``address`` and ``netmask``; IPv4 and IPv6) and method
name. ``ACL/metadata.xml`` holds Allow and Deny rules by method inside
``<Group>``/``<Client>`` conditionals. In both files the first matching rule
decides; when none matches, ip.xml defers and metadata.xml denies. In a
method name ``*`` stands for any run of characters other than ``.``: ``*``
is every core method, ``*.*`` every plugin method.

These rules apply on top of the caller's identity (``bcfg2.identity``):
a Deny refuses even an agent method or an admin; an Allow grants a client
a method beyond the agent methods. Upstream also allowed any caller from the
loopback address (ip.xml) and any client named localhost (metadata.xml) when
no rule matched; that holds here only with ``[communication] trust_loopback``.

metadata.xml's Group rules see only the groups the repository gives a
client (``Core.trusted_metadata``): never those of its probe output or of a
profile it asserted itself.

A file that does not exist has no opinion (the caller's identity decides).
A file that exists but has never been parsed successfully refuses every call
until it is fixed; a later error keeps the last good version in service.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.filemonitor import Event, FileMonitor
from bcfg2.identity import RESERVED_CLIENT_NAMES, is_loopback
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import (
    ClientACLs,
    Condition,
    Plugin,
    StructFile,
    XMLFileBacked,
    as_bool,
    conditions_hold,
)

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VERDICTS = {True: "allow", False: "deny", None: "defer"}


def method_pattern(method: str) -> re.Pattern[str]:
    """A method name with ``*`` wildcards as a regular expression (``*`` never spans a dot)."""
    return re.compile("[^.]*".join(re.escape(part) for part in method.split("*")))


def client_ip(address: str) -> IPAddress | None:
    """The caller's address; an IPv4-mapped IPv6 address counts as IPv4. None if unparsable."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _method(path: str, node: lxml.etree._Element) -> str:
    method = node.get("method")
    if not method:
        raise RepositoryError(f"{path}:{node.sourceline}: <{node.tag}> without a method")
    return method


def _check_root(path: str, root: lxml.etree._Element) -> None:
    if root.tag != "ACL":
        raise RepositoryError(f"{path}:{root.sourceline}: the root element must be <ACL>, "
                              f"not <{root.tag}>")


def _elements(node: lxml.etree._Element) -> list[lxml.etree._Element]:
    return [child for child in node if isinstance(child.tag, str)]


@dataclass(frozen=True)
class IPRule:
    """One rule of ip.xml: True allows, False denies, None defers."""

    action: bool | None
    network: IPNetwork | None
    method: str
    line: int
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", method_pattern(self.method))

    def matches(self, ip: IPAddress | None, rmi: str) -> bool:
        """Whether the rule applies to a caller's address and a method name."""
        if self.network is not None and (ip is None or ip not in self.network):
            return False
        return self.pattern.fullmatch(rmi) is not None


@dataclass(frozen=True)
class MetadataRule:
    """One rule of metadata.xml with the conditionals above it."""

    allow: bool
    conditions: tuple[Condition, ...]
    method: str
    line: int
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", method_pattern(self.method))

    def matches(self, metadata: ClientMetadata, rmi: str) -> bool:
        """Whether the rule applies to a client and a method name."""
        return (self.pattern.fullmatch(rmi) is not None
                and conditions_hold(self.conditions, metadata))


class ACLFile(XMLFileBacked):
    """An ACL file: ``rules`` is None until it is parsed; a deletion forgets it."""

    def __init__(self, name: str, fam: FileMonitor | None) -> None:
        #: whether the file exists (as far as the file monitor said)
        self.present = False
        self.rules: tuple[Any, ...] | None = None
        super().__init__(name, fam, should_monitor=True)

    def HandleEvent(self, event: Event | None = None) -> None:  # noqa: N802
        if event is not None and event.path == self.name and event.action != "deleted":
            self.present = True
        super().HandleEvent(event)

    def removed(self) -> None:
        if self.present:
            logger.info("%s was removed: it has no opinion now", self.name)
        self.present = False
        self.rules = None


class IPACLFile(ACLFile):
    """ACL/ip.xml."""

    ACTIONS = {"Allow": True, "Deny": False, "Defer": None}

    def load_xml(self, root: lxml.etree._Element) -> None:
        _check_root(self.name, root)
        self.rules = tuple(self._rules(root))

    def _rules(self, root: lxml.etree._Element) -> list[IPRule]:
        rules: list[IPRule] = []
        for node in _elements(root):
            if node.tag == "ACL":
                rules.extend(self._rules(node))
                continue
            if node.tag not in self.ACTIONS:
                raise RepositoryError(f"{self.name}:{node.sourceline}: unknown element "
                                      f"<{node.tag}> (Allow, Deny or Defer expected)")
            rules.append(IPRule(self.ACTIONS[node.tag], self._network(node),
                                _method(self.name, node), node.sourceline))
        return rules

    def _network(self, node: lxml.etree._Element) -> IPNetwork | None:
        address, netmask = node.get("address"), node.get("netmask")
        if address is None:
            if netmask is not None:
                raise RepositoryError(f"{self.name}:{node.sourceline}: netmask without "
                                      f"an address")
            return None
        spec = address if netmask is None else f"{address}/{netmask}"
        try:
            if netmask is None:
                return ipaddress.ip_network(ipaddress.ip_address(address))
            return ipaddress.ip_network(spec, strict=False)
        except ValueError as err:
            raise RepositoryError(f"{self.name}:{node.sourceline}: invalid address "
                                  f"{spec!r}: {err}") from None

    def check(self, address: str, rmi: str,
              trust_loopback: bool = False) -> tuple[bool | None, str]:
        """The decision for a caller and a method, with the reason for the debug log."""
        rules = self.rules
        if rules is None:
            if self.present:
                return False, f"{self.name} is not in service ({self.error})"
            return None, "no ip.xml"
        if not rules:
            return None, "ip.xml has no rules"
        ip = client_ip(address)
        for rule in rules:
            if rule.matches(ip, rmi):
                return rule.action, f"rule of line {rule.line} matches"
        if trust_loopback and ip is not None and is_loopback(str(ip)):
            return True, "no rule matches; localhost is allowed (trust_loopback)"
        return None, "no rule matches"


class MetadataACLFile(ACLFile, StructFile):
    """ACL/metadata.xml: Allow and Deny rules inside Group/Client conditionals."""

    def load_xml(self, root: lxml.etree._Element) -> None:
        _check_root(self.name, root)
        self.rules = tuple(self._rules(root, ()))

    def _rules(self, node: lxml.etree._Element,
               conditions: tuple[Condition, ...]) -> list[MetadataRule]:
        rules: list[MetadataRule] = []
        for child in _elements(node):
            if child.tag in self.conditional_tags:
                name = child.get("name")
                if not name:
                    raise RepositoryError(f"{self.name}:{child.sourceline}: <{child.tag}> "
                                          f"without a name")
                negate = as_bool(child.get("negate", "false"))
                rules.extend(self._rules(child, conditions + ((child.tag, name, negate),)))
            elif child.tag == "ACL":
                rules.extend(self._rules(child, conditions))
            elif child.tag in ("Allow", "Deny"):
                rules.append(MetadataRule(child.tag == "Allow", conditions,
                                          _method(self.name, child), child.sourceline))
            else:
                raise RepositoryError(f"{self.name}:{child.sourceline}: unknown element "
                                      f"<{child.tag}> (Allow, Deny, Group or Client expected)")
        return rules

    def check(self, metadata: ClientMetadata, rmi: str,
              trust_loopback: bool = False) -> tuple[bool | None, str]:
        """The decision for a client and a method, with the reason for the debug log."""
        rules = self.rules
        if rules is None:
            if self.present:
                return False, f"{self.name} is not in service ({self.error})"
            return None, "no metadata.xml"
        if not rules:
            return None, "metadata.xml has no rules"
        for rule in rules:
            if rule.matches(metadata, rmi):
                return rule.allow, f"rule of line {rule.line} matches"
        if trust_loopback and metadata.hostname in RESERVED_CLIENT_NAMES:
            return True, "no rule matches; localhost is allowed (trust_loopback)"
        return False, "no rule matches"


class ACL(Plugin, ClientACLs):
    """Client access to XML-RPC methods from ACL/ip.xml and ACL/metadata.xml."""

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: ACL has no rules", self.data)
        self.trust_loopback = bool(core.setup.communication.trust_loopback)
        self.ip_acls = IPACLFile(os.path.join(self.data, "ip.xml"), core.fam)
        self.metadata_acls = MetadataACLFile(os.path.join(self.data, "metadata.xml"), core.fam)

    def check_acl_ip(self, address: tuple[str, int], rmi: str) -> bool | None:
        """ip.xml: True to allow, False to deny, None to defer to metadata.xml."""
        decision, reason = self.ip_acls.check(address[0], rmi, self.trust_loopback)
        self.debug_log(f"ACL: {address[0]} calls {rmi}: {reason}: {VERDICTS[decision]}")
        return decision

    def check_acl_metadata(self, metadata: ClientMetadata, rmi: str) -> bool | None:
        """metadata.xml: True to allow the call for this client, False to deny, None: no opinion."""
        decision, reason = self.metadata_acls.check(metadata, rmi, self.trust_loopback)
        self.debug_log(f"ACL: {metadata.hostname} calls {rmi}: {reason}: {VERDICTS[decision]}")
        return decision


__all__ = ["ACL", "IPACLFile", "MetadataACLFile", "method_pattern"]

"""GroupLogic: groups that follow from a client's other groups and its name.

``GroupLogic/groups.xml`` is read like ``Metadata/groups.xml``: a
``<Group>`` or ``<Client>`` with children is a conditional (``negate``
inverts it), a ``<Group name=...>`` without children declares that the
clients it is reached for are members of that group. Conditionals are
evaluated once against the client's metadata as the Metadata plugin and
the connectors before this one (GroupPatterns, Probes...) made it, so a
group declared here does not satisfy a conditional of this same file, as
in Bcfg2. A file whose root declares the Genshi namespace
(``xmlns:py="http://genshi.edgewall.org/"``) is a Genshi template, rendered
for each client before its conditionals are read, within the limits of
``bcfg2.templates``. It sees what Bcfg2 gives XML templates: ``metadata``
(the ClientMetadata) and ``repo`` (the repository path), as Bundler
templates do. A render error gives that client no GroupLogic groups; it is
logged at error level with the template's file and line once per version
of the file (then at debug level), not once per client and run.

The file is reread when it changes. After a change, the cached metadata
of exactly the clients whose GroupLogic groups change is expired: the
input each client was last evaluated with is kept to compare (a template's
output may depend on anything in the metadata: its change expires all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import genshi.template
import lxml.etree

from bcfg2.errors import RepositoryError
from bcfg2.filemonitor import FileMonitor
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Condition, Connector, Plugin, StructFile, as_bool, condition_holds
from bcfg2.templates import bounded_join, bounded_range, compile_genshi, render_error
from bcfg2.xml import parse_repository_file

GENSHI_NS = "http://genshi.edgewall.org/"

Declaration = tuple[tuple[Condition, ...], str]


@dataclass(frozen=True)
class ClientInput:
    """What the conditionals of groups.xml can see of a client."""

    hostname: str
    aliases: frozenset[str]
    groups: frozenset[str]

    @classmethod
    def of(cls, metadata: ClientMetadata) -> ClientInput:
        return cls(metadata.hostname, frozenset(metadata.aliases), frozenset(metadata.groups))


def evaluate(declarations: tuple[Declaration, ...], client: ClientInput) -> frozenset[str]:
    """The groups declared for a client: those whose conditions all hold."""
    return frozenset(name for conds, name in declarations
                     if all(condition_holds(tag, cname, negate, client)  # type: ignore[arg-type]
                            for tag, cname, negate in conds))


class GroupLogicFile(StructFile):
    """GroupLogic/groups.xml; ``declarations`` is empty until it is parsed."""

    def __init__(self, name: str, fam: FileMonitor | None, plugin: GroupLogic) -> None:
        self.plugin = plugin
        self.declarations: tuple[Declaration, ...] = ()
        self.template: genshi.template.Template | None = None
        #: whether a render error of the template in service has been logged at error level
        self.render_error_logged = False
        super().__init__(name, fam, should_monitor=True)

    def removed(self) -> None:
        self.plugin.logger.info("%s was removed: no GroupLogic groups now", self.name)
        self.template = None
        self._swap(())

    def load_xml(self, root: lxml.etree._Element) -> None:
        if root.tag != "GroupLogic":
            raise self._error(root, f"the root element must be <GroupLogic>, not <{root.tag}>")
        if GENSHI_NS not in root.nsmap.values():
            self.template = None
            self._swap(tuple(self._declarations(root, ())))
            return
        self.template = compile_genshi(self.name, self.data, markup=True)
        self.render_error_logged = False
        self.declarations = ()
        self.plugin.logic_changed()

    def declarations_for(self, metadata: ClientMetadata) -> tuple[Declaration, ...]:
        """The declarations for one client: the file's, or its template rendered for it."""
        template = self.template
        if template is None:
            return self.declarations
        try:
            stream = template.generate(metadata=metadata, repo=self.plugin.core.repository,
                                       range=bounded_range)
            text = bounded_join(stream.serialize("xml"), self.name)
            root = parse_repository_file(self.name, text.encode("utf-8"))[0]
            return tuple(self._declarations(root, ()))
        except Exception as err:  # a template may raise anything: only this client's groups
            self._render_failed(err, metadata.hostname)
            return ()

    def _render_failed(self, err: Exception, client: str) -> None:
        """Log a render error with file and line: at error level once per template version."""
        message = render_error(err, os.path.dirname(self.name), self.name)
        if self.render_error_logged:
            self.plugin.logger.debug("GroupLogic template failed for %s: %s", client, message)
            return
        self.render_error_logged = True
        self.plugin.logger.error("GroupLogic template failed for %s (clients it fails for get "
                                 "no GroupLogic groups; logged once until the file changes): "
                                 "%s", client, message)

    def _swap(self, declarations: tuple[Declaration, ...]) -> None:
        self.declarations = declarations
        self.plugin.logic_changed()

    def _error(self, node: lxml.etree._Element, message: str) -> RepositoryError:
        return RepositoryError(f"{self.name}:{node.sourceline}: {message}")

    def _declarations(self, node: lxml.etree._Element,
                      conds: tuple[Condition, ...]) -> list[Declaration]:
        out: list[Declaration] = []
        for child in node:
            if isinstance(child, lxml.etree._ProcessingInstruction) and child.target == "python":
                raise self._error(child, "Genshi templating (<?python?>) is not supported")
            if not isinstance(child.tag, str):
                continue
            if lxml.etree.QName(child).namespace == GENSHI_NS:
                raise self._error(child, f"Genshi templating (<py:{lxml.etree.QName(child).localname}>)"
                                         f" is not supported")
            if any(lxml.etree.QName(attr).namespace == GENSHI_NS for attr in child.attrib):
                raise self._error(child, "Genshi templating (py: attributes) is not supported")
            if child.tag == "GroupLogic":
                out.extend(self._declarations(child, conds))
                continue
            if child.tag not in self.conditional_tags:
                raise self._error(child, f"unknown element <{child.tag}> "
                                         f"(Group or Client expected)")
            name = child.get("name")
            if not name:
                raise self._error(child, f"<{child.tag}> without a name")
            if "$" in name:
                raise self._error(child, f"Genshi templating ({name!r}) is not supported")
            has_children = any(isinstance(sub.tag, str) for sub in child)
            if child.tag == "Group" and not has_children:
                out.append((conds, name))
            else:
                negate = as_bool(child.get("negate", "false"))
                out.extend(self._declarations(child, conds + ((child.tag, name, negate),)))
        return out


class GroupLogic(Plugin, Connector):
    """Groups declared under Group/Client conditionals in GroupLogic/groups.xml."""

    #: after the other connectors, so their groups can be conditions here
    sort_order = 750

    def __init__(self, core: Any) -> None:
        Plugin.__init__(self, core)
        if not os.path.isdir(self.data):
            self.logger.warning("%s does not exist: GroupLogic gives no groups", self.data)
        self.logic = GroupLogicFile(os.path.join(self.data, "groups.xml"), core.fam, self)

    def get_additional_groups(self, metadata: ClientMetadata) -> list[str]:
        """The groups groups.xml declares for this client, sorted."""
        return sorted(evaluate(self.logic.declarations_for(metadata), ClientInput.of(metadata)))

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing: all it gives is groups, which the core keys configurations by."""
        return ""

    def logic_changed(self) -> None:
        """Expire the cached metadata of the clients whose GroupLogic groups change."""
        self.expire_metadata_if_groups_change()


__all__ = ["GroupLogic", "evaluate"]

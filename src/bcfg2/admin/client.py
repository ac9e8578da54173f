"""Add, delete or list the clients of Metadata/clients.xml."""

from __future__ import annotations

import argparse
import ipaddress
import os

import lxml.etree

from bcfg2.clientstate import SCHEMA as STATE_SCHEMA
from bcfg2.clientstate import ClientState
from bcfg2.clientstate import database_path as state_database
from bcfg2.errors import Bcfg2Error, StorageError
from bcfg2.identity import valid_client_name
from bcfg2.options import Setup
from bcfg2.plugins.metadata import (
    AUTH_MODES,
    GroupsModel,
    client_nodes,
    merge_records,
    record_from_xml,
)
from bcfg2.storage import engine_of, open_database
from bcfg2.tools import ToolError
from bcfg2.xml import atomic_write, included_files, parse_repository_file

#: attributes ``client add`` accepts: upstream's, and those plugins/metadata.py reads
ATTRIBUTES = ("profile", "uuid", "password", "address", "secure", "floating", "location",
              "auth", "version")
_BOOLEANS = {"1", "0", "yes", "no", "true", "false", "on", "off"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``client add NAME [attr=value ...]``, ``client del NAME``, ``client list``."""
    actions = parser.add_subparsers(dest="client_action", metavar="action", required=True)
    add = actions.add_parser("add", help="add a client to clients.xml")
    add.add_argument("client_name", metavar="NAME")
    add.add_argument("client_attrs", nargs="*", metavar="attr=value",
                     help=f"attributes of the client: {', '.join(ATTRIBUTES)}")
    delete = actions.add_parser("del", help="delete a client from clients.xml "
                                            "(and from the server's runtime state)")
    delete.add_argument("client_name", metavar="NAME")
    actions.add_parser("list", help="list every client, one name a line")


def run(setup: Setup, args: argparse.Namespace) -> int:
    """Dispatch to add, del or list."""
    metadata_dir = _metadata_dir(setup)
    clients = os.path.join(metadata_dir, "clients.xml")
    if args.client_action == "add":
        add_client(metadata_dir, args.client_name, parse_attributes(args.client_attrs))
    elif args.client_action == "del":
        delete_client(clients, _state_file(setup, clients), args.client_name, setup)
    else:
        for name in list_clients(clients, _state_file(setup, clients),
                                 setup.communication.authentication, setup):
            print(name)
    return 0


def _metadata_dir(setup: Setup) -> str:
    repository = setup.server.repository
    if not os.path.isdir(repository):
        raise ToolError(f"repository {repository} does not exist (use -Q or [server] "
                        f"repository)")
    path = os.path.join(repository, "Metadata")
    if not os.path.isdir(path):
        raise ToolError(f"{path} does not exist: is {repository} a Bcfg2 repository?")
    return path


def _state_file(setup: Setup, clients: str) -> str | None:
    """The server's runtime state (``bcfg2.clientstate``), unless it writes clients.xml itself."""
    state_dir = setup.server.state_dir or setup.server.repository
    if os.path.realpath(state_dir) == os.path.realpath(setup.server.repository):
        return None
    return state_database(state_dir)


def _state(path: str | None, setup: Setup | None = None) -> ClientState | None:
    """The runtime state, if the server has recorded any (a tool never creates the file)."""
    if path is None or (engine_of(setup) == "sqlite" and not os.path.exists(path)):
        return None
    try:
        return ClientState(path, open_database(setup, path, STATE_SCHEMA))
    except StorageError as err:
        raise ToolError(f"cannot read the server's client state: {err}") from None


def parse_attributes(words: list[str]) -> dict[str, str]:
    """``attr=value`` words into a dict; unknown attributes and bad values are errors."""
    attrs: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ToolError(f"{word!r} is not of the form attribute=value")
        if key not in ATTRIBUTES:
            raise ToolError(f"unknown attribute {key!r}; allowed: {', '.join(ATTRIBUTES)}")
        if key in ("secure", "floating") and value.lower() not in _BOOLEANS:
            raise ToolError(f"{key}={value!r}: expected true or false")
        if key == "location" and value not in ("fixed", "floating"):
            raise ToolError(f"location={value!r}: expected fixed or floating")
        if key == "auth" and value not in AUTH_MODES:
            raise ToolError(f"auth={value!r}: expected one of {', '.join(AUTH_MODES)}")
        if key == "address":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ToolError(f"address={value!r} is not an IP address") from None
        if key in attrs:
            raise ToolError(f"attribute {key!r} given twice")
        attrs[key] = value
    return attrs


# -- reading and writing clients.xml, keeping comments and layout -------------------------

def _parse(path: str) -> lxml.etree._ElementTree:
    parser = lxml.etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        return lxml.etree.parse(path, parser)
    except lxml.etree.XMLSyntaxError as err:
        raise ToolError(f"{path}:{err.lineno}: {err.msg}") from None
    except OSError as err:
        raise ToolError(f"{path}: cannot read: {err}") from None


def _write(path: str, tree: lxml.etree._ElementTree) -> None:
    with open(path, "rb") as fh:
        declaration = fh.read(5) == b"<?xml"
    mode = os.stat(path).st_mode & 0o7777
    data = lxml.etree.tostring(tree, xml_declaration=declaration, encoding="UTF-8")
    atomic_write(path, data + b"\n", mode)


def _files(clients: str) -> list[tuple[str, lxml.etree._ElementTree]]:
    """clients.xml and every file it XIncludes (recursively), parsed for editing."""
    out: list[tuple[str, lxml.etree._ElementTree]] = []
    pending, seen = [clients], set()
    while pending:
        path = os.path.normpath(pending.pop(0))
        if path in seen or not os.path.exists(path):
            continue
        seen.add(path)
        tree = _parse(path)
        out.append((path, tree))
        pending.extend(included_files(tree.getroot(), os.path.dirname(path)))
    return out


def _find(files: list[tuple[str, lxml.etree._ElementTree]], name: str,
          ) -> tuple[str, lxml.etree._ElementTree, lxml.etree._Element] | None:
    for path, tree in files:
        for node in client_nodes(tree.getroot()):
            if node.get("name").lower() == name:
                return path, tree, node
    return None


def _alias_owner(files: list[tuple[str, lxml.etree._ElementTree]], name: str) -> str | None:
    for _path, tree in files:
        for node in client_nodes(tree.getroot()):
            if any((a.get("name") or "").lower() == name for a in node.iter("Alias")):
                return node.get("name")
    return None


def _append(parent: lxml.etree._Element, node: lxml.etree._Element) -> None:
    """Append ``node`` indented like its siblings."""
    if len(parent):
        last = parent[-1]
        node.tail = last.tail
        last.tail = parent.text if parent.text and not parent.text.strip() else "\n  "
    else:
        parent.text = "\n  "
        node.tail = "\n"
    parent.append(node)


def _remove(node: lxml.etree._Element) -> None:
    """Remove ``node``; the whitespace after the last child is kept."""
    parent = node.getparent()
    if node.getnext() is None:
        prev = node.getprevious()
        if prev is not None:
            prev.tail = node.tail
        else:
            parent.text = node.tail
    parent.remove(node)


def _profiles(metadata_dir: str) -> GroupsModel:
    path = os.path.join(metadata_dir, "groups.xml")
    try:
        root, _ = parse_repository_file(path)
        return GroupsModel.from_xml(root, path)
    except Bcfg2Error as err:
        raise ToolError(str(err)) from None


def add_client(metadata_dir: str, name: str, attrs: dict[str, str]) -> None:
    """Add a client to clients.xml (the main file, not an included one)."""
    clients = os.path.join(metadata_dir, "clients.xml")
    if not valid_client_name(name):
        raise ToolError(f"invalid client name {name!r}")
    name = name.lower()
    files = _files(clients) if os.path.exists(clients) else []
    if _find(files, name) is not None:
        raise ToolError(f"client {name} already exists")
    owner = _alias_owner(files, name)
    if owner is not None:
        raise ToolError(f"{name} is already an alias of client {owner}")
    if "uuid" in attrs:
        for _path, tree in files:
            for node in client_nodes(tree.getroot()):
                if node.get("uuid") == attrs["uuid"]:
                    raise ToolError(f"uuid {attrs['uuid']} is already used by client "
                                    f"{node.get('name')}")
    groups = _profiles(metadata_dir)
    profile = attrs.get("profile") or groups.default
    if not profile:
        raise ToolError("profile=GROUP is required (groups.xml has no default profile)")
    group = groups.groups.get(profile)
    if group is None or not group.profile:
        profiles = sorted(g.name for g in groups.groups.values() if g.profile)
        raise ToolError(f"{profile!r} is not a profile group in groups.xml (profiles: "
                        f"{', '.join(profiles) or 'none'})")
    if not files:
        atomic_write(clients, '<Clients version="3.0">\n</Clients>\n')
        files = _files(clients)
    node = lxml.etree.Element("Client", name=name, profile=profile)
    for key in ATTRIBUTES:
        if key in attrs and key != "profile":
            node.set(key, attrs[key])
    _, tree = files[0]
    _append(tree.getroot(), node)
    _write(clients, tree)


def delete_client(clients: str, state: str | None, name: str,
                  setup: Setup | None = None) -> None:
    """Delete a client from the file that holds it and from the runtime overlay."""
    name = name.lower()
    files = _files(clients) if os.path.exists(clients) else []
    found = _find(files, name)
    if found is None:
        owner = _alias_owner(files, name)
        if owner is not None:
            raise ToolError(f"{name} is an alias of client {owner}; delete {owner}")
    else:
        path, tree, node = found
        _remove(node)
        _write(path, tree)
    in_state = False
    store = _state(state, setup)
    if store is not None:
        try:
            in_state = store.remove(name)
            if in_state and engine_of(setup) == "sqlite":
                store.mark_changed()  # a running server reads the state again (PostgreSQL:
                # every server sharing the database is told by remove's cache event)
        except (OSError, StorageError) as err:
            raise ToolError(f"cannot remove {name} from the server's client state: "
                            f"{err}") from None
        finally:
            store.close()
    if found is None and not in_state:
        raise ToolError(f"no such client: {name}")


def list_clients(clients: str, state: str | None, default_auth: str,
                 setup: Setup | None = None) -> list[str]:
    """Every client the server knows: clients.xml and the runtime overlay, sorted."""
    records = {}
    if os.path.exists(clients):
        try:
            root, _ = parse_repository_file(clients)
        except Bcfg2Error as err:
            raise ToolError(str(err)) from None
        for node in client_nodes(root):
            record = record_from_xml(node)
            records[record.name] = record
    overlay: dict[str, dict[str, str]] = {}
    store = _state(state, setup)
    if store is not None:
        try:
            overlay = store.load()
        except StorageError as err:
            raise ToolError(f"cannot read the server's client state: {err}") from None
        finally:
            store.close()
    return sorted(record.name for record in merge_records(records, overlay, default_auth))

"""Looking at the repository: clients, groups, bundles, a client's metadata and entries,
which generator handles what, the effective options."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import lxml.etree

from bcfg2.errors import Bcfg2Error
from bcfg2.info.shell import CommandError, Shell, command, joined, table, yes
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import Generator, PackageSources, Structure
from bcfg2.testrun import config_failures


def option_value(name: str, value: Any) -> str:
    """An option's value as bcfg2.conf would spell it; secrets masked."""
    if "password" in name and value:
        return "********"
    if value is None:
        return ""
    if isinstance(value, dict):  # a names option ([encryption] passphrases): the names only
        return ", ".join(sorted(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if name == "umask" and isinstance(value, int):
        return f"{value:04o}"
    return str(value)


class QueryCommands(Shell):
    """bundles, clients, groups, showclient, showentries, mappings, config."""

    def generators_for(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> list[str]:
        """Names of the generators that would bind the entry, as Core.Bind picks them."""
        probe = entry
        if "altsrc" in entry.attrib:
            probe = lxml.etree.Element(entry.tag, name=entry.get("altsrc"))
        return [gen.name for gen, _func in self.core.generators_for(probe, metadata)]

    def missing_bundles(self, metadata: ClientMetadata,
                        structures: Iterable[lxml.etree._Element]) -> None:
        """Report (one line) the client's bundles its structures lack, e.g. a broken file."""
        doc = lxml.etree.Element("Configuration")
        for structure in structures:
            doc.append(lxml.etree.Element(structure.tag, name=structure.get("name") or ""))
        problems = config_failures(self.core, doc, metadata)
        if problems:
            self.error(f"{metadata.hostname}: {'; '.join(problems)}")

    # -- the repository ------------------------------------------------------

    @command("bundles")
    def do_bundles(self, words: list[str]) -> bool:
        """List every bundle the structure plugins know, with its file."""
        rows = []
        for plugin in self.core.plugins_by_type(Structure):
            for name in plugin.list_bundles():
                info = plugin.bundle_info(name)
                path = info.path if info is not None else None
                rows.append((name, plugin.name,
                             os.path.relpath(path, self.core.repository) if path else ""))
        self.out(table(rows, ("Bundle", "Plugin", "File")))
        return False

    @command("clients")
    def do_clients(self, words: list[str]) -> bool:
        """List every client with its profile."""
        rows = []
        errors: dict[str, int] = {}
        for name in self.core.metadata.list_clients():
            try:
                profile = self.core.build_metadata(name).profile
            except Bcfg2Error as err:
                profile = f"(error: {err})"
                errors[str(err)] = errors.get(str(err), 0) + 1
            rows.append((name, profile))
        self.out(table(rows, ("Client", "Profile")))
        if errors:
            self.error("; ".join(f"{count} clients: {message}"
                                 for message, count in sorted(errors.items())))
        return False

    @command("groups")
    def do_groups(self, words: list[str]) -> bool:
        """List every group with its flags: profile, public, default, category."""
        rows = [(g.name, yes(g.profile), yes(g.public), yes(g.default), g.category or "")
                for g in self.core.metadata.list_groups()]
        self.out(table(rows, ("Group", "Profile", "Public", "Default", "Category")))
        return False

    @command("showclient <client> [client...]", 1, None, complete=("client*",))
    def do_showclient(self, words: list[str]) -> bool:
        """Show the metadata of clients: profile, groups, bundles, identity, connectors."""
        blocks = []
        for word in words:
            meta = self.metadata(word)
            categories = [f"{cat}={group}" for cat, group in meta.categories.items()]
            fields = [
                ("Hostname", meta.hostname), ("Profile", meta.profile),
                ("Groups", joined(meta.groups)), ("Bundles", joined(meta.bundles)),
                ("Aliases", joined(meta.aliases)), ("Addresses", joined(meta.addresses)),
                ("Categories", joined(categories)), ("UUID", meta.uuid or "(none)"),
                ("Version", meta.version or "(not declared)"),
                ("Connectors", joined(meta.connectors)),
            ]
            lines = [f"{label + ':':<12}{value}" for label, value in fields]
            for source in sorted(meta.connectors):
                data = getattr(meta, source)
                if isinstance(data, Mapping):
                    data = joined(f"{key}={value}" for key, value in data.items())
                lines.append(f"  {source}: {data}")
            blocks.append("\n".join(lines))
        self.out("\n\n".join(blocks))
        return False

    @command("showentries <client> [type]", 1, 2, complete=("client", "type"))
    def do_showentries(self, words: list[str]) -> bool:
        """List the abstract entries of a client's bundles, optionally of one type."""
        metadata = self.metadata(words[0])
        wanted = words[1].lower() if len(words) == 2 else None
        rows = []
        structures = self.core.GetStructures(metadata)
        for structure in structures:
            for entry in structure:
                if not isinstance(entry.tag, str) or entry.tag in ("Bundle", "BoundBundle"):
                    continue
                if wanted is not None and entry.tag.lower() != wanted:
                    continue
                generators = self.generators_for(entry, metadata)
                rows.append((entry.tag, entry.get("name") or "", structure.get("name") or "",
                             ", ".join(generators) or "(none: will fail)"))
        if not rows:
            what = f"{words[1]} entries" if wanted else "entries"
            self.out(f"no {what} in the configuration of {metadata.hostname}")
        else:
            self.out(table(sorted(rows), ("Type", "Name", "Bundle", "Generator")))
        self.missing_bundles(metadata, structures)
        return False

    @command("mappings [type] [name]", 0, 2, complete=("type", "name"))
    def do_mappings(self, words: list[str]) -> bool:
        """List which generator handles which entry, optionally for one type and name."""
        wanted_tag = words[0].lower() if words else None
        wanted_name = words[1] if len(words) == 2 else None
        found: dict[tuple[str, str], list[str]] = {}
        for gen in self.core.plugins_by_type(Generator):
            for tag, name in gen.list_entries():
                if wanted_tag is not None and tag.lower() != wanted_tag:
                    continue
                if wanted_name is None or name == wanted_name:
                    found.setdefault((tag, name), []).append(gen.name)
        if not found and words:
            raise CommandError(f"no generator handles {':'.join(words)}")
        rows = [(tag, name, ", ".join(gens)) for (tag, name), gens in sorted(found.items())]
        self.out(table(rows, ("Type", "Name", "Generator")))
        return False

    # -- packages ------------------------------------------------------------

    def package_plugins(self) -> list[PackageSources]:
        plugins = self.core.plugins_by_type(PackageSources)
        if not plugins:
            raise CommandError("no plugin that knows package sources is loaded (add Packages "
                               "to [server] plugins)")
        return plugins

    @command("packageresolve <client> [package...]", 1, None, complete=("client",))
    def do_packageresolve(self, words: list[str]) -> bool:
        """Resolve package dependencies for a client: its own packages, or those named."""
        metadata = self.metadata(words[0])
        names = words[1:] or None
        for plugin in self.package_plugins():
            result = plugin.resolve_packages(metadata, names)
            for label, items in (("initial", result.initial), ("new", result.added),
                                 ("unknown", result.unknown)):
                self.out(f"{len(items)} {label} packages")
                for item in items:
                    self.out(f"    {item}")
        return False

    @command("packagesources <client>", 1, 1, complete=("client",))
    def do_packagesources(self, words: list[str]) -> bool:
        """List the package sources that apply to a client, in the order they are read."""
        metadata = self.metadata(words[0])
        blocks = []
        for plugin in self.package_plugins():
            for info in plugin.package_sources(metadata):
                fields = [("Name", info.name), ("Type", info.type), ("URL", info.url),
                          ("Version", info.version or "(none)"),
                          ("Components", joined(info.components)), ("Arch", info.arch),
                          ("GPG Key(s)", joined(info.gpgkeys)),
                          ("Packages", str(info.packages) if info.packages
                           else "(no index in service)")]
                if info.error:
                    fields.append(("Error", info.error))
                blocks.append("\n".join(f"{label + ':':<12}{value}" if i == 0 else
                                        f"  {label + ':':<12}{value}"
                                        for i, (label, value) in enumerate(fields)))
        self.out("\n\n".join(blocks) if blocks
                 else f"no package source applies to {metadata.hostname}")
        return False

    @command("config [section]", 0, 1)
    def do_config(self, words: list[str]) -> bool:
        """Show the effective options (bcfg2.conf, then the command line, then defaults);
        passwords and [encryption] passphrases are masked."""
        setup = self.core.setup
        rows = []
        known = set()
        for opt in setup.options:
            known.add((opt.section, opt.name))
            rows.append((opt.section, opt.name, option_value(opt.name, setup.get(opt.section, opt.name))))
        secret = {opt.section for opt in setup.options if opt.type == "names"}
        for section in setup.raw.sections():  # plugin sections the table does not know
            for name, value in setup.raw.items(section):
                if (section, name) not in known:
                    rows.append((section, name, "********" if section in secret
                                 else option_value(name, value)))
        if words:
            rows = [row for row in rows if row[0] == words[0]]
            if not rows:
                raise CommandError(f"no options in section [{words[0]}]")
        self.out(f"bcfg2.conf: {setup.config_file or '(none)'}")
        self.out(table(rows, ("Section", "Option", "Value")))
        return False

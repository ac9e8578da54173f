"""The RELAX NG schemas of the repository formats, shipped in the package ``bcfg2.lint.rng``."""

from __future__ import annotations

import fnmatch
import functools
import importlib.resources
import os

import lxml.etree

#: (plugin directory, test on the path relative to it, schema file); first match wins
FORMATS: list[tuple[str, str, str]] = [
    ("Metadata", "groups.xml", "metadata-groups.rng"),
    ("Metadata", "clients.xml", "metadata-clients.rng"),
    ("Bundler", "*.genshi", "bundle-genshi.rng"),
    ("Bundler", "*.xml", "bundle.rng"),
    ("Rules", "*.xml", "rules.rng"),
    ("Defaults", "*.xml", "defaults.rng"),
    ("Cfg", "info.xml", "info.rng"),
    ("Cfg", "privkey.xml", "cfg-privkey.rng"),
    ("Cfg", "pubkey.xml", "cfg-pubkey.rng"),
    ("Cfg", "sslkey.xml", "cfg-sslkey.rng"),
    ("Cfg", "sslcert.xml", "cfg-sslcert.rng"),
    ("Cfg", "authorized_keys.xml", "cfg-authorizedkeys.rng"),
    ("Cfg", "authorizedkeys.xml", "cfg-authorizedkeys.rng"),
    ("Decisions", "*.xml", "decisions.rng"),
    ("GroupPatterns", "config.xml", "grouppatterns.rng"),
    ("GroupLogic", "groups.xml", "grouplogic.rng"),
    ("ACL", "ip.xml", "acl-ip.rng"),
    ("ACL", "metadata.xml", "acl-metadata.rng"),
    ("Deps", "*.xml", "deps.rng"),
    ("Packages", "sources.xml", "packages-sources.rng"),
    ("Pkgmgr", "*.xml", "pkgmgr.rng"),
    ("NagiosGen", "config.xml", "nagiosgen-config.rng"),
    ("NagiosGen", "parents.xml", "nagiosgen-parents.rng"),
    ("FileProbes", "config.xml", "fileprobes.rng"),
    ("AWSTags", "config.xml", "awstags.rng"),
]
# SEModules holds compiled (binary) policy modules only: nothing to validate.

#: plugins that read only the files at the top of their directory
TOP_LEVEL_ONLY = frozenset({"Metadata", "GroupPatterns", "GroupLogic", "ACL", "Packages",
                            "NagiosGen", "FileProbes", "AWSTags"})

#: the package whose data the schema files are
RNG = "bcfg2.lint.rng"

#: the schema of a Bundler .xml file whose root declares Genshi's namespace
GENSHI_BUNDLE = "bundle-genshi.rng"


def schema_names() -> list[str]:
    """Every format schema shipped with lint (common.rng is a library they include)."""
    return sorted(entry.name for entry in
                  importlib.resources.files(RNG).iterdir()
                  if entry.name.endswith(".rng") and entry.name != "common.rng")


@functools.cache
def load(name: str) -> lxml.etree.RelaxNG:
    """A schema by file name, compiled once; includes resolve next to it."""
    resource = importlib.resources.files(RNG).joinpath(name)
    with importlib.resources.as_file(resource) as path:
        return lxml.etree.RelaxNG(lxml.etree.parse(os.fspath(path)))


def schema_for(plugin: str, relative: str) -> str | None:
    """The schema file name for a file of a plugin's directory, or None."""
    base = os.path.basename(relative)
    for fmt_plugin, pattern, schema in FORMATS:
        if fmt_plugin == plugin and fnmatch.fnmatch(base, pattern):
            if plugin in TOP_LEVEL_ONLY and os.path.dirname(relative):
                return None  # only the top-level file of these plugins is read
            return schema
    return None

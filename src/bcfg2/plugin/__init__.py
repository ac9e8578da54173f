"""The plugin framework: what a plugin, ours or a third party's, may import.

- ``base``: the Plugin class, ``exposed`` and ``Debuggable``.
- ``interfaces``: what a plugin can do for the core (Generator, Structure,
  Metadata, Connector...), checked when a plugin is loaded.
- ``filebacked``: repository files and directories that reread themselves.
- ``structfile``: XML files with ``<Group>``/``<Client>`` conditionals.
- ``entryset``: the versions of one entry (``name.G50_group``,
  ``name.H_host``) and info.xml.
- ``priodir``: the Rules-style generator with priorities.
- ``vcs``: Version plugins that ask a version-control tool (``run_vcs``).
- from ``bcfg2.configcache``: what a plugin records while a configuration is
  built (``depends_on``, ``not_cacheable``, ``TemplateReads``), so the
  configuration cache serves it again only while nothing it read changed.

Import from ``bcfg2.plugin`` itself; the modules are its layout, ``__all__``
is the promise.
"""

from bcfg2.configcache import TemplateReads, depends_on, listing, not_cacheable
from bcfg2.errors import (
    MetadataConsistencyError,
    MetadataRuntimeError,
    PluginExecutionError,
    PluginInitError,
    RepositoryError,
    SpecificityError,
    ValidationError,
)
from bcfg2.identity import Caller
from bcfg2.options import Option
from bcfg2.plugin.base import Debuggable, Plugin, as_bool, exposed
from bcfg2.plugin.entryset import (
    SPECIFIC_SUFFIX,
    EntrySet,
    InfoXML,
    SpecificData,
    Specificity,
    bind_info,
    default_path_metadata,
    set_content,
)
from bcfg2.plugin.filebacked import (
    DirectoryBacked,
    FileBacked,
    XMLDirectoryBacked,
    XMLFileBacked,
    executables,
)
from bcfg2.plugin.interfaces import (
    INTERFACES,
    BundleInfo,
    Caching,
    ClientACLs,
    ClientRunHooks,
    ClientSummary,
    Connector,
    Decision,
    Generator,
    GoalValidator,
    GroupInfo,
    Metadata,
    PackageSources,
    Probing,
    PropertyFiles,
    Resolution,
    SourceInfo,
    Statistics,
    Structure,
    StructureValidator,
    TemplateDataProvider,
    ThreadedStatistics,
    Version,
    missing_methods,
)
from bcfg2.plugin.priodir import PrioDir
from bcfg2.plugin.structfile import (
    Condition,
    PriorityStructFile,
    StructFile,
    admitted,
    condition_holds,
    conditions_hold,
    flatten_conditions,
    match_element,
)
from bcfg2.plugin.vcs import VcsCommandError, VcsVersion, run_vcs

__all__ = [
    # base, the options a plugin declares, who calls (ClientACLs get a Caller)
    "Caller", "Debuggable", "Option", "Plugin", "as_bool", "exposed",
    # interfaces and what their queries return
    "INTERFACES", "BundleInfo", "Caching", "ClientACLs", "ClientRunHooks",
    "ClientSummary", "Connector",
    "Decision", "Generator", "GoalValidator", "GroupInfo", "Metadata", "PackageSources",
    "Probing", "PropertyFiles", "Resolution", "SourceInfo", "Statistics", "Structure",
    "StructureValidator", "TemplateDataProvider", "ThreadedStatistics", "Version",
    "missing_methods",
    # files and directories
    "DirectoryBacked", "FileBacked", "XMLDirectoryBacked", "XMLFileBacked", "executables",
    # conditionals
    "Condition", "PriorityStructFile", "StructFile", "admitted", "condition_holds",
    "conditions_hold", "flatten_conditions", "match_element",
    # entries
    "SPECIFIC_SUFFIX", "EntrySet", "InfoXML", "PrioDir", "SpecificData", "Specificity",
    "bind_info", "default_path_metadata", "set_content",
    # what a build depends on (the configuration cache)
    "TemplateReads", "depends_on", "listing", "not_cacheable",
    # the revision from a version-control tool
    "VcsCommandError", "VcsVersion", "run_vcs",
    # the errors a plugin raises
    "MetadataConsistencyError", "MetadataRuntimeError", "PluginExecutionError",
    "PluginInitError", "RepositoryError", "SpecificityError", "ValidationError",
]

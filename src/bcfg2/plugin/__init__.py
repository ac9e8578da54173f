"""The plugin framework: the base Plugin, the interfaces, the file-backed helpers."""

from bcfg2.errors import (
    MetadataConsistencyError,
    MetadataRuntimeError,
    PluginExecutionError,
    PluginInitError,
    RepositoryError,
    SpecificityError,
    ValidationError,
)
from bcfg2.plugin.base import Debuggable, Plugin, as_bool, exposed
from bcfg2.plugin.helpers import (
    DirectoryBacked,
    EntrySet,
    FileBacked,
    InfoXML,
    PrioDir,
    PriorityStructFile,
    SpecificData,
    Specificity,
    StructFile,
    XMLDirectoryBacked,
    XMLFileBacked,
    bind_info,
    default_path_metadata,
)
from bcfg2.plugin.interfaces import (
    INTERFACES,
    Caching,
    ClientACLs,
    ClientRunHooks,
    Connector,
    Decision,
    Generator,
    GoalValidator,
    Metadata,
    Probing,
    Statistics,
    Structure,
    StructureValidator,
    ThreadedStatistics,
    Version,
    missing_methods,
)

__all__ = [
    "INTERFACES", "Caching", "ClientACLs", "ClientRunHooks", "Connector", "Debuggable",
    "Decision", "DirectoryBacked", "EntrySet", "FileBacked", "Generator", "GoalValidator",
    "InfoXML", "Metadata", "MetadataConsistencyError", "MetadataRuntimeError", "Plugin",
    "PluginExecutionError", "PluginInitError", "PrioDir", "PriorityStructFile", "Probing",
    "RepositoryError", "SpecificData", "Specificity", "SpecificityError", "Statistics",
    "StructFile", "Structure", "StructureValidator", "ThreadedStatistics",
    "ValidationError", "Version", "XMLDirectoryBacked", "XMLFileBacked", "as_bool",
    "bind_info", "default_path_metadata", "exposed", "missing_methods",
]

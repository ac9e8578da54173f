"""The old home of the file-backed helpers, kept for plugins that import it.

New code imports from ``bcfg2.plugin``; the helpers now live in
``filebacked``, ``structfile``, ``entryset`` and ``priodir``. Still used by
plugins/acl.py until its rewrite (the identity work) drops it.
"""

from bcfg2.plugin.entryset import (
    SPECIFIC_SUFFIX,
    EntrySet,
    InfoXML,
    SpecificData,
    Specificity,
    bind_info,
    default_path_metadata,
)
from bcfg2.plugin.filebacked import DirectoryBacked, FileBacked, XMLDirectoryBacked, XMLFileBacked
from bcfg2.plugin.priodir import PrioDir
from bcfg2.plugin.structfile import (
    Condition,
    PriorityStructFile,
    StructFile,
    condition_holds,
    conditions_hold,
    flatten_conditions,
)

__all__ = [
    "SPECIFIC_SUFFIX", "Condition", "DirectoryBacked", "EntrySet", "FileBacked", "InfoXML",
    "PrioDir", "PriorityStructFile", "SpecificData", "Specificity", "StructFile",
    "XMLDirectoryBacked", "XMLFileBacked", "bind_info", "condition_holds", "conditions_hold",
    "default_path_metadata", "flatten_conditions",
]

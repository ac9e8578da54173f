"""POSIXCompat: Path entries in the form agents older than 1.3 read.

Bcfg2 1.3 renamed the permission bits of a Path entry from ``perms`` to
``mode``. An agent that declared a version before 1.3 (or none at all, as
upstream assumes) reads only ``perms``, so every Path it gets that has a
``mode`` carries the same value as ``perms`` too; newer agents get the
entries as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bcfg2.plugin import GoalValidator, Plugin

if TYPE_CHECKING:
    import lxml.etree

    from bcfg2.metadata import ClientMetadata

#: agents of this version and later read ``mode`` themselves
NEW_STYLE = (1, 3)



class POSIXCompat(Plugin, GoalValidator):
    """Copies ``mode`` to ``perms`` on the Path entries sent to an older agent."""

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing: what it changes follows from the agent's version (in the metadata)."""
        return ""

    def validate_goals(self, metadata: ClientMetadata, config: lxml.etree._Element) -> None:
        if not metadata.agent_older_than(NEW_STYLE):
            return
        for entry in config.iter("Path", "BoundPath"):
            if "mode" in entry.attrib:
                entry.set("perms", entry.get("mode"))


__all__ = ["NEW_STYLE", "POSIXCompat"]

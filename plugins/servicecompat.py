"""ServiceCompat: the old ``mode`` of Service entries, for agents older than 1.3.

Bcfg2 1.3 replaced a Service's ``mode`` by two attributes, ``restart`` and
``install``. An agent that declared a version before 1.3 (or none at all,
as upstream assumes the worst) only understands ``mode``, so each Service
entry it gets also carries the old mode that means the same:

==================  ==================  ====================
restart             install             mode
==================  ==================  ====================
true (default)      true (default)      default
interactive         true                interactive_only
false               false               manual
==================  ==================  ====================

Any other pair has no old equivalent; such a service gets ``manual``, the
mode that lets the agent change the least, and that is logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bcfg2.plugin import GoalValidator, Plugin

if TYPE_CHECKING:
    import lxml.etree

    from bcfg2.metadata import ClientMetadata

#: (restart, install) -> the mode a pre-1.3 agent reads
MODES = {("true", "true"): "default", ("interactive", "true"): "interactive_only",
         ("false", "false"): "manual"}
#: agents of this version and later read restart/install themselves
NEW_STYLE = (1, 3)



class ServiceCompat(Plugin, GoalValidator):
    """Adds the pre-1.3 ``mode`` to every Service entry sent to an older agent."""

    def cache_key(self, metadata: ClientMetadata) -> str:
        """Nothing: what it changes follows from the agent's version (in the metadata)."""
        return ""

    def validate_goals(self, metadata: ClientMetadata, config: lxml.etree._Element) -> None:
        if not metadata.agent_older_than(NEW_STYLE):
            return
        for entry in config.iter("Service", "BoundService"):
            key = (entry.get("restart", "true").lower(), entry.get("install", "true").lower())
            mode = MODES.get(key)
            if mode is None:
                self.logger.info("Service %s for %s: restart=%s install=%s has no pre-1.3 "
                                 "mode; sending mode=manual", entry.get("name"),
                                 metadata.hostname, *key)
                mode = "manual"
            entry.set("mode", mode)


__all__ = ["MODES", "NEW_STYLE", "ServiceCompat"]

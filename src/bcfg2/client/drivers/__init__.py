"""Drivers of the agent: each verifies, installs and removes the entries it handles."""

from bcfg2.client.drivers.base import Context, Driver, EntryState, entry_key

__all__ = ["Context", "Driver", "EntryState", "entry_key"]

"""The agent's drivers, found by name and imported only when used.

``DRIVERS`` maps the name an admin writes in ``[client] drivers`` (or ``-D``)
to ``module:Class``. A driver whose module is not installed is simply
unavailable; one that is installed but fails to import is an error, so a
broken driver never disappears silently.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

from bcfg2.client.drivers.base import Context, Driver
from bcfg2.client.errors import AgentError

log = logging.getLogger("bcfg2.client")

#: name -> "module:Class", in the order drivers are asked whether they handle an entry
DRIVERS: dict[str, str] = {
    "POSIX": "bcfg2.client.drivers.posix:POSIX",
    "POSIXUsers": "bcfg2.client.drivers.posixusers:POSIXUsers",
    "APT": "bcfg2.client.drivers.apt:APT",
    "DNF": "bcfg2.client.drivers.dnf:DNF",
    "Systemd": "bcfg2.client.drivers.systemd:Systemd",
    "Action": "bcfg2.client.drivers.action:Action",
}


def driver_class(name: str) -> type[Driver] | None:
    """The class of a driver, or None if its module is not installed."""
    module_name, _, class_name = DRIVERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            return None  # the driver's own module is absent, not something it imports
        raise AgentError(f"driver {name} cannot be loaded: {err}") from None
    except Exception as err:  # a broken driver must say so, never vanish
        raise AgentError(f"driver {name} cannot be loaded: {type(err).__name__}: {err}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise AgentError(f"driver {name}: {DRIVERS[name]} is not a Driver class")
    return cls


def load_drivers(context: Context, names: Sequence[str] = ()) -> list[Driver]:
    """The drivers to use: those named (all known ones when none is), that this machine
    can use. Naming an unknown driver is an error; one that is unavailable is logged."""
    unknown = [name for name in names if name not in DRIVERS]
    if unknown:
        raise AgentError(f"unknown driver(s) {', '.join(unknown)}; known: {', '.join(DRIVERS)}")
    chosen = [name for name in DRIVERS if name in names] if names else list(DRIVERS)
    drivers: list[Driver] = []
    for name in chosen:
        try:
            cls = driver_class(name)
        except AgentError as err:
            if names:
                raise
            log.error("%s; going on without it", err)  # said, never silently dropped
            continue
        if cls is None:
            (log.warning if names else log.debug)("Driver %s is not installed", name)
            continue
        if not cls.available(context):
            (log.warning if names else log.debug)("Driver %s cannot be used on this machine",
                                                  name)
            continue
        drivers.append(cls(context))
    log.debug("Loaded drivers: %s", ", ".join(d.name for d in drivers) or "none")
    return drivers

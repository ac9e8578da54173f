"""What the system drivers share: finding their tools and reading their options."""

from __future__ import annotations

import configparser
import os
import shutil
from typing import Any

from bcfg2 import options
from bcfg2.client.drivers.base import Context

#: where the system tools live when the agent's PATH (cron's, say) lacks the sbin directories
FALLBACK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(context: Context, tool: str) -> str | None:
    """The full path of ``tool`` on the context's PATH (then the usual directories)."""
    env = context.env if context.env is not None else os.environ
    search = os.pathsep.join(p for p in (env.get("PATH", ""), FALLBACK_PATH) if p)
    return shutil.which(tool, path=search)


def setting(context: Context, section: str, name: str) -> Any:
    """A driver's option (one of ``options.DRIVER_OPTIONS``): as the run parsed it, else
    from its bcfg2.conf (``setup.raw``), else the default; a bad value is a ConfigError."""
    opt = next((o for o in options.DRIVER_OPTIONS if (o.section, o.name) == (section, name)),
               None)
    if opt is None:
        raise KeyError(f"no driver option [{section}] {name}")
    setup = context.setup
    value = getattr(getattr(setup, section, None), name, None)
    if value is not None:
        return value
    raw = getattr(setup, "raw", None)
    if isinstance(raw, configparser.RawConfigParser) and raw.has_option(section, name):
        where = getattr(setup, "config_file", None) or "bcfg2.conf"
        return options.convert(opt, raw.get(section, name), where)
    return options.convert(opt, opt.default, "default")


def client_option(context: Context, name: str, default: Any) -> Any:
    """One of the run's ``[client]`` settings (``quick``, ``interactive``, ``servicemode``),
    or ``default`` when the run has none."""
    value = getattr(getattr(context.setup, "client", None), name, None)
    return default if value is None else value


def truthy(value: str | None, default: bool) -> bool:
    """An XML boolean attribute (``true``/``false``, any case; absent: ``default``)."""
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes", "on")

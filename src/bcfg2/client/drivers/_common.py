"""What the system drivers share: finding their tools and reading their options."""

from __future__ import annotations

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
    """A driver's option: from the run's parsed options, else the table's default."""
    value = getattr(getattr(context.setup, section, None), name, None)
    if value is not None:
        return value
    for opt in options.OPTIONS:
        if opt.section == section and opt.name == name:
            return options.convert(opt, opt.default, "default")
    raise KeyError(f"no option [{section}] {name}")


def client_option(context: Context, name: str, default: Any) -> Any:
    """One of the run's ``[client]`` settings (``quick``, ``interactive``, ``service_mode``),
    or ``default`` when the run has none."""
    value = getattr(getattr(context.setup, "client", None), name, None)
    return default if value is None else value


def truthy(value: str | None, default: bool) -> bool:
    """An XML boolean attribute (``true``/``false``, any case; absent: ``default``)."""
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes", "on")
